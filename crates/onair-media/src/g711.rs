//! ITU-T G.711 companded 8-bit audio (μ-law and A-law, 8 kHz telephony) to `f32` PCM.
//!
//! Each byte is one sample. Decoding follows the G.711 segment tables: μ-law yields the
//! 14-bit range ±8031 scaled by 4 (±32124), A-law the 13-bit range ±4032 scaled by 8
//! (±32256); both are then divided by 32768 like every other integer format here.

/// 16-bit linear value of a μ-law code.
const fn ulaw_to_linear(code: u8) -> i16 {
    // Codes are transmitted inverted.
    let u = !code;
    let mantissa = (u & 0x0f) as i16;
    let exponent = (u >> 4) & 0x07;
    // Bias of 0x84 (132) makes each segment an exact power-of-two scale of the mantissa.
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// 16-bit linear value of an A-law code.
const fn alaw_to_linear(code: u8) -> i16 {
    // Even bits are transmitted inverted.
    let a = code ^ 0x55;
    let mantissa = (a & 0x0f) as i16;
    let exponent = (a >> 4) & 0x07;
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    // A-law's sign bit set means positive.
    if a & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }
}

/// Linear values of all 256 codes of one law, computed at compile time.
macro_rules! code_table {
    ($law:ident) => {{
        let mut t = [0i16; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = $law(i as u8);
            i += 1;
        }
        t
    }};
}

const ULAW: [i16; 256] = code_table!(ulaw_to_linear);
const ALAW: [i16; 256] = code_table!(alaw_to_linear);

/// Appends one `f32` sample per μ-law byte.
pub fn decode_ulaw(bytes: &[u8], out: &mut Vec<f32>) {
    out.extend(
        bytes
            .iter()
            .map(|&b| f32::from(ULAW[usize::from(b)]) / 32768.0),
    );
}

/// Appends one `f32` sample per A-law byte.
pub fn decode_alaw(bytes: &[u8], out: &mut Vec<f32>) {
    out.extend(
        bytes
            .iter()
            .map(|&b| f32::from(ALAW[usize::from(b)]) / 32768.0),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(f: fn(&[u8], &mut Vec<f32>), codes: &[u8]) -> Vec<i32> {
        let mut out = Vec::new();
        f(codes, &mut out);
        out.iter().map(|v| (v * 32768.0) as i32).collect()
    }

    #[test]
    fn ulaw_known_code_points() {
        // 0xff / 0x7f are the two zeros, 0x80 / 0x00 the extremes (G.711 table 2a).
        assert_eq!(
            linear(
                decode_ulaw,
                &[0xff, 0x7f, 0x80, 0x00, 0xfe, 0x7e, 0xf0, 0xef, 0xdf]
            ),
            vec![0, 0, 32124, -32124, 8, -8, 120, 132, 396]
        );
    }

    #[test]
    fn alaw_known_code_points() {
        // 0xd5 / 0x55 are the smallest magnitudes, 0xaa / 0x2a the extremes (table 1a).
        assert_eq!(
            linear(
                decode_alaw,
                &[0xd5, 0x55, 0xaa, 0x2a, 0xd4, 0xc5, 0xf5, 0x80]
            ),
            vec![8, -8, 32256, -32256, 24, 264, 528, 5504]
        );
    }

    #[test]
    fn both_laws_are_odd_symmetric_and_monotonic() {
        for (name, t, neg) in [("ulaw", &ULAW, 0x80u8), ("alaw", &ALAW, 0x80u8)] {
            for c in 0..=255u8 {
                assert_eq!(t[usize::from(c)], -t[usize::from(c ^ neg)], "{name} {c:#x}");
            }
        }
        // Within one sign half, magnitude grows as the (de-inverted) code grows.
        let mut prev = -1;
        for c in (0x80..=0xffu8).rev() {
            let v = i32::from(ULAW[usize::from(c)]);
            assert!(v > prev, "ulaw {c:#x}");
            prev = v;
        }
        let mut prev = 0;
        for k in 0..=0x7fu8 {
            let v = i32::from(ALAW[usize::from((k | 0x80) ^ 0x55)]);
            assert!(v > prev, "alaw {k:#x}");
            prev = v;
        }
    }
}
