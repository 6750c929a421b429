//! Task ownership: every long-lived task is spawned here, named, cancellable through one
//! [`CancellationToken`], and its exit cause is logged. Shutdown cancels the token and
//! waits (bounded) for the tracker to drain.

use std::{future::Future, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[derive(Debug, Clone, Default)]
pub struct Supervisor {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Supervisor {
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Spawns a named service task; its end (and error) is logged.
    pub fn spawn_service<F, E>(&self, name: &'static str, fut: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.tracker.spawn(async move {
            match fut.await {
                Ok(()) => tracing::debug!(task = name, "task finished"),
                Err(e) => tracing::error!(task = name, error = %e, "task failed"),
            }
        });
    }

    /// Spawns a per-connection task (logging is the task's own business: there are many).
    pub fn spawn_connection<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(fut);
    }

    /// Cancels everything and waits up to `grace` for tasks to finish. Returns whether
    /// they all did.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}
