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
    /// Encode raw PCM from stdin to MP3 or Ogg/Opus and send it to an Icecast-compatible
    /// server (onair, icecast2) as a source.
    Encode(EncodeArgs),
}

#[derive(clap::Args)]
struct EncodeArgs {
    /// Input sample rate in Hz.
    #[arg(long)]
    rate: u32,
    /// Input channels (interleaved).
    #[arg(long, default_value_t = 1)]
    channels: u16,
    /// Input sample format: f32le, s16le or s16be.
    #[arg(long, default_value = "s16le")]
    format: String,
    /// Where to send: http://source:PASSWORD@HOST:PORT/MOUNT
    #[arg(long, value_name = "URL")]
    to: String,
    /// mp3 or opus.
    #[arg(long, default_value = "mp3")]
    codec: String,
    /// Bitrate in kbit/s.
    #[arg(long, default_value_t = 128)]
    bitrate: u32,
    /// Encoded sample rate (default: the input's if the codec supports it).
    #[arg(long)]
    sample_rate: Option<u32>,
    /// Stream name announced to the server (ice-name).
    #[arg(long)]
    name: Option<String>,
    /// Title of the stream (sent as metadata).
    #[arg(long)]
    title: Option<String>,
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
        Command::Encode(args) => runtime.block_on(encode(args)),
    }
}

/// `onair encode`: stdin → encoder input (a local mount) → upload to the remote server.
async fn encode(args: EncodeArgs) -> anyhow::Result<()> {
    use onair::{
        config::{EncodingSettings, MountSettings},
        input::{
            encoder::{self, EncoderOptions, Message},
            pcm::PcmLayout,
        },
        mount::Mount,
        output::upload::{self, StreamDescription, Target},
    };
    use onair_media::{encode::Codec, pcm::SampleFormat};
    let format = match args.format.to_ascii_lowercase().as_str() {
        "f32le" => SampleFormat::F32Le,
        "s16le" => SampleFormat::S16Le,
        "s16be" => SampleFormat::S16Be,
        other => anyhow::bail!("--format must be f32le, s16le or s16be, not {other:?}"),
    };
    let codec = match args.codec.to_ascii_lowercase().as_str() {
        "mp3" => Codec::Mp3,
        "opus" => Codec::Opus,
        other => anyhow::bail!("--codec must be mp3 or opus, not {other:?}"),
    };
    anyhow::ensure!(
        (1..=8).contains(&args.channels) && args.rate > 0,
        "--rate must be positive and --channels 1..=8"
    );
    let target = Target::parse(&args.to)?;
    let layout = PcmLayout {
        format,
        rate: args.rate,
        channels: args.channels,
    };
    let encoding = EncodingSettings {
        codec,
        bitrate_kbps: args.bitrate,
        sample_rate: args.sample_rate,
        channels: None,
    };
    let settings = encoding.for_input(args.rate, args.channels);
    let mount_settings = MountSettings {
        // Small chunks: the remote server is the one that batches for its listeners.
        chunk: Duration::from_millis(100),
        ..MountSettings::default()
    };
    let mount = std::sync::Arc::new(Mount::new("/encode".into(), None, &mount_settings));
    let token = tokio_util::sync::CancellationToken::new();
    let opts = EncoderOptions::new(settings.clone(), "onair encode");
    let (tx, task) = encoder::start(mount.clone(), opts, token.clone())?;
    if let Some(title) = args.title {
        tx.send_async(Message::Title(onair_proto::icy::StreamMeta {
            title,
            url: None,
        }))
        .await?;
    }
    let desc = StreamDescription {
        content_type: codec.content_type().into(),
        name: args.name,
        description: None,
    };
    let uploading = tokio::spawn(upload::run(mount, target, desc, token.clone()));
    let reader = std::thread::spawn(move || {
        onair::input::stdin::read_pcm(std::io::stdin().lock(), layout, &tx)
    });
    eprintln!(
        "onair encode: {} Hz {} ch {:?} -> {} {} kbit/s {} Hz {} ch -> {}",
        args.rate,
        args.channels,
        format,
        codec.name(),
        settings.bitrate_kbps,
        settings.rate,
        settings.channels,
        args.to.split('@').next_back().unwrap_or("")
    );
    let uploaded = tokio::select! {
        r = uploading => r?,
        _ = wait_for_signal() => {
            token.cancel();
            Ok(())
        }
    };
    // The upload ends when the stream does (or fails): stop the encoder either way.
    token.cancel();
    let stopped = task.finished().await;
    uploaded?;
    stopped?;
    // The reader may still block on stdin after an upload failure; only a clean end joins.
    if reader.is_finished() {
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("the stdin reader panicked"))??;
    }
    Ok(())
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
    if config.demo.enabled {
        println!(
            "  listen:   http://{host}{}  (built-in demo programme; a source sending to {} replaces it)",
            config.demo.mount, config.demo.mount
        );
    }
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
