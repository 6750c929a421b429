//! onair-media: the sync, CPU-bound half of onair. Decoders turn files and packets into
//! [`pcm::Pcm`]; resamplers and the loudness stage reshape it; encoders turn it back into
//! frame/page-aligned bitstreams that the server's mounts fan out.
//!
//! Place in the data flow: inputs (AutoDJ, raw PCM sources, transcoders, WHEP) call into
//! this crate from dedicated threads or `spawn_blocking`; nothing here depends on tokio or
//! does I/O other than reading the files it is asked to decode. All `unsafe` (the codec
//! bindings) is in the private `ffi` module.

// `unsafe` lives in `ffi` alone, behind safe wrappers.
#![deny(unsafe_code)]

pub mod decode;
pub mod encode;
#[allow(unsafe_code)]
mod ffi;
pub mod g711;
pub mod loudness;
pub mod opus;
pub mod pcm;
pub mod resample;
pub mod synth;
