//! Sample-rate conversion and channel mapping of interleaved `f32` PCM, for streams.
//!
//! A [`Resampler`] takes input blocks of any length (even partial frames) and appends
//! whatever output the input so far determines. It is built on rubato's windowed-sinc
//! resampler; the filter spans 192 samples of the lower rate with a squared Blackman-Harris
//! window and its cutoff at 0.93 of the lower Nyquist frequency (48 kHz → 16 kHz: flat
//! within 0.001 dB to 7 kHz, stop band from 8 kHz attenuated by more than 120 dB).
//!
//! Invariants:
//! - Output is time-aligned with input: the filter's start-up delay is trimmed, so output
//!   frame `k` is the signal at input time `k / out_rate`.
//! - No drift: after [`Resampler::flush`] the stream produced exactly
//!   `round(in_frames * out_rate / in_rate)` frames, however the input was cut.
//! - Channel reduction (downmix = mean of the input channels) happens before the filter and
//!   expansion (upmix = copy) after it, so the filter runs on the fewest channels.
//! - Same rate in and out is a passthrough: only the channel map runs, no delay.
//! - Memory is bounded: one chunk (10 ms) of pending input per filtered channel, and a
//!   filter table of at most [`MAX_TABLE`] coefficients.

use rubato::{Resampler as _, SincFixedIn, SincInterpolationParameters, SincInterpolationType};

use crate::pcm::MAX_PCM_CHANNELS;

/// Lowest sample rate accepted.
pub const MIN_RATE: u32 = 1_000;
/// Highest sample rate accepted.
pub const MAX_RATE: u32 = 384_000;
/// Largest ratio between the two rates, either way.
pub const MAX_RATIO: u32 = 16;

/// Filter span in samples at the lower of the two rates. With the squared Blackman-Harris
/// window the transition band is the top 1/8 of the lower Nyquist band. Measured at
/// 48 → 16 kHz: 160 leaves -98 dB at the stop-band edge, 176 -126 dB, 192 reaches the f32
/// floor (~-130 dB); longer spans only cost time.
const FILTER_SPAN: usize = 192;
/// Cutoff relative to the lower Nyquist frequency, in the middle of the transition band.
const CUTOFF: f32 = 0.93;
const WINDOW: rubato::WindowFunction = rubato::WindowFunction::BlackmanHarris2;
/// Largest exact polyphase filter table, in coefficients; for rate pairs that would need a
/// bigger one the resampler interpolates between 256 phases instead.
pub const MAX_TABLE: usize = 1 << 20;
/// Candidates tried when aligning output time without an exact phase table.
const ALIGN_SEARCH: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error("sample rate {0} Hz is outside {MIN_RATE}..={MAX_RATE}")]
    Rate(u32),
    #[error("rates {in_rate} Hz and {out_rate} Hz are more than {MAX_RATIO}x apart")]
    Ratio { in_rate: u32, out_rate: u32 },
    #[error("cannot map {from} channels to {to} (same count, or to/from mono, up to {MAX_PCM_CHANNELS})")]
    Channels { from: u16, to: u16 },
    #[error("resampler setup: {0}")]
    Setup(#[from] rubato::ResamplerConstructionError),
}

/// How input channels become output channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Map {
    /// Same count: channel i → channel i.
    Same,
    /// Many → mono: mean of the input channels.
    Down,
    /// Mono → many: the one channel copied to each.
    Up,
}

pub struct Resampler {
    in_rate: u32,
    out_rate: u32,
    in_channels: usize,
    out_channels: usize,
    map: Map,
    /// Samples of an incomplete input frame, kept for the next `process` call.
    partial: Vec<f32>,
    /// Input frames accepted since the stream started.
    in_frames: u64,
    /// Output frames emitted since the stream started.
    out_frames: u64,
    /// `None` when the rates are equal.
    filter: Option<Filter>,
}

struct Filter {
    sinc: SincFixedIn<f32>,
    /// One chunk per filtered channel, deinterleaved; `fill` frames are valid.
    pending: Vec<Vec<f32>>,
    fill: usize,
    /// Filter output of one chunk, deinterleaved.
    scratch: Vec<Vec<f32>>,
    /// Output frames still to drop at the start of the stream.
    skip: usize,
    /// Alignment (see [`Filter::alignment`]): zero input frames fed before the stream, and
    /// output frames dropped after them.
    lead_in: usize,
    lead_out: usize,
    /// Latency in output frames, not counting the pending chunk.
    delay: usize,
}

impl Resampler {
    pub fn new(
        in_rate: u32,
        in_channels: u16,
        out_rate: u32,
        out_channels: u16,
    ) -> Result<Resampler, ResampleError> {
        for rate in [in_rate, out_rate] {
            if !(MIN_RATE..=MAX_RATE).contains(&rate) {
                return Err(ResampleError::Rate(rate));
            }
        }
        if in_rate.max(out_rate) > in_rate.min(out_rate) * MAX_RATIO {
            return Err(ResampleError::Ratio { in_rate, out_rate });
        }
        let channels_ok = (1..=MAX_PCM_CHANNELS).contains(&in_channels)
            && (1..=MAX_PCM_CHANNELS).contains(&out_channels);
        let map = match (in_channels, out_channels) {
            _ if !channels_ok => None,
            (a, b) if a == b => Some(Map::Same),
            (_, 1) => Some(Map::Down),
            (1, _) => Some(Map::Up),
            _ => None,
        }
        .ok_or(ResampleError::Channels {
            from: in_channels,
            to: out_channels,
        })?;
        let filtered = usize::from(in_channels.min(out_channels));
        let filter = if in_rate == out_rate {
            None
        } else {
            Some(Filter::new(in_rate, out_rate, filtered)?)
        };
        Ok(Resampler {
            in_rate,
            out_rate,
            in_channels: usize::from(in_channels),
            out_channels: usize::from(out_channels),
            map,
            partial: Vec::with_capacity(usize::from(in_channels)),
            in_frames: 0,
            out_frames: 0,
            filter,
        })
    }

    /// Feeds interleaved input of any length and appends the interleaved output it
    /// completes. An incomplete trailing frame is kept for the next call.
    pub fn process(&mut self, mut input: &[f32], out: &mut Vec<f32>) {
        if !self.partial.is_empty() {
            let need = self.in_channels - self.partial.len();
            let take = need.min(input.len());
            self.partial.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.partial.len() < self.in_channels {
                return;
            }
            let frame = std::mem::take(&mut self.partial);
            self.push_frames(&frame, out);
            self.partial = frame;
            self.partial.clear();
        }
        let whole = input.len() / self.in_channels * self.in_channels;
        self.push_frames(&input[..whole], out);
        self.partial.extend_from_slice(&input[whole..]);
    }

    /// Ends the stream: drains the filter so that the output totals
    /// `round(in_frames * out_rate / in_rate)` frames, then resets to a fresh stream. An
    /// incomplete trailing input frame is dropped.
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        let expected = self.expected_out_frames();
        if let Some(f) = &mut self.filter {
            while self.out_frames < expected {
                for ch in &mut f.pending {
                    ch[f.fill..].fill(0.0);
                }
                f.fill = f.pending[0].len();
                f.run(
                    self.map,
                    self.out_channels,
                    expected,
                    &mut self.out_frames,
                    out,
                );
            }
            f.reset();
        }
        self.partial.clear();
        self.in_frames = 0;
        self.out_frames = 0;
    }

    /// Output frames the input so far determines but that are still held inside (filter
    /// delay plus the pending chunk); `flush` emits them. 0 for a passthrough.
    pub fn delay_frames(&self) -> usize {
        // Emission never runs ahead of the input, so this does not underflow.
        usize::try_from(self.expected_out_frames().saturating_sub(self.out_frames))
            .unwrap_or(usize::MAX)
    }

    /// The filter's fixed latency in output frames (what `delay_frames` approaches right
    /// after a chunk boundary); 0 for a passthrough.
    pub fn filter_delay_frames(&self) -> usize {
        self.filter.as_ref().map_or(0, |f| f.delay)
    }

    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    pub fn out_rate(&self) -> u32 {
        self.out_rate
    }

    fn expected_out_frames(&self) -> u64 {
        let (num, den) = (u128::from(self.out_rate), u128::from(self.in_rate));
        let frames = (u128::from(self.in_frames) * num + den / 2) / den;
        u64::try_from(frames).unwrap_or(u64::MAX)
    }

    /// `frames` holds whole input frames.
    fn push_frames(&mut self, frames: &[f32], out: &mut Vec<f32>) {
        let ic = self.in_channels;
        self.in_frames += (frames.len() / ic) as u64;
        let Some(f) = &mut self.filter else {
            out.reserve(frames.len() / ic * self.out_channels);
            for frame in frames.chunks_exact(ic) {
                match self.map {
                    Map::Same => out.extend_from_slice(frame),
                    Map::Down => out.push(mean(frame)),
                    Map::Up => out.extend(std::iter::repeat_n(frame[0], self.out_channels)),
                }
            }
            self.out_frames += (frames.len() / ic) as u64;
            return;
        };
        let chunk = f.pending[0].len();
        let mut rest = frames;
        while !rest.is_empty() {
            let take = (chunk - f.fill).min(rest.len() / ic);
            let (now, later) = rest.split_at(take * ic);
            let at = f.fill;
            match self.map {
                Map::Same => {
                    for (i, frame) in now.chunks_exact(ic).enumerate() {
                        for (ch, &s) in f.pending.iter_mut().zip(frame) {
                            ch[at + i] = s;
                        }
                    }
                }
                Map::Down => {
                    let dst = &mut f.pending[0][at..at + take];
                    for (d, frame) in dst.iter_mut().zip(now.chunks_exact(ic)) {
                        *d = mean(frame);
                    }
                }
                Map::Up => f.pending[0][at..at + take].copy_from_slice(now),
            }
            f.fill += take;
            rest = later;
            if f.fill == chunk {
                f.run(
                    self.map,
                    self.out_channels,
                    u64::MAX,
                    &mut self.out_frames,
                    out,
                );
            }
        }
    }
}

fn mean(frame: &[f32]) -> f32 {
    frame.iter().sum::<f32>() / frame.len() as f32
}

impl Filter {
    fn new(in_rate: u32, out_rate: u32, channels: usize) -> Result<Filter, ResampleError> {
        let ratio = f64::from(out_rate) / f64::from(in_rate);
        let low = in_rate.min(out_rate) as usize;
        // The span is fixed in samples of the lower rate, so the transition band is the
        // same fraction of the output band whatever the ratio.
        let sinc_len = (FILTER_SPAN * in_rate as usize)
            .div_ceil(low)
            .next_multiple_of(8);
        // Output instants fall on multiples of 1/phases of an input period. When that
        // table is small enough, use it exactly (one dot product per output sample, no
        // interpolation error); otherwise interpolate cubically between 256 phases.
        let g = gcd(in_rate, out_rate);
        let phases = (out_rate / g) as usize;
        let (oversampling_factor, interpolation) = if phases * sinc_len <= MAX_TABLE {
            (phases, SincInterpolationType::Nearest)
        } else {
            (256, SincInterpolationType::Cubic)
        };
        let params = SincInterpolationParameters {
            sinc_len,
            f_cutoff: CUTOFF,
            oversampling_factor,
            interpolation,
            window: WINDOW,
        };
        // 10 ms chunks: small latency, and the per-chunk overhead (moving 2 * sinc_len
        // samples of history) stays below the filtering work.
        let chunk = (in_rate as usize / 100).max(64);
        let sinc = SincFixedIn::new(ratio, 1.0, params, chunk, channels)?;
        let out_max = sinc.output_frames_max();
        let step = f64::from(in_rate) / f64::from(out_rate);
        let (lead_in, lead_out) = Filter::alignment(step, oversampling_factor);
        // Output lags the input by half the filter plus rubato's safety margin.
        let delay = ((sinc_len as f64 / 2.0 + step.ceil() + 2.0) * ratio).ceil() as usize;
        let mut f = Filter {
            sinc,
            pending: vec![vec![0.0; chunk]; channels],
            fill: 0,
            scratch: vec![vec![0.0; out_max]; channels],
            skip: 0,
            lead_in,
            lead_out,
            delay,
        };
        f.reset();
        Ok(f)
    }

    /// rubato's output frame `n` is the input at time `(n + 1) * step - 1 + 1 / phases`
    /// (in input frames; from its start index and its sinc table layout). To make output
    /// frame `k` the input at `k * step`, feed `z` zero frames first and drop the first `s`
    /// outputs, where `z = (s + 1) * step - 1 + 1 / phases` is a whole number. With an exact
    /// phase table (`phases` = out_rate / gcd) some `s` < `phases` makes it exact; otherwise
    /// the `s` up to [`ALIGN_SEARCH`] that comes closest is taken (off by ~1/8192 of an
    /// input frame). The lead-in costs start-up work only: the latency of real input is
    /// unchanged.
    fn alignment(step: f64, phases: usize) -> (usize, usize) {
        let mut best = (f64::INFINITY, 0, 0);
        for s in 0..phases.max(ALIGN_SEARCH) {
            let z = (s + 1) as f64 * step - 1.0 + 1.0 / phases as f64;
            let whole = z.round();
            if whole < 0.0 {
                continue;
            }
            let off = (z - whole).abs();
            if off < best.0 {
                best = (off, whole as usize, s);
            }
            if off < 1e-9 {
                break;
            }
        }
        (best.1, best.2)
    }

    /// Filters the full pending chunk and appends its output (past the start-up delay,
    /// and up to `limit` frames in total) interleaved to `out`.
    fn run(
        &mut self,
        map: Map,
        out_channels: usize,
        limit: u64,
        emitted: &mut u64,
        out: &mut Vec<f32>,
    ) {
        let (_, produced) = self
            .sinc
            .process_into_buffer(&self.pending, &mut self.scratch, None)
            // invariant: `pending` holds exactly one chunk and `scratch` output_frames_max
            // frames per channel, the sizes rubato asks for.
            .expect("buffers sized by the resampler itself");
        self.fill = 0;
        let start = self.skip.min(produced);
        self.skip -= start;
        let room = usize::try_from(limit.saturating_sub(*emitted)).unwrap_or(usize::MAX);
        let end = produced.min(start.saturating_add(room));
        if end <= start {
            return;
        }
        out.reserve((end - start) * out_channels);
        match map {
            Map::Up => {
                for &s in &self.scratch[0][start..end] {
                    out.extend(std::iter::repeat_n(s, out_channels));
                }
            }
            Map::Down => out.extend_from_slice(&self.scratch[0][start..end]),
            Map::Same => {
                for i in start..end {
                    out.extend(self.scratch.iter().map(|ch| ch[i]));
                }
            }
        }
        *emitted += (end - start) as u64;
    }

    fn reset(&mut self) {
        self.sinc.reset();
        self.fill = 0;
        self.skip = self.lead_out;
        let chunk = self.pending[0].len();
        let mut left = self.lead_in;
        while left > 0 {
            let n = left.min(chunk - self.fill);
            for ch in &mut self.pending {
                ch[self.fill..self.fill + n].fill(0.0);
            }
            self.fill += n;
            left -= n;
            if self.fill == chunk {
                // Lead-in output is all before time 0, inside the `lead_out` frames skipped.
                let (mut sink, mut emitted) = (Vec::new(), 0);
                self.run(Map::Down, 1, u64::MAX, &mut emitted, &mut sink);
                debug_assert!(sink.is_empty());
            }
        }
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// Interleaved tone of `channels` identical channels.
    fn tone(rate: u32, channels: u16, freq: f64, amp: f64, frames: usize) -> Vec<f32> {
        (0..frames)
            .flat_map(|i| {
                let v = (amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32;
                std::iter::repeat_n(v, usize::from(channels))
            })
            .collect()
    }

    /// Amplitude of the `freq` component of `x` (coherent: `x` spans whole periods).
    fn amplitude(x: &[f32], freq: f64, rate: u32) -> f64 {
        let w = 2.0 * PI * freq / f64::from(rate);
        let (mut re, mut im) = (0.0, 0.0);
        for (n, &v) in x.iter().enumerate() {
            re += f64::from(v) * (w * n as f64).cos();
            im -= f64::from(v) * (w * n as f64).sin();
        }
        2.0 * (re * re + im * im).sqrt() / x.len() as f64
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    fn db(x: f64) -> f64 {
        20.0 * x.log10()
    }

    fn run(r: &mut Resampler, input: &[f32], block: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for b in input.chunks(block) {
            r.process(b, &mut out);
        }
        r.flush(&mut out);
        out
    }

    /// Deterministic block sizes (xorshift), so a failure reproduces.
    struct Blocks(u64);
    impl Blocks {
        fn next(&mut self, max: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % max as u64) as usize
        }
    }

    #[test]
    fn pass_band_keeps_amplitude_48k_stereo_to_16k_mono() {
        let mut r = Resampler::new(48_000, 2, 16_000, 1).unwrap();
        for f in [50.0, 440.0, 1000.0, 3000.0, 5000.0, 6500.0, 7000.0] {
            let out = run(&mut r, &tone(48_000, 2, f, 0.5, 48_000 * 2), 4096);
            assert_eq!(out.len(), 32_000);
            // One second of steady state, clear of the start and end transients.
            let gain = db(amplitude(&out[8_000..24_000], f, 16_000) / 0.5);
            assert!(gain.abs() < 0.1, "{f} Hz: {gain:.4} dB");
        }
    }

    #[test]
    fn stop_band_is_attenuated_90_db() {
        let mut r = Resampler::new(48_000, 2, 16_000, 1).unwrap();
        for f in [8_200.0, 10_000.0, 12_000.0, 20_000.0] {
            let out = run(&mut r, &tone(48_000, 2, f, 0.5, 48_000 * 2), 4096);
            let seg = &out[8_000..24_000];
            let alias = 16_000.0 - f;
            let alias = if alias < 0.0 { -alias } else { alias };
            let at_alias = db(amplitude(seg, alias, 16_000) / 0.5);
            // Everything that came through, wherever it landed.
            let total = db(rms(seg) * 2f64.sqrt() / 0.5);
            assert!(at_alias < -90.0, "{f} Hz -> {alias} Hz: {at_alias:.1} dB");
            assert!(total < -90.0, "{f} Hz: total {total:.1} dB");
        }
    }

    #[test]
    fn upsampling_keeps_tone_frequency_and_phase() {
        for (in_rate, f) in [
            (44_100, 1000.0),
            (44_100, 15_000.0),
            (24_000, 5000.0),
            (24_000, 997.0),
        ] {
            let mut r = Resampler::new(in_rate, 1, 48_000, 1).unwrap();
            let out = run(
                &mut r,
                &tone(in_rate, 1, f, 0.5, in_rate as usize * 2),
                1000,
            );
            assert_eq!(out.len(), 96_000);
            let seg = &out[24_000..72_000];
            let gain = db(amplitude(seg, f, 48_000) / 0.5);
            assert!(gain.abs() < 0.1, "{in_rate} -> 48000, {f} Hz: {gain:.4} dB");
            // Time alignment: output frame k is the input signal at k / 48000 s.
            let want = tone(48_000, 1, f, 0.5, 96_000);
            let err: Vec<f32> = seg
                .iter()
                .zip(&want[24_000..72_000])
                .map(|(a, b)| a - b)
                .collect();
            let err = db(rms(&err) * 2f64.sqrt() / 0.5);
            assert!(
                err < -80.0,
                "{in_rate} -> 48000, {f} Hz: residual {err:.1} dB"
            );
        }
    }

    #[test]
    fn other_ratios_are_time_aligned() {
        // 47,999 Hz has no small phase table: the interpolated (cubic) path.
        for (in_rate, out_rate, f, bound) in [
            (48_000, 16_000, 1000.0, -80.0),
            (48_000, 44_100, 3000.0, -80.0),
            (44_100, 16_000, 440.0, -80.0),
            (44_100, 47_999, 2000.0, -80.0),
            (47_999, 16_000, 1000.0, -80.0),
            (11_025, 16_000, 3000.0, -80.0),
        ] {
            let mut r = Resampler::new(in_rate, 1, out_rate, 1).unwrap();
            let out = run(&mut r, &tone(in_rate, 1, f, 0.5, in_rate as usize * 2), 777);
            let want = tone(out_rate, 1, f, 0.5, out_rate as usize * 2);
            assert_eq!(out.len(), want.len());
            let (a, b) = (out_rate as usize / 2, out_rate as usize * 3 / 2);
            let err: Vec<f32> = out[a..b]
                .iter()
                .zip(&want[a..b])
                .map(|(x, y)| x - y)
                .collect();
            let err = db(rms(&err) * 2f64.sqrt() / 0.5);
            assert!(err < bound, "{in_rate} -> {out_rate}: residual {err:.1} dB");
        }
    }

    #[test]
    fn output_count_is_exact_and_lag_stays_bounded() {
        // Three minutes per pair in random blocks, checked after every block.
        for (in_rate, in_ch, out_rate, out_ch) in [
            (48_000, 2, 16_000, 1),
            (44_100, 2, 48_000, 2),
            (48_000, 1, 44_100, 2),
            (8_000, 1, 48_000, 1),
            (48_000, 2, 48_000, 1),
        ] {
            let mut r = Resampler::new(in_rate, in_ch, out_rate, out_ch).unwrap();
            let mut blocks = Blocks(0x9e37_79b9_7f4a_7c15 ^ u64::from(in_rate + out_rate));
            let total = in_rate as usize * 180;
            let block_src = vec![0.25f32; 8192 * usize::from(in_ch)];
            let (mut fed, mut out) = (0usize, Vec::new());
            let mut produced = 0usize;
            let bound = r.filter_delay_frames() + out_rate as usize / 100 + 2;
            while fed < total {
                let n = blocks.next(8192).min(total - fed);
                r.process(&block_src[..n * usize::from(in_ch)], &mut out);
                fed += n;
                produced += out.len() / usize::from(out_ch);
                out.clear();
                let expected = (fed as u64 * u64::from(out_rate) + u64::from(in_rate) / 2)
                    / u64::from(in_rate);
                assert_eq!(produced as u64 + r.delay_frames() as u64, expected);
                assert!(
                    r.delay_frames() <= bound,
                    "lag {} > {bound}",
                    r.delay_frames()
                );
            }
            r.flush(&mut out);
            produced += out.len() / usize::from(out_ch);
            let expected =
                (total as u64 * u64::from(out_rate) + u64::from(in_rate) / 2) / u64::from(in_rate);
            assert_eq!(
                produced as u64, expected,
                "{in_rate}/{in_ch} -> {out_rate}/{out_ch}"
            );
            assert_eq!(out.len() % usize::from(out_ch), 0);
        }
    }

    #[test]
    fn one_hour_count_arithmetic_is_exact() {
        let mut r = Resampler::new(48_000, 1, 44_100, 1).unwrap();
        r.in_frames = 48_000 * 3600;
        assert_eq!(r.expected_out_frames(), 44_100 * 3600);
        r.in_frames = 48_000 * 3600 + 1;
        assert_eq!(r.expected_out_frames(), 44_100 * 3600 + 1);
        r.in_frames = u64::MAX / 2;
        assert!(r.expected_out_frames() < u64::MAX / 2);
    }

    #[test]
    fn channel_maps() {
        // Same rate: exact mean and copy, no delay.
        let mut r = Resampler::new(48_000, 2, 48_000, 1).unwrap();
        let mut out = Vec::new();
        r.process(&[0.5, -0.25, 1.0, 0.0, 0.2], &mut out);
        assert_eq!(out, vec![0.125, 0.5]);
        assert_eq!(r.delay_frames(), 0);
        r.process(&[0.4], &mut out);
        assert_eq!(out, vec![0.125, 0.5, 0.3f32]);
        let mut r = Resampler::new(48_000, 1, 48_000, 2).unwrap();
        out.clear();
        r.process(&[0.5, -0.25], &mut out);
        assert_eq!(out, vec![0.5, 0.5, -0.25, -0.25]);
        // Resampled: upmix after the filter gives identical channels; downmix before it
        // gives the filtered mean.
        let mono = tone(44_100, 1, 1000.0, 0.5, 44_100);
        let mut up = Resampler::new(44_100, 1, 48_000, 2).unwrap();
        let stereo = run(&mut up, &mono, 1000);
        assert!(stereo.chunks_exact(2).all(|f| f[0] == f[1]));
        let mut plain = Resampler::new(44_100, 1, 48_000, 1).unwrap();
        let want = run(&mut plain, &mono, 1000);
        let left: Vec<f32> = stereo.iter().step_by(2).copied().collect();
        assert_eq!(left, want);
        let lr: Vec<f32> = mono.iter().flat_map(|&v| [v, -v * 0.5]).collect();
        let mut down = Resampler::new(44_100, 2, 48_000, 1).unwrap();
        let got = run(&mut down, &lr, 999);
        let quarter: Vec<f32> = mono.iter().map(|&v| v * 0.25).collect();
        let mut plain = Resampler::new(44_100, 1, 48_000, 1).unwrap();
        let want = run(&mut plain, &quarter, 999);
        assert_eq!(got.len(), want.len());
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn block_boundaries_do_not_change_output() {
        let input = tone(44_100, 2, 3000.0, 0.5, 20_000);
        let mut r = Resampler::new(44_100, 2, 16_000, 2).unwrap();
        let whole = run(&mut r, &input, input.len());
        // Same resampler again (flush reset it), fed one sample at a time: partial frames.
        let mut out = Vec::new();
        for s in &input {
            r.process(std::slice::from_ref(s), &mut out);
        }
        r.flush(&mut out);
        assert_eq!(out, whole);
    }

    #[test]
    fn moves_to_a_worker_thread() {
        fn is_send<T: Send>(_: &T) {}
        is_send(&Resampler::new(44_100, 2, 48_000, 2).unwrap());
    }

    #[test]
    fn rejects_bad_setups() {
        assert!(matches!(
            Resampler::new(0, 1, 48_000, 1),
            Err(ResampleError::Rate(0))
        ));
        assert!(matches!(
            Resampler::new(48_000, 1, 500_000, 1),
            Err(ResampleError::Rate(_))
        ));
        assert!(matches!(
            Resampler::new(192_000, 1, 8_000, 1),
            Err(ResampleError::Ratio { .. })
        ));
        assert!(matches!(
            Resampler::new(48_000, 3, 48_000, 2),
            Err(ResampleError::Channels { .. })
        ));
        assert!(matches!(
            Resampler::new(48_000, 0, 48_000, 0),
            Err(ResampleError::Channels { .. })
        ));
        assert!(matches!(
            Resampler::new(48_000, 9, 48_000, 9),
            Err(ResampleError::Channels { .. })
        ));
        assert!(Resampler::new(48_000, 6, 16_000, 1).is_ok());
        assert!(Resampler::new(8_000, 1, 48_000, 6).is_ok());
    }
}
