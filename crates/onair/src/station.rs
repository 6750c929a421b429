//! The running station: shared state every connection handler sees (config, mounts,
//! limits, counters) and [`start`], which binds the listen socket and spawns the front.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant, SystemTime},
};

use thiserror::Error;
use tokio::net::TcpListener;

use crate::{
    config::Config,
    front,
    input::file::AudioFile,
    mount::{
        registry::{AttachError, Registry},
        Compat, Mount, SourceClaim, SourceInfo,
    },
    supervisor::Supervisor,
    tls::Tls,
};

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("mount {mount}: {source}")]
    File {
        mount: String,
        source: crate::input::file::FileError,
    },
    #[error("{0}")]
    Format(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    AutoDj(crate::input::autodj::AutoDjError),
}

/// Connections counted against `max_clients`: a counter rather than a semaphore, so that a
/// reload can change the limit (connections above a lowered limit stay until they close).
#[derive(Debug, Default)]
pub struct ClientSlots {
    in_use: AtomicUsize,
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
pub struct ClientSlot(Arc<ClientSlots>);

impl ClientSlots {
    pub fn try_acquire(self: &Arc<Self>, max: usize) -> Option<ClientSlot> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ClientSlot(self.clone()))
    }

    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub source_connections: AtomicU64,
    pub listener_connections: AtomicU64,
    /// Last listener id handed out (ids are unique for the server's lifetime).
    pub listener_ids: AtomicU64,
}

#[derive(Debug)]
pub struct Station {
    /// Swapped whole by a reload (SIGHUP); readers take a snapshot with [`Station::config`].
    config: RwLock<Arc<Config>>,
    pub mounts: Registry,
    pub supervisor: Supervisor,
    pub client_slots: Arc<ClientSlots>,
    pub counters: Counters,
    pub started_at: SystemTime,
    pub started: Instant,
    pub local_addr: SocketAddr,
    /// Where SHOUTcast v1 sources connect, if that port could be opened.
    pub shoutcast_addr: Option<SocketAddr>,
    /// The certificate of the TLS listen socket, if `[tls]` is configured.
    pub tls: Option<Tls>,
    pub tls_addr: Option<SocketAddr>,
    /// The AutoDJs, by mount.
    pub autodj: crate::input::autodj::AutoDjs,
    /// The `[[mount.push]]` relays, by mount.
    pub pushes: crate::output::push::Pushes,
    /// WHEP → WebSocket bridges (`[[bridge]]` and `/api/bridges`).
    pub bridges: crate::bridge::Registry,
}

impl Station {
    /// Applies a reloaded configuration without dropping listeners or sources: passwords,
    /// limits, mount settings, fallbacks, added and removed mounts. Secrets that were
    /// generated at start stay as they were. Returns notes on what needs a restart.
    pub fn reload(&self, mut new: Config) -> Vec<String> {
        let old = self.config();
        let mut notes = Vec::new();
        if new.auth.generated_source {
            new.auth.source_password = old.auth.source_password.clone();
        }
        if new.auth.generated_admin {
            new.auth.admin_password = old.auth.admin_password.clone();
        }
        if new.bind != old.bind {
            notes.push(format!(
                "bind {} -> {}: needs a restart",
                old.bind, new.bind
            ));
        }
        if new.shoutcast.port != old.shoutcast.port
            || new.shoutcast.enabled != old.shoutcast.enabled
        {
            notes.push("[shoutcast] port/enabled: needs a restart".into());
        }
        for m in &new.mounts {
            let files_changed = match old.mount(&m.name) {
                Some(o) => o.fallback_file != m.fallback_file || o.intro_file != m.intro_file,
                None => m.fallback_file.is_some() || m.intro_file.is_some(),
            };
            if files_changed {
                notes.push(format!(
                    "mount {}: fallback_file/intro_file changes need a restart",
                    m.name
                ));
            }
        }
        for name in old.mounts.iter().chain(&new.mounts).map(|m| &m.name) {
            let pushes = |c: &Config| c.mount(name).map(|m| m.push.clone()).unwrap_or_default();
            let note = format!("mount {name}: [[mount.push]] changes need a restart");
            if pushes(&old) != pushes(&new) && !notes.contains(&note) {
                notes.push(note);
            }
        }
        match (&self.tls, &new.tls) {
            (Some(tls), Some(t)) => {
                if old.tls.as_ref().map(|o| o.bind) != Some(t.bind) {
                    notes.push("[tls] bind: needs a restart".into());
                }
                match tls.reload(&t.cert, &t.key) {
                    Ok(()) => tracing::info!(cert = %t.cert.display(), "TLS certificate reloaded"),
                    Err(e) => notes.push(format!("{e}; the previous certificate stays in use")),
                }
            }
            (None, None) => {}
            _ => notes.push("[tls] added or removed: needs a restart".into()),
        }
        self.mounts.reconfigure(&new);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        notes
    }

    /// The configuration in force now (a reload swaps it; a snapshot stays consistent).
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Claims `mount` for a network source under the current `max_sources` and
    /// `source_takeover` limits.
    pub fn attach_source(
        &self,
        mount: &str,
        info: SourceInfo,
    ) -> Result<(Arc<Mount>, SourceClaim), AttachError> {
        let limits = &self.config().limits;
        self.mounts
            .attach_source(mount, info, limits.max_sources, limits.source_takeover)
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn next_listener_id(&self) -> u64 {
        self.counters.listener_ids.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A started station: where it listens, and how to stop it.
#[derive(Debug, Clone)]
pub struct Running {
    pub station: Arc<Station>,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.station.local_addr
    }

    pub fn shoutcast_addr(&self) -> Option<SocketAddr> {
        self.station.shoutcast_addr
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.station.tls_addr
    }

    /// Stops accepting, closes sources and listeners, waits up to `grace`.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.station.supervisor.shutdown(grace).await
    }
}

/// Binds `config.bind` and starts serving in the background.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let addr = config.bind;
    let listener = bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let shoutcast = bind_shoutcast(&config, local_addr);
    let shoutcast_addr = shoutcast.as_ref().and_then(|l| l.local_addr().ok());
    let (tls, tls_listener) = match &config.tls {
        None => (None, None),
        Some(t) => {
            let tls = Tls::load(&t.cert, &t.key)?;
            let l = bind(t.bind).map_err(|source| StartError::Bind {
                addr: t.bind,
                source,
            })?;
            (Some(tls), Some(l))
        }
    };
    let tls_addr = tls_listener.as_ref().and_then(|l| l.local_addr().ok());
    let station = Arc::new(Station {
        mounts: Registry::new(&config),
        supervisor: Supervisor::default(),
        client_slots: Arc::default(),
        counters: Counters::default(),
        started_at: SystemTime::now(),
        started: Instant::now(),
        local_addr,
        shoutcast_addr,
        tls,
        tls_addr,
        autodj: Default::default(),
        pushes: Default::default(),
        bridges: crate::bridge::Registry::default(),
        config: RwLock::new(Arc::new(config)),
    });
    start_files(&station).await?;
    crate::input::autodj::start_all(&station).map_err(StartError::AutoDj)?;
    start_encoded(&station);
    crate::output::push::start_configured(&station);
    if let Some(sc) = shoutcast {
        station.supervisor.spawn_service(
            "shoutcast",
            crate::input::shoutcast::run(sc, station.clone()),
        );
    }
    for spec in &station.config().bridges {
        if let Err(e) = station.bridges.start(spec.clone(), &station) {
            tracing::error!(trace_id = %spec.trace_id, error = %e, "configured bridge not started");
        }
    }
    station
        .supervisor
        .spawn_service("front", front::run(listener, station.clone(), false));
    if let Some(l) = tls_listener {
        station
            .supervisor
            .spawn_service("front-tls", front::run(l, station.clone(), true));
    }
    Ok(Running { station })
}

/// Loads every mount's fallback and intro files, checks that the formats a listener could
/// move between agree, and starts the fallback file players.
async fn start_files(station: &Arc<Station>) -> Result<(), StartError> {
    let mut known: Vec<(String, Compat, String)> = Vec::new();
    for m in &station.config().mounts {
        let mount = station.mounts.get(&m.name);
        for (path, is_intro) in [(&m.fallback_file, false), (&m.intro_file, true)] {
            let Some(path) = path.clone() else { continue };
            let file = tokio::task::spawn_blocking(move || AudioFile::load(&path))
                .await
                .map_err(|e| StartError::Format(format!("mount {}: {e}", m.name)))?
                .map_err(|source| StartError::File {
                    mount: m.name.clone(),
                    source,
                })?;
            let what = format!(
                "{} file {}",
                if is_intro { "intro" } else { "fallback" },
                file.path.display()
            );
            if let Some((_, other, other_what)) = known.iter().find(|(n, _, _)| n == &m.name) {
                check_compat(&m.name, other, other_what, &file.compat(), &what)?;
            }
            known.push((m.name.clone(), file.compat(), what));
            let (Some(mount), file) = (mount.clone(), Arc::new(file)) else {
                continue;
            };
            if is_intro {
                let _ = mount.intro.set(file);
                continue;
            }
            let player = Arc::new(Mount::for_fallback_file(&mount));
            let claim = crate::input::file::claim(&file, &player).map_err(StartError::Format)?;
            let _ = mount.file_fallback.set(player.clone());
            let token = station.supervisor.token().clone();
            station.supervisor.spawn_service(
                "fallback-file",
                crate::input::file::run_loop(file, player, claim, token),
            );
        }
    }
    // A listener may move along every fallback edge whose two ends have a known format.
    for m in &station.config().mounts {
        let Some(to) = &m.fallback else { continue };
        for (_, a, a_what) in known.iter().filter(|(n, _, _)| n == &m.name) {
            for (_, b, b_what) in known.iter().filter(|(n, _, _)| n == to) {
                check_compat(&m.name, a, a_what, b, &format!("fallback {to}'s {b_what}"))?;
            }
        }
    }
    Ok(())
}

/// Starts the live-encoded inputs: transcoded mounts and (unless something replaced it)
/// the demo programme.
fn start_encoded(station: &Arc<Station>) {
    let config = station.config();
    for m in &config.mounts {
        if m.transcode_from.is_some() {
            station.supervisor.spawn_service(
                "transcode",
                crate::input::transcode::run(station.clone(), m.name.clone()),
            );
        }
    }
    if config.demo.enabled {
        station
            .supervisor
            .spawn_service("demo", crate::input::demo::run(station.clone()));
    }
}

fn check_compat(
    mount: &str,
    a: &Compat,
    a_what: &str,
    b: &Compat,
    b_what: &str,
) -> Result<(), StartError> {
    if a.accepts(b) {
        return Ok(());
    }
    Err(StartError::Format(format!(
        "mount {mount}: listeners cannot move between its {a_what} ({}) and {b_what} ({}): formats must match",
        a.describe(),
        b.describe()
    )))
}

/// The SHOUTcast v1 port: configured, or main port + 1. A busy port is logged, not fatal:
/// the Icecast protocols on the main port still work.
fn bind_shoutcast(config: &Config, main: SocketAddr) -> Option<TcpListener> {
    let sc = &config.shoutcast;
    if !sc.enabled {
        return None;
    }
    let port = sc.port.unwrap_or_else(|| main.port().wrapping_add(1));
    let addr = SocketAddr::new(main.ip(), port);
    match bind(addr) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot open the SHOUTcast source port; SHOUTcast v1 sources are unavailable");
            None
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // A deep accept backlog: thousands of players reconnect at once after a network blip.
    socket.listen(4096)
}
