//! The result of one load run and its two renderings: a human-readable table for stdout and a
//! JSON object (stable key names, used by `bench/listeners.sh`).
//!
//! Pure: values in, text out. Derived ratios are computed here so the table and the JSON can
//! never disagree.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::listener::MetaCounts;
use crate::meter::RssSamples;
use crate::stats::Distribution;

/// Everything measured in one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub url: String,
    pub metadata: bool,
    pub listeners_requested: usize,
    pub ramp_per_s: f64,
    /// The configured hold duration.
    pub duration_s: f64,
    /// From the first connect attempt until every listener had its response head or failed.
    pub ramp_s: f64,
    /// From the end of the ramp to the start of the hold window (bursts draining).
    pub settle_s: f64,
    /// The measured hold window (shorter than `duration_s` only when interrupted).
    pub hold_s: f64,
    pub interrupted: bool,
    /// Listeners that received a 200 response head.
    pub connected: usize,
    pub streaming_at_hold_start: usize,
    /// Listeners still connected and receiving (a byte within the stall limit) at the end.
    pub held_to_end: usize,
    /// Failures by category (connect errors, non-200 statuses, early closes).
    pub failures: BTreeMap<String, u64>,
    pub stalled_listeners: usize,
    pub stall_events: u64,
    pub ttfb_ms: Option<Distribution>,
    pub nominal_kbps: f64,
    /// Per-listener audio bitrate over the hold window: between each listener's first and
    /// last read in it (listeners streaming through the whole window).
    pub bitrate_kbps: Option<Distribution>,
    pub body_bytes: u64,
    pub audio_bytes: u64,
    pub meta: Option<MetaSummary>,
    pub server: Option<ServerUsage>,
    /// This tool's own CPU seconds during the hold window.
    pub loadtest_cpu_s: Option<f64>,
    /// This tool's own peak resident memory (`VmHWM`), KiB.
    pub loadtest_hwm_kib: Option<u64>,
    pub nofile_limit: Option<u64>,
    /// Listener tasks that had not ended within the grace period after the run.
    pub unfinished_tasks: usize,
}

/// ICY metadata totals over all listeners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaSummary {
    pub counts: MetaCounts,
    /// Listeners whose response had no `icy-metaint` although metadata was requested.
    pub missing_metaint: u64,
}

/// The server process's resource use.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerUsage {
    pub pid: u32,
    /// CPU seconds during the hold window: (user, system).
    pub cpu_s: Option<(f64, f64)>,
    pub rss: RssSamples,
}

/// Server CPU seconds per 1000 listener-seconds held.
pub fn cpu_per_1000_listener_s(cpu_s: f64, listeners: usize, hold_s: f64) -> Option<f64> {
    let listener_s = listeners as f64 * hold_s / 1000.0;
    (listener_s > 0.0).then(|| cpu_s / listener_s)
}

/// Resident-memory growth per 1000 listeners, in MiB.
pub fn rss_per_1000_listeners_mib(start_kib: u64, peak_kib: u64, listeners: usize) -> Option<f64> {
    (listeners > 0)
        .then(|| peak_kib.saturating_sub(start_kib) as f64 / 1024.0 / listeners as f64 * 1000.0)
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

impl Report {
    fn server_cpu_total(&self) -> Option<f64> {
        self.server.and_then(|s| s.cpu_s).map(|(u, s)| u + s)
    }

    fn server_cpu_per_1000(&self) -> Option<f64> {
        cpu_per_1000_listener_s(self.server_cpu_total()?, self.held_to_end, self.hold_s)
    }

    fn server_rss_per_1000(&self) -> Option<f64> {
        let rss = self.server?.rss;
        rss_per_1000_listeners_mib(rss.start_kib?, rss.peak_kib?, self.connected)
    }

    fn bitrate_pct_of_nominal(&self) -> Option<f64> {
        let mean = self.bitrate_kbps?.mean;
        (self.nominal_kbps > 0.0).then(|| mean / self.nominal_kbps * 100.0)
    }

    pub fn failures_total(&self) -> u64 {
        self.failures.values().sum()
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let dist = |d: Option<Distribution>| {
            d.map(|d| {
                json!({
                    "count": d.count, "min": d.min, "p50": d.p50, "p90": d.p90,
                    "p99": d.p99, "max": d.max, "mean": d.mean,
                })
            })
        };
        let server = self.server.map(|s| {
            json!({
                "pid": s.pid,
                "cpu_s": self.server_cpu_total(),
                "cpu_user_s": s.cpu_s.map(|c| c.0),
                "cpu_system_s": s.cpu_s.map(|c| c.1),
                "cpu_s_per_1000_listener_s": self.server_cpu_per_1000(),
                "rss_start_mib": mib(s.rss.start_kib),
                "rss_peak_mib": mib(s.rss.peak_kib),
                "vm_hwm_mib": mib(s.rss.hwm_kib),
                "rss_per_1000_listeners_mib": self.server_rss_per_1000(),
                "rss_samples": s.rss.samples,
            })
        });
        let meta = self.meta.map(|m| {
            json!({
                "blocks": m.counts.blocks,
                "non_empty": m.counts.non_empty,
                "parse_errors": m.counts.parse_errors,
                "missing_metaint": m.missing_metaint,
            })
        });
        json!({
            "url": self.url,
            "metadata": self.metadata,
            "listeners_requested": self.listeners_requested,
            "ramp_per_s": self.ramp_per_s,
            "duration_s": self.duration_s,
            "ramp_s": self.ramp_s,
            "settle_s": self.settle_s,
            "hold_s": self.hold_s,
            "interrupted": self.interrupted,
            "connected": self.connected,
            "streaming_at_hold_start": self.streaming_at_hold_start,
            "held_to_end": self.held_to_end,
            "failures_total": self.failures_total(),
            "failures": self.failures,
            "stalled_listeners": self.stalled_listeners,
            "stall_events": self.stall_events,
            "ttfb_ms": dist(self.ttfb_ms),
            "nominal_kbps": self.nominal_kbps,
            "bitrate_kbps": dist(self.bitrate_kbps),
            "bitrate_mean_pct_of_nominal": self.bitrate_pct_of_nominal(),
            "body_bytes": self.body_bytes,
            "audio_bytes": self.audio_bytes,
            "meta": meta,
            "server": server,
            "loadtest_cpu_s": self.loadtest_cpu_s,
            "loadtest_vm_hwm_mib": mib(self.loadtest_hwm_kib),
            "nofile_limit": self.nofile_limit,
            "unfinished_tasks": self.unfinished_tasks,
        })
    }

    /// The report as an aligned two-column table.
    pub fn render_table(&self) -> String {
        let f = |v: Option<f64>, prec: usize| match v {
            Some(v) => format!("{v:.prec$}"),
            None => "-".to_string(),
        };
        let mut rows: Vec<(String, String)> = vec![
            ("url".into(), self.url.clone()),
            ("metadata".into(), self.metadata.to_string()),
            (
                "listeners requested".into(),
                self.listeners_requested.to_string(),
            ),
            ("connected (200)".into(), self.connected.to_string()),
            (
                "streaming at hold start".into(),
                self.streaming_at_hold_start.to_string(),
            ),
            ("held to end".into(), self.held_to_end.to_string()),
            ("failures".into(), self.failures_total().to_string()),
        ];
        for (category, n) in &self.failures {
            rows.push((format!("  {category}"), n.to_string()));
        }
        rows.push((
            "ramp / settle / hold (s)".into(),
            format!(
                "{:.1} / {:.1} / {:.1}",
                self.ramp_s, self.settle_s, self.hold_s
            ),
        ));
        rows.push((
            "stalled listeners / stall events".into(),
            format!("{} / {}", self.stalled_listeners, self.stall_events),
        ));
        let t = self.ttfb_ms;
        rows.push((
            "TTFB p50/p90/p99/max (ms)".into(),
            format!(
                "{} / {} / {} / {}",
                f(t.map(|d| d.p50), 1),
                f(t.map(|d| d.p90), 1),
                f(t.map(|d| d.p99), 1),
                f(t.map(|d| d.max), 1)
            ),
        ));
        let b = self.bitrate_kbps;
        rows.push((
            format!(
                "bitrate min/p50/mean (kbit/s, nominal {})",
                self.nominal_kbps
            ),
            format!(
                "{} / {} / {}",
                f(b.map(|d| d.min), 1),
                f(b.map(|d| d.p50), 1),
                f(b.map(|d| d.mean), 1)
            ),
        ));
        rows.push((
            "bitrate mean % of nominal".into(),
            f(self.bitrate_pct_of_nominal(), 1),
        ));
        if let Some(m) = self.meta {
            rows.push((
                "metadata blocks total / non-empty".into(),
                format!("{} / {}", m.counts.blocks, m.counts.non_empty),
            ));
            rows.push((
                "metadata parse errors / missing metaint".into(),
                format!("{} / {}", m.counts.parse_errors, m.missing_metaint),
            ));
        }
        if let Some(s) = self.server {
            rows.push(("server pid".into(), s.pid.to_string()));
            rows.push((
                "server CPU s (user + system)".into(),
                match s.cpu_s {
                    Some((u, sys)) => format!("{:.2} ({u:.2} + {sys:.2})", u + sys),
                    None => "-".into(),
                },
            ));
            rows.push((
                "server CPU s per 1000 listener-s".into(),
                f(self.server_cpu_per_1000(), 4),
            ));
            rows.push((
                "server RSS start / peak / HWM (MiB)".into(),
                format!(
                    "{} / {} / {}",
                    f(mib(s.rss.start_kib), 1),
                    f(mib(s.rss.peak_kib), 1),
                    f(mib(s.rss.hwm_kib), 1)
                ),
            ));
            rows.push((
                "server RSS per 1000 listeners (MiB)".into(),
                f(self.server_rss_per_1000(), 2),
            ));
        }
        rows.push(("load tool CPU s".into(), f(self.loadtest_cpu_s, 2)));
        rows.push((
            "load tool peak RSS (MiB)".into(),
            f(mib(self.loadtest_hwm_kib), 1),
        ));
        if self.interrupted {
            rows.push(("interrupted".into(), "yes".into()));
        }
        if self.unfinished_tasks > 0 {
            rows.push((
                "listener tasks unfinished".into(),
                self.unfinished_tasks.to_string(),
            ));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ratios() {
        assert_eq!(cpu_per_1000_listener_s(3.0, 1000, 30.0), Some(0.1));
        assert_eq!(cpu_per_1000_listener_s(3.0, 0, 30.0), None);
        assert_eq!(rss_per_1000_listeners_mib(1024, 11 * 1024, 2000), Some(5.0));
        assert_eq!(rss_per_1000_listeners_mib(2048, 1024, 10), Some(0.0));
        assert_eq!(rss_per_1000_listeners_mib(0, 1024, 0), None);
    }

    #[test]
    fn json_and_table_agree() {
        let mut failures = BTreeMap::new();
        failures.insert("refused".to_string(), 2);
        let report = Report {
            listeners_requested: 10,
            connected: 8,
            held_to_end: 8,
            hold_s: 10.0,
            nominal_kbps: 128.0,
            failures,
            server: Some(ServerUsage {
                pid: 7,
                cpu_s: Some((0.5, 1.5)),
                rss: RssSamples {
                    start_kib: Some(1024),
                    peak_kib: Some(2048),
                    hwm_kib: Some(4096),
                    samples: 3,
                },
            }),
            ..Report::default()
        };
        let j = report.to_json();
        assert_eq!(j["failures_total"], 2);
        assert_eq!(j["failures"]["refused"], 2);
        assert_eq!(j["server"]["cpu_s"], 2.0);
        assert_eq!(j["server"]["cpu_s_per_1000_listener_s"], 25.0);
        assert_eq!(j["server"]["rss_per_1000_listeners_mib"], 125.0);
        assert!(j["ttfb_ms"].is_null());
        let table = report.render_table();
        assert!(table.contains("25.0000"));
        assert!(table.contains("  refused"));
    }
}
