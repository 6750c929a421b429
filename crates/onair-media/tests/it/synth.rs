//! synth: the demo programme is deterministic, never clips, changes pieces with titles,
//! and is music (several pitches, changing over time), not silence or a test tone.

use onair_media::loudness::LoudnessMeter;
use onair_media::synth::Programme;

use crate::fixture::{ffmpeg, write_wav_f32, TempDir};
use crate::spectrum::{channel, goertzel};

/// Renders `secs` of stereo in blocks of the given sizes (cycled); returns the samples and
/// every (absolute frame, title) reported.
fn render(p: &mut Programme, secs: f64, blocks: &[usize]) -> (Vec<f32>, Vec<(u64, String)>) {
    let total = (secs * f64::from(p.rate())) as usize;
    let (mut out, mut starts, mut done, mut k) = (Vec::with_capacity(total * 2), Vec::new(), 0, 0);
    while done < total {
        let n = blocks[k % blocks.len()].min(total - done);
        k += 1;
        let (pcm, start) = p.next_block(n);
        assert_eq!(pcm.frames(), n);
        assert_eq!((pcm.rate, pcm.channels), (p.rate(), 2));
        if let Some((at, title)) = start {
            assert!(at < n, "offset {at} outside a block of {n}");
            starts.push(((done + at) as u64, title));
        }
        out.extend_from_slice(&pcm.samples);
        done += n;
    }
    (out, starts)
}

#[test]
fn same_seed_same_music_whatever_the_block_sizes() {
    let mut a = Programme::new(22_050, 2, 42);
    let mut b = Programme::new(22_050, 2, 42);
    let (x, xs) = render(&mut a, 10.0, &[1152]);
    let (y, ys) = render(&mut b, 10.0, &[1, 4096, 333, 22_050, 7]);
    assert!(x == y, "same seed, different samples");
    assert_eq!(xs, ys);
    let mut c = Programme::new(22_050, 2, 43);
    let (z, _) = render(&mut c, 10.0, &[1152]);
    assert!(x != z, "different seeds should differ");
}

#[test]
fn pieces_change_with_their_titles_and_never_clip() {
    // Over four minutes (pieces last at most 120 s, so at least three start); 16 kHz keeps
    // the debug-build test quick.
    const RATE: u32 = 16_000;
    for seed in [1u64] {
        let mut p = Programme::new(RATE, 2, seed);
        assert!(p.title().starts_with("onair demo - "));
        let first_title = p.title().to_string();
        let (x, starts) = render(&mut p, 250.0, &[1024]);
        assert_eq!(
            starts.first(),
            Some(&(0, first_title)),
            "first block reports piece 1"
        );
        assert!(
            starts.len() >= 3,
            "250 s should hold at least 3 pieces: {starts:?}"
        );
        for w in starts.windows(2) {
            assert_ne!(w[0].1, w[1].1, "titles change at piece boundaries");
            let secs = (w[1].0 - w[0].0) as f64 / f64::from(RATE);
            assert!((60.0..=120.0).contains(&secs), "piece of {secs} s");
        }
        assert_eq!(p.title(), starts.last().map(|s| s.1.as_str()).unwrap_or(""));
        let peak = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let peak_db = 20.0 * peak.log10();
        assert!(peak_db < -1.0, "seed {seed}: peak {peak_db:.2} dBFS");
        let mut m = LoudnessMeter::new(RATE, 2).expect("meter");
        m.push(&x);
        let (i, tp) = (
            m.integrated_lufs().expect("loud"),
            m.true_peak_dbtp().expect("peak"),
        );
        eprintln!(
            "seed {seed}: {} pieces, peak {peak_db:.2} dBFS, {i:.1} LUFS, {tp:.2} dBTP",
            starts.len()
        );
        assert!(tp < -1.0, "true peak {tp}");
        assert!((-30.0..-12.0).contains(&i), "loudness {i} LUFS");
        // Just before each new piece: the short silence after the previous one ends.
        for (at, _) in starts.iter().skip(1) {
            let at = *at as usize * 2;
            let gap = &x[at - 2 * (RATE as usize / 10)..at];
            let rms = (gap.iter().map(|v| v * v).sum::<f32>() / gap.len() as f32).sqrt();
            assert!(rms < 0.003, "no clean end before the next piece: rms {rms}");
        }
    }
}

/// Power per semitone (MIDI 36..=96) of one mono second.
fn semitone_profile(x: &[f32], rate: u32) -> Vec<f64> {
    (36..=96)
        .map(|m| goertzel(x, rate, 440.0 * ((f64::from(m) - 69.0) / 12.0).exp2()))
        .collect()
}

#[test]
fn it_is_music_not_silence_or_a_tone() {
    let rate = 22_050;
    let mut p = Programme::new(rate, 2, 5);
    let (x, starts) = render(&mut p, 45.0, &[2048]);
    assert_eq!(starts.len(), 1);
    let left = channel(&x, 2, 0);
    let right = channel(&x, 2, 1);
    let secs: Vec<&[f32]> = left.chunks_exact(rate as usize).collect();
    // Sound all the way (after the pad's slow attack).
    for (k, s) in secs.iter().enumerate().skip(2) {
        let rms = (s.iter().map(|v| v * v).sum::<f32>() / s.len() as f32).sqrt();
        assert!(rms > 0.005, "second {k} is (nearly) silent: rms {rms}");
    }
    // Several distinct pitches sound in each second of the body of the piece: count the
    // semitones within 20 dB of the strongest one.
    let mut changes = 0;
    let mut prev: Option<Vec<f64>> = None;
    for s in &secs[15..45] {
        let prof = semitone_profile(s, rate);
        let max = prof.iter().cloned().fold(0.0, f64::max);
        let strong = prof.iter().filter(|&&v| v > max / 100.0).count();
        assert!(strong >= 3, "only {strong} strong pitches in a second");
        if let Some(pr) = &prev {
            // Cosine distance between successive spectra: the music moves.
            let dot: f64 = pr.iter().zip(&prof).map(|(a, b)| a.sqrt() * b.sqrt()).sum();
            let na: f64 = pr.iter().sum::<f64>().sqrt();
            let nb: f64 = prof.iter().sum::<f64>().sqrt();
            if dot / (na * nb) < 0.95 {
                changes += 1;
            }
        }
        prev = Some(prof);
    }
    assert!(
        changes >= 10,
        "successive seconds barely differ ({changes} of 29 changed)"
    );
    // Stereo: the channels are not identical.
    let diff: f32 = left
        .iter()
        .zip(&right)
        .map(|(l, r)| (l - r).abs())
        .sum::<f32>()
        / left.len() as f32;
    assert!(diff > 1e-3, "mono content in stereo: {diff}");
}

#[test]
fn mono_and_other_rates_work() {
    let mut p = Programme::new(48_000, 1, 9);
    let (pcm, start) = p.next_block(48_000 * 3);
    assert_eq!(
        (pcm.rate, pcm.channels, pcm.frames()),
        (48_000, 1, 48_000 * 3)
    );
    assert_eq!(start.map(|s| s.0), Some(0));
    assert!(pcm.samples.iter().all(|v| v.is_finite() && v.abs() < 0.89));
    let (pcm, start) = p.next_block(100);
    assert!(start.is_none());
    assert_eq!(pcm.frames(), 100);
    let mut p = Programme::new(0, 2, 9);
    assert_eq!(p.rate(), 8_000, "rate clamped");
    assert_eq!(p.next_block(10).0.frames(), 10);
    let mut p = Programme::new(8_000, 0, 9);
    assert!(p.next_block(10).0.samples.is_empty());
}

#[test]
fn twenty_seconds_pass_ffmpeg_astats() {
    // The same check a person does: render to WAV, let ffmpeg measure it.
    let dir = TempDir::new("demo-astats");
    let mut p = Programme::new(44_100, 2, 3);
    let (x, _) = render(&mut p, 20.0, &[1152]);
    let wav = dir.path("demo.wav");
    write_wav_f32(&wav, 44_100, 2, &x);
    let err = ffmpeg(&[
        "-nostats",
        "-i",
        wav.to_str().expect("path"),
        "-af",
        "astats=measure_perchannel=none",
        "-f",
        "null",
        "-",
    ]);
    let value = |key: &str| -> f64 {
        let at = err.rfind(key).unwrap_or_else(|| panic!("{key} in astats")) + key.len();
        err[at..]
            .split_whitespace()
            .next()
            .expect("value")
            .parse()
            .expect("number")
    };
    let (peak, rms, dc) = (
        value("Peak level dB:"),
        value("RMS level dB:"),
        value("DC offset:"),
    );
    eprintln!("astats: peak {peak} dB, RMS {rms} dB, DC {dc}");
    assert!(peak < -1.0, "peak {peak}");
    assert!(rms > -40.0 && rms < -14.0, "RMS {rms}");
    assert!(dc.abs() < 0.001, "DC {dc}");
}
