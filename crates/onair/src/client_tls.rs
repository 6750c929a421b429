//! Outgoing connections, plain or TLS: the trust a client places in servers (the WHEP
//! endpoint over `https://`, the WebSocket consumer over `wss://`) and the one way both open
//! a connection. rustls with the ring provider, as on the server side (crate::tls).
//!
//! Invariants:
//! - Certificates are always verified: the roots are the Mozilla bundle compiled in
//!   (`webpki-roots`, so the same on every machine) plus the certificates of an optional CA
//!   file. There is no way to turn verification off.
//! - A CA file that is missing, unreadable or holds no usable certificate is an error when
//!   the [`ClientTls`] is made (at start), never later.
//! - One [`ClientTls`] is made per bridge and shared by all its connections; TLS offers ALPN
//!   `http/1.1` (WHEP is HTTP/1.1, and so is the WebSocket handshake).

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, ServerName},
    ClientConfig, RootCertStore,
};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};
use tokio_util::either::Either;

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("TLS client setup: {0}")]
    Config(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("{0:?} is not a valid TLS server name")]
    Name(String),
    /// The server's certificate chain did not verify (untrusted issuer, wrong name, expired…).
    #[error(
        "TLS with {host}: certificate not accepted: {reason} (a private CA needs --ca / ca_file)"
    )]
    Certificate { host: String, reason: String },
    #[error("TLS with {host}: {source}")]
    Handshake { host: String, source: io::Error },
}

impl ClientTlsError {
    /// The server presented a certificate we do not accept: a setup matter, not a network one.
    pub fn is_certificate(&self) -> bool {
        matches!(self, ClientTlsError::Certificate { .. })
    }
}

/// A connection as [`ClientTls::connect`] opens it.
pub type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// The TLS client settings of one bridge: cheap to clone (shared config).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    extra_roots: usize,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("extra_roots", &self.extra_roots)
            .finish()
    }
}

impl ClientTls {
    /// The Mozilla roots, plus every certificate of `ca_file` (PEM) when given.
    pub fn new(ca_file: Option<&Path>) -> Result<ClientTls, ClientTlsError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let extra = match ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        let extra_roots = extra.len();
        for (i, cert) in extra.into_iter().enumerate() {
            roots.add(cert).map_err(|e| ClientTlsError::CaFile {
                path: ca_file.map(Path::to_path_buf).unwrap_or_default(),
                message: format!("certificate {} is not usable as a root: {e}", i + 1),
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientTlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            extra_roots,
        })
    }

    /// How many roots the CA file added.
    pub fn extra_roots(&self) -> usize {
        self.extra_roots
    }

    /// TCP to `host:port`, then TLS (SNI and certificate check against `host`) if `tls`.
    /// `host` is a name or an IP address, IPv6 with or without brackets.
    pub async fn connect(
        &self,
        tls: bool,
        host: &str,
        port: u16,
    ) -> Result<Stream, ClientTlsError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp =
            TcpStream::connect((host, port))
                .await
                .map_err(|source| ClientTlsError::Connect {
                    addr: format!("{host}:{port}"),
                    source,
                })?;
        // Signaling and JSON messages are small writes that want to leave at once.
        let _ = tcp.set_nodelay(true);
        if !tls {
            return Ok(Either::Left(tcp));
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| ClientTlsError::Name(host.to_owned()))?;
        match TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
        {
            Ok(stream) => Ok(Either::Right(stream)),
            Err(source) => Err(handshake_error(host, source)),
        }
    }
}

/// tokio-rustls hands rustls' own error back inside the io::Error: certificate problems are
/// told apart from the network failing.
fn handshake_error(host: &str, source: io::Error) -> ClientTlsError {
    match source
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(reason)) => ClientTlsError::Certificate {
            host: host.to_owned(),
            reason: format!("{reason:?}"),
        },
        _ => ClientTlsError::Handshake {
            host: host.to_owned(),
            source,
        },
    }
}

/// Every certificate of a PEM file; at least one.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientTlsError> {
    let err = |message: String| ClientTlsError::CaFile {
        path: path.to_path_buf(),
        message,
    };
    // Read first so a missing file says so plainly rather than as a PEM error.
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(
            "no PEM certificate (BEGIN CERTIFICATE) in the file".into()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two self-signed P-256 certificates (CN=a.test, CN=b.test), made once with openssl.
    const TWO_CERTS: &str = include_str!("../tests/data/two_roots.pem");

    fn temp(name: &str, contents: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("onair-client-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn every_certificate_of_the_ca_file_is_added() {
        let path = temp("two.pem", TWO_CERTS);
        let tls = ClientTls::new(Some(&path)).unwrap();
        assert_eq!(tls.extra_roots(), 2);
        assert_eq!(ClientTls::new(None).unwrap().extra_roots(), 0);
        let roots = ClientTls::new(None).unwrap().config.alpn_protocols.clone();
        assert_eq!(roots, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_missing_or_garbage_ca_file_is_refused_with_its_path() {
        let missing = std::env::temp_dir().join("onair-no-such-ca.pem");
        let e = ClientTls::new(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("onair-no-such-ca.pem"), "{e}");

        let garbage = temp("garbage.pem", "this is not a certificate\n");
        let e = ClientTls::new(Some(&garbage)).unwrap_err().to_string();
        assert!(
            e.contains("garbage.pem") && e.contains("no PEM certificate"),
            "{e}"
        );

        // A key alone is not a root either.
        let key = temp(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n",
        );
        assert!(ClientTls::new(Some(&key)).is_err());

        // Broken base64 inside a certificate block.
        let broken = temp(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let e = ClientTls::new(Some(&broken)).unwrap_err().to_string();
        assert!(e.contains("broken.pem"), "{e}");

        // Well-formed PEM whose content is not a certificate.
        let junk = temp(
            "junk.pem",
            "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
        );
        let e = ClientTls::new(Some(&junk)).unwrap_err().to_string();
        assert!(e.contains("junk.pem") && e.contains("not usable"), "{e}");
    }
}
