//! SIGHUP: the config file is read again and what can change at run time is applied — the
//! routing policy (modes, signals, thresholds) and the log filter — each change logged. A
//! config that does not load is logged and the running one kept; changes to other sections
//! are named in a warning (they need a restart).

use crate::config::Config;
use crate::hybrid::Router;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reloaded {
    /// The routing policy changed.
    pub policy: bool,
    /// The log filter changed.
    pub log: bool,
    /// Sections that differ but apply only at the next start.
    pub need_restart: Vec<&'static str>,
}

/// Why nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Started without a config file: nothing to read again.
    #[error("no config file to reload (started with the defaults)")]
    NoFile,
    /// The file does not load (syntax, values): the running config stays.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The new log filter cannot be applied.
    #[error(transparent)]
    Log(#[from] tandem_engine::daemon::logging::LogError),
}

/// Reads `running.source` again and applies it to `router`; `running` becomes the new config
/// on success.
pub fn reload(running: &mut Config, router: &Router) -> Result<Reloaded, ReloadError> {
    let path = running.source.clone().ok_or(ReloadError::NoFile)?;
    let new = Config::load(Some(&path))?;
    let mut out = Reloaded::default();
    if new.policy != running.policy {
        router.set_policy_config(new.policy.clone());
        tracing::info!(mode = ?new.policy.mode, models = new.policy.models.len(), "routing policy reloaded");
        out.policy = true;
    }
    out.log = tandem_engine::daemon::logging::reload(&new.log.filter)?;
    let sections: [(&'static str, bool); 11] = [
        ("log.format", new.log.format != running.log.format),
        ("server", new.server != running.server),
        ("runtime", new.runtime != running.runtime),
        ("engine", new.engine != running.engine),
        ("models", new.models != running.models),
        ("image", new.image != running.image),
        ("hub", new.hub != running.hub),
        ("mqtt", new.mqtt != running.mqtt),
        ("queue", new.queue != running.queue),
        ("feedback", new.feedback != running.feedback),
        ("labels", new.labels != running.labels),
    ];
    out.need_restart = sections.iter().filter(|s| s.1).map(|s| s.0).collect();
    if !out.need_restart.is_empty() {
        tracing::warn!(sections = %out.need_restart.join(", "), "config changes that apply only after a restart");
    }
    *running = new;
    Ok(out)
}

/// [`reload`] with its outcome logged (SIGHUP handler).
pub fn on_hangup(running: &mut Config, router: &Router) {
    tracing::info!("SIGHUP: reloading the config");
    match reload(running, router) {
        Ok(r) => tracing::info!(policy = r.policy, log = r.log, "config reloaded"),
        Err(e) => tracing::error!(error = %e, "config not reloaded: the running one is kept"),
    }
}
