//! Black-box tests of onair-media, with real third-party peers (ffmpeg/ffprobe) where the
//! output must be understood by other software, and real files made by ffmpeg. A missing
//! peer fails the test (never skips).

mod decode;
mod encode;
mod fixture;
mod g711;
mod loudness;
mod spectrum;
mod synth;
