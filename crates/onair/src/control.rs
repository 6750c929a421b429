//! Operator actions on mounts — disconnect a listener or a source, move listeners, change a
//! fallback, set a title — shared by the Icecast-compatible XML admin (`web::admin`) and
//! the JSON API (`web::api`), so both behave identically.

use std::sync::Arc;

use onair_proto::icy::StreamMeta;
use thiserror::Error;

use crate::{
    config::validate_mount_name,
    mount::{audience::Order, Mount},
    station::Station,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("Mount {0} does not exist")]
    NoSuchMount(String),
    #[error("Source does not exist on {0}")]
    NoSource(String),
    #[error("Client {0} not found")]
    NoSuchClient(u64),
    #[error("{0}")]
    Invalid(String),
}

impl ControlError {
    /// The HTTP status both APIs answer with.
    pub fn status(&self) -> u16 {
        match self {
            ControlError::NoSuchMount(_) | ControlError::NoSuchClient(_) => 404,
            ControlError::NoSource(_) | ControlError::Invalid(_) => 400,
        }
    }
}

pub fn mount(station: &Station, name: &str) -> Result<Arc<Mount>, ControlError> {
    station
        .mounts
        .get(name)
        .ok_or_else(|| ControlError::NoSuchMount(name.to_string()))
}

/// Disconnects listener `id` of `mount` (on its next wake-up, which this triggers).
pub fn kill_client(station: &Station, mount_name: &str, id: u64) -> Result<(), ControlError> {
    let m = mount(station, mount_name)?;
    if !m.audience.contains(id) {
        return Err(ControlError::NoSuchClient(id));
    }
    tracing::info!(mount = %mount_name, id, "admin: disconnecting listener");
    m.order(Order::Kill(id));
    Ok(())
}

/// Disconnects the source of `mount`; its listeners fall back or close.
pub fn kill_source(station: &Station, mount_name: &str) -> Result<(), ControlError> {
    let m = mount(station, mount_name)?;
    if !m.kill_source() {
        return Err(ControlError::NoSource(mount_name.to_string()));
    }
    tracing::info!(mount = %mount_name, "admin: source disconnected");
    station.mounts.release(&m);
    Ok(())
}

/// Moves every listener of `from` to `to`, which must be live and carry a compatible
/// stream. Returns how many listeners were on `from`.
pub fn move_clients(station: &Station, from: &str, to: &str) -> Result<usize, ControlError> {
    let src = mount(station, from)?;
    let dest = mount(station, to)?;
    if Arc::ptr_eq(&src, &dest) {
        return Err(ControlError::Invalid(
            "Destination is the same mount".into(),
        ));
    }
    let Some(dest_format) = dest.compat() else {
        return Err(ControlError::NoSource(to.to_string()));
    };
    if let Some(src_format) = src.compat() {
        if !src_format.accepts(&dest_format) {
            return Err(ControlError::Invalid(format!(
                "Formats differ: {} cannot continue as {}",
                src_format.describe(),
                dest_format.describe()
            )));
        }
    }
    let n = src.audience.list().len();
    tracing::info!(%from, %to, listeners = n, "admin: moving listeners");
    src.order(Order::MoveAll(dest));
    Ok(n)
}

/// Sets (or clears, with `None` or "") the fallback of `mount`. Loops are refused.
pub fn set_fallback(
    station: &Station,
    mount_name: &str,
    fallback: Option<&str>,
) -> Result<(), ControlError> {
    let m = mount(station, mount_name)?;
    let fallback = fallback.filter(|f| !f.is_empty());
    if let Some(f) = fallback {
        validate_mount_name(f).map_err(ControlError::Invalid)?;
        if station.mounts.fallback_loops(mount_name, f) {
            return Err(ControlError::Invalid(format!(
                "Fallback {f} would make a loop back to {mount_name}"
            )));
        }
    }
    tracing::info!(mount = %mount_name, fallback = ?fallback, "admin: fallback changed");
    m.set_fallback(fallback.map(str::to_string));
    Ok(())
}

/// Sets the title of a live mount from this stream byte on.
pub fn set_metadata(
    station: &Station,
    mount_name: &str,
    meta: StreamMeta,
) -> Result<(), ControlError> {
    let Some(m) = station.mounts.get(mount_name).filter(|m| m.is_live()) else {
        return Err(ControlError::NoSource(mount_name.to_string()));
    };
    tracing::info!(mount = %mount_name, title = %meta.title, "metadata updated");
    m.set_metadata(meta);
    Ok(())
}
