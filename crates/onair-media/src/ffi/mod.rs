//! The only place in this crate with `unsafe`: safe wrappers over the C-shaped codec APIs
//! (libopus as transpiled by `unsafe-libopus`, and the one LAME setter that
//! `mp3lame-encoder` does not wrap). Every wrapper owns its native state exclusively, checks
//! lengths before handing pointers over, and turns return codes into errors or plain
//! integer results for the safe modules above.

pub mod lame;
pub(crate) mod libopus;
pub mod opus;
