//! `/api/bridges`: start, list, inspect and stop WHEP → WebSocket bridges at run time
//! (admin Basic auth). JSON in and out; see docs/BRIDGE.md.

use std::sync::Arc;

use super::admin::refuse_unless_admin;
use crate::{
    bridge::{BridgeSpec, RegistryError},
    station::Station,
};
use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

fn text(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

pub async fn create(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    body: Result<Json<BridgeSpec>, JsonRejection>,
) -> Response {
    if let Some(refusal) = refuse_unless_admin(&station, &headers) {
        return refusal;
    }
    let Json(spec) = match body {
        Ok(b) => b,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    match station.bridges.start(spec, &station) {
        Ok(info) => {
            tracing::info!(id = %info.id, "bridge started via the API");
            (StatusCode::CREATED, Json(info)).into_response()
        }
        Err(e @ RegistryError::Invalid(_)) => text(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e @ RegistryError::Full) => text(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(e @ (RegistryError::Duplicate(_) | RegistryError::Mount { .. })) => {
            tracing::info!(error = %e, "bridge refused");
            text(StatusCode::CONFLICT, &e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start a bridge");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot start the bridge")
        }
    }
}

pub async fn list(State(station): State<Arc<Station>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refuse_unless_admin(&station, &headers) {
        return refusal;
    }
    Json(station.bridges.list()).into_response()
}

pub async fn get(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refusal) = refuse_unless_admin(&station, &headers) {
        return refusal;
    }
    match station.bridges.get(&id) {
        Some(info) => Json(info).into_response(),
        None => text(StatusCode::NOT_FOUND, "no such bridge"),
    }
}

/// Stops the bridge (its WHEP session is DELETEd, queued audio sent) and returns its final
/// stats.
pub async fn delete(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refusal) = refuse_unless_admin(&station, &headers) {
        return refusal;
    }
    match station.bridges.stop(&id).await {
        Some(info) => Json(info).into_response(),
        None => text(StatusCode::NOT_FOUND, "no such bridge"),
    }
}
