//! Mounts: where inputs meet outputs. A [`Mount`] owns one ordered stream — frame-aligned
//! audio chunks, each tagged with the ICY metadata in effect — plus the Ogg codec headers a
//! late joiner needs, and wakes its listeners when a chunk is published.
//!
//! Invariants: a title change cuts the pending chunk, so metadata applies at exactly the
//! byte where it was set; chunks never split a frame or page; publishing never waits for a
//! listener (slow listeners fall behind and are dropped by their own task).

pub mod audience;
pub mod describe;
pub mod registry;
pub mod ring;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, OnceLock, RwLock,
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::{Bytes, BytesMut};
use onair_proto::{
    frame::{Format, StreamInfo, Unit, UnitKind},
    icecast::StreamInfoHeaders,
    icy::{encode_block, StreamMeta},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{MountConfig, MountSettings};
use audience::Audience;
use registry::AttachError;
use ring::{Chunk, Ring};

/// A chunk is published once it holds this much audio even if `chunk` time isn't reached.
const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// Names the internal mount that plays a mount's `fallback_file` (`#` cannot appear in a
/// mount name, so it never collides with a real one and cannot be requested).
pub const FILE_FALLBACK_SUFFIX: &str = "#fallback_file";

/// What the current source told us about itself.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub content_type: String,
    pub format: Format,
    pub headers: StreamInfoHeaders,
    pub peer: SocketAddr,
    pub user_agent: String,
    pub connected_at: SystemTime,
}

#[derive(Debug)]
struct Live {
    info: SourceInfo,
    codec: StreamInfo,
    started: Instant,
    last_data: Instant,
    bytes_in: u64,
    junk_bytes: u64,
    /// Cancelled when the source is killed or taken over: its task stops reading.
    cancel: CancellationToken,
}

#[derive(Debug, Default)]
struct OggHeaders {
    pages: Vec<Bytes>,
    /// Stream offset where the current chain link's header pages begin.
    start: u64,
    /// True while header pages of the current link are still arriving.
    open: bool,
}

#[derive(Debug)]
struct State {
    live: Option<Live>,
    generation: u64,
    /// Ring offset where the current source's stream begins; bursts never reach before it.
    stream_start: u64,
    ring: Ring,
    pending: BytesMut,
    pending_time: Duration,
    title: Option<String>,
    meta_block: Bytes,
    ogg: OggHeaders,
    /// The current source gives way to any other source (the demo programme).
    yields: bool,
}

#[derive(Debug, Default)]
pub struct MountStats {
    pub listeners: AtomicUsize,
    pub listener_peak: AtomicUsize,
    pub listener_connections: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub lagged_listeners: AtomicU64,
}

#[derive(Debug)]
pub struct Mount {
    pub name: String,
    /// `None` for mounts created on the fly by a source.
    /// Configuration and effective settings; swapped whole by a reload.
    conf: RwLock<Arc<MountConf>>,
    state: Mutex<State>,
    tick: watch::Sender<u64>,
    /// Mirrors `state.live.is_some()` for lock-free checks on every listener wake-up.
    live: AtomicBool,
    /// Where listeners go when the source ends (changeable at run time by the admin API).
    fallback: RwLock<Option<String>>,
    pub stats: MountStats,
    pub audience: Audience,
    /// The internal mount playing this mount's `fallback_file`, once started.
    pub file_fallback: OnceLock<Arc<Mount>>,
    /// Sent to each new listener before the stream (`intro_file`).
    pub intro: OnceLock<Arc<crate::input::file::AudioFile>>,
}

/// A mount's configuration (`None`: created on the fly by a source) and the settings in
/// effect (its own, or `[defaults]`).
#[derive(Debug)]
pub struct MountConf {
    pub config: Option<MountConfig>,
    pub settings: MountSettings,
}

impl MountConf {
    fn new(config: Option<MountConfig>, defaults: &MountSettings) -> MountConf {
        let settings = config
            .as_ref()
            .map_or_else(|| defaults.clone(), |c| c.settings.clone());
        MountConf { config, settings }
    }

    /// Bytes of audio the ring keeps: the burst, the allowed lag, and the chunk in the making.
    fn retain(&self) -> usize {
        self.settings.queue_size.max(self.settings.burst_size) + MAX_CHUNK_BYTES
    }
}

/// Proof that the caller is the mount's current source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceTicket(u64);

/// A source's claim on a mount: its ticket, and the token that stops it.
#[derive(Debug)]
pub struct SourceClaim {
    pub ticket: SourceTicket,
    pub cancel: CancellationToken,
    /// The mount was held by a silent predecessor that this source replaced.
    pub took_over: bool,
}

/// What must agree for a listener to move between two streams without its decoder
/// noticing: the bitstream family and codec, and (MPEG/ADTS) rate and channels. Unknown
/// values (0, "") match anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compat {
    pub format: Format,
    pub codec: &'static str,
    pub sample_rate: u32,
    pub channels: u8,
}

impl Compat {
    pub fn new(format: Format, codec: &StreamInfo) -> Compat {
        Compat {
            format,
            codec: codec.codec,
            sample_rate: codec.sample_rate,
            channels: codec.channels,
        }
    }

    pub fn accepts(&self, other: &Compat) -> bool {
        let same = |a: u32, b: u32| a == 0 || b == 0 || a == b;
        let codec = self.codec.is_empty() || other.codec.is_empty() || self.codec == other.codec;
        // Ogg carries its own codec headers (sent on a switch), so rate and channels may
        // change with the chain link; a raw MPEG/ADTS decoder must not see them change.
        let params = self.format == Format::Ogg
            || (same(self.sample_rate, other.sample_rate)
                && same(u32::from(self.channels), u32::from(other.channels)));
        self.format == other.format && codec && params
    }

    /// A human-readable description for error messages.
    pub fn describe(&self) -> String {
        format!(
            "{:?}/{} {} Hz {} ch",
            self.format,
            if self.codec.is_empty() {
                "?"
            } else {
                self.codec
            },
            self.sample_rate,
            self.channels
        )
    }
}

/// Everything a new listener needs: what to announce, and where to start.
#[derive(Debug)]
pub struct Subscription {
    pub facts: StreamFacts,
    pub start: StartPosition,
}

/// What the response head announces (dropped once it is written).
#[derive(Debug)]
pub struct StreamFacts {
    pub content_type: String,
    pub headers: StreamInfoHeaders,
    pub codec: StreamInfo,
    pub format: Format,
}

/// A listener's position in the mount (kept for the listener's lifetime: keep it small).
#[derive(Debug)]
pub struct StartPosition {
    /// Codec header pages to send before the first chunk (Ogg late joiners).
    pub prefix: Vec<Bytes>,
    pub seq: u64,
    /// Chunks before this sequence number are burst (already published when the listener
    /// joined): they are announced with `current_meta`, so the first metadata block a
    /// listener gets carries the current title rather than the one of the burst's start.
    pub live_seq: u64,
    pub current_meta: Bytes,
    pub ticks: watch::Receiver<u64>,
}

/// The result of a listener's read.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// New chunks were appended; continue from this sequence number.
    Data(u64),
    /// Nothing new yet.
    Idle,
    /// The source is gone and everything it sent has been read.
    Ended,
    /// The listener fell further behind than the ring holds.
    Lagged,
}

/// Snapshot for status pages.
#[derive(Debug, Clone)]
pub struct MountStatus {
    pub name: String,
    pub source: Option<SourceInfo>,
    pub codec: StreamInfo,
    pub title: Option<String>,
    pub source_uptime: Duration,
    pub bytes_in: u64,
    pub junk_bytes: u64,
}

impl Mount {
    pub fn new(name: String, config: Option<MountConfig>, defaults: &MountSettings) -> Mount {
        let fallback = config.as_ref().and_then(|c| c.fallback.clone());
        let conf = MountConf::new(config, defaults);
        let retain = conf.retain();
        Mount {
            name,
            state: Mutex::new(State {
                live: None,
                generation: 0,
                stream_start: 0,
                ring: Ring::new(retain),
                pending: BytesMut::new(),
                pending_time: Duration::ZERO,
                title: None,
                meta_block: encode_block(&StreamMeta::default()),
                ogg: OggHeaders::default(),
                yields: false,
            }),
            tick: watch::Sender::new(0),
            live: AtomicBool::new(false),
            fallback: RwLock::new(fallback),
            conf: RwLock::new(Arc::new(conf)),
            stats: MountStats::default(),
            audience: Audience::default(),
            file_fallback: OnceLock::new(),
            intro: OnceLock::new(),
        }
    }

    /// The internal mount that plays `parent`'s fallback file.
    pub fn for_fallback_file(parent: &Mount) -> Mount {
        Mount::new(
            format!("{}{FILE_FALLBACK_SUFFIX}", parent.name),
            None,
            &parent.conf().settings,
        )
    }

    /// The configuration in force now.
    pub fn conf(&self) -> Arc<MountConf> {
        self.conf.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_configured(&self) -> bool {
        self.conf().config.is_some()
    }

    pub fn is_hidden(&self) -> bool {
        self.conf().config.as_ref().is_some_and(|c| c.hidden)
    }

    /// Applies a reloaded configuration (`None`: the mount is no longer configured and lives
    /// on as an on-the-fly mount while its source stays). Listeners and the source stay
    /// connected; new settings apply from the next listener, chunk or connection on.
    pub fn reconfigure(&self, config: Option<MountConfig>, defaults: &MountSettings) {
        let conf = MountConf::new(config, defaults);
        self.set_fallback(conf.config.as_ref().and_then(|c| c.fallback.clone()));
        self.lock().ring.set_retain(conf.retain());
        *self.conf.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(conf);
    }

    pub fn is_file_fallback(&self) -> bool {
        self.name.ends_with(FILE_FALLBACK_SUFFIX)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the state itself stays valid
        // (every mutation is a few field writes), so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The mount listeners go to when this one's source ends.
    pub fn fallback(&self) -> Option<String> {
        self.fallback
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_fallback(&self, fallback: Option<String>) {
        *self.fallback.write().unwrap_or_else(|p| p.into_inner()) = fallback;
    }

    /// Whether listeners that fell back from here return as soon as a source is back.
    pub fn recalls_listeners(&self) -> bool {
        self.conf()
            .config
            .as_ref()
            .is_some_and(|c| c.fallback_override)
    }

    /// What the current stream is, for listener moves.
    pub fn compat(&self) -> Option<Compat> {
        let st = self.lock();
        st.live
            .as_ref()
            .map(|l| Compat::new(l.info.format, &l.codec))
    }

    /// Makes `info`'s connection the mount's source. A mount held by a source that has
    /// sent nothing for `takeover_after` (a dead connection the kernel has not noticed yet:
    /// the client is reconnecting) is taken over: listeners stay and hear the new source,
    /// the title stays until the new source sets one. Otherwise a held mount is in use.
    pub fn attach_source(
        &self,
        info: SourceInfo,
        takeover_after: Option<Duration>,
    ) -> Result<SourceClaim, AttachError> {
        let mut st = self.lock();
        // A stand-in's title is its own: the source replacing it starts without one.
        let stand_in = st.yields && st.live.is_some();
        let took_over = match &st.live {
            None => false,
            Some(old) if st.yields => {
                old.cancel.cancel();
                publish(&mut st);
                true
            }
            Some(old) => match takeover_after {
                Some(after) if old.last_data.elapsed() >= after => {
                    old.cancel.cancel();
                    publish(&mut st);
                    true
                }
                _ => return Err(AttachError::InUse),
            },
        };
        st.generation += 1;
        st.yields = false;
        st.stream_start = st.ring.end_offset();
        st.ogg = OggHeaders::default();
        if !took_over || stand_in {
            st.title = None;
            st.meta_block = encode_block(&StreamMeta::default());
        }
        let cancel = CancellationToken::new();
        let now = Instant::now();
        st.live = Some(Live {
            info,
            codec: StreamInfo::default(),
            started: now,
            last_data: now,
            bytes_in: 0,
            junk_bytes: 0,
            cancel: cancel.clone(),
        });
        self.live.store(true, Ordering::Release);
        Ok(SourceClaim {
            ticket: SourceTicket(st.generation),
            cancel,
            took_over,
        })
    }

    /// Makes `ticket`'s source give way to the next source that connects (a stand-in such
    /// as the demo programme): that source takes over like a reconnecting one, and its
    /// listeners stay.
    pub fn set_yields(&self, ticket: SourceTicket) {
        let mut st = self.lock();
        if st.generation == ticket.0 && st.live.is_some() {
            st.yields = true;
        }
    }

    /// Publishes what is pending and detaches the source; listeners drain and then fall
    /// back or close.
    pub fn detach_source(&self, ticket: SourceTicket) {
        let st = self.lock();
        if st.generation != ticket.0 || st.live.is_none() {
            return;
        }
        self.end_source(st);
    }

    /// Disconnects whatever source is attached (admin `killsource`). Returns whether
    /// there was one.
    pub fn kill_source(&self) -> bool {
        let st = self.lock();
        let Some(live) = &st.live else {
            return false;
        };
        live.cancel.cancel();
        self.end_source(st);
        true
    }

    fn end_source(&self, mut st: MutexGuard<'_, State>) {
        publish(&mut st);
        if let Some(live) = st.live.take() {
            live.cancel.cancel();
        }
        self.live.store(false, Ordering::Release);
        let end = st.ring.end_seq();
        drop(st);
        self.tick.send_replace(end);
    }

    /// Adds whole units from the source (`units` describe consecutive slices of `data`).
    /// Returns false if `ticket` no longer owns the mount.
    pub fn ingest(
        &self,
        ticket: SourceTicket,
        data: &[u8],
        units: &[Unit],
        codec: StreamInfo,
    ) -> bool {
        let mut st = self.lock();
        if st.generation != ticket.0 || st.live.is_none() {
            return false;
        }
        let chunk = self.conf().settings.chunk;
        let mut published = false;
        let mut pos = 0usize;
        for unit in units {
            let Some(bytes) = data.get(pos..pos + unit.len) else {
                break;
            };
            pos += unit.len;
            match unit.kind {
                UnitKind::Junk => {
                    if let Some(live) = st.live.as_mut() {
                        live.junk_bytes += bytes.len() as u64;
                    }
                    continue;
                }
                UnitKind::CodecHeader => {
                    if unit.begins_stream && !st.ogg.open {
                        // A new chain link: cut here so a late joiner's burst can start
                        // exactly at these headers.
                        published |= publish(&mut st);
                        let start = st.ring.end_offset();
                        st.ogg = OggHeaders {
                            pages: Vec::new(),
                            start,
                            open: true,
                        };
                    }
                    if st.ogg.open {
                        st.ogg.pages.push(Bytes::copy_from_slice(bytes));
                    }
                }
                UnitKind::Audio => {
                    st.ogg.open = false;
                    if unit.sample_rate > 0 {
                        st.pending_time += Duration::from_micros(
                            u64::from(unit.samples) * 1_000_000 / u64::from(unit.sample_rate),
                        );
                    }
                }
            }
            st.pending.extend_from_slice(bytes);
            if st.pending_time >= chunk || st.pending.len() >= MAX_CHUNK_BYTES {
                published |= publish(&mut st);
            }
        }
        if let Some(live) = st.live.as_mut() {
            live.bytes_in += pos as u64;
            live.codec = codec;
            live.last_data = Instant::now();
        }
        let end = st.ring.end_seq();
        drop(st);
        if published {
            self.tick.send_replace(end);
        }
        true
    }

    /// Wakes every listener (they re-check the shutdown token on each wake).
    pub fn wake_listeners(&self) {
        self.tick.send_modify(|_| {});
    }

    /// Publishes pending audio now (the source went quiet for a moment).
    pub fn flush(&self) {
        let mut st = self.lock();
        if publish(&mut st) {
            let end = st.ring.end_seq();
            drop(st);
            self.tick.send_replace(end);
        }
    }

    /// Sets the title from this byte on: pending audio is published under the old title.
    pub fn set_metadata(&self, meta: StreamMeta) {
        let mut st = self.lock();
        let published = publish(&mut st);
        st.meta_block = encode_block(&meta);
        st.title = Some(meta.title);
        let end = st.ring.end_seq();
        drop(st);
        if published {
            self.tick.send_replace(end);
        }
    }

    /// Registers a new listener: burst start, Ogg headers, and a wake-up channel.
    pub fn subscribe(&self) -> Option<Subscription> {
        self.subscribe_with_burst(self.conf().settings.burst_size)
    }

    /// Registers a listener moving here from another mount: it already has audio buffered,
    /// so it starts at the newest chunk (a frame/page boundary), Ogg headers first.
    pub fn subscribe_moving(&self) -> Option<Subscription> {
        self.subscribe_with_burst(0)
    }

    fn subscribe_with_burst(&self, burst: usize) -> Option<Subscription> {
        let ticks = self.tick.subscribe();
        let st = self.lock();
        let live = st.live.as_ref()?;
        let mut seq = st.ring.burst_start(burst, st.stream_start);
        let mut prefix = Vec::new();
        if !st.ogg.pages.is_empty() {
            match st.ring.seq_at_offset(st.ogg.start) {
                // The burst reaches back to the headers: start there, they come in-band.
                Some(h) if st.ring.offset_of_seq(seq) <= st.ogg.start => seq = h,
                // Not published yet (a joiner in the stream's first chunk): they will come
                // in-band after `seq`; a prefix as well would send them twice.
                None if st.ogg.start >= st.ring.end_offset() => {}
                _ => prefix = st.ogg.pages.clone(),
            }
        }
        Some(Subscription {
            facts: StreamFacts {
                content_type: live.info.content_type.clone(),
                headers: live.info.headers.clone(),
                codec: live.codec,
                format: live.info.format,
            },
            start: StartPosition {
                prefix,
                seq,
                live_seq: st.ring.end_seq(),
                current_meta: st.meta_block.clone(),
                ticks,
            },
        })
    }

    /// Appends chunks from `seq` on; `lag_from` is the listener's last fully written offset,
    /// used for the `queue_size` limit.
    pub fn read(&self, seq: u64, out: &mut Vec<Chunk>) -> Read {
        let st = self.lock();
        match st.ring.read_from(seq, out) {
            Err(_) => Read::Lagged,
            Ok(next) if next != seq => Read::Data(next),
            Ok(_) if st.live.is_none() => Read::Ended,
            Ok(_) => Read::Idle,
        }
    }

    /// The Ogg codec header pages of the current chain link (empty for other formats).
    pub fn codec_headers(&self) -> Vec<Bytes> {
        self.lock().ogg.pages.clone()
    }

    /// How far (bytes) the newest audio is ahead of `offset`.
    pub fn lag_behind(&self, offset: u64) -> u64 {
        self.lock().ring.end_offset().saturating_sub(offset)
    }

    /// The stream offset where chunk `seq` begins.
    pub fn offset_of(&self, seq: u64) -> u64 {
        self.lock().ring.offset_of_seq(seq)
    }

    pub fn status(&self) -> MountStatus {
        let st = self.lock();
        MountStatus {
            name: self.name.clone(),
            source: st.live.as_ref().map(|l| l.info.clone()),
            codec: st.live.as_ref().map(|l| l.codec).unwrap_or_default(),
            title: st.title.clone(),
            source_uptime: st
                .live
                .as_ref()
                .map_or(Duration::ZERO, |l| l.started.elapsed()),
            bytes_in: st.live.as_ref().map_or(0, |l| l.bytes_in),
            junk_bytes: st.live.as_ref().map_or(0, |l| l.junk_bytes),
        }
    }

    /// Wakes every listener so it reads the newest order (see [`Audience`]).
    pub fn order(&self, order: audience::Order) {
        self.audience.order(order);
        self.wake_listeners();
    }

    /// Counts a listener arriving by a move (fallback, `moveclients`): never refused, so
    /// nobody is dropped in a switch.
    pub fn listener_moved_in(&self) {
        let n = self.stats.listeners.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.listener_peak.fetch_max(n, Ordering::Relaxed);
    }

    pub fn listener_moved_out(&self) {
        self.stats.listeners.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a new listener unless the mount is at `max_listeners` (checked and counted
    /// in one step, so simultaneous joins cannot overshoot).
    pub fn try_join_listener(&self) -> bool {
        let max = self.conf().settings.max_listeners;
        let joined = self
            .stats
            .listeners
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            });
        match joined {
            Ok(before) => {
                self.stats
                    .listener_peak
                    .fetch_max(before + 1, Ordering::Relaxed);
                self.stats
                    .listener_connections
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    pub fn listener_left(&self, bytes_sent: u64) {
        self.stats.listeners.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .bytes_sent
            .fetch_add(bytes_sent, Ordering::Relaxed);
    }
}

fn publish(st: &mut State) -> bool {
    if st.pending.is_empty() {
        return false;
    }
    let audio = st.pending.split().freeze();
    let meta = st.meta_block.clone();
    st.ring.push(audio, meta);
    st.pending_time = Duration::ZERO;
    true
}
