//! Decoding of audio files and byte streams into [`Pcm`] blocks, via symphonia.
//!
//! Owns: probing a container (with an extension or MIME hint), picking its first audio track,
//! and turning packets into interleaved `f32` blocks, one decoded packet per block.
//!
//! Invariants:
//! - No input makes this panic or loop without reading: a packet that fails to decode is
//!   skipped and counted ([`Decoder::corrupt_packets`]); only [`MAX_CONSECUTIVE_CORRUPT`]
//!   failures in a row (with no audio between them) end the stream with an error.
//! - A stream that ends early (truncated file, closed socket) is a normal end of stream: the
//!   caller gets what was decodable, then `Ok(None)`.
//! - Each block carries its own rate and channel count, so a mid-stream format change (a new
//!   link in a chained Ogg stream, an MP3 stream switching sample rate) shows in the block;
//!   [`Decoder::info`] follows the latest block.
//! - Opus tracks (Ogg Opus, RFC 7845) are decoded by [`crate::opus::OpusDecoder`] at 48 kHz,
//!   not by symphonia: each logical stream drops its OpusHead pre-skip at its start (counted
//!   from the packet's granule-derived timestamp, so a stream joined mid-way drops nothing),
//!   applies the OpusHead output gain, and drops the end padding the last page's granule
//!   position marks. A new chain link brings a new OpusHead and a fresh decoder. Only
//!   channel mapping family 0 (mono, stereo) is decoded; others are
//!   [`DecodeError::Unsupported`].

use std::fs::File;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, Track, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;

use crate::opus::OpusDecoder;
use crate::pcm::Pcm;

/// Decode failures in a row (without one good packet between) after which a stream is
/// declared undecodable rather than damaged. Bounds the work done on a garbage stream.
pub const MAX_CONSECUTIVE_CORRUPT: u32 = 1000;

/// Container-level read errors in a row tolerated before giving up.
const MAX_CONSECUTIVE_READ_ERRORS: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("read error: {0}")]
    Io(std::io::Error),
    #[error("not an audio file or stream (no known container or codec recognised)")]
    NotAudio,
    #[error("the media has no audio track")]
    NoAudioTrack,
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("malformed media: {0}")]
    Malformed(String),
    #[error("undecodable stream: {0} packets in a row failed to decode")]
    TooManyCorrupt(u32),
    #[error("decoder failed internally on this input ({0}); the stream cannot continue")]
    DecoderFault(String),
}

/// Format of the selected audio track (of its latest block, after a mid-stream change).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackInfo {
    pub rate: u32,
    pub channels: u16,
    /// From the container's frame count when it states one; `None` for live streams and
    /// headerless formats (ADTS, some MP3s).
    pub duration: Option<Duration>,
    /// Symphonia's short codec name: "mp3", "aac", "flac", "vorbis", "pcm_s16le", ...
    pub codec: String,
}

pub struct Decoder {
    format: Box<dyn FormatReader>,
    decoder: Engine,
    /// A fresh decoder fed the packets the main one rejects: decoders lock onto the first
    /// format they see (symphonia's MP3 decoder refuses a new rate), so when the stream's
    /// format changes, this one decodes the new format and, after two packets, takes over.
    shadow: Option<Box<dyn AudioDecoder>>,
    /// The shadow's first block in a new format, until a second one confirms the change.
    held: Option<Decoded>,
    /// A block decoded ahead, returned by the next call.
    pending: Option<Pcm>,
    track_id: u32,
    info: TrackInfo,
    corrupt: u64,
    consecutive_corrupt: u32,
    consecutive_read_errors: u32,
    /// Set once the stream has ended or failed for good; later calls return `Ok(None)`.
    done: bool,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("info", &self.info)
            .field("corrupt", &self.corrupt)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// Opens a file; its extension is the probe's first guess (content decides).
    pub fn open(path: &Path) -> Result<Decoder, DecodeError> {
        let ext = path.extension().and_then(|e| e.to_str());
        let file = File::open(path).map_err(|source| DecodeError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Decoder::from_source(Box::new(file), ext)
    }

    /// Decodes an unseekable byte stream (a live mount being transcoded, a pipe). `hint` is
    /// an extension ("mp3", "aac", "ogg") or a MIME type ("audio/mpeg"). Reads block.
    pub fn from_reader(
        r: Box<dyn Read + Send + Sync>,
        hint: Option<&str>,
    ) -> Result<Decoder, DecodeError> {
        Decoder::from_source(Box::new(ReadOnlySource::new(r)), hint)
    }

    /// Decodes an in-memory file (seekable, so durations from trailing headers are found).
    pub fn from_bytes(bytes: Vec<u8>, hint: Option<&str>) -> Result<Decoder, DecodeError> {
        Decoder::from_source(Box::new(std::io::Cursor::new(bytes)), hint)
    }

    fn from_source(
        source: Box<dyn MediaSource>,
        hint: Option<&str>,
    ) -> Result<Decoder, DecodeError> {
        let hint = make_hint(hint);
        let mss = MediaSourceStream::new(source, Default::default());
        let probed = guard("symphonia probe", || {
            symphonia::default::get_probe().probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
        })?;
        let format = probed.map_err(|e| match e {
            SymError::Unsupported(_) => DecodeError::NotAudio,
            SymError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                DecodeError::NotAudio
            }
            other => map_open_error(other),
        })?;
        let (decoder, track_id, info) = select_track(format.as_ref())?;
        Ok(Decoder {
            format,
            decoder,
            shadow: None,
            held: None,
            pending: None,
            track_id,
            info,
            corrupt: 0,
            consecutive_corrupt: 0,
            consecutive_read_errors: 0,
            done: false,
        })
    }

    pub fn info(&self) -> &TrackInfo {
        &self.info
    }

    /// Packets that failed to decode and were skipped so far.
    pub fn corrupt_packets(&self) -> u64 {
        self.corrupt
    }

    /// The next decoded block, or `None` at the end of the stream.
    pub fn next_block(&mut self) -> Result<Option<Pcm>, DecodeError> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        if self.done {
            return Ok(None);
        }
        let r = self.next_block_inner();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    fn next_block_inner(&mut self) -> Result<Option<Pcm>, DecodeError> {
        loop {
            let packet = match guard("symphonia demuxer", || self.format.next_packet())? {
                Ok(Some(p)) => {
                    self.consecutive_read_errors = 0;
                    p
                }
                Ok(None) => return Ok(None),
                Err(SymError::ResetRequired) => {
                    // A new chained-Ogg link (or similar): new headers, maybe a new format.
                    let (decoder, track_id, info) = select_track(self.format.as_ref())?;
                    self.decoder = decoder;
                    self.shadow = None;
                    self.held = None;
                    self.track_id = track_id;
                    self.info = info;
                    continue;
                }
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(None);
                }
                Err(SymError::IoError(e)) => return Err(DecodeError::Io(e)),
                Err(SymError::DecodeError(msg)) => {
                    self.corrupt += 1;
                    self.consecutive_read_errors += 1;
                    if self.consecutive_read_errors > MAX_CONSECUTIVE_READ_ERRORS {
                        return Err(DecodeError::Malformed(msg.to_string()));
                    }
                    continue;
                }
                Err(e) => return Err(DecodeError::Malformed(e.to_string())),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let decoder = match &mut self.decoder {
                Engine::Opus(opus) => {
                    match guard("libopus decoder", || opus.decode(&packet))? {
                        Ok(block) => {
                            if let Some(pcm) = self.accept(block)? {
                                return Ok(Some(pcm));
                            }
                        }
                        // A damaged packet is lost; libopus keeps its state for the next one.
                        Err(_) => self.count_corrupt()?,
                    }
                    continue;
                }
                Engine::Symphonia(d) => d,
            };
            let decoded = guard("symphonia decoder", || {
                decode_packet(decoder.as_mut(), &packet)
            })?;
            let err = match decoded {
                Ok(block) => {
                    self.shadow = None;
                    self.held = None;
                    if let Some(pcm) = self.accept(block)? {
                        return Ok(Some(pcm));
                    }
                    continue;
                }
                Err(e) => e,
            };
            if let Some(pcm) = self.try_shadow(&packet)? {
                return Ok(Some(pcm));
            }
            match err {
                SymError::Unsupported(what) => {
                    return Err(DecodeError::Unsupported(what.to_string()))
                }
                SymError::ResetRequired => {
                    if let Engine::Symphonia(d) = &mut self.decoder {
                        d.reset();
                    }
                    self.count_corrupt()?;
                }
                // Malformed data, a packet cut short, a limit hit: this packet is lost, the
                // stream is not.
                _ => self.count_corrupt()?,
            }
        }
    }

    /// Turns a decoded packet into a block; `None` for an empty one (gapless trimming).
    fn accept(&mut self, (rate, channels, samples): Decoded) -> Result<Option<Pcm>, DecodeError> {
        let Ok(channels) = u16::try_from(channels) else {
            return Err(DecodeError::Unsupported(format!("{channels} channels")));
        };
        if samples.is_empty() || channels == 0 || rate == 0 {
            return Ok(None);
        }
        self.consecutive_corrupt = 0;
        self.info.rate = rate;
        self.info.channels = channels;
        Ok(Some(Pcm::new(rate, channels, samples)))
    }

    /// Feeds a packet the main decoder rejected to the shadow decoder; if that decodes it in
    /// a different format, the shadow becomes the main decoder.
    fn try_shadow(&mut self, packet: &Packet) -> Result<Option<Pcm>, DecodeError> {
        if self.shadow.is_none() {
            let Engine::Symphonia(decoder) = &self.decoder else {
                return Ok(None);
            };
            let params = decoder.codec_params().clone();
            let made = guard("symphonia decoder setup", || {
                symphonia::default::get_codecs()
                    .make_audio_decoder(&params, &AudioDecoderOptions::default())
            })?;
            match made {
                Ok(d) => self.shadow = Some(d),
                Err(_) => return Ok(None),
            }
        }
        let Some(shadow) = self.shadow.as_mut() else {
            return Ok(None);
        };
        let decoded = guard("symphonia decoder", || {
            decode_packet(shadow.as_mut(), packet)
        })?;
        let Ok(block) = decoded else {
            self.held = None;
            return Ok(None);
        };
        let format = (block.0, block.1);
        if format == (self.info.rate, usize::from(self.info.channels)) {
            // Same format: the main decoder's failure was damage, not a format change.
            self.held = None;
            return Ok(None);
        }
        // A change must show in two packets in a row, so one junk frame that happens to
        // parse as another format does not flip the stream's format back and forth.
        match self.held.take() {
            Some(first) if (first.0, first.1) == format => {
                if let Some(shadow) = self.shadow.take() {
                    self.decoder = Engine::Symphonia(shadow);
                }
                // The held packet was counted as corrupt when it arrived; it was not.
                self.corrupt = self.corrupt.saturating_sub(1);
                let first = self.accept(first)?;
                self.pending = self.accept(block)?;
                Ok(first.or(self.pending.take()))
            }
            _ => {
                self.held = Some(block);
                Ok(None)
            }
        }
    }

    fn count_corrupt(&mut self) -> Result<(), DecodeError> {
        self.corrupt += 1;
        self.consecutive_corrupt += 1;
        if self.consecutive_corrupt >= MAX_CONSECUTIVE_CORRUPT {
            return Err(DecodeError::TooManyCorrupt(self.consecutive_corrupt));
        }
        Ok(())
    }
}

/// Runs a call into symphonia or libopus with a panic turned into an error: a decoder bug on hostile
/// input must end one stream, not the thread serving a station. The decoder is not used again
/// after a fault (`next_block` marks itself done on any error).
fn guard<T>(stage: &str, f: impl FnOnce() -> T) -> Result<T, DecodeError> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| DecodeError::DecoderFault(format!("panic in {stage}")))
}

/// Rate, channel count and interleaved samples of one decoded packet.
type Decoded = (u32, usize, Vec<f32>);

fn decode_packet(decoder: &mut dyn AudioDecoder, packet: &Packet) -> Result<Decoded, SymError> {
    let buf = decoder.decode(packet)?;
    let mut samples = Vec::new();
    buf.copy_to_vec_interleaved(&mut samples);
    Ok((buf.spec().rate(), buf.spec().channels().count(), samples))
}

fn make_hint(hint: Option<&str>) -> Hint {
    let mut h = Hint::new();
    let Some(raw) = hint else { return h };
    let lower = raw.trim().to_ascii_lowercase();
    if lower.contains('/') {
        // Strip parameters such as "; codecs=..." and map the MIME types streams announce.
        let mime = lower.split(';').next().unwrap_or("").trim();
        h.mime_type(mime);
        let ext = match mime {
            "audio/mpeg" | "audio/mp3" | "audio/mpeg3" | "audio/x-mpeg" => Some("mp3"),
            "audio/aac" | "audio/aacp" | "audio/x-aac" => Some("aac"),
            "audio/mp4" | "audio/x-m4a" | "audio/m4a" => Some("m4a"),
            "audio/ogg" | "application/ogg" | "audio/vorbis" | "audio/x-vorbis+ogg"
            | "audio/opus" => Some("ogg"),
            "audio/flac" | "audio/x-flac" => Some("flac"),
            "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => Some("wav"),
            "audio/aiff" | "audio/x-aiff" => Some("aiff"),
            _ => None,
        };
        if let Some(ext) = ext {
            h.with_extension(ext);
        }
    } else {
        h.with_extension(lower.trim_start_matches('.'));
    }
    h
}

fn map_open_error(e: SymError) -> DecodeError {
    match e {
        SymError::IoError(e) => DecodeError::Io(e),
        SymError::Unsupported(what) => DecodeError::Unsupported(what.to_string()),
        other => DecodeError::Malformed(other.to_string()),
    }
}

fn select_track(format: &dyn FormatReader) -> Result<(Engine, u32, TrackInfo), DecodeError> {
    let track = format
        .default_track(TrackType::Audio)
        .or_else(|| format.first_track(TrackType::Audio))
        .ok_or(DecodeError::NoAudioTrack)?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or(DecodeError::NoAudioTrack)?;
    if params.codec == CODEC_ID_OPUS {
        let opus = OpusTrack::new(params)?;
        let info = TrackInfo {
            rate: 48_000,
            channels: opus.channels,
            duration: opus_duration(track),
            codec: "opus".into(),
        };
        return Ok((Engine::Opus(Box::new(opus)), track.id, info));
    }
    let made = guard("symphonia decoder setup", || {
        symphonia::default::get_codecs().make_audio_decoder(params, &AudioDecoderOptions::default())
    })?;
    let decoder = made.map_err(|e| match e {
        SymError::Unsupported(_) => {
            DecodeError::Unsupported(format!("codec {} (no decoder built in)", params.codec))
        }
        other => map_open_error(other),
    })?;
    let rate = params.sample_rate.unwrap_or(0);
    let channels = params
        .channels
        .as_ref()
        .map(|c| u16::try_from(c.count()).unwrap_or(u16::MAX))
        .unwrap_or(0);
    let info = TrackInfo {
        rate,
        channels,
        duration: track_duration(track, rate),
        codec: decoder.codec_info().short_name.to_string(),
    };
    Ok((Engine::Symphonia(decoder), track.id, info))
}

/// What turns the selected track's packets into samples.
enum Engine {
    Symphonia(Box<dyn AudioDecoder>),
    /// Symphonia demuxes Ogg Opus but has no Opus decoder: libopus does it.
    Opus(Box<OpusTrack>),
}

/// The Opus decoder of one logical stream, with the RFC 7845 framing rules applied.
struct OpusTrack {
    decoder: OpusDecoder,
    channels: u16,
    /// Linear factor from the OpusHead output gain.
    gain: f32,
    /// Frames from the stream's start (timestamp 0) that are encoder priming.
    pre_skip: u64,
    scratch: Vec<f32>,
}

/// Size of a version-0/1 OpusHead packet for mapping family 0 (RFC 7845 section 5.1).
const OPUS_HEAD_MIN: usize = 19;

impl OpusTrack {
    fn new(params: &AudioCodecParameters) -> Result<OpusTrack, DecodeError> {
        let head = params
            .extra_data
            .as_deref()
            .ok_or_else(|| DecodeError::Malformed("Opus track without OpusHead".into()))?;
        if head.len() < OPUS_HEAD_MIN || &head[..8] != b"OpusHead" {
            return Err(DecodeError::Malformed("bad OpusHead".into()));
        }
        let channels = u16::from(head[9]);
        let pre_skip = u16::from_le_bytes([head[10], head[11]]);
        let gain_q8 = i16::from_le_bytes([head[16], head[17]]);
        let family = head[18];
        if family != 0 {
            return Err(DecodeError::Unsupported(format!(
                "Opus channel mapping family {family} ({channels} channels); only mono and stereo \
                 (family 0) are decoded"
            )));
        }
        let decoder = OpusDecoder::new(48_000, channels)
            .map_err(|e| DecodeError::Unsupported(format!("Opus stream: {e}")))?;
        Ok(OpusTrack {
            decoder,
            channels,
            // Q7.8 dB, applied on output as RFC 7845 asks.
            gain: 10f32.powf(f32::from(gain_q8) / (20.0 * 256.0)),
            pre_skip: u64::from(pre_skip),
            scratch: Vec::new(),
        })
    }

    fn decode(&mut self, packet: &Packet) -> Result<Decoded, crate::opus::OpusError> {
        self.scratch.clear();
        let frames = self.decoder.decode(&packet.data, &mut self.scratch)?;
        let ch = usize::from(self.channels);
        // Priming: the frames of this packet whose timestamp (granule based, 0 at the start
        // of the link) is below pre-skip. A stream joined mid-way starts past it.
        let pts = u64::try_from(packet.pts.get()).unwrap_or(0);
        let head = usize::try_from(self.pre_skip.saturating_sub(pts))
            .unwrap_or(usize::MAX)
            .min(frames);
        // Padding: what the last page's granule position says lies past the end.
        let tail = usize::try_from(packet.trim_end.get())
            .unwrap_or(usize::MAX)
            .min(frames - head);
        let mut samples = self.scratch[head * ch..(frames - tail) * ch].to_vec();
        if self.gain != 1.0 {
            for v in &mut samples {
                *v *= self.gain;
            }
        }
        Ok((48_000, ch, samples))
    }
}

/// Length of an Opus track: the demuxer's count includes the pre-skip frames.
fn opus_duration(track: &Track) -> Option<Duration> {
    let frames = track.num_frames.or(track.duration.map(|d| d.get()))?;
    let frames = frames.saturating_sub(u64::from(track.delay.unwrap_or(0)));
    Some(Duration::from_nanos(
        u64::try_from(u128::from(frames) * 1_000_000_000 / 48_000).ok()?,
    ))
}

fn track_duration(track: &Track, rate: u32) -> Option<Duration> {
    if let (Some(frames), true) = (track.num_frames, rate > 0) {
        let nanos = u128::from(frames) * 1_000_000_000 / u128::from(rate);
        return u64::try_from(nanos).ok().map(Duration::from_nanos);
    }
    let (tb, dur) = (track.time_base?, track.duration?);
    let secs = tb.calc_duration(dur)?.as_secs_f64();
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_hints_map_to_extensions() {
        // Only checks that parsing does not panic on odd input.
        for h in [
            "audio/mpeg; charset=x",
            "MP3",
            ".ogg",
            "",
            "/",
            ";;",
            "audio/aacp",
        ] {
            let _ = make_hint(Some(h));
        }
    }

    #[test]
    fn empty_and_text_input_is_not_audio() {
        let e = Decoder::from_bytes(Vec::new(), None).unwrap_err();
        assert!(matches!(e, DecodeError::NotAudio), "{e}");
        let text = b"hello, this is not audio at all\n".repeat(200);
        let e = Decoder::from_bytes(text, Some("mp3")).unwrap_err();
        assert!(matches!(e, DecodeError::NotAudio), "{e}");
    }
}
