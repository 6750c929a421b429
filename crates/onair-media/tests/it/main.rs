//! Integration tests for onair-media: real files made by ffmpeg, measured by ffmpeg where a
//! reference exists. ffmpeg is a required peer: tests fail (never skip) without it.

mod decode;
mod fixture;
mod loudness;
mod spectrum;
mod synth;
