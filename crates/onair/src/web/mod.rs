//! The web app: everything that is ordinary HTTP (status, admin, playlists, pages) is served
//! by axum on hyper, on connections the front has already read a head from.

mod admin;
mod api;
mod autodj;
mod pages;
mod status;

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use axum::{extract::Request, http::HeaderMap, routing::get, Router};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tower_service::Service;

use crate::station::Station;

/// The client's address, for handlers that log or limit by peer.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

pub fn router(station: Arc<Station>) -> Router {
    Router::new()
        .route("/", get(pages::index))
        .route("/status-json.xsl", get(status::icecast_json))
        .route("/api/status", get(status::api_status))
        .route("/admin/metadata", get(admin::metadata))
        .route("/admin/metadata.xsl", get(admin::metadata))
        .route("/admin/stats", get(admin::stats))
        .route("/admin/stats.xml", get(admin::stats))
        .route("/admin/listmounts", get(admin::listmounts))
        .route("/admin/listclients", get(admin::listclients))
        .route("/admin/killclient", get(admin::killclient))
        .route("/admin/killsource", get(admin::killsource))
        .route("/admin/moveclients", get(admin::moveclients))
        .route("/admin/fallbacks", get(admin::fallbacks))
        .route("/admin.cgi", get(admin::shoutcast_metadata))
        .merge(api::routes())
        .merge(autodj::routes())
        .fallback(pages::fallback)
        .with_state(station)
}

/// Serves HTTP/1 on `io` until the client is done or the server shuts down.
pub async fn serve_connection<I>(station: Arc<Station>, io: I, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let token = station.supervisor.token().clone();
    let app = router(station);
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        let mut app = app.clone();
        async move {
            Ok::<_, Infallible>(
                app.call(req.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|e| match e {}),
            )
        }
    });
    // No keep-alive: the front routes each connection once, by its first request, so a
    // browser that reused this connection to fetch a mount (an <audio> on a page served
    // here) would reach the web app and get a 404 instead of the stream.
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r {
            tracing::debug!(%peer, error = %e, "http connection ended with error");
        },
        _ = token.cancelled() => conn.as_mut().graceful_shutdown(),
    }
}

/// The public base URL of this server as the client sees it (Host, X-Forwarded-Proto).
pub fn base_url(station: &Station, headers: &HeaderMap) -> String {
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|v| v == "http" || v == "https")
        .unwrap_or_else(|| "http".into());
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() < 256
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{}:{}",
                station.config().hostname,
                station.local_addr.port()
            )
        });
    format!("{proto}://{host}")
}
