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
    /// WHEP → WebSocket bridges (`[[bridge]]` and `/api/bridges`).
    pub bridges: crate::bridge::Registry,
}

impl Station {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
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

    /// Stops accepting, closes sources and listeners, waits up to `grace`.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.station.supervisor.shutdown(grace).await
    }
}

/// Binds `config.bind` and starts serving in the background.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let addr = config.bind;
    for m in config.mounts.iter().filter(|m| m.fallback.is_some()) {
        tracing::warn!(mount = %m.name, "fallback is configured but not implemented yet: listeners close when the source leaves");
    }
    let listener = bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let station = Arc::new(Station {
        mounts: Registry::new(&config),
        supervisor: Supervisor::default(),
        client_slots: Arc::new(Semaphore::new(config.limits.max_clients)),
        counters: Counters::default(),
        started_at: SystemTime::now(),
        started: Instant::now(),
        local_addr,
        bridges: crate::bridge::Registry::default(),
        config,
    });
    for spec in &station.config.bridges {
        if let Err(e) = station.bridges.start(spec.clone(), &station.supervisor) {
            tracing::error!(trace_id = %spec.trace_id, error = %e, "configured bridge not started");
        }
    }
    station
        .supervisor
        .spawn_service("front", front::run(listener, station.clone()));
    Ok(Running { station })
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
