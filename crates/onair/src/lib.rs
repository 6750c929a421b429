//! onair: a single-binary internet radio server.
//!
//! Data flow: inputs ([`input`]: network sources) produce frame-aligned audio into a
//! [`mount::Mount`]; outputs ([`output`]: HTTP listeners, pushes to remote servers) consume
//! it. They meet only at the
//! mount. [`front`] accepts connections and routes them; [`web`] serves status, admin and
//! playlists; [`supervisor`] owns every task; [`station`] ties it together. A [`bridge`]
//! is the one path that skips the mount: a WHEP pull (`input::whep`) decoded to PCM and sent
//! to a WebSocket consumer (`output::ws_pcm`).

pub mod bridge;
pub mod client_tls;
pub mod config;
pub mod conn;
pub mod control;
pub mod front;
pub mod input;
pub mod mount;
pub mod output;
pub mod station;
pub mod supervisor;
pub mod tls;
pub mod web;

/// What the server calls itself in `Server:` headers and status pages.
pub const SERVER_ID: &str = concat!("onair/", env!("CARGO_PKG_VERSION"));
