//! Opus (libopus, application "audio", 20 ms frames) in Ogg per RFC 7845, for a live
//! stream: each chain link is OpusHead (pre-skip = encoder lookahead) on the BOS page,
//! OpusTags (vendor "onair", TITLE/ARTIST) ending its own page, then audio pages written
//! every [`PACKETS_PER_PAGE`] packets; a title change or the end of the stream drains the
//! encoder and closes the link with an EOS page whose granule trims the padding.
//!
//! Invariants: granule positions count 48 kHz samples including the pre-skip and increase
//! by 960 per packet within a link; a link's last granule is exactly
//! `pre_skip + input samples (at 48 kHz)`, so a decoder that honours pre-skip and end
//! trimming outputs exactly the input; every link gets a fresh serial, different from the
//! previous one; less than one frame of PCM is held between calls.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use onair_proto::frame::ogg::PageWriter;

use super::{check_channels, check_whole_frames, Codec, EncodeError, EncoderSettings};
use crate::ffi::opus::OpusEncoder as Native;

const RATES: &str = "48000, 24000, 16000, 12000, 8000";
const KBPS: std::ops::RangeInclusive<u32> = 6..=510;
/// Packets per audio page: 10 × 20 ms = 200 ms, a page at least five times a second, so a
/// listener hears the stream (and a mount can cut it) with at most 200 ms of page delay,
/// for one 27-byte page header per 200 ms (1.1 kbit/s).
pub const PACKETS_PER_PAGE: usize = 10;
/// 48 kHz samples in one 20 ms packet.
const PACKET_48K: i64 = 960;
/// Largest Opus packet is 1275 bytes per frame (RFC 6716); the rest is headroom.
const MAX_PACKET: usize = 1500;
/// Longest tag value kept, in bytes (as much as an ICY StreamTitle can carry).
const MAX_TAG: usize = 4080;
const VENDOR: &str = "onair";

pub struct OpusEncoder {
    native: Native,
    rate: u32,
    channels: u16,
    /// Sample frames (per channel) in one 20 ms packet at the input rate.
    frame: usize,
    /// 48 kHz samples per input sample.
    scale: u64,
    pre_skip: u16,
    /// Input not yet encoded: less than one packet's worth.
    partial: Vec<f32>,
    packet: Vec<u8>,
    writer: PageWriter,
    /// OpusHead and OpusTags of the current link are written.
    headers_written: bool,
    /// Granule after the last packet encoded in this link.
    granule: i64,
    /// Input sample frames of this link, at 48 kHz.
    input_48k: i64,
    title: Option<String>,
    artist: Option<String>,
    serials: Serials,
    finished: bool,
}

fn opus_err(c: crate::ffi::opus::OpusCode) -> EncodeError {
    EncodeError::Opus(c.to_string())
}

impl OpusEncoder {
    pub fn new(s: &EncoderSettings) -> Result<OpusEncoder, EncodeError> {
        check_channels(Codec::Opus, s.channels)?;
        if ![48_000, 24_000, 16_000, 12_000, 8_000].contains(&s.rate) {
            return Err(EncodeError::UnsupportedRate {
                codec: Codec::Opus.name(),
                rate: s.rate,
                allowed: RATES,
            });
        }
        if !KBPS.contains(&s.bitrate_kbps) {
            return Err(EncodeError::UnsupportedBitrate {
                codec: Codec::Opus.name(),
                kbps: s.bitrate_kbps,
                allowed: format!("{}..={}", KBPS.start(), KBPS.end()),
            });
        }
        let mut native = Native::new(s.rate, s.channels).map_err(opus_err)?;
        // invariant: bitrate_kbps <= 510, so the product fits.
        native
            .set_bitrate((s.bitrate_kbps * 1000) as i32)
            .map_err(opus_err)?;
        native.set_vbr(s.vbr).map_err(opus_err)?;
        let scale = u64::from(48_000 / s.rate);
        let lookahead = u64::from(native.lookahead().map_err(opus_err)?) * scale;
        let pre_skip = u16::try_from(lookahead)
            .map_err(|_| EncodeError::Opus(format!("lookahead {lookahead} exceeds a pre-skip")))?;
        let mut serials = Serials::new();
        let writer = PageWriter::new(serials.next());
        Ok(OpusEncoder {
            native,
            rate: s.rate,
            channels: s.channels,
            frame: s.rate as usize / 50,
            scale,
            pre_skip,
            partial: Vec::new(),
            packet: vec![0; MAX_PACKET],
            writer,
            headers_written: false,
            granule: 0,
            input_48k: 0,
            title: None,
            artist: None,
            serials,
            finished: false,
        })
    }

    pub fn pre_skip(&self) -> u16 {
        self.pre_skip
    }

    fn write_headers(&mut self, out: &mut Vec<u8>) {
        if self.headers_written {
            return;
        }
        self.headers_written = true;
        let head = opus_head(self.channels, self.pre_skip, self.rate);
        self.writer.push_packet(&head, 0, out);
        self.writer.flush(out);
        let tags = opus_tags(self.title.as_deref(), self.artist.as_deref());
        self.writer.push_packet(&tags, 0, out);
        self.writer.flush(out);
    }

    /// Encodes one packet from exactly one frame of samples; `last_granule` overrides the
    /// packet's granule (end trimming).
    fn encode_frame(
        &mut self,
        pcm: &[f32],
        last_granule: Option<i64>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let n = self
            .native
            .encode_float(pcm, &mut self.packet)
            .map_err(opus_err)?;
        self.granule += PACKET_48K;
        let granule = last_granule.unwrap_or(self.granule);
        self.writer.push_packet(&self.packet[..n], granule, out);
        if self.writer.pending_packets() >= PACKETS_PER_PAGE {
            self.writer.flush(out);
        }
        Ok(())
    }

    /// Drains the encoder's delay and the partial frame, ends the logical stream with an
    /// EOS page, and prepares the next link (new serial, encoder reset, headers pending).
    fn close_link(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write_headers(out);
        let target = i64::from(self.pre_skip) + self.input_48k;
        let samples_per_packet = self.frame * usize::from(self.channels);
        let mut frame = std::mem::take(&mut self.partial);
        frame.resize(samples_per_packet, 0.0);
        // At least one packet: the encoded packets always cover less than the input plus
        // the lookahead until drained.
        loop {
            let done = self.granule + PACKET_48K >= target;
            self.encode_frame(&frame, done.then_some(target), out)?;
            if done {
                break;
            }
            frame.fill(0.0);
        }
        frame.clear();
        self.partial = frame;
        let next = PageWriter::new(self.serials.next());
        std::mem::replace(&mut self.writer, next).finish(out);
        self.native.reset().map_err(opus_err)?;
        self.headers_written = false;
        self.granule = 0;
        self.input_48k = 0;
        Ok(())
    }
}

impl super::Encoder for OpusEncoder {
    fn encode(&mut self, samples: &[f32], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.finished {
            return Err(EncodeError::Finished);
        }
        check_whole_frames(samples, self.channels)?;
        self.write_headers(out);
        let per_packet = self.frame * usize::from(self.channels);
        let mut rest = samples;
        if !self.partial.is_empty() {
            let take = (per_packet - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.partial.len() == per_packet {
                let frame = std::mem::take(&mut self.partial);
                let r = self.encode_frame(&frame, None, out);
                self.partial = frame;
                self.partial.clear();
                r?;
            }
        }
        let mut chunks = rest.chunks_exact(per_packet);
        for frame in chunks.by_ref() {
            self.encode_frame(frame, None, out)?;
        }
        self.partial.extend_from_slice(chunks.remainder());
        let frames = (samples.len() / usize::from(self.channels)) as u64;
        self.input_48k += i64::try_from(frames * self.scale).unwrap_or(i64::MAX);
        Ok(())
    }

    fn set_title(&mut self, title: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.finished {
            return Err(EncodeError::Finished);
        }
        // Nothing of this link is out yet: its OpusTags can still say the new title.
        if self.headers_written {
            self.close_link(out)?;
        }
        let (artist, title) = split_title(title);
        self.artist = artist.map(str::to_owned);
        self.title = Some(title.to_owned());
        self.write_headers(out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.close_link(out)
    }

    fn content_type(&self) -> &'static str {
        Codec::Opus.content_type()
    }

    fn rate(&self) -> u32 {
        self.rate
    }

    fn channels(&self) -> u16 {
        self.channels
    }
}

/// The identification header (RFC 7845 §5.1), channel mapping family 0.
fn opus_head(channels: u16, pre_skip: u16, input_rate: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.push(1);
    // invariant: channels is 1 or 2.
    h.push(channels as u8);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&input_rate.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes());
    h.push(0);
    h
}

/// The comment header (RFC 7845 §5.2) with TITLE and ARTIST when known.
fn opus_tags(title: Option<&str>, artist: Option<&str>) -> Vec<u8> {
    let comments: Vec<String> = [("TITLE", title), ("ARTIST", artist)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", truncate(v, MAX_TAG))))
        .collect();
    let mut t = Vec::new();
    t.extend_from_slice(b"OpusTags");
    let push_str = |t: &mut Vec<u8>, s: &str| {
        // invariant: strings are at most MAX_TAG + a short key long.
        t.extend_from_slice(&(s.len() as u32).to_le_bytes());
        t.extend_from_slice(s.as_bytes());
    };
    push_str(&mut t, VENDOR);
    t.extend_from_slice(&(comments.len() as u32).to_le_bytes());
    for c in &comments {
        push_str(&mut t, c);
    }
    t
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Splits a stream title the ICY way, "Artist - Title", at the first " - ".
fn split_title(s: &str) -> (Option<&str>, &str) {
    match s.split_once(" - ") {
        Some((a, t)) if !a.trim().is_empty() && !t.trim().is_empty() => (Some(a.trim()), t.trim()),
        _ => (None, s.trim()),
    }
}

/// Serial numbers for chain links: a per-encoder sequence from a seed that differs per
/// encoder and per process, so links of different encoders (and restarts) do not collide
/// in practice. Deterministic within an encoder; each value differs from the previous.
struct Serials {
    state: u64,
    last: Option<u32>,
}

impl Serials {
    fn new() -> Serials {
        static INSTANCE: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(INSTANCE.fetch_add(1, Ordering::Relaxed));
        Serials {
            state: h.finish(),
            last: None,
        }
    }

    fn next(&mut self) -> u32 {
        loop {
            // splitmix64
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let serial = (z ^ (z >> 31)) as u32;
            if self.last != Some(serial) {
                self.last = Some(serial);
                return serial;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_layout() {
        let h = opus_head(2, 312, 48_000);
        assert_eq!(
            h,
            [
                b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd', 1, 2, 0x38, 0x01, 0x80, 0xBB, 0, 0,
                0, 0, 0
            ]
        );
    }

    #[test]
    fn tags_layout() {
        let t = opus_tags(Some("Song"), Some("Band"));
        let mut want = b"OpusTags".to_vec();
        want.extend_from_slice(&5u32.to_le_bytes());
        want.extend_from_slice(b"onair");
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&10u32.to_le_bytes());
        want.extend_from_slice(b"TITLE=Song");
        want.extend_from_slice(&11u32.to_le_bytes());
        want.extend_from_slice(b"ARTIST=Band");
        assert_eq!(t, want);
        let empty = opus_tags(None, None);
        assert_eq!(
            &empty[8..],
            [5, 0, 0, 0, b'o', b'n', b'a', b'i', b'r', 0, 0, 0, 0]
        );
        // 1 + 2n bytes: byte MAX_TAG falls inside a two-byte character.
        let long = format!("a{}", "é".repeat(3000));
        let t = opus_tags(Some(&long), None);
        let value_len = u32::from_le_bytes([t[21], t[22], t[23], t[24]]) as usize;
        assert_eq!(
            value_len,
            "TITLE=".len() + MAX_TAG - 1,
            "cut at a char boundary"
        );
        assert!(std::str::from_utf8(&t[25..25 + value_len]).is_ok());
    }

    #[test]
    fn titles_split_at_first_dash() {
        assert_eq!(split_title("A - B - C"), (Some("A"), "B - C"));
        assert_eq!(split_title("Just a title"), (None, "Just a title"));
        assert_eq!(split_title(" - B"), (None, "- B"));
        assert_eq!(split_title("AC-DC"), (None, "AC-DC"));
    }

    #[test]
    fn serials_change_every_link_and_per_encoder() {
        let mut a = Serials::new();
        let mut b = Serials::new();
        let sa: Vec<u32> = (0..50).map(|_| a.next()).collect();
        let sb: Vec<u32> = (0..50).map(|_| b.next()).collect();
        assert!(sa.windows(2).all(|w| w[0] != w[1]));
        assert_ne!(sa, sb);
    }
}
