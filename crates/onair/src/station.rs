//! The running station: shared state every connection handler sees (config, mounts,
//! limits, counters) and [`start`], which binds the listen socket and spawns the front.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use thiserror::Error;
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{config::Config, front, mount::registry::Registry, supervisor::Supervisor};

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
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
    pub config: Config,
    pub mounts: Registry,
    pub supervisor: Supervisor,
    pub client_slots: Arc<Semaphore>,
    pub counters: Counters,
    pub started_at: SystemTime,
    pub started: Instant,
    pub local_addr: SocketAddr,
    /// Where SHOUTcast v1 sources connect, if that port could be opened.
    pub shoutcast_addr: Option<SocketAddr>,
}

impl Station {
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
    let station = Arc::new(Station {
        mounts: Registry::new(&config),
        supervisor: Supervisor::default(),
        client_slots: Arc::new(Semaphore::new(config.limits.max_clients)),
        counters: Counters::default(),
        started_at: SystemTime::now(),
        started: Instant::now(),
        local_addr,
        shoutcast_addr,
        config,
    });
    if let Some(sc) = shoutcast {
        station.supervisor.spawn_service(
            "shoutcast",
            crate::input::shoutcast::run(sc, station.clone()),
        );
    }
    station
        .supervisor
        .spawn_service("front", front::run(listener, station.clone()));
    Ok(Running { station })
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
