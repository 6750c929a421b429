//! Black-box tests of onair-media with real files made by ffmpeg, and real third-party peers
//! (ffmpeg/ffprobe) where the output must be understood by other software. ffmpeg is a
//! required peer: tests fail (never skip) without it.

mod decode;
mod encode;
mod fixture;
mod g711;
mod loudness;
mod spectrum;
