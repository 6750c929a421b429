//! Outputs: everything that consumes a mount's audio.

pub mod listener;
pub mod upload;
