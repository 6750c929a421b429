//! The JSON operator API under `/api/` (docs/API.md): the same operations as the Icecast
//! XML admin, with REST paths and JSON bodies. A mount is named in the path without its
//! leading slash (`/api/mounts/live/...` is `/live`; a nested `/a/b` is `a%2Fb`). Admin
//! Basic auth everywhere, except that a mount's source credentials may set its title.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
    Json, Router,
};
use onair_proto::icy::StreamMeta;
use serde::Deserialize;
use serde_json::json;

use crate::{
    control::{self, ControlError},
    station::Station,
};

use super::{admin, base_url, status};

pub fn routes() -> Router<Arc<Station>> {
    Router::new()
        .route("/api/stats", get(stats))
        .route("/api/mounts", get(mounts))
        .route("/api/mounts/{mount}", get(one_mount))
        .route("/api/mounts/{mount}/listeners", get(listeners))
        .route("/api/mounts/{mount}/listeners/{id}", delete(kill_listener))
        .route("/api/mounts/{mount}/source", delete(kill_source))
        .route("/api/mounts/{mount}/move", post(move_listeners))
        .route("/api/mounts/{mount}/fallback", put(set_fallback))
        .route("/api/mounts/{mount}/metadata", put(set_metadata))
}

fn mount_name(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn control_error(e: &ControlError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    error(status, &e.to_string())
}

/// Runs an admin-only operation; `{"ok": true}` or the error.
fn admin_op(
    station: &Station,
    headers: &HeaderMap,
    op: impl FnOnce() -> Result<(), ControlError>,
) -> Response {
    if let Some(r) = admin::refuse_unless_admin(station, headers) {
        return r;
    }
    done(op())
}

fn done(result: Result<(), ControlError>) -> Response {
    match result {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => control_error(&e),
    }
}

async fn stats(State(station): State<Arc<Station>>, headers: HeaderMap) -> Response {
    if let Some(r) = admin::refuse_unless_admin(&station, &headers) {
        return r;
    }
    Json(status::admin_stats(&station)).into_response()
}

/// Every mount, hidden ones included (the public `/api/status` leaves those out).
async fn mounts(State(station): State<Arc<Station>>, headers: HeaderMap) -> Response {
    if let Some(r) = admin::refuse_unless_admin(&station, &headers) {
        return r;
    }
    let base = base_url(&station, &headers);
    let mounts: Vec<_> = station
        .mounts
        .all()
        .iter()
        .map(|m| mount_json(m, &base))
        .collect();
    Json(json!({ "mounts": mounts })).into_response()
}

fn mount_json(m: &crate::mount::Mount, base: &str) -> serde_json::Value {
    let mut v = status::api_mount(m, base);
    if let serde_json::Value::Object(o) = &mut v {
        o.insert("fallback".into(), m.fallback().into());
        o.insert("hidden".into(), m.is_hidden().into());
    }
    v
}

async fn one_mount(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(mount): Path<String>,
) -> Response {
    if let Some(r) = admin::refuse_unless_admin(&station, &headers) {
        return r;
    }
    match control::mount(&station, &mount_name(&mount)) {
        Ok(m) => Json(mount_json(&m, &base_url(&station, &headers))).into_response(),
        Err(e) => control_error(&e),
    }
}

async fn listeners(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(mount): Path<String>,
) -> Response {
    if let Some(r) = admin::refuse_unless_admin(&station, &headers) {
        return r;
    }
    let m = match control::mount(&station, &mount_name(&mount)) {
        Ok(m) => m,
        Err(e) => return control_error(&e),
    };
    let list: Vec<_> = m
        .audience
        .list()
        .into_iter()
        .map(|(id, c)| {
            json!({
                "id": id,
                "ip": c.peer.ip().to_string(),
                "port": c.peer.port(),
                "user_agent": c.user_agent,
                "connected_s": c.connected_at.elapsed().as_secs(),
            })
        })
        .collect();
    Json(json!({ "mount": m.name, "listeners": list })).into_response()
}

async fn kill_listener(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path((mount, id)): Path<(String, u64)>,
) -> Response {
    admin_op(&station, &headers, || {
        control::kill_client(&station, &mount_name(&mount), id)
    })
}

async fn kill_source(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(mount): Path<String>,
) -> Response {
    admin_op(&station, &headers, || {
        control::kill_source(&station, &mount_name(&mount))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    destination: String,
}

async fn move_listeners(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(mount): Path<String>,
    Json(body): Json<MoveBody>,
) -> Response {
    if let Some(r) = admin::refuse_unless_admin(&station, &headers) {
        return r;
    }
    match control::move_clients(&station, &mount_name(&mount), &body.destination) {
        Ok(n) => Json(json!({ "ok": true, "listeners": n })).into_response(),
        Err(e) => control_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FallbackBody {
    fallback: Option<String>,
}

async fn set_fallback(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(mount): Path<String>,
    Json(body): Json<FallbackBody>,
) -> Response {
    admin_op(&station, &headers, || {
        control::set_fallback(&station, &mount_name(&mount), body.fallback.as_deref())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataBody {
    title: String,
    url: Option<String>,
}

async fn set_metadata(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(mount): Path<String>,
    Json(body): Json<MetadataBody>,
) -> Response {
    let mount = mount_name(&mount);
    let creds = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(onair_proto::icecast::parse_basic_auth);
    if !creds.is_some_and(|c| admin::may_set_title(&station, &mount, &c)) {
        return admin::unauthorized();
    }
    done(control::set_metadata(
        &station,
        &mount,
        StreamMeta {
            title: body.title,
            url: body.url.filter(|u| !u.is_empty()),
        },
    ))
}
