//! The listener's side of the HTTP exchange before any byte of audio: the target URL and
//! the hand-written `GET` request every simulated listener sends.
//!
//! Pure: strings in, values and bytes out. Only plain `http://` URLs are accepted — the tool
//! measures a server, not a TLS stack.

use std::fmt;

/// A parsed `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host as written (a name or an IP literal, IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, always starting with `/`.
    pub path: String,
}

/// Why a URL was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    NotHttp,
    EmptyHost,
    BadPort,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::NotHttp => "only http:// URLs are supported",
            UrlError::EmptyHost => "the URL has no host",
            UrlError::BadPort => "the URL's port is not a number in 1..=65535",
        })
    }
}

impl std::error::Error for UrlError {}

impl HttpUrl {
    /// The `Host:` header value: the host, plus the port when it is not 80.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Parses `http://host[:port][/path]`; the path defaults to `/`, the port to 80.
pub fn parse_http_url(url: &str) -> Result<HttpUrl, UrlError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("HTTP://"))
        .ok_or(UrlError::NotHttp)?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    // Credentials in the URL are not used by listeners; drop them.
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']').ok_or(UrlError::EmptyHost)?;
        let port = v6[close + 1..].strip_prefix(':');
        (&v6[..close], port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::EmptyHost);
    }
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(UrlError::BadPort),
        },
    };
    Ok(HttpUrl {
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// Encodes the listener request: `GET path HTTP/1.0` with Host, User-Agent and, when
/// `metadata` is set, `Icy-MetaData: 1`.
pub fn encode_request(url: &HttpUrl, user_agent: &str, metadata: bool) -> Vec<u8> {
    let mut req = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: {}\r\nAccept: */*\r\n",
        url.path,
        url.host_header(),
        user_agent
    );
    if metadata {
        req.push_str("Icy-MetaData: 1\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    req.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_path() {
        let u = parse_http_url("http://127.0.0.1:8000/live").unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 8000);
        assert_eq!(u.path, "/live");
        assert_eq!(u.host_header(), "127.0.0.1:8000");
    }

    #[test]
    fn defaults_port_and_path() {
        let u = parse_http_url("http://radio.example").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert_eq!(u.host_header(), "radio.example");
    }

    #[test]
    fn ipv6_and_credentials() {
        let u = parse_http_url("http://user:pw@[::1]:8000/a?b=c").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 8000);
        assert_eq!(u.path, "/a?b=c");
        assert_eq!(u.host_header(), "[::1]:8000");
    }

    #[test]
    fn rejects_bad_urls() {
        assert_eq!(parse_http_url("https://x/"), Err(UrlError::NotHttp));
        assert_eq!(parse_http_url("http://:80/"), Err(UrlError::EmptyHost));
        assert_eq!(parse_http_url("http://x:0/"), Err(UrlError::BadPort));
        assert_eq!(parse_http_url("http://x:99999/"), Err(UrlError::BadPort));
    }

    #[test]
    fn request_bytes() {
        let u = parse_http_url("http://127.0.0.1:8000/live").unwrap();
        let plain = String::from_utf8(encode_request(&u, "t/1", false)).unwrap();
        assert!(plain.starts_with("GET /live HTTP/1.0\r\nHost: 127.0.0.1:8000\r\n"));
        assert!(plain.contains("User-Agent: t/1\r\n"));
        assert!(!plain.contains("Icy-MetaData"));
        assert!(plain.ends_with("\r\n\r\n"));
        let icy = String::from_utf8(encode_request(&u, "t/1", true)).unwrap();
        assert!(icy.contains("Icy-MetaData: 1\r\n"));
    }
}
