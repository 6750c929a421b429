//! Real-time pacing from media time: unit *n* may be released at
//! `origin + media_time(n) - lead`. Media time is the exact sum of released samples ÷ rate
//! (carried remainder, so no rounding drift over days, and rate changes between tracks are
//! exact); a late wake-up releases what is due and catches up without drifting.
//!
//! Pure: time is an argument. The async shell owns `sleep_until`.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Pacer {
    origin: Instant,
    lead: Duration,
    /// Released media time: whole nanoseconds plus a remainder in units of 1/`rem_rate` ns.
    nanos: u128,
    rem: u128,
    rem_rate: u32,
}

impl Pacer {
    /// A pacer whose media time 0 is `now`; units may go out up to `lead` early.
    pub fn new(now: Instant, lead: Duration) -> Pacer {
        Pacer {
            origin: now,
            lead,
            nanos: 0,
            rem: 0,
            rem_rate: 1,
        }
    }

    /// Media time released so far.
    pub fn media_time(&self) -> Duration {
        duration_from_nanos(self.nanos)
    }

    /// When the next unit (the one starting at the current media time) may be released.
    pub fn deadline(&self) -> Instant {
        let due = self.origin + self.media_time();
        due.checked_sub(self.lead).unwrap_or(due)
    }

    /// Whether the next unit may go out at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.deadline()
    }

    /// Accounts a released unit of `samples` at `rate` Hz (rate 0 counts nothing).
    pub fn advance(&mut self, samples: u64, rate: u32) {
        if rate == 0 {
            return;
        }
        if rate != self.rem_rate {
            // The carried fraction of a nanosecond is dropped: < 1 ns per rate change.
            self.rem = 0;
            self.rem_rate = rate;
        }
        let total = u128::from(samples) * 1_000_000_000 + self.rem;
        self.nanos += total / u128::from(rate);
        self.rem = total % u128::from(rate);
    }

    /// How far wall time at `now` is ahead of the media released (negative: media ahead).
    pub fn drift(&self, now: Instant) -> i128 {
        let wall = now.saturating_duration_since(self.origin).as_nanos() as i128;
        wall - self.nanos as i128
    }

    /// After a stall longer than `max_behind` (a suspended process, a slow disk), re-anchors
    /// so the stream resumes at real-time speed instead of bursting to catch up. Returns
    /// whether it did.
    pub fn resync_if_late(&mut self, now: Instant, max_behind: Duration) -> bool {
        let due = self.origin + self.media_time();
        match now.checked_duration_since(due) {
            Some(late) if late > max_behind => {
                self.origin += late;
                true
            }
            _ => false,
        }
    }
}

fn duration_from_nanos(n: u128) -> Duration {
    let secs = (n / 1_000_000_000).min(u128::from(u64::MAX)) as u64;
    Duration::new(secs, (n % 1_000_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deadlines_follow_media_time_minus_lead() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, Duration::from_millis(500));
        assert!(p.is_due(t0), "the first units go out at once");
        p.advance(44_100, 44_100);
        assert_eq!(p.media_time(), Duration::from_secs(1));
        assert_eq!(p.deadline(), t0 + Duration::from_millis(500));
        assert!(!p.is_due(t0 + Duration::from_millis(499)));
        assert!(p.is_due(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn mp3_frames_for_a_day_do_not_drift() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, Duration::ZERO);
        // 1152-sample frames at 44.1 kHz are 26.122448... ms: not a whole number of ns.
        let frames_per_day = 86_400u64 * 44_100 / 1152;
        for _ in 0..frames_per_day {
            p.advance(1152, 44_100);
        }
        let exact = frames_per_day as u128 * 1152 * 1_000_000_000 / 44_100;
        assert_eq!(p.media_time().as_nanos(), exact);
    }

    #[test]
    fn stalls_resync_instead_of_bursting() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, Duration::ZERO);
        p.advance(48_000, 48_000);
        let now = t0 + Duration::from_secs(10);
        assert!(!p.resync_if_late(t0 + Duration::from_millis(1500), Duration::from_secs(2)));
        assert!(p.resync_if_late(now, Duration::from_secs(2)));
        assert_eq!(p.deadline(), now, "next unit due now, not 9 s in the past");
        assert_eq!(p.drift(now), 0);
    }

    proptest! {
        #[test]
        fn media_time_is_the_exact_sum(units in proptest::collection::vec((1u64..5000, prop::sample::select(vec![8000u32, 22_050, 44_100, 48_000])), 1..200)) {
            let mut p = Pacer::new(Instant::now(), Duration::ZERO);
            let mut exact_ns = 0f64;
            for (samples, rate) in &units {
                p.advance(*samples, *rate);
                exact_ns += *samples as f64 * 1e9 / f64::from(*rate);
            }
            // At most 1 ns lost per rate change, plus float error of the reference.
            let got = p.media_time().as_nanos() as f64;
            prop_assert!((got - exact_ns).abs() <= units.len() as f64 + 1e-3 * exact_ns.max(1.0) / 1e6);
        }
    }
}
