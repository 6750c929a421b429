#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

// Packets as (seq, time step) pairs: the buffer never panics, never holds more than its
// capacity after a drain, and releases in strictly increasing order.
fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut jb = onair_proto::rtp::JitterBuffer::new(8, Duration::from_millis(40));
    let mut last = None;
    for p in data.chunks_exact(3) {
        let seq = u16::from_le_bytes([p[0], p[1]]);
        now += Duration::from_millis(u64::from(p[2]));
        jb.push(seq, 0, (), now);
        while let Some(r) = jb.poll(now) {
            if let onair_proto::rtp::Released::Packet { seq, .. } = r {
                assert!(last.is_none_or(|l| seq > l));
                last = Some(seq);
            }
        }
        assert!(jb.len() <= 8);
    }
});
