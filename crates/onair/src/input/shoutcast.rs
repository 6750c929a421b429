//! SHOUTcast v1 sources on their own port (by convention the main port + 1): a password
//! line, `OK2` (or `invalid password`), `icy-*` header lines up to a blank line, then raw
//! audio into the configured mount. Titles arrive separately, as `GET /admin.cgi` on the
//! main port (see `web::admin`).

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use bytes::{Buf, BytesMut};
use onair_proto::{
    frame::Format,
    icecast::{
        parse_shoutcast_headers, secrets_equal, split_line, HeadError, Headers, RequestHead,
        StreamInfoHeaders,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{config::Config, mount::SourceInfo, station::Station};

/// The password line is short; anything longer is not a SHOUTcast source.
const MAX_PASSWORD_LINE: usize = 256;

pub async fn run(listener: TcpListener, station: Arc<Station>) -> std::io::Result<()> {
    let token = station.supervisor.token().clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = token.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "shoutcast accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(permit) = station
            .client_slots
            .try_acquire(station.config().limits.max_clients)
        else {
            tracing::warn!(%peer, "max_clients reached, refusing SHOUTcast source");
            continue;
        };
        let st = station.clone();
        station.supervisor.spawn_connection(async move {
            handle(stream, peer, st).await;
            drop(permit);
        });
    }
}

/// Whether `password` is the source password of the SHOUTcast mount.
pub fn password_ok(config: &Config, password: &str) -> bool {
    let mount = &config.shoutcast.mount;
    let expected = config
        .mount(mount)
        .and_then(|m| m.password.as_deref())
        .unwrap_or(&config.auth.source_password);
    secrets_equal(password, expected)
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, station: Arc<Station>) {
    let limits = &station.config().limits;
    let mount_name = station.config().shoutcast.mount.clone();
    let login = tokio::time::timeout(
        limits.header_timeout,
        login(&mut stream, &station, limits.max_head_bytes),
    )
    .await;
    let (headers, rest) = match login {
        Ok(Ok(Some(ok))) => ok,
        Ok(Ok(None)) => {
            tracing::info!(%peer, mount = %mount_name, "SHOUTcast source refused: invalid password");
            return;
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "SHOUTcast source: bad login");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "SHOUTcast source: login timed out");
            return;
        }
    };
    let head = RequestHead {
        method: "SOURCE".into(),
        target: mount_name.clone(),
        minor_version: 0,
        headers,
        head_len: 0,
    };
    let content_type = head
        .header("content-type")
        .unwrap_or("audio/mpeg")
        .to_string();
    let format = Format::from_content_type(&content_type).unwrap_or(Format::Mpeg);
    let info = SourceInfo {
        content_type,
        format,
        headers: StreamInfoHeaders::from_head(&head),
        peer,
        user_agent: "SHOUTcast v1 source".into(),
        connected_at: SystemTime::now(),
    };
    let (mount, claim) = match station.attach_source(&mount_name, info) {
        Ok(ok) => ok,
        Err(e) => {
            tracing::info!(%peer, mount = %mount_name, "SHOUTcast source refused: {e}");
            return;
        }
    };
    super::source::log_connected(peer, &mount_name, "SHOUTcast", format, &claim);
    let mut conn = crate::conn::Conn::Plain(stream);
    let outcome = super::source::pump(
        &mut conn,
        false,
        rest.freeze(),
        format,
        &station,
        &mount,
        &claim,
    )
    .await;
    super::source::finish(&station, &mount, claim.ticket, peer, outcome);
}

/// Reads the password line and answers it; on success reads the header lines. Returns the
/// headers and the audio bytes already read, or `None` for a wrong password.
async fn login(
    stream: &mut TcpStream,
    station: &Station,
    max_head: usize,
) -> Result<Option<(Headers, BytesMut)>, HeadError> {
    let mut buf = BytesMut::with_capacity(1024);
    let password = loop {
        if let Some((line, used)) = split_line(&buf, MAX_PASSWORD_LINE)? {
            buf.advance(used);
            break line;
        }
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(|_| HeadError::Malformed("read error"))?
            == 0
        {
            return Err(HeadError::Malformed("closed before the password"));
        }
    };
    if !password_ok(&station.config(), &password) {
        let _ = stream.write_all(b"invalid password\r\n").await;
        return Ok(None);
    }
    stream
        .write_all(b"OK2\r\nicy-caps:11\r\n\r\n")
        .await
        .map_err(|_| HeadError::Malformed("write error"))?;
    loop {
        if let Some((headers, used)) = parse_shoutcast_headers(&buf, max_head)? {
            buf.advance(used);
            return Ok(Some((headers, buf)));
        }
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(|_| HeadError::Malformed("read error"))?
            == 0
        {
            return Err(HeadError::Malformed("closed inside the headers"));
        }
    }
}
