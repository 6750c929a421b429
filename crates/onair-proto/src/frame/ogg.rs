//! Ogg pages: capture, CRC check, and per-logical-stream codec tracking, so that header
//! pages are known (a late joiner must get them before any data page) and data pages get a
//! duration from their granule positions; and the writing side, [`PageWriter`], which lays
//! packets of any size into pages for an encoder.
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

/// Whether a whole page's stored CRC matches its bytes (false for anything shorter than a
/// page header).
pub fn page_crc_ok(page: &[u8]) -> bool {
    if page.len() < 27 {
        return false;
    }
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

/// Header-type flag: the page begins with the rest of a packet from the previous page.
pub const FLAG_CONTINUED: u8 = 0x01;
/// Header-type flag: first page of a logical stream.
pub const FLAG_BOS: u8 = 0x02;
/// Header-type flag: last page of a logical stream.
pub const FLAG_EOS: u8 = 0x04;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("{0} lacing values; a page holds at most 255")]
    TooManySegments(usize),
    #[error("body is {body} bytes but the lacing values add up to {lacing}")]
    BodyMismatch { body: usize, lacing: usize },
}

/// Appends one page to `out`: the 27-byte header with these fields, the lacing values, the
/// body (exactly as long as the lacing values add up to), CRC filled in.
pub fn encode_page(
    header_type: u8,
    granule: i64,
    serial: u32,
    sequence: u32,
    lacing: &[u8],
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), PageError> {
    let segments =
        u8::try_from(lacing.len()).map_err(|_| PageError::TooManySegments(lacing.len()))?;
    let laced: usize = lacing.iter().map(|&l| usize::from(l)).sum();
    if laced != body.len() {
        return Err(PageError::BodyMismatch {
            body: body.len(),
            lacing: laced,
        });
    }
    let start = out.len();
    out.reserve(27 + lacing.len() + body.len());
    out.extend_from_slice(b"OggS\0");
    out.push(header_type);
    out.extend_from_slice(&granule.to_le_bytes());
    out.extend_from_slice(&serial.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(segments);
    out.extend_from_slice(lacing);
    out.extend_from_slice(body);
    let crc = crc32(&out[start..]);
    out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Lays one logical stream's packets into pages. A packet of any size is laced as
/// `len / 255` values of 255 and one final value `len % 255` (so a multiple of 255 ends
/// with a 0); a page is written as soon as its 255 lacing values are used up (a packet
/// spanning pages makes the next one `continued`), otherwise when the caller flushes.
///
/// Invariants: the first page written is BOS, only the page written by [`finish`] is EOS,
/// sequence numbers count up from 0 without gaps, and a page's granule is the one given
/// with the last packet that ends on it, or -1 when none ends there.
///
/// [`finish`]: PageWriter::finish
#[derive(Debug)]
pub struct PageWriter {
    serial: u32,
    sequence: u32,
    lacing: Vec<u8>,
    body: Vec<u8>,
    /// Granule of the last packet completed on the pending page; -1 when none has been.
    granule: i64,
    /// Granule of the last page written that had one (an empty EOS page repeats it).
    last_granule: i64,
    packets: usize,
    /// The pending page begins with the rest of a packet begun on the previous page.
    continued: bool,
}

impl PageWriter {
    pub fn new(serial: u32) -> PageWriter {
        PageWriter {
            serial,
            sequence: 0,
            lacing: Vec::with_capacity(255),
            body: Vec::new(),
            granule: -1,
            last_granule: 0,
            packets: 0,
            continued: false,
        }
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Pages written so far, which is the next page's sequence number.
    pub fn pages_written(&self) -> u32 {
        self.sequence
    }

    /// Packets that end on the page not yet written.
    pub fn pending_packets(&self) -> usize {
        self.packets
    }

    /// Adds a packet whose end has granule position `granule`. Pages that fill up are
    /// appended to `out`; the rest waits for the next packet, [`flush`] or [`finish`].
    ///
    /// [`flush`]: PageWriter::flush
    /// [`finish`]: PageWriter::finish
    pub fn push_packet(&mut self, packet: &[u8], granule: i64, out: &mut Vec<u8>) {
        let mut rest = packet;
        loop {
            if self.lacing.len() == 255 {
                self.write_pending(0, out);
            }
            let n = rest.len().min(255);
            // invariant: n <= 255.
            self.lacing.push(n as u8);
            self.body.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if n < 255 {
                break;
            }
        }
        self.granule = granule;
        self.packets += 1;
    }

    /// Writes the pending page, if it holds anything, so that every packet pushed so far
    /// that is complete is in `out`.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if !self.lacing.is_empty() {
            self.write_pending(0, out);
        }
    }

    /// Ends the logical stream: writes the pending page (possibly empty) with the EOS flag.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.write_pending(FLAG_EOS, out);
    }

    fn write_pending(&mut self, extra_flags: u8, out: &mut Vec<u8>) {
        let mut flags = extra_flags;
        if self.continued {
            flags |= FLAG_CONTINUED;
        }
        if self.sequence == 0 {
            flags |= FLAG_BOS;
        }
        let granule = if self.packets > 0 {
            self.granule
        } else if self.lacing.is_empty() {
            self.last_granule
        } else {
            -1
        };
        // invariant: push_packet keeps at most 255 lacing values, each matched by its bytes.
        encode_page(
            flags,
            granule,
            self.serial,
            self.sequence,
            &self.lacing,
            &self.body,
            out,
        )
        .expect("pending page is well-formed");
        if granule >= 0 {
            self.last_granule = granule;
        }
        self.continued = self.lacing.last() == Some(&255);
        self.sequence = self.sequence.wrapping_add(1);
        self.lacing.clear();
        self.body.clear();
        self.granule = -1;
        self.packets = 0;
    }
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

    /// Parses `stream` as back-to-back pages (all must check out) and returns each page's
    /// header, lacing and body.
    fn parse_pages(stream: &[u8]) -> Vec<(PageHeader, Vec<u8>, Vec<u8>)> {
        let mut pages = Vec::new();
        let mut rest = stream;
        while !rest.is_empty() {
            let h = parse_page_header(rest).unwrap().unwrap();
            let page = &rest[..h.len];
            assert!(page_crc_ok(page), "page {} CRC", pages.len());
            let lacing = page[27..27 + usize::from(h.segments)].to_vec();
            let body = page[27 + usize::from(h.segments)..].to_vec();
            pages.push((h, lacing, body));
            rest = &rest[h.len..];
        }
        pages
    }

    /// Reassembles packets from pages; returns them and, per page, the index of the last
    /// packet that ends on it.
    #[allow(clippy::type_complexity)]
    fn packets_of(pages: &[(PageHeader, Vec<u8>, Vec<u8>)]) -> (Vec<Vec<u8>>, Vec<Option<usize>>) {
        let mut packets = Vec::new();
        let mut last_ending = Vec::new();
        let mut cur = Vec::new();
        for (_, lacing, body) in pages {
            let mut at = 0;
            let mut ended = None;
            for &l in lacing {
                cur.extend_from_slice(&body[at..at + usize::from(l)]);
                at += usize::from(l);
                if l < 255 {
                    packets.push(std::mem::take(&mut cur));
                    ended = Some(packets.len() - 1);
                }
            }
            last_ending.push(ended);
        }
        assert!(cur.is_empty(), "stream ends inside a packet");
        (packets, last_ending)
    }

    #[test]
    fn writer_known_layout() {
        let mut w = PageWriter::new(0x1234);
        let mut out = Vec::new();
        w.push_packet(b"OpusHead", 0, &mut out);
        assert!(out.is_empty(), "a page waits for flush");
        w.flush(&mut out);
        w.push_packet(&[7; 255], 960, &mut out);
        w.push_packet(&[], 1920, &mut out);
        w.finish(&mut out);
        let pages = parse_pages(&out);
        assert_eq!(pages.len(), 2);
        let (h0, l0, b0) = &pages[0];
        assert_eq!(
            (h0.header_type, h0.granule, h0.serial, h0.sequence),
            (FLAG_BOS, 0, 0x1234, 0)
        );
        assert_eq!(
            (l0.as_slice(), b0.as_slice()),
            (&[8u8][..], &b"OpusHead"[..])
        );
        let (h1, l1, b1) = &pages[1];
        assert_eq!(
            (h1.header_type, h1.granule, h1.sequence),
            (FLAG_EOS, 1920, 1)
        );
        assert_eq!(l1, &[255, 0, 0]);
        assert_eq!(b1.len(), 255);
        // The written header reads back field for field, and a flipped bit breaks the CRC.
        let mut bad = out[..h0.len].to_vec();
        bad[30] ^= 1;
        assert!(!page_crc_ok(&bad));
        assert!(!page_crc_ok(&out[..20]));
    }

    #[test]
    fn encode_page_rejects_inconsistent_input() {
        let mut out = Vec::new();
        assert_eq!(
            encode_page(0, 0, 1, 0, &[3], b"ab", &mut out),
            Err(PageError::BodyMismatch { body: 2, lacing: 3 })
        );
        assert_eq!(
            encode_page(0, 0, 1, 0, &[0; 256], b"", &mut out),
            Err(PageError::TooManySegments(256))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn writer_spans_huge_packets_over_pages() {
        // (packet length, pages): 255 * 255 bytes need 256 lacing values, so a second page
        // with the single terminating 0; one more byte gives the same layout with a 1.
        for (len, want_pages) in [(255 * 255, 2), (255 * 255 + 1, 2), (3 * 255 * 255 + 17, 4)] {
            let big: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut w = PageWriter::new(9);
            let mut out = Vec::new();
            w.push_packet(&big, 4800, &mut out);
            assert_eq!(
                out.len(),
                (want_pages - 1) * (27 + 255 + 255 * 255),
                "full pages are written at once"
            );
            w.flush(&mut out);
            let pages = parse_pages(&out);
            assert_eq!(pages.len(), want_pages);
            for (i, (h, _, _)) in pages.iter().enumerate() {
                let last = i + 1 == want_pages;
                assert_eq!(h.granule, if last { 4800 } else { -1 }, "page {i} of {len}");
                assert_eq!(h.continued(), i > 0);
                assert_eq!(h.is_bos(), i == 0);
            }
            assert_eq!(packets_of(&pages).0, vec![big]);
        }
    }

    #[test]
    fn writer_pages_are_framed_as_opus_headers_then_audio() {
        let mut head = b"OpusHead\x01\x02".to_vec();
        head.resize(19, 0);
        let mut w = PageWriter::new(5);
        let mut out = Vec::new();
        w.push_packet(&head, 0, &mut out);
        w.flush(&mut out);
        w.push_packet(b"OpusTags\0\0\0\0\0\0\0\0", 0, &mut out);
        w.flush(&mut out);
        for i in 1..=3 {
            w.push_packet(&[i as u8; 100], 960 * i, &mut out);
            w.flush(&mut out);
        }
        w.finish(&mut out);
        let units = run(Format::Ogg, &out, &[77]);
        let kinds: Vec<UnitKind> = units.iter().map(|(u, _)| u.kind).collect();
        assert_eq!(
            kinds,
            [
                UnitKind::CodecHeader,
                UnitKind::CodecHeader,
                UnitKind::Audio,
                UnitKind::Audio,
                UnitKind::Audio,
                UnitKind::Audio
            ]
        );
        let samples: Vec<u32> = units.iter().skip(2).map(|(u, _)| u.samples).collect();
        assert_eq!(
            samples,
            [960, 960, 960, 0],
            "empty EOS page repeats the last granule"
        );
    }

    proptest! {

        #[test]
        fn writer_round_trips_any_packets(
            packets in prop::collection::vec((0usize..70_000, any::<bool>()), 0..8),
            serial in any::<u32>(),
        ) {
            let mut w = PageWriter::new(serial);
            let mut out = Vec::new();
            let mut want = Vec::new();
            for (i, &(len, flush)) in packets.iter().enumerate() {
                let p: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
                let granule = 1000 * (i as i64 + 1);
                let before = out.len();
                w.push_packet(&p, granule, &mut out);
                if flush {
                    w.flush(&mut out);
                }
                // Whatever was appended is whole pages.
                let appended = parse_pages(&out[before..]);
                prop_assert_eq!(appended.iter().map(|(h, _, _)| h.len).sum::<usize>(), out.len() - before);
                want.push((p, granule));
            }
            w.finish(&mut out);
            let pages = parse_pages(&out);
            prop_assert!(!pages.is_empty());
            let (got, last_ending) = packets_of(&pages);
            let mut prev_open = false;
            for (i, (h, lacing, _)) in pages.iter().enumerate() {
                // A page's granule is that of the last packet ending on it; -1 if none does
                // (an empty EOS page repeats the previous granule).
                match last_ending[i] {
                    Some(k) => prop_assert_eq!(h.granule, want[k].1),
                    None if lacing.is_empty() => prop_assert!(h.granule >= 0),
                    None => prop_assert_eq!(h.granule, -1),
                }
                prop_assert_eq!(h.serial, serial);
                prop_assert_eq!(h.sequence, i as u32);
                prop_assert_eq!(h.is_bos(), i == 0);
                prop_assert_eq!(h.is_eos(), i + 1 == pages.len());
                prop_assert_eq!(h.continued(), prev_open);
                prev_open = lacing.last() == Some(&255);
            }
            prop_assert_eq!(got, want.into_iter().map(|(p, _)| p).collect::<Vec<_>>());
        }
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
