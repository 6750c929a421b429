//! The HTTP front: accepts connections under the `max_clients` limit, reads the request
//! head itself (size- and time-limited), and routes: source ingest and listener streaming
//! are handled natively (Icecast wire behaviour), everything else goes to hyper + axum
//! together with the bytes already read.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use onair_proto::icecast::{parse_request_head, HeadError, RequestHead};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
};

use crate::{
    conn::Conn,
    input, output,
    station::{ClientSlot, Station},
    web,
};

/// Accepts on `listener`; with `secure`, each connection first completes a TLS handshake
/// (bounded by `header_timeout`) with the station's certificate.
pub async fn run(listener: TcpListener, station: Arc<Station>, secure: bool) -> io::Result<()> {
    let token = station.supervisor.token().clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = token.cancelled() => {
                for mount in station.mounts.all() {
                    mount.wake_listeners();
                }
                return Ok(());
            }
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; existing
                    // connections keep being served.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        Station::count(&station.counters.connections);
        match station
            .client_slots
            .try_acquire(station.config().limits.max_clients)
        {
            Some(permit) => {
                let st = station.clone();
                station.supervisor.spawn_connection(async move {
                    let conn = if secure {
                        match handshake(stream, peer, &st).await {
                            Some(c) => c,
                            None => return,
                        }
                    } else {
                        Conn::Plain(stream)
                    };
                    handle(conn, peer, st, permit).await
                });
            }
            None => {
                Station::count(&station.counters.rejected_connections);
                tracing::warn!(%peer, "max_clients reached, refusing connection");
                station.supervisor.spawn_connection(async move {
                    let mut stream = stream;
                    let reply = plain_response(503, "Service Unavailable", "Server is full\n");
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        stream.write_all(reply.as_bytes()),
                    )
                    .await;
                });
            }
        }
    }
}

/// The TLS handshake of a new connection; failures are logged and the connection closed.
async fn handshake(stream: TcpStream, peer: SocketAddr, station: &Station) -> Option<Conn> {
    let acceptor = station.tls.as_ref()?.acceptor();
    let limit = station.config().limits.header_timeout;
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(Conn::Tls(Box::new(s))),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            None
        }
    }
}

async fn handle(mut stream: Conn, peer: SocketAddr, station: Arc<Station>, permit: ClientSlot) {
    let limits = &station.config().limits;
    let token = station.supervisor.token().clone();
    let head = tokio::select! {
        _ = token.cancelled() => return,
        r = tokio::time::timeout(limits.header_timeout, read_head(&mut stream, limits.max_head_bytes)) => r,
    };
    let (head, buffered) = match head {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return, // closed before sending a request
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "bad request head");
            let _ = stream
                .write_all(plain_response(400, "Bad Request", &format!("{e}\n")).as_bytes())
                .await;
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "request head timed out");
            let _ = stream
                .write_all(plain_response(408, "Request Timeout", "Request timed out\n").as_bytes())
                .await;
            return;
        }
    };
    let path = head.path();
    let is_web_path = path.starts_with("/api/") || path.starts_with("/admin/");
    let route = match head.method.as_str() {
        // libshout (TLS "auto" mode) probes with `OPTIONS * ... Upgrade: TLS/1.0` and falls
        // back to plain HTTP only if the connection closes; any HTTP answer, even a correct
        // one, makes it give up with "Login failed". Icecast 2.4 closes, and so do we.
        "OPTIONS" if head.target == "*" => {
            tracing::debug!(%peer, "OPTIONS * (TLS upgrade probe): closing, no in-band TLS");
            return;
        }
        "SOURCE" => Route::Source,
        "PUT" if !is_web_path => Route::Source,
        "GET" | "HEAD" | "OPTIONS" if !is_web_path && station.mounts.get(path).is_some() => {
            Route::Listener
        }
        _ => Route::Web,
    };
    match route {
        Route::Source => {
            let body = buffered.slice(head.head_len..);
            Box::pin(input::source::run(stream, peer, head, body, station)).await
        }
        Route::Listener => {
            // Listeners live long and there are many: keep nothing of the request around.
            let request = output::listener::Request::from_head(&head);
            drop((head, buffered));
            // Streaming gets a task of its own, so this (larger) routing state is freed;
            // the client slot permit travels with it.
            if let Some(streamer) =
                output::listener::prepare(stream, peer, request, station.clone()).await
            {
                station.supervisor.spawn_connection(async move {
                    streamer.run().await;
                    drop(permit);
                });
            }
            return;
        }
        Route::Web => {
            drop(head);
            Box::pin(web::serve_connection(
                station,
                Prefixed::new(buffered, stream),
                peer,
            ))
            .await
        }
    }
    drop(permit);
}

enum Route {
    Source,
    Listener,
    Web,
}

/// Reads until a complete head. Returns it with every byte read so far.
async fn read_head(
    stream: &mut Conn,
    max: usize,
) -> Result<Option<(RequestHead, Bytes)>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let n = match stream.read_buf(&mut buf).await {
            Ok(n) => n,
            Err(_) => return Ok(None),
        };
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::Malformed(
                    "connection closed inside the request head",
                ))
            };
        }
        if let Some(head) = parse_request_head(&buf, max)? {
            return Ok(Some((head, Bytes::from(buf))));
        }
        if buf.len() > max {
            return Err(HeadError::TooLarge(max));
        }
    }
}

/// A short close-delimited plain-text response, Icecast style.
pub fn plain_response(code: u16, reason: &str, body: &str) -> String {
    format!(
        "HTTP/1.0 {code} {reason}\r\nServer: {}\r\nConnection: Close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-cache, no-store\r\nAccess-Control-Allow-Origin: *\r\n\r\n{body}",
        crate::SERVER_ID,
        body.len()
    )
}

/// A stream that first yields bytes already read, then the socket: lets hyper parse a
/// request head the front has looked at.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Prefixed<S> {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
