//! One load run, start to finish: meter the server, ramp listeners up at a fixed rate (with
//! a bound on concurrent connects), hold them for the configured duration while measuring the
//! hold window, stop them all, and assemble the [`Report`].
//!
//! Timeline: RSS start sample → ramp (ends when every listener has its first body byte or
//! has failed) → settle (until the burst-on-connect has been delivered: the listeners'
//! aggregate audio rate is back to about nominal) → hold window (CPU and per-listener byte
//! counters read at both edges) → stop → grace for listener tasks to report → RSS sampler
//! stops, `VmHWM` read.
//!
//! Invariant: the run is bounded in time whatever the server does: the ramp by
//! listeners / rate + 2 × the listeners' setup timeout, the settle by its maximum, the hold by
//! the duration, the end by [`GRACE`]. Ctrl-C ends the current phase early and still produces
//! a report.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use crate::host::clock_ticks_per_second;
use crate::listener::{self, Outcome, Phase, Shared, Slot, SlotSnapshot, Target, STALL_AFTER};
use crate::meter::{read_cpu_reading, run_rss_sampler, RssSamples};
use crate::procfs::{read_status_kib, CpuTicks, Proc};
use crate::report::{MetaSummary, Report, ServerUsage};
use crate::stats::summarize;

/// How long listener tasks get to report after the stop signal.
pub const GRACE: Duration = Duration::from_secs(5);
/// Interval of the progress line on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The settle phase measures the aggregate rate over steps of this length...
const SETTLE_STEP: Duration = Duration::from_secs(1);
/// ...and ends once it is at most this multiple of the nominal rate.
const SETTLE_RATE_TOLERANCE: f64 = 1.1;

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    pub addr: SocketAddr,
    pub request: Vec<u8>,
    pub listeners: usize,
    pub metadata: bool,
    pub duration: Duration,
    pub ramp_per_s: f64,
    pub max_connecting: usize,
    pub server_pid: Option<u32>,
    pub nominal_kbps: f64,
    /// Receive low-water mark of a listener once its stream flows (see
    /// [`Target::read_batch`]).
    pub read_batch: Option<u32>,
    /// Longest wait between the ramp and the hold window for bursts to drain (0: none).
    pub settle_max: Duration,
    pub bind_ips: Vec<IpAddr>,
    pub nofile_limit: Option<u64>,
}

/// Runs the load and returns what was measured.
pub async fn run(config: Config) -> Report {
    let (interrupt_tx, mut interrupt) = watch::channel(false);
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: finishing early");
            let _ = interrupt_tx.send(true);
        }
    });

    let (sampler_stop_tx, sampler_stop_rx) = watch::channel(false);
    let sampler = config.server_pid.map(|pid| {
        let first = RssSamples::first(pid);
        tokio::spawn(run_rss_sampler(pid, first, sampler_stop_rx))
    });

    let shared = Arc::new(Shared {
        target: Target {
            addr: config.addr,
            request: config.request.clone(),
            metadata: config.metadata,
            read_batch: config.read_batch,
        },
        epoch: Instant::now(),
        slots: (0..config.listeners).map(|_| Slot::default()).collect(),
        hold_active: AtomicBool::new(false),
    });
    let progress = tokio::spawn(report_progress(shared.clone()));

    // Ramp.
    let max_connecting = config.max_connecting.clamp(1, u32::MAX as usize >> 4);
    let connecting = Arc::new(Semaphore::new(max_connecting));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(config.listeners);
    let mut interrupted = false;
    let ramp_start = Instant::now();
    for index in 0..config.listeners {
        let due = ramp_start + Duration::from_secs_f64(index as f64 / config.ramp_per_s);
        let permit = tokio::select! {
            biased;
            _ = interrupt.wait_for(|&i| i) => {
                interrupted = true;
                break;
            }
            permit = async {
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                connecting.clone().acquire_owned().await
            } => permit,
        };
        let Ok(permit) = permit else {
            break; // invariant: the semaphore is never closed, so this does not happen
        };
        let bind = match config.bind_ips.as_slice() {
            [] => None,
            ips => Some(ips[index % ips.len()]),
        };
        tasks.push(tokio::spawn(listener::run(
            shared.clone(),
            index,
            bind,
            stop_rx.clone(),
            permit,
        )));
    }
    if !interrupted {
        // Every permit back means every listener has its head or has failed.
        tokio::select! {
            biased;
            _ = interrupt.wait_for(|&i| i) => interrupted = true,
            _ = connecting.acquire_many(max_connecting as u32) => {}
        }
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();

    let settle_start = Instant::now();
    if !interrupted && !config.settle_max.is_zero() {
        tokio::select! {
            biased;
            _ = interrupt.wait_for(|&i| i) => interrupted = true,
            _ = settle(&shared, config.nominal_kbps, config.settle_max) => {}
        }
    }
    let settle_s = settle_start.elapsed().as_secs_f64();

    // Hold window.
    let cpu_start = read_cpu_reading(config.server_pid);
    let hold_start = Instant::now();
    shared.hold_active.store(true, Ordering::Relaxed);
    let at_start: Vec<SlotSnapshot> = shared.slots.iter().map(Slot::snapshot).collect();
    if !interrupted {
        tokio::select! {
            biased;
            _ = interrupt.wait_for(|&i| i) => interrupted = true,
            _ = tokio::time::sleep(config.duration) => {}
        }
    }
    let hold_end = Instant::now();
    shared.hold_active.store(false, Ordering::Relaxed);
    let at_end: Vec<SlotSnapshot> = shared.slots.iter().map(Slot::snapshot).collect();
    let cpu_end = read_cpu_reading(config.server_pid);
    let hold_s = hold_end.duration_since(hold_start).as_secs_f64();

    // Stop and collect.
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + GRACE;
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(config.listeners);
    for task in tasks {
        outcomes.push(
            tokio::time::timeout_at(deadline, task)
                .await
                .ok()
                .and_then(Result::ok),
        );
    }
    progress.abort();
    ctrl_c.abort();
    let _ = sampler_stop_tx.send(true);
    let rss = match sampler {
        Some(task) => task.await.unwrap_or_default(),
        None => RssSamples::default(),
    };

    let ticks = clock_ticks_per_second() as f64;
    let cpu_s = |a: Option<CpuTicks>, b: Option<CpuTicks>| {
        let d = b?.since(a?);
        Some((d.user as f64 / ticks, d.system as f64 / ticks))
    };
    let window = HoldWindow {
        hold_end_ms: shared.ms_since_epoch(hold_end),
        hold_s,
        at_start: &at_start,
        at_end: &at_end,
    };
    let mut report = Report {
        url: config.url.clone(),
        metadata: config.metadata,
        listeners_requested: config.listeners,
        ramp_per_s: config.ramp_per_s,
        duration_s: config.duration.as_secs_f64(),
        ramp_s,
        settle_s,
        hold_s,
        interrupted,
        nominal_kbps: config.nominal_kbps,
        server: config.server_pid.map(|pid| ServerUsage {
            pid,
            cpu_s: cpu_s(cpu_start.server, cpu_end.server),
            rss,
        }),
        loadtest_cpu_s: cpu_s(cpu_start.myself, cpu_end.myself).map(|(u, s)| u + s),
        loadtest_hwm_kib: read_status_kib(Proc::Myself, "VmHWM").ok(),
        nofile_limit: config.nofile_limit,
        meta: config.metadata.then(MetaSummary::default),
        ..Report::default()
    };
    window.fill(&mut report, &outcomes);
    report
}

/// Slot snapshots at both edges of the hold window.
struct HoldWindow<'a> {
    hold_end_ms: u64,
    hold_s: f64,
    at_start: &'a [SlotSnapshot],
    at_end: &'a [SlotSnapshot],
}

impl HoldWindow<'_> {
    /// Still streaming at the end, with a byte within the stall limit.
    fn held(&self, index: usize) -> bool {
        let end = self.at_end[index];
        let stall_ms = STALL_AFTER.as_millis() as u64;
        end.phase == Phase::Streaming
            && end
                .last_byte_ms
                .is_some_and(|last| self.hold_end_ms.saturating_sub(last) <= stall_ms)
    }

    /// Fills the listener counts, failures, TTFB, bitrate, stall and metadata figures.
    fn fill(&self, report: &mut Report, outcomes: &[Option<Outcome>]) {
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        let mut ttfb_ms = Vec::new();
        let mut bitrates = Vec::new();
        for index in 0..report.listeners_requested {
            let held = self.held(index);
            let start = self.at_start[index];
            if start.phase == Phase::Streaming {
                report.streaming_at_hold_start += 1;
            }
            if held {
                report.held_to_end += 1;
            }
            let Some(outcome) = outcomes.get(index) else {
                *failures.entry("not_started".into()).or_default() += 1;
                continue;
            };
            let Some(outcome) = outcome else {
                *failures.entry("task_unfinished".into()).or_default() += 1;
                report.unfinished_tasks += 1;
                continue;
            };
            if outcome.connected {
                report.connected += 1;
            }
            match &outcome.failure {
                Some(failure) => *failures.entry(failure.category()).or_default() += 1,
                None if outcome.connected && !held => {
                    *failures.entry("not_receiving_at_end".into()).or_default() += 1;
                }
                None => {}
            }
            // The received bitrate of listeners that streamed through the whole window, over
            // their reads in it (which must span at least half of it).
            let window = outcome
                .window
                .filter(|w| w.duration().as_secs_f64() >= self.hold_s / 2.0);
            if let (true, Phase::Streaming, Some(window)) = (held, start.phase, window) {
                bitrates.extend(window.kbps());
            }
            if let Some(t) = outcome.ttfb {
                ttfb_ms.push(t.as_secs_f64() * 1000.0);
            }
            if outcome.stalls > 0 {
                report.stalled_listeners += 1;
                report.stall_events += u64::from(outcome.stalls);
            }
            report.body_bytes += outcome.body_bytes;
            report.audio_bytes += outcome.audio_bytes;
            if let Some(meta) = &mut report.meta {
                meta.counts.blocks += outcome.meta.blocks;
                meta.counts.non_empty += outcome.meta.non_empty;
                meta.counts.parse_errors += outcome.meta.parse_errors;
                meta.missing_metaint += u64::from(outcome.missing_metaint);
            }
        }
        report.failures = failures;
        report.ttfb_ms = summarize(ttfb_ms);
        report.bitrate_kbps = summarize(bitrates);
    }
}

/// Waits (at least one [`SETTLE_STEP`], at most `max`) until the streaming listeners'
/// aggregate audio rate is within [`SETTLE_RATE_TOLERANCE`] of nominal, so the bursts sent
/// on connect do not count as received bitrate in the hold window.
async fn settle(shared: &Shared, nominal_kbps: f64, max: Duration) {
    let start = tokio::time::Instant::now();
    let mut before = (start, audio_census(shared).0);
    loop {
        let next = (before.0 + SETTLE_STEP).min(start + max);
        tokio::time::sleep_until(next).await;
        let now = tokio::time::Instant::now();
        let (bytes, streaming) = audio_census(shared);
        let rate = bytes.saturating_sub(before.1) as f64 / (now - before.0).as_secs_f64();
        let nominal = streaming as f64 * nominal_kbps * 1000.0 / 8.0;
        before = (now, bytes);
        if now >= start + max || rate <= nominal * SETTLE_RATE_TOLERANCE {
            return;
        }
    }
}

/// Total audio bytes received so far and the number of listeners streaming.
fn audio_census(shared: &Shared) -> (u64, usize) {
    shared
        .slots
        .iter()
        .map(Slot::snapshot)
        .filter(|s| s.phase == Phase::Streaming)
        .fold((0, 0), |(bytes, n), s| (bytes + s.audio_bytes, n + 1))
}

/// Prints a one-line census of listener phases to stderr every [`PROGRESS_EVERY`].
async fn report_progress(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut count = [0usize; 4];
        for slot in shared.slots.iter() {
            count[slot.snapshot().phase as usize] += 1;
        }
        eprintln!(
            "[{:6.1}s] waiting {} connecting {} streaming {} ended {}",
            shared.epoch.elapsed().as_secs_f64(),
            count[0],
            count[1],
            count[2],
            count[3]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::{Failure, ReadSpan};

    fn snap(phase: Phase, audio_bytes: u64, last_byte_ms: Option<u64>) -> SlotSnapshot {
        SlotSnapshot {
            phase,
            audio_bytes,
            last_byte_ms,
        }
    }

    #[test]
    fn hold_window_accounting() {
        // 0: held for the whole window at 128 kbit/s; 1: stalled at the end;
        // 2: refused; 3: never started.
        let at_start = [
            snap(Phase::Streaming, 1000, Some(900)),
            snap(Phase::Streaming, 1000, Some(900)),
            snap(Phase::Ended, 0, None),
            snap(Phase::NotStarted, 0, None),
        ];
        let at_end = [
            snap(Phase::Streaming, 1000 + 160_000, Some(10_990)),
            snap(Phase::Streaming, 5000, Some(4_000)),
            snap(Phase::Ended, 0, None),
            snap(Phase::NotStarted, 0, None),
        ];
        let window = HoldWindow {
            hold_end_ms: 11_000,
            hold_s: 10.0,
            at_start: &at_start,
            at_end: &at_end,
        };
        let t0 = Instant::now();
        let streaming = Outcome {
            connected: true,
            ttfb: Some(Duration::from_millis(5)),
            window: Some(ReadSpan {
                first: (t0, 2_000),
                last: (t0 + Duration::from_secs(9), 146_000),
            }),
            ..Outcome::default()
        };
        // Reads over less than half the window: not used for the bitrate.
        let stalled = Outcome {
            stalls: 1,
            window: Some(ReadSpan {
                first: (t0, 2_000),
                last: (t0 + Duration::from_secs(3), 50_000),
            }),
            ..streaming.clone()
        };
        let refused = Outcome {
            failure: Some(Failure::Refused),
            ..Outcome::default()
        };
        let mut report = Report {
            listeners_requested: 4,
            ..Report::default()
        };
        window.fill(
            &mut report,
            &[Some(streaming), Some(stalled), Some(refused)],
        );
        assert_eq!(report.connected, 2);
        assert_eq!(report.streaming_at_hold_start, 2);
        assert_eq!(report.held_to_end, 1);
        assert_eq!(report.failures.get("refused"), Some(&1));
        assert_eq!(report.failures.get("not_receiving_at_end"), Some(&1));
        assert_eq!(report.failures.get("not_started"), Some(&1));
        assert_eq!((report.stalled_listeners, report.stall_events), (1, 1));
        let bitrate = report.bitrate_kbps.unwrap();
        assert_eq!((bitrate.count, bitrate.mean), (1, 128.0));
        assert_eq!(report.ttfb_ms.unwrap().count, 2);
    }
}
