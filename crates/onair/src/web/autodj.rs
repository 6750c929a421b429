//! The AutoDJ's operator API under `/api/mounts/{mount}/` (docs/AUTODJ.md): skip, song
//! requests, history, upcoming tracks, rescans, and its state. Admin Basic auth, as for
//! the rest of `/api/`. The mount is named without its leading slash.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{input::autodj::AutoDj, station::Station};

use super::admin;

pub fn routes() -> Router<Arc<Station>> {
    Router::new()
        .route("/api/mounts/{mount}/autodj", get(state))
        .route("/api/mounts/{mount}/next", post(next))
        .route("/api/mounts/{mount}/queue", post(queue))
        .route("/api/mounts/{mount}/history", get(history))
        .route("/api/mounts/{mount}/upcoming", get(upcoming))
        .route("/api/mounts/{mount}/rescan", post(rescan))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The mount's AutoDJ, or the response refusing the request.
fn find(station: &Station, headers: &HeaderMap, mount: &str) -> Result<Arc<AutoDj>, Box<Response>> {
    if let Some(r) = admin::refuse_unless_admin(station, headers) {
        return Err(Box::new(r));
    }
    let name = format!("/{}", mount.trim_start_matches('/'));
    station
        .autodj
        .get(&name)
        .ok_or_else(|| Box::new(error(StatusCode::NOT_FOUND, "no AutoDJ on this mount")))
}

/// The AutoDJ part of a mount's status (also in `/api/status`).
pub fn autodj_json(dj: &AutoDj) -> Value {
    let p = &dj.library.progress;
    let order = std::sync::atomic::Ordering::Relaxed;
    let st = dj.playout_status();
    let now = st.now.as_ref().map(|n| {
        json!({
            "id": n.track.id,
            "title": n.track.title,
            "path": n.track.path,
            "started": n.started_at
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            "position_s": st.media_time.saturating_sub(n.started_media).as_secs_f64(),
        })
    });
    json!({
        "music_dir": dj.config.music_dir,
        "mode": if dj.config.passthrough { "passthrough" } else { "encode" },
        "codec": dj.config.codec,
        "bitrate_kbps": dj.config.bitrate,
        "tracks": dj.library.snapshot().len(),
        "scan": {
            "scanning": p.scanning.load(order),
            "files_seen": p.files_seen.load(order),
            "files_done": p.files_done.load(order),
            "skipped": p.skipped.load(order),
            "scans_done": p.scans_done.load(order),
        },
        "now_playing": now,
        "paused": st.paused,
        "media_time_s": st.media_time.as_secs_f64(),
        "tracks_played": st.tracks_played,
        "tracks_rejected": st.tracks_rejected,
    })
}

async fn state(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(mount): Path<String>,
) -> Response {
    match find(&station, &headers, &mount) {
        Ok(dj) => Json(autodj_json(&dj)).into_response(),
        Err(r) => *r,
    }
}

async fn next(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(mount): Path<String>,
) -> Response {
    match find(&station, &headers, &mount) {
        Ok(dj) => Json(json!({ "ok": dj.skip() })).into_response(),
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueBody {
    id: Option<u64>,
    /// Absolute, or relative to the music folder; must be a library track.
    path: Option<std::path::PathBuf>,
}

async fn queue(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(mount): Path<String>,
    Json(body): Json<QueueBody>,
) -> Response {
    let dj = match find(&station, &headers, &mount) {
        Ok(dj) => dj,
        Err(r) => return *r,
    };
    let track = match (body.id, &body.path) {
        (Some(id), None) => dj.library.get(id),
        (None, Some(p)) => dj.library.find_path(p),
        _ => return error(StatusCode::BAD_REQUEST, "give exactly one of id or path"),
    };
    let Some(track) = track else {
        return error(StatusCode::NOT_FOUND, "no such track in the library");
    };
    if !dj.request(&track) {
        return error(StatusCode::NOT_FOUND, "no such track in the library");
    }
    Json(json!({ "ok": true, "track": track })).into_response()
}

async fn history(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(mount): Path<String>,
) -> Response {
    match find(&station, &headers, &mount) {
        Ok(dj) => Json(json!({ "mount": dj.mount, "history": dj.history() })).into_response(),
        Err(r) => *r,
    }
}

async fn upcoming(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(mount): Path<String>,
) -> Response {
    match find(&station, &headers, &mount) {
        Ok(dj) => Json(json!({ "mount": dj.mount, "upcoming": dj.upcoming() })).into_response(),
        Err(r) => *r,
    }
}

async fn rescan(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(mount): Path<String>,
) -> Response {
    match find(&station, &headers, &mount) {
        Ok(dj) => {
            dj.rescan();
            Json(json!({ "ok": true })).into_response()
        }
        Err(r) => *r,
    }
}
