//! The playout engine: plays a sequence of tracks as one continuous, consistent stream,
//! released in real time, with each track's title announced at the exact byte where the
//! track starts. The AutoDJ drives it from its library; `onair push` drives it from an
//! explicit list of files.
//!
//! # API
//!
//! ```text
//! let mut settings = Settings::new("/autodj");          // name for logs; lead 0.5 s
//! settings.on_air = Some(Arc::new(|t: &Track| ...));     // optional: each track as it starts
//! // Passthrough (MP3 frames copied) into any Sink:
//! let (playout, task) = Playout::start(settings, target, tracks, sink, token);
//! // or decode + normalise + encode, into an encoder input (input::encoder::start):
//! let (playout, task) = Playout::start_encoding(settings, Normalize::default(), tracks, pcm_tx, token);
//! supervisor.spawn_service("autodj", task);   // the future ends with Ok(PlayoutEnd)
//! playout.skip();                              // cut the current track at a frame/block boundary
//! playout.pause(); playout.resume();           // hold / continue at the exact next frame
//! playout.status()                             // now playing, media time, paused, counts
//! ```
//!
//! - [`Tracks`] supplies tracks ([`TrackList`]: an explicit list, optionally shuffled and
//!   looped; the AutoDJ's rotation is another implementation). `next_track` runs on the
//!   producer thread and may block (waiting for a library scan).
//! - [`Sink`] (passthrough) takes the output: [`Sink::track_start`] (the title, before the
//!   track's first byte) and [`Sink::audio`] (whole units, already paced). [`MountSink`]
//!   produces into a [`Mount`]. A sink that cannot take a block now (a push connection is
//!   down) returns [`Delivery::Paused`]: the playout pauses and, on [`Playout::resume`],
//!   delivers that same block again, so nothing is skipped or repeated.
//! - Passthrough ([`Playout::start`]) copies MP3 frames from files already in the target
//!   format (tags, Xing/Info/VBRI frames and partial frames removed by
//!   [`AudioFile::load`]); a file in another format is skipped with a log line.
//! - Encoding ([`Playout::start_encoding`], module `encoding`) decodes any file, normalises
//!   it and sends PCM and titles to the encoder input, which paces and places titles; pause
//!   holds the producer between PCM blocks.
//!
//! Invariants:
//! - Units are released on absolute deadlines from media time (sample counts,
//!   [`Pacer`]): unit *n* goes out at `origin + media_time(n) - lead`, so VBR files and
//!   long runs never drift; the sink is never more than `lead` (≤ [`MAX_LEAD`]) ahead of
//!   real time. A pause re-anchors the clock: the stream resumes at real-time speed.
//! - File reading runs on a dedicated producer thread behind a bounded channel of
//!   [`BLOCKS_AHEAD`] blocks of about [`BLOCK`] media each: the executor never reads files
//!   and memory per playout is bounded (one track's frames plus the channel).
//! - All times come from tokio's clock (`tokio::time::Instant`), so tests run the engine
//!   under a paused clock.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use onair_proto::{
    frame::{Format, StreamInfo, Unit, UnitKind},
    icecast::StreamInfoHeaders,
    icy::StreamMeta,
    pace::Pacer,
};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

mod encoding;

pub use encoding::{measure_lufs, track_gain, PCM_BLOCK, REPLAYGAIN_REFERENCE_LUFS};

use crate::{
    input::file::AudioFile,
    mount::{Mount, SourceInfo, SourceTicket},
};

/// Longest lead allowed over real time.
pub const MAX_LEAD: Duration = Duration::from_secs(1);
/// Default lead: enough to ride out scheduling hiccups, small enough for quick skips.
pub const DEFAULT_LEAD: Duration = Duration::from_millis(500);
/// Media time per block handed from the producer thread to the pacer.
pub const BLOCK: Duration = Duration::from_millis(200);
/// Blocks buffered between the producer thread and the pacer.
pub const BLOCKS_AHEAD: usize = 8;
/// After a stall longer than this (suspended process), the clock re-anchors instead of
/// bursting to catch up.
const MAX_BEHIND: Duration = Duration::from_secs(2);
/// Tracks rejected in a row after which the producer waits before trying more (a library
/// of nothing but unplayable files must not spin a core).
const REJECTS_BEFORE_BACKOFF: u32 = 32;
const REJECT_BACKOFF: Duration = Duration::from_secs(1);

/// Unplayable tracks met by a producer thread: each is logged, counted in the status and
/// reported to the track list; after [`REJECTS_BEFORE_BACKOFF`] in a row the thread rests.
#[derive(Debug, Default)]
struct Rejects {
    in_a_row: u32,
}

impl Rejects {
    fn reject(
        &mut self,
        name: &str,
        shared: &Shared,
        tracks: &mut impl Tracks,
        track: &Track,
        why: &str,
    ) {
        tracing::warn!(%name, path = %track.path.display(), "skipping track: {why}");
        shared.rejected.fetch_add(1, Ordering::Relaxed);
        tracks.rejected(track, why);
        self.in_a_row += 1;
        if self.in_a_row >= REJECTS_BEFORE_BACKOFF {
            self.in_a_row = 0;
            std::thread::sleep(REJECT_BACKOFF);
        }
    }

    fn played(&mut self) {
        self.in_a_row = 0;
    }
}

/// One track to play.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// The caller's id for it (library id, list position), reported back in the status.
    pub id: u64,
    pub path: PathBuf,
    /// Announced at the track's first byte ("Artist - Title").
    pub title: String,
    /// ReplayGain track gain from the tags (used by normalisation instead of measuring).
    pub replaygain_db: Option<f64>,
}

/// The stream format every track is turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// "mp3" (passthrough) — the codec name as `StreamInfo` gives it.
    pub codec: &'static str,
    pub sample_rate: u32,
    pub channels: u8,
    /// Nominal kbit/s, for labels; passthrough accepts VBR files whatever their bitrate.
    pub bitrate_kbps: u32,
}

/// Loudness normalisation of the encoding playout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub enabled: bool,
    /// Integrated loudness tracks are brought to (EBU R128).
    pub target_lufs: f64,
    /// True-peak ceiling of the limiter.
    pub ceiling_dbtp: f64,
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize {
            enabled: true,
            target_lufs: onair_media::loudness::DEFAULT_TARGET_LUFS,
            ceiling_dbtp: onair_media::loudness::DEFAULT_CEILING_DBTP,
        }
    }
}

/// Called with each track as it goes on air (history, now-playing displays).
pub type OnAir = Arc<dyn Fn(&Track) + Send + Sync>;

#[derive(Clone)]
pub struct Settings {
    /// For logs: the mount or remote the playout feeds.
    pub name: String,
    /// How far ahead of real time units are released (clamped to [`MAX_LEAD`]).
    pub lead: Duration,
    pub on_air: Option<OnAir>,
    /// Encoding only: overlap between consecutive tracks (zero: gapless). Passthrough
    /// ignores it (copied frames cannot be mixed; the config refuses the combination).
    pub crossfade: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("lead", &self.lead)
            .finish_non_exhaustive()
    }
}

impl Settings {
    pub fn new(name: impl Into<String>) -> Settings {
        Settings {
            name: name.into(),
            lead: DEFAULT_LEAD,
            on_air: None,
            crossfade: Duration::ZERO,
        }
    }
}

/// Where tracks come from. Called on the producer thread.
pub trait Tracks: Send + 'static {
    /// The next track, or `None` when the playout should end. May block.
    fn next_track(&mut self) -> Option<Track>;
    /// `track` could not be played (the playout has logged why); the next one is asked for.
    fn rejected(&mut self, _track: &Track, _why: &str) {}
}

/// What a sink did with a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Taken,
    /// Not taken: pause the playout and offer the same block again after `resume`.
    Paused,
    /// The sink is gone for good: the playout ends.
    Closed,
}

/// Takes the playout's output, in order.
pub trait Sink: Send + 'static {
    /// `track` starts with the next byte delivered.
    fn track_start(&mut self, track: &Track, info: &StreamInfo) -> Delivery;
    /// Whole units (`units` tile `data`), released at their deadline.
    fn audio(&mut self, data: &[u8], units: &[Unit], info: StreamInfo) -> Delivery;
    /// The playout paused or ended: publish what is pending.
    fn idle(&mut self) {}
}

#[derive(Debug, Error)]
pub enum PlayoutError {
    #[error("{0}")]
    Sink(String),
    #[error("cannot start the producer thread: {0}")]
    Thread(std::io::Error),
}

/// Why a playout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayoutEnd {
    /// `Tracks` had no more.
    Finished,
    Cancelled,
    SinkClosed,
}

/// What is on air.
#[derive(Debug, Clone, PartialEq)]
pub struct NowPlaying {
    pub track: Track,
    pub started_at: SystemTime,
    /// Media time of the whole playout when the track started.
    pub started_media: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct PlayoutStatus {
    pub now: Option<NowPlaying>,
    pub paused: bool,
    /// Media time released so far (pauses excluded).
    pub media_time: Duration,
    pub tracks_played: u64,
    pub tracks_rejected: u64,
}

#[derive(Debug, Default)]
struct Shared {
    status: Mutex<PlayoutStatus>,
    /// Tracks with a sequence number up to this are cut (skip).
    skip_through: AtomicU64,
    /// Sequence number of the track on air.
    on_air: AtomicU64,
    rejected: AtomicU64,
}

impl Shared {
    fn status(&self) -> std::sync::MutexGuard<'_, PlayoutStatus> {
        // The status is a plain value: a panic elsewhere leaves it valid.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn skipped(&self, seq: u64) -> bool {
        seq <= self.skip_through.load(Ordering::Acquire)
    }
}

/// Control handle of a running playout (cheap to clone).
#[derive(Debug, Clone)]
pub struct Playout {
    shared: Arc<Shared>,
    paused: Arc<watch::Sender<bool>>,
}

impl Playout {
    /// Passthrough: starts the producer thread and returns the handle and the pacing
    /// future, which the caller spawns (it owns the sink). Files not in `target`'s format
    /// are skipped. Both stop when `token` is cancelled.
    pub fn start(
        settings: Settings,
        target: Target,
        tracks: impl Tracks,
        sink: impl Sink,
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
        let task = run(settings, target, tracks, sink, token, shared, paused);
        (playout, task)
    }

    /// Cuts the current track at the next frame boundary; the next track follows.
    pub fn skip(&self) {
        let on_air = self.shared.on_air.load(Ordering::Acquire);
        self.shared.skip_through.fetch_max(on_air, Ordering::AcqRel);
    }

    /// Stops releasing audio after the block in flight; [`Playout::resume`] continues with
    /// the exact next frame.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    pub fn status(&self) -> PlayoutStatus {
        let mut s = self.shared.status().clone();
        s.paused = *self.paused.borrow();
        s.tracks_rejected = self.shared.rejected.load(Ordering::Relaxed);
        s
    }
}

/// Producer → pacer messages.
#[derive(Debug)]
enum Block {
    Start {
        seq: u64,
        track: Track,
        info: StreamInfo,
    },
    Audio {
        seq: u64,
        data: Bytes,
        units: Vec<Unit>,
        info: StreamInfo,
    },
}

impl Block {
    fn seq(&self) -> u64 {
        match self {
            Block::Start { seq, .. } | Block::Audio { seq, .. } => *seq,
        }
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

async fn run(
    settings: Settings,
    target: Target,
    tracks: impl Tracks,
    mut sink: impl Sink,
    token: CancellationToken,
    shared: Arc<Shared>,
    pause: Arc<watch::Sender<bool>>,
) -> Result<PlayoutEnd, PlayoutError> {
    let mut paused = pause.subscribe();
    let (tx, mut rx) = mpsc::channel::<Block>(BLOCKS_AHEAD);
    let producer = {
        let (settings, shared, token) = (settings.clone(), shared.clone(), token.clone());
        std::thread::Builder::new()
            .name(format!("playout {}", settings.name))
            .spawn(move || produce(settings, target, tracks, tx, shared, token))
            .map_err(PlayoutError::Thread)?
    };
    // The thread ends once the channel is closed (on any exit of the pacer below).
    drop(producer);
    let lead = settings.lead.min(MAX_LEAD);
    let mut pacer = Pacer::new(now(), lead);
    let mut held: Option<Block> = None;
    let end = loop {
        if *paused.borrow_and_update() {
            sink.idle();
            tokio::select! {
                _ = token.cancelled() => break PlayoutEnd::Cancelled,
                r = paused.wait_for(|p| !*p) => if r.is_err() { break PlayoutEnd::Cancelled },
            }
            // Resume at real-time speed from now, not with a burst for the pause.
            pacer.resync_if_late(now(), Duration::ZERO);
            continue;
        }
        let block = match held.take() {
            Some(b) => b,
            None => tokio::select! {
                _ = token.cancelled() => break PlayoutEnd::Cancelled,
                b = rx.recv() => match b {
                    Some(b) => b,
                    None => break PlayoutEnd::Finished,
                },
            },
        };
        if shared.skipped(block.seq()) {
            continue;
        }
        let delivery = match &block {
            Block::Start { seq, track, info } => {
                let d = sink.track_start(track, info);
                if d == Delivery::Taken {
                    shared.on_air.store(*seq, Ordering::Release);
                    let mut st = shared.status();
                    st.now = Some(NowPlaying {
                        track: track.clone(),
                        started_at: SystemTime::now(),
                        started_media: pacer.media_time(),
                    });
                    st.tracks_played += 1;
                    drop(st);
                    if let Some(f) = &settings.on_air {
                        f(track);
                    }
                    tracing::info!(name = %settings.name, title = %track.title, path = %track.path.display(), "now playing");
                }
                d
            }
            Block::Audio {
                data, units, info, ..
            } => {
                let d = sink.audio(data, units, *info);
                if d == Delivery::Taken {
                    for u in units.iter().filter(|u| u.kind == UnitKind::Audio) {
                        pacer.advance(u64::from(u.samples), u.sample_rate);
                    }
                    shared.status().media_time = pacer.media_time();
                }
                d
            }
        };
        match delivery {
            Delivery::Taken => {}
            Delivery::Paused => {
                held = Some(block);
                pause.send_replace(true);
                continue;
            }
            Delivery::Closed => break PlayoutEnd::SinkClosed,
        }
        if matches!(block, Block::Start { .. }) {
            continue;
        }
        pacer.resync_if_late(now(), MAX_BEHIND);
        let deadline = tokio::time::Instant::from_std(pacer.deadline());
        tokio::select! {
            _ = token.cancelled() => break PlayoutEnd::Cancelled,
            _ = tokio::time::sleep_until(deadline) => {}
        }
    };
    sink.idle();
    tracing::info!(name = %settings.name, end = ?end, media_s = pacer.media_time().as_secs_f64(), "playout ended");
    Ok(end)
}

/// The producer thread: loads each track, checks its format, and sends it in blocks.
fn produce(
    settings: Settings,
    target: Target,
    mut tracks: impl Tracks,
    tx: mpsc::Sender<Block>,
    shared: Arc<Shared>,
    token: CancellationToken,
) {
    let mut seq = 0u64;
    let mut rejects = Rejects::default();
    while !token.is_cancelled() && !tx.is_closed() {
        let Some(track) = tracks.next_track() else {
            return;
        };
        let file = match load_passthrough(&track, &target) {
            Ok(f) => f,
            Err(why) => {
                rejects.reject(&settings.name, &shared, &mut tracks, &track, &why);
                continue;
            }
        };
        rejects.played();
        seq += 1;
        let start = Block::Start {
            seq,
            track,
            info: file.info,
        };
        if tx.blocking_send(start).is_err() {
            return;
        }
        for block in blocks(&file, seq) {
            if shared.skipped(seq) || token.is_cancelled() {
                break;
            }
            if tx.blocking_send(block).is_err() {
                return;
            }
        }
    }
}

/// Loads `track` as whole frames and checks it is in the target format.
fn load_passthrough(track: &Track, target: &Target) -> Result<AudioFile, String> {
    let file = AudioFile::load(&track.path).map_err(|e| e.to_string())?;
    let info = file.info;
    if file.format != Format::Mpeg
        || info.codec != target.codec
        || info.sample_rate != target.sample_rate
        || info.channels != target.channels
    {
        return Err(format!(
            "not in the mount's passthrough format ({} {} Hz {} ch, got {} {} Hz {} ch)",
            target.codec,
            target.sample_rate,
            target.channels,
            if info.codec.is_empty() {
                "?"
            } else {
                info.codec
            },
            info.sample_rate,
            info.channels
        ));
    }
    // Every frame must match too: a file that changes rate or layer mid-way would break
    // listeners' decoders.
    if file
        .units
        .iter()
        .any(|u| u.kind == UnitKind::Audio && u.sample_rate != target.sample_rate)
    {
        return Err("sample rate changes inside the file".into());
    }
    Ok(file)
}

/// Cuts a loaded file into blocks of about [`BLOCK`] media time.
fn blocks(file: &AudioFile, seq: u64) -> impl Iterator<Item = Block> + '_ {
    let mut i = 0usize;
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        if i >= file.units.len() {
            return None;
        }
        let (start_i, start_off) = (i, offset);
        let mut media = Duration::ZERO;
        while i < file.units.len() && media < BLOCK {
            let u = file.units[i];
            media += unit_duration(&u);
            offset += u.len;
            i += 1;
        }
        Some(Block::Audio {
            seq,
            data: file.data.slice(start_off..offset),
            units: file.units[start_i..i].to_vec(),
            info: file.info,
        })
    })
}

fn unit_duration(u: &Unit) -> Duration {
    if u.sample_rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(u64::from(u.samples) * 1_000_000_000 / u64::from(u.sample_rate))
}

/// An explicit list of tracks, in order or shuffled, once or looped (`onair push`).
#[derive(Debug)]
pub struct TrackList {
    tracks: Vec<Track>,
    order: Vec<usize>,
    pos: usize,
    shuffle: bool,
    looped: bool,
    rng: crate::input::autodj::rotation::Rng,
    /// Tracks that failed: a looped list of nothing playable ends instead of spinning.
    rejected: std::collections::HashSet<u64>,
}

impl TrackList {
    pub fn new(tracks: Vec<Track>, shuffle: bool, looped: bool) -> TrackList {
        let mut list = TrackList {
            order: (0..tracks.len()).collect(),
            tracks,
            pos: 0,
            shuffle,
            looped,
            rng: crate::input::autodj::rotation::Rng::from_entropy(),
            rejected: Default::default(),
        };
        list.reorder();
        list
    }

    fn reorder(&mut self) {
        if self.shuffle {
            self.rng.shuffle(&mut self.order);
        }
    }
}

impl Tracks for TrackList {
    fn next_track(&mut self) -> Option<Track> {
        loop {
            if self.rejected.len() >= self.tracks.len() {
                return None;
            }
            if self.pos >= self.order.len() {
                if !self.looped {
                    return None;
                }
                self.pos = 0;
                self.reorder();
            }
            let t = &self.tracks[self.order[self.pos]];
            self.pos += 1;
            if !self.rejected.contains(&t.id) {
                return Some(t.clone());
            }
        }
    }

    fn rejected(&mut self, track: &Track, _why: &str) {
        self.rejected.insert(track.id);
    }
}

/// Produces into a mount as its source (claimed on creation, released on drop).
#[derive(Debug)]
pub struct MountSink {
    mount: Arc<Mount>,
    ticket: SourceTicket,
}

impl MountSink {
    /// Claims `mount` (it must have no source). `agent` names the producer in the status.
    pub fn attach(
        mount: Arc<Mount>,
        content_type: &str,
        agent: String,
        headers: StreamInfoHeaders,
    ) -> Result<MountSink, crate::mount::registry::AttachError> {
        let info = SourceInfo {
            content_type: content_type.to_string(),
            format: Format::from_content_type(content_type).unwrap_or(Format::Mpeg),
            headers,
            peer: std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
            user_agent: agent,
            connected_at: SystemTime::now(),
        };
        let claim = mount.attach_source(info, None)?;
        Ok(MountSink {
            mount,
            ticket: claim.ticket,
        })
    }
}

impl Sink for MountSink {
    fn track_start(&mut self, track: &Track, _info: &StreamInfo) -> Delivery {
        if !self.mount.is_live() {
            return Delivery::Closed;
        }
        self.mount.set_metadata(StreamMeta {
            title: track.title.clone(),
            url: None,
        });
        Delivery::Taken
    }

    fn audio(&mut self, data: &[u8], units: &[Unit], info: StreamInfo) -> Delivery {
        if self.mount.ingest(self.ticket, data, units, info) {
            Delivery::Taken
        } else {
            Delivery::Closed
        }
    }

    fn idle(&mut self) {
        self.mount.flush();
    }
}

impl Drop for MountSink {
    fn drop(&mut self) {
        self.mount.detach_source(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use tokio::time::Instant as TokioInstant;

    const TARGET: Target = Target {
        codec: "mp3",
        sample_rate: 44_100,
        channels: 2,
        bitrate_kbps: 128,
    };

    /// An MP3-like file: ID3v2 tag, a LAME Info frame, `frames` MPEG-1 L3 44.1 kHz frames
    /// (bitrate index cycling through `kbps_idx`: VBR when it has several) filled with
    /// `fill`, and an ID3v1 tag. Returns the path and the audio bytes expected on air.
    fn mp3(
        dir: &std::path::Path,
        name: &str,
        frames: usize,
        kbps_idx: &[u8],
        fill: u8,
    ) -> (PathBuf, Vec<u8>) {
        let mut raw = b"ID3\x04\x00\x00\x00\x00\x00\x05title".to_vec();
        let mut info = vec![0xFF, 0xFB, 0x90, 0x44];
        info.resize(417, 0);
        info[36..40].copy_from_slice(b"Info");
        raw.extend_from_slice(&info);
        let mut audio = Vec::new();
        for i in 0..frames {
            let idx = kbps_idx[i % kbps_idx.len()];
            let h = [0xFF, 0xFB, idx << 4, 0x44];
            let len = onair_proto::frame::mpeg::parse_header(h).unwrap().frame_len;
            let mut f = h.to_vec();
            f.resize(len, fill);
            audio.extend_from_slice(&f);
        }
        raw.extend_from_slice(&audio);
        let mut v1 = b"TAG".to_vec();
        v1.resize(128, b' ');
        raw.extend_from_slice(&v1);
        let path = dir.join(name);
        std::fs::write(&path, &raw).unwrap();
        (path, audio)
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("onair-playout-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn track(id: u64, path: PathBuf) -> Track {
        Track {
            id,
            title: format!("Artist - Track {id}"),
            path,
            replaygain_db: None,
        }
    }

    fn settings() -> Settings {
        Settings::new("test")
    }

    #[derive(Debug, PartialEq)]
    enum Event {
        Title(u64, usize),
        Audio(TokioInstant, Duration, usize),
    }

    /// Records what arrives; optional hooks act on the playout from inside the stream.
    #[derive(Default)]
    struct Recorder {
        events: Arc<Mutex<Vec<Event>>>,
        bytes: Arc<Mutex<Vec<u8>>>,
        media: Duration,
        stop_after: Option<Duration>,
        refuse_at_block: Option<usize>,
        skip_at_block: Option<usize>,
        blocks: usize,
        playout: Arc<OnceLock<Playout>>,
    }

    impl Sink for Recorder {
        fn track_start(&mut self, track: &Track, _info: &StreamInfo) -> Delivery {
            let at = self.bytes.lock().unwrap().len();
            self.events.lock().unwrap().push(Event::Title(track.id, at));
            Delivery::Taken
        }

        fn audio(&mut self, data: &[u8], units: &[Unit], _info: StreamInfo) -> Delivery {
            if self.stop_after.is_some_and(|s| self.media >= s) {
                return Delivery::Closed;
            }
            if self.refuse_at_block == Some(self.blocks) {
                self.refuse_at_block = None;
                return Delivery::Paused;
            }
            self.blocks += 1;
            if self.skip_at_block == Some(self.blocks) {
                self.playout.get().unwrap().skip();
            }
            self.events.lock().unwrap().push(Event::Audio(
                TokioInstant::now(),
                self.media,
                data.len(),
            ));
            self.bytes.lock().unwrap().extend_from_slice(data);
            for u in units {
                self.media += unit_duration(u);
            }
            Delivery::Taken
        }
    }

    /// Exact media time of `frames` frames of 1152 samples at 44.1 kHz.
    fn frames_time(frames: u64) -> Duration {
        Duration::from_nanos(frames * 1152 * 1_000_000_000 / 44_100)
    }

    #[tokio::test(start_paused = true)]
    async fn ten_minutes_of_vbr_and_cbr_keep_to_the_clock() {
        let dir = temp_dir("drift");
        // ~52 s per file: one CBR 128k, one VBR cycling 32..320 kbit/s.
        let (cbr, _) = mp3(&dir, "cbr.mp3", 2000, &[9], 0x55);
        let (vbr, _) = mp3(&dir, "vbr.mp3", 2000, &[1, 14, 5, 9, 12, 3], 0x66);
        let list = TrackList::new(vec![track(1, cbr), track(2, vbr)], false, true);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Recorder {
            events: events.clone(),
            stop_after: Some(Duration::from_secs(600)),
            ..Default::default()
        };
        let token = CancellationToken::new();
        let origin = TokioInstant::now();
        let (_playout, task) = Playout::start(settings(), TARGET, list, sink, token);
        assert_eq!(task.await.unwrap(), PlayoutEnd::SinkClosed);
        let events = events.lock().unwrap();
        let mut audio = 0;
        for e in events.iter() {
            let Event::Audio(at, media, _) = e else {
                continue;
            };
            audio += 1;
            // Due at origin + media - lead (now if that is past); the timer may fire up to
            // its 1 ms resolution late, never early, and lateness never accumulates.
            let due = (origin + *media)
                .checked_sub(DEFAULT_LEAD)
                .unwrap_or(origin)
                .max(origin);
            assert!(*at >= due, "block at media {media:?} released early");
            assert!(
                *at - due < Duration::from_millis(2),
                "block at media {media:?} is {:?} late",
                *at - due
            );
        }
        assert!(audio > 2800, "{audio} blocks");
        // 600 s of media went out in 600 s - lead of wall time, to the millisecond.
        let elapsed = TokioInstant::now() - origin;
        let lag = Duration::from_secs(600).saturating_sub(elapsed);
        assert!(
            lag <= DEFAULT_LEAD + Duration::from_millis(2)
                && lag + Duration::from_millis(250) >= DEFAULT_LEAD,
            "{elapsed:?}"
        );
        let titles: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Title(id, _) => Some(*id),
                _ => None,
            })
            .collect();
        assert!(
            titles.len() >= 11 && titles.starts_with(&[1, 2, 1, 2]),
            "{titles:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn titles_land_on_track_boundaries_and_tags_are_stripped() {
        let dir = temp_dir("titles");
        let (a, a_audio) = mp3(&dir, "a.mp3", 300, &[9], 0x11);
        let (b, b_audio) = mp3(&dir, "b.mp3", 200, &[1, 14, 5], 0x22);
        let junk = dir.join("junk.mp3");
        std::fs::write(&junk, b"this is not audio").unwrap();
        let flac = dir.join("x.flac");
        std::fs::write(&flac, b"fLaC\0\0\0\x22").unwrap();
        let list = TrackList::new(
            vec![track(1, a), track(2, junk), track(3, flac), track(4, b)],
            false,
            false,
        );
        let (events, bytes) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
        );
        let sink = Recorder {
            events: events.clone(),
            bytes: bytes.clone(),
            ..Default::default()
        };
        let (playout, task) =
            Playout::start(settings(), TARGET, list, sink, CancellationToken::new());
        assert_eq!(task.await.unwrap(), PlayoutEnd::Finished);
        let bytes = bytes.lock().unwrap();
        assert_eq!(
            *bytes,
            [a_audio.clone(), b_audio].concat(),
            "whole frames only: no tags, no Info frame"
        );
        let titles: Vec<(u64, usize)> = events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Title(id, at) => Some((*id, *at)),
                _ => None,
            })
            .collect();
        assert_eq!(titles, [(1, 0), (4, a_audio.len())]);
        let st = playout.status();
        assert_eq!((st.tracks_played, st.tracks_rejected), (2, 2));
        assert_eq!(st.media_time, frames_time(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_block_pauses_and_resumes_at_the_exact_frame() {
        let dir = temp_dir("pause");
        let (a, a_audio) = mp3(&dir, "a.mp3", 400, &[9, 10], 0x33);
        let list = TrackList::new(vec![track(1, a)], false, false);
        let (events, bytes) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
        );
        let sink = Recorder {
            events: events.clone(),
            bytes: bytes.clone(),
            refuse_at_block: Some(5),
            ..Default::default()
        };
        let (playout, task) =
            Playout::start(settings(), TARGET, list, sink, CancellationToken::new());
        let task = tokio::spawn(task);
        while !playout.status().paused {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let len_at_pause = bytes.lock().unwrap().len();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            bytes.lock().unwrap().len(),
            len_at_pause,
            "nothing is released while paused"
        );
        let resumed = TokioInstant::now();
        playout.resume();
        assert_eq!(task.await.unwrap().unwrap(), PlayoutEnd::Finished);
        assert_eq!(
            *bytes.lock().unwrap(),
            a_audio,
            "nothing skipped or repeated"
        );
        // After the pause the stream runs at real-time speed again from the resume: the
        // rest of the file (minus the lead) takes its own duration.
        let events = events.lock().unwrap();
        let Some(Event::Audio(first_after, media_at_resume, _)) = events
            .iter()
            .find(|e| matches!(e, Event::Audio(at, _, _) if *at >= resumed))
        else {
            panic!("no audio after resume")
        };
        assert_eq!(*first_after, resumed);
        let Some(Event::Audio(last, media_last, _)) = events.last() else {
            panic!()
        };
        let expect = (*media_last - *media_at_resume).saturating_sub(DEFAULT_LEAD);
        let took = *last - *first_after;
        assert!(
            took >= expect && took - expect < Duration::from_millis(2),
            "{took:?} vs {expect:?}"
        );
        // And pause/resume from outside holds the stream the same way.
        playout.pause();
        assert!(playout.status().paused);
    }

    #[tokio::test(start_paused = true)]
    async fn skip_cuts_at_a_frame_and_the_next_title_follows() {
        let dir = temp_dir("skip");
        let (a, a_audio) = mp3(&dir, "a.mp3", 500, &[9], 0x44);
        let (b, b_audio) = mp3(&dir, "b.mp3", 100, &[9], 0x77);
        let list = TrackList::new(vec![track(1, a), track(2, b)], false, false);
        let (events, bytes) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
        );
        let handle = Arc::new(OnceLock::new());
        let sink = Recorder {
            events: events.clone(),
            bytes: bytes.clone(),
            skip_at_block: Some(3),
            playout: handle.clone(),
            ..Default::default()
        };
        let (playout, task) =
            Playout::start(settings(), TARGET, list, sink, CancellationToken::new());
        handle.set(playout).unwrap();
        assert_eq!(task.await.unwrap(), PlayoutEnd::Finished);
        let bytes = bytes.lock().unwrap();
        // Three blocks of A (cut at a frame boundary: a prefix of A), then all of B.
        let cut = bytes.len() - b_audio.len();
        assert!(cut < a_audio.len() / 2 && cut % 417 == 0, "cut at {cut}");
        assert_eq!(&bytes[..cut], &a_audio[..cut]);
        assert_eq!(&bytes[cut..], &b_audio[..]);
        let titles: Vec<(u64, usize)> = events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Title(id, at) => Some((*id, *at)),
                _ => None,
            })
            .collect();
        assert_eq!(titles, [(1, 0), (2, cut)]);
    }
}
