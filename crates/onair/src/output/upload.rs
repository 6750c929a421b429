//! Upload: an Icecast source client that sends one local mount's stream to a remote
//! Icecast-compatible server (onair, icecast2) with `PUT` — what `onair encode` uses to
//! publish what it encodes. MP3 titles are sent the way Icecast sources do
//! (`/admin/metadata?mode=updinfo` with the source credentials); Ogg/Opus titles travel
//! in-band in the stream's OpusTags and need no request.
//!
//! Invariants: only whole chunks of the local mount (whole frames/pages) are written; the
//! remote gets the local mount's Ogg codec headers first; a remote that stops reading
//! blocks this writer, which falls behind the local ring and ends with an error (never an
//! unbounded queue).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use onair_proto::icy::parse_block;
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

use crate::mount::{Mount, Read};

/// Bound on connecting and on each protocol step before streaming.
const STEP: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum UploadError {
    #[error("not an http://user:password@host:port/mount URL: {0}")]
    BadUrl(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} refused the stream: {answer}")]
    Refused { addr: String, answer: String },
    #[error("connection to {addr} lost: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0} did not answer in time")]
    Timeout(String),
    #[error("the upload fell behind the encoder (the server reads too slowly)")]
    Lagged,
}

/// Where to send: `http://user:password@host:port/mount` (user defaults to `source`, port
/// to 8000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub mount: String,
    pub user: String,
    pub password: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, UploadError> {
        let bad = || UploadError::BadUrl(url.to_string());
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("icecast://"))
            .ok_or_else(bad)?;
        let (authority, path) = rest.split_at(rest.find('/').ok_or_else(bad)?);
        let (creds, hostport) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        let (user, password) = match creds {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (u.to_string(), p.to_string()),
                None => ("source".to_string(), c.to_string()),
            },
            None => return Err(bad()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
            None => (hostport.to_string(), 8000),
        };
        if host.is_empty() || path.len() < 2 || password.is_empty() {
            return Err(bad());
        }
        Ok(Target {
            host,
            port,
            mount: path.to_string(),
            user,
            password,
        })
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn auth(&self) -> String {
        basic_auth(&self.user, &self.password)
    }
}

/// What the remote announces about the stream.
#[derive(Debug, Clone, Default)]
pub struct StreamDescription {
    pub content_type: String,
    pub name: Option<String>,
    pub description: Option<String>,
}

/// Sends `mount`'s stream to `target` until the mount's source ends or `token` is
/// cancelled.
pub async fn run(
    mount: Arc<Mount>,
    target: Target,
    desc: StreamDescription,
    token: CancellationToken,
) -> Result<(), UploadError> {
    let addr = target.addr();
    let io = |source| UploadError::Io {
        addr: addr.clone(),
        source,
    };
    let mut stream = timeout(STEP, TcpStream::connect(&addr))
        .await
        .map_err(|_| UploadError::Timeout(addr.clone()))?
        .map_err(|source| UploadError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let mut head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\nUser-Agent: {}\r\nContent-Type: {}\r\nIce-Public: 0\r\n",
        target.mount,
        addr,
        target.auth(),
        crate::SERVER_ID,
        desc.content_type
    );
    for (k, v) in [
        ("Ice-Name", &desc.name),
        ("Ice-Description", &desc.description),
    ] {
        if let Some(v) = v {
            head.push_str(&format!("{k}: {}\r\n", v.replace(['\r', '\n'], " ")));
        }
    }
    head.push_str("Expect: 100-continue\r\n\r\n");
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    let answer = timeout(STEP, read_answer(&mut stream))
        .await
        .map_err(|_| UploadError::Timeout(addr.clone()))?
        .map_err(io)?;
    let status = answer.split_whitespace().nth(1).unwrap_or("");
    if status != "100" && status != "200" {
        return Err(UploadError::Refused {
            addr: addr.clone(),
            answer: answer.lines().next().unwrap_or("").to_string(),
        });
    }
    tracing::info!(to = %format!("{addr}{}", target.mount), "uploading");
    let Some(sub) = mount.subscribe() else {
        return Ok(());
    };
    let mut start = sub.start;
    let mut last_meta = start.current_meta.clone();
    let mp3 = desc.content_type == "audio/mpeg";
    if mp3 {
        send_title(&target, &last_meta).await;
    }
    for p in start.prefix.drain(..) {
        stream.write_all(&p).await.map_err(io)?;
    }
    loop {
        start.ticks.borrow_and_update();
        let mut chunks = Vec::new();
        match mount.read(start.seq, &mut chunks) {
            Read::Data(next) => {
                for c in chunks {
                    if mp3 && c.meta != last_meta {
                        last_meta = c.meta.clone();
                        send_title(&target, &last_meta).await;
                    }
                    tokio::select! {
                        r = stream.write_all(&c.audio) => r.map_err(io)?,
                        _ = token.cancelled() => return Ok(()),
                    }
                }
                start.seq = next;
                continue;
            }
            Read::Lagged => return Err(UploadError::Lagged),
            Read::Ended => {
                let _ = stream.shutdown().await;
                return Ok(());
            }
            Read::Idle => {}
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            r = start.ticks.changed() => if r.is_err() { return Ok(()) },
        }
    }
}

/// Reads the answer to the PUT: a `100 Continue` (then streaming may begin; the final
/// answer comes only if the server refuses) or a final status.
async fn read_answer(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 16 * 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// Sends an ICY metadata block's title as an Icecast metadata update (best effort: a
/// failure is logged, streaming goes on).
async fn send_title(target: &Target, meta: &Bytes) {
    if meta.len() < 2 {
        return;
    }
    let Some(title) = parse_block(&meta[1..])
        .into_iter()
        .find(|(k, _)| k == "StreamTitle")
        .map(|(_, v)| v)
        .filter(|t| !t.is_empty())
    else {
        return;
    };
    let request = format!(
        "GET /admin/metadata?mode=updinfo&mount={}&song={} HTTP/1.0\r\nHost: {}\r\nAuthorization: Basic {}\r\nUser-Agent: {}\r\n\r\n",
        percent_encode(&target.mount),
        percent_encode(&title),
        target.addr(),
        target.auth(),
        crate::SERVER_ID
    );
    let sent = timeout(STEP, async {
        let mut s = TcpStream::connect(target.addr()).await?;
        s.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    })
    .await;
    match sent {
        Ok(Ok(a)) if a.split_whitespace().nth(1) == Some("200") => {
            tracing::info!(%title, "title sent")
        }
        Ok(Ok(a)) => {
            tracing::warn!(%title, answer = %a.lines().next().unwrap_or(""), "title refused")
        }
        Ok(Err(e)) => tracing::warn!(%title, error = %e, "cannot send the title"),
        Err(_) => tracing::warn!(%title, "title update timed out"),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn basic_auth(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_defaults() {
        let t = Target::parse("http://source:pw@example.org:8010/live.mp3").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.mount.as_str(),
                t.user.as_str(),
                t.password.as_str()
            ),
            ("example.org", 8010, "/live.mp3", "source", "pw")
        );
        let t = Target::parse("icecast://pw@host/m").unwrap();
        assert_eq!((t.port, t.user.as_str()), (8000, "source"));
        for bad in [
            "ftp://a:b@h/m",
            "http://h:8000/m",
            "http://a:b@h:x/m",
            "http://a:b@h:80/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn titles_are_percent_encoded() {
        assert_eq!(percent_encode("A & B/é"), "A%20%26%20B/%C3%A9");
    }
}
