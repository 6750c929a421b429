//! Configuration: one TOML file (every key optional) plus CLI overrides → a validated
//! [`Config`]. Defaults are documented in docs/CONFIG.md; `onair serve` with nothing at all
//! starts a working station.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The file as written: everything optional, unknown keys rejected so typos are caught.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub bind: Option<String>,
    pub hostname: Option<String>,
    pub location: Option<String>,
    pub admin_email: Option<String>,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub defaults: RawMountSettings,
    #[serde(default)]
    pub shoutcast: RawShoutcast,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub mount: Vec<RawMount>,
    /// WHEP → WebSocket bridges started with the server (docs/BRIDGE.md).
    #[serde(default)]
    pub bridge: Vec<crate::bridge::BridgeSpec>,
    #[serde(default)]
    pub demo: RawDemo,
}

/// The built-in demo programme (see docs/ENCODING.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDemo {
    pub enabled: Option<bool>,
    pub mount: Option<String>,
    pub seed: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShoutcast {
    pub enabled: Option<bool>,
    pub mount: Option<String>,
    pub port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub bind: Option<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub source_password: Option<String>,
    pub admin_user: Option<String>,
    pub admin_password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_clients: Option<usize>,
    pub max_sources: Option<usize>,
    pub source_timeout: Option<f64>,
    pub header_timeout: Option<f64>,
    pub max_head_bytes: Option<usize>,
    pub source_takeover: Option<f64>,
}

/// Mount settings that may be given per mount or under `[defaults]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMountSettings {
    pub max_listeners: Option<usize>,
    pub burst_size: Option<usize>,
    pub queue_size: Option<usize>,
    pub metaint: Option<usize>,
    pub chunk_ms: Option<u64>,
    pub send_buffer: Option<usize>,
    pub max_listener_duration: Option<f64>,
    /// Live encoding (raw PCM sources, transcoded mounts): "mp3" or "opus".
    pub codec: Option<String>,
    /// kbit/s.
    pub bitrate: Option<u32>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMount {
    pub name: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub hidden: Option<bool>,
    pub fallback: Option<String>,
    pub fallback_override: Option<bool>,
    pub fallback_when_full: Option<bool>,
    pub fallback_file: Option<PathBuf>,
    pub intro_file: Option<PathBuf>,
    pub dump_file: Option<String>,
    pub stream_name: Option<String>,
    pub description: Option<String>,
    pub genre: Option<String>,
    pub url: Option<String>,
    #[serde(default)]
    pub push: Vec<RawPush>,
    pub autodj: Option<RawAutoDj>,
    /// Re-encode this mount's stream into this mount (`codec`, `bitrate`, ...).
    pub transcode_from: Option<String>,
    #[serde(flatten)]
    pub settings: RawMountSettings,
}

/// A `[[mount.push]]` entry: relay the mount to a remote server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPush {
    pub to: String,
    pub protocol: Option<String>,
    pub stream_name: Option<String>,
    pub description: Option<String>,
    pub genre: Option<String>,
    pub url: Option<String>,
    pub public: Option<bool>,
}

/// `[mount.autodj]`: play a music folder on this mount (docs/AUTODJ.md).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoDj {
    pub music_dir: Option<PathBuf>,
    pub order: Option<String>,
    pub codec: Option<String>,
    pub bitrate: Option<u32>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u8>,
    pub normalize: Option<bool>,
    pub crossfade: Option<f64>,
    pub passthrough: Option<bool>,
    pub rescan: Option<f64>,
    pub upcoming_file: Option<PathBuf>,
}

/// CLI flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<SocketAddr>,
    pub source_password: Option<String>,
    pub admin_user: Option<String>,
    pub admin_password: Option<String>,
    /// `--music DIR`: an AutoDJ on `/stream` playing this folder.
    pub music: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub hostname: String,
    pub location: String,
    pub admin_email: String,
    pub auth: Auth,
    pub limits: Limits,
    pub defaults: MountSettings,
    pub shoutcast: ShoutcastConfig,
    pub tls: Option<TlsConfig>,
    pub mounts: Vec<MountConfig>,
    pub bridges: Vec<crate::bridge::BridgeSpec>,
    pub demo: DemoConfig,
}

/// The built-in demo programme: where it plays and whether it does.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Default: on when the configuration defines no mounts. Anything that brings its own
    /// programme (AutoDJ `--music DIR`) turns it off by setting this to false.
    pub enabled: bool,
    pub mount: String,
    /// Seed of the generated programme (same seed, same music).
    pub seed: u64,
}

/// How live-encoded audio (raw PCM sources, transcoded mounts, the demo) is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodingSettings {
    pub codec: onair_media::encode::Codec,
    pub bitrate_kbps: u32,
    /// `None`: the input's rate if the codec supports it, else 44100 (MP3) / 48000 (Opus).
    pub sample_rate: Option<u32>,
    /// `None`: the input's channel count, at most 2.
    pub channels: Option<u16>,
}

impl Default for EncodingSettings {
    fn default() -> Self {
        EncodingSettings {
            codec: onair_media::encode::Codec::Mp3,
            bitrate_kbps: 128,
            sample_rate: None,
            channels: None,
        }
    }
}

impl EncodingSettings {
    /// Encoder settings for input at `rate` Hz with `channels` channels.
    pub fn for_input(&self, rate: u32, channels: u16) -> onair_media::encode::EncoderSettings {
        use onair_media::encode::Codec;
        let native: &[u32] = match self.codec {
            Codec::Mp3 => &[22_050, 24_000, 32_000, 44_100, 48_000],
            Codec::Opus => &[48_000, 24_000, 16_000, 12_000, 8_000],
        };
        let fallback = match self.codec {
            Codec::Mp3 => 44_100,
            Codec::Opus => 48_000,
        };
        onair_media::encode::EncoderSettings {
            codec: self.codec,
            bitrate_kbps: self.bitrate_kbps,
            vbr: false,
            rate: self.sample_rate.unwrap_or(if native.contains(&rate) {
                rate
            } else {
                fallback
            }),
            channels: self.channels.unwrap_or(channels.clamp(1, 2)),
        }
    }

    fn resolve(raw: &RawMountSettings, base: &EncodingSettings) -> Result<Self, ConfigError> {
        use onair_media::encode::Codec;
        let codec = match raw.codec.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => base.codec,
            Some("mp3") => Codec::Mp3,
            Some("opus") => Codec::Opus,
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "codec must be \"mp3\" or \"opus\", got {other:?}"
                )))
            }
        };
        let s = EncodingSettings {
            codec,
            bitrate_kbps: raw.bitrate.unwrap_or(base.bitrate_kbps),
            sample_rate: raw.sample_rate.or(base.sample_rate),
            channels: raw.channels.or(base.channels),
        };
        // Check what can be checked without an input: the codec accepts these settings.
        let probe = s.for_input(s.sample_rate.unwrap_or(48_000), s.channels.unwrap_or(2));
        onair_media::encode::new_encoder(&probe)
            .map_err(|e| ConfigError::Invalid(format!("encoding: {e}")))?;
        Ok(s)
    }
}

/// A TLS listen socket: PEM certificate chain and private key, separate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub bind: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// SHOUTcast v1 source port: where it listens and which mount it feeds.
#[derive(Debug, Clone)]
pub struct ShoutcastConfig {
    pub enabled: bool,
    pub mount: String,
    /// `None`: the main port + 1 (the convention every SHOUTcast client assumes).
    pub port: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub source_password: String,
    pub admin_user: String,
    pub admin_password: String,
    /// Which secrets were generated because none were configured (printed at start).
    pub generated_source: bool,
    pub generated_admin: bool,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_clients: usize,
    pub max_sources: usize,
    pub source_timeout: Duration,
    pub header_timeout: Duration,
    pub max_head_bytes: usize,
    /// A source silent this long may be replaced by a new one with valid credentials
    /// (a reconnecting client whose old TCP connection is dead); `None` = never.
    pub source_takeover: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSettings {
    pub max_listeners: usize,
    pub burst_size: usize,
    pub queue_size: usize,
    pub metaint: usize,
    /// Audio is handed to listeners in chunks of about this much media time: fewer, larger
    /// writes per listener (the main CPU cost) at the price of that much extra latency.
    pub chunk: Duration,
    /// Kernel send buffer per listener socket (0 = kernel default). Bounds how much a stalled
    /// listener can hide in the kernel before the `queue_size` lag limit sees it.
    pub send_buffer: usize,
    /// Listeners are disconnected after this long (`None` = no limit).
    pub max_listener_duration: Option<Duration>,
    pub encoding: EncodingSettings,
}

#[derive(Debug, Clone)]
pub struct MountConfig {
    pub name: String,
    pub username: String,
    pub password: Option<String>,
    pub hidden: bool,
    pub fallback: Option<String>,
    pub fallback_override: bool,
    /// Listeners beyond `max_listeners` go to the fallback instead of getting an error.
    pub fallback_when_full: bool,
    /// Played (looped, real-time) to listeners when no source or fallback mount is live.
    pub fallback_file: Option<PathBuf>,
    /// Sent to each new listener before the live stream.
    pub intro_file: Option<PathBuf>,
    /// strftime pattern of a recording file per source connection.
    pub dump_file: Option<String>,
    pub stream_name: Option<String>,
    pub description: Option<String>,
    pub genre: Option<String>,
    pub url: Option<String>,
    /// Plays a music folder on this mount.
    pub autodj: Option<AutoDjConfig>,
    pub transcode_from: Option<String>,
    pub settings: MountSettings,
    /// Remote servers this mount is relayed to.
    pub push: Vec<PushConfig>,
}

/// A validated `[[mount.push]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    pub target: onair_proto::push::PushTarget,
    pub protocol: onair_proto::push::Protocol,
    /// Labels announced instead of the mount's (unset: the mount's).
    pub info: onair_proto::icecast::StreamInfoHeaders,
}

impl PushConfig {
    pub fn from_raw(raw: RawPush) -> Result<PushConfig, String> {
        let target = onair_proto::push::PushTarget::parse(&raw.to).map_err(|e| e.to_string())?;
        let protocol = match raw.protocol.as_deref() {
            None => onair_proto::push::Protocol::Icecast,
            Some(p) => onair_proto::push::Protocol::parse(p)
                .ok_or_else(|| format!("unknown push protocol {p:?} (icecast or shoutcast)"))?,
        };
        Ok(PushConfig {
            target,
            protocol,
            info: onair_proto::icecast::StreamInfoHeaders {
                name: raw.stream_name,
                description: raw.description,
                genre: raw.genre,
                url: raw.url,
                public: raw.public,
                bitrate: None,
                audio_info: None,
            },
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoDjOrder {
    Shuffle,
    Sequential,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AutoDjConfig {
    pub music_dir: PathBuf,
    pub order: AutoDjOrder,
    /// Output codec: "mp3" or "opus".
    pub codec: String,
    pub bitrate: u32,
    pub sample_rate: u32,
    pub channels: u8,
    /// EBU R128 normalisation to -16 LUFS (encode mode).
    pub normalize: bool,
    /// Seconds of overlap between tracks; 0 = gapless.
    pub crossfade: f64,
    /// Copy MP3 frames instead of decoding and encoding (files must already be in the
    /// mount's format; others are skipped).
    pub passthrough: bool,
    /// How often the folder is rescanned for added and removed files.
    pub rescan: Duration,
    /// Written with the next tracks on each change.
    pub upcoming_file: Option<PathBuf>,
}

impl AutoDjConfig {
    /// The settings for `--music DIR` and for keys left out.
    pub fn for_dir(music_dir: PathBuf) -> AutoDjConfig {
        AutoDjConfig {
            music_dir,
            order: AutoDjOrder::Shuffle,
            codec: "mp3".into(),
            bitrate: 128,
            sample_rate: 44_100,
            channels: 2,
            normalize: true,
            crossfade: 0.0,
            passthrough: false,
            rescan: Duration::from_secs(60),
            upcoming_file: None,
        }
    }

    fn resolve(raw: RawAutoDj, mount: &str) -> Result<AutoDjConfig, ConfigError> {
        let bad = |m: String| ConfigError::Invalid(format!("mount {mount} autodj: {m}"));
        let dir = raw
            .music_dir
            .ok_or_else(|| bad("music_dir is required".into()))?;
        let d = AutoDjConfig::for_dir(dir);
        let order = match raw.order.as_deref() {
            None | Some("shuffle") => AutoDjOrder::Shuffle,
            Some("sequential") => AutoDjOrder::Sequential,
            Some(o) => {
                return Err(bad(format!(
                    "order must be shuffle or sequential, got {o:?}"
                )))
            }
        };
        let codec = raw.codec.unwrap_or(d.codec).to_ascii_lowercase();
        if codec != "mp3" && codec != "opus" {
            return Err(bad(format!("codec must be mp3 or opus, got {codec:?}")));
        }
        let passthrough = raw.passthrough.unwrap_or(false);
        if passthrough && codec != "mp3" {
            return Err(bad("passthrough needs codec = \"mp3\"".into()));
        }
        let sample_rate = raw.sample_rate.unwrap_or(if codec == "opus" {
            48_000
        } else {
            d.sample_rate
        });
        if ![
            8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
        ]
        .contains(&sample_rate)
        {
            return Err(bad(format!(
                "sample_rate {sample_rate} is not an MP3/Opus rate"
            )));
        }
        let channels = raw.channels.unwrap_or(d.channels);
        if channels != 1 && channels != 2 {
            return Err(bad(format!("channels must be 1 or 2, got {channels}")));
        }
        let bitrate = raw.bitrate.unwrap_or(d.bitrate);
        if !(8..=320).contains(&bitrate) {
            return Err(bad(format!(
                "bitrate must be 8..=320 kbit/s, got {bitrate}"
            )));
        }
        let crossfade = raw.crossfade.unwrap_or(0.0);
        if !(0.0..=MAX_CROSSFADE_SECS).contains(&crossfade) {
            return Err(bad(format!(
                "crossfade = {crossfade}: must be 0..={MAX_CROSSFADE_SECS} seconds"
            )));
        }
        if crossfade > 0.0 && passthrough {
            return Err(bad(format!(
                "crossfade = {crossfade} needs the encode mode: passthrough copies MP3 frames \
                 and cannot mix tracks (set passthrough = false or crossfade = 0)"
            )));
        }
        let rescan = secs(raw.rescan, 60.0, "autodj rescan")?;
        Ok(AutoDjConfig {
            music_dir: d.music_dir,
            order,
            codec,
            bitrate,
            sample_rate,
            channels,
            normalize: raw.normalize.unwrap_or(true),
            crossfade,
            passthrough,
            rescan,
            upcoming_file: raw.upcoming_file,
        })
    }
}

/// Longest AutoDJ crossfade, in seconds.
pub const MAX_CROSSFADE_SECS: f64 = 10.0;
pub const DEFAULT_BIND: &str = "0.0.0.0:8000";

impl MountSettings {
    fn resolve(raw: &RawMountSettings, base: &MountSettings) -> Result<MountSettings, ConfigError> {
        Ok(MountSettings {
            max_listeners: raw.max_listeners.unwrap_or(base.max_listeners),
            burst_size: raw.burst_size.unwrap_or(base.burst_size),
            queue_size: raw.queue_size.unwrap_or(base.queue_size),
            metaint: raw.metaint.unwrap_or(base.metaint),
            chunk: raw.chunk_ms.map_or(base.chunk, Duration::from_millis),
            send_buffer: raw.send_buffer.unwrap_or(base.send_buffer),
            max_listener_duration: match raw.max_listener_duration {
                None => base.max_listener_duration,
                v => optional_secs(v, 0.0, "max_listener_duration")?,
            },
            encoding: EncodingSettings::resolve(raw, &base.encoding)?,
        })
    }

    fn validate(&self, what: &str) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("{what}: {m}")));
        if !(1..=65535).contains(&self.metaint) {
            return bad(format!("metaint must be 1..=65535, got {}", self.metaint));
        }
        if self.queue_size < 16 * 1024 {
            return bad(format!(
                "queue_size must be at least 16384, got {}",
                self.queue_size
            ));
        }
        if self.chunk > Duration::from_secs(5) {
            return bad("chunk_ms must be at most 5000".into());
        }
        Ok(())
    }
}

impl Default for MountSettings {
    fn default() -> Self {
        MountSettings {
            max_listeners: 100_000,
            burst_size: 65_536,
            queue_size: 524_288,
            metaint: 16_000,
            chunk: Duration::from_millis(1000),
            send_buffer: 65_536,
            max_listener_duration: None,
            encoding: EncodingSettings::default(),
        }
    }
}

impl Config {
    /// Loads `path` (if any) and applies `overrides`. Missing secrets are generated.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?
            }
            None => RawConfig::default(),
        };
        Config::from_raw(raw, overrides)
    }

    pub fn from_raw(raw: RawConfig, ov: &Overrides) -> Result<Config, ConfigError> {
        let bind = match (ov.bind, &raw.bind) {
            (Some(b), _) => b,
            (None, Some(s)) => s
                .parse()
                .map_err(|_| ConfigError::Invalid(format!("bind: not an ADDR:PORT: {s:?}")))?,
            // invariant: the constant is a valid socket address
            (None, None) => DEFAULT_BIND.parse().expect("default bind address"),
        };
        let (source_password, generated_source) =
            pick_secret(ov.source_password.clone(), raw.auth.source_password)?;
        let (admin_password, generated_admin) =
            pick_secret(ov.admin_password.clone(), raw.auth.admin_password)?;
        let limits = Limits {
            max_clients: raw.limits.max_clients.unwrap_or(50_000),
            max_sources: raw.limits.max_sources.unwrap_or(64),
            source_timeout: secs(raw.limits.source_timeout, 10.0, "source_timeout")?,
            header_timeout: secs(raw.limits.header_timeout, 15.0, "header_timeout")?,
            max_head_bytes: raw.limits.max_head_bytes.unwrap_or(8192).clamp(1024, 65536),
            source_takeover: optional_secs(raw.limits.source_takeover, 2.0, "source_takeover")?,
        };
        let defaults = MountSettings::resolve(&raw.defaults, &MountSettings::default())?;
        defaults.validate("[defaults]")?;
        let mut mounts: Vec<MountConfig> = Vec::new();
        for m in raw.mount {
            validate_mount_name(&m.name).map_err(ConfigError::Invalid)?;
            if mounts.iter().any(|o| o.name == m.name) {
                return Err(ConfigError::Invalid(format!(
                    "mount {} is defined twice",
                    m.name
                )));
            }
            if let Some(f) = &m.fallback {
                validate_mount_name(f)
                    .map_err(|e| ConfigError::Invalid(format!("mount {} fallback: {e}", m.name)))?;
            }
            if let Some(d) = &m.dump_file {
                crate::input::recording::validate_pattern(d)
                    .map_err(|e| ConfigError::Invalid(format!("mount {}: {e}", m.name)))?;
            }
            if let Some(from) = &m.transcode_from {
                validate_mount_name(from).map_err(|e| {
                    ConfigError::Invalid(format!("mount {} transcode_from: {e}", m.name))
                })?;
                if from == &m.name {
                    return Err(ConfigError::Invalid(format!(
                        "mount {}: transcode_from names the mount itself",
                        m.name
                    )));
                }
            }
            let settings = MountSettings::resolve(&m.settings, &defaults).map_err(|e| match e {
                ConfigError::Invalid(msg) => {
                    ConfigError::Invalid(format!("mount {}: {msg}", m.name))
                }
                other => other,
            })?;
            settings.validate(&format!("mount {}", m.name))?;
            let push = m
                .push
                .into_iter()
                .map(PushConfig::from_raw)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::Invalid(format!("mount {} push: {e}", m.name)))?;
            let autodj = match m.autodj {
                Some(raw) => Some(AutoDjConfig::resolve(raw, &m.name)?),
                None => None,
            };
            mounts.push(MountConfig {
                username: m.username.unwrap_or_else(|| "source".into()),
                password: m.password,
                hidden: m.hidden.unwrap_or(false),
                fallback: m.fallback,
                fallback_override: m.fallback_override.unwrap_or(false),
                fallback_when_full: m.fallback_when_full.unwrap_or(false),
                fallback_file: m.fallback_file,
                intro_file: m.intro_file,
                dump_file: m.dump_file.filter(|d| !d.is_empty()),
                stream_name: m.stream_name,
                description: m.description,
                genre: m.genre,
                url: m.url,
                autodj,
                transcode_from: m.transcode_from,
                settings,
                push,
                name: m.name,
            });
        }
        if let Some(dir) = &ov.music {
            music_mount(&mut mounts, dir.clone(), &defaults);
        }
        check_fallback_chains(&mounts)?;
        let shoutcast = ShoutcastConfig {
            enabled: raw.shoutcast.enabled.unwrap_or(true),
            mount: raw.shoutcast.mount.unwrap_or_else(|| "/stream".into()),
            port: raw.shoutcast.port,
        };
        validate_mount_name(&shoutcast.mount)
            .map_err(|e| ConfigError::Invalid(format!("[shoutcast] mount: {e}")))?;
        let tls = match raw.tls {
            None => None,
            Some(t) => Some(TlsConfig {
                bind: match t.bind {
                    Some(b) => b.parse().map_err(|_| {
                        ConfigError::Invalid(format!("[tls] bind: not an ADDR:PORT: {b:?}"))
                    })?,
                    None => SocketAddr::new(bind.ip(), 8443),
                },
                cert: t.cert,
                key: t.key,
            }),
        };
        let mut demo = DemoConfig {
            enabled: raw.demo.enabled.unwrap_or(mounts.is_empty()),
            mount: raw.demo.mount.unwrap_or_else(|| "/stream".into()),
            seed: raw.demo.seed.unwrap_or(1),
        };
        // A mount with an AutoDJ (`--music DIR` on /stream) has its own programme.
        if mounts
            .iter()
            .any(|m| m.name == demo.mount && m.autodj.is_some())
        {
            demo.enabled = false;
        }
        validate_mount_name(&demo.mount)
            .map_err(|e| ConfigError::Invalid(format!("[demo] mount: {e}")))?;
        for (i, b) in raw.bridge.iter().enumerate() {
            b.to_config()
                .map_err(|e| ConfigError::Invalid(format!("bridge {}: {e}", b.trace_id)))?;
            if raw.bridge[..i].iter().any(|o| o.stm_id == b.stm_id) {
                return Err(ConfigError::Invalid(format!(
                    "bridge {}: stm_id {:?} is used by another [[bridge]]",
                    b.trace_id, b.stm_id
                )));
            }
        }
        Ok(Config {
            bridges: raw.bridge,
            bind,
            shoutcast,
            tls,
            hostname: raw.hostname.unwrap_or_else(|| "localhost".into()),
            location: raw.location.unwrap_or_else(|| "Earth".into()),
            admin_email: raw
                .admin_email
                .unwrap_or_else(|| "icemaster@localhost".into()),
            auth: Auth {
                source_password,
                admin_user: ov
                    .admin_user
                    .clone()
                    .or(raw.auth.admin_user)
                    .unwrap_or_else(|| "admin".into()),
                admin_password,
                generated_source,
                generated_admin,
            },
            limits,
            defaults,
            mounts,
            demo,
        })
    }

    pub fn mount(&self, name: &str) -> Option<&MountConfig> {
        self.mounts.iter().find(|m| m.name == name)
    }
}

/// Name of the mount `--music DIR` plays on.
pub const MUSIC_MOUNT: &str = "/stream";

/// `--music DIR` wins over the file: `/stream` gets an AutoDJ on `dir` (a `/stream` from
/// the file keeps its other settings; its own autodj folder is replaced).
fn music_mount(mounts: &mut Vec<MountConfig>, dir: PathBuf, defaults: &MountSettings) {
    if let Some(m) = mounts.iter_mut().find(|m| m.name == MUSIC_MOUNT) {
        let mut dj = m
            .autodj
            .take()
            .unwrap_or_else(|| AutoDjConfig::for_dir(dir.clone()));
        dj.music_dir = dir;
        m.autodj = Some(dj);
        return;
    }
    mounts.push(MountConfig {
        name: MUSIC_MOUNT.into(),
        username: "source".into(),
        password: None,
        hidden: false,
        fallback: None,
        fallback_override: false,
        fallback_when_full: false,
        fallback_file: None,
        intro_file: None,
        dump_file: None,
        stream_name: None,
        description: None,
        genre: None,
        url: None,
        autodj: Some(AutoDjConfig::for_dir(dir)),
        transcode_from: None,
        settings: defaults.clone(),
        push: Vec::new(),
    });
}

/// Fallback chains may be long but must not come back to where they started.
fn check_fallback_chains(mounts: &[MountConfig]) -> Result<(), ConfigError> {
    for m in mounts {
        let mut chain = vec![m.name.as_str()];
        let mut next = m.fallback.as_deref();
        while let Some(n) = next {
            chain.push(n);
            if n == m.name {
                return Err(ConfigError::Invalid(format!(
                    "mount {}: fallback chain loops: {}",
                    m.name,
                    chain.join(" -> ")
                )));
            }
            if chain.len() > crate::mount::registry::MAX_FALLBACK_HOPS {
                return Err(ConfigError::Invalid(format!(
                    "mount {}: fallback chain longer than {} mounts",
                    m.name,
                    crate::mount::registry::MAX_FALLBACK_HOPS
                )));
            }
            next = mounts
                .iter()
                .find(|o| o.name == n)
                .and_then(|o| o.fallback.as_deref());
        }
    }
    Ok(())
}

fn secs(v: Option<f64>, default: f64, key: &str) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if !(0.1..=86_400.0).contains(&v) {
        return Err(ConfigError::Invalid(format!(
            "{key} must be between 0.1 and 86400 seconds, got {v}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Like [`secs`], but 0 means "off".
fn optional_secs(v: Option<f64>, default: f64, key: &str) -> Result<Option<Duration>, ConfigError> {
    match v.unwrap_or(default) {
        0.0 => Ok(None),
        v => secs(Some(v), default, key).map(Some),
    }
}

fn pick_secret(flag: Option<String>, file: Option<String>) -> Result<(String, bool), ConfigError> {
    match flag.or(file) {
        Some(s) if s.is_empty() => Err(ConfigError::Invalid("passwords must not be empty".into())),
        Some(s) => Ok((s, false)),
        None => Ok((generate_secret()?, true)),
    }
}

fn generate_secret() -> Result<String, ConfigError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw)
        .map_err(|e| ConfigError::Invalid(format!("cannot generate a password: {e}")))?;
    Ok(raw
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

/// Paths that can never be mounts because the web app owns them.
const RESERVED_PREFIXES: &[&str] = &[
    "/admin",
    "/admin.cgi",
    "/api",
    "/status-json.xsl",
    "/status.xsl",
];

/// A mount name is an absolute path of safe characters that does not collide with the web
/// app or with playlist URLs (`/x.m3u` is the playlist of `/x`).
pub fn validate_mount_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.~+@!$()*,".contains(&b));
    if !name.starts_with('/') || name.len() < 2 || name.len() > 256 || !ok_chars {
        return Err(format!(
            "mount name {name:?} must start with '/' and use only letters, digits and -_.~+@!$()*,"
        ));
    }
    if name.contains("//") || name.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(format!(
            "mount name {name:?} has an empty or relative path segment"
        ));
    }
    if RESERVED_PREFIXES
        .iter()
        .any(|p| name == *p || name.starts_with(&format!("{p}/")))
    {
        return Err(format!(
            "mount name {name:?} is reserved for the web interface"
        ));
    }
    if onair_proto::playlist::PlaylistKind::split_path(name).is_some() {
        return Err(format!(
            "mount name {name:?} ends like a playlist URL (.m3u/.pls/.xspf)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_a_working_station() {
        let c = Config::from_raw(RawConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
        assert!(c.auth.generated_source && c.auth.generated_admin);
        assert_eq!(c.auth.source_password.len(), 16);
        assert_ne!(c.auth.source_password, c.auth.admin_password);
    }

    #[test]
    fn mounts_inherit_defaults_and_flags_win() {
        let raw: RawConfig = toml::from_str(
            r#"
            bind = "127.0.0.1:9000"
            [auth]
            source_password = "file"
            [defaults]
            metaint = 8192
            [[mount]]
            name = "/live"
            password = "p"
            max_listeners = 5000
            burst_size = 65536
            queue_size = 524288
            fallback = "/autodj"
            fallback_override = true
            "#,
        )
        .unwrap();
        let ov = Overrides {
            source_password: Some("flag".into()),
            ..Default::default()
        };
        let c = Config::from_raw(raw, &ov).unwrap();
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.auth.source_password, "flag");
        let m = c.mount("/live").unwrap();
        assert_eq!(m.settings.metaint, 8192);
        assert_eq!(m.settings.max_listeners, 5000);
        assert_eq!(m.fallback.as_deref(), Some("/autodj"));
    }

    #[test]
    fn bridges_need_an_output_a_valid_mount_and_unique_stream_ids() {
        let load = |text: &str| {
            let raw: RawConfig = toml::from_str(text).unwrap();
            Config::from_raw(raw, &Overrides::default())
        };
        let bridge = |stm: &str, out: &str| {
            format!(
                "[[bridge]]\nwhep = \"http://m/w\"\ntrace_id = \"T\"\nstm_id = \"{stm}\"\n{out}\n"
            )
        };
        let ok = bridge("S1", "mount = \"/live\"") + &bridge("S2", "ws = \"ws://a/b\"");
        let c = load(&ok).unwrap();
        assert_eq!(c.bridges[0].mount.as_deref(), Some("/live"));
        assert_eq!(c.bridges[1].ws.as_deref(), Some("ws://a/b"));
        let err = |text: &str| load(text).unwrap_err().to_string();
        assert!(err(&bridge("S1", "")).contains("ws"), "neither output");
        assert!(err(&bridge("S1", "mount = \"live\"")).contains("mount name"));
        let twice = bridge("S1", "mount = \"/a\"") + &bridge("S1", "mount = \"/b\"");
        assert!(err(&twice).contains("stm_id \"S1\""));
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        assert!(toml::from_str::<RawConfig>("bnd = \"x\"").is_err());
        for name in [
            "live",
            "/",
            "/a b",
            "/admin",
            "/x.m3u",
            "/a/../b",
            "/status-json.xsl",
        ] {
            assert!(validate_mount_name(name).is_err(), "{name}");
        }
        for name in ["/live", "/live.mp3", "/a/b-c_d.ogg"] {
            assert!(validate_mount_name(name).is_ok(), "{name}");
        }
        let raw: RawConfig = toml::from_str("[defaults]\nmetaint = 0").unwrap();
        assert!(Config::from_raw(raw, &Overrides::default()).is_err());
    }

    #[test]
    fn push_entries() {
        let load = |t: &str| Config::from_raw(toml::from_str(t).unwrap(), &Overrides::default());
        let c = load(
            r#"
            [[mount]]
            name = "/live"
            [[mount.push]]
            to = "http://source:pw@relay.example:8010/live"
            stream_name = "Relay"
            public = true
            [[mount.push]]
            to = "http://:pw@old.example:8000/"
            protocol = "shoutcast"
            "#,
        )
        .unwrap();
        let p = &c.mount("/live").unwrap().push;
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].target.port, 8010);
        assert_eq!(p[0].info.name.as_deref(), Some("Relay"));
        assert_eq!(p[0].info.public, Some(true));
        assert_eq!(p[1].protocol, onair_proto::push::Protocol::Shoutcast);
        let bad = "[[mount]]\nname = \"/a\"\n[[mount.push]]\nto = \"http://host/x\"\n";
        assert!(load(bad).unwrap_err().to_string().contains("password"));
        let bad = "[[mount]]\nname = \"/a\"\n[[mount.push]]\nto = \"http://a:b@h/x\"\nprotocol = \"rtmp\"\n";
        assert!(load(bad).is_err());
        let typo = "[[mount]]\nname = \"/a\"\n[[mount.push]]\nto = \"http://a:b@h/x\"\nprotocl = \"icecast\"\n";
        assert!(toml::from_str::<RawConfig>(typo).is_err());
    }

    #[test]
    fn fallback_loops_are_refused() {
        let load = |t: &str| Config::from_raw(toml::from_str(t).unwrap(), &Overrides::default());
        let chain = "[[mount]]\nname = \"/a\"\nfallback = \"/b\"\n[[mount]]\nname = \"/b\"\nfallback = \"/c\"\n";
        assert!(load(chain).is_ok(), "chains are fine");
        let err = load(&format!(
            "{chain}[[mount]]\nname = \"/c\"\nfallback = \"/a\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("/a -> /b -> /c -> /a"), "{err}");
        assert!(load("[[mount]]\nname = \"/a\"\nfallback = \"/a\"\n").is_err());
    }

    #[test]
    fn music_flag_puts_an_autodj_on_stream_and_turns_the_demo_off() {
        let ov = Overrides {
            music: Some("/srv/music".into()),
            ..Default::default()
        };
        let c = Config::from_raw(RawConfig::default(), &ov).unwrap();
        let dj = c
            .mount(MUSIC_MOUNT)
            .and_then(|m| m.autodj.as_ref())
            .unwrap();
        assert_eq!(dj.music_dir, PathBuf::from("/srv/music"));
        assert_eq!(
            (dj.codec.as_str(), dj.bitrate, dj.passthrough),
            ("mp3", 128, false)
        );
        assert!(!c.demo.enabled);
        // Over a file's /stream: its settings stay, the folder is the flag's.
        let raw: RawConfig = toml::from_str(
            "[demo]\nenabled = true\n[[mount]]\nname = \"/stream\"\nmetaint = 4000\n[mount.autodj]\nmusic_dir = \"/a\"\norder = \"sequential\"\n",
        )
        .unwrap();
        let c = Config::from_raw(raw, &ov).unwrap();
        let m = c.mount(MUSIC_MOUNT).unwrap();
        let dj = m.autodj.as_ref().unwrap();
        assert_eq!(m.settings.metaint, 4000);
        assert_eq!(
            (dj.music_dir.to_str(), dj.order),
            (Some("/srv/music"), AutoDjOrder::Sequential)
        );
        assert!(!c.demo.enabled, "an AutoDJ on the demo's mount wins");
    }

    #[test]
    fn autodj_settings_are_checked() {
        let load = |t: &str| Config::from_raw(toml::from_str(t).unwrap(), &Overrides::default());
        let m = "[[mount]]\nname = \"/dj\"\n[mount.autodj]\n";
        assert!(load(&format!("{m}music_dir = \"/m\"\n")).is_ok());
        for bad in [
            "order = \"random\"",
            "codec = \"flac\"",
            "codec = \"opus\"\npassthrough = true",
            "channels = 6",
            "bitrate = 1000",
            "sample_rate = 12345",
            "crossfade = 2.0\npassthrough = true",
            "crossfade = 10.5",
            "crossfade = -1",
        ] {
            assert!(
                load(&format!("{m}music_dir = \"/m\"\n{bad}\n")).is_err(),
                "{bad}"
            );
        }
        assert!(load(m).is_err(), "music_dir is required");
        let c = load(&format!("{m}music_dir = \"/m\"\ncrossfade = 2.5\n")).unwrap();
        assert_eq!(c.mounts[0].autodj.as_ref().unwrap().crossfade, 2.5);
        assert!(
            toml::from_str::<RawConfig>(&format!("{m}music_dir = \"/m\"\nshufle = 1\n")).is_err()
        );
    }
}
