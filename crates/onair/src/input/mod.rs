//! Inputs: everything that produces audio into a mount.

pub mod shoutcast;
pub mod source;
