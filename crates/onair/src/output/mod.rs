//! Outputs: everything that consumes a mount's audio.

pub mod listener;
pub mod playlist_push;
pub mod push;
pub mod ws_pcm;
