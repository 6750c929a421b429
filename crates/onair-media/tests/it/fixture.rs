//! Test media made by the real ffmpeg into a per-test temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const FFMPEG: &str = "/usr/bin/ffmpeg";

/// A directory removed when dropped; unique per test so tests run in parallel.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "onair-media-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs ffmpeg with `args`; panics with its stderr when it fails or is missing.
pub fn ffmpeg(args: &[&str]) -> String {
    let out = Command::new(FFMPEG)
        .args(["-hide_banner", "-nostdin", "-y"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ffmpeg is required for these tests ({FFMPEG}): {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ffmpeg {args:?} failed:\n{stderr}");
    stderr
}

/// Encodes a sine tone of `freq` Hz, `secs` long, with the given output options.
pub fn tone(out: &Path, freq: u32, rate: u32, channels: u16, secs: f64, opts: &[&str]) {
    let src = format!("sine=frequency={freq}:sample_rate={rate}:duration={secs}");
    let ac = channels.to_string();
    let mut args = vec!["-f", "lavfi", "-i", &src, "-ac", &ac];
    args.extend_from_slice(opts);
    let out = out.to_str().expect("utf-8 temp path");
    args.push(out);
    ffmpeg(&args);
}

/// Writes interleaved f32 samples as a WAV (IEEE float) for ffmpeg to measure.
pub fn write_wav_f32(path: &Path, rate: u32, channels: u16, samples: &[f32]) {
    let data_len = u32::try_from(samples.len() * 4).expect("test WAV under 4 GiB");
    let mut b = Vec::with_capacity(44 + samples.len() * 4);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&3u16.to_le_bytes()); // IEEE float
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * u32::from(channels) * 4).to_le_bytes());
    b.extend_from_slice(&(channels * 4).to_le_bytes());
    b.extend_from_slice(&32u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, b).expect("write wav");
}

/// How many sample frames ffmpeg itself decodes from `path` (the reference for damaged files).
pub fn ffmpeg_decoded_frames(path: &Path, channels: u16) -> u64 {
    let out = Command::new(FFMPEG)
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "f32le", "-c:a", "pcm_f32le", "-"])
        .output()
        .unwrap_or_else(|e| panic!("ffmpeg is required for these tests ({FFMPEG}): {e}"));
    (out.stdout.len() / 4 / usize::from(channels)) as u64
}
