//! Black-box tests of onair-media, with real third-party peers (ffmpeg/ffprobe) where the
//! output must be understood by other software. A missing peer fails the test.

mod encode;
mod g711;
