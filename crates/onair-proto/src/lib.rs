//! Pure protocol code for onair: bytes and instants in, values out. No sockets, no tokio,
//! no clock reads — everything here is deterministic and unit/property/fuzz tested.
//!
//! Place in the data flow: inputs use [`icecast`] to parse source requests and
//! [`frame`] to cut their bytes into frames/pages for a mount; outputs use [`icy`] to
//! interleave metadata for listeners and [`playlist`] to describe mounts; inputs that
//! play files (fallback files, AutoDJ) release frames on [`pace`]'s real-time deadlines; the
//! WHEP bridge puts received RTP through [`rtp`]'s jitter buffer before decoding; the push
//! output speaks the client side of the source protocols with [`push`].

pub mod frame;
pub mod icecast;
pub mod icy;
pub mod pace;
pub mod playlist;
pub mod push;
pub mod rtp;
pub mod stun;
