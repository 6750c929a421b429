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
    Normalize, NowPlaying, Playout, PlayoutEnd, PlayoutError, Settings, Shared, Track, Tracks,
    REJECTS_BEFORE_BACKOFF, REJECT_BACKOFF,
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
    let mut rejects_in_a_row = 0u32;
    let mut media = Duration::ZERO;
    let mut next: Option<(Track, JoinHandle<Result<f64, String>>)> = None;
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
                tracing::warn!(name = %settings.name, path = %track.path.display(), "skipping track: {why}");
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                tracks.rejected(&track, &why);
                rejects_in_a_row += 1;
                if rejects_in_a_row >= REJECTS_BEFORE_BACKOFF {
                    rejects_in_a_row = 0;
                    std::thread::sleep(REJECT_BACKOFF);
                }
                continue;
            }
        };
        rejects_in_a_row = 0;
        seq += 1;
        let ready = Ready { track, gain_db };
        if tx
            .send(Message::Title(StreamMeta {
                title: ready.track.title.clone(),
                url: None,
            }))
            .is_err()
        {
            return PlayoutEnd::SinkClosed;
        }
        announce(&settings, &shared, &ready, seq, media);
        let mut limiter: Option<(Limiter, u32, u16)> = None;
        let mut out = Vec::new();
        let length = decoder.info().duration;
        let track_start = media;
        let mut looked_ahead = false;
        loop {
            while *paused.borrow() {
                if token.is_cancelled() {
                    return PlayoutEnd::Cancelled;
                }
                std::thread::sleep(PAUSE_POLL);
            }
            if shared.skipped(seq) || token.is_cancelled() {
                break;
            }
            let block = match decoder.next_block() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(name = %settings.name, path = %ready.track.path.display(), "track cut short: {e}");
                    break;
                }
            };
            if block.channels == 0 || block.rate == 0 {
                continue;
            }
            let fresh = limiter
                .as_ref()
                .is_none_or(|(_, r, c)| *r != block.rate || *c != block.channels);
            if fresh {
                // A new track, or its format changed mid-way: drain the old limiter.
                if let Some((mut l, r, c)) = limiter.take() {
                    out.clear();
                    l.flush(&mut out);
                    if !send(&tx, r, c, &out, &mut media, &shared) {
                        return PlayoutEnd::SinkClosed;
                    }
                }
                let l = Limiter::new(block.rate, block.channels, gain_db, normalize.ceiling_dbtp);
                limiter = Some((l, block.rate, block.channels));
            }
            let Some((l, _, _)) = limiter.as_mut() else {
                continue;
            };
            out.clear();
            l.process(&block.samples, &mut out);
            if !send(&tx, block.rate, block.channels, &out, &mut media, &shared) {
                return PlayoutEnd::SinkClosed;
            }
            let left = length.map(|l| l.saturating_sub(media - track_start));
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
        if let Some((mut l, r, c)) = limiter.take() {
            out.clear();
            l.flush(&mut out);
            if !send(&tx, r, c, &out, &mut media, &shared) {
                return PlayoutEnd::SinkClosed;
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
