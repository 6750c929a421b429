//! Metadata tags that appear inside MP3/AAC streams (ID3v2, ID3v1, APEv2, Lyrics3v2): they
//! are not audio and must not reach listeners, whose decoders may choke on them mid-stream.

/// What the bytes at the start of a buffer are.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// A tag of this total length (it may extend past the buffer).
    Tag(usize),
    /// Might be a tag: more bytes needed to tell.
    NeedMore,
    NotTag,
}

const APE: &[u8] = b"APETAGEX";
const LYRICS_BEGIN: &[u8] = b"LYRICSBEGIN";
const LYRICS_END: &[u8] = b"LYRICS200";
/// A Lyrics3v2 tag is at most this long; beyond it we stop looking for its end.
const LYRICS_MAX: usize = 1_000_000 + 15;

/// Whether `buf` starts with (a prefix of) a tag's magic: used to stop a garbage scan.
pub fn could_start(buf: &[u8]) -> bool {
    !buf.is_empty()
        && [b"ID3".as_slice(), b"TAG", APE, LYRICS_BEGIN]
            .iter()
            .any(|m| {
                let n = buf.len().min(m.len());
                buf[..n] == m[..n]
            })
}

/// Identifies a tag at the start of `buf`.
pub fn check(buf: &[u8]) -> Check {
    let magic = |m: &[u8]| -> Option<bool> {
        let n = buf.len().min(m.len());
        if buf[..n] != m[..n] {
            Some(false)
        } else if n < m.len() {
            None
        } else {
            Some(true)
        }
    };
    match magic(b"ID3") {
        Some(true) => {
            let Some(h) = buf.get(..10) else {
                return Check::NeedMore;
            };
            let size = h[6..10]
                .iter()
                .fold(0usize, |a, &b| (a << 7) | usize::from(b & 0x7F));
            let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
            if h[6..10].iter().any(|b| b & 0x80 != 0) || h[3] == 0xFF || h[4] == 0xFF {
                return Check::NotTag;
            }
            return Check::Tag(10 + size + footer);
        }
        None => return Check::NeedMore,
        Some(false) => {}
    }
    match magic(b"TAG") {
        Some(true) => return Check::Tag(128),
        None => return Check::NeedMore,
        Some(false) => {}
    }
    match magic(APE) {
        Some(true) => {
            let Some(h) = buf.get(..32) else {
                return Check::NeedMore;
            };
            let size = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
            let flags = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
            let is_header = flags & (1 << 29) != 0;
            // A header block at the front: the tag is header + size (size counts items
            // and footer). A lone footer: just its 32 bytes.
            return Check::Tag(if is_header { 32 + size } else { 32 });
        }
        None => return Check::NeedMore,
        Some(false) => {}
    }
    match magic(LYRICS_BEGIN) {
        Some(true) => {
            let end = buf
                .windows(LYRICS_END.len())
                .position(|w| w == LYRICS_END)
                .map(|p| p + LYRICS_END.len());
            match end {
                Some(e) => Check::Tag(e),
                None if buf.len() > LYRICS_MAX => Check::NotTag,
                None => Check::NeedMore,
            }
        }
        None => Check::NeedMore,
        Some(false) => Check::NotTag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_tags() {
        let mut id3 = b"ID3\x03\x00\x00\x00\x00\x01\x00".to_vec();
        id3.resize(10 + 128, 0);
        assert_eq!(check(&id3), Check::Tag(138));
        assert_eq!(check(b"ID3\x03"), Check::NeedMore);
        assert_eq!(check(b"TAG"), Check::Tag(128));
        assert_eq!(check(b"TA"), Check::NeedMore);
        assert_eq!(check(b"\xFF\xFB"), Check::NotTag);
        let mut ape = b"APETAGEX".to_vec();
        ape.extend_from_slice(&2000u32.to_le_bytes());
        ape.extend_from_slice(&100u32.to_le_bytes());
        ape.extend_from_slice(&0u32.to_le_bytes());
        ape.extend_from_slice(&(1u32 << 29).to_le_bytes());
        ape.resize(32, 0);
        assert_eq!(check(&ape), Check::Tag(132));
        assert_eq!(check(b"LYRICSBEGINabcLYRICS200"), Check::Tag(23));
        assert_eq!(check(b"LYRICSBEGINabc"), Check::NeedMore);
        assert!(could_start(b"ID3") && could_start(b"TAGx") && !could_start(b"XYZ"));
    }
}
