//! The `onair` command line: `onair serve` runs the station.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use onair::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "onair",
    version,
    about = "Internet radio and live-audio streaming server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the streaming server (Icecast-compatible sources in, listeners out).
    Serve {
        /// Listen address (default 0.0.0.0:8000).
        #[arg(long, value_name = "ADDR:PORT")]
        bind: Option<SocketAddr>,
        /// TOML configuration file (every key optional; see docs/CONFIG.md).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Password for source clients (user `source`); generated and printed if unset.
        #[arg(long, env = "ONAIR_SOURCE_PASSWORD")]
        source_password: Option<String>,
        /// Admin user name (default `admin`).
        #[arg(long)]
        admin_user: Option<String>,
        /// Admin password; generated and printed if unset.
        #[arg(long, env = "ONAIR_ADMIN_PASSWORD")]
        admin_password: Option<String>,
        /// Play this music folder on /stream (AutoDJ; overrides the config file's /stream).
        #[arg(long, value_name = "DIR")]
        music: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("onair")
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve {
            bind,
            config,
            source_password,
            admin_user,
            admin_password,
            music,
        } => {
            let overrides = Overrides {
                bind,
                source_password,
                admin_user,
                admin_password,
                music,
            };
            let loaded = Config::load(config.as_deref(), &overrides)?;
            runtime.block_on(serve(loaded, config, overrides))
        }
    }
}

async fn serve(config: Config, path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let running = onair::station::start(config).await?;
    print_banner(&running.station.config(), running.local_addr());
    if let Some(t) = running.tls_addr() {
        println!("  tls:      https://{t}/live  (sources and listeners, certificate from [tls])");
    }
    if let Some(sc) = running.shoutcast_addr() {
        println!(
            "  shoutcast: v1 sources on port {} feed {}",
            sc.port(),
            running.station.config().shoutcast.mount
        );
    }
    while wait_for_signal().await == Signal::Reload {
        reload(&running, path.as_deref(), &overrides);
    }
    tracing::info!("shutting down");
    if !running.shutdown(Duration::from_secs(5)).await {
        tracing::warn!("some connections did not close within 5 s");
    }
    Ok(())
}

fn print_banner(config: &Config, addr: SocketAddr) {
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let a = &config.auth;
    let note = |generated: bool| {
        if generated {
            " (generated for this run)"
        } else {
            ""
        }
    };
    println!("onair {} listening on {addr}", env!("CARGO_PKG_VERSION"));
    println!("  status:   http://{host}/status-json.xsl   http://{host}/api/status");
    println!(
        "  source:   user source, password {}{}",
        a.source_password,
        note(a.generated_source)
    );
    println!(
        "  admin:    user {}, password {}{}",
        a.admin_user,
        a.admin_password,
        note(a.generated_admin)
    );
    println!(
        "  send:     ffmpeg -re -i song.mp3 -c copy -content_type audio/mpeg -f mp3 icecast://source:{}@{host}/live",
        a.source_password
    );
    println!("  listen:   http://{host}/live  (any mount a source sends to)");
    for m in &config.mounts {
        println!("  mount:    http://{host}{}", m.name);
    }
}

/// SIGHUP: re-reads the config file (and the flags given at start) and applies it; a bad
/// file is logged and the running configuration stays.
fn reload(
    running: &onair::station::Running,
    path: Option<&std::path::Path>,
    overrides: &Overrides,
) {
    match Config::load(path, overrides) {
        Ok(config) => {
            let notes = running.station.reload(config);
            tracing::info!("configuration reloaded");
            for n in notes {
                tracing::warn!("reload: {n}");
            }
        }
        Err(e) => tracing::error!("reload refused, keeping the running configuration: {e}"),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Signal {
    Stop,
    Reload,
}

async fn wait_for_signal() -> Signal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = term.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    Signal::Stop
}
