//! RTP receive-side ordering: a small, bounded jitter buffer that turns packets arriving in
//! any order (with duplicates and gaps) into one in-order stream of packets and loss reports.
//!
//! It owns sequence-number extension (u16 on the wire, u64 inside, so wraparound is
//! invisible), reordering, duplicate and late-packet rejection, and the decision of when a
//! missing packet is given up as lost. It never stretches time: it only says *which* packets
//! are missing; the caller conceals them with audio of the same duration (the RTP timestamp
//! gap), so the media clock keeps running at the sender's rate.
//!
//! Invariants: at most `capacity` packets are held once `poll` has been drained after a
//! `push` (the driver does so after every packet); packets leave in strictly increasing
//! sequence order; a packet that is present at the head of the line leaves at once (no added
//! latency for in-order traffic); a gap is declared lost only when a later packet has waited
//! `delay` or the buffer is full. Time is an argument (`now`), never read from a clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A forward or backward jump larger than this many packets is a new stream (sender restart,
/// SSRC reuse), not reordering: the buffer resets instead of reporting thousands of losses.
const RESET_DISTANCE: u64 = 1_000;

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for release.
    Accepted,
    /// Same sequence number as a packet already queued or released: dropped.
    Duplicate,
    /// Older than the head of the line (its slot was already given up as lost): dropped.
    Late,
    /// A jump too large to be reordering: everything queued was dropped and the stream
    /// restarts at this packet.
    Reset,
}

/// What [`JitterBuffer::poll`] releases, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released<P> {
    /// The next packet of the stream.
    Packet {
        /// Extended (64-bit, wraparound-free) sequence number.
        seq: u64,
        /// RTP timestamp as sent.
        timestamp: u32,
        payload: P,
    },
    /// `count` consecutive packets before the next released one never arrived in time.
    Lost { count: u64 },
}

/// Running counters, for stats and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub accepted: u64,
    pub released: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub late: u64,
    pub resets: u64,
}

struct Held<P> {
    timestamp: u32,
    arrived: Instant,
    payload: P,
}

/// Bounded reordering buffer; see the module docs.
pub struct JitterBuffer<P> {
    held: BTreeMap<u64, Held<P>>,
    /// Extended sequence number of the next packet to release; `None` before the first.
    next: Option<u64>,
    /// Highest extended sequence number seen: the reference for extending u16 numbers.
    highest: u64,
    capacity: usize,
    delay: Duration,
    counters: Counters,
}

impl<P> JitterBuffer<P> {
    /// `capacity` packets at most (at least 1); a missing packet is waited for `delay` after a
    /// later one arrived.
    pub fn new(capacity: usize, delay: Duration) -> Self {
        JitterBuffer {
            held: BTreeMap::new(),
            next: None,
            highest: 0,
            capacity: capacity.max(1),
            delay,
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Number of packets currently held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Forget the stream (a new session starts): the next packet pushed starts it afresh.
    pub fn clear(&mut self) {
        self.held.clear();
        self.next = None;
        self.highest = 0;
    }

    /// The extended value of `seq` closest to the highest one seen so far. Streams start
    /// one cycle up (see [`Self::push`]), so the previous cycle always exists.
    fn extend(&self, seq: u16) -> u64 {
        let base = self.highest & !0xffff;
        let seq = u64::from(seq);
        [base - 0x1_0000, base, base + 0x1_0000]
            .map(|cycle| cycle | seq)
            .into_iter()
            .min_by_key(|v| v.abs_diff(self.highest))
            // invariant: the array is not empty.
            .unwrap_or(base | seq)
    }

    /// Take one packet off the network. The first packet ever (or after a reset) starts the
    /// stream at its own sequence number.
    pub fn push(&mut self, seq: u16, timestamp: u32, payload: P, now: Instant) -> Pushed {
        let Some(next) = self.next else {
            // Offset the start by one cycle so the "previous cycle" always exists.
            let ext = 0x1_0000 | u64::from(seq);
            self.start(ext, timestamp, payload, now);
            return Pushed::Accepted;
        };
        let ext = self.extend(seq);
        if ext.abs_diff(next) > RESET_DISTANCE {
            self.counters.resets += 1;
            self.held.clear();
            self.start(0x1_0000 | u64::from(seq), timestamp, payload, now);
            return Pushed::Reset;
        }
        if ext < next {
            self.counters.late += 1;
            return Pushed::Late;
        }
        if self.held.contains_key(&ext) {
            self.counters.duplicates += 1;
            return Pushed::Duplicate;
        }
        self.highest = self.highest.max(ext);
        self.hold(ext, timestamp, payload, now);
        Pushed::Accepted
    }

    fn start(&mut self, ext: u64, timestamp: u32, payload: P, now: Instant) {
        self.next = Some(ext);
        self.highest = ext;
        self.hold(ext, timestamp, payload, now);
    }

    fn hold(&mut self, ext: u64, timestamp: u32, payload: P, now: Instant) {
        self.held.insert(
            ext,
            Held {
                timestamp,
                arrived: now,
                payload,
            },
        );
        self.counters.accepted += 1;
    }

    /// Release the next packet or loss report, if one is due at `now`. Call until `None`.
    pub fn poll(&mut self, now: Instant) -> Option<Released<P>> {
        let next = self.next?;
        if let Some(held) = self.held.remove(&next) {
            self.next = Some(next + 1);
            self.counters.released += 1;
            return Some(Released::Packet {
                seq: next,
                timestamp: held.timestamp,
                payload: held.payload,
            });
        }
        let (&first, oldest) = self.held.first_key_value()?;
        let full = self.held.len() >= self.capacity;
        // The packet right after the gap is the earliest evidence of it.
        let waited = now.saturating_duration_since(oldest.arrived) >= self.delay;
        if full || waited {
            let count = first - next;
            self.next = Some(first);
            self.counters.lost += count;
            return Some(Released::Lost { count });
        }
        None
    }

    /// When the next loss decision falls due (a gap is waiting), if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let next = self.next?;
        if self.held.contains_key(&next) {
            return None;
        }
        self.held
            .first_key_value()
            .map(|(_, held)| held.arrived + self.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(40);

    fn drain(jb: &mut JitterBuffer<u32>, now: Instant) -> Vec<Released<u32>> {
        std::iter::from_fn(|| jb.poll(now)).collect()
    }

    fn seqs(out: &[Released<u32>]) -> Vec<String> {
        out.iter()
            .map(|r| match r {
                Released::Packet { payload, .. } => payload.to_string(),
                Released::Lost { count } => format!("lost{count}"),
            })
            .collect()
    }

    #[test]
    fn in_order_packets_leave_at_once() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(16, DELAY);
        for i in 0..5u16 {
            assert_eq!(
                jb.push(100 + i, u32::from(i) * 960, u32::from(i), t0),
                Pushed::Accepted
            );
            assert_eq!(seqs(&drain(&mut jb, t0)), vec![i.to_string()]);
        }
        assert!(jb.is_empty());
        assert_eq!(jb.next_deadline(), None);
    }

    #[test]
    fn reordered_packets_come_out_in_order() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(16, DELAY);
        jb.push(10, 0, 10, t0);
        jb.push(12, 0, 12, t0);
        jb.push(13, 0, 13, t0);
        assert_eq!(seqs(&drain(&mut jb, t0)), vec!["10"]);
        assert_eq!(jb.next_deadline(), Some(t0 + DELAY));
        jb.push(11, 0, 11, t0 + Duration::from_millis(10));
        assert_eq!(seqs(&drain(&mut jb, t0)), vec!["11", "12", "13"]);
        assert_eq!(jb.counters().lost, 0);
    }

    #[test]
    fn a_gap_is_lost_only_after_the_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(16, DELAY);
        jb.push(1, 0, 1, t0);
        jb.push(4, 0, 4, t0 + Duration::from_millis(5));
        assert_eq!(
            seqs(&drain(&mut jb, t0 + Duration::from_millis(44))),
            vec!["1"]
        );
        let out = drain(&mut jb, t0 + Duration::from_millis(45));
        assert_eq!(seqs(&out), vec!["lost2", "4"]);
        assert_eq!(jb.counters().lost, 2);
        // The lost slots are closed: a straggler is late, not re-inserted.
        assert_eq!(
            jb.push(2, 0, 2, t0 + Duration::from_millis(50)),
            Pushed::Late
        );
        assert!(drain(&mut jb, t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn a_full_buffer_gives_up_the_gap_without_waiting() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(3, Duration::from_secs(10));
        jb.push(0, 0, 0, t0);
        drain(&mut jb, t0);
        for s in 2..5u16 {
            jb.push(s, 0, u32::from(s), t0);
        }
        assert_eq!(seqs(&drain(&mut jb, t0)), vec!["lost1", "2", "3", "4"]);
    }

    #[test]
    fn duplicates_are_dropped_whether_held_or_released() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(16, DELAY);
        jb.push(7, 0, 7, t0);
        jb.push(9, 0, 9, t0);
        assert_eq!(jb.push(9, 0, 99, t0), Pushed::Duplicate);
        drain(&mut jb, t0);
        // 7 was released: a copy of it is behind the head, so late.
        assert_eq!(jb.push(7, 0, 77, t0), Pushed::Late);
        jb.push(8, 0, 8, t0);
        assert_eq!(seqs(&drain(&mut jb, t0)), vec!["8", "9"]);
        let c = jb.counters();
        assert_eq!((c.duplicates, c.late, c.lost), (1, 1, 0));
    }

    #[test]
    fn sequence_numbers_wrap_around_u16() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(16, DELAY);
        let order = [65533u16, 65535, 65534, 1, 0, 2];
        let mut out = Vec::new();
        for s in order {
            jb.push(s, u32::from(s), u32::from(s), t0);
            out.extend(drain(&mut jb, t0));
        }
        assert_eq!(seqs(&out), vec!["65533", "65534", "65535", "0", "1", "2"]);
        let ext: Vec<u64> = out
            .iter()
            .filter_map(|r| match r {
                Released::Packet { seq, .. } => Some(*seq),
                Released::Lost { .. } => None,
            })
            .collect();
        assert!(ext.windows(2).all(|w| w[1] == w[0] + 1), "{ext:?}");
    }

    #[test]
    fn loss_across_the_wrap_is_counted_once() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(16, DELAY);
        jb.push(65534, 0, 1, t0);
        jb.push(1, 0, 2, t0);
        let out = drain(&mut jb, t0 + DELAY);
        assert_eq!(seqs(&out), vec!["1", "lost2", "2"]);
    }

    #[test]
    fn a_huge_jump_restarts_the_stream() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(16, DELAY);
        jb.push(100, 0, 100, t0);
        drain(&mut jb, t0);
        assert_eq!(jb.push(30_000, 0, 30_000, t0), Pushed::Reset);
        assert_eq!(seqs(&drain(&mut jb, t0)), vec!["30000"]);
        jb.push(30_001, 0, 30_001, t0);
        assert_eq!(seqs(&drain(&mut jb, t0)), vec!["30001"]);
        assert_eq!(jb.counters().lost, 0);
    }

    #[test]
    fn never_holds_more_than_capacity() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(4, Duration::from_secs(60));
        jb.push(0, 0, 0, t0);
        drain(&mut jb, t0);
        // Every other packet missing: the buffer keeps giving gaps up as it fills.
        for s in (2..200u16).step_by(2) {
            jb.push(s, 0, u32::from(s), t0);
            drain(&mut jb, t0);
            assert!(jb.len() <= 4);
        }
        assert_eq!(jb.counters().lost, 99 - 3);
    }

    proptest::proptest! {
        /// Whatever the network does (local reordering, drops, duplicates, any start
        /// number), packets leave in order, once each, and released + lost covers the
        /// stream from its first arrival without holes.
        #[test]
        fn order_once_and_no_holes(
            start in proptest::prelude::any::<u16>(),
            n in 1usize..400,
            swaps in proptest::collection::vec((0usize..400, 1usize..4), 0..60),
            drops in proptest::collection::vec(0usize..400, 0..40),
            dups in proptest::collection::vec(0usize..400, 0..20),
        ) {
            let mut arrivals: Vec<usize> = (0..n).collect();
            for (at, dist) in swaps {
                if at + dist < arrivals.len() {
                    arrivals.swap(at, at + dist);
                }
            }
            arrivals.retain(|k| !drops.contains(k) || *k == 0);
            for d in dups {
                if d < arrivals.len() {
                    let k = arrivals[d];
                    arrivals.insert(d, k);
                }
            }
            let t0 = Instant::now();
            let mut jb = JitterBuffer::new(16, DELAY);
            let mut out = Vec::new();
            for (i, &k) in arrivals.iter().enumerate() {
                let now = t0 + Duration::from_millis(20 * i as u64);
                jb.push(start.wrapping_add(k as u16), 0, k as u32, now);
                out.extend(std::iter::from_fn(|| jb.poll(now)));
            }
            out.extend(std::iter::from_fn(|| jb.poll(t0 + Duration::from_secs(3600))));
            // The first arrival starts the stream; anything older is late.
            let mut next = arrivals[0] as u64;
            let mut last_seq = None;
            for r in &out {
                match r {
                    Released::Packet { seq, payload, .. } => {
                        if let Some(prev) = last_seq {
                            proptest::prop_assert!(*seq > prev);
                        }
                        last_seq = Some(*seq);
                        proptest::prop_assert_eq!(u64::from(*payload), next);
                        next += 1;
                    }
                    Released::Lost { count } => next += count,
                }
            }
            let highest = arrivals.iter().copied().max().unwrap_or(0) as u64;
            proptest::prop_assert_eq!(next, highest + 1);
            proptest::prop_assert!(jb.is_empty());
        }
    }
}
