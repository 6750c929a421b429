//! The encoding playout: every file, whatever its format, is decoded
//! (`onair_media::decode::Decoder`), brought to the target loudness (ReplayGain from the
//! tags, or an EBU R128 measurement of the whole track) through a true-peak limiter, and
//! handed as PCM to the encoder input (`input::encoder`), which resamples, encodes, paces
//! and places each title at its first sample.
//!
//! Invariants:
//! - All decoding and measuring runs on std threads: the producer, plus one measuring
//!   thread working on the next track while the current one plays (so a long track's
//!   measurement never delays the stream).
//! - PCM goes out in blocks of at most [`PCM_BLOCK`]; the encoder's bounded queue paces the
//!   producer to real time.
//! - Pause holds the producer between blocks (nothing dropped, nothing repeated); skip cuts
//!   the current track at the next block.
//! - Crossfade (`Settings::crossfade` > 0): the last `crossfade` of each track (gained, not
//!   yet limited) is held back; when the track ends, the next one's head is decoded and the
//!   two are mixed with equal-power (cos/sin) fades over the overlap, then go through the
//!   one limiter, so output length = len(A) + len(B) − overlap. The overlap is at most half
//!   of either track, and none when the formats (rate/channels) differ. The next title is
//!   announced (and the history/on-air callback run) at the overlap's first sample: the
//!   moment the new track becomes audible. A skip during the overlap drops the outgoing
//!   track at once (the incoming one continues unfaded); a skip before it drops the held
//!   tail and the next track starts without a fade. Memory: at most 2 × crossfade of PCM.

use std::{
    path::Path,
    sync::{atomic::Ordering, Arc},
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use onair_media::{
    decode::Decoder,
    loudness::{Limiter, LoudnessMeter},
    pcm::Pcm,
};
use onair_proto::icy::StreamMeta;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{
    Normalize, NowPlaying, Playout, PlayoutEnd, PlayoutError, Rejects, Settings, Shared, Track,
    Tracks,
};
use crate::input::encoder::{Message, PcmSender};

/// Longest PCM block sent to the encoder.
pub const PCM_BLOCK: Duration = Duration::from_millis(100);
/// ReplayGain 2.0 brings tracks to this loudness; gains are shifted to our target.
pub const REPLAYGAIN_REFERENCE_LUFS: f64 = -18.0;
/// Gain bounds: a near-silent track is not boosted into noise.
const MAX_BOOST_DB: f64 = 12.0;
const MAX_CUT_DB: f64 = -30.0;
/// The next track is picked (and measured) when the current one has this much left (or at
/// its start when its length is unknown): late enough that a request made during a track
/// still plays right after it, early enough to measure a long next track.
const LOOKAHEAD: Duration = Duration::from_secs(30);
/// How often a paused producer looks at its pause flag.
const PAUSE_POLL: Duration = Duration::from_millis(20);

impl Playout {
    /// Encoding: starts the producer thread, which decodes, normalises and sends PCM and
    /// titles to `encoder` (an `input::encoder` started on the mount). The returned future
    /// ends when the track source is exhausted (after sending `End`), the encoder stops, or
    /// `token` is cancelled.
    pub fn start_encoding(
        settings: Settings,
        normalize: Normalize,
        tracks: impl Tracks,
        encoder: PcmSender,
        token: CancellationToken,
    ) -> (
        Playout,
        impl std::future::Future<Output = Result<PlayoutEnd, PlayoutError>> + Send,
    ) {
        let shared = Arc::new(Shared::default());
        let paused = Arc::new(watch::Sender::new(false));
        let playout = Playout {
            shared: shared.clone(),
            paused: paused.clone(),
        };
        let (done_tx, done_rx) = oneshot::channel();
        let rx = paused.subscribe();
        let name = settings.name.clone();
        let t = token.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("playout {name}"))
            .spawn(move || {
                let end = produce(settings, normalize, tracks, encoder, shared, rx, t);
                let _ = done_tx.send(end);
            });
        let task = async move {
            spawned.map_err(PlayoutError::Thread)?;
            tokio::select! {
                _ = token.cancelled() => Ok(PlayoutEnd::Cancelled),
                end = done_rx => end.map_err(|_| PlayoutError::Sink("the playout thread panicked".into())),
            }
        };
        (playout, task)
    }
}

/// A track ready to play: its decoder and gain.
struct Ready {
    track: Track,
    gain_db: f64,
}

/// Gained (normalised, not yet limited) PCM of one format.
struct Chunk {
    rate: u32,
    channels: u16,
    samples: Vec<f32>,
}

impl Chunk {
    fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }
}

/// The end of the outgoing track, held back so it can be mixed with the next one.
struct Tail {
    chunk: Chunk,
    /// Frames of the whole outgoing track (caps the overlap at half of it).
    track_frames: u64,
}

/// Everything after the mix: one limiter (tracks arrive already gained) and the sender.
struct Output<'a> {
    tx: &'a PcmSender,
    shared: &'a Shared,
    ceiling_dbtp: f64,
    limiter: Option<(Limiter, u32, u16)>,
    out: Vec<f32>,
    media: Duration,
}

impl Output<'_> {
    /// False when the encoder is gone.
    fn push(&mut self, rate: u32, channels: u16, samples: &[f32]) -> bool {
        if samples.is_empty() {
            return true;
        }
        let fresh = self
            .limiter
            .as_ref()
            .is_none_or(|(_, r, c)| *r != rate || *c != channels);
        if fresh {
            if !self.flush() {
                return false;
            }
            self.limiter = Some((
                Limiter::new(rate, channels, 0.0, self.ceiling_dbtp),
                rate,
                channels,
            ));
        }
        let Some((l, _, _)) = self.limiter.as_mut() else {
            return true;
        };
        self.out.clear();
        l.process(samples, &mut self.out);
        send(
            self.tx,
            rate,
            channels,
            &self.out,
            &mut self.media,
            self.shared,
        )
    }

    /// Drains the limiter's look-ahead, so that a title sent next lands on the exact
    /// sample (the limiter delays its output).
    fn flush(&mut self) -> bool {
        if let Some((mut l, r, c)) = self.limiter.take() {
            self.out.clear();
            l.flush(&mut self.out);
            return send(self.tx, r, c, &self.out, &mut self.media, self.shared);
        }
        true
    }
}

/// Equal-power fade gains `(outgoing, incoming)` at frame `k` of an overlap of `total`
/// frames: cos/sin of a quarter turn sampled at frame centres, so their squares sum to 1
/// and the curve is symmetric.
pub fn fade_gains(k: usize, total: usize) -> (f32, f32) {
    let t = (k as f64 + 0.5) / total.max(1) as f64 * std::f64::consts::FRAC_PI_2;
    (t.cos() as f32, t.sin() as f32)
}

/// Mixes frames `first..first + n` of an overlap of `total` frames: `outgoing` and
/// `incoming` hold those `n` frames (interleaved, `channels` each); the sum is appended to
/// `mixed`. Pure: the limiter comes after.
pub fn mix_overlap(
    outgoing: &[f32],
    incoming: &[f32],
    channels: usize,
    first: usize,
    total: usize,
    mixed: &mut Vec<f32>,
) {
    let ch = channels.max(1);
    for (k, (a, b)) in outgoing.chunks(ch).zip(incoming.chunks(ch)).enumerate() {
        let (ga, gb) = fade_gains(first + k, total);
        mixed.extend(a.iter().zip(b).map(|(x, y)| x * ga + y * gb));
    }
}

/// Overlap in frames: the configured one, at most half of either track, within what is
/// held of the outgoing track and decoded of the incoming one.
pub fn overlap_frames(
    crossfade: usize,
    tail: usize,
    outgoing_track: u64,
    head: usize,
    incoming_ended: bool,
) -> usize {
    let mut ov = crossfade.min(tail).min(head);
    ov = ov.min(usize::try_from(outgoing_track / 2).unwrap_or(usize::MAX));
    if incoming_ended {
        ov = ov.min(head / 2);
    }
    ov
}

fn frames_of(d: Duration, rate: u32) -> usize {
    (d.as_secs_f64() * f64::from(rate)).round() as usize
}

fn gained(samples: &[f32], gain: f32) -> Vec<f32> {
    samples.iter().map(|s| s * gain).collect()
}

fn produce(
    settings: Settings,
    normalize: Normalize,
    mut tracks: impl Tracks,
    tx: PcmSender,
    shared: Arc<Shared>,
    paused: watch::Receiver<bool>,
    token: CancellationToken,
) -> PlayoutEnd {
    let mut seq = 0u64;
    let mut rejects = Rejects::default();
    let mut next: Option<(Track, JoinHandle<Result<f64, String>>)> = None;
    let mut output = Output {
        tx: &tx,
        shared: &shared,
        ceiling_dbtp: normalize.ceiling_dbtp,
        limiter: None,
        out: Vec::new(),
        media: Duration::ZERO,
    };
    let mut tail: Option<Tail> = None;
    loop {
        if token.is_cancelled() {
            return PlayoutEnd::Cancelled;
        }
        if tx.is_closed() {
            return PlayoutEnd::SinkClosed;
        }
        let (track, gain) = match next.take() {
            Some((t, h)) => {
                let g = h
                    .join()
                    .unwrap_or_else(|_| Err("loudness measurement panicked".into()));
                (t, g)
            }
            None => {
                let Some(t) = tracks.next_track() else {
                    if let Some(t) = tail.take() {
                        let c = t.chunk;
                        if !output.push(c.rate, c.channels, &c.samples) {
                            return PlayoutEnd::SinkClosed;
                        }
                    }
                    if !output.flush() {
                        return PlayoutEnd::SinkClosed;
                    }
                    let _ = tx.send(Message::End);
                    return PlayoutEnd::Finished;
                };
                let g = track_gain(&t, &normalize);
                (t, g)
            }
        };
        let opened = gain.and_then(|g| {
            Decoder::open(&track.path)
                .map(|d| (d, g))
                .map_err(|e| e.to_string())
        });
        let (mut decoder, gain_db) = match opened {
            Ok(ok) => ok,
            Err(why) => {
                rejects.reject(&settings.name, &shared, &mut tracks, &track, &why);
                continue;
            }
        };
        rejects.played();
        let gain = 10f64.powf(gain_db / 20.0) as f32;
        let length = decoder.info().duration;
        let ready = Ready { track, gain_db };
        // Decoded ahead of the main loop: the incoming track's head, for the overlap.
        let mut pre: std::collections::VecDeque<Chunk> = Default::default();
        let mut ended = false;
        let decode = |decoder: &mut Decoder| -> Option<Chunk> {
            loop {
                match decoder.next_block() {
                    Ok(Some(b)) if b.channels == 0 || b.rate == 0 => continue,
                    Ok(Some(b)) => {
                        return Some(Chunk {
                            rate: b.rate,
                            channels: b.channels,
                            samples: gained(&b.samples, gain),
                        })
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::warn!(name = %settings.name, path = %ready.track.path.display(), "track cut short: {e}");
                        return None;
                    }
                }
            }
        };
        // The overlap with the outgoing track, if any; the title goes out where it starts.
        let mut overlap: Option<(Chunk, usize)> = None;
        if let Some(t) = tail.take() {
            let (rate, ch) = (t.chunk.rate, t.chunk.channels);
            let want = 2 * frames_of(settings.crossfade, rate);
            let mut head = 0usize;
            while head < want {
                match decode(&mut decoder) {
                    Some(c) if c.rate == rate && c.channels == ch => {
                        head += c.frames();
                        pre.push_back(c);
                    }
                    Some(c) => {
                        pre.push_back(c);
                        break;
                    }
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            let same: usize = pre
                .iter()
                .take_while(|c| c.rate == rate && c.channels == ch)
                .map(Chunk::frames)
                .sum();
            let ov = overlap_frames(
                frames_of(settings.crossfade, rate),
                t.chunk.frames(),
                t.track_frames,
                same,
                ended && same == head,
            );
            let n = usize::from(ch);
            let split = (t.chunk.frames() - ov) * n;
            if !output.push(rate, ch, &t.chunk.samples[..split]) {
                return PlayoutEnd::SinkClosed;
            }
            if ov > 0 {
                let mut incoming = Vec::with_capacity(ov * n);
                while incoming.len() < ov * n {
                    let Some(mut c) = pre.pop_front() else { break };
                    let take = (ov * n - incoming.len()).min(c.samples.len());
                    incoming.extend(c.samples.drain(..take));
                    if !c.samples.is_empty() {
                        pre.push_front(c);
                    }
                }
                let outgoing = t.chunk.samples[split..].to_vec();
                overlap = Some((
                    Chunk {
                        rate,
                        channels: ch,
                        samples: [outgoing, incoming].concat(),
                    },
                    ov,
                ));
            }
        }
        if !output.flush() {
            return PlayoutEnd::SinkClosed;
        }
        seq += 1;
        if tx
            .send(Message::Title(StreamMeta {
                title: ready.track.title.clone(),
                url: None,
            }))
            .is_err()
        {
            return PlayoutEnd::SinkClosed;
        }
        announce(&settings, &shared, &ready, seq, output.media);
        if let Some((both, ov)) = overlap {
            // `both` = outgoing frames then incoming frames. Mixed in blocks so that a skip
            // ends the outgoing track at once.
            let n = usize::from(both.channels);
            let (a, b) = both.samples.split_at(ov * n);
            let per = frames_of(PCM_BLOCK, both.rate).max(1);
            let mut mixed = Vec::new();
            let mut k = 0;
            while k < ov {
                while *paused.borrow() {
                    if token.is_cancelled() {
                        return PlayoutEnd::Cancelled;
                    }
                    std::thread::sleep(PAUSE_POLL);
                }
                if token.is_cancelled() {
                    return PlayoutEnd::Cancelled;
                }
                let end = (k + per).min(ov);
                mixed.clear();
                if shared.skipped(seq) {
                    // The skip meant the outgoing track: drop it, and renumber the
                    // incoming one so the skip does not also cut it.
                    seq += 1;
                    shared.on_air.store(seq, Ordering::Release);
                    mixed.extend_from_slice(&b[k * n..]);
                    k = ov;
                } else {
                    mix_overlap(&a[k * n..end * n], &b[k * n..end * n], n, k, ov, &mut mixed);
                    k = end;
                }
                if !output.push(both.rate, both.channels, &mixed) {
                    return PlayoutEnd::SinkClosed;
                }
            }
        }
        // The main loop: everything after the overlap passes through `hold`, which keeps the
        // last `crossfade` of the track back for the next overlap.
        let mut hold: Option<Chunk> = None;
        let mut track_frames = 0u64;
        let mut position = Duration::ZERO;
        let mut looked_ahead = false;
        let mut cut = false;
        loop {
            while *paused.borrow() {
                if token.is_cancelled() {
                    return PlayoutEnd::Cancelled;
                }
                std::thread::sleep(PAUSE_POLL);
            }
            if token.is_cancelled() {
                return PlayoutEnd::Cancelled;
            }
            if shared.skipped(seq) {
                cut = true;
                break;
            }
            let c = match pre.pop_front() {
                Some(c) => c,
                None if ended => break,
                None => match decode(&mut decoder) {
                    Some(c) => c,
                    None => break,
                },
            };
            track_frames += c.frames() as u64;
            position += Duration::from_secs_f64(c.frames() as f64 / f64::from(c.rate));
            let keep = frames_of(settings.crossfade, c.rate) * usize::from(c.channels);
            match hold.as_mut() {
                Some(h) if h.rate == c.rate && h.channels == c.channels => {
                    h.samples.extend_from_slice(&c.samples)
                }
                _ => {
                    if let Some(h) = hold.take() {
                        if !output.push(h.rate, h.channels, &h.samples) {
                            return PlayoutEnd::SinkClosed;
                        }
                    }
                    hold = Some(c);
                }
            }
            if let Some(h) = hold.as_mut() {
                if h.samples.len() > keep {
                    let excess = h.samples.len() - keep;
                    let excess = excess - excess % usize::from(h.channels.max(1));
                    let out: Vec<f32> = h.samples.drain(..excess).collect();
                    if !output.push(h.rate, h.channels, &out) {
                        return PlayoutEnd::SinkClosed;
                    }
                }
            }
            let left = length.map(|l| l.saturating_sub(position));
            if !looked_ahead && left.is_none_or(|l| l <= LOOKAHEAD) {
                looked_ahead = true;
                // Measure the next track while this one plays.
                if let Some(t) = tracks.next_track() {
                    let n = normalize;
                    let t2 = t.clone();
                    let h = std::thread::Builder::new()
                        .name("loudness".into())
                        .spawn(move || track_gain(&t2, &n));
                    match h {
                        Ok(h) => next = Some((t, h)),
                        Err(e) => tracing::warn!("cannot start a loudness thread: {e}"),
                    }
                }
            }
        }
        // A skipped track ends at once: its held tail is dropped, the next starts unfaded.
        if let Some(h) = hold.filter(|h| !cut && !h.samples.is_empty()) {
            if settings.crossfade.is_zero() {
                if !output.push(h.rate, h.channels, &h.samples) {
                    return PlayoutEnd::SinkClosed;
                }
            } else {
                tail = Some(Tail {
                    chunk: h,
                    track_frames,
                });
            }
        }
    }
}

fn announce(settings: &Settings, shared: &Shared, ready: &Ready, seq: u64, media: Duration) {
    shared.on_air.store(seq, Ordering::Release);
    {
        let mut st = shared.status();
        st.now = Some(NowPlaying {
            track: ready.track.clone(),
            started_at: SystemTime::now(),
            started_media: media,
        });
        st.tracks_played += 1;
    }
    if let Some(f) = &settings.on_air {
        f(&ready.track);
    }
    tracing::info!(name = %settings.name, title = %ready.track.title, gain_db = ready.gain_db, path = %ready.track.path.display(), "now playing");
}

/// Sends `samples` in blocks of at most [`PCM_BLOCK`]; false when the encoder is gone.
fn send(
    tx: &PcmSender,
    rate: u32,
    channels: u16,
    samples: &[f32],
    media: &mut Duration,
    shared: &Shared,
) -> bool {
    let per_block = (rate as usize * PCM_BLOCK.as_millis() as usize / 1000).max(1)
        * usize::from(channels.max(1));
    for chunk in samples.chunks(per_block) {
        let pcm = Pcm::new(rate, channels, chunk.to_vec());
        *media += pcm.duration();
        if tx.send(Message::Pcm(pcm)).is_err() {
            return false;
        }
        shared.status().media_time = *media;
    }
    true
}

/// The gain that brings `track` to the target: from its ReplayGain tag, else measured over
/// the whole track (blocking: decodes it once).
pub fn track_gain(track: &Track, n: &Normalize) -> Result<f64, String> {
    if !n.enabled {
        return Ok(0.0);
    }
    let gain = match track.replaygain_db {
        Some(rg) => rg + (n.target_lufs - REPLAYGAIN_REFERENCE_LUFS),
        None => match measure_lufs(&track.path)? {
            Some(lufs) => n.target_lufs - lufs,
            None => 0.0,
        },
    };
    Ok(gain.clamp(MAX_CUT_DB, MAX_BOOST_DB))
}

/// Integrated loudness of a file (`None`: silent, or too short to gate).
pub fn measure_lufs(path: &Path) -> Result<Option<f64>, String> {
    let mut decoder = Decoder::open(path).map_err(|e| e.to_string())?;
    let mut meter: Option<(LoudnessMeter, u32, u16)> = None;
    let mut blocks = 0u64;
    while let Some(b) = decoder.next_block().map_err(|e| e.to_string())? {
        if b.rate == 0 || b.channels == 0 {
            continue;
        }
        blocks += 1;
        if meter.is_none() {
            let m = LoudnessMeter::new(b.rate, b.channels).map_err(|e| e.to_string())?;
            meter = Some((m, b.rate, b.channels));
        }
        // After a format change mid-file the rest is not measured (rare; the part in the
        // first format is representative).
        if let Some((m, r, c)) = meter.as_mut() {
            if *r == b.rate && *c == b.channels {
                m.push(&b.samples);
            }
        }
    }
    if blocks == 0 {
        return Err("no audio decoded".into());
    }
    Ok(meter.and_then(|(m, _, _)| m.integrated_lufs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fade_curves_are_equal_power_and_sample_exact() {
        let total = 4;
        for k in 0..total {
            let (a, b) = fade_gains(k, total);
            let t = (k as f64 + 0.5) / 4.0 * std::f64::consts::FRAC_PI_2;
            assert_eq!((a, b), (t.cos() as f32, t.sin() as f32));
            assert!((a * a + b * b - 1.0).abs() < 1e-6);
            // Symmetric: the incoming curve is the outgoing one reversed.
            assert!((b - fade_gains(total - 1 - k, total).0).abs() < 1e-6);
        }
        // Mixing in pieces gives the same samples as mixing at once.
        let (out, inc): (Vec<f32>, Vec<f32>) = (0..200).map(|i| (1.0, i as f32 / 200.0)).unzip();
        let mut whole = Vec::new();
        mix_overlap(&out, &inc, 2, 0, 100, &mut whole);
        let mut pieces = Vec::new();
        mix_overlap(&out[..62], &inc[..62], 2, 0, 100, &mut pieces);
        mix_overlap(&out[62..], &inc[62..], 2, 31, 100, &mut pieces);
        assert_eq!(whole, pieces);
        assert_eq!(whole.len(), 200);
        for (i, m) in whole.iter().enumerate() {
            let (ga, gb) = fade_gains(i / 2, 100);
            assert_eq!(*m, out[i] * ga + inc[i] * gb, "sample {i}");
        }
    }

    #[test]
    fn a_full_scale_mix_never_clips_after_the_limiter() {
        let (rate, n) = (48_000u32, 48_000usize);
        // In-phase full-scale sines sum to √2 at mid-overlap: the limiter must hold it.
        let tone: Vec<f32> = (0..n)
            .flat_map(|i| {
                let s = (i as f32 * 2.0 * std::f32::consts::PI * 1000.0 / rate as f32).sin();
                [s, s]
            })
            .collect();
        let mut mixed = Vec::new();
        mix_overlap(&tone, &tone, 2, 0, n, &mut mixed);
        let raw_peak = mixed.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!(raw_peak > 1.4, "the test must overload: {raw_peak}");
        let mut limiter = Limiter::new(rate, 2, 0.0, -1.0);
        let mut out = Vec::new();
        limiter.process(&mixed, &mut out);
        limiter.flush(&mut out);
        assert_eq!(out.len(), mixed.len());
        let peak = out.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!(peak <= 1.0, "clipped: {peak}");
        assert!(
            peak <= 10f32.powf(-1.0 / 20.0) * 1.01,
            "above the ceiling: {peak}"
        );
    }

    #[test]
    fn short_tracks_get_at_most_half_of_the_shorter_as_overlap() {
        // 2 s crossfade at 1 kHz, long tracks: the full 2000 frames.
        assert_eq!(overlap_frames(2000, 2000, 10_000, 4000, false), 2000);
        // A of 3000 frames (held tail 2000): half of A.
        assert_eq!(overlap_frames(2000, 2000, 3000, 4000, false), 1500);
        // B of 1000 frames, all decoded: half of B.
        assert_eq!(overlap_frames(2000, 2000, 10_000, 1000, true), 500);
        // Nothing held: no overlap (gapless).
        assert_eq!(overlap_frames(2000, 0, 10_000, 4000, false), 0);
        assert_eq!(overlap_frames(0, 0, 10_000, 4000, false), 0);
    }
}
