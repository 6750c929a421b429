//! G.711 decoding matches ffmpeg's pcm_mulaw / pcm_alaw for every code.

use std::io::Write;
use std::process::{Command, Stdio};

use onair_media::g711::{decode_alaw, decode_ulaw};

/// ffmpeg's s16le decoding of `bytes` in the raw format `format` (mulaw / alaw).
fn ffmpeg_decode(format: &str, bytes: &[u8]) -> Vec<i16> {
    let mut child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            format,
            "-ar",
            "8000",
            "-ac",
            "1",
        ])
        .args(["-i", "pipe:0", "-f", "s16le", "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg must be installed (apt-get install -y ffmpeg)");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("ffmpeg runs");
    writer
        .join()
        .expect("writer thread")
        .expect("write to ffmpeg");
    assert!(out.status.success(), "ffmpeg failed");
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn check(format: &str, decode: fn(&[u8], &mut Vec<f32>)) {
    let codes: Vec<u8> = (0..=255).collect();
    let want = ffmpeg_decode(format, &codes);
    assert_eq!(want.len(), 256, "{format}: ffmpeg output length");
    let mut got = Vec::new();
    decode(&codes, &mut got);
    let got: Vec<i16> = got.iter().map(|v| (v * 32768.0) as i16).collect();
    assert_eq!(got, want, "{format}");
}

#[test]
fn ulaw_matches_ffmpeg() {
    check("mulaw", decode_ulaw);
}

#[test]
fn alaw_matches_ffmpeg() {
    check("alaw", decode_alaw);
}
