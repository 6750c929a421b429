//! Inputs: everything that produces audio into a mount.

pub mod autodj;
pub mod demo;
pub mod encoder;
pub mod file;
pub mod pcm;
pub mod playout;
pub mod recording;
pub mod shoutcast;
pub mod source;
pub mod stdin;
pub mod transcode;
