//! Cutting a source's byte stream into whole units — MPEG audio frames, ADTS frames, Ogg
//! pages — so every listener starts on a boundary, every unit has a media duration, junk
//! (ID3/APE/Lyrics3 tags, garbage) is dropped, and Ogg codec headers are known.
//!
//! Invariants: [`Framer::next_unit`] is total (never panics), never returns a zero-length
//! unit, and the units it returns tile the consumed bytes exactly, whatever the chunking.

pub mod adts;
pub mod mpeg;
pub mod ogg;
pub mod tag;

/// The bitstream family a source declared with its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Mpeg,
    Adts,
    Ogg,
    /// Relayed as bytes without framing (e.g. WebM).
    Opaque,
}

impl Format {
    /// Maps a Content-Type (case-insensitive, parameters ignored) to a format.
    pub fn from_content_type(ct: &str) -> Option<Format> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match base.as_str() {
            "audio/mpeg" | "audio/mp3" | "audio/mpg" | "audio/x-mpeg" => Format::Mpeg,
            "audio/aac" | "audio/aacp" | "audio/x-aac" => Format::Adts,
            "application/ogg" | "audio/ogg" | "audio/opus" | "audio/x-ogg" | "video/ogg"
            | "audio/vorbis" => Format::Ogg,
            "audio/webm" | "video/webm" => Format::Opaque,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// Playable data: a frame, an Ogg data page, or an opaque byte run.
    Audio,
    /// An Ogg page carrying codec headers (a late joiner needs these first).
    CodecHeader,
    /// Bytes that are not part of the stream (tags, garbage before a sync).
    Junk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    pub kind: UnitKind,
    /// Bytes from the start of the buffer given to `next_unit`.
    pub len: usize,
    /// Media duration in samples at `sample_rate` (0 when unknown).
    pub samples: u32,
    pub sample_rate: u32,
    /// Ogg: a BOS page, the start of a logical stream (a new chain link's headers).
    pub begins_stream: bool,
}

impl Unit {
    fn junk(len: usize) -> Unit {
        Unit {
            kind: UnitKind::Junk,
            len,
            samples: 0,
            sample_rate: 0,
            begins_stream: false,
        }
    }
}

/// Codec parameters of the stream as seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamInfo {
    /// "mp3", "mp2", "mp1", "aac", "vorbis", "opus", "flac", "speex", "ogg"; "" if unknown.
    pub codec: &'static str,
    pub sample_rate: u32,
    pub channels: u8,
    /// Nominal bit/s when the format says (MPEG header, Vorbis nominal), else 0.
    pub bitrate: u32,
}

/// Splits one source's stream into units. Feed it the unconsumed bytes each time.
#[derive(Debug)]
pub struct Framer {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Mpeg(mpeg::MpegFramer),
    Adts(adts::AdtsFramer),
    Ogg(ogg::OggFramer),
    Opaque,
}

impl Framer {
    pub fn new(format: Format) -> Framer {
        let inner = match format {
            Format::Mpeg => Inner::Mpeg(mpeg::MpegFramer::default()),
            Format::Adts => Inner::Adts(adts::AdtsFramer::default()),
            Format::Ogg => Inner::Ogg(ogg::OggFramer::default()),
            Format::Opaque => Inner::Opaque,
        };
        Framer { inner }
    }

    /// The next complete unit at the start of `buf`, or `None` when more bytes are needed.
    pub fn next_unit(&mut self, buf: &[u8]) -> Option<Unit> {
        match &mut self.inner {
            Inner::Mpeg(f) => f.next_unit(buf),
            Inner::Adts(f) => f.next_unit(buf),
            Inner::Ogg(f) => f.next_unit(buf),
            Inner::Opaque => (!buf.is_empty()).then_some(Unit {
                kind: UnitKind::Audio,
                len: buf.len(),
                samples: 0,
                sample_rate: 0,
                begins_stream: false,
            }),
        }
    }

    pub fn stream_info(&self) -> StreamInfo {
        match &self.inner {
            Inner::Mpeg(f) => f.stream_info(),
            Inner::Adts(f) => f.stream_info(),
            Inner::Ogg(f) => f.stream_info(),
            Inner::Opaque => StreamInfo::default(),
        }
    }
}

/// Shared resync logic for the sync-word formats (MPEG, ADTS): a pending multi-call skip
/// for tags larger than the buffer, tag detection, and the search for the next candidate.
#[derive(Debug, Default)]
struct SyncState {
    skip: usize,
}

/// What a sync-word format says about the bytes at the start of a buffer.
enum Candidate {
    /// A confirmed frame of this many bytes with this duration.
    Frame(Unit),
    /// Could be a frame: wait for more bytes.
    NeedMore,
    /// Not a frame here.
    No,
}

/// Bytes kept at the end of a buffer when no sync is found: a sync word or tag magic may
/// be split across reads.
const KEEP_TAIL: usize = 11;

impl SyncState {
    fn next_unit(
        &mut self,
        buf: &[u8],
        mut candidate: impl FnMut(&[u8]) -> Candidate,
    ) -> Option<Unit> {
        if buf.is_empty() {
            return None;
        }
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            self.skip -= n;
            return Some(Unit::junk(n));
        }
        match tag::check(buf) {
            tag::Check::Tag(len) => {
                let n = len.min(buf.len());
                self.skip = len - n;
                return Some(Unit::junk(n));
            }
            tag::Check::NeedMore => return None,
            tag::Check::NotTag => {}
        }
        match candidate(buf) {
            Candidate::Frame(u) => return Some(u),
            Candidate::NeedMore => return None,
            Candidate::No => {}
        }
        // Garbage: drop up to the next byte that could start a frame or a tag.
        let next = buf
            .iter()
            .enumerate()
            .skip(1)
            .position(|(i, &b)| {
                (b == 0xFF && buf.get(i + 1).is_none_or(|n| n & 0xE0 == 0xE0))
                    || tag::could_start(&buf[i..])
            })
            .map(|p| p + 1);
        match next {
            Some(i) => Some(Unit::junk(i)),
            None if buf.len() > KEEP_TAIL => Some(Unit::junk(buf.len() - KEEP_TAIL)),
            None => None,
        }
    }
}
