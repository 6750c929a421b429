//! WHEP signaling (draft-ietf-wish-whep): one HTTP exchange to open a session (POST the SDP
//! offer, get `201 Created` with the SDP answer and the session URL in `Location`) and one to
//! end it (DELETE that URL). `http://` or `https://` (TLS through [`ClientTls`], SNI and
//! certificate check against the URL's host), one HTTP/1.1 connection per request.
//!
//! Invariants: every request is bounded in time ([`REQUEST_TIMEOUT`]) and response size
//! ([`MAX_BODY`]); a failure says whether retrying may help and how long the server asked us
//! to wait (`Retry-After` on 409/503/429). A certificate the server presents and we do not
//! accept is a setup error (not retried), like a refused token.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{header, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use crate::client_tls::{ClientTls, ClientTlsError};

/// Longest a single signaling request may take, connect to last body byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest SDP answer accepted.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("WHEP URL {0:?} is not an http:// or https:// URL with a host")]
    Url(String),
    #[error("cannot reach the WHEP server: {0}")]
    Network(String),
    #[error("WHEP server: {0}")]
    Certificate(String),
    #[error("WHEP server answered {status}: {body}")]
    Status {
        status: StatusCode,
        body: String,
        /// From `Retry-After` (seconds form).
        retry_after: Option<Duration>,
    },
    #[error("WHEP answer is unusable: {0}")]
    Answer(String),
}

impl SignalError {
    /// Worth trying again later (the server may recover), as opposed to a setup mistake.
    pub fn is_transient(&self) -> bool {
        match self {
            SignalError::Url(_) | SignalError::Certificate(_) => false,
            SignalError::Network(_) | SignalError::Answer(_) => true,
            SignalError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::CONFLICT
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SignalError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A WHEP endpoint plus the credentials and TLS settings to use with it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: Uri,
    pub bearer: Option<String>,
    /// Used for `https://` URLs (the endpoint's and any session URL's).
    pub tls: ClientTls,
}

/// What a successful POST gives.
#[derive(Debug, Clone)]
pub struct Session {
    pub answer: String,
    /// Absolute session URL (from `Location`, resolved against the endpoint).
    pub resource: Uri,
}

impl Endpoint {
    pub fn parse(
        url: &str,
        bearer: Option<String>,
        tls: ClientTls,
    ) -> Result<Endpoint, SignalError> {
        let uri: Uri = url.parse().map_err(|_| SignalError::Url(url.into()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(SignalError::Url(url.into()));
        }
        Ok(Endpoint {
            url: uri,
            bearer,
            tls,
        })
    }

    /// `host:port` to connect to.
    pub fn authority(&self) -> String {
        authority_of(&self.url)
    }

    /// POST the offer; `201` with an SDP body and `Location` is the only success.
    pub async fn open(&self, offer: &str) -> Result<Session, SignalError> {
        let (status, headers, body) = self
            .request(
                Method::POST,
                &self.url,
                Some(("application/sdp", offer.to_owned())),
            )
            .await?;
        if status != StatusCode::CREATED {
            return Err(status_error(status, &headers, &body));
        }
        let location = headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| SignalError::Answer("201 without Location".into()))?;
        let resource = resolve(&self.url, location)
            .ok_or_else(|| SignalError::Answer(format!("bad Location {location:?}")))?;
        let answer = String::from_utf8(body.to_vec())
            .map_err(|_| SignalError::Answer("SDP answer is not UTF-8".into()))?;
        if !answer.starts_with("v=0") {
            return Err(SignalError::Answer("body is not an SDP answer".into()));
        }
        Ok(Session { answer, resource })
    }

    /// DELETE the session resource. Any 2xx (and 404: already gone) counts as done.
    pub async fn close(&self, resource: &Uri) -> Result<(), SignalError> {
        let (status, headers, body) = self.request(Method::DELETE, resource, None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(status_error(status, &headers, &body))
    }

    async fn request(
        &self,
        method: Method,
        url: &Uri,
        body: Option<(&str, String)>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), SignalError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.request_inner(method, url, body))
            .await
            .map_err(|_| SignalError::Network("request timed out".into()))?
    }

    async fn request_inner(
        &self,
        method: Method,
        url: &Uri,
        body: Option<(&str, String)>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), SignalError> {
        let net = |e: &dyn std::fmt::Display| SignalError::Network(e.to_string());
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(SignalError::Url(url.to_string())),
        };
        let host = url
            .host()
            .ok_or_else(|| SignalError::Url(url.to_string()))?;
        let stream = self
            .tls
            .connect(https, host, port_of(url))
            .await
            .map_err(|e| match e {
                e @ ClientTlsError::Certificate { .. } => SignalError::Certificate(e.to_string()),
                e => net(&e),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| net(&e))?;
        // The connection future ends with the request; nothing outlives this call.
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, url.authority().map_or("", |a| a.as_str()))
            .header(header::USER_AGENT, crate::SERVER_ID);
        if let Some(token) = &self.bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match body {
            Some((content_type, text)) => {
                req = req
                    .header(header::CONTENT_TYPE, content_type)
                    .header(header::ACCEPT, content_type);
                Bytes::from(text)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| SignalError::Url(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| net(&e))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| net(&e))?
            .to_bytes();
        conn.abort();
        Ok((parts.status, parts.headers, body))
    }
}

/// The URL's port, else the scheme's.
fn port_of(url: &Uri) -> u16 {
    let default = if url.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    url.port_u16().unwrap_or(default)
}

fn authority_of(url: &Uri) -> String {
    let host = url.host().unwrap_or("");
    let port = port_of(url);
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn status_error(status: StatusCode, headers: &hyper::HeaderMap, body: &[u8]) -> SignalError {
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    SignalError::Status {
        status,
        body: text,
        retry_after,
    }
}

/// Resolve a `Location` value against the endpoint URL: absolute URLs as they are,
/// `/path` against the endpoint's origin, anything else against the endpoint's directory.
pub fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let location = location.trim();
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    if location.starts_with("//") {
        return format!("{scheme}:{location}").parse().ok();
    }
    let path = if location.starts_with('/') {
        location.to_owned()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{location}")
    };
    format!("{scheme}://{authority}{path}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_resolves_like_a_browser() {
        let base: Uri = "http://media:8889/live/whep".parse().unwrap();
        let r = |l: &str| resolve(&base, l).unwrap().to_string();
        assert_eq!(r("/s/1"), "http://media:8889/s/1");
        assert_eq!(r("s/1"), "http://media:8889/live/s/1");
        assert_eq!(r("http://other/x"), "http://other/x");
        assert_eq!(r("//other:1/x"), "http://other:1/x");
    }

    #[test]
    fn https_locations_keep_https_and_the_port() {
        let base: Uri = "https://cdn.example/live/cam1/whep".parse().unwrap();
        let r = |l: &str| resolve(&base, l).unwrap().to_string();
        assert_eq!(r("/s/1"), "https://cdn.example/s/1");
        assert_eq!(r("s/1"), "https://cdn.example/live/cam1/s/1");
        assert_eq!(r("//edge:8443/s/1"), "https://edge:8443/s/1");
        assert_eq!(r("https://edge.example/s/2"), "https://edge.example/s/2");
        assert_eq!(port_of(&base), 443);
        assert_eq!(port_of(&"http://media/whep".parse().unwrap()), 80);
        assert_eq!(port_of(&"https://media:8443/whep".parse().unwrap()), 8443);
    }

    #[test]
    fn only_http_and_https_urls_with_a_host() {
        let tls = || ClientTls::new(None).unwrap();
        let ep = |u: &str| Endpoint::parse(u, None, tls());
        assert!(ep("http://127.0.0.1:1/whep").is_ok());
        let e = ep("https://cdn.example/whep").unwrap();
        assert_eq!(e.authority(), "cdn.example:443");
        assert!(ep("ftp://x/whep").is_err());
        assert!(ep("ws://x/whep").is_err());
        assert!(ep("/whep").is_err());
        assert!(ep("https:///whep").is_err());
    }

    #[test]
    fn an_untrusted_certificate_is_not_retried() {
        assert!(!SignalError::Certificate("x".into()).is_transient());
        assert!(SignalError::Network("x".into()).is_transient());
    }

    #[test]
    fn busy_and_conflict_are_transient_auth_is_not() {
        let e = |s: u16| SignalError::Status {
            status: StatusCode::from_u16(s).unwrap(),
            body: String::new(),
            retry_after: None,
        };
        assert!(e(503).is_transient());
        assert!(e(409).is_transient());
        assert!(!e(401).is_transient());
        assert!(!e(404).is_transient());
    }
}
