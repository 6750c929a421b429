//! A bridge: one WHEP pull ([`crate::input::whep`]) feeding a WebSocket PCM output
//! ([`crate::output::ws_pcm`]) and/or a mount (through [`crate::input::encoder`]), with the
//! stats every part updates.
//!
//! Shape: WHEP session driver (async task: signaling, retries) → each negotiated session →
//! media worker ([`pool`], shared by all bridges: str0m, socket, decode) → bounded
//! channels → WebSocket task, mount encoder thread. Stopping cancels the driver and its
//! session: the worker closes the peer connection, the driver DELETEs the session and drops
//! its sender; the worker then flushes the stage and drops the bridge's outputs, and the
//! WebSocket task sends what is left and closes. So "stop" and "the WHEP side gave up" end
//! the same way.
//!
//! Invariants: every channel is bounded; every log line of a bridge carries its trace and
//! stream ids (one tracing span); the bridge ends only after its WebSocket task has.

pub mod pool;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::input::encoder::{self, EncoderOptions, PcmSender};
use crate::input::whep::{self, decode, WhepConfig, WhepError};
use crate::output::ws_pcm::{self, WsConfig};
use crate::station::Station;

/// The mount encoder's queue, in decoded packets (≈ 1.3 s of 20 ms packets): the worker
/// never waits for it.
const ENCODER_QUEUE: usize = 64;
/// What a bridge's mount encoder is fed: Opus as sent (48 kHz stereo).
const MOUNT_INPUT: (u32, u16) = (48_000, 2);

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub whep: WhepConfig,
    /// The WebSocket consumer; `None` when the bridge only feeds a mount.
    pub ws: Option<WsConfig>,
    pub trace_id: String,
    pub stm_id: String,
    /// Output format of the WebSocket messages.
    pub format: decode::Format,
    /// Mount to encode the audio into (`/live`); needs a station ([`Registry::start`]).
    pub mount: Option<String>,
}

/// Live counters and states of one bridge; shared by its tasks.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    state: Mutex<String>,
    ice: Mutex<String>,
    ws: Mutex<String>,
    codec: Mutex<String>,
    /// Why the WHEP side last failed (empty once a session connects).
    whep_error: Mutex<String>,
    /// Why the WebSocket last failed or dropped (empty once it connects).
    ws_error: Mutex<String>,
    pub rtp_packets: AtomicU64,
    pub lost_packets: AtomicU64,
    pub dropped_packets: AtomicU64,
    /// Output frames filled by concealment (loss) or silence (between sessions).
    pub concealed_frames: AtomicU64,
    pub whep_retries: AtomicU64,
    pub messages_sent: AtomicU64,
    pub ws_dropped: AtomicU64,
    pub ws_reconnects: AtomicU64,
    /// PCM blocks the mount's encoder had no room for.
    pub mount_dropped: AtomicU64,
    /// Moving average (1/16 per message) of send time minus the wall-clock end of each
    /// message's audio, µs: what the bridge adds on top of the network.
    latency_us: AtomicU64,
    rate: u32,
    frame_bytes: u64,
    pub bytes_produced: AtomicU64,
}

/// A point-in-time copy of [`Stats`], as the API and logs show it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub state: String,
    pub ice: String,
    pub websocket: String,
    /// Codec of the current session: `opus`, `pcmu`, `pcma` (empty before the first packet).
    pub codec: String,
    /// The last WHEP failure (signaling, TLS, ICE/DTLS, media timeout); empty while a
    /// session is connected.
    pub whep_error: String,
    /// The last WebSocket failure (connect, TLS, drop); empty while connected.
    pub ws_error: String,
    pub uptime_s: f64,
    pub seconds_received: f64,
    pub rtp_packets: u64,
    pub lost_packets: u64,
    pub dropped_packets: u64,
    pub concealed_s: f64,
    pub whep_retries: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub ws_reconnects: u64,
    pub mount_dropped: u64,
    pub latency_ms: f64,
}

impl Stats {
    pub fn new(rate: u32, channels: u16) -> Stats {
        let text = |s: &str| Mutex::new(s.to_owned());
        Stats {
            started: Instant::now(),
            state: text("starting"),
            ice: text("new"),
            ws: text("new"),
            codec: text(""),
            whep_error: text(""),
            ws_error: text(""),
            rtp_packets: AtomicU64::new(0),
            lost_packets: AtomicU64::new(0),
            dropped_packets: AtomicU64::new(0),
            concealed_frames: AtomicU64::new(0),
            whep_retries: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            ws_dropped: AtomicU64::new(0),
            ws_reconnects: AtomicU64::new(0),
            mount_dropped: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            rate,
            frame_bytes: 2 * u64::from(channels.max(1)),
            bytes_produced: AtomicU64::new(0),
        }
    }

    /// Returns whether the value changed.
    fn set(slot: &Mutex<String>, value: &str) -> bool {
        // A poisoned lock only means a panic elsewhere; the string is still usable.
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        if *guard == value {
            return false;
        }
        *guard = value.to_owned();
        true
    }

    fn get(slot: &Mutex<String>) -> String {
        slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every change is logged (in the caller's span: the bridge's trace/stream ids).
    pub fn set_state(&self, s: &str) {
        if Self::set(&self.state, s) {
            tracing::info!(state = s, "WHEP state");
        }
    }

    /// The driver logs ICE changes itself, with str0m's state name.
    pub fn set_ice(&self, s: &str) {
        Self::set(&self.ice, s);
    }

    pub fn set_ws(&self, s: &str) {
        if Self::set(&self.ws, s) {
            tracing::debug!(websocket = s, "WebSocket state");
        }
    }

    pub fn set_codec(&self, s: &str) {
        Self::set(&self.codec, s);
    }

    /// `""` clears it.
    pub fn set_whep_error(&self, s: &str) {
        Self::set(&self.whep_error, s);
    }

    /// `""` clears it.
    pub fn set_ws_error(&self, s: &str) {
        Self::set(&self.ws_error, s);
    }

    pub fn record_sent(&self, latency_s: f64) {
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
        let us = (latency_s.max(0.0) * 1e6) as u64;
        // One writer (the WebSocket task): load + store is not a lost update.
        let old = self.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 15 + us) / 16 };
        self.latency_us.store(new, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let bytes = self.bytes_produced.load(Ordering::Relaxed);
        let per_sec = self.frame_bytes as f64 * f64::from(self.rate);
        Snapshot {
            state: Self::get(&self.state),
            ice: Self::get(&self.ice),
            websocket: Self::get(&self.ws),
            codec: Self::get(&self.codec),
            whep_error: Self::get(&self.whep_error),
            ws_error: Self::get(&self.ws_error),
            uptime_s: self.started.elapsed().as_secs_f64(),
            seconds_received: bytes as f64 / per_sec,
            rtp_packets: self.rtp_packets.load(Ordering::Relaxed),
            lost_packets: self.lost_packets.load(Ordering::Relaxed),
            dropped_packets: self.dropped_packets.load(Ordering::Relaxed),
            concealed_s: self.concealed_frames.load(Ordering::Relaxed) as f64
                / f64::from(self.rate),
            whep_retries: self.whep_retries.load(Ordering::Relaxed),
            messages_sent: self.messages_sent.load(Ordering::Relaxed),
            messages_dropped: self.ws_dropped.load(Ordering::Relaxed),
            ws_reconnects: self.ws_reconnects.load(Ordering::Relaxed),
            mount_dropped: self.mount_dropped.load(Ordering::Relaxed),
            latency_ms: self.latency_us.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Whep(#[from] WhepError),
    #[error(transparent)]
    Ws(#[from] ws_pcm::WsError),
    #[error(transparent)]
    Pool(#[from] pool::PoolError),
    #[error("bridge task failed: {0}")]
    Task(String),
}

/// A started bridge.
pub struct Bridge {
    pub stats: Arc<Stats>,
    cancel: CancellationToken,
    done: tokio::task::JoinHandle<Result<(), BridgeError>>,
}

impl Bridge {
    /// Start pulling and sending (no mount: that needs a station, see [`Registry::start`]).
    pub fn start(config: BridgeConfig) -> Result<Bridge, BridgeError> {
        Bridge::start_under(config, &CancellationToken::new(), None)
    }

    /// [`Self::start`], also stopped when `parent` is cancelled (server shutdown), and
    /// feeding `encoder` (the mount's) when given.
    pub fn start_under(
        config: BridgeConfig,
        parent: &CancellationToken,
        encoder: Option<PcmSender>,
    ) -> Result<Bridge, BridgeError> {
        if let Some(ws) = &config.ws {
            ws.validate()?;
        }
        let stats = Arc::new(Stats::new(config.format.rate, config.format.channels));
        let cancel = parent.child_token();
        let span = tracing::info_span!(
            "bridge",
            trace_id = %config.trace_id,
            stm_id = %config.stm_id
        );
        let (link_tx, links) = mpsc::sync_channel(1);
        let mut stage = decode::Stage::new(config.format, stats.clone());
        if encoder.is_some() {
            stage = stage.with_tap(config.ws.is_some());
        }
        let mut ws_task = None;
        let ws = config.ws.clone().map(|ws| {
            let (tx, rx) = tokio::sync::mpsc::channel(ws.chunk_queue());
            let chunker = ws_pcm::Chunker::new(ws.rate, ws.channels, ws.chunk_ms);
            ws_task = Some(tokio::spawn(
                ws_pcm::run(ws, rx, stats.clone()).instrument(span.clone()),
            ));
            pool::WsSink { chunker, tx }
        });
        pool::Pool::global().add(pool::Member {
            stage,
            links,
            ws,
            encoder,
            stats: stats.clone(),
            span: span.clone(),
            stop: cancel.clone(),
        })?;
        let whep_task = tokio::spawn(
            whep::run(config.whep.clone(), link_tx, stats.clone(), cancel.clone())
                .instrument(span.clone()),
        );
        let done = tokio::spawn(
            async move {
                tracing::info!("bridge started");
                let whep_result = whep_task.await;
                // The WebSocket task ends once the decode worker has flushed into it.
                if let Some(task) = ws_task {
                    let _ = task.await;
                }
                let result = match whep_result {
                    Ok(r) => r.map_err(BridgeError::from),
                    Err(e) => Err(BridgeError::Task(e.to_string())),
                };
                tracing::info!(ok = result.is_ok(), "bridge ended");
                result
            }
            .instrument(span),
        );
        Ok(Bridge {
            stats,
            cancel,
            done,
        })
    }

    /// Ask the bridge to stop: DELETE the WHEP session, send the remaining audio, close.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    pub fn is_finished(&self) -> bool {
        self.done.is_finished()
    }

    /// Wait for the bridge to end (after [`Self::stop`] or on its own).
    pub async fn wait(self) -> Result<(), BridgeError> {
        match self.done.await {
            Ok(r) => r,
            Err(e) => Err(BridgeError::Task(e.to_string())),
        }
    }

    /// Stop and wait at most `grace` (plus the WebSocket drain bound).
    pub async fn shutdown(self, grace: Duration) -> Result<(), BridgeError> {
        self.stop();
        match tokio::time::timeout(grace + ws_pcm::DRAIN_TIMEOUT, self.wait()).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

/// A bridge as the API (JSON) and the config file (`[[bridge]]`) describe it: `whep`,
/// `trace_id`, `stm_id` and at least one of `ws` and `mount`; the rest optional, with the
/// CLI's defaults. JSON also accepts camelCase and the `whep_url` / `ws_url` spellings.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    #[serde(alias = "whep_url", alias = "whepUrl")]
    pub whep: String,
    #[serde(default, alias = "ws_url", alias = "wsUrl")]
    pub ws: Option<String>,
    #[serde(alias = "traceId")]
    pub trace_id: String,
    #[serde(alias = "stmId")]
    pub stm_id: String,
    #[serde(default, skip_serializing)]
    pub bearer: Option<String>,
    #[serde(default)]
    pub rate: Option<u32>,
    #[serde(default)]
    pub channels: Option<u16>,
    #[serde(default, alias = "chunkMs")]
    pub chunk_ms: Option<u32>,
    /// `pcm` or `wav`.
    #[serde(default)]
    pub payload: Option<String>,
    /// `Name:value` strings.
    #[serde(default, alias = "wsHeaders")]
    pub ws_headers: Vec<String>,
    #[serde(default, alias = "iceServers")]
    pub ice_servers: Vec<String>,
    /// Any of `seq,sampleRate,channels`.
    #[serde(default, alias = "messageFields")]
    pub message_fields: Option<String>,
    #[serde(default, alias = "bufferSecs")]
    pub buffer_secs: Option<u64>,
    /// Also encode the audio into this mount (`/live`), with its `[mount.encoding]`.
    #[serde(default)]
    pub mount: Option<String>,
    /// PEM file of extra trusted roots for `https://` / `wss://` (private CA, self-signed).
    #[serde(default, alias = "caFile")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl BridgeSpec {
    /// Validate and fill in defaults.
    pub fn to_config(&self) -> Result<BridgeConfig, String> {
        use crate::input::whep::signal::Endpoint;
        use crate::output::ws_pcm::{Fields, Payload};
        let rate = self.rate.unwrap_or(16_000);
        if ![8_000, 16_000, 24_000, 48_000].contains(&rate) {
            return Err(format!("rate {rate}: must be 8000, 16000, 24000 or 48000"));
        }
        let channels = self.channels.unwrap_or(1);
        if !(1..=2).contains(&channels) {
            return Err(format!("channels {channels}: must be 1 or 2"));
        }
        let chunk_ms = self.chunk_ms.unwrap_or(100);
        if !(10..=10_000).contains(&chunk_ms) {
            return Err(format!("chunk_ms {chunk_ms}: must be 10..=10000"));
        }
        let payload = match self.payload.as_deref().unwrap_or("pcm") {
            "pcm" => Payload::Pcm,
            "wav" => Payload::Wav,
            other => return Err(format!("payload {other:?}: must be pcm or wav")),
        };
        let headers = self
            .ws_headers
            .iter()
            .map(|h| {
                h.split_once(':')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| format!("ws header {h:?} is not Name:value"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for url in &self.ice_servers {
            whep::stun::parse_url(url).map_err(|e| e.to_string())?;
        }
        let fields = Fields::parse(self.message_fields.as_deref().unwrap_or(""))?;
        // One TLS client config for both sides and all connections of this bridge.
        let tls = crate::client_tls::ClientTls::new(self.ca_file.as_deref())
            .map_err(|e| e.to_string())?;
        let endpoint = Endpoint::parse(&self.whep, self.bearer.clone(), tls.clone())
            .map_err(|e| e.to_string())?;
        if self.ws.is_none() && self.mount.is_none() {
            return Err("a bridge needs a WebSocket (ws) or a mount (mount), or both".into());
        }
        if let Some(m) = &self.mount {
            crate::config::validate_mount_name(m)?;
        }
        if self.trace_id.is_empty() || self.stm_id.is_empty() {
            return Err("trace_id and stm_id must not be empty".into());
        }
        let ws = self.ws.as_ref().map(|url| WsConfig {
            url: url.clone(),
            headers,
            trace_id: self.trace_id.clone(),
            stm_id: self.stm_id.clone(),
            rate,
            channels,
            chunk_ms,
            payload,
            fields,
            buffer: Duration::from_secs(self.buffer_secs.unwrap_or(30)),
            tls: tls.clone(),
        });
        if let Some(ws) = &ws {
            ws.validate().map_err(|e| e.to_string())?;
        }
        Ok(BridgeConfig {
            whep: WhepConfig {
                endpoint,
                ice_servers: self.ice_servers.clone(),
            },
            ws,
            trace_id: self.trace_id.clone(),
            stm_id: self.stm_id.clone(),
            format: decode::Format { rate, channels },
            mount: self.mount.clone(),
        })
    }
}

/// Most bridges one server runs at once.
pub const MAX_BRIDGES: usize = 100;

/// What the API shows of a bridge.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub id: String,
    pub spec: BridgeSpec,
    /// `None` while running; why it ended otherwise.
    pub ended: Option<String>,
    pub stats: Snapshot,
}

struct Entry {
    id: String,
    spec: BridgeSpec,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    ended: tokio::sync::watch::Receiver<Option<String>>,
}

impl Entry {
    fn info(&self) -> Info {
        Info {
            id: self.id.clone(),
            spec: self.spec.clone(),
            ended: self.ended.borrow().clone(),
            stats: self.stats.snapshot(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid bridge: {0}")]
    Invalid(String),
    #[error("too many bridges (at most {MAX_BRIDGES})")]
    Full,
    #[error("a bridge with stm_id {0:?} is already running")]
    Duplicate(String),
    #[error("cannot feed mount {mount}: {why}")]
    Mount { mount: String, why: String },
    #[error(transparent)]
    Start(#[from] BridgeError),
}

/// The server's running bridges (API and `[[bridge]]`), each a supervised task.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<Vec<Entry>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Claim `name` on `station` for a bridge and start its encoder (the mount's
/// `[mount.encoding]`, fed 48 kHz stereo; silence while the WHEP side is away).
fn start_encoder(
    station: &Station,
    name: &str,
    config: &BridgeConfig,
) -> Result<PcmSender, RegistryError> {
    let refused = |why: String| RegistryError::Mount {
        mount: name.to_owned(),
        why,
    };
    let station_config = station.config();
    let encoding = station_config
        .mount(name)
        .map_or(&station_config.defaults.encoding, |m| &m.settings.encoding);
    let settings = encoding.for_input(MOUNT_INPUT.0, MOUNT_INPUT.1);
    onair_media::encode::new_encoder(&settings).map_err(|e| refused(e.to_string()))?;
    let mut opts = EncoderOptions::new(
        settings,
        format!("onair WHEP bridge {}/{}", config.trace_id, config.stm_id),
    );
    opts.silence_fill = true;
    opts.queue = ENCODER_QUEUE;
    let (mount, claim) = station
        .attach_source(name, opts.source_info())
        .map_err(|e| refused(e.to_string()))?;
    let token = station.supervisor.token().clone();
    let (tx, task) =
        encoder::spawn(mount, claim, opts, token).map_err(|e| refused(e.to_string()))?;
    let label = name.to_owned();
    station
        .supervisor
        .spawn_service("bridge encoder", async move {
            match task.finished().await {
                Ok(stop) => {
                    tracing::info!(mount = %label, "bridge encoder ended: {}", stop.describe())
                }
                Err(e) => tracing::warn!(mount = %label, error = %e, "bridge encoder failed"),
            }
            Ok::<(), std::convert::Infallible>(())
        });
    Ok(tx)
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a bridge under `station`'s supervisor (so server shutdown stops it), feeding
    /// its mount if the spec names one.
    pub fn start(&self, spec: BridgeSpec, station: &Station) -> Result<Info, RegistryError> {
        let config = spec.to_config().map_err(RegistryError::Invalid)?;
        let mut entries = self.lock();
        let running = entries
            .iter()
            .filter(|e| e.ended.borrow().is_none())
            .count();
        if running >= MAX_BRIDGES {
            return Err(RegistryError::Full);
        }
        // Ended bridges stay listed (with why they ended) until DELETEd, the oldest going
        // first once as many as the running limit have piled up.
        while entries.len() - running >= MAX_BRIDGES {
            match entries.iter().position(|e| e.ended.borrow().is_some()) {
                Some(at) => drop(entries.remove(at)),
                None => break,
            }
        }
        if entries
            .iter()
            .any(|e| e.spec.stm_id == spec.stm_id && e.ended.borrow().is_none())
        {
            return Err(RegistryError::Duplicate(spec.stm_id));
        }
        let encoder = match &config.mount {
            Some(name) => Some(start_encoder(station, name, &config)?),
            None => None,
        };
        let supervisor = &station.supervisor;
        let bridge = Bridge::start_under(config, supervisor.token(), encoder)?;
        let id = format!("b{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let (ended_tx, ended) = tokio::sync::watch::channel(None);
        let entry = Entry {
            id,
            spec,
            stats: bridge.stats.clone(),
            cancel: bridge.cancel.clone(),
            ended,
        };
        supervisor.spawn_service("bridge", async move {
            let result = bridge.wait().await;
            let why = match &result {
                Ok(()) => "stopped".to_owned(),
                Err(e) => e.to_string(),
            };
            let _ = ended_tx.send(Some(why));
            result
        });
        let info = entry.info();
        entries.push(entry);
        Ok(info)
    }

    pub fn list(&self) -> Vec<Info> {
        self.lock().iter().map(Entry::info).collect()
    }

    /// By id (`b1`) or by stm_id (the latest bridge with it).
    fn find<'a>(entries: &'a [Entry], key: &str) -> Option<&'a Entry> {
        entries
            .iter()
            .find(|e| e.id == key)
            .or_else(|| entries.iter().rev().find(|e| e.spec.stm_id == key))
    }

    /// A bridge by id or stm_id.
    pub fn get(&self, key: &str) -> Option<Info> {
        Self::find(&self.lock(), key).map(Entry::info)
    }

    /// Stop a bridge (by id or stm_id: WHEP DELETE, drain, close), wait for it (bounded)
    /// and forget it.
    pub async fn stop(&self, key: &str) -> Option<Info> {
        let (id, cancel, mut ended) = {
            let entries = self.lock();
            let e = Self::find(&entries, key)?;
            (e.id.clone(), e.cancel.clone(), e.ended.clone())
        };
        cancel.cancel();
        let bound = Duration::from_secs(5) + ws_pcm::DRAIN_TIMEOUT;
        let _ = tokio::time::timeout(bound, ended.wait_for(|e| e.is_some())).await;
        let mut entries = self.lock();
        let at = entries.iter().position(|e| e.id == id)?;
        Some(entries.remove(at).info())
    }
}
