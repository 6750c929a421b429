//! Encoders: interleaved `f32` PCM in, a live bitstream out — MP3 (LAME) cut into whole
//! MPEG frames, or Opus in Ogg (RFC 7845) cut into whole pages — ready to be produced into
//! a mount.
//!
//! Invariants: every append to the caller's `out` is a sequence of whole frames (MP3) or
//! whole pages (Ogg), so a mount can cut its events at those boundaries; input is taken at
//! the encoder's own rate and channel count (callers resample); nothing is buffered beyond
//! one codec frame of PCM plus the small bitstream remainder below one frame or page.

pub mod mp3;
pub mod opus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Mp3,
    Opus,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Mp3 => "MP3",
            Codec::Opus => "Opus",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Mp3 => "audio/mpeg",
            Codec::Opus => "audio/ogg",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderSettings {
    pub codec: Codec,
    /// CBR: the bitrate. MP3 VBR: selects the LAME quality level (V0..V9) whose typical
    /// average is nearest. Opus VBR: the target average.
    pub bitrate_kbps: u32,
    pub vbr: bool,
    /// Input (and, for MP3, output) sample rate in Hz.
    pub rate: u32,
    pub channels: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{codec} cannot encode at {rate} Hz; allowed sample rates: {allowed}")]
    UnsupportedRate {
        codec: &'static str,
        rate: u32,
        allowed: &'static str,
    },
    #[error("{codec} cannot encode {channels} channels; allowed: 1 (mono) or 2 (stereo)")]
    UnsupportedChannels { codec: &'static str, channels: u16 },
    #[error("{codec} cannot encode at {kbps} kbit/s here; allowed bitrates: {allowed}")]
    UnsupportedBitrate {
        codec: &'static str,
        kbps: u32,
        allowed: String,
    },
    #[error("{len} samples is not a whole number of {channels}-channel sample frames")]
    PartialSampleFrame { len: usize, channels: u16 },
    #[error("the encoder has finished its stream")]
    Finished,
    #[error("LAME: {0}")]
    Lame(String),
    #[error("LAME output is not a whole MPEG frame at byte {offset} of its pending output")]
    Misaligned { offset: usize },
    #[error("libopus: {0}")]
    Opus(String),
}

pub trait Encoder: Send {
    /// Interleaved `f32` at the encoder's rate/channels (the caller resamples). Appends
    /// only WHOLE frames (MP3) or WHOLE Ogg pages (Opus) to `out`.
    fn encode(&mut self, samples: &[f32], out: &mut Vec<u8>) -> Result<(), EncodeError>;
    /// Title change at this point in the stream (Opus: ends the logical stream and starts
    /// a new chain link whose OpusTags carry the title; MP3: no-op, the server sends ICY
    /// metadata).
    fn set_title(&mut self, title: &str, out: &mut Vec<u8>) -> Result<(), EncodeError>;
    /// End of stream: drains the codec delay and writes the final frames / EOS page.
    /// Later calls to `finish` append nothing; `encode` and (Opus) `set_title` then fail.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError>;
    /// `audio/mpeg` or `audio/ogg`.
    fn content_type(&self) -> &'static str;
    fn rate(&self) -> u32;
    fn channels(&self) -> u16;
}

pub fn new_encoder(s: &EncoderSettings) -> Result<Box<dyn Encoder>, EncodeError> {
    Ok(match s.codec {
        Codec::Mp3 => Box::new(mp3::Mp3Encoder::new(s)?),
        Codec::Opus => Box::new(opus::OpusEncoder::new(s)?),
    })
}

fn check_channels(codec: Codec, channels: u16) -> Result<(), EncodeError> {
    match channels {
        1 | 2 => Ok(()),
        _ => Err(EncodeError::UnsupportedChannels {
            codec: codec.name(),
            channels,
        }),
    }
}

fn check_whole_frames(samples: &[f32], channels: u16) -> Result<(), EncodeError> {
    if samples.len() % usize::from(channels.max(1)) != 0 {
        return Err(EncodeError::PartialSampleFrame {
            len: samples.len(),
            channels,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(codec: Codec, rate: u32, channels: u16, kbps: u32) -> EncoderSettings {
        EncoderSettings {
            codec,
            bitrate_kbps: kbps,
            vbr: false,
            rate,
            channels,
        }
    }

    #[test]
    fn rejects_bad_settings_with_the_allowed_values() {
        let err = new_encoder(&settings(Codec::Mp3, 16_000, 2, 64))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("MP3 cannot encode at 16000 Hz; allowed sample rates: 22050, 24000, 32000, 44100, 48000")
        );
        let err = new_encoder(&settings(Codec::Opus, 44_100, 2, 64))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("Opus cannot encode at 44100 Hz; allowed sample rates: 48000, 24000, 16000, 12000, 8000")
        );
        for codec in [Codec::Mp3, Codec::Opus] {
            assert!(matches!(
                new_encoder(&settings(codec, 48_000, 3, 64)),
                Err(EncodeError::UnsupportedChannels { channels: 3, .. })
            ));
        }
        let err = new_encoder(&settings(Codec::Mp3, 24_000, 2, 192))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("MP3 cannot encode at 192 kbit/s here; allowed bitrates: 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160 (CBR at 24000 Hz)")
        );
        assert!(matches!(
            new_encoder(&settings(Codec::Opus, 48_000, 2, 5)),
            Err(EncodeError::UnsupportedBitrate { kbps: 5, .. })
        ));
        assert!(matches!(
            new_encoder(&settings(Codec::Opus, 48_000, 2, 511)),
            Err(EncodeError::UnsupportedBitrate { kbps: 511, .. })
        ));
    }

    #[test]
    fn rejects_partial_sample_frames_and_use_after_finish() {
        for codec in [Codec::Mp3, Codec::Opus] {
            let mut e = new_encoder(&settings(codec, 48_000, 2, 128)).unwrap();
            let mut out = Vec::new();
            assert!(matches!(
                e.encode(&[0.0; 3], &mut out),
                Err(EncodeError::PartialSampleFrame {
                    len: 3,
                    channels: 2
                })
            ));
            e.encode(&[0.0; 960 * 2], &mut out).unwrap();
            e.finish(&mut out).unwrap();
            let len = out.len();
            e.finish(&mut out).unwrap();
            assert_eq!(out.len(), len, "a second finish appends nothing");
            assert!(matches!(
                e.encode(&[0.0; 2], &mut out),
                Err(EncodeError::Finished)
            ));
            assert_eq!(e.content_type(), codec.content_type());
            assert_eq!((e.rate(), e.channels()), (48_000, 2));
        }
    }
}
