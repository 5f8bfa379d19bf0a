//! `tandem-agent run`: load the runtime and models, serve the local API, and shut down
//! gracefully on SIGTERM/SIGINT (stop accepting, finish in-flight requests within the grace
//! period, stop the workers). A second signal exits at once.

use crate::api::{self, AppState};
use crate::config::Config;
use crate::inference::Engine;
use crate::inference::engine::StartError;
use crate::telemetry::Metrics;
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
    /// Every enabled model has no variant for this device (at least one must run locally).
    #[error(
        "every enabled model needs the hub (no local variant): enable at least one that runs here"
    )]
    NoLocalModel,
    /// The durable queue cannot be opened (and was not a corrupt database: that one is moved
    /// aside and replaced).
    #[error("queue ({}): {source}", dir.display())]
    Queue {
        /// Its folder.
        dir: std::path::PathBuf,
        /// Why.
        source: crate::queue::QueueError,
    },
    /// MQTT cannot be set up (`[mqtt]`, certificates).
    #[error("[mqtt]: {0}")]
    Mqtt(crate::uplink::mqtt::MqttError),
    /// Serving failed.
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    /// Enrolment at start (`hub.enrol_address`) failed.
    #[error("enrolment (hub.enrol_address): {0}")]
    Enrol(crate::enrol::EnrolError),
}

/// Loads the runtime and the engine for a config.
///
/// With a hub configured, an enabled model whose manifest has no variant for this device but a
/// cloud one is left to the hub (see [`start_router`]) instead of failing start-up.
pub fn start_engine(cfg: &Config) -> Result<Arc<Engine>, AppError> {
    // An installed model version loads only if it verifies again (signature, sha256).
    crate::models::check_installed(&cfg.engine_settings());
    let mut settings = cfg.engine_settings();
    if !cfg.hub.address.is_empty() && !settings.models.enabled.is_empty() {
        let dir = settings.resolve(&settings.models.dir);
        let role = settings.variant();
        settings
            .models
            .enabled
            .retain(|m| !crate::hybrid::Router::is_remote_only(&dir, m, role));
        if settings.models.enabled.is_empty() {
            return Err(AppError::NoLocalModel);
        }
    }
    let (_, engine) = tandem_engine::engine::start(&settings, Arc::new(Metrics::default()))?;
    Ok(Arc::new(engine))
}

/// The router: the engine plus, when `[hub]` names an address, the link to the hub.
pub fn start_router(
    cfg: &Config,
    engine: Arc<Engine>,
) -> Result<Arc<crate::hybrid::Router>, AppError> {
    start_router_with(cfg, engine, None)
}

/// [`start_router`] with the feedback side (hard examples, corrections) attached.
pub fn start_router_with(
    cfg: &Config,
    engine: Arc<Engine>,
    feedback: Option<Arc<crate::feedback::Feedback>>,
) -> Result<Arc<crate::hybrid::Router>, AppError> {
    let uplink = if cfg.hub.address.is_empty() {
        None
    } else {
        let u = crate::uplink::Uplink::new(&cfg.hub, |p| cfg.resolve(p)).map_err(AppError::Hub)?;
        tracing::info!(hub = %cfg.hub.address, mode = ?cfg.policy.mode, "offloading to the hub per policy");
        Some(Arc::new(u))
    };
    let settings = cfg.engine_settings();
    let remote = crate::hybrid::Router::discover_remote(
        &settings.resolve(&settings.models.dir),
        &settings.models.enabled,
        settings.variant(),
    );
    let updates = (uplink.is_some() && !settings.models.trusted_key.is_empty())
        .then(|| Arc::new(crate::models::Manager::new(engine.clone(), &settings)));
    let mut router =
        crate::hybrid::Router::new(engine, uplink, cfg.policy.clone()).with_remote(remote);
    if let Some(m) = updates {
        router = router.with_models(m);
    }
    router = router.with_labels(cfg.labels.clone());
    if let Some(f) = feedback {
        router = router.with_feedback(f);
    }
    Ok(Arc::new(router))
}

/// Opens the durable queue at `queue.dir` (resolved against the config's folder).
pub fn open_queue(cfg: &Config) -> Result<Arc<dyn crate::queue::Queue>, AppError> {
    let qc = crate::queue::QueueConfig {
        dir: cfg.resolve(&cfg.queue.dir),
        ..cfg.queue.clone()
    };
    let q =
        tokio::task::block_in_place(|| crate::queue::SledQueue::open(&qc)).map_err(|source| {
            AppError::Queue {
                dir: qc.dir.clone(),
                source,
            }
        })?;
    let s = crate::queue::Queue::stats(&q);
    tracing::info!(dir = %qc.dir.display(), epoch = s.epoch, records = s.depth(), bytes = s.bytes(), "queue open");
    Ok(Arc::new(q))
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
    let queue = open_queue(&cfg)?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let feedback =
        crate::feedback::Feedback::start(queue.clone(), cfg.feedback.clone(), wake.clone());
    if crate::enrol::needs_enrolment(&cfg) {
        crate::enrol::enrol_at_start(&cfg)
            .await
            .map_err(AppError::Enrol)?;
    }
    if !cfg.hub.address.is_empty() {
        // A certificate switch cut short by a crash is finished before the files are read.
        crate::enrol::recover(&cfg.resolve(&cfg.hub.key), &cfg.resolve(&cfg.hub.cert))
            .map_err(|e| AppError::Hub(crate::uplink::UplinkError::Setup(e.to_string())))?;
    }
    let router = start_router_with(&cfg, engine.clone(), Some(feedback))?;
    if let Some(u) = router.uplink() {
        u.keep();
        tokio::spawn(crate::uplink::deliver::run(
            Arc::downgrade(u),
            queue.clone(),
            wake,
        ));
    }
    let mqtt = crate::telemetry::MqttService::start(&cfg, router.clone(), Some(queue.clone()))
        .map_err(AppError::Mqtt)?;
    if let Some(u) = router.uplink() {
        let link = mqtt.as_ref().map(|m| m.link().clone());
        tokio::spawn(crate::enrol::renew::run(
            Arc::downgrade(u),
            Arc::new(cfg.clone()),
            link,
        ));
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
    let limits = tandem_engine::http::ConnLimits::from_config(
        "server",
        cfg.server.max_connections,
        cfg.server.header_read_timeout_ms,
        cfg.server.idle_timeout_ms,
        cfg.server.request_timeout_ms,
    );
    tracing::info!(
        max_connections = limits.max_connections,
        "local API connection cap"
    );
    let server = tandem_engine::http::serve::serve(
        listener,
        tandem_engine::http::serve::PlainTcp,
        app,
        limits,
        engine.metrics().clone(),
        stopped(stop_rx.clone()),
    );
    let served = tokio::select! {
        () = server => Ok(()),
        () = async { stopped(stop_rx).await; tokio::time::sleep(grace).await } => {
            tracing::warn!("in-flight requests did not finish within the grace period");
            Ok(())
        }
    };
    if let Some(m) = mqtt {
        m.shutdown(Duration::from_secs(2)).await;
    }
    let e2 = engine.clone();
    let stopped =
        tokio::time::timeout(grace, tokio::task::spawn_blocking(move || e2.shutdown())).await;
    if stopped.is_err() {
        tracing::warn!("workers did not finish within the grace period");
    }
    tracing::info!("tandem-agent stopped");
    served
}
