//! The watchdog: with `WatchdogSec=` systemd sets `$WATCHDOG_USEC`, and the daemon must send
//! `WATCHDOG=1` more often than that or be restarted. A timer alone would prove only that the
//! async runtime runs, so each tick first checks the engine: a model that had requests
//! waiting at the previous tick and has finished none since is stalled (a hung worker or
//! session), and then no `WATCHDOG=1` is sent. An idle model is fine. Ticks come at half the
//! interval, as sd_watchdog_enabled(3) advises.

use super::notify::Notifier;
use crate::Engine;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this process when
/// `$WATCHDOG_PID` is set); `None` when there is no watchdog.
pub fn interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// One model at one tick: requests waiting, and requests finished so far (any outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Waiting in its queues.
    pub waiting: usize,
    /// Finished since start.
    pub finished: u64,
}

/// Whether a model is stalled: work waited at the previous tick, still waits, and nothing
/// finished in between.
pub fn stalled(before: Sample, now: Sample) -> bool {
    before.waiting > 0 && now.waiting > 0 && now.finished == before.finished
}

/// The engine's models now.
pub fn sample(engine: &Engine) -> BTreeMap<String, Sample> {
    let counts = engine.metrics().snapshot();
    engine
        .models()
        .map(|m| {
            let finished = counts
                .get(m.name())
                .map_or(0, |c| c.inferences.values().sum());
            let s = Sample {
                waiting: m.queue_depth(),
                finished,
            };
            (m.name().to_string(), s)
        })
        .collect()
}

/// The models stalled between two samples.
pub fn stalled_models(
    before: &BTreeMap<String, Sample>,
    now: &BTreeMap<String, Sample>,
) -> Vec<String> {
    now.iter()
        .filter(|(name, s)| before.get(*name).is_some_and(|b| stalled(*b, **s)))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Starts [`run`] on `tasks` when systemd asked for a watchdog ([`interval`]).
pub fn spawn(
    tasks: &tokio_util::task::TaskTracker,
    engine: &Arc<Engine>,
    notifier: &Notifier,
    stop: CancellationToken,
) {
    if let Some(every) = interval() {
        tasks.spawn(run(engine.clone(), notifier.clone(), every, stop));
    }
}

/// Feeds the watchdog every `every / 2` while the engine makes progress, until `stop`.
pub async fn run(
    engine: Arc<Engine>,
    notifier: Notifier,
    every: Duration,
    stop: CancellationToken,
) {
    let tick = (every / 2).max(Duration::from_millis(10));
    let mut before = sample(&engine);
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(interval_ms = every.as_millis() as u64, "watchdog on");
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = sample(&engine);
        let stuck = stalled_models(&before, &now);
        if stuck.is_empty() {
            notifier.notify("WATCHDOG=1");
        } else {
            tracing::error!(models = %stuck.join(", "), "engine stalled: requests wait and none finished; watchdog not fed");
        }
        before = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(waiting: usize, finished: u64) -> Sample {
        Sample { waiting, finished }
    }

    #[test]
    fn waiting_work_must_finish_something() {
        assert!(!stalled(s(0, 5), s(0, 5)), "idle is fine");
        assert!(!stalled(s(3, 5), s(3, 6)), "progress");
        assert!(
            !stalled(s(0, 5), s(3, 5)),
            "work arrived since the last tick"
        );
        assert!(
            !stalled(s(3, 5), s(0, 5)),
            "queue emptied (taken by a worker)"
        );
        assert!(stalled(s(3, 5), s(3, 5)));
        assert!(stalled(s(1, 5), s(4, 5)));
    }

    #[test]
    fn stalled_models_are_named() {
        let before = BTreeMap::from([("a".to_string(), s(2, 1)), ("b".to_string(), s(2, 1))]);
        let now = BTreeMap::from([
            ("a".to_string(), s(2, 1)),
            ("b".to_string(), s(1, 2)),
            ("c".to_string(), s(9, 0)),
        ]);
        assert_eq!(stalled_models(&before, &now), vec!["a".to_string()]);
    }
}
