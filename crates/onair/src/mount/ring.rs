//! The fan-out ring: a mount's recent audio as shared, frame-aligned chunks with absolute
//! sequence numbers and byte offsets.
//!
//! Invariants: chunks are contiguous (`chunk[i].offset + len == chunk[i+1].offset`), each
//! begins on a frame/page boundary, and the ring retains at least `retain_bytes` of audio
//! (plus the newest chunk) so both the burst and a listener's allowed lag can be served.
//! Readers clone [`Bytes`] handles; nothing is copied per listener.

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct Chunk {
    /// Stream byte offset of the chunk's first byte.
    pub offset: u64,
    pub audio: Bytes,
    /// The ICY metadata block in effect for these bytes.
    pub meta: Bytes,
}

#[derive(Debug)]
pub struct Ring {
    chunks: VecDeque<Chunk>,
    first_seq: u64,
    end_offset: u64,
    held_bytes: usize,
    retain_bytes: usize,
}

/// A reader asked for data the ring no longer holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Lagged;

impl Ring {
    pub fn new(retain_bytes: usize) -> Ring {
        Ring {
            chunks: VecDeque::new(),
            first_seq: 0,
            end_offset: 0,
            held_bytes: 0,
            retain_bytes,
        }
    }

    /// Changes how much is retained (a reload); takes effect from the next push.
    pub fn set_retain(&mut self, retain_bytes: usize) {
        self.retain_bytes = retain_bytes;
    }

    pub fn push(&mut self, audio: Bytes, meta: Bytes) {
        let len = audio.len();
        self.chunks.push_back(Chunk {
            offset: self.end_offset,
            audio,
            meta,
        });
        self.end_offset += len as u64;
        self.held_bytes += len;
        while let Some(front) = self.chunks.front() {
            if self.held_bytes - front.audio.len() < self.retain_bytes {
                break;
            }
            self.held_bytes -= front.audio.len();
            self.chunks.pop_front();
            self.first_seq += 1;
        }
    }

    /// Sequence number the next pushed chunk will get.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.chunks.len() as u64
    }

    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    /// Where a new reader starts: the earliest chunk at or after `not_before` (a stream
    /// offset) such that the bytes from it to the end fit in `burst` — but always at least
    /// the newest chunk, so a joiner hears something at once.
    pub fn burst_start(&self, burst: usize, not_before: u64) -> u64 {
        let mut seq = self.end_seq();
        let mut total = 0usize;
        for (i, c) in self.chunks.iter().enumerate().rev() {
            if c.offset < not_before || (total + c.audio.len() > burst && seq != self.end_seq()) {
                break;
            }
            total += c.audio.len();
            seq = self.first_seq + i as u64;
        }
        seq
    }

    /// The sequence number of the chunk starting exactly at `offset`, if held.
    pub fn seq_at_offset(&self, offset: u64) -> Option<u64> {
        let i = self.chunks.iter().position(|c| c.offset == offset)?;
        Some(self.first_seq + i as u64)
    }

    pub fn offset_of_seq(&self, seq: u64) -> u64 {
        match seq.checked_sub(self.first_seq) {
            Some(i) => self
                .chunks
                .get(i as usize)
                .map_or(self.end_offset, |c| c.offset),
            None => 0,
        }
    }

    /// Appends clones of chunks from `seq` on to `out`; returns the next sequence number.
    pub fn read_from(&self, seq: u64, out: &mut Vec<Chunk>) -> Result<u64, Lagged> {
        let start = seq.checked_sub(self.first_seq).ok_or(Lagged)? as usize;
        out.extend(self.chunks.iter().skip(start).cloned());
        Ok(self.end_seq().max(seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_with(sizes: &[usize], retain: usize) -> Ring {
        let mut r = Ring::new(retain);
        for &s in sizes {
            r.push(Bytes::from(vec![0u8; s]), Bytes::new());
        }
        r
    }

    #[test]
    fn retains_at_least_requested_bytes() {
        let r = ring_with(&[100; 50], 1000);
        assert_eq!(r.end_seq(), 50);
        assert_eq!(r.end_offset(), 5000);
        let mut out = Vec::new();
        let from = r.end_seq() - 10;
        assert_eq!(r.read_from(from, &mut out), Ok(50));
        assert_eq!(out.len(), 10);
        assert_eq!(out[0].offset, 4000);
        assert_eq!(r.read_from(0, &mut out), Err(Lagged));
    }

    #[test]
    fn burst_fits_and_respects_stream_start() {
        let r = ring_with(&[100; 50], 10_000);
        assert_eq!(r.burst_start(350, 0), 47);
        assert_eq!(r.burst_start(0, 0), 49, "always at least the newest chunk");
        assert_eq!(r.burst_start(1_000_000, 4500), 45);
        assert_eq!(r.seq_at_offset(4500), Some(45));
        assert_eq!(r.seq_at_offset(4550), None);
        assert_eq!(ring_with(&[], 10).burst_start(100, 0), 0);
    }
}
