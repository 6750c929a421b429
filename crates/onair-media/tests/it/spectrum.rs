//! Small spectral measurements for tests: Goertzel power and the dominant frequency.

use std::f64::consts::PI;

/// Power of `x` (one channel, Hann-windowed) at `freq` Hz, normalised by length.
pub fn goertzel(x: &[f32], rate: u32, freq: f64) -> f64 {
    let n = x.len().max(2) as f64;
    let w = 2.0 * PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for (i, &v) in x.iter().enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * PI * i as f64 / (n - 1.0)).cos();
        let s0 = f64::from(v) * hann + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let p = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    p / (n * n)
}

/// Frequency between `lo` and `hi` with the most power, to within about 1 Hz: a 5 Hz scan
/// over at most 0.25 s of `x`, then a 0.5 Hz scan around the best coarse bin.
pub fn dominant(x: &[f32], rate: u32, lo: f64, hi: f64) -> f64 {
    let x = &x[..x.len().min(rate as usize / 4)];
    let scan = |from: f64, to: f64, step: f64| {
        let mut best = (from, -1.0);
        let mut f = from;
        while f <= to {
            let p = goertzel(x, rate, f);
            if p > best.1 {
                best = (f, p);
            }
            f += step;
        }
        best.0
    };
    let coarse = scan(lo, hi, 5.0);
    scan(coarse - 5.0, coarse + 5.0, 0.5)
}

/// One channel out of interleaved samples.
pub fn channel(samples: &[f32], channels: u16, ch: usize) -> Vec<f32> {
    samples
        .chunks_exact(usize::from(channels))
        .map(|f| f[ch])
        .collect()
}
