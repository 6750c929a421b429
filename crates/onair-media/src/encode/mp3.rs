//! MP3 through LAME 3.100, for a live stream: no Xing/Info tag frame, no ID3 tags, output
//! re-cut from LAME's arbitrary byte runs into whole MPEG frames.
//!
//! Invariants: `pending` always starts at a frame header LAME wrote and holds less than
//! one frame after each call; the output sample rate equals the input rate (LAME is not
//! allowed to resample), so the frames' durations are the input's.

use mp3lame_encoder::{
    max_required_buffer_size, Builder, FlushGap, InterleavedPcm, Mode, MonoPcm, Quality, VbrMode,
};
use onair_proto::frame::{mpeg, tag};

use super::{check_channels, check_whole_frames, Codec, EncodeError, EncoderSettings};

const RATES: &str = "22050, 24000, 32000, 44100, 48000";
/// Layer III bitrates of MPEG-1 (32, 44.1, 48 kHz).
const KBPS_MPEG1: [u32; 14] = [
    32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];
/// Layer III bitrates of MPEG-2 (22.05, 24 kHz).
const KBPS_MPEG2: [u32; 14] = [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
/// VBR bitrates accepted (they select a quality level, see [`vbr_quality`]).
const VBR_KBPS: std::ops::RangeInclusive<u32> = 8..=320;

/// Sample frames handed to LAME per call, so its output buffer stays small (LAME's worst
/// case is 1.25 bytes per sample frame plus 7200).
const CHUNK_FRAMES: usize = 1152 * 4;

/// LAME's VBR quality levels and the typical average bitrate each gives for 44.1 kHz
/// stereo music (from LAME's documentation of its presets).
const VBR_LEVELS: [(u32, Quality); 10] = [
    (245, Quality::Best),
    (225, Quality::SecondBest),
    (190, Quality::NearBest),
    (175, Quality::VeryNice),
    (165, Quality::Nice),
    (130, Quality::Good),
    (115, Quality::Decent),
    (100, Quality::Ok),
    (85, Quality::SecondWorst),
    (65, Quality::Worst),
];

/// The VBR quality level whose typical average bitrate is nearest to `kbps`.
pub fn vbr_quality(kbps: u32) -> Quality {
    VBR_LEVELS
        .iter()
        .min_by_key(|(avg, _)| avg.abs_diff(kbps))
        .map(|&(_, q)| q)
        // invariant: VBR_LEVELS is not empty.
        .expect("VBR levels")
}

pub struct Mp3Encoder {
    lame: mp3lame_encoder::Encoder,
    rate: u32,
    channels: u16,
    /// LAME output not yet handed out: the start of the next frame.
    pending: Vec<u8>,
    finished: bool,
}

fn lame_err(e: impl std::fmt::Display) -> EncodeError {
    EncodeError::Lame(e.to_string())
}

impl Mp3Encoder {
    pub fn new(s: &EncoderSettings) -> Result<Mp3Encoder, EncodeError> {
        check_channels(Codec::Mp3, s.channels)?;
        let table = match s.rate {
            32_000 | 44_100 | 48_000 => &KBPS_MPEG1,
            22_050 | 24_000 => &KBPS_MPEG2,
            rate => {
                return Err(EncodeError::UnsupportedRate {
                    codec: Codec::Mp3.name(),
                    rate,
                    allowed: RATES,
                })
            }
        };
        let bad_bitrate = |what: String| EncodeError::UnsupportedBitrate {
            codec: Codec::Mp3.name(),
            kbps: s.bitrate_kbps,
            allowed: what,
        };
        if s.vbr && !VBR_KBPS.contains(&s.bitrate_kbps) {
            return Err(bad_bitrate(format!(
                "{}..={} (VBR)",
                VBR_KBPS.start(),
                VBR_KBPS.end()
            )));
        }
        if !s.vbr && !table.contains(&s.bitrate_kbps) {
            let list: Vec<String> = table.iter().map(u32::to_string).collect();
            return Err(bad_bitrate(format!(
                "{} (CBR at {} Hz)",
                list.join(", "),
                s.rate
            )));
        }
        let mut b = Builder::new().ok_or_else(|| lame_err("cannot allocate encoder"))?;
        // invariant: channels is 1 or 2 (checked above).
        b.set_num_channels(s.channels as u8).map_err(lame_err)?;
        b.set_sample_rate(s.rate).map_err(lame_err)?;
        b.set_output_sample_rate(std::num::NonZeroU32::new(s.rate))
            .map_err(lame_err)?;
        b.set_mode(if s.channels == 1 {
            Mode::Mono
        } else {
            Mode::JointStereo
        })
        .map_err(lame_err)?;
        // A live stream has no end to seek back to, so no Xing/Info frame.
        b.set_to_write_vbr_tag(false).map_err(lame_err)?;
        if s.vbr {
            b.set_vbr_mode(VbrMode::Mtrh).map_err(lame_err)?;
            b.set_vbr_quality(vbr_quality(s.bitrate_kbps))
                .map_err(lame_err)?;
        } else {
            b.set_vbr_mode(VbrMode::Off).map_err(lame_err)?;
            crate::ffi::lame::set_brate(&mut b, s.bitrate_kbps)
                .map_err(|rc| lame_err(format!("bitrate rejected ({rc})")))?;
        }
        let lame = b.build().map_err(lame_err)?;
        Ok(Mp3Encoder {
            lame,
            rate: s.rate,
            channels: s.channels,
            pending: Vec::new(),
            finished: false,
        })
    }

    /// Moves the whole frames at the start of `pending` to `out`.
    fn cut_frames(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut at = 0;
        while let Some(h) = self.pending.get(at..at + 4) {
            let h = mpeg::parse_header([h[0], h[1], h[2], h[3]])
                .ok_or(EncodeError::Misaligned { offset: at })?;
            if at + h.frame_len > self.pending.len() {
                break;
            }
            at += h.frame_len;
        }
        out.extend_from_slice(&self.pending[..at]);
        self.pending.drain(..at);
        Ok(())
    }
}

impl super::Encoder for Mp3Encoder {
    fn encode(&mut self, samples: &[f32], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.finished {
            return Err(EncodeError::Finished);
        }
        check_whole_frames(samples, self.channels)?;
        let ch = usize::from(self.channels);
        for chunk in samples.chunks(CHUNK_FRAMES * ch) {
            self.pending
                .reserve(max_required_buffer_size(chunk.len() / ch));
            if ch == 1 {
                self.lame.encode_to_vec(MonoPcm(chunk), &mut self.pending)
            } else {
                self.lame
                    .encode_to_vec(InterleavedPcm(chunk), &mut self.pending)
            }
            .map_err(lame_err)?;
            self.cut_frames(out)?;
        }
        Ok(())
    }

    fn set_title(&mut self, _title: &str, _out: &mut Vec<u8>) -> Result<(), EncodeError> {
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.pending.reserve(7200);
        self.lame
            .flush_to_vec::<FlushGap>(&mut self.pending)
            .map_err(lame_err)?;
        self.cut_frames(out)?;
        // LAME adds an ID3v1 tag on flush only when tags were set; none are, but a tag is
        // not audio in any case.
        if !self.pending.is_empty() && !matches!(tag::check(&self.pending), tag::Check::Tag(_)) {
            return Err(EncodeError::Misaligned { offset: 0 });
        }
        self.pending.clear();
        Ok(())
    }

    fn content_type(&self) -> &'static str {
        Codec::Mp3.content_type()
    }

    fn rate(&self) -> u32 {
        self.rate
    }

    fn channels(&self) -> u16 {
        self.channels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vbr_quality_is_nearest_level() {
        // LAME's V level: 0 best .. 9 smallest.
        let v = |kbps| vbr_quality(kbps) as u8;
        assert_eq!([v(320), v(192), v(128), v(8)], [0, 2, 5, 9]);
    }
}
