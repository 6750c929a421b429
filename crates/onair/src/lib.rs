//! onair: a single-binary internet radio server.
//!
//! Data flow: inputs ([`input`]: network sources) produce frame-aligned audio into a
//! [`mount::Mount`]; outputs ([`output`]: HTTP listeners) consume it. They meet only at the
//! mount. [`front`] accepts connections and routes them; [`web`] serves status, admin and
//! playlists; [`supervisor`] owns every task; [`station`] ties it together.

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
