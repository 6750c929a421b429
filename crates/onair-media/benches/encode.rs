//! Encoder throughput, measured side by side with ffmpeg on the same input:
//! `cargo bench -p onair-media --bench encode`.
//!
//! MP3: 60 s of 44.1 kHz stereo (a chord with harmonics, a moving melody, noise) at
//! 128 kbit/s CBR through onair's encoder on one thread, then through
//! `ffmpeg -c:a libmp3lame -b:a 128k` (same LAME version family, its default quality, as
//! onair uses) reading the same samples from a raw file. Opus: the same signal at 48 kHz,
//! 128 kbit/s, against `ffmpeg -c:a libopus`. Each side runs three times; the best wall
//! time and its CPU time are reported, with x-real-time and the ratio. ffmpeg's figures
//! include its start-up and reading the raw file, so a `-c:a copy -f null` run of the same
//! input is measured too and the encode-only ratio is given against the difference.

use std::process::Command;
use std::time::{Duration, Instant};

use onair_media::encode::{new_encoder, Codec, EncoderSettings};

const SECS: u32 = 60;
const RUNS: usize = 3;
/// Frames handed to the encoder per call, as a live input would (~23 ms at 44.1 kHz).
const BLOCK: usize = 1024;
const FFMPEG: &str = "/usr/bin/ffmpeg";

/// A musical-ish stereo signal: an A minor chord with a few harmonics each, a melody that
/// moves every quarter second, a slow tremolo, and white noise at -40 dB.
fn signal(rate: u32) -> Vec<f32> {
    let n = (rate * SECS) as usize;
    let chord = [220.0, 261.63, 329.63];
    let melody = [
        440.0, 493.88, 523.25, 587.33, 659.25, 587.33, 523.25, 493.88,
    ];
    let mut noise = 0x2545_F491_4F6C_DD1Du64;
    let mut out = Vec::with_capacity(n * 2);
    let tau = 2.0 * std::f64::consts::PI;
    for i in 0..n {
        let t = i as f64 / f64::from(rate);
        let mut s = 0.0;
        for (k, f) in chord.iter().enumerate() {
            for h in 1..=4 {
                s += (0.08 / f64::from(h)) * (tau * f * f64::from(h) * t + k as f64).sin();
            }
        }
        let note = melody[(t * 4.0) as usize % melody.len()];
        let tremolo = 0.75 + 0.25 * (tau * 0.5 * t).sin();
        let lead = 0.15 * tremolo * (tau * note * t).sin();
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        let white = (noise >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        out.push((s + lead + 0.01 * white) as f32);
        out.push((s - 0.5 * lead + 0.01 * white * 0.9) as f32);
    }
    out
}

/// CPU time this thread has used (from the scheduler, in nanoseconds).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

struct Timing {
    wall: Duration,
    user: Duration,
    bytes: usize,
}

fn run_onair(codec: Codec, rate: u32, pcm: &[f32]) -> Timing {
    let mut best: Option<Timing> = None;
    for _ in 0..RUNS {
        let mut enc = new_encoder(&EncoderSettings {
            codec,
            bitrate_kbps: 128,
            vbr: false,
            rate,
            channels: 2,
        })
        .expect("encoder");
        let mut out = Vec::with_capacity(2 << 20);
        let cpu0 = thread_cpu();
        let t0 = Instant::now();
        for block in pcm.chunks(BLOCK * 2) {
            enc.encode(block, &mut out).expect("encode");
        }
        enc.finish(&mut out).expect("finish");
        let t = Timing {
            wall: t0.elapsed(),
            user: thread_cpu() - cpu0,
            bytes: out.len(),
        };
        if best.as_ref().is_none_or(|b| t.wall < b.wall) {
            best = Some(t);
        }
    }
    best.expect("runs")
}

/// Runs ffmpeg on the raw input under `sh`, which then reports its waited-for children's
/// user + system time from /proc (clock ticks, 100 per second).
fn run_ffmpeg(raw: &std::path::Path, rate: u32, codec_args: &str, format: &str) -> Timing {
    let mut best: Option<Timing> = None;
    for _ in 0..RUNS {
        let script = format!(
            "{FFMPEG} -nostdin -v error -f f32le -ar {rate} -ac 2 -i {} {codec_args} -f {format} -y /dev/null && cat /proc/$$/stat",
            raw.display()
        );
        let t0 = Instant::now();
        let out = Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("sh + ffmpeg");
        let wall = t0.elapsed();
        assert!(
            out.status.success(),
            "ffmpeg failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stat = String::from_utf8_lossy(&out.stdout);
        // Fields after the ")" that ends the command name: cutime is field 16, cstime 17.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let ticks = f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0);
        let t = Timing {
            wall,
            user: Duration::from_millis(ticks * 10),
            bytes: 0,
        };
        if best.as_ref().is_none_or(|b| t.wall < b.wall) {
            best = Some(t);
        }
    }
    best.expect("runs")
}

fn report(name: &str, t: &Timing) {
    let media = f64::from(SECS);
    println!(
        "{name:<34} wall {:>7.3} s  cpu {:>7.3} s  {:>6.1}x real time (wall)  {:>6.1}x (cpu){}",
        t.wall.as_secs_f64(),
        t.user.as_secs_f64(),
        media / t.wall.as_secs_f64(),
        media / t.user.as_secs_f64().max(1e-9),
        if t.bytes > 0 {
            format!("  {} bytes", t.bytes)
        } else {
            String::new()
        }
    );
}

fn compare(codec: Codec, rate: u32, ffmpeg_args: &str, format: &str) {
    let pcm = signal(rate);
    let raw = std::env::temp_dir().join(format!("onair-bench-{}-{rate}.raw", std::process::id()));
    let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&raw, bytes).expect("write raw input");
    let ours = run_onair(codec, rate, &pcm);
    let theirs = run_ffmpeg(&raw, rate, ffmpeg_args, format);
    // What ffmpeg spends without encoding (start-up, reading and demuxing the raw file).
    let baseline = run_ffmpeg(&raw, rate, "-c:a copy", "null");
    let _ = std::fs::remove_file(&raw);
    println!(
        "\n{} 128 kbit/s, {rate} Hz stereo, {SECS} s input, best of {RUNS}:",
        codec.name()
    );
    report(&format!("onair {}", codec.name()), &ours);
    report(&format!("ffmpeg {ffmpeg_args}"), &theirs);
    report("ffmpeg -c:a copy -f null (no encode)", &baseline);
    println!(
        "ratio onair/ffmpeg: wall {:.2}x  cpu {:.2}x  (below 1 = onair faster)",
        ours.wall.as_secs_f64() / theirs.wall.as_secs_f64(),
        ours.user.as_secs_f64() / theirs.user.as_secs_f64().max(1e-9)
    );
    let net = theirs.user.saturating_sub(baseline.user).as_secs_f64();
    println!(
        "ratio onair/ffmpeg encode-only cpu (ffmpeg minus its no-encode baseline): {:.2}x",
        ours.user.as_secs_f64() / net.max(1e-9)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!(
        "LAME {}; libopus (unsafe-libopus, transpiled)",
        mp3lame_encoder::mp3lame_version()
    );
    compare(Codec::Mp3, 44_100, "-c:a libmp3lame -b:a 128k", "mp3");
    compare(
        Codec::Opus,
        48_000,
        "-c:a libopus -b:a 128k -vbr off",
        "ogg",
    );
}
