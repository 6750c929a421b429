//! loudness: measurements agree with ffmpeg's ebur128 filter; the gain reaches the target;
//! the limiter holds its ceiling on sample and inter-sample peaks without steps.

use onair_media::decode::Decoder;
use onair_media::loudness::{gain_to_target, Limiter, LoudnessMeter, DEFAULT_TARGET_LUFS};

use crate::fixture::{ffmpeg, write_wav_f32, TempDir};

/// ffmpeg's integrated loudness (LUFS) and true peak (dBFS) of a file.
fn ffmpeg_r128(path: &std::path::Path) -> (f64, f64) {
    let p = path.to_str().expect("utf-8 path");
    let err = ffmpeg(&[
        "-nostats",
        "-i",
        p,
        "-af",
        "ebur128=peak=true",
        "-f",
        "null",
        "-",
    ]);
    let summary = &err[err.rfind("Summary:").expect("ebur128 summary")..];
    let value = |key: &str| -> f64 {
        let at = summary
            .find(key)
            .unwrap_or_else(|| panic!("{key} in {summary}"))
            + key.len();
        summary[at..]
            .split_whitespace()
            .next()
            .expect("value")
            .parse()
            .expect("number")
    };
    (value("I:"), value("Peak:"))
}

fn sine(rate: u32, channels: u16, freq: f64, amp: f32, secs: f64) -> Vec<f32> {
    let n = (f64::from(rate) * secs) as usize;
    (0..n)
        .flat_map(|i| {
            let v =
                amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32;
            std::iter::repeat_n(v, usize::from(channels))
        })
        .collect()
}

/// Deterministic music-like test signal: a few partials, a beat envelope and noise, band
/// limited like coded music (the noise is low-passed; the highest partial is at 5 kHz).
fn busy(rate: u32, secs: f64, amp: f32) -> Vec<f32> {
    let mut x = 0x1234_5678u32;
    let n = (f64::from(rate) * secs) as usize;
    let mut out = Vec::with_capacity(2 * n);
    let (mut lp1, mut lp2) = (0.0f64, 0.0f64);
    for i in 0..n {
        let t = i as f64 / f64::from(rate);
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let white = f64::from(x) / f64::from(u32::MAX) - 0.5;
        lp1 += 0.5 * (white - lp1);
        lp2 += 0.5 * (lp1 - lp2);
        let noise = lp2 * 0.8;
        let beat = 0.6 + 0.4 * (2.0 * std::f64::consts::PI * 2.0 * t).sin().max(0.0);
        let tone = |f: f64, p: f64| (2.0 * std::f64::consts::PI * f * t + p).sin();
        let l = beat * (0.5 * tone(110.0, 0.0) + 0.3 * tone(440.0, 1.0) + 0.2 * tone(3520.0, 2.0))
            + noise;
        let r = beat * (0.5 * tone(110.0, 0.5) + 0.3 * tone(660.0, 0.0) + 0.2 * tone(5000.0, 1.0))
            - noise;
        out.push(amp * l as f32);
        out.push(amp * r as f32);
    }
    out
}

fn measure(rate: u32, channels: u16, samples: &[f32]) -> (f64, f64) {
    let mut m = LoudnessMeter::new(rate, channels).expect("meter");
    // Odd chunk sizes: results must not depend on how audio is split.
    for chunk in samples.chunks(4097 * usize::from(channels)) {
        m.push(chunk);
    }
    (
        m.integrated_lufs().expect("loudness"),
        m.true_peak_dbtp().expect("peak"),
    )
}

#[test]
fn sine_and_noise_measure_like_ffmpeg() {
    let dir = TempDir::new("r128");
    // 1 kHz sine at -6.02 dBFS on both channels: BS.1770 puts this at -6.02 LUFS.
    let s = sine(48_000, 2, 1000.0, 0.5, 10.0);
    let path = dir.path("sine.wav");
    write_wav_f32(&path, 48_000, 2, &s);
    let (ours_i, ours_tp) = measure(48_000, 2, &s);
    let (ff_i, ff_tp) = ffmpeg_r128(&path);
    eprintln!(
        "sine: ours {ours_i:.2} LUFS {ours_tp:.2} dBTP, ffmpeg {ff_i:.2} LUFS {ff_tp:.2} dBFS"
    );
    assert!((ours_i - ff_i).abs() <= 0.5, "ours {ours_i}, ffmpeg {ff_i}");
    assert!((ours_i - -6.02).abs() <= 0.2, "ours {ours_i}");
    assert!(
        (ours_tp - ff_tp).abs() <= 0.3,
        "peak: ours {ours_tp}, ffmpeg {ff_tp}"
    );

    // Real coded audio: pink noise through MP3, decoded by us, measured by both.
    let mp3 = dir.path("pink.mp3");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "anoisesrc=color=pink:amplitude=0.2:duration=8:sample_rate=44100:seed=7",
        "-ac",
        "2",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "192k",
        mp3.to_str().expect("path"),
    ]);
    let mut d = Decoder::open(&mp3).expect("open mp3");
    let mut pcm = Vec::new();
    while let Some(b) = d.next_block().expect("decode") {
        pcm.extend_from_slice(&b.samples);
    }
    let (ours_i, _) = measure(44_100, 2, &pcm);
    let (ff_i, _) = ffmpeg_r128(&mp3);
    eprintln!("pink mp3: ours {ours_i:.2} LUFS, ffmpeg {ff_i:.2} LUFS");
    assert!((ours_i - ff_i).abs() <= 0.5, "ours {ours_i}, ffmpeg {ff_i}");
}

#[test]
fn silence_has_no_loudness() {
    let mut m = LoudnessMeter::new(44_100, 2).expect("meter");
    m.push(&vec![0.0; 44_100 * 2 * 3]);
    assert_eq!(m.integrated_lufs(), None);
    assert_eq!(m.true_peak_dbtp(), None);
    assert!(LoudnessMeter::new(0, 2).is_err());
    assert!(LoudnessMeter::new(44_100, 0).is_err());
}

#[test]
fn gain_brings_a_quiet_track_to_the_target() {
    let rate = 44_100;
    let quiet = busy(rate, 12.0, 0.02);
    let (i, tp) = measure(rate, 2, &quiet);
    assert!(i < -30.0, "test signal should be quiet: {i}");
    let gain = gain_to_target(i, DEFAULT_TARGET_LUFS, tp, -1.0);
    assert!(gain > 10.0, "{gain}");
    let mut lim = Limiter::new(rate, 2, gain, -1.0);
    let mut out = Vec::new();
    lim.process(&quiet, &mut out);
    lim.flush(&mut out);
    assert_eq!(out.len(), quiet.len());
    let (after, after_tp) = measure(rate, 2, &out);
    eprintln!("quiet {i:.2} LUFS / {tp:.2} dBTP, gain {gain:.2} dB -> {after:.2} LUFS / {after_tp:.2} dBTP");
    assert!((after - DEFAULT_TARGET_LUFS).abs() <= 0.5, "{after}");
}

#[test]
fn gain_to_target_respects_the_ceiling() {
    assert!((gain_to_target(-23.0, -16.0, -10.0, -1.0) - 7.0).abs() < 1e-9);
    // Peak-limited: -3 dBTP + 7 dB would pass -1 dBTP.
    assert!((gain_to_target(-23.0, -16.0, -3.0, -1.0) - 2.0).abs() < 1e-9);
    // Too loud: attenuate, whatever the peak.
    assert!((gain_to_target(-9.0, -16.0, 0.5, -1.0) - -7.0).abs() < 1e-9);
    assert_eq!(gain_to_target(f64::NEG_INFINITY, -16.0, -3.0, -1.0), 0.0);
}

/// Independent 4x oversampled peak (64-tap Hann-windowed sinc per phase), in dBFS.
fn oversampled_peak_db(x: &[f32], channels: usize) -> f64 {
    const HALF: i64 = 32;
    let frames = x.len() / channels;
    let mut peak = 0.0f64;
    for c in 0..channels {
        let at = |i: i64| {
            if i < 0 || i >= frames as i64 {
                0.0
            } else {
                f64::from(x[i as usize * channels + c])
            }
        };
        for j in 0..frames as i64 {
            peak = peak.max(at(j).abs());
            for k in 1..4 {
                let d = k as f64 / 4.0;
                let mut v = 0.0;
                for i in -HALF + 1..=HALF {
                    let t = d - i as f64;
                    let sinc = (std::f64::consts::PI * t).sin() / (std::f64::consts::PI * t);
                    let w = 0.5 + 0.5 * (std::f64::consts::PI * t / HALF as f64).cos();
                    v += at(j + i) * sinc * w;
                }
                peak = peak.max(v.abs());
            }
        }
    }
    20.0 * peak.log10()
}

#[test]
fn limiter_holds_the_ceiling_on_a_track_pushed_12_db() {
    let rate = 48_000;
    let hot = busy(rate, 6.0, 0.5);
    let mut lim = Limiter::new(rate, 2, 12.0, -1.0);
    let latency = lim.latency();
    assert!(latency > 0 && latency < rate as usize / 100, "{latency}");
    let mut out = Vec::new();
    // Irregular chunks, including partial frames.
    let mut rest = &hot[..];
    let mut k = 0;
    while !rest.is_empty() {
        let n = [1, 333, 4096, 7, 960][k % 5].min(rest.len());
        lim.process(&rest[..n], &mut out);
        rest = &rest[n..];
        k += 1;
    }
    assert!(out.len() <= hot.len() - 2 * latency + 2);
    lim.flush(&mut out);
    assert_eq!(out.len(), hot.len(), "output frames = input frames");
    assert!(lim.latency() == latency);

    let ceiling = 10f32.powf(-1.0 / 20.0);
    let sample_peak = out.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(sample_peak <= ceiling, "sample peak {sample_peak}");
    let over = oversampled_peak_db(&out, 2);
    let (_, tp) = measure(rate, 2, &out);
    eprintln!(
        "limited +12 dB: sample peak {:.3} dBFS, 4x peak {over:.3} dBFS, ebur128 TP {tp:.3} dBTP",
        20.0 * sample_peak.log10()
    );
    assert!(over <= -1.0, "4x oversampled peak {over} dBFS");
    assert!(tp <= -1.0, "ebur128 true peak {tp} dBTP");
    // It limited (the input, +12 dB, peaks far above the ceiling) ...
    let in_peak = hot.iter().fold(0f32, |m, v| m.max(v.abs())) * 4.0;
    assert!(in_peak > 1.5);
    // ... and the gain never steps: gain = out/in on samples large enough to read it.
    let g12 = 10f64.powf(12.0 / 20.0);
    let mut prev: Option<f64> = None;
    let lookahead = rate as f64 * 0.005;
    for (o, i) in out.chunks_exact(2).zip(hot.chunks_exact(2)) {
        let (o, i) = (f64::from(o[0]), f64::from(i[0]) * g12);
        if i.abs() < 0.2 {
            prev = None;
            continue;
        }
        let g = o / i;
        assert!(g > 0.0 && g <= 1.0 + 1e-6, "gain {g}");
        if let Some(p) = prev {
            assert!(
                (g - p).abs() <= 1.0 / lookahead + 1e-4,
                "gain step {p} -> {g}"
            );
        }
        prev = Some(g);
    }
}

#[test]
fn limiter_leaves_a_quiet_signal_untouched() {
    let quiet = busy(44_100, 3.0, 0.05);
    let mut lim = Limiter::new(44_100, 2, 0.0, -1.0);
    let mut out = Vec::new();
    for chunk in quiet.chunks(1001) {
        lim.process(chunk, &mut out);
    }
    lim.flush(&mut out);
    assert_eq!(out, quiet, "bit-exact pass-through");
    assert_eq!(lim.limited_frames(), 0);
}

#[test]
fn limiter_survives_garbage() {
    let mut lim = Limiter::new(48_000, 2, 6.0, -1.0);
    let mut out = Vec::new();
    let mut x: Vec<f32> = (0..20_000)
        .map(|i| ((i * 7919) % 200) as f32 / 50.0 - 2.0)
        .collect();
    x[100] = f32::NAN;
    x[5000] = f32::INFINITY;
    x[7000] = f32::NEG_INFINITY;
    lim.process(&x, &mut out);
    lim.flush(&mut out);
    assert_eq!(out.len(), x.len());
    assert!(out
        .iter()
        .all(|v| v.is_finite() && v.abs() <= 10f32.powf(-1.0 / 20.0)));
}

#[test]
fn limiter_holds_the_ceiling_on_coded_pink_noise() {
    // Coded audio has content up to the encoder's low-pass (~19 kHz here), the hard case for
    // inter-sample peaks.
    let dir = TempDir::new("pink-limit");
    let mp3 = dir.path("pink.mp3");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "anoisesrc=color=pink:amplitude=0.5:duration=5:sample_rate=44100:seed=3",
        "-ac",
        "2",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "192k",
        mp3.to_str().expect("path"),
    ]);
    let mut d = Decoder::open(&mp3).expect("open mp3");
    let mut pcm = Vec::new();
    while let Some(b) = d.next_block().expect("decode") {
        pcm.extend_from_slice(&b.samples);
    }
    let mut lim = Limiter::new(44_100, 2, 12.0, -1.0);
    let mut out = Vec::new();
    for chunk in pcm.chunks(1152 * 2) {
        lim.process(chunk, &mut out);
    }
    lim.flush(&mut out);
    assert_eq!(out.len(), pcm.len());
    assert!(lim.limited_frames() > 0);
    let over = oversampled_peak_db(&out, 2);
    let (_, tp) = measure(44_100, 2, &out);
    eprintln!("pink +12 dB: 4x peak {over:.3} dBFS, ebur128 TP {tp:.3} dBTP");
    assert!(over <= -1.0, "4x oversampled peak {over} dBFS");
    assert!(tp <= -1.0, "ebur128 true peak {tp} dBTP");
}
