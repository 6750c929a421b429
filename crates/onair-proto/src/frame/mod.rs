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
    Mpeg(SyncFramer<mpeg::Header>),
    Adts(SyncFramer<adts::Header>),
    Ogg(ogg::OggFramer),
    Opaque,
}

impl Framer {
    pub fn new(format: Format) -> Framer {
        let inner = match format {
            Format::Mpeg => Inner::Mpeg(SyncFramer::default()),
            Format::Adts => Inner::Adts(SyncFramer::default()),
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
            Inner::Mpeg(f) => f.last.map(mpeg::stream_info).unwrap_or_default(),
            Inner::Adts(f) => f.last.map(adts::stream_info).unwrap_or_default(),
            Inner::Ogg(f) => f.stream_info(),
            Inner::Opaque => StreamInfo::default(),
        }
    }
}

/// A sync-word frame header (MPEG audio, ADTS): what the shared splitter needs to know.
trait SyncHeader: Copy {
    /// Bytes needed to parse a header.
    const LEN: usize;
    fn parse(b: &[u8]) -> Option<Self>;
    /// Whether these bytes (fewer than `LEN`, maybe none) could still begin a header.
    fn could_start(b: &[u8]) -> bool;
    fn frame_len(&self) -> usize;
    /// Same stream parameters: a change means the lock (or a candidate) is not trusted.
    fn same_stream(&self, other: &Self) -> bool;
    fn samples(&self) -> u32;
    fn sample_rate(&self) -> u32;
}

/// The splitter for sync-word formats. Acquiring sync, a header counts only when the next
/// one follows at the computed offset with the same parameters (or a tag follows), so
/// random bytes that look like a sync word are rejected; once locked, each following frame
/// with matching parameters is emitted as soon as it is complete (no added latency). Any
/// junk drops the lock. Tags larger than the buffer are skipped across calls.
#[derive(Debug)]
struct SyncFramer<H> {
    skip: usize,
    last: Option<H>,
    locked: bool,
}

impl<H> Default for SyncFramer<H> {
    fn default() -> Self {
        SyncFramer {
            skip: 0,
            last: None,
            locked: false,
        }
    }
}

/// What the bytes at the start of a buffer are, for a sync-word format.
enum Candidate {
    Frame(usize),
    NeedMore,
    No,
}

/// Bytes kept at the end of a buffer when no sync is found: a sync word or tag magic may
/// be split across reads.
const KEEP_TAIL: usize = 11;

impl<H: SyncHeader> SyncFramer<H> {
    fn next_unit(&mut self, buf: &[u8]) -> Option<Unit> {
        if buf.is_empty() {
            return None;
        }
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            self.skip -= n;
            return Some(Unit::junk(n));
        }
        let unit = match tag::check(buf) {
            tag::Check::Tag(len) => {
                let n = len.min(buf.len());
                self.skip = len - n;
                Unit::junk(n)
            }
            tag::Check::NeedMore => return None,
            tag::Check::NotTag => match self.candidate(buf) {
                Candidate::Frame(len) => {
                    let h = self.last?;
                    Unit {
                        kind: UnitKind::Audio,
                        len,
                        samples: h.samples(),
                        sample_rate: h.sample_rate(),
                        begins_stream: false,
                    }
                }
                Candidate::NeedMore => return None,
                Candidate::No => Unit::junk(skip_garbage(buf)?),
            },
        };
        if unit.kind == UnitKind::Junk {
            self.locked = false;
        }
        Some(unit)
    }

    fn candidate(&mut self, buf: &[u8]) -> Candidate {
        let Some(h) = buf.get(..H::LEN).and_then(H::parse) else {
            return if buf.len() < H::LEN && H::could_start(buf) {
                Candidate::NeedMore
            } else {
                Candidate::No
            };
        };
        let len = h.frame_len();
        let locked = self.locked && self.last.is_some_and(|l| l.same_stream(&h));
        let Some(rest) = buf.get(len..) else {
            return Candidate::NeedMore;
        };
        if !locked {
            let confirmed = if rest.len() < H::LEN {
                if tag::could_start(rest) || H::could_start(rest) {
                    return Candidate::NeedMore;
                }
                false
            } else {
                match H::parse(&rest[..H::LEN]) {
                    Some(next) => next.same_stream(&h),
                    None => match tag::check(rest) {
                        tag::Check::Tag(_) => true,
                        tag::Check::NeedMore => return Candidate::NeedMore,
                        tag::Check::NotTag => false,
                    },
                }
            };
            if !confirmed {
                return Candidate::No;
            }
        }
        self.last = Some(h);
        self.locked = true;
        Candidate::Frame(len)
    }
}

/// Length of the garbage at the start of `buf`: up to the next byte that could start a
/// frame or a tag. `None` when all of a short buffer might still be the start of one.
fn skip_garbage(buf: &[u8]) -> Option<usize> {
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
        Some(i) => Some(i),
        None if buf.len() > KEEP_TAIL => Some(buf.len() - KEEP_TAIL),
        None => None,
    }
}
