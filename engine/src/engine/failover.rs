//! Run-time failover of a worker's session: when a run fails on its provider (device lost,
//! driver error, out of device memory), the worker rebuilds its session on the next provider
//! of the model's order that passes the accuracy gate and runs the request again there, so
//! nothing queued is dropped. Each move is counted and logged once: one WARN naming the
//! providers passed over, however many requests then run on the new one (the model's other
//! workers that follow log at INFO). The better provider is tried again after a backoff
//! (doubling, with jitter, up to 32 times the first wait), each failed try one INFO line with
//! the next wait's bound. A provider that fails again soon after its return (before it has
//! served for as long as the next wait) does not reset the backoff: the move is counted and
//! logged at INFO, and the wait before the next return keeps doubling. When no provider can
//! take the model, that is one ERROR; the move is tried again after a backoff (INFO), not on
//! every failing request.

use crate::provider::{self, Selector, accuracy::Case, plugins::Plugin, session::Params};
use crate::settings::EngineSettings;
use ort::environment::Environment;
use ort::session::Session;
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(any(test, feature = "fault-injection"))]
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tandem_shared::backoff::Backoff;
use tandem_shared::provider::ExecutionProvider;

/// What a worker needs to build its session again on another provider.
pub(crate) struct Rebuild {
    pub(crate) env: Environment,
    pub(crate) settings: EngineSettings,
    pub(crate) plugins: Vec<Plugin>,
    pub(crate) path: PathBuf,
    pub(crate) cases: Vec<Case>,
    /// The accuracy gate's tolerance and its source (as the first build had it).
    pub(crate) tolerance: (f64, &'static str),
    pub(crate) digest: String,
    /// Providers in order of preference (with `auto`: the accurate ones, fastest first).
    pub(crate) order: Vec<ExecutionProvider>,
    /// Failovers of this model version (all workers).
    pub(crate) failovers: Arc<AtomicU64>,
    /// Index in `order` of the provider the last move went to (reported as the model's).
    pub(crate) current: Arc<AtomicUsize>,
    /// Test hooks (feature `fault-injection`).
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) faults: Arc<Mutex<Faults>>,
}

/// Faults a test injects into a model's workers (feature `fault-injection`).
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// This provider's device is lost: its runs fail and no session builds on it.
    pub(crate) lost: Option<ExecutionProvider>,
    /// This provider's runs fail, while its sessions still build and pass the accuracy gate
    /// (a driver error on real inputs only).
    pub(crate) runs_fail: Option<ExecutionProvider>,
}

/// Providers passed over, each with why.
type Passed = Vec<(ExecutionProvider, String)>;

/// `passed` as one log field: `ep: why; ep: why`.
fn reasons(passed: &Passed) -> String {
    passed
        .iter()
        .map(|(e, why)| format!("{e}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Rebuild {
    fn selector(&self, order: &[ExecutionProvider]) -> Selector<'_> {
        let rt = &self.settings.runtime;
        Selector {
            params: Params {
                env: &self.env,
                path: &self.path,
                intra_threads: rt.intra_op_threads,
                spinning: rt.intra_op_spinning,
                options: &rt.ep,
                plugins: &self.plugins,
                rows_per_run: self.settings.engine.max_rows_per_run,
            },
            order: order.to_vec(),
            auto: false,
            cases: self.cases.clone(),
            tolerance: self.tolerance,
            digest: self.digest.clone(),
            cache_file: None,
        }
    }

    /// Whether the test hooks say `e`'s device is lost.
    #[cfg(any(test, feature = "fault-injection"))]
    fn is_lost(&self, e: ExecutionProvider) -> bool {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).lost == Some(e)
    }

    /// Whether the test hooks make runs on `e` fail.
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) fn run_fails(&self, e: ExecutionProvider) -> bool {
        let f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        f.lost == Some(e) || f.runs_fail == Some(e)
    }

    /// The first provider of `order` that builds and passes the gate, with those passed over
    /// before it; or why each failed. Logs nothing: the caller logs the outcome once.
    fn first_accurate(
        &self,
        order: &[ExecutionProvider],
    ) -> Result<(Session, ExecutionProvider, Passed), Passed> {
        let sel = self.selector(order);
        let mut passed = Vec::new();
        for &e in order {
            #[cfg(any(test, feature = "fault-injection"))]
            if self.is_lost(e) {
                passed.push((e, "device lost (injected by a test)".to_string()));
                continue;
            }
            match sel.try_ep(e, 1, 0) {
                (Some(session), _) => return Ok((session, e, passed)),
                (None, m) => passed.push((e, m.why_not().unwrap_or_default())),
            }
        }
        Err(passed)
    }
}

/// A worker's session and the provider it runs on.
pub(crate) struct Slot {
    pub(crate) session: Session,
    pub(crate) ep: ExecutionProvider,
    backoff: Backoff,
    retry_at: Option<Instant>,
    /// When the session came back to a better provider after a failover (until it has served
    /// for as long as the next wait; the backoff is reset then).
    returned_at: Option<Instant>,
    /// No other provider could take the model: until then, a failing run does not try again
    /// (a rebuild per failed request would cost more than the request).
    stuck_until: Option<Instant>,
    /// The waits between those tries.
    stuck_backoff: Backoff,
}

impl Slot {
    pub(crate) fn new(session: Session, ep: ExecutionProvider, rb: &Rebuild) -> Self {
        let first = Duration::from_millis(rb.settings.runtime.ep_retry_after_ms);
        Self {
            session,
            ep,
            backoff: Backoff::new(first, first * 32),
            retry_at: None,
            returned_at: None,
            stuck_until: None,
            stuck_backoff: Backoff::new(first, first * 32),
        }
    }

    fn position(&self, rb: &Rebuild) -> usize {
        rb.order
            .iter()
            .position(|e| *e == self.ep)
            .unwrap_or(rb.order.len())
    }

    /// The session failed with `why`: move to the next provider that builds and passes the
    /// gate. False when there is none (the error stands).
    pub(crate) fn fail_over(&mut self, rb: &Rebuild, model: &str, why: &str) -> bool {
        let from = self.ep;
        let rest = rb.order.get(self.position(rb) + 1..).unwrap_or_default();
        if rest.is_empty() || self.stuck_until.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        // Since the return to this provider (before the next one is built: that takes time).
        let since_return = self.returned_at.take().map(|at| at.elapsed());
        match rb.first_accurate(rest) {
            Ok((session, to, passed)) => {
                self.session = session;
                self.ep = to;
                self.stuck_until = None;
                self.stuck_backoff.reset();
                // Failing again soon after a return is the same trouble: the wait keeps
                // growing. Long after it (no request served since), it starts over.
                let again = match since_return {
                    Some(t) if t < self.backoff.ceiling() => true,
                    Some(_) => {
                        self.backoff.reset();
                        false
                    }
                    None => false,
                };
                let retry_max_ms = self.backoff.ceiling().as_millis();
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                rb.failovers.fetch_add(1, Ordering::AcqRel);
                let pos = self.position(rb);
                // Another worker of the model moved there first (and said so at WARN).
                let followed = rb.current.swap(pos, Ordering::AcqRel) == pos;
                if again {
                    // Logged at WARN when it first failed.
                    tracing::info!(model = %model, from = %from, to = %to, error = %why, retry_max_ms, "execution provider failed again soon after its return: session moved to the next provider again");
                } else if followed {
                    tracing::info!(model = %model, from = %from, to = %to, error = %why, retry_max_ms, "execution provider failed at run time on another worker too: its session moved to the next provider as well");
                } else {
                    tracing::warn!(model = %model, from = %from, to = %to, error = %why, passed_over = %reasons(&passed), retry_max_ms, "execution provider failed at run time: session moved to the next provider; queued requests go on there");
                }
                true
            }
            Err(passed) => {
                let retry_max_ms = self.stuck_backoff.ceiling().as_millis();
                let first = self.stuck_until.is_none();
                self.stuck_until = Some(Instant::now() + self.stuck_backoff.next_delay());
                if first {
                    tracing::error!(model = %model, from = %from, error = %why, next = %reasons(&passed), retry_max_ms, "execution provider failed at run time and no other provider can take the model: its requests fail");
                } else {
                    let retry = self.stuck_backoff.failures() - 1;
                    tracing::info!(model = %model, from = %from, error = %why, next = %reasons(&passed), retry, retry_max_ms, "still no other provider can take the model");
                }
                false
            }
        }
    }

    /// After a failover, once the backoff has passed: try the better providers again.
    pub(crate) fn maybe_fail_back(&mut self, rb: &Rebuild, model: &str) {
        let Some(at) = self.retry_at else { return };
        if Instant::now() < at {
            return;
        }
        let better = rb.order.get(..self.position(rb)).unwrap_or_default();
        match rb.first_accurate(better) {
            Ok((session, to, _)) => {
                tracing::info!(model = %model, from = %self.ep, to = %to, "execution provider back after a failover");
                self.session = session;
                self.ep = to;
                self.retry_at = None;
                self.returned_at = Some(Instant::now());
                rb.current.store(self.position(rb), Ordering::Release);
            }
            Err(passed) => {
                let retry_max_ms = self.backoff.ceiling().as_millis();
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                let retry = self.backoff.failures().saturating_sub(1);
                tracing::info!(model = %model, ep = %self.ep, retry, retry_max_ms, error = %reasons(&passed), "better execution provider still failing; staying, tried again after a backoff");
            }
        }
    }

    /// A run succeeded: once the provider the session returned to has served for as long as
    /// the next wait would be, the backoff starts from the first wait again.
    pub(crate) fn served(&mut self) {
        if self.stuck_until.take().is_some() {
            self.stuck_backoff.reset();
        }
        if let Some(at) = self.returned_at
            && at.elapsed() >= self.backoff.ceiling()
        {
            self.returned_at = None;
            self.backoff.reset();
        }
    }
}

/// The failover order of a model: the configured list, or with `auto` the accurate providers
/// measured, fastest first.
pub(crate) fn order(
    settings: &EngineSettings,
    measured: &[provider::Measure],
) -> Vec<ExecutionProvider> {
    if !settings.auto_providers() {
        return settings.providers();
    }
    let mut ok: Vec<_> = measured
        .iter()
        .filter(|m| m.accurate)
        .map(|m| (m.ep, m.median_us.unwrap_or(f64::MAX)))
        .collect();
    ok.sort_by(|a, b| a.1.total_cmp(&b.1));
    ok.into_iter().map(|(e, _)| e).collect()
}
