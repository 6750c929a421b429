//! Decoded audio as it travels between decoders, resamplers and encoders: interleaved
//! `f32` samples, nominally in [-1, 1], with their rate and channel count; plus the raw PCM
//! wire formats (s16 / f32 bytes and their MIME types) that sources and bridges speak.
//!
//! Invariants: integer samples map to `f32` as `s / 32768` and back with rounding and
//! clamping, so s16 → f32 → s16 is the identity; decoded `f32` input is always finite.

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

/// Byte layout of one raw PCM sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    /// Signed 16-bit little-endian.
    S16Le,
    /// Signed 16-bit big-endian (RFC 2586 `audio/L16`).
    S16Be,
    /// IEEE 754 32-bit float, little-endian.
    F32Le,
}

impl SampleFormat {
    pub fn bytes_per_sample(self) -> usize {
        match self {
            SampleFormat::S16Le | SampleFormat::S16Be => 2,
            SampleFormat::F32Le => 4,
        }
    }
}

/// Appends the samples decoded from `bytes` to `out` (whole samples only) and returns the
/// bytes consumed, so a caller can keep a trailing partial sample for the next call.
/// Non-finite floats (NaN, ±inf) become 0.0: one bad value must not poison the filters
/// downstream.
pub fn decode_samples(format: SampleFormat, bytes: &[u8], out: &mut Vec<f32>) -> usize {
    let width = format.bytes_per_sample();
    let whole = bytes.len() / width * width;
    let bytes = &bytes[..whole];
    out.reserve(whole / width);
    match format {
        SampleFormat::S16Le => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0),
        ),
        SampleFormat::S16Be => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_be_bytes([b[0], b[1]])) / 32768.0),
        ),
        SampleFormat::F32Le => out.extend(bytes.chunks_exact(4).map(|b| {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if v.is_finite() {
                v
            } else {
                0.0
            }
        })),
    }
    whole
}

/// One `f32` sample to s16: scaled by 32768, rounded to nearest, clamped to the i16 range
/// (never wrapped); NaN becomes 0.
pub fn to_s16(sample: f32) -> i16 {
    // `as` from f32 saturates and maps NaN to 0, so no wraparound is possible.
    (sample * 32768.0).round() as i16
}

/// Appends `samples` as s16le bytes (see [`to_s16`] for rounding and clamping).
pub fn encode_s16le(samples: &[f32], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for &s in samples {
        out.extend_from_slice(&to_s16(s).to_le_bytes());
    }
}

/// Highest sample rate a raw PCM MIME type may announce.
pub const MAX_PCM_RATE: u32 = 384_000;
/// Most channels a raw PCM MIME type may announce.
pub const MAX_PCM_CHANNELS: u16 = 8;

/// Parses a raw PCM MIME type into (format, rate, channels).
///
/// Accepted (type, parameter names and values case-insensitive, whitespace around `;` and
/// `=` ignored, values may be quoted):
/// - `audio/L16;rate=R[;channels=C]`: big-endian s16 (RFC 2586 / RFC 3551); `rate` is
///   required, `channels` defaults to 1.
/// - `audio/x-raw;format=S16LE|S16BE|F32LE;rate=R[;channels=C]`: `format` and `rate`
///   required, `channels` defaults to 1; a `layout` parameter must be `interleaved`.
///
/// Returns `None` for anything else, a duplicated parameter, a rate outside
/// 1..=[`MAX_PCM_RATE`] or channels outside 1..=[`MAX_PCM_CHANNELS`]. Unknown parameters
/// are ignored.
pub fn parse_pcm_content_type(ct: &str) -> Option<(SampleFormat, u32, u16)> {
    let mut parts = ct.split(';');
    let essence = parts.next()?.trim().to_ascii_lowercase();
    let mut format = None;
    let mut rate = None;
    let mut channels = None;
    let mut layout = None;
    for part in parts {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .trim();
        let slot = match key.as_str() {
            "format" => &mut format,
            "rate" => &mut rate,
            "channels" => &mut channels,
            "layout" => &mut layout,
            _ => continue,
        };
        if slot.replace(value.to_ascii_lowercase()).is_some() {
            return None;
        }
    }
    let format = match essence.as_str() {
        "audio/l16" => match format.as_deref() {
            None => SampleFormat::S16Be,
            Some(_) => return None,
        },
        "audio/x-raw" => match format.as_deref()? {
            "s16le" => SampleFormat::S16Le,
            "s16be" => SampleFormat::S16Be,
            "f32le" => SampleFormat::F32Le,
            _ => return None,
        },
        _ => return None,
    };
    if layout.as_deref().is_some_and(|l| l != "interleaved") {
        return None;
    }
    let rate: u32 = parse_decimal(rate.as_deref()?)?;
    let channels: u16 = match channels.as_deref() {
        None => 1,
        Some(c) => parse_decimal(c)?,
    };
    if !(1..=MAX_PCM_RATE).contains(&rate) || !(1..=MAX_PCM_CHANNELS).contains(&channels) {
        return None;
    }
    Some((format, rate, channels))
}

/// Plain ASCII digits only (`str::parse` would also take a leading `+`).
fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
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

    #[test]
    fn s16_decodes_both_byte_orders() {
        let mut out = Vec::new();
        let used = decode_samples(
            SampleFormat::S16Le,
            &[0x00, 0x80, 0xff, 0x7f, 0x01],
            &mut out,
        );
        assert_eq!(used, 4);
        assert_eq!(out, vec![-1.0, 32767.0 / 32768.0]);
        out.clear();
        let used = decode_samples(SampleFormat::S16Be, &[0x80, 0x00, 0x00, 0x01], &mut out);
        assert_eq!(used, 4);
        assert_eq!(out, vec![-1.0, 1.0 / 32768.0]);
    }

    #[test]
    fn f32_keeps_partial_sample_and_zeroes_non_finite() {
        let mut bytes = Vec::new();
        for v in [0.5f32, f32::NAN, f32::INFINITY, -0.25] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&[1, 2, 3]);
        let mut out = vec![9.0];
        let used = decode_samples(SampleFormat::F32Le, &bytes, &mut out);
        assert_eq!(used, 16);
        assert_eq!(out, vec![9.0, 0.5, 0.0, 0.0, -0.25]);
        assert_eq!(SampleFormat::F32Le.bytes_per_sample(), 4);
        assert_eq!(SampleFormat::S16Be.bytes_per_sample(), 2);
    }

    #[test]
    fn s16_encode_rounds_and_clamps() {
        let mut out = Vec::new();
        encode_s16le(
            &[
                0.0,
                1.0,
                -1.0,
                2.0,
                -7.0,
                f32::NAN,
                0.4 / 32768.0,
                0.6 / 32768.0,
                -0.6 / 32768.0,
            ],
            &mut out,
        );
        let got: Vec<i16> = out
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(got, vec![0, 32767, -32768, 32767, -32768, 0, 0, 1, -1]);
    }

    proptest::proptest! {
        #[test]
        fn s16_round_trips(values in proptest::collection::vec(proptest::num::i16::ANY, 0..64)) {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut f = Vec::new();
            proptest::prop_assert_eq!(decode_samples(SampleFormat::S16Le, &bytes, &mut f), bytes.len());
            let mut back = Vec::new();
            encode_s16le(&f, &mut back);
            proptest::prop_assert_eq!(back, bytes);
        }

        #[test]
        fn content_type_parser_never_panics(s in "\\PC{0,64}") {
            let _ = parse_pcm_content_type(&s);
        }
    }

    #[test]
    fn content_types() {
        use SampleFormat::*;
        let ok = [
            ("audio/L16;rate=24000;channels=1", (S16Be, 24_000, 1)),
            ("audio/l16; rate=8000", (S16Be, 8_000, 1)),
            (
                "AUDIO/L16 ; Rate = 48000 ; CHANNELS = 2",
                (S16Be, 48_000, 2),
            ),
            (
                "audio/x-raw;format=F32LE;rate=24000;channels=1",
                (F32Le, 24_000, 1),
            ),
            (
                "audio/x-raw; format=s16le; rate=16000; channels=2",
                (S16Le, 16_000, 2),
            ),
            (
                "audio/x-raw;format=\"S16BE\";rate=\"44100\"",
                (S16Be, 44_100, 1),
            ),
            (
                "audio/x-raw;format=S16LE;rate=48000;channels=2;layout=interleaved",
                (S16Le, 48_000, 2),
            ),
            (
                "audio/x-raw;format=S16LE;rate=48000;foo=bar;",
                (S16Le, 48_000, 1),
            ),
        ];
        for (ct, want) in ok {
            assert_eq!(parse_pcm_content_type(ct), Some(want), "{ct}");
        }
        let bad = [
            "",
            "audio/L16",
            "audio/L16;channels=2",
            "audio/L16;rate=0",
            "audio/L16;rate=-8000",
            "audio/L16;rate=+8000",
            "audio/L16;rate=8k",
            "audio/L16;rate=8000;channels=0",
            "audio/L16;rate=8000;channels=9",
            "audio/L16;rate=999999999999",
            "audio/L16;rate=8000;rate=16000",
            "audio/L16;rate=8000;format=F32LE",
            "audio/L24;rate=8000",
            "audio/x-raw;rate=48000",
            "audio/x-raw;format=S24LE;rate=48000",
            "audio/x-raw;format=F32LE",
            "audio/x-raw;format=F32LE;rate=48000;layout=non-interleaved",
            "audio/mpeg",
            "audio/x-raw;format=F32LE;rate",
            "audio/x-raw;format=F32LE;rate=48000;channels=1.5",
            "\u{0}\u{ff}garbage;;;==",
        ];
        for ct in bad {
            assert_eq!(parse_pcm_content_type(ct), None, "{ct:?}");
        }
    }
}
