//! HTTP listeners: `GET`/`HEAD`/`OPTIONS` on a mount. Answers Icecast style
//! (`HTTP/1.0 200 OK`, close-delimited, icy-* headers, CORS), sends the burst from a frame
//! or page boundary (Ogg: codec headers first), then live chunks.
//!
//! Cost model: the CPU of a listener is its write syscalls, so each wake-up sends every
//! chunk it has not yet sent — ICY blocks included — as one vectored write of shared
//! buffers. A listener more than `queue_size` bytes behind is dropped; it never slows the
//! mount or other listeners.
//!
//! Moves: a listener remembers the mount it asked for (`home`) and streams from `mount`.
//! When that mount's source ends it moves along the fallback chain; with
//! `fallback_override` it returns home as soon as a source is back; admin orders kill or
//! move it. Every move happens between chunks, so at a frame/page boundary, and only to a
//! stream of the same format (Ogg: the new codec headers are sent first).

use std::{
    io,
    io::IoSlice,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use bytes::{Buf, Bytes};
use onair_proto::{icecast::RequestHead, icy::Interleaver};
use tokio::{io::AsyncWriteExt, sync::watch};

use crate::{
    conn::Conn,
    front::plain_response,
    mount::{
        audience::{ClientInfo, Order},
        describe, Compat, Mount, Read, StartPosition, StreamFacts, Subscription,
    },
    station::Station,
};

/// Most buffers handed to one writev call (the kernel's IOV_MAX is 1024).
const MAX_IOV: usize = 256;

/// Longest user agent kept for `listclients`.
const MAX_USER_AGENT: usize = 200;

enum Stop {
    Io(io::Error),
    Lagged,
    Shutdown,
    Killed,
    Expired,
}

/// What a listener's request asked for: all that is kept of it.
#[derive(Debug)]
pub struct Request {
    mount: String,
    method: Method,
    icy: bool,
    user_agent: Box<str>,
}

#[derive(Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Options,
}

impl Request {
    pub fn from_head(head: &RequestHead) -> Request {
        Request {
            mount: head.path().to_string(),
            method: match head.method.as_str() {
                "HEAD" => Method::Head,
                "OPTIONS" => Method::Options,
                _ => Method::Get,
            },
            icy: head.wants_icy_metadata(),
            user_agent: head
                .header("user-agent")
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_USER_AGENT)
                .collect(),
        }
    }
}

/// A listener that was accepted and is ready to stream: the only per-listener state that
/// lives for the connection's lifetime (kept small: there may be tens of thousands).
pub struct Streamer {
    stream: Conn,
    id: u64,
    /// The mount the listener asked for.
    home: Arc<Mount>,
    /// The mount it streams from now (`home` or a fallback).
    mount: Arc<Mount>,
    station: Arc<Station>,
    start: StartPosition,
    icy: Option<Interleaver>,
    compat: Compat,
    orders_seen: u64,
    joined: Instant,
    response_head: Bytes,
}

/// Answers everything that is not streaming (404, full mount, HEAD, OPTIONS) and returns
/// the [`Streamer`] for a listener that is to get audio.
pub async fn prepare(
    mut stream: Conn,
    peer: SocketAddr,
    request: Request,
    station: Arc<Station>,
) -> Option<Streamer> {
    let Some(home) = station.mounts.get(&request.mount) else {
        let _ = stream.write_all(not_found().as_bytes()).await;
        return None;
    };
    if request.method == Method::Options {
        let resp = format!(
            "HTTP/1.0 204 No Content\r\nServer: {}\r\n{CORS}Access-Control-Max-Age: 86400\r\nConnection: Close\r\n\r\n",
            crate::SERVER_ID
        );
        let _ = stream.write_all(resp.as_bytes()).await;
        return None;
    }
    // A mount without a source serves its fallback; a full one its fallback if configured.
    let mut mount = home.clone();
    if !mount.is_live() {
        match station.mounts.fallback_for(&home) {
            Some(m) => mount = m,
            None => {
                let _ = stream.write_all(not_found().as_bytes()).await;
                return None;
            }
        }
    }
    if request.method == Method::Get && !mount.try_join_listener() {
        let overflow = home
            .conf()
            .config
            .as_ref()
            .is_some_and(|c| c.fallback_when_full)
            .then(|| station.mounts.fallback_for(&home))
            .flatten()
            .filter(|f| f.try_join_listener());
        match overflow {
            Some(f) => {
                tracing::debug!(%peer, mount = %home.name, to = %f.name, "mount full: listener sent to the fallback");
                mount = f;
            }
            None => {
                tracing::info!(%peer, mount = %home.name, "listener refused: mount full");
                let resp = plain_response(503, "Service Unavailable", "Mount is full\n");
                let _ = stream.write_all(resp.as_bytes()).await;
                return None;
            }
        }
    }
    let Some(Subscription { facts, mut start }) = mount.subscribe() else {
        // The source left between the check and here.
        if request.method == Method::Get {
            mount.listener_moved_out();
        }
        let _ = stream.write_all(not_found().as_bytes()).await;
        return None;
    };
    let compat = Compat::new(facts.format, &facts.codec);
    if let Some(intro) = home.intro.get().filter(|i| i.compat().accepts(&compat)) {
        start.prefix.insert(0, intro.data.clone());
    }
    let home_conf = home.conf();
    let settings = &home_conf.settings;
    let icy = request.icy.then(|| Interleaver::new(settings.metaint));
    let response_head = response_head(&mount, &facts, icy.as_ref().map(|i| i.metaint()));
    if request.method == Method::Head {
        let _ = stream.write_all(response_head.as_bytes()).await;
        return None;
    }
    let _ = stream.tcp().set_nodelay(true);
    if settings.send_buffer > 0 {
        let _ = socket2::SockRef::from(stream.tcp()).set_send_buffer_size(settings.send_buffer);
    }
    let id = station.next_listener_id();
    mount.audience.add(
        id,
        ClientInfo {
            peer,
            user_agent: request.user_agent,
            connected_at: Instant::now(),
        },
    );
    Some(Streamer {
        stream,
        id,
        home,
        orders_seen: mount.audience.last_order(),
        compat,
        mount,
        station,
        start,
        icy,
        joined: Instant::now(),
        response_head: Bytes::from(response_head),
    })
}

impl Streamer {
    /// Streams until the client leaves, lags too far, the source ends, or shutdown.
    pub async fn run(mut self) {
        Station::count(&self.station.counters.listener_connections);
        tracing::debug!(id = self.id, mount = %self.mount.name, icy = self.icy.is_some(), "listener joined");
        let mut sent = 0u64;
        let stop = self.stream(&mut sent).await;
        let mount = self.mount.clone();
        mount.listener_left(sent);
        let peer = mount
            .audience
            .remove(self.id)
            .map_or_else(|| "?".to_string(), |c| c.peer.to_string());
        match stop {
            Ok(()) => {
                tracing::debug!(%peer, mount = %mount.name, sent, "listener done: stream ended")
            }
            Err(Stop::Io(e)) => {
                tracing::debug!(%peer, mount = %mount.name, sent, "listener left: {e}")
            }
            Err(Stop::Shutdown) => {}
            Err(Stop::Lagged) => {
                mount.stats.lagged_listeners.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, mount = %mount.name, sent, "listener dropped: more than queue_size behind");
            }
            Err(Stop::Killed) => {
                tracing::info!(%peer, mount = %mount.name, sent, "listener disconnected by an admin")
            }
            Err(Stop::Expired) => {
                tracing::info!(%peer, mount = %mount.name, sent, "listener disconnected: max_listener_duration reached")
            }
        }
        let _ = self.stream.shutdown().await;
    }
}

impl Streamer {
    /// The streaming loop. Its locals are what an idle listener costs besides `self`.
    async fn stream(&mut self, sent: &mut u64) -> Result<(), Stop> {
        let token = self.station.supervisor.token().clone();
        let max_duration = self.home.conf().settings.max_listener_duration;
        let mut segs: Vec<Bytes> = vec![std::mem::take(&mut self.response_head)];
        // Offset up to which this listener's data has been fully written (lag reference).
        let mut written = self.mount.offset_of(self.start.seq);
        loop {
            self.start.ticks.borrow_and_update();
            if token.is_cancelled() {
                return Err(Stop::Shutdown);
            }
            if max_duration.is_some_and(|d| self.joined.elapsed() >= d) {
                return Err(Stop::Expired);
            }
            match self.take_order() {
                Some(Order::Kill(_)) => return Err(Stop::Killed),
                Some(Order::MoveAll(to))
                    if self.switch_to(to.clone(), "moved by an admin", &mut written) =>
                {
                    continue
                }
                _ => {}
            }
            if !Arc::ptr_eq(&self.mount, &self.home)
                && (self.home.recalls_listeners() || self.mount.is_file_fallback())
                && self.home.is_live()
                && self.switch_to(self.home.clone(), "source is back", &mut written)
            {
                continue;
            }
            // Scratch space is per wake-up: a burst-sized Vec kept for the life of each of
            // thousands of listeners would dominate their memory.
            let mut chunks = Vec::new();
            let read = self.mount.read(self.start.seq, &mut chunks);
            if let Read::Data(next) = read {
                let (first, live_seq) = (self.start.seq, self.start.live_seq);
                let current = &self.start.current_meta;
                for p in self.start.prefix.drain(..) {
                    push_audio(&mut segs, &mut self.icy, p, current);
                }
                for (i, c) in chunks.drain(..).enumerate() {
                    let meta = if first + (i as u64) < live_seq {
                        current
                    } else {
                        &c.meta
                    };
                    push_audio(&mut segs, &mut self.icy, c.audio, meta);
                }
                self.start.seq = next;
            }
            if read == Read::Lagged {
                return Err(Stop::Lagged);
            }
            if !segs.is_empty() {
                let target = self.mount.offset_of(self.start.seq);
                // Boxed: the write state exists only while a write is in flight, not for
                // the whole life of an idle listener.
                let write = write_watching(
                    &mut self.stream,
                    std::mem::take(&mut segs),
                    Watch {
                        mount: &self.mount,
                        ticks: &mut self.start.ticks,
                        written,
                        id: self.id,
                        orders_seen: self.orders_seen,
                        token: &token,
                    },
                );
                *sent += Box::pin(write).await?;
                written = target;
                continue;
            }
            if read == Read::Ended {
                let next = if self.home.is_live() && !Arc::ptr_eq(&self.home, &self.mount) {
                    Some(self.home.clone())
                } else {
                    self.station.mounts.fallback_for(&self.mount)
                };
                if next.is_some_and(|to| self.switch_to(to, "source ended", &mut written)) {
                    continue;
                }
                return Ok(());
            }
            // Shutdown also ticks every mount (see `front::run`), so one future suffices
            // here: an idle listener is mostly this wait, and it is what each one costs.
            if self.start.ticks.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}

impl Streamer {
    /// The newest admin order for this listener, if one came since the last look.
    fn take_order(&mut self) -> Option<Order> {
        let last = self.mount.audience.last_order();
        if last == self.orders_seen {
            return None;
        }
        let order = self.mount.audience.order_for(self.id, self.orders_seen);
        self.orders_seen = last;
        order
    }

    /// Moves to `to` at the next chunk boundary, if its stream is compatible. The
    /// listener's ICY counter carries on; Ogg codec headers of `to` go out first.
    fn switch_to(&mut self, to: Arc<Mount>, why: &str, written: &mut u64) -> bool {
        if Arc::ptr_eq(&to, &self.mount) {
            return false;
        }
        let Some(compat) = to.compat() else {
            return false;
        };
        if !self.compat.accepts(&compat) {
            tracing::warn!(id = self.id, from = %self.mount.name, to = %to.name,
                "listener not moved ({why}): {} stream cannot continue as {}",
                self.compat.describe(), compat.describe());
            return false;
        }
        let Some(sub) = to.subscribe_moving() else {
            return false;
        };
        let from = std::mem::replace(&mut self.mount, to);
        from.listener_moved_out();
        self.mount.listener_moved_in();
        if let Some(info) = from.audience.remove(self.id) {
            self.mount.audience.add(self.id, info);
        }
        tracing::info!(id = self.id, from = %from.name, to = %self.mount.name, "listener moved: {why}");
        self.orders_seen = self.mount.audience.last_order();
        self.start = sub.start;
        self.compat = compat;
        *written = self.mount.offset_of(self.start.seq);
        true
    }
}

fn push_audio(segs: &mut Vec<Bytes>, icy: &mut Option<Interleaver>, audio: Bytes, meta: &Bytes) {
    match icy {
        Some(il) => il.interleave(&audio, meta, segs),
        None => segs.push(audio),
    }
}

/// What a write in flight keeps an eye on.
struct Watch<'a> {
    mount: &'a Mount,
    ticks: &'a mut watch::Receiver<u64>,
    /// The listener's last fully written stream offset.
    written: u64,
    id: u64,
    orders_seen: u64,
    token: &'a tokio_util::sync::CancellationToken,
}

/// Writes `segs` while watching the mount: if the listener's last fully written position
/// falls more than `queue_size` behind the live edge, it is dropped; an admin kill also
/// ends a write that is stuck on a client that stopped reading.
async fn write_watching(
    stream: &mut Conn,
    mut segs: Vec<Bytes>,
    w: Watch<'_>,
) -> Result<u64, Stop> {
    let queue_size = w.mount.conf().settings.queue_size as u64;
    let write = write_segments(stream, &mut segs);
    tokio::pin!(write);
    loop {
        tokio::select! {
            r = &mut write => return r.map_err(Stop::Io),
            _ = w.token.cancelled() => return Err(Stop::Shutdown),
            r = w.ticks.changed() => {
                if r.is_err() || w.mount.lag_behind(w.written) > queue_size {
                    return Err(Stop::Lagged);
                }
                if w.mount.audience.last_order() != w.orders_seen
                    && matches!(w.mount.audience.order_for(w.id, w.orders_seen), Some(Order::Kill(_)))
                {
                    return Err(Stop::Killed);
                }
            }
        }
    }
}

/// Writes all of `segs` with vectored writes, then clears it. Returns bytes written.
async fn write_segments(stream: &mut Conn, segs: &mut Vec<Bytes>) -> io::Result<u64> {
    let mut total = 0u64;
    let mut start = 0;
    while start < segs.len() {
        let n = {
            let slices: Vec<IoSlice<'_>> = segs[start..]
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            stream.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        total += n as u64;
        let mut left = n;
        while left > 0 && start < segs.len() {
            let len = segs[start].len();
            if left >= len {
                left -= len;
                start += 1;
            } else {
                segs[start].advance(left);
                left = 0;
            }
        }
        while start < segs.len() && segs[start].is_empty() {
            start += 1;
        }
    }
    segs.clear();
    Ok(total)
}

const CORS: &str = "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Headers: Origin, Accept, X-Requested-With, Content-Type, Icy-MetaData, Range\r\nAccess-Control-Allow-Methods: GET, OPTIONS, HEAD\r\nAccess-Control-Expose-Headers: icy-metaint, icy-name, icy-description, icy-genre, icy-url, icy-br, icy-pub, ice-audio-info\r\n";

fn not_found() -> String {
    plain_response(
        404,
        "File Not Found",
        "The file you requested could not be found\n",
    )
}

/// Header values come from the source: keep them on one line and printable.
fn header_safe(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

fn response_head(mount: &Mount, sub: &StreamFacts, metaint: Option<usize>) -> String {
    let labels = describe::labels(mount.conf().config.as_ref(), &sub.headers);
    let mut out = format!(
        "HTTP/1.0 200 OK\r\nServer: {}\r\nContent-Type: {}\r\nCache-Control: no-cache, no-store\r\nPragma: no-cache\r\nExpires: Mon, 26 Jul 1997 05:00:00 GMT\r\nConnection: Close\r\n{CORS}",
        crate::SERVER_ID,
        header_safe(&sub.content_type)
    );
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push_str(&format!("{k}: {}\r\n", header_safe(&v)));
        }
    };
    add("icy-name", labels.name);
    add("icy-description", labels.description);
    add("icy-genre", labels.genre);
    add("icy-url", labels.url);
    add("icy-pub", Some(u8::from(labels.public).to_string()));
    add(
        "icy-br",
        describe::bitrate_kbps(&sub.headers, &sub.codec).map(|b| b.to_string()),
    );
    add(
        "ice-audio-info",
        describe::audio_info(&sub.headers, &sub.codec),
    );
    add("icy-metaint", metaint.map(|m| m.to_string()));
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    /// Tens of thousands of these live at once: growing it is a memory regression
    /// (docs/BENCHMARKS.md measures RSS per listener against icecast2).
    #[test]
    fn a_streaming_listener_stays_small() {
        let size = std::mem::size_of::<super::Streamer>();
        assert!(size <= 320, "Streamer grew to {size} bytes");
    }
}
