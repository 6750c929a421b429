//! A mount's audience: who is listening right now (for `listclients` and the JSON API), and
//! orders for them (kill one, move all elsewhere) that each listener picks up on its next
//! wake-up. Orders are numbered; a listener remembers the last number it has seen, so an
//! idle listener costs one integer here, not a channel or a token.
//!
//! Invariant: a listener is in exactly one mount's audience while it streams; it moves its
//! own entry when it switches mounts.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Instant,
};

use super::Mount;

/// Orders older than this many are forgotten (a listener that slept through them all is
/// stuck in a write far beyond `queue_size` and is dropped by the lag check anyway).
const ORDERS_KEPT: usize = 256;

#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub peer: SocketAddr,
    pub user_agent: Box<str>,
    pub connected_at: Instant,
}

#[derive(Debug, Clone)]
pub enum Order {
    /// Disconnect listener `id`.
    Kill(u64),
    /// Every listener here moves to this mount.
    MoveAll(Arc<Mount>),
}

#[derive(Debug, Default)]
pub struct Audience {
    clients: Mutex<HashMap<u64, ClientInfo>>,
    orders: Mutex<VecDeque<(u64, Order)>>,
    last_order: AtomicU64,
}

impl Audience {
    fn clients(&self) -> MutexGuard<'_, HashMap<u64, ClientInfo>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, id: u64, info: ClientInfo) {
        self.clients().insert(id, info);
    }

    pub fn remove(&self, id: u64) -> Option<ClientInfo> {
        self.clients().remove(&id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.clients().contains_key(&id)
    }

    /// Everyone listening, by id.
    pub fn list(&self) -> Vec<(u64, ClientInfo)> {
        let mut v: Vec<_> = self
            .clients()
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// Number of the newest order (0 = none yet).
    pub fn last_order(&self) -> u64 {
        self.last_order.load(Ordering::Acquire)
    }

    /// Files an order; the caller wakes the listeners so they act on it.
    pub fn order(&self, order: Order) {
        let mut orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.last_order.load(Ordering::Relaxed) + 1;
        orders.push_back((n, order));
        while orders.len() > ORDERS_KEPT {
            orders.pop_front();
        }
        self.last_order.store(n, Ordering::Release);
    }

    /// The order for listener `id` among those after `seen`, if any (a kill wins over a
    /// move; of several moves the newest wins).
    pub fn order_for(&self, id: u64, seen: u64) -> Option<Order> {
        let orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for (_, o) in orders.iter().filter(|(n, _)| *n > seen) {
            match o {
                Order::Kill(k) if *k == id => return Some(o.clone()),
                Order::MoveAll(_) => found = Some(o.clone()),
                Order::Kill(_) => {}
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MountSettings;

    #[test]
    fn orders_reach_the_right_listeners() {
        let a = Audience::default();
        let dest = Arc::new(Mount::new("/b".into(), None, &MountSettings::default()));
        assert!(a.order_for(1, 0).is_none());
        a.order(Order::Kill(7));
        assert!(a.order_for(1, 0).is_none());
        assert!(matches!(a.order_for(7, 0), Some(Order::Kill(7))));
        assert!(a.order_for(7, a.last_order()).is_none(), "already seen");
        a.order(Order::MoveAll(dest));
        assert!(matches!(a.order_for(1, 1), Some(Order::MoveAll(_))));
        assert!(
            matches!(a.order_for(7, 0), Some(Order::Kill(7))),
            "kill wins"
        );
    }
}
