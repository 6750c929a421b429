//! Sounding notes: band-limited oscillators, ADSR envelopes and per-part timbres.
//!
//! Invariants: no oscillator produces a partial above 0.45 x rate (wavetables are chosen by
//! how many harmonics fit; FM depth is capped the same way), so nothing aliases; envelopes
//! start at zero and end at zero (linear attack, exponential release), so no note clicks.

use std::f64::consts::PI;

use super::score::{LeadTimbre, Note, Part};

/// Samples per wavetable cycle (a power of two; one guard sample follows).
const SIZE: usize = 2048;
/// Harmonic counts of the mip levels of each table shape.
const LEVELS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Highest partial allowed, as a fraction of the rate.
const BAND: f64 = 0.45;

/// Wavetables built once per programme.
pub(crate) struct Tables {
    sine: Vec<f32>,
    /// Mellow: harmonic n at 1/n^2 (bass, flute).
    warm: Vec<Vec<f32>>,
    /// Pad: harmonic n at e^(-n/6)/n, a saw with its top rolled off.
    soft: Vec<Vec<f32>>,
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    Warm,
    Soft,
}

impl Tables {
    pub(crate) fn new() -> Tables {
        let build = |amp: &dyn Fn(usize) -> f64| -> Vec<Vec<f32>> {
            LEVELS
                .iter()
                .map(|&h| table(&(1..=h).map(amp).collect::<Vec<_>>()))
                .collect()
        };
        Tables {
            sine: table(&[1.0]),
            warm: build(&|n| 1.0 / (n * n) as f64),
            soft: build(&|n| (-(n as f64) / 6.0).exp() / n as f64),
        }
    }

    /// The richest mip level whose partials all stay under the band limit at `freq`.
    fn pick(freq: f64, rate: f64) -> Option<usize> {
        let fit = (BAND * rate / freq).floor() as usize;
        LEVELS.iter().rposition(|&h| h <= fit)
    }

    fn get(&self, shape: Shape, level: usize) -> &[f32] {
        let set = match shape {
            Shape::Warm => &self.warm,
            Shape::Soft => &self.soft,
        };
        // invariant: levels come from `pick`, which indexes LEVELS, the same length as `set`.
        &set[level]
    }
}

/// One cycle of the given harmonic amplitudes, normalised to a peak of 1.
fn table(amps: &[f64]) -> Vec<f32> {
    let mut t: Vec<f64> = (0..SIZE)
        .map(|i| {
            let x = 2.0 * PI * i as f64 / SIZE as f64;
            amps.iter()
                .enumerate()
                .map(|(k, a)| a * ((k + 1) as f64 * x).sin())
                .sum()
        })
        .collect();
    let peak = t.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-9);
    t.iter_mut().for_each(|v| *v /= peak);
    let mut out: Vec<f32> = t.into_iter().map(|v| v as f32).collect();
    out.push(out[0]);
    out
}

/// Linear-interpolated lookup; `phase` in [0, 1).
#[inline]
fn lookup(t: &[f32], phase: f64) -> f32 {
    let x = phase * SIZE as f64;
    let whole = x as usize;
    let frac = (x - whole as f64) as f32;
    let i = whole & (SIZE - 1);
    t[i] + (t[i + 1] - t[i]) * frac
}

/// Keeps a phase in [0, 1) after an increment below 1.
#[inline]
fn wrap(p: f64) -> f64 {
    if p >= 1.0 {
        p - 1.0
    } else {
        p
    }
}

/// `floor` without a libm call (the default x86-64 target has no rounding instruction).
trait FloorFast {
    fn floor_fast(self) -> f64;
}

impl FloorFast for f64 {
    #[inline]
    fn floor_fast(self) -> f64 {
        let t = self as i64 as f64;
        if t > self {
            t - 1.0
        } else {
            t
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Stage {
    Attack,
    Decay,
    Release,
    Done,
}

/// ADSR with per-sample coefficients.
#[derive(Clone)]
struct Envelope {
    stage: Stage,
    level: f32,
    attack_step: f32,
    decay_coef: f32,
    sustain: f32,
    release_coef: f32,
}

impl Envelope {
    fn new(rate: f64, a: f64, d: f64, s: f32, r: f64) -> Envelope {
        Envelope {
            stage: Stage::Attack,
            level: 0.0,
            attack_step: (1.0 / (a * rate).max(1.0)) as f32,
            // Exponential segments reach ~1 % of their distance in the given time.
            decay_coef: (-4.6 / (d * rate).max(1.0)).exp() as f32,
            sustain: s,
            release_coef: (-4.6 / (r * rate).max(1.0)).exp() as f32,
        }
    }

    #[inline]
    fn next(&mut self) -> f32 {
        match self.stage {
            Stage::Attack => {
                self.level += self.attack_step;
                if self.level >= 1.0 {
                    self.level = 1.0;
                    self.stage = Stage::Decay;
                }
            }
            Stage::Decay => {
                self.level = self.sustain + (self.level - self.sustain) * self.decay_coef;
            }
            Stage::Release => {
                self.level *= self.release_coef;
                if self.level < 1e-4 {
                    self.level = 0.0;
                    self.stage = Stage::Done;
                }
            }
            Stage::Done => {}
        }
        self.level
    }

    fn release(&mut self) {
        if self.stage != Stage::Done {
            self.stage = Stage::Release;
        }
    }
}

#[derive(Clone)]
enum Osc {
    /// Wavetable; `vibrato` = (depth as a frequency ratio, rate Hz, onset frames).
    Table {
        shape: Shape,
        level: usize,
        vibrato: Option<(f64, f64, u64)>,
    },
    /// Two-operator FM: modulator at `ratio` x f, index decaying from `index` to `floor`.
    Fm {
        ratio: f64,
        index: f64,
        floor: f64,
        index_coef: f64,
        mod_phase: f64,
    },
}

/// Where a voice's output goes, per channel: dry, delay send, reverb send.
#[derive(Clone, Copy)]
pub(crate) struct Sends {
    pub delay: f32,
    pub reverb: f32,
}

#[derive(Clone)]
pub(crate) struct Voice {
    osc: Osc,
    env: Envelope,
    phase: f64,
    /// Cycles per sample.
    inc: f64,
    gain_l: f32,
    gain_r: f32,
    pub(crate) sends: Sends,
    /// Frames until the voice starts, within the current block.
    delay: u64,
    /// Frames until the key is released.
    gate: u64,
    age: u64,
    rate: f64,
}

/// Frequency of a MIDI note, A4 = 440 Hz.
fn freq(midi: f64) -> f64 {
    440.0 * ((midi - 69.0) / 12.0).exp2()
}

impl Voice {
    /// The voice for `note`, starting `delay` frames into the next block; `None` when the
    /// note's pitch is above what the rate can carry.
    pub(crate) fn new(
        note: &Note,
        lead: LeadTimbre,
        delay: u64,
        rate: u32,
        detune_cents: f64,
        pan: f32,
    ) -> Option<Voice> {
        let rate_f = f64::from(rate);
        let f = freq(note.midi + detune_cents / 100.0);
        if f >= BAND * rate_f {
            return None;
        }
        let fm = |ratio: f64, index: f64, floor: f64, tau: f64| {
            // Keep sidebands (about index + 2 of them) under the band limit.
            let room = (BAND * rate_f / (f * ratio.max(1.0)) - 2.0).max(0.0);
            Osc::Fm {
                ratio,
                index: index.min(room),
                floor: floor.min(room),
                index_coef: (-1.0 / (tau * rate_f)).exp(),
                mod_phase: 0.0,
            }
        };
        let table = |shape: Shape, vibrato: Option<(f64, f64, u64)>| {
            Tables::pick(f, rate_f).map(|level| Osc::Table {
                shape,
                level,
                vibrato,
            })
        };
        let (osc, env, level, sends) = match note.part {
            Part::Pad => (
                table(Shape::Soft, None)?,
                Envelope::new(rate_f, 1.2, 1.5, 0.8, 2.2),
                0.07,
                Sends {
                    delay: 0.0,
                    reverb: 0.45,
                },
            ),
            Part::Bass => (
                table(Shape::Warm, None)?,
                Envelope::new(rate_f, 0.008, 0.6, 0.55, 0.25),
                0.22,
                Sends {
                    delay: 0.0,
                    reverb: 0.08,
                },
            ),
            Part::Arp => (
                fm(3.0, 0.9, 0.1, 0.12),
                Envelope::new(rate_f, 0.004, 0.5, 0.08, 0.35),
                0.075,
                Sends {
                    delay: 0.45,
                    reverb: 0.35,
                },
            ),
            Part::Lead => match lead {
                LeadTimbre::Bell => (
                    fm(1.0, 1.6, 0.25, 0.35),
                    Envelope::new(rate_f, 0.005, 1.6, 0.2, 0.6),
                    0.16,
                    Sends {
                        delay: 0.35,
                        reverb: 0.4,
                    },
                ),
                LeadTimbre::Flute => (
                    table(Shape::Warm, Some((0.004, 5.0, (0.25 * rate_f) as u64)))?,
                    Envelope::new(rate_f, 0.07, 0.4, 0.75, 0.35),
                    0.13,
                    Sends {
                        delay: 0.3,
                        reverb: 0.45,
                    },
                ),
                LeadTimbre::Pluck => (
                    fm(2.0, 1.4, 0.1, 0.08),
                    Envelope::new(rate_f, 0.003, 0.7, 0.12, 0.3),
                    0.16,
                    Sends {
                        delay: 0.4,
                        reverb: 0.35,
                    },
                ),
            },
        };
        let amp = level * note.vel;
        // Constant-power pan.
        let angle = f64::from(pan.clamp(0.0, 1.0)) * PI / 2.0;
        Some(Voice {
            osc,
            env,
            phase: 0.0,
            inc: f / rate_f,
            gain_l: (amp * angle.cos() as f32),
            gain_r: (amp * angle.sin() as f32),
            sends,
            delay,
            gate: note.gate,
            age: 0,
            rate: rate_f,
        })
    }

    pub(crate) fn done(&self) -> bool {
        self.env.stage == Stage::Done
    }

    /// Current loudness, for choosing which voice to drop when too many sound.
    pub(crate) fn level(&self) -> f32 {
        if self.delay > 0 {
            1.0
        } else {
            self.env.level
        }
    }

    /// Adds this voice into the stereo `left`/`right` block.
    pub(crate) fn render(&mut self, tables: &Tables, left: &mut [f32], right: &mut [f32]) {
        let n = left.len().min(right.len());
        let skip = (self.delay.min(n as u64)) as usize;
        self.delay -= skip as u64;
        for i in skip..n {
            if self.gate == 0 {
                self.env.release();
            } else {
                self.gate -= 1;
            }
            let e = self.env.next();
            let s = match &mut self.osc {
                Osc::Table {
                    shape,
                    level,
                    vibrato,
                } => {
                    let v = lookup(tables.get(*shape, *level), self.phase);
                    let mut inc = self.inc;
                    if let Some((depth, hz, onset)) = *vibrato {
                        if self.age > onset {
                            let t = (self.age - onset) as f64 / self.rate;
                            let fade = (t / 0.5).min(1.0);
                            inc *= 1.0 + depth * fade * (2.0 * PI * hz * t).sin();
                        }
                    }
                    self.phase = wrap(self.phase + inc);
                    v
                }
                Osc::Fm {
                    ratio,
                    index,
                    floor,
                    index_coef,
                    mod_phase,
                } => {
                    let m = f64::from(lookup(&tables.sine, *mod_phase));
                    let p = self.phase + *index * m / (2.0 * PI);
                    let v = lookup(&tables.sine, p - p.floor_fast());
                    *index = *floor + (*index - *floor) * *index_coef;
                    *mod_phase = wrap(*mod_phase + self.inc * *ratio);
                    self.phase = wrap(self.phase + self.inc);
                    v
                }
            };
            let out = s * e;
            left[i] += out * self.gain_l;
            right[i] += out * self.gain_r;
            self.age += 1;
            if self.env.stage == Stage::Done {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_fit_under_the_band_limit() {
        let t = Tables::new();
        // 1 kHz at 44.1 kHz: 19 harmonics fit, so the 16-harmonic level is chosen.
        assert_eq!(Tables::pick(1000.0, 44_100.0), Some(4));
        assert_eq!(Tables::pick(21_000.0, 44_100.0), None);
        assert_eq!(Tables::pick(30.0, 44_100.0), Some(LEVELS.len() - 1));
        for set in [&t.warm, &t.soft] {
            for tab in set.iter() {
                let peak = tab.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!((peak - 1.0).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn envelope_starts_and_ends_at_zero() {
        let mut e = Envelope::new(48_000.0, 0.01, 0.1, 0.5, 0.2);
        let first = e.next();
        assert!(first > 0.0 && first < 0.01);
        for _ in 0..48_00 {
            e.next();
        }
        assert!((e.level - 0.5).abs() < 0.01);
        e.release();
        let mut n = 0;
        while e.stage != Stage::Done {
            e.next();
            n += 1;
            assert!(n < 48_000, "release never ends");
        }
        assert_eq!(e.level, 0.0);
    }
}
