//! The `onair` command line: `onair serve` runs the station; `onair push` streams files to
//! a remote server.

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
    /// Pull a WebRTC stream over WHEP and send it as PCM chunks over a WebSocket
    /// (see docs/BRIDGE.md).
    WhepPull(WhepPullArgs),
    /// Encode raw PCM from stdin to MP3 or Ogg/Opus and send it to an Icecast-compatible
    /// server (onair, icecast2) as a source.
    Encode(EncodeArgs),
    /// Stream files to a remote Icecast, onair or SHOUTcast server in real time, like the
    /// AutoDJ (see docs/PUSH.md).
    Push(PushArgs),
}

#[derive(clap::Args)]
struct PushArgs {
    /// Where to send: http://source:PASSWORD@host:port/mount
    #[arg(long, value_name = "URL", env = "ONAIR_PUSH_TO")]
    to: String,
    /// icecast (PUT, falling back to SOURCE) or shoutcast (v1, on the port after URL's)
    #[arg(long, default_value = "icecast")]
    protocol: String,
    /// Audio files and folders to play, in order (MP3 unless --encode)
    #[arg(value_name = "FILES | DIR")]
    files: Vec<PathBuf>,
    /// An .m3u playlist to play (after FILES)
    #[arg(long, value_name = "FILE.m3u")]
    playlist: Option<PathBuf>,
    /// Play in random order (reshuffled on every loop)
    #[arg(long)]
    shuffle: bool,
    /// Start again after the last track
    #[arg(long = "loop")]
    looped: bool,
    /// Exit at the first network error instead of reconnecting
    #[arg(long)]
    once: bool,
    /// ice-name: the stream's name
    #[arg(long)]
    name: Option<String>,
    /// ice-genre
    #[arg(long)]
    genre: Option<String>,
    /// ice-description
    #[arg(long)]
    description: Option<String>,
    /// ice-url: the station's web site
    #[arg(long)]
    url: Option<String>,
    /// ice-public: list the stream in directories
    #[arg(long)]
    public: bool,
    /// Decode every file and encode it to this codec (mp3 or opus), loudness-normalised,
    /// instead of sending MP3 files as they are
    #[arg(long, value_name = "CODEC")]
    encode: Option<String>,
    /// Encoder bitrate in kbit/s (with --encode)
    #[arg(long, default_value_t = 128)]
    bitrate: u32,
    /// Encoder sample rate (with --encode; default 44100 for MP3, 48000 for Opus)
    #[arg(long)]
    sample_rate: Option<u32>,
    /// Encoder channels, 1 or 2 (with --encode)
    #[arg(long, default_value_t = 2)]
    channels: u8,
    /// No loudness normalisation (with --encode)
    #[arg(long)]
    no_normalize: bool,
}

#[derive(clap::Args)]
struct WhepPullArgs {
    /// WHEP endpoint (http:// or https://host:port/path).
    #[arg(long, value_name = "URL")]
    whep: String,
    /// WebSocket consumer (ws:// or wss://host:port/path). Optional with --mount.
    #[arg(long, value_name = "URL", required_unless_present = "mount")]
    ws: Option<String>,
    /// Also encode the audio into this mount (`/live`) of a station run by this command,
    /// like `onair serve` with the bridge added (see --bind, --config).
    #[arg(long, value_name = "PATH")]
    mount: Option<String>,
    /// With --mount: the station's listen address (default 0.0.0.0:8000).
    #[arg(long, value_name = "ADDR:PORT", requires = "mount")]
    bind: Option<SocketAddr>,
    /// With --mount: the station's TOML configuration (docs/CONFIG.md).
    #[arg(long, value_name = "FILE", requires = "mount")]
    config: Option<PathBuf>,
    /// `traceId` of every message.
    #[arg(long)]
    trace_id: String,
    /// `stmId` of every message.
    #[arg(long)]
    stm_id: String,
    /// Bearer token for the WHEP endpoint.
    #[arg(long, env = "ONAIR_WHEP_BEARER")]
    bearer: Option<String>,
    /// Output sample rate: 8000, 16000, 24000 or 48000.
    #[arg(long, default_value_t = 16000)]
    rate: u32,
    /// Output channels (1 or 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=2))]
    channels: u16,
    /// Audio per WebSocket message, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(10..=10000))]
    chunk_ms: u32,
    /// `pcm` (raw s16le) or `wav` (each message a complete WAV file).
    #[arg(long, default_value = "pcm")]
    payload: String,
    /// Extra header for the WebSocket handshake, `Name:value` (repeatable).
    #[arg(long = "ws-header", value_name = "K:V")]
    ws_headers: Vec<String>,
    /// STUN server for a server-reflexive candidate, `stun:host:port` (repeatable). None by
    /// default: only host candidates, no public server is contacted.
    #[arg(long = "ice-server", value_name = "URL")]
    ice_servers: Vec<String>,
    /// Optional extra JSON fields: any of `seq,sampleRate,channels`.
    #[arg(long, default_value = "")]
    message_fields: String,
    /// Audio kept while the WebSocket is down, in seconds (oldest dropped first).
    #[arg(long, default_value_t = 30)]
    buffer_secs: u64,
    /// PEM file of extra trusted CA certificates (one or more) for https:// and wss://,
    /// added to the built-in Mozilla roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
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
    /// icecast (PUT, falling back to SOURCE) or shoutcast (v1, on the port after URL's)
    #[arg(long, default_value = "icecast")]
    protocol: String,
    /// Exit at the first network error instead of reconnecting
    #[arg(long)]
    once: bool,
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
        // Logs on stderr: stdout carries the banner (addresses, passwords) alone.
        .with_writer(std::io::stderr)
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
        Command::WhepPull(args) if args.mount.is_some() => {
            // A station with the bridge added: the mount needs a server for its listeners.
            let overrides = Overrides {
                bind: args.bind,
                ..Overrides::default()
            };
            let path = args.config.clone();
            let mut loaded = Config::load(path.as_deref(), &overrides)?;
            let spec = whep_pull_spec(args);
            spec.to_config().map_err(anyhow::Error::msg)?;
            loaded.demo.enabled = false;
            loaded.bridges.push(spec);
            runtime.block_on(serve(loaded, path, overrides))
        }
        Command::WhepPull(args) => {
            let config = whep_pull_spec(args)
                .to_config()
                .map_err(anyhow::Error::msg)?;
            runtime.block_on(whep_pull(config))
        }
        Command::Encode(args) => runtime.block_on(encode(args)),
        Command::Push(args) => runtime.block_on(push(args)),
    }
}

async fn push(a: PushArgs) -> anyhow::Result<()> {
    use onair::output::{playlist_push, push};
    use onair_proto::push::{Protocol, PushTarget};
    let target = PushTarget::parse(&a.to).context("--to")?;
    let protocol = Protocol::parse(&a.protocol)
        .with_context(|| format!("--protocol {:?}: use icecast or shoutcast", a.protocol))?;
    let settings = push::PushSettings {
        target,
        protocol,
        info: onair_proto::icecast::StreamInfoHeaders {
            name: a.name,
            description: a.description,
            genre: a.genre,
            url: a.url,
            public: Some(a.public),
            ..Default::default()
        },
        mode: push::Mode::Playout,
        once: a.once,
    };
    let encode = match a.encode.as_deref() {
        None => None,
        Some(c) => {
            let codec = match c.to_ascii_lowercase().as_str() {
                "mp3" => onair_media::encode::Codec::Mp3,
                "opus" => onair_media::encode::Codec::Opus,
                _ => anyhow::bail!("--encode {c:?}: use mp3 or opus"),
            };
            let default_rate = if codec == onair_media::encode::Codec::Opus {
                48_000
            } else {
                44_100
            };
            Some(playlist_push::Encode {
                codec,
                bitrate_kbps: a.bitrate,
                sample_rate: a.sample_rate.unwrap_or(default_rate),
                channels: a.channels,
                normalize: !a.no_normalize,
            })
        }
    };
    let list = playlist_push::Tracklist {
        inputs: a.files,
        playlist: a.playlist,
        shuffle: a.shuffle,
        looped: a.looped,
        encode,
    };
    let token = tokio_util::sync::CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        while wait_for_signal().await != Signal::Stop {}
        tracing::info!("stopping the push");
        stop.cancel();
    });
    playlist_push::run(list, settings, token).await?;
    Ok(())
}

fn whep_pull_spec(a: WhepPullArgs) -> onair::bridge::BridgeSpec {
    onair::bridge::BridgeSpec {
        whep: a.whep,
        ws: a.ws,
        trace_id: a.trace_id,
        stm_id: a.stm_id,
        bearer: a.bearer,
        rate: Some(a.rate),
        channels: Some(a.channels),
        chunk_ms: Some(a.chunk_ms),
        payload: Some(a.payload),
        ws_headers: a.ws_headers,
        ice_servers: a.ice_servers,
        message_fields: Some(a.message_fields),
        buffer_secs: Some(a.buffer_secs),
        ca_file: a.ca,
        mount: a.mount,
    }
}

async fn whep_pull(config: onair::bridge::BridgeConfig) -> anyhow::Result<()> {
    let bridge = onair::bridge::Bridge::start(config)?;
    let stats = bridge.stats.clone();
    tokio::select! {
        _ = wait_for_signal() => tracing::info!("stopping the bridge"),
        _ = async { while !bridge.is_finished() { tokio::time::sleep(Duration::from_millis(200)).await } } => {}
    }
    let result = bridge.shutdown(Duration::from_secs(5)).await;
    let s = stats.snapshot();
    tracing::info!(
        seconds = s.seconds_received,
        messages = s.messages_sent,
        lost_packets = s.lost_packets,
        concealed_s = s.concealed_s,
        "bridge summary"
    );
    Ok(result?)
}

/// `onair encode`: stdin → encoder input (a local mount) → push to the remote server.
async fn encode(args: EncodeArgs) -> anyhow::Result<()> {
    use onair::{
        config::{EncodingSettings, MountSettings},
        input::{
            encoder::{self, EncoderOptions, Message},
            pcm::PcmLayout,
        },
        mount::Mount,
        output::push::{Mode, Push, PushSettings},
    };
    use onair_media::{encode::Codec, pcm::SampleFormat};
    use onair_proto::push::{Protocol, PushTarget};
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
    let target = PushTarget::parse(&args.to).context("--to")?;
    let protocol = Protocol::parse(&args.protocol)
        .with_context(|| format!("--protocol {:?}: use icecast or shoutcast", args.protocol))?;
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
    let settings_out = PushSettings {
        target,
        protocol,
        info: onair_proto::icecast::StreamInfoHeaders {
            name: args.name,
            public: Some(false),
            ..Default::default()
        },
        mode: Mode::Live,
        once: args.once,
    };
    let to = settings_out.target.redacted();
    let pushing = tokio::spawn(Push::new(mount, settings_out).run(token.clone()));
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
        to
    );
    let pushed = tokio::select! {
        r = pushing => r?,
        _ = wait_for_signal() => {
            token.cancel();
            Ok(())
        }
    };
    // The push ends when the stream does (or fails, with --once): stop the encoder either way.
    token.cancel();
    let stopped = task.finished().await;
    pushed?;
    stopped?;
    // The reader may still block on stdin after a push failure; only a clean end joins.
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
    for b in &config.bridges {
        let to = match (&b.mount, &b.ws) {
            (Some(m), Some(ws)) => format!("http://{host}{m} and {ws}"),
            (Some(m), None) => format!("http://{host}{m}"),
            (None, Some(ws)) => ws.clone(),
            (None, None) => continue,
        };
        println!("  bridge:   {} -> {to}  (stm_id {})", b.whep, b.stm_id);
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
