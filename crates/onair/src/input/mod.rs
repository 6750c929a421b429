//! Inputs: everything that produces audio into a mount.

pub mod file;
pub mod recording;
pub mod shoutcast;
pub mod source;
pub mod whep;
