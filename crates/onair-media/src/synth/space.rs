//! The room around the instruments: a ping-pong echo and a small feedback-delay-network
//! reverb.
//!
//! Invariants: fixed-size buffers allocated once (nothing grows while playing); every
//! feedback loop has a gain below one and a low-pass, so tails decay and stay soft.

/// Stereo echo bouncing between left and right, darker on each repeat.
pub(crate) struct PingPong {
    left: Vec<f32>,
    right: Vec<f32>,
    pos: usize,
    feedback: f32,
    damp: f32,
    lp_l: f32,
    lp_r: f32,
}

impl PingPong {
    pub(crate) fn new(rate: u32, secs: f64, feedback: f32) -> PingPong {
        let len = ((secs * f64::from(rate)) as usize).clamp(1, 2 * rate.max(1) as usize);
        PingPong {
            left: vec![0.0; len],
            right: vec![0.0; len],
            pos: 0,
            feedback: feedback.clamp(0.0, 0.9),
            damp: 0.35,
            lp_l: 0.0,
            lp_r: 0.0,
        }
    }

    #[inline]
    pub(crate) fn process(&mut self, input: f32) -> (f32, f32) {
        let (dl, dr) = (self.left[self.pos], self.right[self.pos]);
        self.lp_l += self.damp * (dl - self.lp_l);
        self.lp_r += self.damp * (dr - self.lp_r);
        // The dry send enters on the left; each side's echo feeds the other side.
        self.left[self.pos] = input + self.lp_r * self.feedback;
        self.right[self.pos] = self.lp_l * self.feedback;
        self.pos += 1;
        if self.pos == self.left.len() {
            self.pos = 0;
        }
        (dl, dr)
    }
}

const LINES: usize = 8;
/// Delay-line lengths (ms): mutually prime-ish so the modes spread evenly.
const LINE_MS: [f64; LINES] = [23.1, 27.7, 31.9, 35.3, 39.7, 43.9, 47.3, 53.1];

/// Eight-line feedback delay network with a Hadamard mixing matrix.
pub(crate) struct Reverb {
    lines: Vec<Vec<f32>>,
    pos: [usize; LINES],
    gain: [f32; LINES],
    lp: [f32; LINES],
    damp: f32,
}

impl Reverb {
    pub(crate) fn new(rate: u32, rt60_secs: f64) -> Reverb {
        let rate = f64::from(rate.max(1));
        let mut gain = [0.0; LINES];
        let lines = LINE_MS
            .iter()
            .enumerate()
            .map(|(i, ms)| {
                let len = ((ms / 1000.0 * rate) as usize).max(1);
                // -60 dB after rt60: each pass through a line loses its share.
                gain[i] = 10f64.powf(-3.0 * len as f64 / (rt60_secs * rate)) as f32;
                vec![0.0; len]
            })
            .collect();
        Reverb {
            lines,
            pos: [0; LINES],
            gain,
            lp: [0.0; LINES],
            damp: 0.45,
        }
    }

    #[inline]
    pub(crate) fn process(&mut self, in_l: f32, in_r: f32) -> (f32, f32) {
        let mut s = [0.0f32; LINES];
        for (i, v) in s.iter_mut().enumerate() {
            let o = self.lines[i][self.pos[i]];
            self.lp[i] += self.damp * (o - self.lp[i]);
            *v = self.lp[i];
        }
        let (out_l, out_r) = (s[0] + s[2] + s[4] + s[6], s[1] + s[3] + s[5] + s[7]);
        hadamard8(&mut s);
        for (i, &v) in s.iter().enumerate() {
            let input = if i % 2 == 0 { in_l } else { in_r };
            let line = &mut self.lines[i];
            line[self.pos[i]] = input + self.gain[i] * v;
            self.pos[i] += 1;
            if self.pos[i] == line.len() {
                self.pos[i] = 0;
            }
        }
        (out_l * 0.25, out_r * 0.25)
    }
}

/// In-place orthonormal 8-point Hadamard transform (energy preserving).
#[inline]
fn hadamard8(x: &mut [f32; LINES]) {
    let mut h = 1;
    while h < LINES {
        for i in (0..LINES).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (x[j], x[j + h]);
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
        h *= 2;
    }
    let norm = 1.0 / (LINES as f32).sqrt();
    x.iter_mut().for_each(|v| *v *= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverb_tail_decays() {
        let mut r = Reverb::new(48_000, 2.0);
        r.process(1.0, 1.0);
        let energy = |r: &mut Reverb, n: usize| -> f32 {
            (0..n)
                .map(|_| {
                    let (l, r) = r.process(0.0, 0.0);
                    l * l + r * r
                })
                .sum()
        };
        let early = energy(&mut r, 24_000);
        let _ = energy(&mut r, 72_000);
        let late = energy(&mut r, 24_000);
        assert!(early > 0.0);
        // Two seconds on, more than 50 dB down.
        assert!(late < early * 1e-5, "early {early}, late {late}");
    }

    #[test]
    fn hadamard_preserves_energy() {
        let mut x = [1.0, -2.0, 0.5, 0.0, 3.0, 1.0, -1.0, 2.0];
        let before: f32 = x.iter().map(|v| v * v).sum();
        hadamard8(&mut x);
        let after: f32 = x.iter().map(|v| v * v).sum();
        assert!((before - after).abs() < 1e-4);
    }
}
