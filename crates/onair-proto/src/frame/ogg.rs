//! Ogg pages: capture, CRC check, and per-logical-stream codec tracking, so that header
//! pages are known (a late joiner must get them before any data page) and data pages get a
//! duration from their granule positions.
//!
//! Invariants: a page is `CodecHeader` exactly while its logical stream has not completed
//! its codec's header packets (Vorbis 3, Opus 2, FLAC 1 + n, Speex 2 + n; unknown codecs:
//! pages with granule 0). A BOS page arriving after data pages starts a new chain link.

use std::collections::HashMap;

use super::{StreamInfo, Unit, UnitKind};

/// Logical streams tracked per chain link; BOS pages beyond this are relayed untracked
/// (real streams have one or two; the bound keeps a hostile source from growing the map).
const MAX_STREAMS: usize = 16;

/// Largest possible page: 27-byte header, 255 lacing values, 255 × 255 body bytes.
const MAX_PAGE: usize = 27 + 255 + 255 * 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub header_type: u8,
    pub granule: i64,
    pub serial: u32,
    pub sequence: u32,
    pub segments: u8,
    /// Header plus body length.
    pub len: usize,
}

impl PageHeader {
    pub fn is_bos(&self) -> bool {
        self.header_type & 0x02 != 0
    }
    pub fn is_eos(&self) -> bool {
        self.header_type & 0x04 != 0
    }
    pub fn continued(&self) -> bool {
        self.header_type & 0x01 != 0
    }
}

/// Parses a page header; `Ok(None)` when more bytes are needed for the header itself,
/// `Err(())` when the bytes at the start are not a page.
#[allow(clippy::result_unit_err)]
pub fn parse_page_header(buf: &[u8]) -> Result<Option<PageHeader>, ()> {
    let magic_len = buf.len().min(4);
    if buf[..magic_len] != b"OggS"[..magic_len] {
        return Err(());
    }
    let Some(h) = buf.get(..27) else {
        return Ok(None);
    };
    if h[4] != 0 {
        return Err(());
    }
    let segments = h[26];
    let Some(lacing) = buf.get(27..27 + usize::from(segments)) else {
        return Ok(None);
    };
    let body: usize = lacing.iter().map(|&l| usize::from(l)).sum();
    let le32 = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    Ok(Some(PageHeader {
        header_type: h[5],
        granule: i64::from_le_bytes([h[6], h[7], h[8], h[9], h[10], h[11], h[12], h[13]]),
        serial: le32(14),
        sequence: le32(18),
        segments,
        len: 27 + usize::from(segments) + body,
    }))
}

/// Ogg's CRC-32: polynomial 0x04C11DB7, not reflected, initial value 0, no final xor.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 {
                    (r << 1) ^ 0x04C1_1DB7
                } else {
                    r << 1
                };
            }
            *e = r;
        }
        t
    });
    data.iter().fold(0u32, |crc, &b| {
        (crc << 8) ^ table[usize::from(((crc >> 24) as u8) ^ b)]
    })
}

fn page_crc_ok(page: &[u8]) -> bool {
    let stored = u32::from_le_bytes([page[22], page[23], page[24], page[25]]);
    let mut copy = page.to_vec();
    copy[22..26].fill(0);
    crc32(&copy) == stored
}

#[derive(Debug, Clone)]
struct LogicalStream {
    info: StreamInfo,
    /// Header packets the codec has; `None` for unknown codecs (granule rule).
    headers: Option<u32>,
    packets: u32,
    headers_done: bool,
    /// Granule rate (samples per second) for durations; 0 if unknown.
    rate: u32,
    last_granule: Option<i64>,
}

#[derive(Debug, Default)]
pub struct OggFramer {
    streams: HashMap<u32, LogicalStream>,
    /// Serial of the stream whose durations and info we report (first of the link).
    primary: Option<u32>,
    /// A data page has been seen since the last BOS group: the next BOS is a new link.
    link_has_data: bool,
    info: StreamInfo,
}

impl OggFramer {
    pub fn next_unit(&mut self, buf: &[u8]) -> Option<Unit> {
        if buf.is_empty() {
            return None;
        }
        let header = match parse_page_header(buf) {
            Ok(None) => return None,
            Ok(Some(h)) => h,
            Err(()) => return resync(buf),
        };
        let page = buf.get(..header.len)?;
        if !page_crc_ok(page) {
            return Some(Unit::junk(4));
        }
        let lacing = &page[27..27 + usize::from(header.segments)];
        let body = &page[27 + usize::from(header.segments)..];
        if header.is_bos() {
            if self.link_has_data {
                self.streams.clear();
                self.primary = None;
                self.link_has_data = false;
            }
            let s = identify(body, header.granule);
            if self.primary.is_none() {
                self.primary = Some(header.serial);
                self.info = s.info;
            }
            if self.streams.len() < MAX_STREAMS || self.streams.contains_key(&header.serial) {
                self.streams.insert(header.serial, s);
            }
        }
        let is_primary = self.primary == Some(header.serial);
        let Some(s) = self.streams.get_mut(&header.serial) else {
            // A page of a stream whose BOS we never saw (we joined mid-stream): data.
            self.link_has_data = true;
            return Some(Unit {
                kind: UnitKind::Audio,
                len: header.len,
                samples: 0,
                sample_rate: 0,
                begins_stream: false,
            });
        };
        let was_header = !s.headers_done
            && match s.headers {
                Some(_) => true,
                None => header.granule == 0,
            };
        // Packets completed on this page: lacing values below 255 end a packet.
        s.packets += lacing.iter().filter(|&&l| l < 255).count() as u32;
        if let Some(n) = s.headers {
            s.headers_done |= s.packets >= n;
        } else if !was_header {
            s.headers_done = true;
        }
        if was_header {
            if header.granule >= 0 {
                s.last_granule = Some(header.granule);
            }
            return Some(Unit {
                kind: UnitKind::CodecHeader,
                len: header.len,
                samples: 0,
                sample_rate: 0,
                begins_stream: header.is_bos(),
            });
        }
        self.link_has_data = true;
        let mut samples = 0;
        if header.granule >= 0 {
            if let Some(last) = s.last_granule {
                samples =
                    u32::try_from(header.granule.saturating_sub(last).max(0)).unwrap_or(u32::MAX);
            }
            s.last_granule = Some(header.granule);
        }
        let (samples, rate) = if is_primary && s.rate > 0 {
            (samples, s.rate)
        } else {
            (0, 0)
        };
        if header.is_eos() {
            self.streams.remove(&header.serial);
        }
        Some(Unit {
            kind: UnitKind::Audio,
            len: header.len,
            samples,
            sample_rate: rate,
            begins_stream: false,
        })
    }

    pub fn stream_info(&self) -> StreamInfo {
        self.info
    }
}

/// Drops bytes up to the next "OggS" capture pattern (keeping a possible partial one).
fn resync(buf: &[u8]) -> Option<Unit> {
    let next = buf
        .windows(4)
        .skip(1)
        .position(|w| w == b"OggS")
        .map(|p| p + 1);
    match next {
        Some(i) => Some(Unit::junk(i)),
        None if buf.len() > 3 => Some(Unit::junk(buf.len() - 3)),
        None if buf.len() >= MAX_PAGE => Some(Unit::junk(buf.len())),
        None => None,
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
}

/// Recognises the codec from a BOS page's first packet.
fn identify(first: &[u8], granule: i64) -> LogicalStream {
    let mut s = LogicalStream {
        info: StreamInfo {
            codec: "ogg",
            ..StreamInfo::default()
        },
        headers: None,
        packets: 0,
        headers_done: false,
        rate: 0,
        last_granule: (granule >= 0).then_some(granule),
    };
    if first.starts_with(b"\x01vorbis") {
        s.headers = Some(3);
        s.rate = le_u32(first, 12);
        s.info = StreamInfo {
            codec: "vorbis",
            sample_rate: s.rate,
            channels: first.get(11).copied().unwrap_or(0),
            bitrate: le_u32(first, 20),
        };
    } else if first.starts_with(b"OpusHead") {
        s.headers = Some(2);
        s.rate = 48_000;
        s.info = StreamInfo {
            codec: "opus",
            sample_rate: 48_000,
            channels: first.get(9).copied().unwrap_or(0),
            bitrate: 0,
        };
    } else if first.starts_with(b"\x7fFLAC") {
        let extra = first
            .get(7..9)
            .map_or(0, |b| u32::from(u16::from_be_bytes([b[0], b[1]])));
        s.headers = Some(1 + extra);
        if let Some(d) = first.get(17..30) {
            s.rate = (u32::from(d[10]) << 12) | (u32::from(d[11]) << 4) | u32::from(d[12] >> 4);
            s.info = StreamInfo {
                codec: "flac",
                sample_rate: s.rate,
                channels: ((d[12] >> 1) & 7) + 1,
                bitrate: 0,
            };
        }
    } else if first.starts_with(b"Speex   ") {
        s.headers = Some(2 + le_u32(first, 68).min(16));
        s.rate = le_u32(first, 36);
        s.info = StreamInfo {
            codec: "speex",
            sample_rate: s.rate,
            channels: le_u32(first, 48).min(255) as u8,
            bitrate: 0,
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{mpeg::tests::run, Format};
    use proptest::prelude::*;

    /// Builds a page holding `packets`, all complete.
    fn page(serial: u32, seq: u32, flags: u8, granule: i64, packets: &[&[u8]]) -> Vec<u8> {
        page_open(serial, seq, flags, granule, packets, false)
    }

    /// Builds a page; with `open_end` the last packet (a multiple of 255 bytes) continues
    /// on the next page.
    fn page_open(
        serial: u32,
        seq: u32,
        flags: u8,
        granule: i64,
        packets: &[&[u8]],
        open_end: bool,
    ) -> Vec<u8> {
        let mut lacing = Vec::new();
        let mut body = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let mut n = p.len();
            while n >= 255 {
                lacing.push(255);
                n -= 255;
            }
            if !(open_end && i + 1 == packets.len()) {
                lacing.push(n as u8);
            }
            body.extend_from_slice(p);
        }
        let mut h = b"OggS\0".to_vec();
        h.push(flags);
        h.extend_from_slice(&granule.to_le_bytes());
        h.extend_from_slice(&serial.to_le_bytes());
        h.extend_from_slice(&seq.to_le_bytes());
        h.extend_from_slice(&[0; 4]);
        h.push(lacing.len() as u8);
        h.extend_from_slice(&lacing);
        h.extend_from_slice(&body);
        let crc = crc32(&h);
        h[22..26].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn vorbis_id() -> Vec<u8> {
        let mut p = b"\x01vorbis\0\0\0\0\x02".to_vec();
        p.extend_from_slice(&44_100u32.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&128_000u32.to_le_bytes());
        p.resize(30, 0);
        p
    }

    /// A Vorbis link: id page, comment + setup over two pages, then data pages.
    fn vorbis_link(serial: u32, data_pages: u32) -> (Vec<Vec<u8>>, usize) {
        let setup = vec![5u8; 600];
        // The setup packet spans two pages (continued flag on the second).
        let mut pages = vec![
            page(serial, 0, 2, 0, &[&vorbis_id()]),
            page_open(
                serial,
                1,
                0,
                -1,
                &[b"\x03vorbis comment", &setup[..510]],
                true,
            ),
            page(serial, 2, 1, 0, &[&setup[510..]]),
        ];
        let headers = pages.len();
        for i in 0..data_pages {
            pages.push(page(
                serial,
                3 + i,
                0,
                1024 * i64::from(i + 1),
                &[&[9u8; 200], &[8u8; 100]],
            ));
        }
        (pages, headers)
    }

    #[test]
    fn crc_matches_known_value() {
        // "OggS" page CRC reference: the CRC of an empty input is 0, and of "a" is 0x1A72CD5F
        // with this (non-reflected, init 0) variant.
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0x89A1_897F);
    }

    #[test]
    fn vorbis_headers_then_timed_data() {
        let (pages, headers) = vorbis_link(7, 4);
        let s = pages.concat();
        let units = run(Format::Ogg, &s, &[100]);
        assert_eq!(units.len(), pages.len());
        for (i, (u, b)) in units.iter().enumerate() {
            assert_eq!(b, &pages[i]);
            let want = if i < headers {
                UnitKind::CodecHeader
            } else {
                UnitKind::Audio
            };
            assert_eq!(u.kind, want, "page {i}");
            assert_eq!(u.begins_stream, i == 0);
            if i >= headers {
                assert_eq!((u.samples, u.sample_rate), (1024, 44_100), "page {i}");
            }
        }
        let mut f = crate::frame::Framer::new(Format::Ogg);
        f.next_unit(&s);
        assert_eq!(
            f.stream_info(),
            StreamInfo {
                codec: "vorbis",
                sample_rate: 44_100,
                channels: 2,
                bitrate: 128_000
            }
        );
    }

    #[test]
    fn opus_chain_and_corruption() {
        let mut head = b"OpusHead\x01\x02".to_vec();
        head.resize(19, 0);
        let link = |serial: u32| {
            vec![
                page(serial, 0, 2, 0, &[&head]),
                page(serial, 1, 0, 0, &[b"OpusTags\0\0\0\0\0\0\0\0"]),
                page(serial, 2, 0, 960, &[&[1u8; 120]]),
                page(serial, 3, 4, 1920, &[&[2u8; 120]]),
            ]
        };
        let mut bad = page(1, 9, 0, 5000, &[&[3u8; 50]]);
        bad[40] ^= 0xFF;
        let stream = [
            link(1).concat(),
            bad.clone(),
            b"noise".to_vec(),
            link(2).concat(),
        ]
        .concat();
        let units = run(Format::Ogg, &stream, &[33, 1000]);
        let kinds: Vec<(UnitKind, bool)> = units
            .iter()
            .filter(|(u, _)| u.kind != UnitKind::Junk)
            .map(|(u, _)| (u.kind, u.begins_stream))
            .collect();
        let link_kinds = [
            (UnitKind::CodecHeader, true),
            (UnitKind::CodecHeader, false),
            (UnitKind::Audio, false),
            (UnitKind::Audio, false),
        ];
        assert_eq!(kinds, [link_kinds, link_kinds].concat());
        let junk: usize = units
            .iter()
            .filter(|(u, _)| u.kind == UnitKind::Junk)
            .map(|(u, _)| u.len)
            .sum();
        assert_eq!(junk, bad.len() + 5);
        let durations: Vec<u32> = units
            .iter()
            .filter(|(u, _)| u.kind == UnitKind::Audio)
            .map(|(u, _)| u.samples)
            .collect();
        assert_eq!(durations, [960, 960, 960, 960]);
    }

    proptest! {
        #[test]
        fn pages_survive_any_split(data_pages in 1u32..10, splits in prop::collection::vec(1usize..900, 1..6), junk in prop::collection::vec(0u8..0x40, 0..50)) {
            let (pages, _) = vorbis_link(3, data_pages);
            let stream = [junk.clone(), pages.concat()].concat();
            let units = run(Format::Ogg, &stream, &splits);
            let got: Vec<Vec<u8>> = units.iter().filter(|(u, _)| u.kind != UnitKind::Junk).map(|(_, b)| b.clone()).collect();
            prop_assert_eq!(got, pages);
        }

        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..3000), split in 1usize..300) {
            let mut d = data.clone();
            if d.len() > 10 { d[..4].copy_from_slice(b"OggS"); d[4] = 0; }
            let units = run(Format::Ogg, &d, &[split]);
            prop_assert!(units.iter().map(|(u, _)| u.len).sum::<usize>() <= d.len());
        }
    }
}
