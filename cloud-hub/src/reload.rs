//! SIGHUP: the config file is read again and the log filter, the one key the hub can change
//! at run time, applied (logged). A config that does not load is logged and the running one
//! kept; other changed keys are named in a warning (they need a restart).

use crate::config::Config;

/// Reads `running.source` again and applies it; `running` becomes the new config on success.
pub fn on_hangup(running: &mut Config) {
    tracing::info!("SIGHUP: reloading the config");
    let Some(path) = running.source.clone() else {
        tracing::error!("config not reloaded: started with the defaults, no file to read");
        return;
    };
    let new = match Config::load(Some(&path)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "config not reloaded: the running one is kept");
            return;
        }
    };
    let log = match tandem_engine::daemon::logging::reload(&new.log_filter) {
        Ok(changed) => changed,
        Err(e) => {
            tracing::error!(error = %e, "config not reloaded: the running one is kept");
            return;
        }
    };
    let mut rest = new.clone();
    rest.log_filter.clone_from(&running.log_filter);
    if rest != *running {
        tracing::warn!("config changes besides log_filter apply only after a restart");
    }
    tracing::info!(log, "config reloaded");
    *running = new;
}
