//! The shutdown tree both daemons use: a root [`CancellationToken`] that the first
//! SIGTERM/SIGINT cancels, a child token per subsystem, a [`TaskTracker`] for the tasks
//! spawned, and one grace period for the whole stop (each step gets what is left of it). A
//! second SIGTERM/SIGINT exits the process at once with [`EXIT_SECOND_SIGNAL`].

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Exit status after a second signal (128 + SIGINT, as a shell reports an interrupt).
pub const EXIT_SECOND_SIGNAL: i32 = 130;

/// The root token, the tracked tasks and the grace period.
#[derive(Debug, Clone)]
pub struct Shutdown {
    root: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
}

impl Shutdown {
    /// A tree whose stop may take `grace` in all.
    pub fn new(grace: Duration) -> Self {
        Self {
            root: CancellationToken::new(),
            tasks: TaskTracker::new(),
            grace,
        }
    }

    /// The root token (cancelled by the first signal).
    pub fn token(&self) -> &CancellationToken {
        &self.root
    }

    /// A subsystem's token: cancelled with the root, or on its own in a step of the stop.
    pub fn child(&self) -> CancellationToken {
        self.root.child_token()
    }

    /// The tracked tasks.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Watches SIGTERM and SIGINT: the first cancels the root token, the second exits the
    /// process at once (status [`EXIT_SECOND_SIGNAL`]). `name` prefixes the log lines.
    pub fn on_signals(&self, name: &'static str) {
        let root = self.root.clone();
        let grace = self.grace;
        tokio::spawn(async move {
            tokio::select! {
                () = signal() => {}
                () = root.cancelled() => {}
            }
            tracing::info!(
                grace_ms = grace.as_millis() as u64,
                "{name}: stopping (a second signal exits at once)"
            );
            root.cancel();
            signal().await;
            tracing::warn!("{name}: second signal: exiting now");
            std::process::exit(EXIT_SECOND_SIGNAL);
        });
    }

    /// The deadline of the stop, counted from now (call once the root is cancelled).
    pub fn deadline(&self) -> Deadline {
        Deadline {
            at: Instant::now() + self.grace,
        }
    }
}

/// The end of the grace period; each step of the stop waits at most until then.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// Waits for `step` until the deadline; `None` (logged, naming `what`) if it ran out.
    pub async fn step<T>(&self, what: &str, step: impl Future<Output = T>) -> Option<T> {
        match tokio::time::timeout_at(self.at, step).await {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(
                    step = what,
                    "shutdown: grace period over, not waiting for it"
                );
                None
            }
        }
    }
}

impl Deadline {
    /// The last step of both daemons: the engine closes its queues and joins its workers.
    pub async fn stop_engine(&self, engine: std::sync::Arc<crate::Engine>) {
        self.step(
            "engine workers",
            tokio::task::spawn_blocking(move || engine.shutdown()),
        )
        .await;
    }
}

/// Resolves at the next SIGTERM or SIGINT.
pub async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Calls `reload` at every SIGHUP until `stop` is cancelled. `reload` reads the config again
/// and applies what can change at run time.
pub fn on_hangup(stop: CancellationToken, mut reload: impl FnMut() + Send + 'static) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("SIGHUP cannot be watched: reload needs a restart");
            return;
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            reload();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn steps_share_one_grace_period() {
        let s = Shutdown::new(Duration::from_secs(10));
        let child = s.child();
        s.token().cancel();
        assert!(child.is_cancelled(), "children follow the root");
        let d = s.deadline();
        let first = d
            .step("first", tokio::time::sleep(Duration::from_secs(6)))
            .await;
        assert!(first.is_some());
        let second = d
            .step("second", tokio::time::sleep(Duration::from_secs(6)))
            .await;
        assert!(second.is_none(), "only 4 s were left");
    }
}
