//! The server meter: samples the server process's resident memory every
//! [`RSS_SAMPLE_EVERY`] from before the first connection until the end of the run, and reads
//! its CPU time at the edges of the hold window.
//!
//! Invariant: a server that disappears (or a pid that cannot be read) never stops the run;
//! readings just become `None`.

use std::time::Duration;

use tokio::sync::watch;

use crate::procfs::{read_cpu, read_status_kib, CpuTicks, Proc};

pub const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Resident-memory samples of the server, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RssSamples {
    /// First sample, taken before any listener connects.
    pub start_kib: Option<u64>,
    pub peak_kib: Option<u64>,
    /// `VmHWM` (the kernel's own peak since process start) read at the end.
    pub hwm_kib: Option<u64>,
    pub samples: u64,
}

impl RssSamples {
    fn record(&mut self, kib: u64) {
        self.samples += 1;
        self.start_kib.get_or_insert(kib);
        self.peak_kib = Some(self.peak_kib.map_or(kib, |p| p.max(kib)));
    }
}

impl RssSamples {
    /// Takes the first sample of `pid` now (call before any listener connects).
    pub fn first(pid: u32) -> RssSamples {
        let mut rss = RssSamples::default();
        if let Ok(kib) = read_status_kib(Proc::Pid(pid), "VmRSS") {
            rss.record(kib);
        }
        rss
    }
}

/// Continues `rss` (see [`RssSamples::first`]) with a sample every [`RSS_SAMPLE_EVERY`] until
/// `stop` turns true, then takes a last one and reads `VmHWM`.
pub async fn run_rss_sampler(
    pid: u32,
    mut rss: RssSamples,
    mut stop: watch::Receiver<bool>,
) -> RssSamples {
    let proc = Proc::Pid(pid);
    let mut tick = tokio::time::interval(RSS_SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the first sample is already taken
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|&s| s) => break,
            _ = tick.tick() => {}
        }
        if let Ok(kib) = read_status_kib(proc, "VmRSS") {
            rss.record(kib);
        }
    }
    if let Ok(kib) = read_status_kib(proc, "VmRSS") {
        rss.record(kib);
    }
    rss.hwm_kib = read_status_kib(proc, "VmHWM").ok();
    rss
}

/// CPU time of the server (if metered) and of this process at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuReading {
    pub server: Option<CpuTicks>,
    pub myself: Option<CpuTicks>,
}

pub fn read_cpu_reading(server_pid: Option<u32>) -> CpuReading {
    CpuReading {
        server: server_pid.and_then(|pid| read_cpu(Proc::Pid(pid)).ok()),
        myself: read_cpu(Proc::Myself).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_start_and_peak() {
        let mut rss = RssSamples::default();
        for kib in [100, 300, 200] {
            rss.record(kib);
        }
        assert_eq!(rss.start_kib, Some(100));
        assert_eq!(rss.peak_kib, Some(300));
        assert_eq!(rss.samples, 3);
    }
}
