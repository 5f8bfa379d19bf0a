//! `tandem-agent run`: load the runtime and models, serve the local API, and shut down
//! gracefully on SIGTERM/SIGINT (stop accepting, finish in-flight requests within the grace
//! period, stop the workers). A second signal exits at once.

use crate::api::{self, AppState};
use crate::config::Config;
use crate::inference::Engine;
use crate::inference::engine::StartError;
use crate::telemetry::Metrics;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// ONNX Runtime missing or unusable, or models could not be loaded.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr} (server.listen): {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// IO error.
        source: std::io::Error,
    },
    /// The hub link cannot be set up (certificates, address).
    #[error("[hub]: {0}")]
    Hub(crate::uplink::UplinkError),
    /// Serving failed.
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Loads the runtime and the engine for a config.
pub fn start_engine(cfg: &Config) -> Result<Arc<Engine>, AppError> {
    // An installed model version loads only if it verifies again (signature, sha256).
    crate::models::check_installed(&cfg.engine_settings());
    let (_, engine) =
        tandem_engine::engine::start(&cfg.engine_settings(), Arc::new(Metrics::default()))?;
    Ok(Arc::new(engine))
}

/// The router: the engine plus, when `[hub]` names an address, the link to the hub.
pub fn start_router(
    cfg: &Config,
    engine: Arc<Engine>,
) -> Result<Arc<crate::hybrid::Router>, AppError> {
    let uplink = if cfg.hub.address.is_empty() {
        None
    } else {
        let u = crate::uplink::Uplink::new(&cfg.hub, |p| cfg.resolve(p)).map_err(AppError::Hub)?;
        tracing::info!(hub = %cfg.hub.address, mode = ?cfg.policy.mode, "offloading to the hub per policy");
        Some(Arc::new(u))
    };
    Ok(Arc::new(crate::hybrid::Router::new(
        engine,
        uplink,
        cfg.policy.clone(),
    )))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Runs the daemon until a signal.
pub async fn run(cfg: Config) -> Result<(), AppError> {
    let engine = tokio::task::block_in_place(|| start_engine(&cfg))?;
    let addr = cfg.listen_addr();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(AppError::Serve)?;
    let router = start_router(&cfg, engine.clone())?;
    if let Some(u) = router.uplink() {
        u.keep();
    }
    let state = Arc::new(AppState::new(&cfg, router));
    let app = api::router(state);
    let models: Vec<String> = engine
        .models()
        .map(|m| format!("{}@{}({})", m.name(), m.files.manifest.version, m.ep))
        .collect();
    tracing::info!(listen = %local, models = %models.join(", "), "tandem-agent serving");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grace = Duration::from_millis(cfg.server.shutdown_grace_ms);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "signal received: stopping (a second signal exits at once)"
        );
        let _ = stop_tx.send(true);
        shutdown_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone()));
    let served = tokio::select! {
        r = server.into_future() => r.map_err(AppError::Serve),
        () = async { stopped(stop_rx).await; tokio::time::sleep(grace).await } => {
            tracing::warn!("in-flight requests did not finish within the grace period");
            Ok(())
        }
    };
    let e2 = engine.clone();
    let stopped =
        tokio::time::timeout(grace, tokio::task::spawn_blocking(move || e2.shutdown())).await;
    if stopped.is_err() {
        tracing::warn!("workers did not finish within the grace period");
    }
    tracing::info!("tandem-agent stopped");
    served
}
