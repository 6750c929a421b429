//! Parsing of the server's response head: the status line (`HTTP/1.x NNN ...` or SHOUTcast's
//! `ICY NNN ...`) and the headers a listener cares about (`icy-metaint`, `Content-Type`).
//!
//! Pure: `&[u8]` in, values out; "need more bytes" is `Ok(None)`. The head ends at the first
//! empty line (`\r\n\r\n`, or a bare `\n\n` from sloppy servers).

use std::fmt;

/// The parts of a response head the load tool uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// `icy-metaint`, when the server interleaves metadata.
    pub metaint: Option<usize>,
    pub content_type: Option<String>,
}

/// Why a response head could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// The first line is not `HTTP/x.y NNN` or `ICY NNN`.
    StatusLine,
    /// A header line without a colon.
    HeaderLine,
    /// `icy-metaint` is not a positive integer.
    Metaint,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeadError::StatusLine => "bad status line",
            HeadError::HeaderLine => "bad header line",
            HeadError::Metaint => "bad icy-metaint",
        })
    }
}

impl std::error::Error for HeadError {}

/// Parses a response head at the start of `buf`. Returns the head and its length in bytes
/// (the body starts right after), or `Ok(None)` when the empty line has not arrived yet.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let Some((head_len, text_len)) = find_head_end(buf) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&buf[..text_len]);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status = parse_status_line(lines.next().unwrap_or(""))?;
    let mut head = ResponseHead {
        status,
        metaint: None,
        content_type: None,
    };
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(HeadError::HeaderLine)?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("icy-metaint") {
            match value.parse::<usize>() {
                Ok(n) if n > 0 => head.metaint = Some(n),
                _ => return Err(HeadError::Metaint),
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = Some(value.to_string());
        }
    }
    Ok(Some((head, head_len)))
}

/// Finds the empty line ending the head: (bytes including it, bytes before it).
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return Some((nl + 3, nl));
        }
        if rest.starts_with(b"\n") {
            return Some((nl + 2, nl));
        }
        i = nl + 1;
    }
    None
}

fn parse_status_line(line: &str) -> Result<u16, HeadError> {
    let mut parts = line.split_ascii_whitespace();
    let proto = parts.next().ok_or(HeadError::StatusLine)?;
    if !(proto.starts_with("HTTP/") || proto == "ICY") {
        return Err(HeadError::StatusLine);
    }
    let code = parts.next().ok_or(HeadError::StatusLine)?;
    if code.len() != 3 {
        return Err(HeadError::StatusLine);
    }
    code.parse::<u16>().map_err(|_| HeadError::StatusLine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icecast_head_with_body() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\nicy-name: x\r\n\
                    icy-metaint:16000\r\n\r\n\xff\xfbAUDIO";
        let (head, len) = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.metaint, Some(16000));
        assert_eq!(head.content_type.as_deref(), Some("audio/mpeg"));
        assert_eq!(&raw[len..], b"\xff\xfbAUDIO");
    }

    #[test]
    fn incomplete_head_needs_more() {
        assert_eq!(
            parse_response_head(b"HTTP/1.0 200 OK\r\nA: b\r\n"),
            Ok(None)
        );
        assert_eq!(parse_response_head(b""), Ok(None));
        assert_eq!(parse_response_head(b"HTTP/1.0 200 OK\r\n\r"), Ok(None));
    }

    #[test]
    fn every_split_gives_the_same_result() {
        let raw = b"HTTP/1.1 200 OK\r\nIcy-MetaInt: 8192\r\n\r\nbody";
        let full = parse_response_head(raw).unwrap().unwrap();
        for cut in 0..raw.len() {
            match parse_response_head(&raw[..cut]).unwrap() {
                None => assert!(cut < full.1),
                Some(h) => assert_eq!(h, full),
            }
        }
    }

    #[test]
    fn shoutcast_and_bare_newlines() {
        let raw = b"ICY 200 OK\nicy-metaint: 32768\n\nxx";
        let (head, len) = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.metaint, Some(32768));
        assert_eq!(&raw[len..], b"xx");
    }

    #[test]
    fn non_200_status() {
        let (head, _) = parse_response_head(b"HTTP/1.0 403 Forbidden\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.status, 403);
        assert_eq!(head.metaint, None);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            parse_response_head(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(HeadError::StatusLine)
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.0 2000 OK\r\n\r\n"),
            Err(HeadError::StatusLine)
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.0 200 OK\r\nnocolon\r\n\r\n"),
            Err(HeadError::HeaderLine)
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.0 200 OK\r\nicy-metaint: 0\r\n\r\n"),
            Err(HeadError::Metaint)
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.0 200 OK\r\nicy-metaint: -5\r\n\r\n"),
            Err(HeadError::Metaint)
        );
    }
}
