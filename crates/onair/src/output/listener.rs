//! HTTP listeners: `GET`/`HEAD`/`OPTIONS` on a mount. Answers Icecast style
//! (`HTTP/1.0 200 OK`, close-delimited, icy-* headers, CORS), sends the burst from a frame
//! or page boundary (Ogg: codec headers first), then live chunks.
//!
//! Cost model: the CPU of a listener is its write syscalls, so each wake-up sends every
//! chunk it has not yet sent — ICY blocks included — as one vectored write of shared
//! buffers. A listener more than `queue_size` bytes behind is dropped; it never slows the
//! mount or other listeners.

use std::{
    io,
    io::IoSlice,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
};

use bytes::{Buf, Bytes};
use onair_proto::{icecast::RequestHead, icy::Interleaver};
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::watch};

use crate::{
    front::plain_response,
    mount::{describe, Mount, Read, StartPosition, StreamFacts, Subscription},
    station::Station,
};

/// Most buffers handed to one writev call (the kernel's IOV_MAX is 1024).
const MAX_IOV: usize = 256;

enum Stop {
    Io(io::Error),
    Lagged,
    Shutdown,
}

/// What a listener's request asked for: all that is kept of it.
#[derive(Debug)]
pub struct Request {
    mount: String,
    method: Method,
    icy: bool,
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
        }
    }
}

/// A listener that was accepted and is ready to stream: the only per-listener state that
/// lives for the connection's lifetime (kept small: there may be tens of thousands).
pub struct Streamer {
    stream: TcpStream,
    peer: SocketAddr,
    mount: Arc<Mount>,
    station: Arc<Station>,
    start: StartPosition,
    icy: Option<Interleaver>,
    response_head: Bytes,
}

/// Answers everything that is not streaming (404, full mount, HEAD, OPTIONS) and returns
/// the [`Streamer`] for a listener that is to get audio.
pub async fn prepare(
    mut stream: TcpStream,
    peer: SocketAddr,
    request: Request,
    station: Arc<Station>,
) -> Option<Streamer> {
    let Some(mount) = station.mounts.get(&request.mount) else {
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
    let Some(Subscription { facts, start }) = mount.subscribe() else {
        let _ = stream.write_all(not_found().as_bytes()).await;
        return None;
    };
    let settings = &mount.settings;
    if request.method == Method::Get && !mount.try_join_listener() {
        tracing::info!(%peer, mount = %mount.name, "listener refused: mount full");
        let resp = plain_response(503, "Service Unavailable", "Mount is full\n");
        let _ = stream.write_all(resp.as_bytes()).await;
        return None;
    }
    let icy = request.icy.then(|| Interleaver::new(settings.metaint));
    let response_head = response_head(&mount, &facts, icy.as_ref().map(|i| i.metaint()));
    if request.method == Method::Head {
        let _ = stream.write_all(response_head.as_bytes()).await;
        return None;
    }
    let _ = stream.set_nodelay(true);
    if settings.send_buffer > 0 {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(settings.send_buffer);
    }
    Some(Streamer {
        stream,
        peer,
        mount,
        station,
        start,
        icy,
        response_head: Bytes::from(response_head),
    })
}

impl Streamer {
    /// Streams until the client leaves, lags too far, the source ends, or shutdown.
    pub async fn run(mut self) {
        let (mount, peer) = (self.mount.clone(), self.peer);
        Station::count(&self.station.counters.listener_connections);
        tracing::debug!(%peer, mount = %mount.name, icy = self.icy.is_some(), "listener joined");
        let mut sent = 0u64;
        let stop = self.stream(&mut sent).await;
        mount.listener_left(sent);
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
        }
        let _ = self.stream.shutdown().await;
    }
}

impl Streamer {
    /// The streaming loop. Its locals are what an idle listener costs besides `self`.
    async fn stream(&mut self, sent: &mut u64) -> Result<(), Stop> {
        let token = self.station.supervisor.token().clone();
        let queue_size = self.mount.settings.queue_size as u64;
        let mut segs: Vec<Bytes> = vec![std::mem::take(&mut self.response_head)];
        let mut prefix = std::mem::take(&mut self.start.prefix);
        // Offset up to which this listener's data has been fully written (lag reference).
        let mut written = self.mount.offset_of(self.start.seq);
        loop {
            self.start.ticks.borrow_and_update();
            if token.is_cancelled() {
                return Err(Stop::Shutdown);
            }
            // Scratch space is per wake-up: a burst-sized Vec kept for the life of each of
            // thousands of listeners would dominate their memory.
            let mut chunks = Vec::new();
            let read = self.mount.read(self.start.seq, &mut chunks);
            if let Read::Data(next) = read {
                let (first, live_seq) = (self.start.seq, self.start.live_seq);
                let current = &self.start.current_meta;
                for p in prefix.drain(..) {
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
                    &self.mount,
                    &mut self.start.ticks,
                    written,
                    queue_size,
                    &token,
                );
                *sent += Box::pin(write).await?;
                written = target;
                continue;
            }
            if read == Read::Ended {
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

fn push_audio(segs: &mut Vec<Bytes>, icy: &mut Option<Interleaver>, audio: Bytes, meta: &Bytes) {
    match icy {
        Some(il) => il.interleave(&audio, meta, segs),
        None => segs.push(audio),
    }
}

/// Writes `segs` while watching the mount: if the listener's last fully written position
/// falls more than `queue_size` behind the live edge, it is dropped.
async fn write_watching(
    stream: &mut TcpStream,
    mut segs: Vec<Bytes>,
    mount: &Mount,
    ticks: &mut watch::Receiver<u64>,
    written: u64,
    queue_size: u64,
    token: &tokio_util::sync::CancellationToken,
) -> Result<u64, Stop> {
    let write = write_segments(stream, &mut segs);
    tokio::pin!(write);
    loop {
        tokio::select! {
            r = &mut write => return r.map_err(Stop::Io),
            _ = token.cancelled() => return Err(Stop::Shutdown),
            r = ticks.changed() => {
                if r.is_err() || mount.lag_behind(written) > queue_size {
                    return Err(Stop::Lagged);
                }
            }
        }
    }
}

/// Writes all of `segs` with vectored writes, then clears it. Returns bytes written.
async fn write_segments(stream: &mut TcpStream, segs: &mut Vec<Bytes>) -> io::Result<u64> {
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
    let labels = describe::labels(mount.config.as_ref(), &sub.headers);
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
