//! Loudness: EBU R128 measurement, the gain that brings a track to a target, and a
//! true-peak look-ahead limiter that applies that gain without overshooting a ceiling.
//!
//! Owns: [`LoudnessMeter`] (BS.1770 K-weighting and gating, via the `ebur128` crate, in its
//! histogram mode so memory stays fixed however long the stream), [`gain_to_target`], and
//! [`Limiter`].
//!
//! Invariants of the limiter:
//! - Output frames = input frames: [`Limiter::process`] holds back [`Limiter::latency`] frames,
//!   [`Limiter::flush`] releases them. No silence is inserted, so media time is preserved.
//! - No output sample, and no 4x-oversampled point between output samples, exceeds the
//!   ceiling: the gain is lowered ahead of each peak over the look-ahead window and held flat
//!   across the interpolator's span around it, so the interpolated output peaks at most at
//!   the ceiling. Non-finite input is treated as silence.
//! - Gain changes are ramps over the look-ahead (no steps, hence no clicks); when nothing
//!   needs limiting the gain is exactly the requested one, so a quiet signal at 0 dB passes
//!   bit-for-bit (delayed).

use std::collections::VecDeque;
use std::f64::consts::PI;

use ebur128::{EbuR128, Mode};

/// Target integrated loudness for programme normalisation (common streaming practice).
pub const DEFAULT_TARGET_LUFS: f64 = -16.0;
/// Default limiter ceiling.
pub const DEFAULT_CEILING_DBTP: f64 = -1.0;

/// Look-ahead of the limiter.
const LOOKAHEAD_MS: u32 = 5;
/// Release time constant of the limiter's gain.
const RELEASE_MS: f64 = 150.0;
/// Half-length of the interpolation kernel, in input samples (32 taps per phase).
const HALF_TAPS: usize = 16;
const _: () = assert!((2 * HALF_TAPS) & 7 == 0, "dot() works in lanes of 8");
/// Oversampling factor of the peak estimate.
const OVERSAMPLE: usize = 4;
/// Internal safety margin under the ceiling: covers the interpolator's own ripple and the
/// small difference between estimators (dB).
const MARGIN_DB: f64 = 0.1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoudnessError {
    #[error("unsupported format for loudness: {rate} Hz, {channels} channels")]
    Format { rate: u32, channels: u16 },
}

/// Integrated loudness and true peak of everything pushed so far.
pub struct LoudnessMeter {
    inner: EbuR128,
    channels: u16,
    frames: u64,
    scratch: Vec<f32>,
}

impl std::fmt::Debug for LoudnessMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoudnessMeter")
            .field("rate", &self.inner.rate())
            .field("channels", &self.channels)
            .field("frames", &self.frames)
            .finish()
    }
}

impl LoudnessMeter {
    /// Channels beyond the first five are measured unweighted as in BS.1770 (1.0 weight);
    /// the first five follow the L, R, C, Ls, Rs order the crate assumes.
    pub fn new(rate: u32, channels: u16) -> Result<LoudnessMeter, LoudnessError> {
        let mode = Mode::I | Mode::TRUE_PEAK | Mode::HISTOGRAM;
        let inner = EbuR128::new(u32::from(channels), rate, mode)
            .map_err(|_| LoudnessError::Format { rate, channels })?;
        Ok(LoudnessMeter {
            inner,
            channels,
            frames: 0,
            scratch: Vec::new(),
        })
    }

    /// Adds interleaved samples; a trailing partial frame is ignored.
    pub fn push(&mut self, samples: &[f32]) {
        let whole = samples.len() - samples.len() % usize::from(self.channels);
        let samples = &samples[..whole];
        let input = if samples.iter().all(|s| s.is_finite()) {
            samples
        } else {
            self.scratch.clear();
            self.scratch
                .extend(samples.iter().map(|&s| if s.is_finite() { s } else { 0.0 }));
            &self.scratch
        };
        // Cannot fail: mode and channel count were validated by `new`.
        if self.inner.add_frames_f32(input).is_ok() {
            self.frames += (whole / usize::from(self.channels)) as u64;
        }
    }

    /// Gated integrated loudness in LUFS; `None` until a gating block above the absolute
    /// gate (-70 LUFS) has been measured.
    pub fn integrated_lufs(&self) -> Option<f64> {
        let l = self.inner.loudness_global().ok()?;
        l.is_finite().then_some(l)
    }

    /// Highest true peak over all channels in dBTP; `None` before any non-silent sample.
    pub fn true_peak_dbtp(&self) -> Option<f64> {
        let peak = (0..u32::from(self.channels))
            .filter_map(|c| self.inner.true_peak(c).ok())
            .fold(0.0f64, f64::max);
        (peak > 0.0).then(|| 20.0 * peak.log10())
    }

    /// Sample frames measured so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

/// Gain in dB that brings a track measured at `integrated_lufs` to `target_lufs`, limited so
/// that `true_peak_dbtp + gain` stays at or under `ceiling_dbtp` (what is safe with no limiter;
/// with the [`Limiter`] on, callers may apply the unlimited `target - integrated` instead).
/// Non-finite measurements (silence) give 0 dB.
pub fn gain_to_target(
    integrated_lufs: f64,
    target_lufs: f64,
    true_peak_dbtp: f64,
    ceiling_dbtp: f64,
) -> f64 {
    if !integrated_lufs.is_finite() || !target_lufs.is_finite() {
        return 0.0;
    }
    let gain = target_lufs - integrated_lufs;
    if true_peak_dbtp.is_finite() && ceiling_dbtp.is_finite() {
        gain.min(ceiling_dbtp - true_peak_dbtp)
    } else {
        gain
    }
}

/// Applies a fixed gain, then a look-ahead true-peak limiter (linked across channels).
pub struct Limiter {
    channels: usize,
    gain: f32,
    /// Linear ceiling including [`MARGIN_DB`].
    ceiling: f64,
    /// Look-ahead: length of the gain ramp, frames.
    lookahead: usize,
    /// Interpolation kernel: `OVERSAMPLE - 1` phases of `2 * HALF_TAPS` taps.
    kernel: Vec<[f32; 2 * HALF_TAPS]>,
    /// Last `2 * HALF_TAPS` gained input samples per channel, for the interpolator: a ring
    /// stored twice over (`4 * HALF_TAPS` per channel) so the window is one contiguous slice.
    history: Vec<f32>,
    hist_pos: usize,
    /// Gained frames waiting for their gain (ring of `delay_frames`).
    delay: Vec<f32>,
    delay_pos: usize,
    delay_frames: usize,
    /// Sliding minimum of required gains over the hold window: (index, gain).
    hold: VecDeque<(u64, f64)>,
    hold_window: u64,
    /// Gain after the release stage, and the moving average over `lookahead` of it.
    env: f64,
    release: f64,
    avg_ring: Vec<f64>,
    avg_pos: usize,
    avg_sum: f64,
    /// Entries of `avg_ring` below 1: while zero the gain is exactly unity.
    non_unity: usize,
    /// Frames pushed (real and flush padding), real frames taken in, frames handed out.
    pushed: u64,
    taken: u64,
    given: u64,
    /// A partial input frame carried to the next call.
    carry: Vec<f32>,
    /// Limited frames so far (gain under the requested one), for reporting.
    limited: u64,
    /// Sample level under which a whole interpolation window cannot exceed the ceiling
    /// (ceiling / the largest sum of |taps|), and the last frame that was above it.
    quiet_below: f32,
    last_loud: Option<u64>,
    /// Construction parameters, to reset after a flush.
    params: (u32, u16, f64, f64),
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("channels", &self.channels)
            .field("gain", &self.gain)
            .field("latency", &self.latency())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// `gain_db` is applied before limiting; `ceiling_dbtp` is the true-peak ceiling
    /// ([`DEFAULT_CEILING_DBTP`] is the usual choice; a non-finite one means that default).
    /// Zero channels count as one. The look-ahead is 5 ms of `rate`.
    pub fn new(rate: u32, channels: u16, gain_db: f64, ceiling_dbtp: f64) -> Limiter {
        let channels_in = channels;
        let channels = usize::from(channels.max(1));
        let lookahead = (rate as usize * LOOKAHEAD_MS as usize / 1000).max(1);
        let ceiling_db = if ceiling_dbtp.is_finite() {
            ceiling_dbtp
        } else {
            DEFAULT_CEILING_DBTP
        };
        let ceiling = 10f64.powf((ceiling_db - MARGIN_DB) / 20.0);
        let gain = if gain_db.is_finite() {
            10f64.powf(gain_db / 20.0) as f32
        } else {
            1.0
        };
        let release = 1.0 - (-1.0 / (RELEASE_MS / 1000.0 * f64::from(rate.max(1)))).exp();
        // Gain applied to frame j must be flat over [j - T, j + T]: the delay and hold window
        // below follow from that (T = HALF_TAPS, L = lookahead).
        let delay_frames = lookahead + 2 * HALF_TAPS;
        let kernel = make_kernel();
        Limiter {
            channels,
            gain,
            ceiling,
            lookahead,
            quiet_below: (ceiling / kernel_gain_bound(&kernel)) as f32,
            last_loud: None,
            kernel,
            history: vec![0.0; 4 * HALF_TAPS * channels],
            hist_pos: 0,
            delay: vec![0.0; delay_frames * channels],
            delay_pos: 0,
            delay_frames,
            hold: VecDeque::with_capacity(lookahead + 2 * HALF_TAPS + 1),
            hold_window: (lookahead + 2 * HALF_TAPS) as u64,
            env: 1.0,
            release,
            avg_ring: vec![1.0; lookahead],
            avg_pos: 0,
            avg_sum: lookahead as f64,
            non_unity: 0,
            pushed: 0,
            taken: 0,
            given: 0,
            carry: Vec::with_capacity(channels),
            limited: 0,
            params: (rate, channels_in, gain_db, ceiling_dbtp),
        }
    }

    /// Frames held back between input and output.
    pub fn latency(&self) -> usize {
        self.delay_frames - 1
    }

    /// Output frames so far (over all streams, flushes included) whose gain was reduced below
    /// the requested gain.
    pub fn limited_frames(&self) -> u64 {
        self.limited
    }

    /// Limits interleaved `input`, appending to `out` every frame that has cleared the
    /// look-ahead (so `out` lags the input by [`Limiter::latency`] frames).
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let mut rest = input;
        if !self.carry.is_empty() {
            let need = self.channels - self.carry.len();
            let take = need.min(rest.len());
            self.carry.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.carry.len() < self.channels {
                return;
            }
            let frame = std::mem::take(&mut self.carry);
            self.push_frame(&frame, out, true);
            self.carry = frame;
            self.carry.clear();
        }
        let mut frames = rest.chunks_exact(self.channels);
        for frame in &mut frames {
            self.push_frame(frame, out, true);
        }
        self.carry.extend_from_slice(frames.remainder());
    }

    /// Releases the held-back frames (as if silence followed) and resets for a new stream.
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        self.carry.clear();
        let zero = vec![0.0f32; self.channels];
        while self.given < self.taken {
            self.push_frame(&zero, out, false);
        }
        let limited = self.limited;
        *self = Limiter::new(self.params.0, self.params.1, self.params.2, self.params.3);
        self.limited = limited;
    }

    /// One frame through the pipeline. With `n` this input frame (counting virtual ones),
    /// `m = n - T` is the frame whose peak is now known (its interpolation span reaches `n`)
    /// and the frame leaving the delay line is `j = n - latency = m - (L - 1 + T)`.
    fn push_frame(&mut self, frame: &[f32], out: &mut Vec<f32>, real: bool) {
        let ch = self.channels;
        let span = 2 * HALF_TAPS;
        // Gain, sanitise, store in the interpolator history and the delay line.
        let d0 = self.delay_pos * ch;
        for (c, &x) in frame.iter().enumerate().take(ch) {
            let v = if x.is_finite() { x * self.gain } else { 0.0 };
            let h = c * 2 * span + self.hist_pos;
            self.history[h] = v;
            self.history[h + span] = v;
            self.delay[d0 + c] = v;
            if v.abs() > self.quiet_below {
                self.last_loud = Some(self.pushed);
            }
        }
        self.hist_pos = (self.hist_pos + 1) % span;
        // The window, oldest first, holds frames m-T+1 ..= m+T. When every sample in it is
        // under `quiet_below`, no interpolated point can reach the ceiling: skip the work.
        let window_loud = self
            .last_loud
            .is_some_and(|at| self.pushed - at < span as u64);
        let mut peak = 0.0f32;
        for c in (0..ch).filter(|_| window_loud) {
            let start = c * 2 * span + self.hist_pos;
            let window = &self.history[start..start + span];
            peak = peak.max(window[HALF_TAPS - 1].abs());
            for taps in &self.kernel {
                peak = peak.max(dot(taps, window).abs());
            }
        }
        let peak = f64::from(peak);
        let required = if peak > self.ceiling {
            self.ceiling / peak
        } else {
            1.0
        };
        // Hold: minimum of the required gains over the last `hold_window` frames.
        let m = self.pushed;
        self.pushed += 1;
        while self.hold.back().is_some_and(|&(_, g)| g >= required) {
            self.hold.pop_back();
        }
        self.hold.push_back((m, required));
        while self
            .hold
            .front()
            .is_some_and(|&(i, _)| i + self.hold_window <= m)
        {
            self.hold.pop_front();
        }
        let held = self.hold.front().map_or(1.0, |&(_, g)| g);
        // Release towards unity, never above the held requirement.
        let released = self.env + (1.0 - self.env) * self.release;
        self.env = held.min(if released > 0.999_999 { 1.0 } else { released });
        // Moving average over the look-ahead: the ramp.
        let old = self.avg_ring[self.avg_pos];
        self.non_unity = self.non_unity + usize::from(self.env != 1.0) - usize::from(old != 1.0);
        self.avg_sum += self.env - old;
        self.avg_ring[self.avg_pos] = self.env;
        self.avg_pos += 1;
        if self.avg_pos == self.lookahead {
            self.avg_pos = 0;
            // Re-sum once per window so rounding cannot drift.
            self.avg_sum = self.avg_ring.iter().sum();
        }
        let g = if self.non_unity == 0 {
            1.0
        } else {
            (self.avg_sum / self.lookahead as f64).min(1.0)
        };
        if real {
            self.taken += 1;
        }
        // The slot after the one just written holds the oldest frame: j.
        self.delay_pos = (self.delay_pos + 1) % self.delay_frames;
        let j_exists = self.pushed > self.latency() as u64;
        if j_exists && self.given < self.taken {
            let o0 = self.delay_pos * ch;
            if g < 1.0 {
                self.limited += 1;
            }
            for c in 0..ch {
                let v = self.delay[o0 + c];
                out.push(if g == 1.0 {
                    v
                } else {
                    (f64::from(v) * g) as f32
                });
            }
            self.given += 1;
        }
    }
}

/// The most any phase of the kernel can amplify: the largest sum of |taps|.
fn kernel_gain_bound(kernel: &[[f32; 2 * HALF_TAPS]]) -> f64 {
    kernel
        .iter()
        .map(|taps| taps.iter().map(|t| f64::from(t.abs())).sum::<f64>())
        .fold(1.0, f64::max)
}

/// Dot product in eight independent lanes (lets the compiler use SIMD).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (a8, b8) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += a8[k] * b8[k];
        }
    }
    acc.iter().sum()
}

/// Kaiser window shape: narrow transition band, so peaks of content up to ~0.4 fs are
/// read as a long ideal interpolator reads them.
const KAISER_BETA: f64 = 5.0;

/// Modified Bessel function of the first kind, order 0 (power series; converges fast for
/// the small arguments used here).
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, q) = (1.0, 1.0, x * x / 4.0);
    for k in 1..32 {
        term *= q / (k * k) as f64;
        sum += term;
    }
    sum
}

/// Windowed-sinc interpolation taps for the points k/4 (k = 1..3) between the middle two of
/// `2 * HALF_TAPS` samples; each phase normalised to unity DC gain.
fn make_kernel() -> Vec<[f32; 2 * HALF_TAPS]> {
    (1..OVERSAMPLE)
        .map(|k| {
            let d = k as f64 / OVERSAMPLE as f64;
            let mut taps = [0.0; 2 * HALF_TAPS];
            for (i, t) in taps.iter_mut().enumerate() {
                // Tap i sits at offset (i - (T - 1)) from sample m; the point is at m + d.
                let x = d - (i as f64 - (HALF_TAPS as f64 - 1.0));
                let sinc = if x == 0.0 {
                    1.0
                } else {
                    (PI * x).sin() / (PI * x)
                };
                let w = x / HALF_TAPS as f64;
                let kaiser =
                    bessel_i0(KAISER_BETA * (1.0 - w * w).max(0.0).sqrt()) / bessel_i0(KAISER_BETA);
                *t = sinc * kaiser;
            }
            let sum: f64 = taps.iter().sum();
            taps.map(|t| (t / sum) as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_interpolates_a_band_limited_sine() {
        let kernel = make_kernel();
        // 5 kHz at 48 kHz: the interpolated points match the continuous sine.
        let w = 2.0 * PI * 5000.0 / 48_000.0;
        let x: Vec<f64> = (0..2 * HALF_TAPS)
            .map(|i| (w * i as f64 + 0.3).sin())
            .collect();
        for (k, taps) in kernel.iter().enumerate() {
            let d = (k + 1) as f64 / OVERSAMPLE as f64;
            let v: f64 = taps.iter().zip(&x).map(|(t, s)| f64::from(*t) * s).sum();
            let truth = (w * (HALF_TAPS as f64 - 1.0 + d) + 0.3).sin();
            assert!((v - truth).abs() < 2e-3, "phase {k}: {v} vs {truth}");
            assert!((taps.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn latency_is_lookahead_plus_kernel_span() {
        let l = Limiter::new(48_000, 2, 0.0, DEFAULT_CEILING_DBTP);
        assert_eq!(l.latency(), 240 + 2 * HALF_TAPS - 1);
        let mut l = Limiter::new(48_000, 2, 0.0, DEFAULT_CEILING_DBTP);
        let mut out = Vec::new();
        l.process(&vec![0.1; 2 * 1000], &mut out);
        assert_eq!(out.len(), 2 * (1000 - l.latency()));
        // A partial frame is carried, not dropped.
        l.process(&[0.1], &mut out);
        l.process(&[0.1], &mut out);
        l.flush(&mut out);
        assert_eq!(out.len(), 2 * 1001);
    }
}
