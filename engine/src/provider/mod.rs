//! Execution providers: build a model's session on the first provider of the configured list
//! that loads it *and* reproduces its reference outputs (or, with `auto`, on the fastest
//! accurate one, measured), and say which one that was and why the others were passed over.
//!
//! Layout: `options` (`[runtime.ep.*]`), `plugins` (plugin EP libraries, device inventory),
//! `session` (one session pinned to one provider's devices), `accuracy` (the reference-output
//! gate and its timing), `choice` (the measured `auto` choice and its cache), `choice_store`
//! (that cache on disk).

pub mod accuracy;
mod choice;
pub mod choice_store;
pub mod options;
pub mod plugins;
pub mod session;

pub use choice::{AUTO_ORDER, Measure};

use crate::settings::EngineSettings;
use ort::environment::Environment;
use ort::session::Session;
use std::path::PathBuf;
use tandem_shared::provider::ExecutionProvider;

/// A session and the provider it runs on.
#[derive(Debug)]
pub struct Built {
    /// The session.
    pub session: Session,
    /// Provider in use.
    pub ep: ExecutionProvider,
    /// Providers tried first and why each was not used.
    pub skipped: Vec<(ExecutionProvider, String)>,
    /// What was measured of each provider tried (accuracy, speed).
    pub measured: Vec<Measure>,
}

/// No provider in the list could run the model.
#[derive(Debug, thiserror::Error)]
#[error("no execution provider could load {path}: {}", .reasons.iter().map(|(e, r)| format!("{e}: {r}")).collect::<Vec<_>>().join("; "))]
pub struct NoProvider {
    /// The model file.
    pub path: String,
    /// Each provider tried and its error.
    pub reasons: Vec<(ExecutionProvider, String)>,
}

/// How a model's providers are chosen: the list (or `auto`), the reference cases and the
/// tolerance, plus what every session is built with.
#[derive(Debug)]
pub struct Selector<'a> {
    /// Session parameters.
    pub params: session::Params<'a>,
    /// Providers in order of preference (for `auto`: every candidate).
    pub order: Vec<ExecutionProvider>,
    /// `execution_providers = ["auto"]`: measure and take the fastest accurate one.
    pub auto: bool,
    /// The variant's reference cases (empty: no gate).
    pub cases: Vec<accuracy::Case>,
    /// The gate's tolerance and where it comes from
    /// ([`crate::settings::RuntimeConfig::accuracy_tolerance`]).
    pub tolerance: (f64, &'static str),
    /// The model file's sha256 (the measurement cache key).
    pub digest: String,
    /// `runtime.ep_choice_cache`, resolved: where `auto`'s measurements persist (`None`: in
    /// this process only).
    pub cache_file: Option<PathBuf>,
}

/// The plugin libraries a config uses: `runtime.ep_plugins`, or, when the provider list needs
/// a plugin (or says `auto`), those provisioned beside the ONNX Runtime library. Registered
/// (once per process) here.
pub fn plugins_for(cfg: &EngineSettings, env: &Environment) -> Vec<plugins::Plugin> {
    let paths: Vec<PathBuf> = if cfg.runtime.ep_plugins.is_empty() {
        let wanted = cfg.auto_providers() || cfg.providers().into_iter().any(session::is_plugin);
        match crate::runtime::loaded_path() {
            Some(lib) if wanted => plugins::discover(lib),
            _ => Vec::new(),
        }
    } else {
        cfg.runtime
            .ep_plugins
            .iter()
            .map(|p| cfg.resolve(std::path::Path::new(p)))
            .collect()
    };
    plugins::register(env, &paths)
}

impl Selector<'_> {
    /// Builds the first session: the first accurate provider of the list, or with `auto` the
    /// fastest accurate one.
    pub fn build(&self) -> Result<Built, NoProvider> {
        if self.auto && !self.cases.is_empty() {
            return choice::measured(self);
        }
        self.first_accurate(&self.order)
    }

    /// The first provider of `order` that loads the model and passes the gate.
    pub fn first_accurate(&self, order: &[ExecutionProvider]) -> Result<Built, NoProvider> {
        let mut skipped = Vec::new();
        let mut measured = Vec::new();
        for &e in order {
            let m = self.try_ep(e, 1, 0);
            match m {
                (Some(session), m) => {
                    measured.push(m);
                    return Ok(Built {
                        session,
                        ep: e,
                        skipped,
                        measured,
                    });
                }
                (None, m) => {
                    let reason = m.why_not().unwrap_or_default();
                    tracing::warn!(ep = %e, model = %self.params.path.display(), reason = %reason, "execution provider passed over, trying the next");
                    skipped.push((e, reason));
                    measured.push(m);
                }
            }
        }
        Err(NoProvider {
            path: self.params.path.display().to_string(),
            reasons: skipped,
        })
    }

    /// Builds a session on `e` and checks it (`runs` timed runs within `budget_ms`); the
    /// session only when it passed.
    pub(crate) fn try_ep(
        &self,
        e: ExecutionProvider,
        runs: usize,
        budget_ms: u64,
    ) -> (Option<Session>, Measure) {
        let started = std::time::Instant::now();
        let built = session::build(&self.params, e);
        let build_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut m = Measure::new(e, build_ms);
        let mut session = match built {
            Ok(s) => s,
            Err(why) => {
                m.error = Some(why);
                return (None, m);
            }
        };
        if self.cases.is_empty() {
            return (Some(session), m);
        }
        match accuracy::check(&mut session, &self.cases, runs, budget_ms) {
            Ok(c) => {
                m.max_abs_diff = Some(c.max_abs_diff);
                m.median_us = Some(c.median_us);
                if c.max_abs_diff <= self.tolerance.0 {
                    m.accurate = true;
                    (Some(session), m)
                } else {
                    m.error = Some(format!(
                        "outputs differ from the reference by {:.3e} (more than {} = {})",
                        c.max_abs_diff, self.tolerance.1, self.tolerance.0
                    ));
                    (None, m)
                }
            }
            Err(why) => {
                m.error = Some(format!("the reference cases failed to run: {why}"));
                (None, m)
            }
        }
    }

    /// Another session on a provider already chosen (the other workers of a model); no gate.
    pub fn build_on(&self, e: ExecutionProvider) -> Result<Session, NoProvider> {
        session::build(&self.params, e).map_err(|why| NoProvider {
            path: self.params.path.display().to_string(),
            reasons: vec![(e, why)],
        })
    }
}
