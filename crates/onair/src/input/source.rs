//! Network sources: Icecast `PUT` (with `Expect: 100-continue`, raw or chunked body) and
//! legacy `SOURCE`. Authenticates, claims the mount, then cuts the body into whole
//! frames/pages and feeds them to the mount until the client leaves or goes silent for
//! `source_timeout`.

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use onair_proto::{
    frame::{Format, Framer, Unit, UnitKind},
    icecast::{secrets_equal, ChunkedDecoder, RequestHead, StreamInfoHeaders},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::Instant,
};

use crate::{
    config::{validate_mount_name, Config},
    conn::Conn,
    front::plain_response,
    input::recording::Recording,
    mount::{SourceClaim, SourceInfo},
    station::Station,
};

/// A source that sends this many bytes in a row that are not frames of its declared
/// format (or tags) is not sending that format.
const MAX_JUNK_RUN: u64 = 64 * 1024;

/// The realm libshout-based clients need to see before they send credentials.
pub const REALM: &str = "Icecast2 Server";

pub async fn run(
    mut stream: Conn,
    peer: SocketAddr,
    head: RequestHead,
    body: Bytes,
    station: Arc<Station>,
) {
    let mount_name = head.path().to_string();
    if let Err(e) = validate_mount_name(&mount_name) {
        tracing::info!(%peer, mount = %mount_name, "source refused: {e}");
        reply(&mut stream, 403, "Forbidden", "Invalid mountpoint\n").await;
        return;
    }
    if !source_authorized(&station.config(), &mount_name, &head) {
        tracing::info!(%peer, mount = %mount_name, "source refused: bad or missing credentials");
        let msg = "You need to authenticate\n";
        let resp = format!(
            "HTTP/1.0 401 Authorization Required\r\nServer: {}\r\nWWW-Authenticate: Basic realm=\"{REALM}\"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: Close\r\n\r\n{msg}",
            crate::SERVER_ID,
            msg.len()
        );
        let _ = stream.write_all(resp.as_bytes()).await;
        return;
    }
    let content_type = match head.header("content-type") {
        Some(ct) if !ct.is_empty() => ct.to_string(),
        _ => {
            tracing::warn!(%peer, mount = %mount_name, "source sent no Content-Type; assuming audio/mpeg");
            "audio/mpeg".to_string()
        }
    };
    if let Some((format, rate, channels)) = onair_media::pcm::parse_pcm_content_type(&content_type)
    {
        let layout = crate::input::pcm::PcmLayout {
            format,
            rate,
            channels,
        };
        return crate::input::pcm::run(stream, peer, head, body, station, layout).await;
    }
    let format = Format::from_content_type(&content_type).unwrap_or_else(|| {
        tracing::warn!(%peer, mount = %mount_name, %content_type, "unknown content type: relaying bytes unframed");
        Format::Opaque
    });
    let info = SourceInfo {
        content_type,
        format,
        headers: StreamInfoHeaders::from_head(&head),
        peer,
        user_agent: head.header("user-agent").unwrap_or("").to_string(),
        connected_at: SystemTime::now(),
    };
    let Some((mount, claim)) = claim_or_refuse(&station, &mut stream, &mount_name, info).await
    else {
        return;
    };
    let mut ok = Vec::new();
    if head.expects_continue() {
        ok.extend_from_slice(b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n");
    }
    ok.extend_from_slice(b"HTTP/1.0 200 OK\r\n\r\n");
    log_connected(peer, &mount_name, &head.method, format, &claim);
    let outcome = match stream.write_all(&ok).await {
        Ok(()) => {
            let chunked = head.is_chunked();
            pump(&mut stream, chunked, body, format, &station, &mount, &claim).await
        }
        Err(e) => Err(format!("cannot answer: {e}")),
    };
    finish(&station, &mount, claim.ticket, peer, outcome);
}

pub(crate) fn log_connected(
    peer: SocketAddr,
    mount: &str,
    method: &str,
    format: Format,
    claim: &SourceClaim,
) {
    if claim.took_over {
        tracing::info!(%peer, %mount, %method, ?format, "source connected: took over from a silent predecessor; listeners stay");
    } else {
        tracing::info!(%peer, %mount, %method, ?format, "source connected");
    }
}

/// Claims the mount for an authenticated source, or answers 403 (in use, too many sources)
/// and logs why. Counts the source connection.
pub(crate) async fn claim_or_refuse(
    station: &Station,
    stream: &mut Conn,
    mount_name: &str,
    info: SourceInfo,
) -> Option<(Arc<crate::mount::Mount>, SourceClaim)> {
    let peer = info.peer;
    match station.attach_source(mount_name, info) {
        Ok(ok) => {
            Station::count(&station.counters.source_connections);
            Some(ok)
        }
        Err(e) => {
            tracing::info!(%peer, mount = %mount_name, "source refused: {e}");
            reply(stream, 403, "Forbidden", &format!("{e}\n")).await;
            None
        }
    }
}

/// Ends a source's turn: detach (listeners drain and close), forget an on-the-fly mount,
/// log why it ended.
pub(crate) fn finish(
    station: &Station,
    mount: &Arc<crate::mount::Mount>,
    ticket: crate::mount::SourceTicket,
    peer: SocketAddr,
    outcome: Result<&'static str, String>,
) {
    let bytes = mount.status().bytes_in;
    mount.detach_source(ticket);
    station.mounts.release(mount);
    match outcome {
        Ok(why) => tracing::info!(%peer, mount = %mount.name, bytes, "source left: {why}"),
        Err(why) => tracing::warn!(%peer, mount = %mount.name, bytes, "source dropped: {why}"),
    }
}

/// Moves body bytes into the mount. `Ok` carries a normal end reason, `Err` an abnormal one.
/// Records the connection to the mount's `dump_file` if one is configured.
pub(crate) async fn pump(
    stream: &mut Conn,
    chunked: bool,
    first: Bytes,
    format: Format,
    station: &Station,
    mount: &crate::mount::Mount,
    claim: &SourceClaim,
) -> Result<&'static str, String> {
    let mut recording = None;
    if let Some(pattern) = mount
        .conf()
        .config
        .as_ref()
        .and_then(|c| c.dump_file.as_deref())
    {
        match Recording::create(pattern).await {
            Ok(r) => {
                tracing::info!(mount = %mount.name, file = %r.path().display(), "recording started");
                recording = Some(r);
            }
            Err(e) => {
                tracing::warn!(mount = %mount.name, %pattern, error = %e, "cannot start the recording; streaming without it")
            }
        }
    }
    let outcome = pump_body(
        stream,
        chunked,
        first,
        format,
        station,
        mount,
        claim,
        &mut recording,
    )
    .await;
    if let Some(r) = recording {
        let path = r.path().to_path_buf();
        match r.finish().await {
            Ok(bytes) => {
                tracing::info!(mount = %mount.name, file = %path.display(), bytes, "recording closed")
            }
            Err(e) => {
                tracing::warn!(mount = %mount.name, file = %path.display(), error = %e, "recording could not be completed")
            }
        }
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn pump_body(
    stream: &mut Conn,
    chunked: bool,
    first: Bytes,
    format: Format,
    station: &Station,
    mount: &crate::mount::Mount,
    claim: &SourceClaim,
    recording: &mut Option<Recording>,
) -> Result<&'static str, String> {
    let token = station.supervisor.token().clone();
    let ticket = claim.ticket;
    let source_timeout = station.config().limits.source_timeout;
    let flush_after = mount
        .conf()
        .settings
        .chunk
        .max(std::time::Duration::from_millis(50));
    let mut chunked = chunked.then(ChunkedDecoder::default);
    let mut framer = Framer::new(format);
    let mut raw = BytesMut::from(&first[..]);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut units = Vec::new();
    let mut last_data = Instant::now();
    let mut junk_run = 0u64;
    loop {
        // Decode what we have: chunked framing first, then frames.
        if let Some(dec) = chunked.as_mut() {
            let mut out = Vec::new();
            dec.decode(&raw, &mut out)
                .map_err(|e| format!("bad chunked body: {e}"))?;
            raw.clear();
            buf.extend_from_slice(&out);
        } else {
            buf.extend_from_slice(&raw);
            raw.clear();
        }
        units.clear();
        let mut used = 0;
        while let Some(unit) = framer.next_unit(&buf[used..]) {
            used += unit.len;
            junk_run = match unit.kind {
                UnitKind::Junk => junk_run + unit.len as u64,
                _ => 0,
            };
            units.push(unit);
        }
        if !units.is_empty() && !mount.ingest(ticket, &buf[..used], &units, framer.stream_info()) {
            return Ok("replaced by another source");
        }
        if let Some(rec) = recording.as_mut() {
            if let Err(e) = record(rec, &buf[..used], &units).await {
                tracing::warn!(mount = %mount.name, file = %rec.path().display(), error = %e, "recording stopped (write failed); streaming goes on");
                *recording = None;
            }
        }
        buf.advance(used);
        if junk_run > MAX_JUNK_RUN {
            return Err(format!(
                "no {format:?} frame in {junk_run} bytes: not the declared format"
            ));
        }
        if chunked.as_ref().is_some_and(|d| d.is_done()) {
            return Ok("end of chunked body");
        }
        let read = tokio::select! {
            _ = token.cancelled() => return Ok("server shutting down"),
            _ = claim.cancel.cancelled() => return Ok("killed or taken over"),
            r = tokio::time::timeout(flush_after, stream.read_buf(&mut raw)) => r,
        };
        match read {
            Ok(Ok(0)) => return Ok("connection closed"),
            Ok(Ok(_)) => last_data = Instant::now(),
            Ok(Err(e)) => return Err(format!("read error: {e}")),
            Err(_) => {
                // Quiet for a moment: let listeners have what we hold.
                mount.flush();
                if last_data.elapsed() >= source_timeout {
                    return Err(format!("no data for {:?} (source_timeout)", source_timeout));
                }
            }
        }
    }
}

/// Writes the stream units (not junk) of `data` to the recording.
async fn record(rec: &mut Recording, data: &[u8], units: &[Unit]) -> std::io::Result<()> {
    let mut pos = 0;
    for u in units {
        if u.kind != UnitKind::Junk {
            rec.write(&data[pos..pos + u.len]).await?;
        }
        pos += u.len;
    }
    Ok(())
}

/// Source credentials: the mount's own user/password if configured, else user `source`
/// with the global source password.
pub fn source_authorized(config: &Config, mount: &str, head: &RequestHead) -> bool {
    let Some(creds) = head.basic_auth() else {
        return false;
    };
    match config.mount(mount) {
        Some(m) => {
            let pass = m
                .password
                .as_deref()
                .unwrap_or(&config.auth.source_password);
            creds.user == m.username && secrets_equal(&creds.password, pass)
        }
        None => {
            creds.user == "source" && secrets_equal(&creds.password, &config.auth.source_password)
        }
    }
}

pub(crate) async fn reply(stream: &mut Conn, code: u16, reason: &str, body: &str) {
    let _ = stream
        .write_all(plain_response(code, reason, body).as_bytes())
        .await;
}
