//! Black-box tests: the server runs in-process on 127.0.0.1:0 and is spoken to with raw
//! bytes (wire) or real third-party clients (interop).

mod autodj;
mod browser;
mod encoding;
mod interop;
mod ops;
mod process;
mod support;
mod tls;
mod wire;
