//! `tandem-agent run`: load the runtime and models, serve the local API, report ready and feed
//! the watchdog (systemd `Type=notify`), reload on SIGHUP, and shut down on SIGTERM/SIGINT
//! through the shutdown tree (ARCHITECTURE.md "Shutdown"). A second signal exits at once (130).

use crate::api::{self, AppState};
use crate::config::Config;
use crate::inference::Engine;
use crate::inference::engine::StartError;
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tandem_engine::daemon::notify::Notifier;
use tandem_engine::daemon::shutdown::Shutdown;
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
    let dir = settings.resolve(&settings.models.dir);
    // Images leave only through the hub link or the broker: the blur needs the face detector.
    let linked = !cfg.hub.address.is_empty() || !cfg.mqtt.url.is_empty();
    if linked && crate::privacy::needs_face_model(&cfg.privacy, &dir, &settings.models.enabled) {
        // `[privacy]`: loaded like the other models, served too.
        settings.models.enabled.push(cfg.privacy.face_model.clone());
    }
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
    if !cfg.policy.thresholds_file.as_os_str().is_empty() {
        router = router.with_thresholds(crate::hybrid::thresholds::Overrides::open(
            &cfg.resolve(&cfg.policy.thresholds_file),
        ));
    }
    if let Some(device) = device_name(cfg) {
        router = router.with_device(device);
    }
    if let Some(f) = feedback {
        router = router.with_feedback(f);
    }
    let privacy = crate::privacy::start(cfg, &router);
    router = router.with_privacy(privacy);
    Ok(Arc::new(router))
}

/// The device's name for log spans: its certificate's CN (`hub.cert`), when it has one.
fn device_name(cfg: &Config) -> Option<String> {
    use rustls_pki_types::pem::PemObject;
    if cfg.hub.cert.as_os_str().is_empty() {
        return None;
    }
    let der = rustls_pki_types::CertificateDer::from_pem_file(cfg.resolve(&cfg.hub.cert)).ok()?;
    crate::uplink::mqtt::identity::common_name(&der)
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

/// Runs the daemon until a signal, then stops in the order ARCHITECTURE.md "Shutdown" gives,
/// within `server.shutdown_grace_ms` in all.
pub async fn run(cfg: Config) -> Result<(), AppError> {
    let shutdown = Shutdown::new(Duration::from_millis(cfg.server.shutdown_grace_ms));
    shutdown.on_signals("tandem-agent");
    let notifier = Notifier::from_env();
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
    let router = start_router_with(&cfg, engine.clone(), Some(feedback.clone()))?;
    let tasks = shutdown.tasks().clone();
    let deliver_stop = shutdown.child();
    if let Some(u) = router.uplink() {
        u.keep();
        tasks.spawn(crate::uplink::deliver::run_until(
            Arc::downgrade(u),
            queue.clone(),
            wake,
            deliver_stop.clone(),
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
    let state = Arc::new(AppState::new(&cfg, router.clone()));
    state
        .cameras
        .set_sink(mqtt.as_ref().map(|m| m.object_sink()));
    if let Some(m) = &mqtt {
        m.serve_snapshots(&state, &cfg.cameras.snapshots);
        m.reporter().list_cameras(&state);
    }
    let app = api::router(state.clone());
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
    // Stops taking connections when cancelled, then waits for the requests in flight.
    let mut http = tasks.spawn(tandem_engine::http::serve::serve(
        listener,
        tandem_engine::http::serve::PlainTcp,
        app,
        limits,
        engine.metrics().clone(),
        shutdown.child().cancelled_owned(),
    ));
    tandem_engine::daemon::watchdog::spawn(&tasks, &engine, &notifier, shutdown.child());
    let (mut running, r) = (cfg.clone(), router.clone());
    tandem_engine::daemon::shutdown::on_hangup(shutdown.child(), move || {
        crate::reload::on_hangup(&mut running, &r)
    });
    let models: Vec<String> = engine
        .models()
        .map(|m| format!("{}@{}({})", m.name(), m.files.manifest.version, m.ep))
        .collect();
    tracing::info!(listen = %local, models = %models.join(", "), "tandem-agent serving");
    notifier.ready(&format!("serving on {local}"));
    tokio::select! {
        () = shutdown.token().cancelled() => {}
        r = &mut http => {
            tracing::error!(result = ?r, "the local API stopped on its own: stopping");
            shutdown.token().cancel();
        }
    }
    notifier.stopping();
    let d = shutdown.deadline();
    // 1-2. Stop accepting; requests in flight finish.
    if !http.is_finished() {
        d.step("HTTP requests in flight", &mut http).await;
    }
    // 2b. Camera streams: the frame in flight finishes, the waiting ones are counted, live
    // tracks end (`gone` events, while MQTT is still up).
    d.step("camera streams", state.cameras.shutdown()).await;
    // 3. The queue: no new delivery round; hard examples waiting are written (flushed).
    deliver_stop.cancel();
    d.step("hard examples to the queue", feedback.flush()).await;
    // 4. MQTT: offline published, disconnected.
    if let Some(m) = mqtt {
        d.step("MQTT disconnect", m.shutdown(shutdown.grace()))
            .await;
    }
    // 5. QUIC: the delivery round in progress ends, then the connection closes.
    tasks.close();
    d.step("delivery round and watchdog", tasks.wait()).await;
    if let Some(u) = router.uplink() {
        d.step("QUIC close", u.close()).await;
    }
    d.stop_engine(engine).await;
    tracing::info!("tandem-agent stopped");
    Ok(())
}
