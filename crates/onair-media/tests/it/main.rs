//! Black-box tests of onair-media with real third-party peers: files made by ffmpeg, output
//! decoded or measured by ffmpeg/ffprobe where a reference exists. A missing peer fails the
//! test (never skips).

mod decode;
mod encode;
mod fixture;
mod g711;
mod loudness;
mod spectrum;
mod synth;
