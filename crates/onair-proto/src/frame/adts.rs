//! AAC in ADTS framing: header parse; splitting uses the shared sync-word framer (a header
//! counts while acquiring sync only when the next one follows with the same sample rate,
//! profile and channel layout).

use super::{StreamInfo, SyncHeader};

const RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub profile: u8,
    pub sample_rate: u32,
    pub channel_config: u8,
    pub frame_len: usize,
    pub samples: u32,
}

/// Parses the 7-byte fixed+variable ADTS header.
pub fn parse_header(b: &[u8]) -> Option<Header> {
    let b = b.get(..7)?;
    if b[0] != 0xFF || b[1] & 0xF6 != 0xF0 {
        return None;
    }
    let sample_rate = *RATES.get(usize::from((b[2] >> 2) & 0x0F))?;
    let frame_len =
        (usize::from(b[3] & 0x03) << 11) | (usize::from(b[4]) << 3) | usize::from(b[5] >> 5);
    let header_len = if b[1] & 1 == 0 { 9 } else { 7 };
    if frame_len <= header_len {
        return None;
    }
    Some(Header {
        profile: b[2] >> 6,
        sample_rate,
        channel_config: ((b[2] & 1) << 2) | (b[3] >> 6),
        frame_len,
        samples: 1024 * (u32::from(b[6] & 3) + 1),
    })
}

impl SyncHeader for Header {
    const LEN: usize = 7;

    fn parse(b: &[u8]) -> Option<Header> {
        parse_header(b)
    }

    fn could_start(b: &[u8]) -> bool {
        b.first().is_none_or(|&x| x == 0xFF) && b.get(1).is_none_or(|&x| x & 0xF6 == 0xF0)
    }

    fn frame_len(&self) -> usize {
        self.frame_len
    }

    fn same_stream(&self, o: &Header) -> bool {
        self.sample_rate == o.sample_rate
            && self.profile == o.profile
            && self.channel_config == o.channel_config
    }

    fn samples(&self) -> u32 {
        self.samples
    }

    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }
}

/// What a frame header says about the stream.
pub fn stream_info(h: Header) -> StreamInfo {
    StreamInfo {
        codec: "aac",
        sample_rate: h.sample_rate,
        channels: match h.channel_config {
            7 => 8,
            c => c,
        },
        bitrate: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::UnitKind;
    use crate::frame::{mpeg::tests::run, Format};
    use proptest::prelude::*;

    /// An ADTS frame (AAC-LC, 44.1 kHz, stereo, no CRC) of `len` bytes filled with `fill`.
    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![
            0xFF,
            0xF1,
            (1 << 6) | (4 << 2),
            (2 << 6) | ((len >> 11) as u8 & 3),
            (len >> 3) as u8,
            ((len as u8 & 7) << 5) | 0x1F,
            0xFC,
        ];
        f.resize(len, fill);
        f
    }

    #[test]
    fn parses_and_splits() {
        let h = parse_header(&frame(300, 0)).unwrap();
        assert_eq!(
            (h.sample_rate, h.channel_config, h.frame_len, h.samples),
            (44_100, 2, 300, 1024)
        );
        let frames: Vec<Vec<u8>> = (0..4).map(|i| frame(200 + i * 10, i as u8)).collect();
        let mut s = b"junk!".to_vec();
        for f in &frames {
            s.extend_from_slice(f);
        }
        let units = run(Format::Adts, &s, &[3, 50]);
        let audio: Vec<&Vec<u8>> = units
            .iter()
            .filter(|(u, _)| u.kind == UnitKind::Audio)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(audio, frames.iter().collect::<Vec<_>>());
        let mut f = crate::frame::Framer::new(Format::Adts);
        f.next_unit(&s[5..]).unwrap();
        assert_eq!(f.stream_info().codec, "aac");
        assert_eq!(f.stream_info().channels, 2);
    }

    proptest! {
        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..3000), split in 1usize..400) {
            let units = run(Format::Adts, &data, &[split]);
            prop_assert!(units.iter().map(|(u, _)| u.len).sum::<usize>() <= data.len());
        }

        #[test]
        fn frames_survive_any_split(lens in prop::collection::vec(20usize..2000, 2..20), splits in prop::collection::vec(1usize..600, 1..6)) {
            let frames: Vec<Vec<u8>> = lens.iter().enumerate().map(|(i, &l)| frame(l, (i % 0x3F) as u8)).collect();
            let s: Vec<u8> = frames.concat();
            let units = run(Format::Adts, &s, &splits);
            let audio: Vec<Vec<u8>> = units.into_iter().map(|(_, b)| b).collect();
            prop_assert_eq!(&audio[..], &frames[..]);
        }
    }
}
