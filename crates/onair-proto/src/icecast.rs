//! Icecast/SHOUTcast request heads: parsing (httparse, with legacy `SOURCE`), Basic auth,
//! source stream-info headers, and a chunked transfer-coding decoder for `PUT` bodies.
//!
//! Invariant: parsing is total — any byte sequence yields a head, "need more bytes"
//! (`Ok(None)`) or a [`HeadError`]; nothing panics.

use base64::Engine;
use thiserror::Error;

/// Most headers a request may carry.
const MAX_HEADERS: usize = 64;

/// Header name/value pairs as sent.
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    #[error("request head larger than {0} bytes")]
    TooLarge(usize),
}

/// A parsed request head. Header names are kept as sent; look-ups ignore case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (path plus optional `?query`).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Headers,
    /// Bytes the head occupied; what follows belongs to the body.
    pub head_len: usize,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The raw query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Whether the client asked for `100 Continue` before sending its body.
    pub fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    /// Whether the listener asked for in-band metadata (`Icy-MetaData: 1`).
    pub fn wants_icy_metadata(&self) -> bool {
        self.header("icy-metadata").is_some_and(|v| v.trim() == "1")
    }

    /// Credentials from a Basic `Authorization` header.
    pub fn basic_auth(&self) -> Option<Credentials> {
        parse_basic_auth(self.header("authorization")?)
    }
}

/// Parses a request head from the start of `buf`. `Ok(None)` means more bytes are needed;
/// a head that is still incomplete after `max_len` bytes is [`HeadError::TooLarge`].
pub fn parse_request_head(buf: &[u8], max_len: usize) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // httparse accepts any token as method, so legacy `SOURCE` parses like `PUT`. Some
    // SHOUTcast-era clients end lines with a bare LF, which httparse also allows.
    match req.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => {
            if head_len > max_len {
                return Err(HeadError::TooLarge(max_len));
            }
            let method = req.method.ok_or(HeadError::Malformed("no method"))?;
            let target = req.path.ok_or(HeadError::Malformed("no target"))?;
            let headers = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).trim().to_string(),
                    )
                })
                .collect();
            Ok(Some(RequestHead {
                method: method.to_ascii_uppercase(),
                target: target.to_string(),
                minor_version: req.version.unwrap_or(0),
                headers,
                head_len,
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() > max_len => Err(HeadError::TooLarge(max_len)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::Malformed("too many headers")),
        Err(httparse::Error::Version) => Err(HeadError::Malformed("bad HTTP version")),
        Err(_) => Err(HeadError::Malformed("invalid request line or header")),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// Parses `Basic base64(user:password)`; anything else is `None`.
pub fn parse_basic_auth(value: &str) -> Option<Credentials> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(Credentials {
        user: user.to_string(),
        password: password.to_string(),
    })
}

/// Compares secrets in time independent of where they first differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Stream information a source announces with `ice-*` (or legacy `icy-*`) headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamInfoHeaders {
    pub name: Option<String>,
    pub description: Option<String>,
    pub genre: Option<String>,
    pub url: Option<String>,
    pub public: Option<bool>,
    pub bitrate: Option<String>,
    pub audio_info: Option<String>,
}

impl StreamInfoHeaders {
    pub fn from_head(head: &RequestHead) -> StreamInfoHeaders {
        let get = |k: &str| {
            head.header(&format!("ice-{k}"))
                .or_else(|| head.header(&format!("icy-{k}")))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        StreamInfoHeaders {
            name: get("name"),
            description: get("description"),
            genre: get("genre"),
            url: get("url"),
            public: get("public").map(|v| v == "1" || v.eq_ignore_ascii_case("yes")),
            bitrate: get("bitrate").or_else(|| get("br")),
            audio_info: get("audio-info"),
        }
    }
}

/// Looks up `key` in `ice-audio-info` style text (`bitrate=128;channels=2;samplerate=44100`).
pub fn audio_info_value<'a>(audio_info: &'a str, key: &str) -> Option<&'a str> {
    audio_info.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
    })
}

/// Splits the first line (password, or an `icy-*` header) off a SHOUTcast v1 source's
/// bytes: `Ok(None)` until a newline arrives; CR is stripped.
pub fn split_line(buf: &[u8], max: usize) -> Result<Option<(String, usize)>, HeadError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i <= max => {
            let line = buf[..i].strip_suffix(b"\r").unwrap_or(&buf[..i]);
            Ok(Some((String::from_utf8_lossy(line).into_owned(), i + 1)))
        }
        Some(_) => Err(HeadError::TooLarge(max)),
        None if buf.len() > max => Err(HeadError::TooLarge(max)),
        None => Ok(None),
    }
}

/// Parses the `key:value` header lines a SHOUTcast v1 source sends after its password,
/// up to the blank line. Returns the headers and the bytes they took, or `Ok(None)` while
/// incomplete.
pub fn parse_shoutcast_headers(
    buf: &[u8],
    max: usize,
) -> Result<Option<(Headers, usize)>, HeadError> {
    let mut headers = Vec::new();
    let mut used = 0;
    while let Some((line, n)) = split_line(&buf[used..], max.saturating_sub(used))? {
        used += n;
        if line.is_empty() {
            return Ok(Some((headers, used)));
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        if headers.len() > MAX_HEADERS {
            return Err(HeadError::Malformed("too many headers"));
        }
    }
    if buf.len() > max {
        return Err(HeadError::TooLarge(max));
    }
    Ok(None)
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkedError {
    #[error("invalid chunk size line")]
    BadSize,
    #[error("missing CRLF after chunk data")]
    BadTerminator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

/// Decodes a chunked transfer-coded body incrementally.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            line: Vec::new(),
        }
    }
}

impl ChunkedDecoder {
    /// True after the terminating zero-size chunk and trailer.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, appending payload bytes to `out`. Returns how many input bytes were
    /// consumed (all of them unless the body ended).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkedError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                ChunkState::Size | ChunkState::Trailer | ChunkState::DataEnd => {
                    let b = input[pos];
                    pos += 1;
                    if b != b'\n' {
                        if self.line.len() > 1024 {
                            return Err(ChunkedError::BadSize);
                        }
                        self.line.push(b);
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => return Err(ChunkedError::BadTerminator),
                        ChunkState::Trailer if line.is_empty() => ChunkState::Done,
                        ChunkState::Trailer => ChunkState::Trailer,
                        _ => match parse_chunk_size(line)? {
                            0 => ChunkState::Trailer,
                            n => ChunkState::Data(n),
                        },
                    };
                }
                ChunkState::Data(left) => {
                    let take = (input.len() - pos).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::Done => return Ok(pos),
            }
        }
        Ok(pos)
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, ChunkedError> {
    let text = std::str::from_utf8(line).map_err(|_| ChunkedError::BadSize)?;
    let hex = text.split(';').next().unwrap_or("").trim();
    if hex.is_empty() || hex.len() > 15 {
        return Err(ChunkedError::BadSize);
    }
    u64::from_str_radix(hex, 16).map_err(|_| ChunkedError::BadSize)
}

/// Decodes `application/x-www-form-urlencoded` query text into pairs, with `+` as space.
/// Invalid UTF-8 after percent-decoding is returned as raw bytes for the caller to
/// reinterpret (e.g. as Latin-1 when `charset=` says so).
pub fn parse_query(query: &str) -> Vec<(String, Vec<u8>)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                String::from_utf8_lossy(&percent_decode(k)).into_owned(),
                percent_decode(v),
            )
        })
        .collect()
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Decodes query-parameter bytes per the `charset=` the client declared: UTF-8 by default,
/// ISO-8859-1/Latin-1 (and its common aliases) converted code point by code point.
pub fn decode_text(raw: &[u8], charset: Option<&str>) -> String {
    let latin1 = charset.is_some_and(|c| {
        let c = c.trim().to_ascii_lowercase();
        matches!(
            c.as_str(),
            "iso-8859-1" | "iso8859-1" | "latin1" | "latin-1" | "l1" | "windows-1252" | "cp1252"
        )
    });
    if latin1 {
        raw.iter().map(|&b| char::from(b)).collect()
    } else {
        String::from_utf8_lossy(raw).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_legacy_source() {
        let raw = b"SOURCE /live HTTP/1.0\r\nAuthorization: Basic c291cmNlOmhhY2ttZQ==\r\nContent-Type: audio/mpeg\r\nice-name: My Radio\r\n\r\nAUDIO";
        let head = parse_request_head(raw, 8192).unwrap().unwrap();
        assert_eq!(head.method, "SOURCE");
        assert_eq!(head.path(), "/live");
        assert_eq!(head.minor_version, 0);
        assert_eq!(&raw[head.head_len..], b"AUDIO");
        let c = head.basic_auth().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("source", "hackme"));
        assert_eq!(
            StreamInfoHeaders::from_head(&head).name.as_deref(),
            Some("My Radio")
        );
    }

    #[test]
    fn partial_and_oversize() {
        assert_eq!(
            parse_request_head(b"GET / HTTP/1.1\r\nHost: x", 8192),
            Ok(None)
        );
        let big = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 9000]].concat();
        assert_eq!(
            parse_request_head(&big, 8192),
            Err(HeadError::TooLarge(8192))
        );
        assert!(matches!(
            parse_request_head(b"\x00\x01garbage\r\n\r\n", 8192),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn put_with_expect() {
        let raw = b"PUT /m.ogg?x=1 HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nIcy-MetaData:1\r\n\r\n";
        let head = parse_request_head(raw, 8192).unwrap().unwrap();
        assert!(head.expects_continue() && head.is_chunked() && head.wants_icy_metadata());
        assert_eq!(head.path(), "/m.ogg");
        assert_eq!(head.query(), Some("x=1"));
    }

    #[test]
    fn auth_variants() {
        assert_eq!(parse_basic_auth("Bearer abc"), None);
        assert_eq!(parse_basic_auth("Basic !!!"), None);
        let c = parse_basic_auth("basic YTpiOmM=").unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("a", "b:c"));
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
    }

    #[test]
    fn query_and_charsets() {
        let q = parse_query("mode=updinfo&song=Caf%E9+%27a%27%3B&mount=%2Flive&charset=ISO-8859-1");
        assert_eq!(q[0], ("mode".into(), b"updinfo".to_vec()));
        assert_eq!(decode_text(&q[1].1, Some("ISO-8859-1")), "Café 'a';");
        assert_eq!(decode_text("Café".as_bytes(), None), "Café");
        assert_eq!(
            audio_info_value("bitrate=128;channels=2", "channels"),
            Some("2")
        );
    }

    #[test]
    fn shoutcast_lines() {
        assert_eq!(
            split_line(b"secret\r\nicy", 256),
            Ok(Some(("secret".into(), 8)))
        );
        assert_eq!(split_line(b"secr", 256), Ok(None));
        assert!(split_line(&[b'a'; 300], 256).is_err());
        let raw = b"icy-name:My Radio\nicy-genre: Jazz \ncontent-type:audio/aacp\n\n\xff\xf1";
        let (h, used) = parse_shoutcast_headers(raw, 8192).unwrap().unwrap();
        assert_eq!(h[0], ("icy-name".into(), "My Radio".into()));
        assert_eq!(h[1].1, "Jazz");
        assert_eq!(&raw[used..], b"\xff\xf1");
        assert_eq!(parse_shoutcast_headers(b"icy-name:x\n", 8192), Ok(None));
    }

    #[test]
    fn chunked_body() {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let wire = b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let used = d.decode(wire, &mut out).unwrap();
        assert_eq!(out, b"abcdefg");
        assert!(d.is_done());
        assert_eq!(&wire[used..], b"NEXT");
        assert_eq!(
            ChunkedDecoder::default().decode(b"zz\r\n", &mut out),
            Err(ChunkedError::BadSize)
        );
    }

    proptest! {
        #[test]
        fn chunked_any_split(payload in prop::collection::vec(any::<u8>(), 0..3000), sizes in prop::collection::vec(1usize..500, 1..10), split in 1usize..64) {
            let mut wire = Vec::new();
            let mut rest = &payload[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            for piece in wire.chunks(split) {
                d.decode(piece, &mut out).unwrap();
            }
            prop_assert!(d.is_done());
            prop_assert_eq!(out, payload);
        }

        #[test]
        fn head_parser_total(data in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_request_head(&data, 512);
        }
    }
}
