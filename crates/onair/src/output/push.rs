//! Push: a mount's stream sent to a remote Icecast (or onair) server as a source client —
//! `PUT` with `Expect: 100-continue`, `SOURCE` for servers that do not know `PUT`, or
//! SHOUTcast v1 — with its titles sent to the remote's `/admin/metadata` (`/admin.cgi`).
//!
//! The push reads the mount like a listener does (whole chunks of whole frames, each tagged
//! with its ICY block) and never exits on a network error (unless `once`): it reconnects on
//! the [`Backoff`] schedule, retries refusals such as `403 Mountpoint in use`, and re-sends
//! the last title after each reconnect. Every state change is logged. An Ogg stream carries
//! its titles in-band (its comment headers), so a remote that refuses the title request for
//! an Ogg mount still passes them on to its listeners: that refusal is noted, not retried.
//!
//! Invariants: the remote only ever gets whole frames/pages from a frame boundary, Ogg
//! codec headers first. In [`Mode::Relay`] a new connection starts at the live edge (where
//! the last one stopped if that is still the newest chunk or later, so a short outage
//! repeats nothing); in [`Mode::Playout`] (the producer pauses while [`PushState`] is not
//! `Streaming`) it resumes at the frame where the previous one broke: nothing the push had
//! not handed to the kernel is skipped, and only the frame that was cut is sent again,
//! whole. In [`Mode::Live`] the first connection gets the mount's burst and later ones
//! rejoin like a relay. What the kernel had
//! accepted but the remote never read is lost with the connection; the socket's send buffer
//! is kept small ([`SEND_BUFFER`]) to bound it.

use std::{
    collections::HashMap,
    io,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use onair_proto::{
    frame::{Format, Framer},
    icecast::StreamInfoHeaders,
    icy::{parse_block, StreamMeta},
    push::{
        encode_metadata_request, encode_shoutcast_headers, encode_shoutcast_login,
        encode_source_request, parse_reply_head, parse_shoutcast_reply, shoutcast_source_port,
        source_verdict, Announcement, Backoff, Protocol, PushTarget, ReplyError, ShoutcastReply,
        SourceMethod, SourceVerdict,
    },
};
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::PushConfig,
    mount::{describe, Mount, MountStatus, Read, StartPosition},
    station::Station,
};

/// Connecting and getting the server's answer must each finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After `100 Continue`, how long to wait for a final reply before streaming anyway (a
/// plain HTTP server answers only when the body ends; Icecast and onair answer at once).
const CONTINUE_GRACE: Duration = Duration::from_secs(2);
/// A write that makes no progress for this long means the remote is gone.
const WRITE_STALL: Duration = Duration::from_secs(15);
/// Kernel send buffer of the push socket: the most audio a vanished remote can take with it.
pub const SEND_BUFFER: usize = 64 * 1024;
/// How often a push whose mount has no source looks again.
const SOURCE_POLL: Duration = Duration::from_millis(200);
/// Tries per title update before waiting for the next change or reconnect.
const TITLE_ATTEMPTS: u32 = 3;

#[derive(Debug, Error)]
pub enum PushError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("server does not take PUT ({status} {reason})")]
    PutUnsupported { status: u16, reason: String },
    #[error("refused: {status} {reason}")]
    Refused { status: u16, reason: String },
    #[error("wrong user or password: {status} {reason}")]
    Unauthorized { status: u16, reason: String },
    #[error("SHOUTcast server refused the password: {0:?}")]
    BadPassword(String),
    #[error("bad reply: {0}")]
    Reply(#[from] ReplyError),
    #[error("the remote closed the connection")]
    Closed,
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
}

/// How a push positions itself in the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Relays a mount other inputs feed: each connection starts at the live edge; when the
    /// mount's source ends the remote connection is closed until a source is back.
    Relay,
    /// Carries a producer that pauses while the push is not streaming (`onair push`): a
    /// new connection resumes at the frame where the last one broke; the push ends when
    /// the mount's source does.
    Playout,
    /// Carries a live producer that never waits for the push (`onair encode`): the first
    /// connection starts with the mount's burst (what was made while connecting), later
    /// ones rejoin the live edge like [`Mode::Relay`] (audio made during an outage is
    /// dropped, not sent late); the push ends when the mount's source does, and the source
    /// must be attached before [`Push::run`].
    Live,
}

/// What a push is doing (producers in [`Mode::Playout`] pause unless `Streaming`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushState {
    WaitingForSource,
    Connecting,
    Streaming,
    /// Waiting before the next attempt.
    Backoff,
    Finished,
}

#[derive(Debug, Clone)]
pub struct PushSettings {
    pub target: PushTarget,
    pub protocol: Protocol,
    /// Announced instead of what the mount's source sent (unset fields: the mount's).
    pub info: StreamInfoHeaders,
    pub mode: Mode,
    /// Stop at the first network error instead of reconnecting.
    pub once: bool,
}

impl PushSettings {
    pub fn relay(config: &PushConfig) -> PushSettings {
        PushSettings {
            target: config.target.clone(),
            protocol: config.protocol,
            info: config.info.clone(),
            mode: Mode::Relay,
            once: false,
        }
    }
}

/// Starts the `[[mount.push]]` entries of every configured mount.
pub fn start_configured(station: &Arc<Station>) {
    for m in &station.config().mounts {
        let Some(mount) = station.mounts.get(&m.name) else {
            continue;
        };
        for p in &m.push {
            let push = Push::new(mount.clone(), PushSettings::relay(p));
            station.pushes.add(&m.name, push.report());
            let token = station.supervisor.token().clone();
            station.supervisor.spawn_service("push", push.run(token));
        }
    }
}

/// Running totals of one push, for status pages.
#[derive(Debug, Default)]
pub struct PushCounters {
    pub connections: AtomicU64,
    pub bytes_sent: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl PushCounters {
    fn set_error(&self, e: &PushError) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What status pages show of a push (the password never: `to` is redacted).
#[derive(Debug, Clone)]
pub struct PushReport {
    pub to: String,
    pub protocol: Protocol,
    pub state: watch::Receiver<PushState>,
    pub counters: Arc<PushCounters>,
}

impl PushReport {
    pub fn json(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
            "to": self.to,
            "protocol": match self.protocol {
                Protocol::Icecast => "icecast",
                Protocol::Shoutcast => "shoutcast",
            },
            "state": match *self.state.borrow() {
                PushState::WaitingForSource => "waiting_for_source",
                PushState::Connecting => "connecting",
                PushState::Streaming => "streaming",
                PushState::Backoff => "backoff",
                PushState::Finished => "finished",
            },
            "connections": c.connections.load(Ordering::Relaxed),
            "bytes_sent": c.bytes_sent.load(Ordering::Relaxed),
            "last_error": c.last_error(),
        })
    }
}

/// The station's configured pushes, by mount name.
#[derive(Debug, Default)]
pub struct Pushes(RwLock<HashMap<String, Vec<PushReport>>>);

impl Pushes {
    pub fn add(&self, mount: &str, report: PushReport) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(mount.to_string())
            .or_default()
            .push(report);
    }

    pub fn of(&self, mount: &str) -> Vec<PushReport> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(mount)
            .cloned()
            .unwrap_or_default()
    }
}

/// One push: a mount, a remote, and the state producers may watch.
#[derive(Debug)]
pub struct Push {
    mount: Arc<Mount>,
    settings: PushSettings,
    state: watch::Sender<PushState>,
    counters: Arc<PushCounters>,
}

/// The title the remote should show, and on which connection it was last due (0: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TitleNote {
    connection: u64,
    meta: Option<StreamMeta>,
    /// The stream carries its titles itself (Ogg): a refused update is not retried.
    in_band: bool,
}

/// Where the push is in the mount.
struct Cursor {
    start: StartPosition,
    /// Bytes of chunk `start.seq` already sent (a frame boundary).
    skip: usize,
    /// The ICY block last passed on as a title.
    last_meta: Bytes,
}

impl Cursor {
    fn new(start: StartPosition) -> Cursor {
        Cursor {
            start,
            skip: 0,
            last_meta: Bytes::new(),
        }
    }
}

/// Why a connection's streaming ended.
enum End {
    Shutdown,
    SourceEnded,
    Broken(PushError),
}

impl Push {
    pub fn new(mount: Arc<Mount>, settings: PushSettings) -> Push {
        Push {
            mount,
            settings,
            state: watch::Sender::new(PushState::WaitingForSource),
            counters: Arc::default(),
        }
    }

    /// Follows the push's state (a paused producer resumes on `Streaming`).
    pub fn state(&self) -> watch::Receiver<PushState> {
        self.state.subscribe()
    }

    /// A live view of the push for status pages.
    pub fn report(&self) -> PushReport {
        PushReport {
            to: self.settings.target.redacted(),
            protocol: self.settings.protocol,
            state: self.state(),
            counters: self.counters.clone(),
        }
    }

    /// Runs until `token` is cancelled, the mount's source ends ([`Mode::Playout`]), or —
    /// with `once` — the first network error.
    pub async fn run(self, token: CancellationToken) -> Result<(), PushError> {
        let (titles_tx, titles_rx) = watch::channel(TitleNote::default());
        let titles = send_titles(
            self.settings.target.clone(),
            self.settings.protocol,
            titles_rx,
            token.clone(),
        );
        let connections = async {
            let tx = titles_tx;
            let r = self.connections(&tx, &token).await;
            self.set_state(PushState::Finished);
            r
        };
        let (result, ()) = tokio::join!(connections, titles);
        result
    }

    fn set_state(&self, s: PushState) {
        self.state
            .send_if_modified(|old| std::mem::replace(old, s) != s);
    }

    async fn connections(
        &self,
        titles: &watch::Sender<TitleNote>,
        token: &CancellationToken,
    ) -> Result<(), PushError> {
        let target = &self.settings.target;
        let mount = &self.mount.name;
        let mut backoff = Backoff::new();
        let mut method = SourceMethod::Put;
        let mut kept: Option<Cursor> = None;
        let mut connection = 0u64;
        // Live: the last failure, reported if the source ends before a connection works.
        let mut failed: Option<PushError> = None;
        loop {
            let Some(status) = self.wait_for_source(token).await else {
                return match failed {
                    Some(e) if !token.is_cancelled() => Err(e),
                    _ => Ok(()),
                };
            };
            if self.settings.mode == Mode::Playout && kept.is_none() {
                // From the start of the stream: the producer waits for the first connection.
                match self.mount.subscribe() {
                    Some(sub) => kept = Some(Cursor::new(sub.start)),
                    None => continue,
                }
            }
            self.set_state(PushState::Connecting);
            let protocol = self.settings.protocol;
            tracing::info!(%mount, to = %target, ?protocol, ?method, "push: connecting");
            let announcement = self.announcement(&status);
            let connected = tokio::select! {
                r = self.connect(method, &announcement) => r,
                _ = token.cancelled() => return Ok(()),
            };
            let failure = match connected {
                Ok(mut conn) => {
                    let cursor = match self.settings.mode {
                        Mode::Relay => self.rejoin(kept.take()),
                        Mode::Playout => kept.take().map(|c| self.resume(c)),
                        Mode::Live if connection == 0 => {
                            self.mount.subscribe().map(|s| Cursor::new(s.start))
                        }
                        Mode::Live => self.rejoin(kept.take()),
                    };
                    let Some(mut cursor) = cursor else {
                        tracing::info!(%mount, to = %target, "push: the source left while connecting");
                        let _ = timeout(Duration::from_secs(1), conn.shutdown()).await;
                        continue;
                    };
                    backoff.connected(Instant::now());
                    self.counters.connections.fetch_add(1, Ordering::Relaxed);
                    connection += 1;
                    failed = None;
                    let in_band = self.format() == Format::Ogg;
                    titles.send_modify(|n| {
                        n.connection = connection;
                        n.in_band = in_band;
                    });
                    self.set_state(PushState::Streaming);
                    tracing::info!(%mount, to = %target, ?method, "push: streaming");
                    let mut sent = 0u64;
                    let end = self
                        .stream(&mut conn, &mut cursor, &mut sent, titles, token)
                        .await;
                    titles.send_modify(|n| n.connection = 0);
                    let _ = timeout(Duration::from_secs(1), conn.shutdown()).await;
                    match end {
                        End::Shutdown => {
                            tracing::info!(%mount, to = %target, sent, "push: stopped (shutdown)");
                            return Ok(());
                        }
                        End::SourceEnded if self.settings.mode != Mode::Relay => {
                            tracing::info!(%mount, to = %target, sent, "push: finished (end of stream)");
                            return Ok(());
                        }
                        End::SourceEnded => {
                            kept = None;
                            tracing::info!(%mount, to = %target, sent, "push: disconnected (local source ended); waiting for a new source");
                            continue;
                        }
                        End::Broken(e) => {
                            tracing::warn!(%mount, to = %target, sent, error = %e, "push: connection lost");
                            kept = Some(cursor);
                            e
                        }
                    }
                }
                Err(PushError::PutUnsupported { status, reason })
                    if method == SourceMethod::Put =>
                {
                    tracing::warn!(%mount, to = %target, status, %reason, "push: server does not take PUT; falling back to SOURCE");
                    method = SourceMethod::Source;
                    continue;
                }
                Err(e @ (PushError::Unauthorized { .. } | PushError::BadPassword(_))) => {
                    tracing::error!(%mount, to = %target, error = %e, "push: refused (check the push URL's user and password)");
                    e
                }
                Err(e) => {
                    tracing::warn!(%mount, to = %target, error = %e, "push: connection failed");
                    e
                }
            };
            self.counters.set_error(&failure);
            if self.settings.once {
                return Err(failure);
            }
            failed = Some(failure);
            self.set_state(PushState::Backoff);
            let delay = backoff.next_delay(Instant::now(), getrandom::u32().unwrap_or_default());
            tracing::info!(%mount, to = %target, attempt = backoff.failures(), "push: reconnecting in {:.1} s", delay.as_secs_f64());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = token.cancelled() => return Ok(()),
            }
        }
    }

    /// Waits until the mount has a source; `None` on shutdown, and in [`Mode::Live`] once
    /// the source is gone (a live producer does not come back).
    async fn wait_for_source(&self, token: &CancellationToken) -> Option<MountStatus> {
        let mut logged = false;
        loop {
            let status = self.mount.status();
            if status.source.is_some() {
                return Some(status);
            }
            if self.settings.mode == Mode::Live {
                return None;
            }
            if !logged {
                self.set_state(PushState::WaitingForSource);
                tracing::info!(mount = %self.mount.name, to = %self.settings.target, "push: waiting for the mount's source");
                logged = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(SOURCE_POLL) => {}
                _ = token.cancelled() => return None,
            }
        }
    }

    /// Where a relay continues: where the last connection stopped if that is still at the
    /// live edge (the newest chunk or later: nothing is sent twice), else the newest chunk.
    fn rejoin(&self, kept: Option<Cursor>) -> Option<Cursor> {
        let edge = self.mount.subscribe_moving()?;
        Some(match kept {
            Some(old) if old.start.seq >= edge.start.seq => self.resume(old),
            _ => Cursor::new(edge.start),
        })
    }

    /// A kept position, made ready for a new connection: an Ogg stream that resumes
    /// inside a chain link gets the link's codec headers first.
    fn resume(&self, mut c: Cursor) -> Cursor {
        c.start.prefix.clear();
        if self.format() == Format::Ogg {
            let mut first = Vec::new();
            let _ = self.mount.read(c.start.seq, &mut first);
            let at_bos = first.first().is_some_and(|ch| {
                c.skip == 0
                    && ch.audio.get(..4) == Some(b"OggS")
                    && ch.audio.get(5).is_some_and(|t| t & 0x02 != 0)
            });
            if !at_bos {
                c.start.prefix = self.mount.codec_headers();
            }
        }
        c
    }

    fn format(&self) -> Format {
        self.mount
            .status()
            .source
            .map_or(Format::Opaque, |s| s.format)
    }

    /// What the remote is told about the stream: the push's own labels, else the mount's
    /// configured ones, else what its source sent.
    fn announcement(&self, status: &MountStatus) -> Announcement {
        let sent = status
            .source
            .as_ref()
            .map(|s| s.headers.clone())
            .unwrap_or_default();
        let labels = describe::labels(self.mount.conf().config.as_ref(), &sent);
        let o = &self.settings.info;
        Announcement {
            content_type: status
                .source
                .as_ref()
                .map_or_else(|| "audio/mpeg".to_string(), |s| s.content_type.clone()),
            info: StreamInfoHeaders {
                name: o.name.clone().or(labels.name),
                description: o.description.clone().or(labels.description),
                genre: o.genre.clone().or(labels.genre),
                url: o.url.clone().or(labels.url),
                public: o.public.or(Some(labels.public)),
                bitrate: o.bitrate.clone().or_else(|| {
                    describe::bitrate_kbps(&sent, &status.codec).map(|b| b.to_string())
                }),
                audio_info: o
                    .audio_info
                    .clone()
                    .or_else(|| describe::audio_info(&sent, &status.codec)),
            },
            user_agent: crate::SERVER_ID.to_string(),
        }
    }

    async fn connect(
        &self,
        method: SourceMethod,
        announcement: &Announcement,
    ) -> Result<TcpStream, PushError> {
        let t = &self.settings.target;
        match self.settings.protocol {
            Protocol::Icecast => {
                let mut conn = open(&t.host, t.port).await?;
                let head = encode_source_request(t, method, announcement);
                conn.write_all(head.as_bytes()).await?;
                read_source_reply(&mut conn, method).await?;
                Ok(conn)
            }
            Protocol::Shoutcast => {
                let port = shoutcast_source_port(t.port).ok_or(PushError::Connect {
                    addr: t.authority(),
                    source: io::Error::other("no port after 65535 for SHOUTcast sources"),
                })?;
                let mut conn = open(&t.host, port).await?;
                conn.write_all(encode_shoutcast_login(&t.password).as_bytes())
                    .await?;
                let mut buf = BytesMut::with_capacity(256);
                let reply = timeout(CONNECT_TIMEOUT, async {
                    loop {
                        if let Some((reply, _)) = parse_shoutcast_reply(&buf)? {
                            return Ok::<_, PushError>(reply);
                        }
                        if conn.read_buf(&mut buf).await? == 0 {
                            return Err(PushError::Closed);
                        }
                    }
                })
                .await
                .map_err(|_| PushError::Timeout("SHOUTcast login"))??;
                match reply {
                    ShoutcastReply::Accepted => {
                        conn.write_all(encode_shoutcast_headers(announcement).as_bytes())
                            .await?;
                        Ok(conn)
                    }
                    ShoutcastReply::Refused(why) => Err(PushError::BadPassword(why)),
                }
            }
        }
    }

    /// Streams the mount to `conn` until something ends it.
    async fn stream(
        &self,
        conn: &mut TcpStream,
        cur: &mut Cursor,
        sent: &mut u64,
        titles: &watch::Sender<TitleNote>,
        token: &CancellationToken,
    ) -> End {
        let format = self.format();
        let mut scratch = [0u8; 512];
        loop {
            cur.start.ticks.borrow_and_update();
            if token.is_cancelled() {
                return End::Shutdown;
            }
            let mut chunks = Vec::new();
            match self.mount.read(cur.start.seq, &mut chunks) {
                Read::Data(_) => {}
                Read::Ended => return End::SourceEnded,
                Read::Lagged => {
                    tracing::warn!(mount = %self.mount.name, to = %self.settings.target, "push: fell behind further than the mount keeps; rejoining at the live edge");
                    match self.mount.subscribe_moving() {
                        Some(sub) => *cur = Cursor::new(sub.start),
                        None => return End::SourceEnded,
                    }
                    continue;
                }
                Read::Idle => {
                    // Reading too notices a remote that hung up while there was nothing to
                    // send, before audio is written into a dead connection.
                    tokio::select! {
                        biased;
                        r = conn.read(&mut scratch) => match r {
                            Ok(0) => return End::Broken(PushError::Closed),
                            Ok(_) => {}
                            Err(e) => return End::Broken(e.into()),
                        },
                        _ = token.cancelled() => return End::Shutdown,
                        r = cur.start.ticks.changed() => if r.is_err() {
                            return End::SourceEnded;
                        },
                    }
                    continue;
                }
            }
            for header in std::mem::take(&mut cur.start.prefix) {
                match write_watching(conn, &header, token).await {
                    Ok(()) => self.count_sent(sent, header.len()),
                    Err(Written::Shutdown) => return End::Shutdown,
                    Err(Written::Failed(_, e)) => return End::Broken(e),
                }
            }
            for chunk in chunks {
                let meta = if cur.start.seq < cur.start.live_seq {
                    cur.start.current_meta.clone()
                } else {
                    chunk.meta.clone()
                };
                if meta != cur.last_meta {
                    let title = title_of(&meta);
                    titles.send_modify(|n| n.meta = title);
                    cur.last_meta = meta;
                }
                let audio = chunk.audio.get(cur.skip..).unwrap_or_default();
                match write_watching(conn, audio, token).await {
                    Ok(()) => {
                        self.count_sent(sent, audio.len());
                        cur.start.seq += 1;
                        cur.skip = 0;
                    }
                    Err(Written::Shutdown) => return End::Shutdown,
                    Err(Written::Failed(accepted, e)) => {
                        self.count_sent(sent, accepted);
                        cur.skip = frame_start(format, &chunk.audio, cur.skip + accepted);
                        return End::Broken(e);
                    }
                }
            }
        }
    }
}

impl Push {
    fn count_sent(&self, sent: &mut u64, n: usize) {
        *sent += n as u64;
        self.counters
            .bytes_sent
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The title in an ICY block (`None` for an empty one).
fn title_of(block: &Bytes) -> Option<StreamMeta> {
    let fields = parse_block(block.get(1..).unwrap_or_default());
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    Some(StreamMeta {
        title: get("StreamTitle")?,
        url: get("StreamUrl"),
    })
}

/// Where, in a run of whole frames, the frame holding byte `pos` starts: a push that was
/// cut inside a frame sends that frame again, whole.
fn frame_start(format: Format, chunk: &[u8], pos: usize) -> usize {
    if format == Format::Opaque {
        return pos.min(chunk.len());
    }
    let mut framer = Framer::new(format);
    let mut start = 0;
    while let Some(unit) = framer.next_unit(&chunk[start..]) {
        if start + unit.len > pos {
            break;
        }
        start += unit.len;
    }
    start
}

enum Written {
    Shutdown,
    /// Bytes the kernel accepted before the error.
    Failed(usize, PushError),
}

async fn write_watching(
    conn: &mut TcpStream,
    data: &[u8],
    token: &CancellationToken,
) -> Result<(), Written> {
    let mut done = 0;
    while done < data.len() {
        let n = tokio::select! {
            r = timeout(WRITE_STALL, conn.write(&data[done..])) => match r {
                Ok(Ok(0)) => return Err(Written::Failed(done, PushError::Closed)),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(Written::Failed(done, e.into())),
                Err(_) => return Err(Written::Failed(done, PushError::Timeout("write"))),
            },
            _ = token.cancelled() => return Err(Written::Shutdown),
        };
        done += n;
    }
    Ok(())
}

/// Connects with a bounded wait and a small send buffer.
async fn open(host: &str, port: u16) -> Result<TcpStream, PushError> {
    let addr = onair_proto::push::encode_authority(host, port);
    let conn = timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| PushError::Timeout("connect"))?
        .map_err(|source| PushError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let _ = conn.set_nodelay(true);
    let _ = socket2::SockRef::from(&conn).set_send_buffer_size(SEND_BUFFER);
    Ok(conn)
}

/// Reads the reply to a source request: `Ok` once the server accepted.
async fn read_source_reply(conn: &mut TcpStream, method: SourceMethod) -> Result<(), PushError> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let mut continued = false;
    loop {
        while let Some(head) = parse_reply_head(&buf)? {
            buf.advance(head.len);
            let (status, reason) = (head.status, head.reason);
            match source_verdict(method, status) {
                SourceVerdict::Continue => continued = true,
                SourceVerdict::Accepted => return Ok(()),
                SourceVerdict::TrySource => {
                    return Err(PushError::PutUnsupported { status, reason })
                }
                SourceVerdict::Unauthorized => {
                    return Err(PushError::Unauthorized { status, reason })
                }
                SourceVerdict::Refused => {
                    // Icecast says why in the body ("Mountpoint in use").
                    let _ = timeout(Duration::from_millis(300), conn.read_buf(&mut buf)).await;
                    let body = plain_text(&buf);
                    let reason = if body.is_empty() {
                        reason
                    } else {
                        format!("{reason} ({body})")
                    };
                    return Err(PushError::Refused { status, reason });
                }
            }
        }
        let wait = if continued {
            CONTINUE_GRACE
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match timeout(wait, conn.read_buf(&mut buf)).await {
            Err(_) if continued => return Ok(()),
            Err(_) => return Err(PushError::Timeout("server reply")),
            Ok(Ok(0)) => return Err(PushError::Closed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// A short, tag-free, one-line excerpt of an error body for the log.
fn plain_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag && !c.is_control() => out.push(c),
            _ if !in_tag => out.push(' '),
            _ => {}
        }
    }
    out.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(120)
        .collect()
}

/// Sends title updates to the remote: each new title while connected, and the last one
/// again after every reconnect. A newer title supersedes one still being retried.
async fn send_titles(
    target: PushTarget,
    protocol: Protocol,
    mut notes: watch::Receiver<TitleNote>,
    token: CancellationToken,
) {
    let mut done: Option<TitleNote> = None;
    loop {
        tokio::select! {
            r = notes.changed() => if r.is_err() { return },
            _ = token.cancelled() => return,
        }
        let note = notes.borrow_and_update().clone();
        let Some(meta) = note.meta.clone() else {
            continue;
        };
        if note.connection == 0 || done.as_ref() == Some(&note) {
            continue;
        }
        for attempt in 1..=TITLE_ATTEMPTS {
            let sent = tokio::select! {
                r = send_title(&target, protocol, &meta) => r,
                _ = token.cancelled() => return,
            };
            match sent {
                Ok(()) => {
                    tracing::info!(to = %target, title = %meta.title, "push: title sent");
                    done = Some(note.clone());
                    break;
                }
                Err(e @ PushError::Refused { .. }) if note.in_band => {
                    tracing::info!(to = %target, title = %meta.title, error = %e, "push: title update refused; the stream carries it in-band");
                    done = Some(note.clone());
                    break;
                }
                Err(e) => {
                    tracing::warn!(to = %target, title = %meta.title, attempt, error = %e, "push: title update failed");
                }
            }
            if notes.has_changed().unwrap_or(true) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = token.cancelled() => return,
            }
        }
    }
}

async fn send_title(
    target: &PushTarget,
    protocol: Protocol,
    meta: &StreamMeta,
) -> Result<(), PushError> {
    timeout(CONNECT_TIMEOUT, async {
        let mut conn = open(&target.host, target.port).await?;
        let req = encode_metadata_request(target, protocol, meta, crate::SERVER_ID);
        conn.write_all(req.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            if let Some(head) = parse_reply_head(&buf)? {
                return match head.status {
                    200..=299 => Ok(()),
                    status => Err(PushError::Refused {
                        status,
                        reason: head.reason,
                    }),
                };
            }
            if conn.read_buf(&mut buf).await? == 0 {
                return Err(PushError::Closed);
            }
        }
    })
    .await
    .map_err(|_| PushError::Timeout("title update"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use onair_proto::icy::encode_block;

    fn mp3_frame(fill: u8) -> Vec<u8> {
        // MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding: 417 bytes.
        let mut f = vec![0xFF, 0xFB, 0x90, 0x64];
        f.resize(417, fill);
        f
    }

    #[test]
    fn resume_points_are_frame_starts() {
        let chunk: Vec<u8> = (1..=3).flat_map(mp3_frame).collect();
        assert_eq!(frame_start(Format::Mpeg, &chunk, 0), 0);
        assert_eq!(frame_start(Format::Mpeg, &chunk, 416), 0);
        assert_eq!(frame_start(Format::Mpeg, &chunk, 417), 417);
        assert_eq!(frame_start(Format::Mpeg, &chunk, 600), 417);
        assert_eq!(frame_start(Format::Mpeg, &chunk, 834), 834);
        assert_eq!(frame_start(Format::Mpeg, &chunk, 1250), 834);
        assert_eq!(frame_start(Format::Opaque, &chunk, 600), 600);
    }

    #[test]
    fn titles_from_icy_blocks() {
        let block = encode_block(&StreamMeta {
            title: "Artist - Song ';' x".into(),
            url: Some("https://e.x".into()),
        });
        let m = title_of(&block).unwrap();
        assert_eq!(m.url.as_deref(), Some("https://e.x"));
        assert!(m.title.starts_with("Artist - Song"));
        assert_eq!(title_of(&encode_block(&StreamMeta::default())), None);
        assert_eq!(title_of(&Bytes::new()), None);
    }

    #[test]
    fn error_bodies_become_one_short_line() {
        assert_eq!(
            plain_text(b"<html><b>Mountpoint\r\n in use</b></html>"),
            "Mountpoint in use"
        );
        assert_eq!(plain_text(&[b'a'; 1000]).len(), 120);
    }
}
