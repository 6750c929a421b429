//! Opus packet decoding (RFC 6716) to interleaved `f32` PCM, with loss concealment and
//! in-band FEC recovery, for packet sources such as WHEP/RTP.
//!
//! Invariants: a call either appends exactly `frames * channels` samples and returns
//! `frames`, or returns an error and leaves `out` untouched; no packet, however malformed,
//! makes it panic. Frame counts come from the packet's TOC, never from its size.

use crate::ffi::libopus::{self, Decoder, OPUS_INVALID_PACKET};

/// Sample rates libopus decodes to.
pub const OPUS_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpusError {
    #[error("Opus cannot decode at {0} Hz (8000, 12000, 16000, 24000 or 48000)")]
    Rate(u32),
    #[error("Opus decodes 1 or 2 channels, not {0}")]
    Channels(u16),
    #[error("invalid Opus packet")]
    InvalidPacket,
    #[error("{frames} frames is not a whole number of 2.5 ms up to 120 ms at {rate} Hz")]
    FrameCount { frames: usize, rate: u32 },
    #[error("libopus: {msg} ({code})")]
    Codec { code: i32, msg: &'static str },
}

impl OpusError {
    fn from_code(code: i32) -> OpusError {
        if code == OPUS_INVALID_PACKET {
            OpusError::InvalidPacket
        } else {
            OpusError::Codec {
                code,
                msg: libopus::error_string(code),
            }
        }
    }
}

pub struct OpusDecoder {
    dec: Decoder,
    rate: u32,
    channels: u16,
}

impl OpusDecoder {
    pub fn new(rate: u32, channels: u16) -> Result<OpusDecoder, OpusError> {
        check_rate(rate)?;
        if !(1..=2).contains(&channels) {
            return Err(OpusError::Channels(channels));
        }
        // Both fit in i32: checked against the short lists above.
        let dec = Decoder::new(rate as i32, i32::from(channels)).map_err(OpusError::from_code)?;
        Ok(OpusDecoder {
            dec,
            rate,
            channels,
        })
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Decodes one packet, appends its samples and returns its frames (samples per
    /// channel). A mono stream decoded as stereo (or the reverse) is mapped by libopus.
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<f32>) -> Result<usize, OpusError> {
        let frames = OpusDecoder::packet_frames(packet, self.rate)?;
        self.run(Some(packet), frames, false, out)
    }

    /// Packet loss concealment: appends `frames` frames that continue the signal in place
    /// of a lost packet of that duration (a multiple of 2.5 ms, at most 120 ms).
    pub fn conceal(&mut self, frames: usize, out: &mut Vec<f32>) -> Result<usize, OpusError> {
        self.check_frames(frames)?;
        self.run(None, frames, false, out)
    }

    /// Recovers the lost packet just before `next_packet` (`frames` frames, a multiple of
    /// 2.5 ms) from the redundancy `next_packet` carries when it was encoded with in-band
    /// FEC; without FEC data libopus conceals instead. `next_packet` itself is not
    /// consumed: decode it normally afterwards.
    pub fn decode_fec(
        &mut self,
        next_packet: &[u8],
        frames: usize,
        out: &mut Vec<f32>,
    ) -> Result<usize, OpusError> {
        self.check_frames(frames)?;
        // Reject garbage before libopus reads redundancy from it.
        OpusDecoder::packet_frames(next_packet, self.rate)?;
        self.run(Some(next_packet), frames, true, out)
    }

    /// Samples per channel `packet` holds when decoded at `rate`.
    pub fn packet_frames(packet: &[u8], rate: u32) -> Result<usize, OpusError> {
        check_rate(rate)?;
        let n = libopus::packet_samples(packet, rate as i32);
        usize::try_from(n).map_err(|_| OpusError::from_code(n))
    }

    fn check_frames(&self, frames: usize) -> Result<(), OpusError> {
        let quantum = self.rate as usize / 400;
        if frames == 0 || frames % quantum != 0 || frames > quantum * 48 {
            return Err(OpusError::FrameCount {
                frames,
                rate: self.rate,
            });
        }
        Ok(())
    }

    fn run(
        &mut self,
        packet: Option<&[u8]>,
        frames: usize,
        fec: bool,
        out: &mut Vec<f32>,
    ) -> Result<usize, OpusError> {
        let ch = usize::from(self.channels);
        let start = out.len();
        out.resize(start + frames * ch, 0.0);
        let n = self
            .dec
            .decode_float(packet, &mut out[start..], frames, fec);
        match usize::try_from(n) {
            Ok(got) if got <= frames => {
                out.truncate(start + got * ch);
                Ok(got)
            }
            _ => {
                out.truncate(start);
                Err(OpusError::from_code(n.min(-1)))
            }
        }
    }
}

fn check_rate(rate: u32) -> Result<(), OpusError> {
    if OPUS_RATES.contains(&rate) {
        Ok(())
    } else {
        Err(OpusError::Rate(rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::libopus::{
        Encoder, OPUS_APPLICATION_AUDIO, OPUS_APPLICATION_VOIP, OPUS_SET_BITRATE_REQUEST,
        OPUS_SET_INBAND_FEC_REQUEST, OPUS_SET_PACKET_LOSS_PERC_REQUEST,
    };
    use std::f64::consts::PI;

    fn amplitude(x: &[f32], channels: usize, ch: usize, freq: f64, rate: u32) -> f64 {
        let w = 2.0 * PI * freq / f64::from(rate);
        let (mut re, mut im) = (0.0, 0.0);
        let n = x.len() / channels;
        for i in 0..n {
            let v = f64::from(x[i * channels + ch]);
            re += v * (w * i as f64).cos();
            im -= v * (w * i as f64).sin();
        }
        2.0 * (re * re + im * im).sqrt() / n as f64
    }

    /// 20 ms packets of a stereo tone: `freq` Hz left, `freq * 1.5` right.
    fn encode_tone(rate: u32, freq: f64, packets: usize) -> Vec<Vec<u8>> {
        let mut enc = Encoder::new(rate as i32, 2, OPUS_APPLICATION_AUDIO).unwrap();
        assert_eq!(enc.set(OPUS_SET_BITRATE_REQUEST, 128_000), 0);
        let frame = rate as usize / 50;
        (0..packets)
            .map(|p| {
                let pcm: Vec<f32> = (0..frame)
                    .flat_map(|i| {
                        let t = (p * frame + i) as f64 / f64::from(rate);
                        [
                            (0.5 * (2.0 * PI * freq * t).sin()) as f32,
                            (0.25 * (2.0 * PI * freq * 1.5 * t).sin()) as f32,
                        ]
                    })
                    .collect();
                enc.encode_float(&pcm).unwrap()
            })
            .collect()
    }

    #[test]
    fn sine_round_trips_with_frequency_and_length() {
        let packets = encode_tone(48_000, 1000.0, 100);
        for rate in [48_000u32, 16_000] {
            let mut dec = OpusDecoder::new(rate, 2).unwrap();
            let mut out = Vec::new();
            for p in &packets {
                assert_eq!(dec.decode(p, &mut out).unwrap(), rate as usize / 50);
            }
            assert_eq!(out.len(), 100 * rate as usize / 50 * 2);
            // One second clear of the codec's start-up.
            let sec = &out[rate as usize / 2 * 2..rate as usize * 3 / 2 * 2];
            let left = amplitude(sec, 2, 0, 1000.0, rate);
            let right = amplitude(sec, 2, 1, 1500.0, rate);
            assert!((left / 0.5 - 1.0).abs() < 0.06, "{rate}: left {left}");
            assert!((right / 0.25 - 1.0).abs() < 0.06, "{rate}: right {right}");
            // No leakage of one channel's tone into the other, nor a shifted frequency.
            assert!(amplitude(sec, 2, 0, 1500.0, rate) < 0.005);
            assert!(amplitude(sec, 2, 0, 1010.0, rate) < 0.005);
        }
        // Decoded as mono: libopus downmixes.
        let mut mono = OpusDecoder::new(24_000, 1).unwrap();
        let mut out = Vec::new();
        assert_eq!(mono.decode(&packets[0], &mut out).unwrap(), 480);
        assert_eq!(out.len(), 480);
    }

    /// 20 ms packets of a mono tone at 48 kHz.
    fn encode_mono_tone(freq: f64, packets: usize) -> Vec<Vec<u8>> {
        let mut enc = Encoder::new(48_000, 1, OPUS_APPLICATION_AUDIO).unwrap();
        assert_eq!(enc.set(OPUS_SET_BITRATE_REQUEST, 96_000), 0);
        (0..packets)
            .map(|p| {
                let pcm: Vec<f32> = (0..960)
                    .map(|i| {
                        let t = (p * 960 + i) as f64 / 48_000.0;
                        (0.5 * (2.0 * PI * freq * t).sin()) as f32
                    })
                    .collect();
                enc.encode_float(&pcm).unwrap()
            })
            .collect()
    }

    /// Decoding a fullband stream straight to 16 kHz (what the WHEP bridge does instead of
    /// decoding at 48 kHz and resampling) keeps the pass band and does not alias: libopus
    /// band-limits before it decimates. A plain 3:1 decimation would fold 9 kHz to 7 kHz and
    /// 12 kHz to 4 kHz at full level.
    #[test]
    fn decoding_at_16k_keeps_the_pass_band_and_does_not_alias() {
        let decode = |freq: f64| {
            let mut dec = OpusDecoder::new(16_000, 1).unwrap();
            let mut out = Vec::new();
            for p in encode_mono_tone(freq, 75) {
                dec.decode(&p, &mut out).unwrap();
            }
            out.split_off(8_000)
        };
        for freq in [300.0, 1000.0, 4000.0, 7000.0] {
            let sec = decode(freq);
            let level = amplitude(&sec, 1, 0, freq, 16_000);
            assert!((level / 0.5 - 1.0).abs() < 0.06, "{freq} Hz: {level}");
        }
        for (freq, alias) in [(9_000.0, 7_000.0), (12_000.0, 4_000.0), (15_000.0, 1_000.0)] {
            let sec = decode(freq);
            let folded = amplitude(&sec, 1, 0, alias, 16_000);
            let rms =
                (sec.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / sec.len() as f64).sqrt();
            // -60 dB against the 0.5 input at the alias frequency; little energy at all.
            assert!(folded < 0.0005, "{freq} Hz folds to {alias} Hz at {folded}");
            assert!(rms < 0.005, "{freq} Hz leaves rms {rms}");
        }
    }

    #[test]
    fn decoder_moves_to_a_worker_thread() {
        let mut dec = OpusDecoder::new(48_000, 2).unwrap();
        let packets = encode_tone(48_000, 440.0, 1);
        let got = std::thread::spawn(move || dec.decode(&packets[0], &mut Vec::new()))
            .join()
            .unwrap();
        assert_eq!(got, Ok(960));
    }

    #[test]
    fn packet_frames_from_toc() {
        let packets = encode_tone(48_000, 440.0, 1);
        assert_eq!(OpusDecoder::packet_frames(&packets[0], 48_000), Ok(960));
        assert_eq!(OpusDecoder::packet_frames(&packets[0], 8_000), Ok(160));
        // TOC config 31 (CELT FB 20 ms), code 3 with 6 frames = 120 ms.
        assert_eq!(OpusDecoder::packet_frames(&[0xfb, 0x06], 48_000), Ok(5760));
        // Code 3 with 7 frames: over 120 ms.
        assert_eq!(
            OpusDecoder::packet_frames(&[0xfb, 0x07], 48_000),
            Err(OpusError::InvalidPacket)
        );
        assert_eq!(
            OpusDecoder::packet_frames(&[], 48_000),
            Err(OpusError::InvalidPacket)
        );
        assert_eq!(
            OpusDecoder::packet_frames(&packets[0], 44_100),
            Err(OpusError::Rate(44_100))
        );
    }

    #[test]
    fn rejects_bad_setups_and_frame_counts() {
        assert_eq!(
            OpusDecoder::new(44_100, 2).err(),
            Some(OpusError::Rate(44_100))
        );
        assert_eq!(
            OpusDecoder::new(48_000, 3).err(),
            Some(OpusError::Channels(3))
        );
        assert_eq!(
            OpusDecoder::new(48_000, 0).err(),
            Some(OpusError::Channels(0))
        );
        let mut dec = OpusDecoder::new(16_000, 1).unwrap();
        let mut out = vec![1.0];
        for frames in [0, 7, 330, 1960] {
            assert!(matches!(
                dec.conceal(frames, &mut out),
                Err(OpusError::FrameCount { .. })
            ));
        }
        assert_eq!(dec.decode(&[], &mut out), Err(OpusError::InvalidPacket));
        assert_eq!(
            dec.decode_fec(&[], 320, &mut out),
            Err(OpusError::InvalidPacket)
        );
        assert_eq!(out, vec![1.0]);
    }

    #[test]
    fn concealment_keeps_length() {
        let packets = encode_tone(48_000, 440.0, 20);
        let mut dec = OpusDecoder::new(48_000, 2).unwrap();
        let mut out = Vec::new();
        for p in &packets[..10] {
            dec.decode(p, &mut out).unwrap();
        }
        let before = out.len();
        assert_eq!(dec.conceal(960, &mut out), Ok(960));
        assert_eq!(dec.conceal(120, &mut out), Ok(120));
        assert_eq!(out.len(), before + 1080 * 2);
        // The concealed audio continues the tone rather than going silent or wild.
        let hidden = &out[before..before + 960 * 2];
        let peak = hidden.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(peak > 0.05 && peak < 1.0, "peak {peak}");
        for p in &packets[10..] {
            assert_eq!(dec.decode(p, &mut out), Ok(960));
        }
    }

    /// A voice-like test signal that PLC cannot extrapolate: the pitch jumps every 20 ms.
    fn jumping_tone(rate: u32, packets: usize) -> Vec<Vec<f32>> {
        let frame = rate as usize / 50;
        let mut phase = 0.0f64;
        (0..packets)
            .map(|p| {
                let f = 200.0 + ((p * 7919) % 13) as f64 * 45.0;
                (0..frame)
                    .map(|_| {
                        phase += 2.0 * PI * f / f64::from(rate);
                        (0.4 * phase.sin()) as f32
                    })
                    .collect()
            })
            .collect()
    }

    fn err_energy(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
    }

    /// Whether a SILK-only mono 20 ms packet carries redundancy for the previous one: its
    /// first range-coded symbols are the VAD and LBRR flags at probability 1/2, so they are
    /// the top two bits of the first payload byte (RFC 6716 section 4.2.3).
    fn has_lbrr(packet: &[u8]) -> bool {
        assert!(
            packet[0] >> 3 < 12 && packet[0] & 0x07 == 0,
            "SILK-only mono code-0 packet"
        );
        packet[1] & 0x40 != 0
    }

    #[test]
    fn fec_recovers_lost_packets_and_falls_back_to_concealment() {
        let rate = 16_000;
        let mut enc = Encoder::new(rate as i32, 1, OPUS_APPLICATION_VOIP).unwrap();
        assert_eq!(enc.set(OPUS_SET_BITRATE_REQUEST, 32_000), 0);
        assert_eq!(enc.set(OPUS_SET_INBAND_FEC_REQUEST, 1), 0);
        assert_eq!(enc.set(OPUS_SET_PACKET_LOSS_PERC_REQUEST, 20), 0);
        let packets: Vec<Vec<u8>> = jumping_tone(rate, 60)
            .iter()
            .map(|pcm| enc.encode_float(pcm).unwrap())
            .collect();
        let frame = 320;
        let mut reference = Vec::new();
        let mut dec = OpusDecoder::new(rate, 1).unwrap();
        for p in &packets {
            dec.decode(p, &mut reference).unwrap();
        }
        let mut recovered = 0;
        for lost in 1..packets.len() - 1 {
            let mut with_fec = Vec::new();
            let mut with_plc = Vec::new();
            let mut a = OpusDecoder::new(rate, 1).unwrap();
            let mut b = OpusDecoder::new(rate, 1).unwrap();
            for (i, p) in packets.iter().enumerate() {
                if i == lost {
                    assert_eq!(
                        a.decode_fec(&packets[i + 1], frame, &mut with_fec),
                        Ok(frame)
                    );
                    assert_eq!(b.conceal(frame, &mut with_plc), Ok(frame));
                } else {
                    a.decode(p, &mut with_fec).unwrap();
                    b.decode(p, &mut with_plc).unwrap();
                }
            }
            assert_eq!(with_fec.len(), reference.len());
            assert_eq!(with_plc.len(), reference.len());
            let span = lost * frame..(lost + 1) * frame;
            let (fec, plc, want) = (
                &with_fec[span.clone()],
                &with_plc[span.clone()],
                &reference[span],
            );
            let energy = err_energy(want, &[0.0; 320]);
            if has_lbrr(&packets[lost + 1]) {
                // The redundant copy is close to what was lost; a guess is not.
                let (fec_err, plc_err) = (err_energy(fec, want), err_energy(plc, want));
                assert!(
                    fec_err < energy / 10.0,
                    "packet {lost}: fec {fec_err} vs {energy}"
                );
                assert!(
                    fec_err * 10.0 < plc_err,
                    "packet {lost}: fec {fec_err} plc {plc_err}"
                );
                recovered += 1;
            } else {
                assert_eq!(fec, plc, "packet {lost}: no FEC data, so concealment");
            }
        }
        // The encoder adds redundancy for active speech-like frames, not for all.
        assert!(recovered >= 10, "only {recovered} packets carried FEC");
    }

    #[test]
    fn fec_without_redundancy_falls_back_to_concealment() {
        // CELT-only (music) packets carry no FEC.
        let packets = encode_tone(48_000, 440.0, 5);
        let mut dec = OpusDecoder::new(48_000, 2).unwrap();
        let mut out = Vec::new();
        dec.decode(&packets[0], &mut out).unwrap();
        assert_eq!(dec.decode_fec(&packets[2], 960, &mut out), Ok(960));
        assert_eq!(dec.decode(&packets[2], &mut out), Ok(960));
        assert_eq!(out.len(), 3 * 960 * 2);
    }

    /// xorshift: reproducible garbage.
    fn noise(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn mutated_packets_never_panic() {
        let good = encode_tone(48_000, 440.0, 50);
        let mut voip = Encoder::new(16_000, 1, OPUS_APPLICATION_VOIP).unwrap();
        voip.set(OPUS_SET_INBAND_FEC_REQUEST, 1);
        voip.set(OPUS_SET_PACKET_LOSS_PERC_REQUEST, 10);
        let speechy: Vec<Vec<u8>> = jumping_tone(16_000, 50)
            .iter()
            .map(|pcm| voip.encode_float(pcm).unwrap())
            .collect();
        let mut seed = 0x2545_f491_4f6c_dd1d;
        for (rate, channels) in [(48_000, 2), (16_000, 1), (8_000, 2)] {
            let mut dec = OpusDecoder::new(rate, channels).unwrap();
            let mut out = Vec::new();
            for round in 0..3000 {
                let src = if round % 2 == 0 { &good } else { &speechy };
                let mut p = src[round % src.len()].clone();
                // Flip a few bits, sometimes truncate, sometimes keep the TOC only.
                for _ in 0..1 + noise(&mut seed) % 4 {
                    let i = (noise(&mut seed) % p.len() as u64) as usize;
                    p[i] ^= 1 << (noise(&mut seed) % 8);
                }
                if noise(&mut seed) % 5 == 0 {
                    p.truncate(1 + (noise(&mut seed) % p.len() as u64) as usize);
                }
                let before = out.len();
                match dec.decode(&p, &mut out) {
                    Ok(n) => assert_eq!(out.len(), before + n * usize::from(channels)),
                    Err(_) => assert_eq!(out.len(), before),
                }
                if round % 7 == 0 {
                    let _ = dec.decode_fec(&p, rate as usize / 50, &mut out);
                }
                assert!(out.iter().all(|v| v.is_finite()));
                out.clear();
            }
            // Still decodes real packets afterwards.
            assert_eq!(dec.decode(&good[0], &mut out), Ok(rate as usize / 50));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1500), fec in proptest::bool::ANY) {
            let mut dec = OpusDecoder::new(48_000, 2).unwrap();
            let mut out = Vec::new();
            let r = if fec { dec.decode_fec(&bytes, 960, &mut out) } else { dec.decode(&bytes, &mut out) };
            match r {
                Ok(n) => proptest::prop_assert_eq!(out.len(), n * 2),
                Err(_) => proptest::prop_assert!(out.is_empty()),
            }
            let _ = OpusDecoder::packet_frames(&bytes, 8_000);
        }
    }
}
