//! The set of mounts by name: configured mounts live for the server's lifetime, mounts a
//! source creates on the fly disappear when it leaves (their listeners finish draining on
//! their own handle).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use crate::config::{Config, MountSettings};

use super::{Mount, SourceClaim, SourceInfo};

/// Longest fallback chain followed (`/a` → `/b` → ... ).
pub const MAX_FALLBACK_HOPS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("Mountpoint in use")]
    InUse,
    #[error("too many sources connected")]
    TooManySources,
}

#[derive(Debug)]
pub struct Registry {
    mounts: RwLock<HashMap<String, Arc<Mount>>>,
    defaults: RwLock<MountSettings>,
}

impl Registry {
    pub fn new(config: &Config) -> Registry {
        let mounts = config
            .mounts
            .iter()
            .map(|m| {
                let mount = Mount::new(m.name.clone(), Some(m.clone()), &config.defaults);
                (m.name.clone(), Arc::new(mount))
            })
            .collect();
        Registry {
            mounts: RwLock::new(mounts),
            defaults: RwLock::new(config.defaults.clone()),
        }
    }

    /// Applies a reloaded configuration: configured mounts get their new settings, new ones
    /// appear, removed ones live on unconfigured while their source stays (and go when it
    /// leaves); on-the-fly mounts take the new `[defaults]`. Nobody is disconnected.
    pub fn reconfigure(&self, config: &Config) {
        *self.defaults.write().unwrap_or_else(|p| p.into_inner()) = config.defaults.clone();
        let mut map = self.mounts.write().unwrap_or_else(|p| p.into_inner());
        for m in &config.mounts {
            match map.get(&m.name) {
                Some(mount) => mount.reconfigure(Some(m.clone()), &config.defaults),
                None => {
                    let mount = Mount::new(m.name.clone(), Some(m.clone()), &config.defaults);
                    map.insert(m.name.clone(), Arc::new(mount));
                }
            }
        }
        map.retain(|name, mount| {
            if config.mount(name).is_some() {
                return true;
            }
            mount.reconfigure(None, &config.defaults);
            mount.is_live()
        });
    }

    pub fn get(&self, name: &str) -> Option<Arc<Mount>> {
        self.read().get(name).cloned()
    }

    /// Attaches a source to `name` (creating an unconfigured mount if needed), atomically
    /// with the `max_sources` check and with [`Registry::release`]. A silent predecessor
    /// is taken over (see [`Mount::attach_source`]); that does not count as a new source.
    pub fn attach_source(
        &self,
        name: &str,
        info: SourceInfo,
        max_sources: usize,
        takeover_after: Option<Duration>,
    ) -> Result<(Arc<Mount>, SourceClaim), AttachError> {
        let mut map = self.mounts.write().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get(name).filter(|m| m.is_live()) {
            let claim = m.attach_source(info, takeover_after)?;
            return Ok((m.clone(), claim));
        }
        if map.values().filter(|m| m.is_live()).count() >= max_sources {
            return Err(AttachError::TooManySources);
        }
        let mount = map
            .entry(name.to_string())
            .or_insert_with(|| {
                let defaults = self.defaults.read().unwrap_or_else(|p| p.into_inner());
                Arc::new(Mount::new(name.to_string(), None, &defaults))
            })
            .clone();
        let claim = mount.attach_source(info, None)?;
        Ok((mount, claim))
    }

    /// Forgets an on-the-fly mount once it has no source (configured mounts stay).
    pub fn release(&self, mount: &Arc<Mount>) {
        if mount.is_configured() {
            return;
        }
        let mut map = self.mounts.write().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&mount.name)
            .is_some_and(|m| Arc::ptr_eq(m, mount) && !m.is_live())
        {
            map.remove(&mount.name);
        }
    }

    /// Where listeners of `from` go when it has no source: the first live mount along its
    /// fallback chain. Loops are refused when a fallback is set; the hop limit only guards
    /// against a chain changed while it is walked.
    /// A live fallback mount wins over a fallback file; of several files, the one nearest
    /// to `from` along the chain plays.
    pub fn fallback_for(&self, from: &Mount) -> Option<Arc<Mount>> {
        let mut file = from.file_fallback.get().cloned();
        let mut next = from.fallback();
        for _ in 0..MAX_FALLBACK_HOPS {
            let Some(m) = next.as_deref().and_then(|n| self.get(n)) else {
                break;
            };
            if m.is_live() {
                return Some(m);
            }
            file = file.or_else(|| m.file_fallback.get().cloned());
            next = m.fallback();
        }
        file.filter(|f| f.is_live())
    }

    /// Whether making `to` the fallback of `mount` would create a loop.
    pub fn fallback_loops(&self, mount: &str, to: &str) -> bool {
        let mut next = Some(to.to_string());
        for _ in 0..MAX_FALLBACK_HOPS {
            match next {
                Some(n) if n == mount => return true,
                Some(n) => next = self.get(&n).and_then(|m| m.fallback()),
                None => return false,
            }
        }
        true
    }

    /// All mounts, sorted by name.
    pub fn all(&self) -> Vec<Arc<Mount>> {
        let mut v: Vec<_> = self.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn live_sources(&self) -> usize {
        self.read().values().filter(|m| m.is_live()).count()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Mount>>> {
        self.mounts.read().unwrap_or_else(|p| p.into_inner())
    }
}
