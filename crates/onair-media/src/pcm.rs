//! Decoded audio as it travels between decoders, resamplers and encoders: interleaved
//! `f32` samples, nominally in [-1, 1], with their rate and channel count.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pcm {
    pub rate: u32,
    pub channels: u16,
    /// Interleaved: `frames() * channels` values.
    pub samples: Vec<f32>,
}

impl Pcm {
    pub fn new(rate: u32, channels: u16, samples: Vec<f32>) -> Pcm {
        Pcm {
            rate,
            channels,
            samples,
        }
    }

    /// Sample frames (one sample per channel).
    pub fn frames(&self) -> usize {
        match self.channels {
            0 => 0,
            c => self.samples.len() / usize::from(c),
        }
    }

    /// Media time covered, from the sample count (never from a bitrate).
    pub fn duration(&self) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.frames() as u64 * 1_000_000_000 / u64::from(self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_comes_from_frames() {
        let p = Pcm::new(48_000, 2, vec![0.0; 48_000 * 2]);
        assert_eq!(p.frames(), 48_000);
        assert_eq!(p.duration(), Duration::from_secs(1));
        assert_eq!(Pcm::default().duration(), Duration::ZERO);
    }
}
