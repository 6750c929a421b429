//! The only place in this crate with `unsafe`: thin, safe wrappers over native-style APIs.
//! Each wrapper owns its handle, checks every buffer length before passing a pointer, and
//! exposes plain integer results for the safe modules above to turn into errors.

pub(crate) mod libopus;
