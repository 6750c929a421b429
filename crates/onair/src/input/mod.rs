//! Inputs: everything that produces audio into a mount.

pub mod source;
pub mod whep;
