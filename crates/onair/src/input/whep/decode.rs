//! The WHEP decode stage: RTP packets in (from the session driver), s16le PCM blocks at the
//! target rate out. Pure state plus codecs: a bridge decode worker
//! ([`crate::bridge::pool`]) drives it on a dedicated thread (codec work never runs on the
//! executor).
//!
//! It owns the jitter buffer, the codec (Opus with PLC and in-band FEC; G.711 µ/A-law), the
//! downmix + anti-aliased resampler, and the bridge's media timeline.
//!
//! Opus is decoded straight to the output format when libopus supports it (8, 12, 16, 24 or
//! 48 kHz; mono or stereo): libopus band-limits before it decimates (CELT zeroes the MDCT
//! bins above the output's Nyquist frequency, SILK runs at its own internal rate) and
//! downmixes to mono as the mean of the channels, so this is anti-aliased and costs less
//! than decoding 48 kHz stereo and resampling (docs/BRIDGE.md, "Audio"). Other output rates,
//! and G.711, go through the windowed-sinc resampler. A stage with a *tap* (the bridge also
//! feeds a mount) decodes Opus at 48 kHz stereo, hands that full-quality PCM to the tap and
//! resamples it for the blocks.
//!
//! Invariants:
//! - Media time comes from RTP timestamps: every gap in them (loss, or a sender pause) is
//!   filled with concealed audio of exactly the gap's length, so the output never runs fast
//!   or slow against the sender's clock and never stretches audio to cover a hole.
//! - The timeline is anchored once to wall-clock time at the first packet; block `n` starts at
//!   `anchor + frames_before_n / rate`. A new WHEP session continues the timeline, filling the
//!   wall-clock gap since the last session with silence (up to [`MAX_FILL`]); a longer outage
//!   re-anchors, so timestamps jump instead of the stream carrying minutes of silence.
//! - Everything is bounded: the inbound channel, the jitter buffer, one gap's fill.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use onair_media::g711;
use onair_media::opus::{OpusDecoder, OPUS_RATES};
use onair_media::pcm::{encode_s16le, Pcm};
use onair_media::resample::Resampler;
use onair_proto::rtp::{JitterBuffer, Pushed, Released};

use crate::bridge::Stats;

/// Packets held for reordering at most (≈ 1 s of 20 ms Opus).
const JITTER_CAPACITY: usize = 50;
/// How long a later packet waits for a missing one before it is given up as lost.
const JITTER_DELAY: Duration = Duration::from_millis(60);
/// The longest hole (in one session, or between sessions) filled with concealment/silence;
/// longer ones re-anchor the timeline.
pub const MAX_FILL: Duration = Duration::from_secs(10);
/// Opus's RTP clock (RFC 7587), whatever the rate it is decoded at.
const OPUS_RATE: u32 = 48_000;
/// Decode format for output rates libopus cannot produce: the resampler takes it from there.
const OPUS_CHANNELS: u16 = 2;

/// Which codec a session's packets carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Opus,
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::Pcmu => "pcmu",
            Codec::Pcma => "pcma",
        }
    }

    /// RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => OPUS_RATE,
            Codec::Pcmu | Codec::Pcma => 8_000,
        }
    }

    /// The rate and channel count the codec decodes to for output `out` (`full`: as the
    /// sender sent it, for a tap).
    fn decoded_format(self, out: Format, full: bool) -> (u32, u16) {
        match self {
            Codec::Opus if !full && OPUS_RATES.contains(&out.rate) => (out.rate, out.channels),
            Codec::Opus => (OPUS_RATE, OPUS_CHANNELS),
            Codec::Pcmu | Codec::Pcma => (8_000, 1),
        }
    }
}

/// What the session driver sends to this stage.
#[derive(Debug)]
pub enum Inbound {
    /// A new WHEP session starts (first packet of it follows).
    Session,
    Rtp {
        codec: Codec,
        seq: u16,
        timestamp: u32,
        payload: Arc<[u8]>,
        arrived: Instant,
    },
}

/// A run of PCM (s16le, interleaved, at the output rate) and the wall-clock time of its first
/// sample. Consecutive blocks are contiguous unless `start` jumps (a re-anchor).
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Unix time, seconds.
    pub start: f64,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot set up the resampler: {0}")]
    Resampler(String),
    #[error("cannot set up the Opus decoder: {0}")]
    Opus(String),
}

/// Output rate and channel count.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    pub rate: u32,
    pub channels: u16,
}

enum Decoder {
    Opus(OpusDecoder),
    G711 { alaw: bool },
}

/// One session's codec chain.
struct Chain {
    codec: Codec,
    /// Rate and channels of decoded audio (the resampler's input).
    decoded: (u32, u16),
    decoder: Decoder,
    resampler: Resampler,
    /// RTP timestamp the next packet should carry.
    expected: Option<u32>,
    /// Frames (at the codec clock) of the last decoded packet: the unit of concealment.
    last_frames: u32,
    /// A packet was lost right before the next one: try its in-band FEC.
    after_loss: bool,
}

impl Chain {
    fn new(codec: Codec, out: Format, full: bool) -> Result<Chain, DecodeError> {
        let (rate, channels) = codec.decoded_format(out, full);
        // Same rate and channels: a passthrough (no filter, no delay).
        let resampler = Resampler::new(rate, channels, out.rate, out.channels)
            .map_err(|e| DecodeError::Resampler(e.to_string()))?;
        let decoder = match codec {
            Codec::Opus => Decoder::Opus(
                OpusDecoder::new(rate, channels).map_err(|e| DecodeError::Opus(e.to_string()))?,
            ),
            Codec::Pcmu => Decoder::G711 { alaw: false },
            Codec::Pcma => Decoder::G711 { alaw: true },
        };
        Ok(Chain {
            codec,
            decoded: (rate, channels),
            decoder,
            resampler,
            expected: None,
            last_frames: codec.clock_rate() / 50,
            after_loss: false,
        })
    }

    /// Codec-clock frames as decoded frames. The decode rate divides the clock rate for
    /// Opus (48 kHz) and equals it for G.711, so whole 2.5 ms multiples convert exactly.
    fn to_decoded(&self, clock_frames: u32) -> u32 {
        let ratio = self.codec.clock_rate() / self.decoded.0;
        clock_frames / ratio.max(1)
    }

    /// Conceal `frames` (codec clock) of missing audio into `pcm` (decoded format).
    /// `next` is the packet after the hole, for Opus in-band FEC of the hole's last packet.
    fn conceal(&mut self, frames: u32, next: Option<&[u8]>, pcm: &mut Vec<f32>) {
        let channels = usize::from(self.decoded.1);
        let frames = self.to_decoded(frames);
        let fec_frames = match next {
            Some(_) if self.after_loss => self.to_decoded(self.last_frames).min(frames),
            _ => 0,
        };
        let Decoder::Opus(dec) = &mut self.decoder else {
            // G.711 has no concealment of its own: silence keeps the timeline.
            pcm.resize(pcm.len() + frames as usize * channels, 0.0);
            return;
        };
        // libopus conceals in multiples of 2.5 ms, at most 120 ms per call; a remainder
        // (odd sender timestamps) is silence, so the length is always exact.
        let quantum = dec.rate() / 400;
        let mut left = frames - fec_frames;
        while left > 0 {
            let piece = left.min(quantum * 48);
            let piece = piece - piece % quantum;
            let before = pcm.len();
            if piece == 0 || dec.conceal(piece as usize, pcm).is_err() {
                pcm.truncate(before);
                pcm.resize(before + left as usize * channels, 0.0);
                break;
            }
            left -= piece;
        }
        if let Some(next) = next.filter(|_| fec_frames > 0) {
            let before = pcm.len();
            if dec.decode_fec(next, fec_frames as usize, pcm).is_err() {
                pcm.truncate(before);
                pcm.resize(before + fec_frames as usize * channels, 0.0);
            }
        }
    }

    /// Decode one packet (with any concealment its timestamp implies) into `pcm`.
    /// Returns the concealed frame count (codec clock).
    fn packet(&mut self, timestamp: u32, payload: &[u8], pcm: &mut Vec<f32>) -> u32 {
        let mut concealed = 0;
        if let Some(expected) = self.expected {
            let gap = timestamp.wrapping_sub(expected) as i32;
            let max = (MAX_FILL.as_millis() as u32) * (self.codec.clock_rate() / 1000);
            if gap > 0 && (gap as u32) <= max {
                self.conceal(gap as u32, Some(payload), pcm);
                concealed = gap as u32;
            }
        }
        let last_decoded = self.to_decoded(self.last_frames);
        let (rate, channels) = self.decoded;
        let frames = match &mut self.decoder {
            Decoder::Opus(dec) => {
                // Decoded frames back to the 48 kHz clock: the decode rate divides it.
                let ratio = OPUS_RATE / rate;
                let before = pcm.len();
                match dec.decode(payload, pcm) {
                    Ok(frames) => frames as u32 * ratio,
                    Err(_) => {
                        // A corrupt packet counts as lost: conceal its expected length.
                        pcm.truncate(before);
                        if dec.conceal(last_decoded as usize, pcm).is_err() {
                            pcm.truncate(before);
                            pcm.resize(before + last_decoded as usize * usize::from(channels), 0.0);
                        }
                        concealed += self.last_frames;
                        self.last_frames
                    }
                }
            }
            Decoder::G711 { alaw } => {
                if *alaw {
                    g711::decode_alaw(payload, pcm);
                } else {
                    g711::decode_ulaw(payload, pcm);
                }
                payload.len() as u32
            }
        };
        self.after_loss = false;
        if frames > 0 {
            self.last_frames = frames;
        }
        self.expected = Some(timestamp.wrapping_add(frames));
        concealed
    }
}

/// The stage's state; [`run`] drives it from a channel.
pub struct Stage {
    out: Format,
    jitter: JitterBuffer<(Codec, Arc<[u8]>)>,
    chain: Option<Chain>,
    /// Wall-clock anchor of output frame 0.
    anchor: Option<(Instant, f64)>,
    /// Output frames produced since the anchor.
    produced: u64,
    /// A new session started: its first packet decides how to join the timeline.
    joining: bool,
    /// The anchor was just set at a first packet's arrival: move it back by that packet's
    /// duration, since a packet leaves the sender once its audio has been captured.
    backdate: bool,
    stats: Arc<Stats>,
    pcm: Vec<f32>,
    resampled: Vec<f32>,
    /// Decoded PCM (sender's format) waiting for [`Stage::take_tap`]; `None`: no tap.
    tap: Option<Vec<Pcm>>,
    /// Whether blocks carry data (false: only the timeline and stats advance).
    blocks: bool,
}

impl Stage {
    pub fn new(out: Format, stats: Arc<Stats>) -> Stage {
        Stage {
            out,
            jitter: JitterBuffer::new(JITTER_CAPACITY, JITTER_DELAY),
            chain: None,
            anchor: None,
            produced: 0,
            joining: true,
            backdate: false,
            stats,
            pcm: Vec::new(),
            resampled: Vec::new(),
            tap: None,
            blocks: true,
        }
    }

    /// Also keep the decoded audio, at the sender's rate and channels, for
    /// [`Stage::take_tap`] (a mount's encoder). `blocks: false` when nobody reads the
    /// blocks: they are then not filled.
    pub fn with_tap(mut self, blocks: bool) -> Stage {
        self.tap = Some(Vec::new());
        self.blocks = blocks;
        self
    }

    /// Decoded audio since the last call, in the order it was decoded (concealment
    /// included; silence between sessions is not: the mount's encoder fills that itself).
    pub fn take_tap(&mut self) -> Vec<Pcm> {
        self.tap.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn frame_bytes(&self) -> usize {
        2 * usize::from(self.out.channels)
    }

    fn block_start(&self) -> f64 {
        let (_, unix) = self.anchor.unwrap_or((Instant::now(), 0.0));
        unix + self.produced as f64 / f64::from(self.out.rate)
    }

    /// Output frames of silence, emitted directly (bypasses the codec chain).
    fn silence(&mut self, frames: u64, blocks: &mut Vec<Block>) {
        if frames == 0 {
            return;
        }
        let start = self.block_start();
        let len = frames as usize * self.frame_bytes();
        self.produced += frames;
        self.stats
            .bytes_produced
            .fetch_add(len as u64, Ordering::Relaxed);
        self.stats
            .concealed_frames
            .fetch_add(frames, Ordering::Relaxed);
        if self.blocks {
            blocks.push(Block {
                start,
                data: vec![0u8; len],
            });
        }
    }

    /// A packet arrived for the first time in a session: join it to the timeline.
    fn join(&mut self, now: Instant, blocks: &mut Vec<Block>) {
        self.joining = false;
        let Some((at, _)) = self.anchor else {
            self.anchor = Some((now, unix_now()));
            self.backdate = true;
            return;
        };
        // Flush what the previous session's resampler still held, then fill the outage up
        // to the start of the new session's first packet (one packet before its arrival).
        let mut packet_secs = 0.02;
        if let Some(mut chain) = self.chain.take() {
            packet_secs = f64::from(chain.last_frames) / f64::from(chain.codec.clock_rate());
            self.resampled.clear();
            chain.resampler.flush(&mut self.resampled);
            let resampled = std::mem::take(&mut self.resampled);
            self.emit(&resampled, blocks);
            self.resampled = resampled;
        }
        let due = (now.saturating_duration_since(at).as_secs_f64() - packet_secs).max(0.0)
            * f64::from(self.out.rate);
        let behind = due - self.produced as f64;
        if behind <= 0.0 {
            return;
        }
        if behind <= MAX_FILL.as_secs_f64() * f64::from(self.out.rate) {
            self.silence(behind.round() as u64, blocks);
        } else {
            self.anchor = Some((now, unix_now()));
            self.backdate = true;
            self.produced = 0;
            tracing::info!(
                gap_s = behind / f64::from(self.out.rate),
                "long outage: timeline re-anchored"
            );
        }
    }

    fn emit(&mut self, samples: &[f32], blocks: &mut Vec<Block>) {
        let channels = usize::from(self.out.channels);
        let frames = samples.len() / channels;
        if frames == 0 {
            return;
        }
        let start = self.block_start();
        self.produced += frames as u64;
        self.stats
            .bytes_produced
            .fetch_add((frames * channels * 2) as u64, Ordering::Relaxed);
        if !self.blocks {
            return;
        }
        let mut data = Vec::with_capacity(frames * channels * 2);
        encode_s16le(&samples[..frames * channels], &mut data);
        blocks.push(Block { start, data });
    }

    /// Take one inbound message; returns the blocks it completed.
    pub fn handle(&mut self, msg: Inbound, now: Instant, blocks: &mut Vec<Block>) {
        match msg {
            Inbound::Session => {
                self.jitter.clear();
                self.joining = true;
            }
            Inbound::Rtp {
                codec,
                seq,
                timestamp,
                payload,
                arrived,
            } => {
                if self.joining {
                    self.join(arrived, blocks);
                }
                match self.jitter.push(seq, timestamp, (codec, payload), arrived) {
                    Pushed::Accepted => {}
                    Pushed::Duplicate | Pushed::Late => {
                        self.stats.dropped_packets.fetch_add(1, Ordering::Relaxed);
                    }
                    Pushed::Reset => {
                        if let Some(chain) = &mut self.chain {
                            chain.expected = None;
                        }
                    }
                }
            }
        }
        self.poll(now, blocks);
    }

    /// Release whatever the jitter buffer has due at `now`.
    pub fn poll(&mut self, now: Instant, blocks: &mut Vec<Block>) {
        while let Some(released) = self.jitter.poll(now) {
            match released {
                Released::Lost { count } => {
                    self.stats.lost_packets.fetch_add(count, Ordering::Relaxed);
                    if let Some(chain) = &mut self.chain {
                        chain.after_loss = true;
                    }
                }
                Released::Packet {
                    timestamp,
                    payload: (codec, payload),
                    ..
                } => self.decode(codec, timestamp, &payload, blocks),
            }
        }
    }

    fn decode(&mut self, codec: Codec, timestamp: u32, payload: &[u8], blocks: &mut Vec<Block>) {
        if self.chain.as_ref().map(|c| c.codec) != Some(codec) {
            match Chain::new(codec, self.out, self.tap.is_some()) {
                Ok(chain) => {
                    tracing::info!(?codec, "decoding");
                    self.stats.set_codec(codec.name());
                    self.chain = Some(chain);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot decode");
                    return;
                }
            }
        }
        // invariant: set just above.
        let Some(chain) = self.chain.as_mut() else {
            return;
        };
        self.pcm.clear();
        let concealed = chain.packet(timestamp, payload, &mut self.pcm);
        if std::mem::take(&mut self.backdate) {
            let (rate, channels) = chain.decoded;
            let secs = (self.pcm.len() / usize::from(channels)) as f64 / f64::from(rate);
            if let Some((at, unix)) = self.anchor {
                let back = Duration::from_secs_f64(secs);
                self.anchor = Some((at.checked_sub(back).unwrap_or(at), unix - secs));
            }
        }
        if concealed > 0 {
            let out =
                u64::from(concealed) * u64::from(self.out.rate) / u64::from(codec.clock_rate());
            self.stats
                .concealed_frames
                .fetch_add(out, Ordering::Relaxed);
        }
        if let Some(tap) = &mut self.tap {
            let (rate, channels) = chain.decoded;
            match tap.last_mut() {
                Some(last) if last.rate == rate && last.channels == channels => {
                    last.samples.extend_from_slice(&self.pcm)
                }
                _ => tap.push(Pcm::new(rate, channels, self.pcm.clone())),
            }
        }
        self.resampled.clear();
        chain.resampler.process(&self.pcm, &mut self.resampled);
        let resampled = std::mem::take(&mut self.resampled);
        self.emit(&resampled, blocks);
        self.resampled = resampled;
    }

    /// End of input: flush the resampler's tail.
    pub fn finish(&mut self, blocks: &mut Vec<Block>) {
        if let Some(mut chain) = self.chain.take() {
            self.resampled.clear();
            chain.resampler.flush(&mut self.resampled);
            let resampled = std::mem::take(&mut self.resampled);
            self.emit(&resampled, blocks);
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: Format = Format {
        rate: 16_000,
        channels: 1,
    };

    fn rtp(codec: Codec, seq: u16, timestamp: u32, payload: Vec<u8>, at: Instant) -> Inbound {
        Inbound::Rtp {
            codec,
            seq,
            timestamp,
            payload: payload.into(),
            arrived: at,
        }
    }

    fn samples(blocks: &[Block]) -> Vec<i16> {
        blocks
            .iter()
            .flat_map(|b| b.data.chunks_exact(2))
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect()
    }

    /// µ-law 0x80 is the largest positive level, 0xFF is zero.
    fn marker(k: u16) -> Vec<u8> {
        vec![if k & 1 == 0 { 0x80 } else { 0xFF }; 160]
    }

    #[test]
    fn g711_reordered_duplicated_and_lost_packets_keep_exact_time() {
        let stats = Arc::new(Stats::new(OUT.rate, OUT.channels));
        let mut stage = Stage::new(OUT, stats.clone());
        let t0 = Instant::now();
        let mut blocks = Vec::new();
        // 50 packets of 20 ms (8 kHz µ-law); 7 and 30 never arrive, 11/12 swap, 20 twice.
        let mut order: Vec<u16> = (0..50).filter(|&k| k != 7 && k != 30).collect();
        order.swap(10, 11);
        order.insert(20, 20);
        for (i, &k) in order.iter().enumerate() {
            let at = t0 + Duration::from_millis(20 * i as u64);
            let msg = rtp(Codec::Pcmu, 1000 + k, 160 * u32::from(k), marker(k), at);
            stage.handle(msg, at, &mut blocks);
            let later = at + Duration::from_millis(19);
            stage.poll(later, &mut blocks);
        }
        stage.finish(&mut blocks);
        let pcm = samples(&blocks);
        // Exactly 1 s at 16 kHz: two lost packets are 40 ms of concealment, not a gap.
        assert_eq!(pcm.len(), 16_000);
        assert_eq!(stats.lost_packets.load(Ordering::Relaxed), 2);
        assert_eq!(stats.concealed_frames.load(Ordering::Relaxed), 2 * 320);
        assert_eq!(stats.dropped_packets.load(Ordering::Relaxed), 1);
        // Each packet's audio sits in its own 20 ms slot, lost slots are silent.
        for k in 0..50usize {
            let mid = pcm[k * 320 + 160];
            let want_loud = k & 1 == 0 && k != 30;
            assert_eq!(mid > 20_000, want_loud, "packet {k}: {mid}");
            if !want_loud {
                assert!(mid.abs() < 1_000, "packet {k}: {mid}");
            }
        }
        // Contiguous timestamps.
        for w in blocks.windows(2) {
            let dur = w[0].data.len() as f64 / 2.0 / 16_000.0;
            assert!((w[1].start - w[0].start - dur).abs() < 1e-6);
        }
    }

    #[test]
    fn opus_gaps_are_concealed_to_the_exact_length_even_past_120_ms() {
        let stats = Arc::new(Stats::new(OUT.rate, OUT.channels));
        let mut stage = Stage::new(OUT, stats.clone());
        let t0 = Instant::now();
        let mut blocks = Vec::new();
        // TOC-only packets (CELT fullband 20 ms, code 0): valid, decode to 960 frames.
        let packet = || vec![0xF8];
        let mut ts = 0u32;
        let mut seq = 0u16;
        for i in 0..100u64 {
            // Packets 40..=49 lost (200 ms, more than one 120 ms conceal call).
            if !(40..50).contains(&i) {
                let at = t0 + Duration::from_millis(20 * i);
                stage.handle(rtp(Codec::Opus, seq, ts, packet(), at), at, &mut blocks);
            }
            ts = ts.wrapping_add(960);
            seq = seq.wrapping_add(1);
        }
        stage.poll(t0 + Duration::from_secs(5), &mut blocks);
        stage.finish(&mut blocks);
        assert_eq!(samples(&blocks).len(), 2 * 16_000);
        assert_eq!(stats.lost_packets.load(Ordering::Relaxed), 10);
        assert_eq!(stats.concealed_frames.load(Ordering::Relaxed), 10 * 320);
    }

    #[test]
    fn a_new_session_fills_the_wall_clock_gap_with_silence() {
        let stats = Arc::new(Stats::new(OUT.rate, OUT.channels));
        let mut stage = Stage::new(OUT, stats.clone());
        let t0 = Instant::now();
        let mut blocks = Vec::new();
        for k in 0..10u16 {
            let at = t0 + Duration::from_millis(20 * u64::from(k));
            stage.handle(
                rtp(Codec::Pcmu, k, 160 * u32::from(k), marker(k), at),
                at,
                &mut blocks,
            );
        }
        // The server goes away; 0.8 s later a new session starts with new numbering.
        stage.handle(Inbound::Session, t0, &mut blocks);
        let resume = t0 + Duration::from_millis(1_000);
        for k in 0..10u16 {
            let at = resume + Duration::from_millis(20 * u64::from(k));
            let msg = rtp(
                Codec::Pcmu,
                40_000 + k,
                7 + 160 * u32::from(k),
                marker(k),
                at,
            );
            stage.handle(msg, at, &mut blocks);
        }
        stage.finish(&mut blocks);
        // 0.2 s + 0.8 s of fill + 0.2 s (a packet's arrival is its audio's end).
        assert_eq!(samples(&blocks).len(), 19_200);
        assert_eq!(stats.concealed_frames.load(Ordering::Relaxed), 12_800);
        for w in blocks.windows(2) {
            let dur = w[0].data.len() as f64 / 2.0 / 16_000.0;
            assert!((w[1].start - w[0].start - dur).abs() < 1e-6);
        }
    }
}
