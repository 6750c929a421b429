//! ICY in-band metadata: block encoding/parsing and the per-listener interleave and
//! de-interleave state machines.
//!
//! A metadata block is one length byte `n` followed by `16 * n` bytes of text
//! (`StreamTitle='...';StreamUrl='...';`) padded with NULs; `n == 0` means "no change".
//! Invariant of [`Interleaver`]: exactly `metaint` audio bytes separate consecutive blocks,
//! counted from the first body byte, whatever the chunk boundaries.

use bytes::Bytes;

/// The largest metadata payload a block can carry (255 × 16 bytes).
pub const MAX_META_LEN: usize = 255 * 16;

/// Fields announced to listeners in a metadata block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamMeta {
    pub title: String,
    pub url: Option<String>,
}

/// Encodes `meta` as a complete block (length byte included). Text that does not fit in
/// [`MAX_META_LEN`] is cut at a UTF-8 character boundary, keeping the closing `';`.
pub fn encode_block(meta: &StreamMeta) -> Bytes {
    let mut text = String::with_capacity(32 + meta.title.len());
    push_field(&mut text, "StreamTitle", &meta.title);
    if let Some(url) = &meta.url {
        push_field(&mut text, "StreamUrl", url);
    }
    if text.len() > MAX_META_LEN {
        // Only the title can realistically overflow: shorten it and re-encode without the URL.
        let room = MAX_META_LEN - "StreamTitle='';".len();
        let mut cut = room.min(meta.title.len());
        while !meta.title.is_char_boundary(cut) {
            cut -= 1;
        }
        text.clear();
        push_field(&mut text, "StreamTitle", &meta.title[..cut]);
    }
    let blocks = text.len().div_ceil(16);
    let mut out = Vec::with_capacity(1 + blocks * 16);
    out.push(blocks as u8); // invariant: text.len() <= MAX_META_LEN, so blocks <= 255
    out.extend_from_slice(text.as_bytes());
    out.resize(1 + blocks * 16, 0);
    Bytes::from(out)
}

/// The block that says "metadata unchanged".
pub fn empty_block() -> Bytes {
    Bytes::from_static(&[0])
}

fn push_field(text: &mut String, key: &str, value: &str) {
    text.push_str(key);
    text.push_str("='");
    // Players split on `';`, so an embedded `';` would end the value early; the usual
    // escape is to drop the quote's special meaning by replacing it with a lookalike.
    text.push_str(&value.replace("';", "’;"));
    text.push_str("';");
}

/// Parses a block payload (without length byte; trailing NULs allowed) into key/value pairs.
///
/// Values are delimited by `'` followed by `;`, so titles may contain `'`, `;` and `=`.
pub fn parse_block(payload: &[u8]) -> Vec<(String, String)> {
    let end = payload.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let text = String::from_utf8_lossy(&payload[..end]);
    let mut out = Vec::new();
    let mut rest: &str = &text;
    while let Some(eq) = rest.find("='") {
        let key = rest[..eq].trim_start_matches(';').trim().to_string();
        let after = &rest[eq + 2..];
        let (value, next) = match after.find("';") {
            Some(close) => (&after[..close], &after[close + 2..]),
            None => (after.strip_suffix('\'').unwrap_or(after), ""),
        };
        out.push((key, value.to_string()));
        rest = next;
    }
    out
}

/// Inserts metadata blocks into one listener's audio, every `metaint` bytes.
///
/// Output is a list of [`Bytes`] segments (slices of the shared audio chunks plus shared
/// blocks), so a listener's write can be one vectored write with no copying.
#[derive(Debug, Clone)]
pub struct Interleaver {
    metaint: usize,
    until_block: usize,
    last_sent: Option<Bytes>,
}

impl Interleaver {
    /// `metaint` must be at least 1; 0 is treated as 1.
    pub fn new(metaint: usize) -> Interleaver {
        let metaint = metaint.max(1);
        Interleaver {
            metaint,
            until_block: metaint,
            last_sent: None,
        }
    }

    pub fn metaint(&self) -> usize {
        self.metaint
    }

    /// Appends `audio` to `out`, with a metadata block at each `metaint` boundary. `current`
    /// is the encoded block in effect for these bytes; it is sent in full the first time and
    /// whenever it differs from what this listener last got, otherwise an empty block.
    ///
    /// A block announces the bytes that follow it, so the block at a boundary is emitted
    /// just before the next audio byte, with that byte's metadata: a title set exactly at a
    /// boundary is announced there, not one interval later.
    pub fn interleave(&mut self, audio: &Bytes, current: &Bytes, out: &mut Vec<Bytes>) {
        let mut pos = 0;
        while pos < audio.len() {
            if self.until_block == 0 {
                out.push(self.block_for(current));
                self.until_block = self.metaint;
            }
            let take = self.until_block.min(audio.len() - pos);
            out.push(audio.slice(pos..pos + take));
            pos += take;
            self.until_block -= take;
        }
    }

    fn block_for(&mut self, current: &Bytes) -> Bytes {
        if self.last_sent.as_ref() == Some(current) {
            return empty_block();
        }
        self.last_sent = Some(current.clone());
        current.clone()
    }
}

#[derive(Debug, Clone, Copy)]
enum DeState {
    Audio { left: usize },
    Length,
    Meta { left: usize },
}

/// Splits a received ICY stream back into audio bytes and metadata payloads.
#[derive(Debug, Clone)]
pub struct Deinterleaver {
    metaint: usize,
    state: DeState,
    meta: Vec<u8>,
}

impl Deinterleaver {
    /// `metaint` must be at least 1; 0 is treated as 1.
    pub fn new(metaint: usize) -> Deinterleaver {
        let metaint = metaint.max(1);
        Deinterleaver {
            metaint,
            state: DeState::Audio { left: metaint },
            meta: Vec::new(),
        }
    }

    /// Feeds received body bytes (any split). `audio` gets each run of audio bytes, `meta`
    /// the payload of each complete block with padding NULs removed (empty for `n == 0`).
    pub fn push(
        &mut self,
        mut input: &[u8],
        mut audio: impl FnMut(&[u8]),
        mut meta: impl FnMut(&[u8]),
    ) {
        while !input.is_empty() {
            match self.state {
                DeState::Audio { left } => {
                    let take = left.min(input.len());
                    audio(&input[..take]);
                    input = &input[take..];
                    self.state = if take == left {
                        DeState::Length
                    } else {
                        DeState::Audio { left: left - take }
                    };
                }
                DeState::Length => {
                    let len = usize::from(input[0]) * 16;
                    input = &input[1..];
                    if len == 0 {
                        meta(&[]);
                        self.state = DeState::Audio { left: self.metaint };
                    } else {
                        self.meta.clear();
                        self.state = DeState::Meta { left: len };
                    }
                }
                DeState::Meta { left } => {
                    let take = left.min(input.len());
                    self.meta.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if take == left {
                        let end = self.meta.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                        meta(&self.meta[..end]);
                        self.state = DeState::Audio { left: self.metaint };
                    } else {
                        self.state = DeState::Meta { left: left - take };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(title: &str) -> StreamMeta {
        StreamMeta {
            title: title.to_string(),
            url: None,
        }
    }

    #[test]
    fn block_layout() {
        let b = encode_block(&meta("Hi"));
        // "StreamTitle='Hi';" is 17 bytes: two 16-byte blocks, NUL padded.
        assert_eq!(b[0], 2);
        assert_eq!(b.len(), 33);
        assert_eq!(&b[1..18], b"StreamTitle='Hi';");
        assert!(b[18..].iter().all(|&x| x == 0));
    }

    #[test]
    fn awkward_titles_round_trip() {
        for t in [
            "It's; a=b \"quoted\"",
            "Ünïcødé – 日本語 🎵",
            "a;b;c",
            "=",
            "'",
        ] {
            let b = encode_block(&StreamMeta {
                title: t.into(),
                url: Some("http://x/?a=1;b='2'".into()),
            });
            let fields = parse_block(&b[1..]);
            assert_eq!(fields[0], ("StreamTitle".into(), t.into()), "{t}");
            assert_eq!(fields[1].0, "StreamUrl");
        }
    }

    #[test]
    fn oversized_title_is_cut_on_char_boundary() {
        let t = "é".repeat(5000);
        let b = encode_block(&meta(&t));
        assert_eq!(b.len(), 1 + usize::from(b[0]) * 16);
        let fields = parse_block(&b[1..]);
        assert!(t.starts_with(&fields[0].1));
        assert!(fields[0].1.len() > 4000);
    }

    #[test]
    fn first_block_full_then_empty_until_change() {
        let mut il = Interleaver::new(4);
        let a = encode_block(&meta("A"));
        let b = encode_block(&meta("B"));
        let mut out = Vec::new();
        il.interleave(&Bytes::from_static(b"12345678"), &a, &mut out);
        il.interleave(&Bytes::from_static(b"abcd"), &b, &mut out);
        let lens: Vec<usize> = out.iter().map(|s| s.len()).collect();
        // The block due after "5678" waits for the next byte, which carries title B.
        assert_eq!(lens, vec![4, a.len(), 4, b.len(), 4]);
    }

    proptest! {
        #[test]
        fn deinterleave_inverts_interleave(
            metaint in 1usize..64,
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20),
            titles in prop::collection::vec("\\PC{0,40}", 1..4),
            splits in prop::collection::vec(1usize..50, 1..20),
        ) {
            let blocks: Vec<Bytes> = titles.iter().map(|t| encode_block(&meta(t))).collect();
            let mut il = Interleaver::new(metaint);
            let mut wire = Vec::new();
            let mut audio_in = Vec::new();
            for (i, c) in chunks.iter().enumerate() {
                let mut out = Vec::new();
                il.interleave(&Bytes::copy_from_slice(c), &blocks[i % blocks.len()], &mut out);
                for s in out { wire.extend_from_slice(&s); }
                audio_in.extend_from_slice(c);
            }
            let mut de = Deinterleaver::new(metaint);
            let mut audio_out = Vec::new();
            let mut titles_out = Vec::new();
            let mut rest = &wire[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = splits[i % splits.len()].min(rest.len());
                de.push(&rest[..n], |a| audio_out.extend_from_slice(a), |m| {
                    if !m.is_empty() {
                        titles_out.push(parse_block(m)[0].1.clone());
                    }
                });
                rest = &rest[n..];
                i += 1;
            }
            prop_assert_eq!(audio_out, audio_in);
            for t in &titles_out {
                prop_assert!(titles.iter().any(|x| x.replace("';", "’;") == *t));
            }
        }

        #[test]
        fn deinterleaver_never_panics(metaint in 1usize..100, data in prop::collection::vec(any::<u8>(), 0..2000)) {
            let mut de = Deinterleaver::new(metaint);
            de.push(&data, |_| {}, |_| {});
        }
    }
}
