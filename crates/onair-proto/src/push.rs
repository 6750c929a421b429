//! The client side of the source protocols, for pushing a stream to a remote server: push
//! URLs, Icecast `PUT`/`SOURCE` request heads and their replies, the SHOUTcast v1 login,
//! title updates (`/admin/metadata`, `/admin.cgi`), and the reconnect backoff schedule.
//!
//! Invariants: every parser is total (any bytes give a value, "need more" as `Ok(None)` or
//! an error; nothing panics); encoded heads never contain a control character taken from
//! input, so a title or stream name cannot inject a header; the backoff never waits longer
//! than [`Backoff::CAP`].

use std::time::{Duration, Instant};

use base64::Engine;
use thiserror::Error;

use crate::{icecast::StreamInfoHeaders, icy::StreamMeta};

/// Longest reply head accepted from a remote server.
pub const MAX_REPLY_HEAD: usize = 8192;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("push URL must start with http:// or icecast:// (got {0:?})")]
    Scheme(String),
    #[error("push URL has no host")]
    NoHost,
    #[error("push URL has a bad port: {0:?}")]
    Port(String),
    #[error("push URL has no password (http://source:PASSWORD@host:port/mount)")]
    NoPassword,
    #[error(
        "push URL has a bad mount {0:?} (it must start with '/' and have no spaces, '?' or '#')"
    )]
    Mount(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("reply is not HTTP or SHOUTcast: {0}")]
    Malformed(&'static str),
    #[error("reply head larger than {0} bytes")]
    TooLarge(usize),
}

/// Which source protocol a push speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Icecast 2: `PUT` with `Expect: 100-continue`, `SOURCE` for servers older than 2.4.
    #[default]
    Icecast,
    /// SHOUTcast v1: password line on the port after the given one; titles via `/admin.cgi`.
    Shoutcast,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.trim().to_ascii_lowercase().as_str() {
            "icecast" | "icecast2" | "http" => Some(Protocol::Icecast),
            "shoutcast" | "shoutcast1" | "icy" => Some(Protocol::Shoutcast),
            _ => None,
        }
    }
}

/// Where a push goes: `http://user:password@host:port/mount` (user defaults to `source`,
/// port to 8000). User and password may be percent-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct PushTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub mount: String,
}

impl std::fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl PushTarget {
    pub fn parse(url: &str) -> Result<PushTarget, TargetError> {
        let url = url.trim();
        let rest = ["http://", "icecast://"]
            .iter()
            .find_map(|s| {
                url.get(..s.len())
                    .filter(|p| p.eq_ignore_ascii_case(s))
                    .map(|_| &url[s.len()..])
            })
            .ok_or_else(|| TargetError::Scheme(url.chars().take(16).collect()))?;
        let (authority, mount) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if mount
            .bytes()
            .any(|b| b <= b' ' || b == b'?' || b == b'#' || b == 0x7f)
        {
            return Err(TargetError::Mount(mount.to_string()));
        }
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (percent_decode(user), percent_decode(pass)),
                None => (String::new(), percent_decode(u)),
            },
            None => return Err(TargetError::NoPassword),
        };
        if password.is_empty() {
            return Err(TargetError::NoPassword);
        }
        let (host, port) = split_host_port(hostport)?;
        Ok(PushTarget {
            host,
            port,
            user: if user.is_empty() {
                "source".into()
            } else {
                user
            },
            password,
            mount: mount.to_string(),
        })
    }

    /// `host:port` as it goes in a `Host` header (IPv6 in brackets).
    pub fn authority(&self) -> String {
        encode_authority(&self.host, self.port)
    }

    /// The URL with the password hidden, for logs.
    pub fn redacted(&self) -> String {
        format!(
            "http://{}:***@{}{}",
            self.user,
            self.authority(),
            self.mount
        )
    }
}

/// `host:port` for a `Host` header or a log line (IPv6 in brackets).
pub fn encode_authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn split_host_port(s: &str) -> Result<(String, u16), TargetError> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or(TargetError::NoHost)?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty()
        || host
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b"-._:".contains(&b)))
    {
        return Err(TargetError::NoHost);
    }
    let port = match port {
        None => 8000,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| TargetError::Port(p.to_string()))?,
    };
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but RFC 3986 unreserved characters (query values).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Header values from config or a source: one printable line.
fn header_value(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// How a push opens an Icecast source connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceMethod {
    /// `PUT` over HTTP/1.1 with `Expect: 100-continue` (Icecast ≥ 2.4, onair).
    Put,
    /// Legacy `SOURCE` over HTTP/1.0 (older Icecast).
    Source,
}

/// What a push announces about its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcement {
    pub content_type: String,
    /// `ice-name` etc.; `public` unset means `0`.
    pub info: StreamInfoHeaders,
    pub user_agent: String,
}

fn basic_auth(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// The request head that opens an Icecast source connection; the body (the raw stream)
/// follows once the server accepted.
pub fn encode_source_request(
    target: &PushTarget,
    method: SourceMethod,
    stream: &Announcement,
) -> String {
    let (line, expect) = match method {
        SourceMethod::Put => (format!("PUT {} HTTP/1.1", target.mount), true),
        SourceMethod::Source => (format!("SOURCE {} HTTP/1.0", target.mount), false),
    };
    let mut out = format!(
        "{line}\r\nHost: {}\r\nAuthorization: Basic {}\r\nUser-Agent: {}\r\nContent-Type: {}\r\n",
        target.authority(),
        basic_auth(&target.user, &target.password),
        header_value(&stream.user_agent),
        header_value(&stream.content_type),
    );
    let i = &stream.info;
    out.push_str(&format!(
        "Ice-Public: {}\r\n",
        u8::from(i.public == Some(true))
    ));
    for (key, value) in [
        ("Ice-Name", &i.name),
        ("Ice-Description", &i.description),
        ("Ice-Genre", &i.genre),
        ("Ice-Url", &i.url),
        ("Ice-Bitrate", &i.bitrate),
        ("Ice-Audio-Info", &i.audio_info),
    ] {
        if let Some(v) = value.as_deref().map(header_value).filter(|v| !v.is_empty()) {
            out.push_str(&format!("{key}: {v}\r\n"));
        }
    }
    if expect {
        out.push_str("Expect: 100-continue\r\n");
    }
    out.push_str("\r\n");
    out
}

/// A reply status line (and the head it ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyHead {
    pub status: u16,
    pub reason: String,
    /// Bytes the head took; what follows is the body or the next head.
    pub len: usize,
}

/// Parses an HTTP reply head at the start of `buf` (`Ok(None)`: need more bytes).
pub fn parse_reply_head(buf: &[u8]) -> Result<Option<ReplyHead>, ReplyError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_REPLY_HEAD => {
            Err(ReplyError::TooLarge(MAX_REPLY_HEAD))
        }
        Ok(httparse::Status::Complete(len)) => Ok(Some(ReplyHead {
            status: resp.code.ok_or(ReplyError::Malformed("no status"))?,
            reason: header_value(resp.reason.unwrap_or("")),
            len,
        })),
        Ok(httparse::Status::Partial) if buf.len() > MAX_REPLY_HEAD => {
            Err(ReplyError::TooLarge(MAX_REPLY_HEAD))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(ReplyError::Malformed("invalid status line or header")),
    }
}

/// What a source reply means for the push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceVerdict {
    /// `100 Continue`: a final reply follows.
    Continue,
    /// 2xx: send the stream.
    Accepted,
    /// The server does not know `PUT` (400, 405, 501): try `SOURCE`.
    TrySource,
    /// 401: wrong user or password.
    Unauthorized,
    /// Anything else (403 "Mountpoint in use", 5xx...): try again later.
    Refused,
}

pub fn source_verdict(method: SourceMethod, status: u16) -> SourceVerdict {
    match status {
        100 => SourceVerdict::Continue,
        200..=299 => SourceVerdict::Accepted,
        400 | 405 | 501 if method == SourceMethod::Put => SourceVerdict::TrySource,
        401 => SourceVerdict::Unauthorized,
        _ => SourceVerdict::Refused,
    }
}

/// The port a SHOUTcast v1 source connects to: the one after the server's main port.
pub fn shoutcast_source_port(main_port: u16) -> Option<u16> {
    main_port.checked_add(1)
}

/// The first thing a SHOUTcast v1 source sends: its password line.
pub fn encode_shoutcast_login(password: &str) -> String {
    format!("{}\r\n", header_value(password))
}

/// The SHOUTcast v1 server's answer to the password line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShoutcastReply {
    Accepted,
    /// The server's words (`invalid password`, ...).
    Refused(String),
}

/// Parses the answer to the password line: `OK2` followed by `icy-caps` lines up to a
/// blank line (SHOUTcast 1.9, onair), or a bare `OK` line (older servers); anything else
/// is a refusal. Returns the reply and the bytes it took, `Ok(None)` while incomplete.
pub fn parse_shoutcast_reply(buf: &[u8]) -> Result<Option<(ShoutcastReply, usize)>, ReplyError> {
    let Some((first, mut used)) = line_at(buf, 0)? else {
        return Ok(None);
    };
    let first = first.trim();
    if !first.starts_with("OK") {
        return Ok(Some((ShoutcastReply::Refused(first.to_string()), used)));
    }
    if first != "OK2" {
        return Ok(Some((ShoutcastReply::Accepted, used)));
    }
    loop {
        match line_at(buf, used)? {
            None => return Ok(None),
            Some((line, n)) => {
                used = n;
                if line.trim().is_empty() {
                    return Ok(Some((ShoutcastReply::Accepted, used)));
                }
            }
        }
    }
}

/// The line starting at `from` and the offset after it.
fn line_at(buf: &[u8], from: usize) -> Result<Option<(String, usize)>, ReplyError> {
    let rest = buf.get(from..).unwrap_or(&[]);
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) if from + i > MAX_REPLY_HEAD => Err(ReplyError::TooLarge(MAX_REPLY_HEAD)),
        Some(i) => {
            let line = rest[..i].strip_suffix(b"\r").unwrap_or(&rest[..i]);
            Ok(Some((
                String::from_utf8_lossy(line).into_owned(),
                from + i + 1,
            )))
        }
        None if buf.len() > MAX_REPLY_HEAD => Err(ReplyError::TooLarge(MAX_REPLY_HEAD)),
        None => Ok(None),
    }
}

/// The `key:value` lines a SHOUTcast v1 source sends after login, ending in a blank line.
pub fn encode_shoutcast_headers(stream: &Announcement) -> String {
    let i = &stream.info;
    let mut out = format!("content-type:{}\r\n", header_value(&stream.content_type));
    out.push_str(&format!("icy-pub:{}\r\n", u8::from(i.public == Some(true))));
    for (key, value) in [
        ("icy-name", &i.name),
        ("icy-description", &i.description),
        ("icy-genre", &i.genre),
        ("icy-url", &i.url),
        ("icy-br", &i.bitrate),
    ] {
        if let Some(v) = value.as_deref().map(header_value).filter(|v| !v.is_empty()) {
            out.push_str(&format!("{key}:{v}\r\n"));
        }
    }
    out.push_str("\r\n");
    out
}

/// The request that sets the remote title, sent on its own connection with the source
/// credentials: Icecast `GET /admin/metadata?mode=updinfo&mount=...&song=...` with Basic
/// auth; SHOUTcast v1 `GET /admin.cgi?pass=...&mode=updinfo&song=...` on the main port.
pub fn encode_metadata_request(
    target: &PushTarget,
    protocol: Protocol,
    meta: &StreamMeta,
    user_agent: &str,
) -> String {
    let song = percent_encode(&meta.title);
    let agent = header_value(user_agent);
    match protocol {
        Protocol::Icecast => format!(
            "GET /admin/metadata?mode=updinfo&mount={}&song={song}&charset=UTF-8 HTTP/1.0\r\nHost: {}\r\nAuthorization: Basic {}\r\nUser-Agent: {agent}\r\n\r\n",
            percent_encode(&target.mount),
            target.authority(),
            basic_auth(&target.user, &target.password),
        ),
        Protocol::Shoutcast => {
            let url = meta
                .url
                .as_deref()
                .map_or(String::new(), |u| format!("&url={}", percent_encode(u)));
            // SHOUTcast servers serve admin.cgi only to browser-like agents.
            format!(
                "GET /admin.cgi?pass={}&mode=updinfo&song={song}{url} HTTP/1.0\r\nHost: {}\r\nUser-Agent: {agent} (Mozilla compatible)\r\n\r\n",
                percent_encode(&target.password),
                target.authority(),
            )
        }
    }
}

/// Reconnect schedule: exponential backoff with jitter. The nominal wait doubles from
/// [`Backoff::FIRST`] up to [`Backoff::CAP`] with each failed or short-lived connection; the
/// actual wait is drawn from `(3/4 · nominal, nominal]`, so many pushes that lost the same
/// server do not return in lock step. A connection that stayed up for [`Backoff::STABLE`]
/// resets the schedule.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
    connected_since: Option<Instant>,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_secs(1);
    pub const CAP: Duration = Duration::from_secs(60);
    pub const STABLE: Duration = Duration::from_secs(60);

    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// A connection was established at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_since = Some(now);
    }

    /// How many waits in a row the schedule has handed out since it was last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The connection (or an attempt) ended at `now`: how long to wait before the next
    /// attempt. `random` is any uniformly distributed number (the jitter).
    pub fn next_delay(&mut self, now: Instant, random: u32) -> Duration {
        if let Some(since) = self.connected_since.take() {
            if now.saturating_duration_since(since) >= Backoff::STABLE {
                self.failures = 0;
            }
        }
        // 2^6 s > CAP: larger exponents change nothing (and must not overflow).
        let nominal = (Backoff::FIRST * (1u32 << self.failures.min(6))).min(Backoff::CAP);
        self.failures = self.failures.saturating_add(1);
        let cut = nominal.as_nanos() * u128::from(random) / (4 * (u128::from(u32::MAX) + 1));
        nominal - Duration::from_nanos(cut as u64) // invariant: cut < nominal / 4 < 2^64 ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::icecast::parse_request_head;
    use proptest::prelude::*;

    #[test]
    fn push_urls() {
        let t = PushTarget::parse("http://source:p%40ss@radio.example:8010/live.mp3").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.user.as_str(),
                t.password.as_str()
            ),
            ("radio.example", 8010, "source", "p@ss")
        );
        assert_eq!(t.mount, "/live.mp3");
        assert_eq!(
            t.redacted(),
            "http://source:***@radio.example:8010/live.mp3"
        );
        assert!(!format!("{t:?}").contains("p@ss"));
        let t = PushTarget::parse("icecast://:hackme@[::1]/x").unwrap();
        assert_eq!((t.user.as_str(), t.port), ("source", 8000));
        assert_eq!(t.authority(), "[::1]:8000");
        let t = PushTarget::parse("http://pw@127.0.0.1:9000").unwrap();
        assert_eq!((t.password.as_str(), t.mount.as_str()), ("pw", "/"));
        assert_eq!(
            PushTarget::parse("https://a:b@h/x"),
            Err(TargetError::Scheme("https://a:b@h/x".into()))
        );
        assert_eq!(
            PushTarget::parse("http://h:8000/x"),
            Err(TargetError::NoPassword)
        );
        assert_eq!(
            PushTarget::parse("http://a:@h/x"),
            Err(TargetError::NoPassword)
        );
        assert!(matches!(
            PushTarget::parse("http://a:b@h:99999/x"),
            Err(TargetError::Port(_))
        ));
        assert!(matches!(
            PushTarget::parse("http://a:b@h/x y"),
            Err(TargetError::Mount(_))
        ));
        assert_eq!(PushTarget::parse("http://a:b@/x"), Err(TargetError::NoHost));
    }

    fn announcement() -> Announcement {
        Announcement {
            content_type: "audio/mpeg".into(),
            info: StreamInfoHeaders {
                name: Some("My\r\nEvil: 1 Radio".into()),
                genre: Some("Jazz".into()),
                public: Some(true),
                bitrate: Some("128".into()),
                ..Default::default()
            },
            user_agent: "onair/test".into(),
        }
    }

    #[test]
    fn source_request_heads_parse_back() {
        let t = PushTarget::parse("http://source:hackme@127.0.0.1:8000/live").unwrap();
        let put = encode_source_request(&t, SourceMethod::Put, &announcement());
        let head = parse_request_head(put.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(head.head_len, put.len());
        assert_eq!((head.method.as_str(), head.path()), ("PUT", "/live"));
        assert_eq!(head.minor_version, 1);
        assert!(head.expects_continue());
        let c = head.basic_auth().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("source", "hackme"));
        assert_eq!(head.header("host"), Some("127.0.0.1:8000"));
        assert_eq!(head.header("content-type"), Some("audio/mpeg"));
        assert_eq!(head.header("ice-name"), Some("MyEvil: 1 Radio"));
        assert_eq!(head.header("evil"), None, "no header injection");
        let info = StreamInfoHeaders::from_head(&head);
        assert_eq!(info.public, Some(true));
        assert_eq!(info.genre.as_deref(), Some("Jazz"));
        assert_eq!(info.bitrate.as_deref(), Some("128"));

        let src = encode_source_request(&t, SourceMethod::Source, &announcement());
        let head = parse_request_head(src.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!((head.method.as_str(), head.minor_version), ("SOURCE", 0));
        assert!(!head.expects_continue());
    }

    #[test]
    fn replies_and_verdicts() {
        let wire = b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\nHTTP/1.0 200 OK\r\n\r\n";
        let first = parse_reply_head(wire).unwrap().unwrap();
        assert_eq!(first.status, 100);
        let second = parse_reply_head(&wire[first.len..]).unwrap().unwrap();
        assert_eq!((second.status, first.len + second.len), (200, wire.len()));
        assert_eq!(parse_reply_head(b"HTTP/1.0 403 Moun"), Ok(None));
        let r = parse_reply_head(b"HTTP/1.0 403 Mountpoint in use\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.reason, "Mountpoint in use");
        assert!(parse_reply_head(b"ICY 200 OK\r\n\r\n").is_err());
        assert!(parse_reply_head(&[b'x'; 9000]).is_err());
        use SourceMethod::*;
        use SourceVerdict::*;
        assert_eq!(source_verdict(Put, 100), Continue);
        assert_eq!(source_verdict(Put, 200), Accepted);
        for s in [400, 405, 501] {
            assert_eq!(source_verdict(Put, s), TrySource);
            assert_eq!(source_verdict(Source, s), Refused);
        }
        assert_eq!(source_verdict(Source, 401), Unauthorized);
        assert_eq!(source_verdict(Put, 403), Refused);
        assert_eq!(source_verdict(Put, 503), Refused);
    }

    #[test]
    fn shoutcast_handshake() {
        assert_eq!(encode_shoutcast_login("pw\r\nx"), "pwx\r\n");
        let ok = b"OK2\r\nicy-caps:11\r\n\r\n";
        assert_eq!(
            parse_shoutcast_reply(ok),
            Ok(Some((ShoutcastReply::Accepted, ok.len())))
        );
        for cut in 0..ok.len() {
            assert_eq!(parse_shoutcast_reply(&ok[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(
            parse_shoutcast_reply(b"OK\r\nAUDIO"),
            Ok(Some((ShoutcastReply::Accepted, 4)))
        );
        assert_eq!(
            parse_shoutcast_reply(b"invalid password\r\n"),
            Ok(Some((
                ShoutcastReply::Refused("invalid password".into()),
                18
            )))
        );
        assert!(parse_shoutcast_reply(&[b'O'; 9000]).is_err());
        let h = encode_shoutcast_headers(&announcement());
        let (headers, used) = crate::icecast::parse_shoutcast_headers(h.as_bytes(), 8192)
            .unwrap()
            .unwrap();
        assert_eq!(used, h.len());
        assert!(headers.contains(&("content-type".into(), "audio/mpeg".into())));
        assert!(headers.contains(&("icy-pub".into(), "1".into())));
        assert!(headers.contains(&("icy-br".into(), "128".into())));
        assert_eq!(shoutcast_source_port(8000), Some(8001));
        assert_eq!(shoutcast_source_port(u16::MAX), None);
    }

    #[test]
    fn metadata_requests() {
        let t = PushTarget::parse("http://source:h%26ck@127.0.0.1:8000/live").unwrap();
        let meta = StreamMeta {
            title: "Café 'Del' ; a=b & c".into(),
            url: None,
        };
        let req = encode_metadata_request(&t, Protocol::Icecast, &meta, "ua");
        let head = parse_request_head(req.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(head.path(), "/admin/metadata");
        let q = crate::icecast::parse_query(head.query().unwrap());
        let get = |k: &str| {
            q.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(get("mode").as_deref(), Some("updinfo"));
        assert_eq!(get("mount").as_deref(), Some("/live"));
        assert_eq!(get("song").as_deref(), Some(meta.title.as_str()));
        let c = head.basic_auth().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("source", "h&ck"));

        let req = encode_metadata_request(&t, Protocol::Shoutcast, &meta, "ua");
        let head = parse_request_head(req.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(head.path(), "/admin.cgi");
        let q = crate::icecast::parse_query(head.query().unwrap());
        assert!(q.contains(&("pass".into(), b"h&ck".to_vec())));
        assert!(q.contains(&("song".into(), meta.title.as_bytes().to_vec())));
        assert!(head.header("user-agent").unwrap().contains("Mozilla"));
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let t0 = Instant::now();
        let mut b = Backoff::new();
        let nominal = [1u64, 2, 4, 8, 16, 32, 60, 60, 60, 60];
        for (i, &n) in nominal.iter().enumerate() {
            let n = Duration::from_secs(n);
            let lo = b.clone().next_delay(t0, u32::MAX);
            let hi = b.clone().next_delay(t0, 0);
            assert_eq!(hi, n, "attempt {i}: no jitter at random = 0");
            assert!(lo > n * 3 / 4 && lo < n, "attempt {i}: {lo:?}");
            let d = b.next_delay(t0, 0x9E37_79B9u32.wrapping_mul(i as u32 + 1));
            assert!(d > n * 3 / 4 && d <= n, "attempt {i}: {d:?}");
        }
        for _ in 0..100 {
            assert!(b.next_delay(t0, 7) <= Backoff::CAP);
        }
    }

    #[test]
    fn backoff_resets_only_after_a_stable_minute() {
        let t0 = Instant::now();
        let mut b = Backoff::new();
        for _ in 0..5 {
            b.next_delay(t0, 0);
        }
        // Up for 30 s: still flapping, the schedule goes on.
        b.connected(t0);
        assert_eq!(
            b.next_delay(t0 + Duration::from_secs(30), 0),
            Duration::from_secs(32)
        );
        // Up for a minute: back to the first step.
        b.connected(t0);
        assert_eq!(
            b.next_delay(t0 + Backoff::STABLE, 0),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.next_delay(t0 + Backoff::STABLE, 0),
            Duration::from_secs(2)
        );
        assert_eq!(b.failures(), 2);
    }

    proptest! {
        #[test]
        fn parsers_are_total(data in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_reply_head(&data);
            let _ = parse_shoutcast_reply(&data);
            let _ = PushTarget::parse(&String::from_utf8_lossy(&data));
        }

        #[test]
        fn jitter_stays_in_bounds(random in any::<u32>(), failures in 0u32..40) {
            let t0 = Instant::now();
            let mut b = Backoff::new();
            for _ in 0..failures {
                b.next_delay(t0, 0);
            }
            let nominal = b.clone().next_delay(t0, 0);
            let d = b.next_delay(t0, random);
            prop_assert!(d <= nominal && d > nominal * 3 / 4);
        }

        #[test]
        fn encoded_song_round_trips(title in "\\PC{0,40}") {
            let t = PushTarget::parse("http://source:x@h:1/m").unwrap();
            let req = encode_metadata_request(&t, Protocol::Icecast, &StreamMeta { title: title.clone(), url: None }, "ua");
            let head = parse_request_head(req.as_bytes(), 65536).unwrap().unwrap();
            let q = crate::icecast::parse_query(head.query().unwrap());
            let song = q.iter().find(|(k, _)| k == "song").map(|(_, v)| v.clone()).unwrap();
            prop_assert_eq!(String::from_utf8(song).unwrap(), title);
        }
    }
}
