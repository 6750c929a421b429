//! `onair-loadtest`: opens many simulated listeners against an Icecast-compatible mount
//! (onair or Icecast itself), holds them, and reports what they received and what the server
//! process spent (CPU, memory) doing it.
//!
//! Place in the project: a measuring tool outside the data flow. It speaks to a server only
//! over the wire, like any listener, and reads the server's `/proc` entries; it uses
//! `onair_proto::icy::Deinterleaver` to take ICY metadata back out of the stream.
//!
//! Modules: `request` / `response` (pure wire text), `listener` (one connection), `load`
//! (the run: ramp, hold window, stop), `meter` + `procfs` (server CPU and RSS), `stats`
//! (percentiles), `report` (table and JSON), `host` (rlimit and clock ticks: the only
//! `unsafe`).

mod host;
mod listener;
mod load;
mod meter;
mod procfs;
mod report;
mod request;
mod response;
mod stats;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

/// Listener load generator and server resource meter for onair and Icecast.
#[derive(Debug, Parser)]
#[command(name = "onair-loadtest", version)]
struct Args {
    /// Mount URL (plain http) every listener requests.
    #[arg(long, default_value = "http://127.0.0.1:8000/live")]
    url: String,
    /// Number of listener connections.
    #[arg(long, default_value_t = 100)]
    listeners: usize,
    /// Request ICY metadata (`Icy-MetaData: 1`) and de-interleave it.
    #[arg(long)]
    metadata: bool,
    /// Seconds to hold the listeners after the ramp ends.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// New connections per second during the ramp.
    #[arg(long, default_value_t = 2000.0)]
    ramp: f64,
    /// At most this many listeners connecting (before their first body byte) at once.
    #[arg(long, default_value_t = 1000)]
    max_connecting: usize,
    /// Server process to meter (CPU from /proc/PID/stat, RSS from /proc/PID/status).
    #[arg(long)]
    server_pid: Option<u32>,
    /// The stream's nominal bitrate, for the received-bitrate comparison.
    #[arg(long, default_value_t = 128.0)]
    nominal_kbps: f64,
    /// Once streaming, wake a listener only when about this many milliseconds of audio at
    /// the nominal bitrate are queued (SO_RCVLOWAT), like a player with a buffer; 0 reads
    /// every segment as it arrives, which costs the tool about as much CPU as the server.
    /// At most 8 KiB; a stream much slower than --nominal-kbps may then show as stalls.
    #[arg(long, default_value_t = 500)]
    read_batch_ms: u64,
    /// Most seconds to wait after the ramp for connect bursts to drain (the aggregate rate
    /// back to nominal) before the hold window starts; 0 starts it at once.
    #[arg(long, default_value_t = 10.0)]
    settle_max: f64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Local source addresses to spread connections over (comma-separated), e.g.
    /// 127.0.0.2,127.0.0.3 — each gives its own range of ephemeral ports.
    #[arg(long, value_delimiter = ',')]
    bind_ips: Vec<IpAddr>,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// User-Agent header of the listeners.
    #[arg(long, default_value = concat!("onair-loadtest/", env!("CARGO_PKG_VERSION")))]
    user_agent: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.listeners == 0 {
        bail!("--listeners must be at least 1");
    }
    if !(args.ramp.is_finite() && args.ramp > 0.0) {
        bail!("--ramp must be a positive number of connections per second");
    }
    let duration = Duration::try_from_secs_f64(args.duration)
        .context("--duration must be a non-negative number of seconds")?;
    let settle_max = Duration::try_from_secs_f64(args.settle_max)
        .context("--settle-max must be a non-negative number of seconds")?;
    let url = request::parse_http_url(&args.url).with_context(|| format!("--url {}", args.url))?;
    let addr = resolve(&url.host, url.port, &args.bind_ips)?;

    let nofile_limit = match host::raise_nofile_limit() {
        Ok(limit) => Some(limit.after),
        Err(e) => {
            eprintln!("warning: could not raise the open-file limit: {e}");
            None
        }
    };
    if let Some(limit) = nofile_limit {
        if limit < args.listeners as u64 + 64 {
            eprintln!(
                "warning: open-file limit {limit} is below {} listeners + 64; \
                 raise it (ulimit -n) or expect socket errors",
                args.listeners
            );
        }
    }

    let config = load::Config {
        url: args.url.clone(),
        addr,
        request: request::encode_request(&url, &args.user_agent, args.metadata),
        listeners: args.listeners,
        metadata: args.metadata,
        duration,
        ramp_per_s: args.ramp,
        max_connecting: args.max_connecting,
        server_pid: args.server_pid,
        nominal_kbps: args.nominal_kbps,
        read_batch: read_batch_bytes(args.nominal_kbps, args.read_batch_ms),
        settle_max,
        bind_ips: args.bind_ips.clone(),
        nofile_limit,
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.build().context("building the tokio runtime")?;
    let report = runtime.block_on(load::run(config));
    runtime.shutdown_timeout(Duration::from_secs(1));

    print!("{}", report.render_table());
    if let Some(path) = &args.json {
        let mut text = serde_json::to_string_pretty(&report.to_json())?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Largest receive low-water mark: small enough that a stream at a quarter of 128 kbit/s
/// still fills a batch well within the stall limit.
const MAX_READ_BATCH: f64 = 8.0 * 1024.0;

/// The low-water mark for `ms` of audio at `kbps`, within 1 byte..=[`MAX_READ_BATCH`];
/// `None` for 0 ms.
fn read_batch_bytes(kbps: f64, ms: u64) -> Option<u32> {
    let bytes = kbps * 1000.0 / 8.0 * ms as f64 / 1000.0;
    (ms > 0 && bytes >= 1.0).then(|| bytes.min(MAX_READ_BATCH) as u32)
}

/// Resolves the server address, preferring the address family of the bind addresses.
fn resolve(host: &str, port: u16, bind_ips: &[IpAddr]) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .collect();
    let want_v6 = bind_ips.first().map(IpAddr::is_ipv6);
    if let Some(v6) = want_v6 {
        if bind_ips.iter().any(|ip| ip.is_ipv6() != v6) {
            bail!("--bind-ips mixes IPv4 and IPv6 addresses");
        }
    }
    addrs
        .iter()
        .find(|a| want_v6.is_none_or(|v6| a.is_ipv6() == v6))
        .copied()
        .with_context(|| format!("{host} has no address of the --bind-ips family"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_batch_sizes() {
        assert_eq!(read_batch_bytes(128.0, 250), Some(4000));
        assert_eq!(read_batch_bytes(128.0, 500), Some(8000));
        assert_eq!(read_batch_bytes(320.0, 1000), Some(8192));
        assert_eq!(read_batch_bytes(128.0, 0), None);
        assert_eq!(read_batch_bytes(0.0, 250), None);
    }
}
