//! Pages and playlists: `/` lists the live mounts with players; `/mount.m3u`, `.pls` and
//! `.xspf` point players at a mount's listen URL.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::{Html, IntoResponse, Response},
};
use onair_proto::playlist::{escape_xml, render_playlist, PlaylistKind};

use crate::station::Station;

use super::base_url;

pub async fn index(State(station): State<Arc<Station>>) -> Html<String> {
    let mut rows = String::new();
    for m in station.mounts.all() {
        if m.is_hidden() || !m.is_live() {
            continue;
        }
        let st = m.status();
        let name = escape_xml(&m.name);
        let title = escape_xml(st.title.as_deref().unwrap_or(""));
        rows.push_str(&format!(
            "<li><b>{name}</b> {title}<br><audio controls preload=\"none\" src=\"{name}\"></audio> <a href=\"{name}.m3u\">m3u</a> <a href=\"{name}.pls\">pls</a> <a href=\"{name}.xspf\">xspf</a></li>\n"
        ));
    }
    if rows.is_empty() {
        rows.push_str("<li>No live mounts yet.</li>");
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>onair</title></head><body><h1>onair</h1><ul>{rows}</ul><p><a href=\"/api/status\">/api/status</a> · <a href=\"/status-json.xsl\">/status-json.xsl</a></p></body></html>"
    ))
}

/// Playlists for any known mount; unknown admin commands are 400 (as Icecast answers them:
/// libshout probes `/admin/!POKE` and takes a 404 to mean "not an Icecast server");
/// everything else is 404.
pub async fn fallback(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if uri.path().starts_with("/admin/") {
        return (StatusCode::BAD_REQUEST, "Unrecognised command\n").into_response();
    }
    let playlist = PlaylistKind::split_path(uri.path())
        .and_then(|(mount, kind)| Some((station.mounts.get(mount)?, kind)))
        .filter(|(m, _)| !m.is_hidden());
    let Some((mount, kind)) = playlist else {
        return (
            StatusCode::NOT_FOUND,
            "The file you requested could not be found\n",
        )
            .into_response();
    };
    let url = format!("{}{}", base_url(&station, &headers), mount.name);
    let sent = mount.status().source.map(|s| s.headers).unwrap_or_default();
    let title = crate::mount::describe::labels(mount.conf().config.as_ref(), &sent)
        .name
        .unwrap_or_else(|| mount.name.clone());
    (
        [
            ("content-type", kind.content_type()),
            ("access-control-allow-origin", "*"),
        ],
        render_playlist(kind, &url, &title),
    )
        .into_response()
}
