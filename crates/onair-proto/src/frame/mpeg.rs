//! MPEG-1/2/2.5 audio (Layers I, II, III) frame headers and the frame splitter.
//!
//! Splitting uses the shared sync-word framer (`frame::SyncFramer`): confirmation by the
//! next header while acquiring sync, then no added latency once locked.

use super::{StreamInfo, SyncHeader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Mpeg1,
    Mpeg2,
    Mpeg25,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    /// 1, 2 or 3.
    pub layer: u8,
    pub bitrate: u32,
    pub sample_rate: u32,
    pub channels: u8,
    pub frame_len: usize,
    pub samples: u32,
}

const BITRATES_V1: [[u16; 14]; 3] = [
    [
        32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
    ],
    [
        32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
    ],
    [
        32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ],
];
const BITRATES_V2: [[u16; 14]; 2] = [
    [
        32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
    ],
    [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
];

/// Parses a 4-byte frame header; `None` for anything invalid, reserved or free-format.
pub fn parse_header(b: [u8; 4]) -> Option<Header> {
    if b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = match (b[1] >> 3) & 3 {
        0 => Version::Mpeg25,
        2 => Version::Mpeg2,
        3 => Version::Mpeg1,
        _ => return None,
    };
    let layer = match (b[1] >> 1) & 3 {
        1 => 3,
        2 => 2,
        3 => 1,
        _ => return None,
    };
    let br_index = usize::from(b[2] >> 4);
    if br_index == 0 || br_index == 15 || b[3] & 3 == 2 {
        return None;
    }
    let kbps = match version {
        Version::Mpeg1 => BITRATES_V1[usize::from(layer - 1)][br_index - 1],
        _ => BITRATES_V2[usize::from(layer != 1)][br_index - 1],
    };
    let base = match (b[2] >> 2) & 3 {
        0 => 44_100,
        1 => 48_000,
        2 => 32_000,
        _ => return None,
    };
    let sample_rate = match version {
        Version::Mpeg1 => base,
        Version::Mpeg2 => base / 2,
        Version::Mpeg25 => base / 4,
    };
    let bitrate = u32::from(kbps) * 1000;
    let pad = u32::from((b[2] >> 1) & 1);
    let (frame_len, samples) = match (layer, version) {
        (1, _) => ((12 * bitrate / sample_rate + pad) * 4, 384),
        (2, _) | (3, Version::Mpeg1) => (144 * bitrate / sample_rate + pad, 1152),
        _ => (72 * bitrate / sample_rate + pad, 576),
    };
    Some(Header {
        version,
        layer,
        bitrate,
        sample_rate,
        channels: if b[3] >> 6 == 3 { 1 } else { 2 },
        frame_len: frame_len as usize,
        samples,
    })
}

impl SyncHeader for Header {
    const LEN: usize = 4;

    fn parse(b: &[u8]) -> Option<Header> {
        parse_header(b.get(..4)?.try_into().ok()?)
    }

    fn could_start(b: &[u8]) -> bool {
        b.first().is_none_or(|&x| x == 0xFF) && b.get(1).is_none_or(|&x| x & 0xE0 == 0xE0)
    }

    fn frame_len(&self) -> usize {
        self.frame_len
    }

    fn same_stream(&self, o: &Header) -> bool {
        self.version == o.version && self.layer == o.layer && self.sample_rate == o.sample_rate
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
        codec: match h.layer {
            3 => "mp3",
            2 => "mp2",
            _ => "mp1",
        },
        sample_rate: h.sample_rate,
        channels: h.channels,
        bitrate: h.bitrate,
    }
}

/// Whether `frame` (one whole MPEG audio frame) is an encoder's info frame: a silent
/// Layer III frame whose payload is a Xing/Info (LAME) or VBRI header. It describes the whole
/// file (frame count, seek table, gapless padding), so it is wrong anywhere but at the start of
/// that file and must not be sent into a continuous stream.
pub fn is_info_frame(frame: &[u8]) -> bool {
    let Some(h) = frame
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .and_then(parse_header)
    else {
        return false;
    };
    if h.layer != 3 {
        return false;
    }
    // Side information length, after the header and the optional 16-bit CRC.
    let side = match (h.version, h.channels) {
        (Version::Mpeg1, 1) => 17,
        (Version::Mpeg1, _) => 32,
        (_, 1) => 9,
        _ => 17,
    };
    let crc = if frame[1] & 1 == 0 { 2 } else { 0 };
    let xing = 4 + crc + side;
    let tag_at = |at: usize| frame.get(at..at + 4);
    matches!(tag_at(xing), Some(b"Xing") | Some(b"Info")) || tag_at(4 + 32) == Some(b"VBRI")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::{Unit, UnitKind};
    use proptest::prelude::*;

    /// A frame: MPEG-1 L3 44.1 kHz at `kbps`, payload bytes = `fill`.
    pub fn frame(kbps_index: u8, pad: bool, fill: u8) -> Vec<u8> {
        let h = [0xFF, 0xFB, (kbps_index << 4) | (u8::from(pad) << 1), 0x44];
        let len = parse_header(h).unwrap().frame_len;
        let mut f = h.to_vec();
        f.resize(len, fill);
        f
    }

    /// Splits `stream` with `splits`, returns the units and the bytes of each.
    pub fn run(
        format: super::super::Format,
        stream: &[u8],
        splits: &[usize],
    ) -> Vec<(Unit, Vec<u8>)> {
        let mut framer = super::super::Framer::new(format);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut rest = stream;
        let mut i = 0;
        while !rest.is_empty() {
            let n = splits
                .get(i % splits.len().max(1))
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            i += 1;
            let mut used = 0;
            while let Some(u) = framer.next_unit(&buf[used..]) {
                assert!(u.len > 0);
                out.push((u, buf[used..used + u.len].to_vec()));
                used += u.len;
            }
            buf.drain(..used);
        }
        out
    }

    #[test]
    fn header_fields() {
        let h = parse_header([0xFF, 0xFB, 0x90, 0x44]).unwrap();
        assert_eq!(
            (h.bitrate, h.sample_rate, h.frame_len, h.samples, h.channels),
            (128_000, 44_100, 417, 1152, 2)
        );
        assert_eq!(
            parse_header([0xFF, 0xFB, 0x92, 0xC4]).unwrap().frame_len,
            418
        );
        // MPEG-2 Layer III, 64 kbit/s, 24 kHz: 72 * 64000 / 24000 = 192 bytes, 576 samples.
        let h = parse_header([0xFF, 0xF3, 0x84, 0xC4]).unwrap();
        assert_eq!(
            (h.version, h.sample_rate, h.frame_len, h.samples, h.channels),
            (Version::Mpeg2, 24_000, 192, 576, 1)
        );
        // Layer I, 32 kHz, 448 kbit/s: (12 * 448000 / 32000) * 4 = 672.
        assert_eq!(
            parse_header([0xFF, 0xFF, 0xE8, 0x00]).unwrap().frame_len,
            672
        );
        assert_eq!(parse_header([0xFF, 0xFB, 0x00, 0x44]), None, "free format");
        assert_eq!(parse_header([0xFF, 0xFB, 0xF0, 0x44]), None, "bad bitrate");
        assert_eq!(
            parse_header([0xFF, 0xFB, 0x9C, 0x44]),
            None,
            "reserved rate"
        );
        assert_eq!(
            parse_header([0xFF, 0xEB, 0x90, 0x44]),
            None,
            "reserved version"
        );
        assert_eq!(
            parse_header([0xFF, 0xF9, 0x90, 0x44]),
            None,
            "reserved layer"
        );
    }

    #[test]
    fn junk_tags_and_false_syncs_are_dropped() {
        let mut s = b"garbage \xFF\xFB\x90 not a frame".to_vec();
        let mut id3 = b"ID3\x04\x00\x00\x00\x00\x10\x00".to_vec();
        id3.resize(10 + 2048, 7);
        s.extend_from_slice(&id3);
        let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(9, i % 2 == 0, i)).collect();
        for f in &frames[..3] {
            s.extend_from_slice(f);
        }
        s.extend_from_slice(b"TAG");
        s.resize(s.len() + 125, b'x');
        for f in &frames[3..] {
            s.extend_from_slice(f);
        }
        for splits in [vec![1], vec![100], vec![7, 300, 1], vec![100_000]] {
            let units = run(super::super::Format::Mpeg, &s, &splits);
            let audio: Vec<&Vec<u8>> = units
                .iter()
                .filter(|(u, _)| u.kind == UnitKind::Audio)
                .map(|(_, b)| b)
                .collect();
            assert_eq!(
                audio,
                frames.iter().collect::<Vec<_>>(),
                "splits {splits:?}"
            );
            let total: usize = units.iter().map(|(u, _)| u.len).sum();
            assert_eq!(
                total,
                s.len(),
                "once locked, a complete frame is emitted at once"
            );
        }
    }

    #[test]
    fn stream_info_follows_frames() {
        let mut f = crate::frame::Framer::new(crate::frame::Format::Mpeg);
        let s = [frame(9, false, 0), frame(9, false, 0)].concat();
        let u = f.next_unit(&s).unwrap();
        assert_eq!(
            (u.kind, u.samples, u.sample_rate),
            (UnitKind::Audio, 1152, 44_100)
        );
        assert_eq!(
            f.stream_info(),
            StreamInfo {
                codec: "mp3",
                sample_rate: 44_100,
                channels: 2,
                bitrate: 128_000
            }
        );
    }

    proptest! {
        #[test]
        fn frames_survive_any_split_and_interleaved_junk(
            picks in prop::collection::vec((1u8..15, any::<bool>(), any::<u8>(), prop::option::of(prop::collection::vec(any::<u8>(), 1..40))), 2..30),
            splits in prop::collection::vec(1usize..700, 1..8),
        ) {
            let mut s = Vec::new();
            let mut expect = Vec::new();
            for (i, (br, pad, fill, junk)) in picks.iter().enumerate() {
                // Junk that cannot be mistaken for a sync or tag start.
                if let Some(j) = junk {
                    if i > 0 {
                        s.extend(j.iter().map(|b| b & 0x3F));
                    }
                }
                let f = frame(*br, *pad, fill & 0x3F);
                s.extend_from_slice(&f);
                expect.push(f);
            }
            let units = run(super::super::Format::Mpeg, &s, &splits);
            let audio: Vec<Vec<u8>> = units.into_iter().filter(|(u, _)| u.kind == UnitKind::Audio).map(|(_, b)| b).collect();
            // Frames directly followed by junk are unconfirmed and dropped as junk too;
            // every emitted frame is a real one, in order.
            let mut it = expect.iter();
            for a in &audio {
                prop_assert!(it.any(|e| e == a));
            }
            if picks.iter().skip(1).all(|p| p.3.is_none()) {
                prop_assert_eq!(audio, expect);
            }
        }

        #[test]
        fn never_panics_and_tiles(data in prop::collection::vec(any::<u8>(), 0..3000), splits in prop::collection::vec(1usize..500, 1..5)) {
            let units = run(super::super::Format::Mpeg, &data, &splits);
            let mut pos = 0;
            for (u, b) in units {
                prop_assert_eq!(&data[pos..pos + u.len], &b[..]);
                pos += u.len;
            }
        }
    }

    #[test]
    fn info_frames_are_recognised() {
        // MPEG-1 stereo: the tag follows 32 bytes of side info; mono: 17.
        let mut stereo = frame(9, false, 0);
        stereo[36..40].copy_from_slice(b"Xing");
        assert!(is_info_frame(&stereo));
        stereo[36..40].copy_from_slice(b"Info");
        assert!(is_info_frame(&stereo));
        let mut vbri = frame(9, false, 0);
        vbri[36..40].copy_from_slice(b"VBRI");
        assert!(is_info_frame(&vbri));
        let mut mono = frame(9, false, 0);
        mono[3] = 0xC4;
        mono[21..25].copy_from_slice(b"Xing");
        assert!(is_info_frame(&mono));
        // Plain audio, a tag at the wrong place, a truncated frame, garbage: not info frames.
        assert!(!is_info_frame(&frame(9, false, 0)));
        let mut wrong = frame(9, false, 0);
        wrong[21..25].copy_from_slice(b"Xing");
        assert!(!is_info_frame(&wrong));
        assert!(!is_info_frame(&stereo[..30]));
        assert!(!is_info_frame(b"Xing"));
        assert!(!is_info_frame(&[]));
    }
}
