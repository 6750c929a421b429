//! The AutoDJ: a music folder on air. A [`library::Library`] scanned in the background and
//! rescanned every `rescan` interval feeds a [`rotation::Rotation`] (shuffle or sequential,
//! song requests first), which feeds a [`Playout`] into the mount. The operator API
//! (web/autodj.rs) skips, queues requests, and reads the history and the upcoming list.
//!
//! Invariants:
//! - The AutoDJ holds its mount as its source for the server's lifetime.
//! - Scans and file writes (`upcoming_file`) run on blocking threads, never the executor.
//! - History keeps the last [`HISTORY`] tracks; the upcoming list is the next [`UPCOMING`]
//!   (the track already being prepared first, then what the rotation will pick).
//! - Settings are read at start; a configuration reload does not restart the AutoDJ.

pub mod library;
pub mod naming;
pub mod rotation;

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock, RwLock},
    time::{Duration, SystemTime},
};

use onair_proto::icecast::StreamInfoHeaders;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use onair_media::encode::{Codec, EncoderSettings};

use crate::{
    config::{AutoDjConfig, AutoDjOrder},
    input::{
        encoder::{self, EncoderOptions},
        playout::{self, MountSink, Playout, PlayoutStatus, Target, Track, Tracks},
    },
    mount::Mount,
    station::Station,
};
use library::{Library, LibraryTrack};
use rotation::{Entry, Rng, Rotation};

/// Tracks kept in the history.
pub const HISTORY: usize = 20;
/// Tracks in the upcoming list.
pub const UPCOMING: usize = 10;
/// How often the producer looks again when the library is still empty.
const EMPTY_LIBRARY_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Error)]
pub enum AutoDjError {
    #[error("mount {mount}: {message}")]
    Start { mount: String, message: String },
}

/// A track that went on air.
#[derive(Debug, Clone, Serialize)]
pub struct Played {
    pub id: u64,
    pub title: String,
    pub path: PathBuf,
    /// Unix seconds.
    pub started: i64,
}

/// Every AutoDJ of the station, by mount name.
#[derive(Debug, Default)]
pub struct AutoDjs(RwLock<HashMap<String, Arc<AutoDj>>>);

impl AutoDjs {
    pub fn get(&self, mount: &str) -> Option<Arc<AutoDj>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(mount)
            .cloned()
    }

    fn insert(&self, dj: Arc<AutoDj>) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dj.mount.clone(), dj);
    }
}

#[derive(Debug)]
pub struct AutoDj {
    pub mount: String,
    pub config: AutoDjConfig,
    pub library: Arc<Library>,
    rotation: Mutex<Rotation>,
    history: Mutex<VecDeque<Played>>,
    /// Picked by the producer, not yet on air.
    prepared: Mutex<Option<Track>>,
    playout: OnceLock<Playout>,
    /// Something the upcoming list shows changed.
    changed: Notify,
    /// Ask for a rescan now.
    rescan_now: Notify,
}

impl AutoDj {
    fn new(mount: String, config: AutoDjConfig, rng: Rng) -> AutoDj {
        let order = match config.order {
            AutoDjOrder::Shuffle => rotation::Order::Shuffle,
            AutoDjOrder::Sequential => rotation::Order::Sequential,
        };
        AutoDj {
            mount,
            library: Arc::new(Library::new(config.music_dir.clone())),
            config,
            rotation: Mutex::new(Rotation::new(order, rng)),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            prepared: Mutex::new(None),
            playout: OnceLock::new(),
            changed: Notify::new(),
            rescan_now: Notify::new(),
        }
    }

    fn rotation(&self) -> std::sync::MutexGuard<'_, Rotation> {
        // Plain data: a panic elsewhere leaves it usable.
        self.rotation.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts the current track; the next one starts at the next frame.
    pub fn skip(&self) -> bool {
        match self.playout.get() {
            Some(p) => {
                p.skip();
                true
            }
            None => false,
        }
    }

    /// Queues a library track to play next (after earlier requests).
    pub fn request(&self, track: &LibraryTrack) -> bool {
        let ok = self.rotation().request(track.id);
        if ok {
            tracing::info!(mount = %self.mount, title = %track.display, "request queued");
            self.changed.notify_one();
        }
        ok
    }

    /// Asks the scanner to look at the folder now.
    pub fn rescan(&self) {
        self.rescan_now.notify_one();
    }

    pub fn history(&self) -> Vec<Played> {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.iter().rev().cloned().collect()
    }

    /// The next tracks, in play order.
    pub fn upcoming(&self) -> Vec<LibraryTrack> {
        let snapshot = self.library.snapshot();
        let by_id = |id: u64| snapshot.iter().find(|t| t.id == id).cloned();
        let prepared = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out: Vec<LibraryTrack> = prepared.and_then(|t| by_id(t.id)).into_iter().collect();
        let ids = self.rotation().upcoming(UPCOMING - out.len());
        out.extend(ids.into_iter().filter_map(by_id));
        out
    }

    pub fn playout_status(&self) -> PlayoutStatus {
        self.playout.get().map(Playout::status).unwrap_or_default()
    }

    /// Syncs the rotation with the library after a scan.
    fn sync_rotation(&self) {
        let entries: Vec<Entry> = self
            .library
            .snapshot()
            .iter()
            .map(|t| Entry {
                id: t.id,
                artist: naming::artist_key(t.artist.as_deref()),
                key: t.path.to_string_lossy().into_owned(),
            })
            .collect();
        self.rotation().sync(&entries);
        self.changed.notify_one();
    }

    fn on_air(&self, track: &Track) {
        {
            let mut p = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
            if p.as_ref().is_some_and(|t| t.id == track.id) {
                *p = None;
            }
        }
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(Played {
            id: track.id,
            title: track.title.clone(),
            path: track.path.clone(),
            started: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        });
        drop(h);
        self.changed.notify_one();
    }
}

/// The rotation as a playout's track source.
struct RotationTracks {
    dj: Arc<AutoDj>,
    token: CancellationToken,
}

impl Tracks for RotationTracks {
    fn next_track(&mut self) -> Option<Track> {
        loop {
            if self.token.is_cancelled() {
                return None;
            }
            let next = self.dj.rotation().pick();
            if let Some(t) = next.and_then(|id| self.dj.library.get(id)) {
                let track = Track {
                    id: t.id,
                    path: t.path,
                    title: t.display,
                    replaygain_db: t.replaygain_db,
                };
                *self.dj.prepared.lock().unwrap_or_else(|p| p.into_inner()) = Some(track.clone());
                self.dj.changed.notify_one();
                return Some(track);
            }
            std::thread::sleep(EMPTY_LIBRARY_POLL);
        }
    }
}

/// The output format of an AutoDJ mount.
pub fn target(c: &AutoDjConfig) -> Target {
    Target {
        codec: if c.codec == "opus" { "opus" } else { "mp3" },
        sample_rate: c.sample_rate,
        channels: c.channels,
        bitrate_kbps: c.bitrate,
    }
}

/// Starts the AutoDJ of every mount that has one.
pub fn start_all(station: &Arc<Station>) -> Result<(), AutoDjError> {
    let config = station.config();
    for m in &config.mounts {
        let Some(dj_config) = &m.autodj else { continue };
        let err = |message: String| AutoDjError::Start {
            mount: m.name.clone(),
            message,
        };
        let mount = station
            .mounts
            .get(&m.name)
            .ok_or_else(|| err("the mount does not exist".into()))?;
        let dj = Arc::new(AutoDj::new(
            m.name.clone(),
            dj_config.clone(),
            Rng::from_entropy(),
        ));
        start(station, dj, mount).map_err(err)?;
    }
    Ok(())
}

fn start(station: &Arc<Station>, dj: Arc<AutoDj>, mount: Arc<Mount>) -> Result<(), String> {
    let c = &dj.config;
    let token = station.supervisor.token().clone();
    let on_air_dj = dj.clone();
    let mut settings = playout::Settings::new(dj.mount.clone());
    settings.on_air = Some(Arc::new(move |t: &Track| on_air_dj.on_air(t)));
    let tracks = RotationTracks {
        dj: dj.clone(),
        token: token.clone(),
    };
    let agent = format!("onair AutoDJ ({})", c.music_dir.display());
    let headers = StreamInfoHeaders {
        bitrate: Some(c.bitrate.to_string()),
        ..Default::default()
    };
    let name = dj.mount.clone();
    if c.passthrough {
        let sink =
            MountSink::attach(mount, "audio/mpeg", agent, headers).map_err(|e| e.to_string())?;
        let (handle, task) = Playout::start(settings, target(c), tracks, sink, token.clone());
        let _ = dj.playout.set(handle);
        station.supervisor.spawn_service("autodj", async move {
            let end = task.await.map_err(|e| format!("{name}: {e}"))?;
            tracing::info!(mount = %name, ?end, "autodj stopped");
            Ok::<(), String>(())
        });
    } else {
        let codec = if c.codec == "opus" {
            Codec::Opus
        } else {
            Codec::Mp3
        };
        let mut opts = EncoderOptions::new(
            EncoderSettings {
                codec,
                bitrate_kbps: c.bitrate,
                vbr: false,
                rate: c.sample_rate,
                channels: u16::from(c.channels),
            },
            agent,
        );
        opts.headers = headers;
        let (tx, encoder_task) =
            encoder::start(mount, opts, token.clone()).map_err(|e| e.to_string())?;
        let normalize = playout::Normalize {
            enabled: c.normalize,
            ..Default::default()
        };
        settings.crossfade = Duration::from_secs_f64(c.crossfade);
        let (handle, task) =
            Playout::start_encoding(settings, normalize, tracks, tx, token.clone());
        let _ = dj.playout.set(handle);
        station.supervisor.spawn_service("autodj", async move {
            let end = task.await.map_err(|e| format!("{name}: {e}"))?;
            let stop = encoder_task
                .finished()
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            tracing::info!(mount = %name, ?end, encoder = stop.describe(), "autodj stopped");
            Ok::<(), String>(())
        });
    }
    station.autodj.insert(dj.clone());
    station
        .supervisor
        .spawn_service("autodj-library", run_library(dj, token));
    Ok(())
}

/// Scans the folder now and every `rescan` interval, keeps the rotation in step, and
/// writes `upcoming_file` when the upcoming list changes.
async fn run_library(dj: Arc<AutoDj>, token: CancellationToken) -> Result<(), String> {
    let mut next_scan = tokio::time::Instant::now();
    let mut written: Option<String> = None;
    loop {
        if tokio::time::Instant::now() >= next_scan {
            let lib = dj.library.clone();
            let scan = tokio::task::spawn_blocking(move || lib.rescan());
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                r = scan => if let Err(e) = r {
                    tracing::error!(mount = %dj.mount, "library scan failed: {e}");
                },
            }
            dj.sync_rotation();
            next_scan = tokio::time::Instant::now() + dj.config.rescan;
        }
        if let Some(path) = dj.config.upcoming_file.clone() {
            let text = upcoming_text(&dj);
            if written.as_deref() != Some(text.as_str()) {
                let t = text.clone();
                let w = tokio::task::spawn_blocking(move || write_atomically(&path, &t)).await;
                match w {
                    Ok(Ok(())) => written = Some(text),
                    Ok(Err(e)) => {
                        tracing::warn!(mount = %dj.mount, "cannot write upcoming_file: {e}")
                    }
                    Err(e) => tracing::warn!(mount = %dj.mount, "cannot write upcoming_file: {e}"),
                }
            }
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(next_scan) => {}
            _ = dj.rescan_now.notified() => next_scan = tokio::time::Instant::now(),
            _ = dj.changed.notified() => {}
        }
    }
}

/// One "Artist - Title" per line, next first.
fn upcoming_text(dj: &AutoDj) -> String {
    dj.upcoming()
        .iter()
        .map(|t| format!("{}\n", t.display))
        .collect()
}

fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
