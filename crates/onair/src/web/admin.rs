//! Icecast-compatible admin endpoints (XML answers, as Icecast 2.4 gives them): title
//! updates from source clients (libshout, ffmpeg scripts) or operators, and the operator
//! functions `stats`, `listmounts`, `listclients`, `killclient`, `killsource`,
//! `moveclients`, `fallbacks`. Everything but `metadata` needs the admin credentials; a
//! mount's source credentials may only set that mount's title.

use std::{fmt::Write, sync::Arc};

use axum::{
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use onair_proto::icecast::{
    decode_text, parse_basic_auth, parse_query, secrets_equal, Credentials,
};
use onair_proto::icy::StreamMeta;
use onair_proto::playlist::escape_xml;
use serde_json::Value;

use crate::{
    control::{self, ControlError},
    input::source::REALM,
    station::Station,
};

/// Query parameters of an admin request, decoded in the request's `charset=` (UTF-8 by
/// default, Latin-1 converted).
struct Params {
    raw: Vec<(String, Vec<u8>)>,
    charset: Option<String>,
}

impl Params {
    fn parse(q: Option<&str>) -> Params {
        let raw = parse_query(q.unwrap_or(""));
        let charset = raw
            .iter()
            .find(|(n, _)| n == "charset")
            .map(|(_, c)| String::from_utf8_lossy(c).into_owned());
        Params { raw, charset }
    }

    fn get(&self, key: &str) -> Option<String> {
        self.raw
            .iter()
            .find(|(n, _)| n == key)
            .map(|(_, v)| decode_text(v, self.charset.as_deref()))
    }
}

fn credentials(headers: &HeaderMap) -> Option<Credentials> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic_auth)
}

/// The 401 to answer with unless the request carries the admin credentials.
pub fn refuse_unless_admin(station: &Station, headers: &HeaderMap) -> Option<Response> {
    match credentials(headers) {
        Some(c) if is_admin(station, &c) => None,
        _ => {
            tracing::info!("admin request refused: bad or missing admin credentials");
            Some(unauthorized())
        }
    }
}

fn control_error(e: &ControlError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    xml(status, &e.to_string(), false)
}

fn xml_doc(body: String) -> Response {
    (
        StatusCode::OK,
        [("content-type", "text/xml; charset=utf-8")],
        format!("<?xml version=\"1.0\"?>\n{body}\n"),
    )
        .into_response()
}

fn xml(status: StatusCode, message: &str, ok: bool) -> Response {
    let body = format!(
        "<?xml version=\"1.0\"?>\n<iceresponse><message>{}</message><return>{}</return></iceresponse>\n",
        onair_proto::playlist::escape_xml(message),
        u8::from(ok)
    );
    (status, [("content-type", "text/xml; charset=utf-8")], body).into_response()
}

pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", format!("Basic realm=\"{REALM}\""))],
        "You need to authenticate\n",
    )
        .into_response()
}

pub fn is_admin(station: &Station, c: &Credentials) -> bool {
    let a = &station.config().auth;
    c.user == a.admin_user && secrets_equal(&c.password, &a.admin_password)
}

/// Admin credentials, or the source credentials of `mount` (per-mount or global).
pub fn may_set_title(station: &Station, mount: &str, c: &Credentials) -> bool {
    if is_admin(station, c) {
        return true;
    }
    let cfg = &station.config();
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
    let p = Params::parse(q.as_deref());
    let text = |k: &str| p.get(k);
    let mount = text("mount").unwrap_or_default();
    let Some(creds) = credentials(&headers).filter(|c| may_set_title(&station, &mount, c)) else {
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
    let meta = StreamMeta {
        title,
        url: text("url").filter(|u| !u.is_empty()),
    };
    tracing::debug!(%mount, user = %creds.user, "metadata update");
    match control::set_metadata(&station, &mount, meta) {
        Ok(()) => xml(StatusCode::OK, "Metadata update successful", true),
        Err(_) => xml(StatusCode::BAD_REQUEST, "Source does not exist", false),
    }
}

/// `/admin/stats`: the whole server and every mount, hidden ones included.
pub async fn stats(State(station): State<Arc<Station>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse_unless_admin(&station, &headers) {
        return r;
    }
    let base = super::base_url(&station, &headers);
    let mut out = String::from("<icestats>");
    if let Value::Object(global) = super::status::admin_stats(&station) {
        for (k, v) in global {
            push_element(&mut out, &k, &v);
        }
    }
    for m in station.mounts.all() {
        let _ = write!(out, "<source mount=\"{}\">", escape_xml(&m.name));
        if let Value::Object(fields) = super::status::admin_source(&m, &base) {
            for (k, v) in fields {
                push_element(&mut out, &k, &v);
            }
        }
        out.push_str("</source>");
    }
    out.push_str("</icestats>");
    xml_doc(out)
}

fn push_element(out: &mut String, name: &str, v: &Value) {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => escape_xml(s),
        other => escape_xml(&other.to_string()),
    };
    let _ = write!(out, "<{name}>{text}</{name}>");
}

/// `/admin/listmounts`: mounts with a source.
pub async fn listmounts(State(station): State<Arc<Station>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse_unless_admin(&station, &headers) {
        return r;
    }
    let mut out = String::from("<icestats>");
    for m in station.mounts.all().into_iter().filter(|m| m.is_live()) {
        let st = m.status();
        let _ = write!(
            out,
            "<source mount=\"{}\"><fallback>{}</fallback><listeners>{}</listeners><Connected>{}</Connected><content-type>{}</content-type></source>",
            escape_xml(&m.name),
            escape_xml(&m.fallback().unwrap_or_default()),
            m.stats.listeners.load(std::sync::atomic::Ordering::Relaxed),
            st.source_uptime.as_secs(),
            escape_xml(st.source.as_ref().map_or("", |s| s.content_type.as_str())),
        );
    }
    out.push_str("</icestats>");
    xml_doc(out)
}

/// `/admin/listclients?mount=`: id, IP, user agent and seconds connected of each listener.
pub async fn listclients(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if let Some(r) = refuse_unless_admin(&station, &headers) {
        return r;
    }
    let mount = Params::parse(q.as_deref()).get("mount").unwrap_or_default();
    let m = match control::mount(&station, &mount) {
        Ok(m) => m,
        Err(e) => return control_error(&e),
    };
    let clients = m.audience.list();
    let mut out = format!(
        "<icestats><source mount=\"{}\"><Listeners>{}</Listeners>",
        escape_xml(&m.name),
        clients.len()
    );
    for (id, c) in clients {
        let _ = write!(
            out,
            "<listener id=\"{id}\"><IP>{}</IP><UserAgent>{}</UserAgent><Connected>{}</Connected><ID>{id}</ID></listener>",
            c.peer.ip(),
            escape_xml(&c.user_agent),
            c.connected_at.elapsed().as_secs(),
        );
    }
    out.push_str("</source></icestats>");
    xml_doc(out)
}

/// Runs an admin-only operation on the request's parameters and answers with Icecast's
/// `<iceresponse>`.
fn admin_op(
    station: &Station,
    headers: &HeaderMap,
    q: Option<&str>,
    op: impl FnOnce(&Params) -> Result<String, ControlError>,
) -> Response {
    if let Some(r) = refuse_unless_admin(station, headers) {
        return r;
    }
    match op(&Params::parse(q)) {
        Ok(message) => xml(StatusCode::OK, &message, true),
        Err(e) => control_error(&e),
    }
}

/// `/admin/killclient?mount=&id=`.
pub async fn killclient(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    admin_op(&station, &headers, q.as_deref(), |p| {
        let id = p
            .get("id")
            .and_then(|i| i.trim().parse::<u64>().ok())
            .ok_or_else(|| ControlError::Invalid("Missing or invalid id".into()))?;
        control::kill_client(&station, &p.get("mount").unwrap_or_default(), id)?;
        Ok(format!("Client {id} removed"))
    })
}

/// `/admin/killsource?mount=`.
pub async fn killsource(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    admin_op(&station, &headers, q.as_deref(), |p| {
        control::kill_source(&station, &p.get("mount").unwrap_or_default())?;
        Ok("Source Removed".into())
    })
}

/// `/admin/moveclients?mount=&destination=`.
pub async fn moveclients(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    admin_op(&station, &headers, q.as_deref(), |p| {
        let from = p.get("mount").unwrap_or_default();
        let to = p.get("destination").unwrap_or_default();
        control::move_clients(&station, &from, &to)?;
        Ok(format!("Clients moved from {from} to {to}"))
    })
}

/// `/admin/fallbacks?mount=&fallback=` (an empty or missing `fallback` clears it).
pub async fn fallbacks(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    admin_op(&station, &headers, q.as_deref(), |p| {
        let mount = p.get("mount").unwrap_or_default();
        control::set_fallback(&station, &mount, p.get("fallback").as_deref())?;
        Ok("Fallback configured".into())
    })
}

/// SHOUTcast v1 title updates: `GET /admin.cgi?mode=updinfo&pass=...&song=...` (libshout's
/// ICY protocol, butt, Winamp DSP). The password is the SHOUTcast mount's source password
/// (or the admin password); `mount=` may name another mount.
pub async fn shoutcast_metadata(
    State(station): State<Arc<Station>>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = Params::parse(q.as_deref());
    let text = |k: &str| p.get(k);
    let mount = text("mount").unwrap_or_else(|| station.config().shoutcast.mount.clone());
    let pass = text("pass").unwrap_or_default();
    let admin = secrets_equal(&pass, &station.config().auth.admin_password);
    let source_ok = mount == station.config().shoutcast.mount
        && crate::input::shoutcast::password_ok(&station.config(), &pass);
    if !(admin || source_ok) {
        tracing::info!(%mount, "SHOUTcast metadata update refused: bad password");
        return (StatusCode::UNAUTHORIZED, "invalid password\n").into_response();
    }
    if text("mode").as_deref() != Some("updinfo") {
        return (StatusCode::BAD_REQUEST, "unknown mode\n").into_response();
    }
    let meta = StreamMeta {
        title: text("song").unwrap_or_default(),
        url: text("url").filter(|u| !u.is_empty()),
    };
    if control::set_metadata(&station, &mount, meta).is_err() {
        return (StatusCode::BAD_REQUEST, "no source on that mount\n").into_response();
    }
    (
        [("content-type", "text/html; charset=utf-8")],
        "<html><head><title>SHOUTcast Administrator</title></head><body>Update successful</body></html>\n",
    )
        .into_response()
}
