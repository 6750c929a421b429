//! Icecast-compatible admin endpoints. Here: `/admin/metadata?mode=updinfo` — title updates
//! from source clients (libshout, ffmpeg scripts) or operators.

use std::sync::Arc;

use axum::{
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use onair_proto::icecast::{
    decode_text, parse_basic_auth, parse_query, secrets_equal, Credentials,
};
use onair_proto::icy::StreamMeta;

use crate::{input::source::REALM, station::Station};

fn xml(status: StatusCode, message: &str, ok: bool) -> Response {
    let body = format!(
        "<?xml version=\"1.0\"?>\n<iceresponse><message>{}</message><return>{}</return></iceresponse>\n",
        onair_proto::playlist::escape_xml(message),
        u8::from(ok)
    );
    (status, [("content-type", "text/xml; charset=utf-8")], body).into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", format!("Basic realm=\"{REALM}\""))],
        "You need to authenticate\n",
    )
        .into_response()
}

fn is_admin(station: &Station, c: &Credentials) -> bool {
    let a = &station.config.auth;
    c.user == a.admin_user && secrets_equal(&c.password, &a.admin_password)
}

/// Admin credentials, or the source credentials of `mount` (per-mount or global).
fn may_manage_mount(station: &Station, mount: &str, c: &Credentials) -> bool {
    if is_admin(station, c) {
        return true;
    }
    let cfg = &station.config;
    match cfg.mount(mount) {
        Some(m) => {
            c.user == m.username
                && secrets_equal(
                    &c.password,
                    m.password.as_deref().unwrap_or(&cfg.auth.source_password),
                )
        }
        None => c.user == "source" && secrets_equal(&c.password, &cfg.auth.source_password),
    }
}

pub async fn metadata(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let params = parse_query(q.as_deref().unwrap_or(""));
    let raw = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_slice())
    };
    let charset = raw("charset").map(|c| String::from_utf8_lossy(c).into_owned());
    let text = |k: &str| raw(k).map(|v| decode_text(v, charset.as_deref()));
    let mount = text("mount").unwrap_or_default();
    let creds = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic_auth);
    let Some(creds) = creds.filter(|c| may_manage_mount(&station, &mount, c)) else {
        tracing::info!(%mount, "metadata update refused: bad or missing credentials");
        return unauthorized();
    };
    if text("mode").as_deref() != Some("updinfo") {
        return xml(
            StatusCode::BAD_REQUEST,
            "No such mode (use mode=updinfo)",
            false,
        );
    }
    let title = match (text("song"), text("artist"), text("title")) {
        (Some(song), _, _) => song,
        (None, Some(a), Some(t)) if !a.is_empty() && !t.is_empty() => format!("{a} - {t}"),
        (None, a, t) => a.or(t).unwrap_or_default(),
    };
    let Some(m) = station.mounts.get(&mount).filter(|m| m.is_live()) else {
        return xml(StatusCode::BAD_REQUEST, "Source does not exist", false);
    };
    tracing::info!(mount = %mount, user = %creds.user, %title, "metadata updated");
    m.set_metadata(StreamMeta {
        title,
        url: text("url").filter(|u| !u.is_empty()),
    });
    xml(StatusCode::OK, "Metadata update successful", true)
}

/// SHOUTcast v1 title updates: `GET /admin.cgi?mode=updinfo&pass=...&song=...` (libshout's
/// ICY protocol, butt, Winamp DSP). The password is the SHOUTcast mount's source password
/// (or the admin password); `mount=` may name another mount.
pub async fn shoutcast_metadata(
    State(station): State<Arc<Station>>,
    RawQuery(q): RawQuery,
) -> Response {
    let params = parse_query(q.as_deref().unwrap_or(""));
    let raw = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_slice())
    };
    let charset = raw("charset").map(|c| String::from_utf8_lossy(c).into_owned());
    let text = |k: &str| raw(k).map(|v| decode_text(v, charset.as_deref()));
    let mount = text("mount").unwrap_or_else(|| station.config.shoutcast.mount.clone());
    let pass = text("pass").unwrap_or_default();
    let admin = secrets_equal(&pass, &station.config.auth.admin_password);
    let source_ok = mount == station.config.shoutcast.mount
        && crate::input::shoutcast::password_ok(&station.config, &pass);
    if !(admin || source_ok) {
        tracing::info!(%mount, "SHOUTcast metadata update refused: bad password");
        return (StatusCode::UNAUTHORIZED, "invalid password\n").into_response();
    }
    if text("mode").as_deref() != Some("updinfo") {
        return (StatusCode::BAD_REQUEST, "unknown mode\n").into_response();
    }
    let Some(m) = station.mounts.get(&mount).filter(|m| m.is_live()) else {
        return (StatusCode::BAD_REQUEST, "no source on that mount\n").into_response();
    };
    let title = text("song").unwrap_or_default();
    tracing::info!(%mount, %title, "metadata updated (SHOUTcast)");
    m.set_metadata(StreamMeta {
        title,
        url: text("url").filter(|u| !u.is_empty()),
    });
    (
        [("content-type", "text/html; charset=utf-8")],
        "<html><head><title>SHOUTcast Administrator</title></head><body>Update successful</body></html>\n",
    )
        .into_response()
}
