//! Inputs: everything that produces audio into a mount.

pub mod autodj;
pub mod file;
pub mod playout;
pub mod recording;
pub mod shoutcast;
pub mod source;
