//! `tandem-hub run`: the engine on the cloud variants, the QUIC ingress for devices, the HTTP
//! API (OIP v2 REST, health, metrics); ready and watchdog reported to systemd, SIGHUP
//! reloads; until SIGTERM/SIGINT, then the shutdown tree (ARCHITECTURE.md "Shutdown").

use crate::api::{HttpError, HttpServer, HubApi};
use crate::config::Config;
use crate::ingress::quic::QuicIngress;
use std::net::SocketAddr;
use std::sync::Arc;
use tandem_engine::daemon::notify::Notifier;
use tandem_engine::daemon::shutdown::Shutdown;
use tandem_engine::{Engine, metrics::Metrics};

/// Why the hub stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// ONNX Runtime or the models.
    #[error(transparent)]
    Start(#[from] tandem_engine::engine::StartError),
    /// The feedback store (`feedback_dir`).
    #[error(transparent)]
    Feedback(#[from] crate::feedback::FeedbackError),
    /// The MQTT broker, the hub's MQTT client or the fleet database.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// QUIC ingress.
    #[error(transparent)]
    Ingress(#[from] crate::ingress::quic::IngressError),
    /// The QUIC address.
    #[error("quic.listen `{addr}`: {source}")]
    Quic {
        /// Address.
        addr: String,
        /// IO error.
        source: std::io::Error,
    },
    /// The HTTP API.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The claim store or the enrolment endpoint.
    #[error("enrolment: {0}")]
    Enrol(String),
    /// The PKI folder.
    #[error(transparent)]
    Revocation(#[from] crate::revocation::RevocationError),
}

/// Prometheus text: the engine's counters and histograms, model gauges (queue depth, model
/// info), and the QUIC ingress counters.
pub fn render_metrics(engine: &Engine, ingress: &crate::ingress::quic::IngressStats) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = engine
        .metrics()
        .render(&tandem_engine::metrics::model_gauges(engine));
    for (name, help, v) in [
        (
            "tandem_hub_quic_connections_accepted_total",
            "Device connections that completed the mTLS handshake.",
            &ingress.accepted,
        ),
        (
            "tandem_hub_quic_connections_refused_total",
            "Connections refused during the handshake (no, expired, revoked or foreign certificate).",
            &ingress.refused,
        ),
        (
            "tandem_hub_quic_streams_total",
            "Request streams answered.",
            &ingress.streams,
        ),
        (
            "tandem_hub_records_delivered_total",
            "Queued records devices delivered and the hub stored (hard examples, corrections, offline events and telemetry).",
            &ingress.delivered,
        ),
        (
            "tandem_hub_records_redelivered_total",
            "Deliveries already stored (an acknowledgement was lost): acknowledged again, not stored twice.",
            &ingress.redelivered,
        ),
    ] {
        tandem_engine::metrics::write_one(&mut out, name, "counter", help, v.load(Relaxed) as f64);
    }
    render_limits(&mut out, &ingress.limits);
    out
}

/// The QUIC limits' counters and gauges (`[quic.limits]`, `[feedback]`).
fn render_limits(out: &mut String, l: &crate::ingress::limits::LimitStats) {
    use std::sync::atomic::Ordering::Relaxed;
    for (name, kind, help, v) in [
        (
            "tandem_hub_quic_handshakes_refused_total",
            "counter",
            "Connections refused because quic.limits.max_handshakes handshakes were in progress.",
            &l.handshakes_refused,
        ),
        (
            "tandem_hub_quic_connections_over_cap_total",
            "counter",
            "Connections refused because quic.limits.max_connections were open.",
            &l.connections_refused,
        ),
        (
            "tandem_hub_quic_connections_replaced_total",
            "counter",
            "Connections closed because their device opened more than quic.limits.max_connections_per_device.",
            &l.connections_replaced,
        ),
        (
            "tandem_hub_quic_frames_refused_total",
            "counter",
            "Streams reset for a frame over its kind's size limit or slower than quic.limits.frame_timeout_ms.",
            &l.frames_refused,
        ),
        (
            "tandem_hub_records_over_quota_total",
            "counter",
            "Delivery streams refused (Busy) because the device was over its feedback quota.",
            &l.over_quota,
        ),
        (
            "tandem_hub_quic_handshakes",
            "gauge",
            "Connections in the TLS handshake now.",
            &l.handshakes,
        ),
        (
            "tandem_hub_quic_connections",
            "gauge",
            "Connections open now (handshakes included).",
            &l.connections,
        ),
    ] {
        tandem_engine::metrics::write_one(out, name, kind, help, v.load(Relaxed) as f64);
    }
}

/// Serves until a signal, then stops in the order ARCHITECTURE.md "Shutdown" gives, within
/// `shutdown_grace_ms` in all; a second signal exits at once (130).
pub async fn run(cfg: Config) -> Result<(), AppError> {
    let shutdown = Shutdown::new(std::time::Duration::from_millis(cfg.shutdown_grace_ms));
    shutdown.on_signals("tandem-hub");
    let notifier = Notifier::from_env();
    let settings = cfg.engine_settings();
    let engine = tokio::task::block_in_place(|| -> Result<Arc<Engine>, AppError> {
        let (_, engine) = tandem_engine::engine::start(&settings, Arc::new(Metrics::default()))?;
        Ok(Arc::new(engine))
    })?;
    let quic_addr: SocketAddr = cfg.quic.listen.parse().map_err(|_| AppError::Quic {
        addr: cfg.quic.listen.clone(),
        source: std::io::Error::other("not an address"),
    })?;
    let feedback_dir = cfg.feedback_dir();
    let feedback = Arc::new(tokio::task::block_in_place(|| {
        crate::feedback::Store::open(&feedback_dir).map(|s| s.with_config(cfg.feedback))
    })?);
    // A fresh CRL before anything reads it (the hub may have been down past its next_update).
    // A CRL that cannot be re-signed (pki_dir read-only) is an error in the log, not a refusal
    // to serve: the current one holds until its next_update, and every check tries again.
    let pki =
        crate::pki::Pki::open(&cfg.pki_dir()).map_err(crate::revocation::RevocationError::from)?;
    let crl = crate::revocation::sign_now(&pki, &cfg.pki)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "cannot re-sign the CRL at start (is pki_dir writable?)"))
        .ok();
    let ingress = QuicIngress::bind_with(quic_addr, &cfg.pki_dir(), cfg.quic.limits)?
        .with_engine(engine.clone())
        .with_feedback(feedback.clone());
    let quic_local = ingress.local_addr().map_err(|source| AppError::Quic {
        addr: cfg.quic.listen.clone(),
        source,
    })?;
    let (ingress, enrol, enroller) = crate::enrol::start(&cfg, ingress)?;
    // Devices' hub-assigned labels are their claims' (fleet view, rollout targets).
    let assigned = enroller.as_ref().map(|e| {
        Arc::new(crate::enrol::claims::ClaimLabels(e.claims().clone()))
            as Arc<dyn crate::fleet::AssignedLabels>
    });
    let mqtt = crate::fleet::FleetService::start_with(&cfg, assigned).await?;
    let mut api = HubApi::new(&cfg, engine.clone(), Some(ingress.stats()));
    if let Some(e) = enroller {
        api = api.with_enrolment(e);
    }
    let mut rollouts = None;
    let mut downloads = None;
    match crate::registry::Registry::open(&cfg.registry_dir()) {
        Ok(r) => {
            let registry = Arc::new(r);
            match crate::rollout::RolloutStore::open(&cfg.registry_dir().join(".rollouts")) {
                Ok(store) => {
                    rollouts = Some(store.clone());
                    api = api.with_rollouts(Arc::new(crate::rollout::http::RolloutApi {
                        store,
                        registry: registry.clone(),
                    }));
                }
                Err(e) => tracing::warn!(error = %e, "rollouts unavailable: /v1/rollouts is off"),
            }
            downloads = Some(registry.clone());
            api = api.with_registry(registry);
        }
        Err(e) => {
            tracing::warn!(error = %e, "model registry unavailable (registry_dir): /v1/models is off")
        }
    }
    api = api.with_feedback(feedback.clone());
    match crate::eval::store::SledReports::open(&cfg.eval_dir()) {
        Ok(reports) => {
            let reports: Arc<dyn crate::eval::store::ReportStore> = Arc::new(reports);
            if let Some(registry) = &downloads {
                let train = crate::train::service::TrainService::from_config(
                    &cfg,
                    reports.clone(),
                    Some(feedback.clone()),
                    registry.clone(),
                    rollouts.clone(),
                );
                api = api.with_train(Arc::new(crate::train::http::TrainApi::new(Arc::new(train))));
            }
            let evaluator = crate::eval::Evaluator {
                settings: cfg.engine_settings(),
                cfg: cfg.eval.clone(),
                reports,
                feedback: Some(feedback.clone()),
            };
            let fleet = mqtt.as_ref().map(|m| m.fleet());
            api = api.with_eval(Arc::new(crate::eval::http::EvalApi::new(
                Arc::new(evaluator),
                fleet,
            )));
        }
        Err(e) => {
            tracing::warn!(error = %e, "evaluation reports unavailable (eval.dir): /v1/eval is off")
        }
    }
    let calibrations = match crate::calibrate::store::SledCalibrations::open(&cfg.calibrate_dir()) {
        Ok(store) => {
            let store: Arc<dyn crate::calibrate::store::CalibrationStore> = Arc::new(store);
            let calibrator = crate::calibrate::Calibrator {
                settings: cfg.engine_settings(),
                cfg: cfg.calibrate.clone(),
                store: store.clone(),
                feedback: feedback.clone(),
            };
            api = api.with_calibrate(Arc::new(crate::calibrate::http::CalibrateApi::new(
                Arc::new(calibrator),
                mqtt.as_ref().map(|m| m.fleet()),
            )));
            Some(store)
        }
        Err(e) => {
            tracing::warn!(error = %e, "calibration store unavailable (calibrate.dir): /v1/calibrations is off");
            None
        }
    };
    if let Some(m) = &mqtt {
        api = api.with_fleet(m.fleet());
        // Telemetry a device queued while its broker was unreachable updates the fleet state
        // when it is delivered (newest sample wins; fleet::store).
        let fleet = m.fleet().store().clone();
        feedback.on_telemetry(Box::new(move |device, payload| {
            fleet.late_telemetry(device, payload, crate::fleet::link::now_ms());
        }));
    }
    let ingress = match downloads {
        Some(r) => ingress.with_registry(r),
        None => ingress,
    };
    let api = Arc::new(api);
    let token_file = cfg.operator_token_file();
    if crate::api::auth::create_token_file(&token_file).map_err(HttpError::from)? {
        tracing::info!(file = %token_file.display(), "operator token created (0600; the hub's CLIs use it)");
    }
    let server = HttpServer::bind(&cfg, api).await?;
    let (http_local, https) = (server.local_addr(), server.is_tls());
    let models: Vec<String> = engine
        .models()
        .map(|m| format!("{}@{}({})", m.name(), m.files.manifest.version, m.ep))
        .collect();
    tracing::info!(quic = %quic_local, http = %http_local, https, models = %models.join(", "), "tandem-hub serving");
    let tasks = shutdown.tasks().clone();
    let listeners = crate::revocation::Listeners {
        quic: Some(ingress.reload()),
        https: server.tls_reload(),
    };
    let revocation =
        crate::revocation::Revocation::new(pki, cfg.pki.clone(), crl.as_ref(), listeners);
    tasks.spawn(revocation.run(shutdown.child().cancelled_owned()));
    let ingress = Arc::new(ingress);
    let (i, accept_stop) = (ingress.clone(), shutdown.child());
    let mut quic = tasks.spawn(async move { i.serve(accept_stop.cancelled_owned()).await });
    let rollout_stop = shutdown.child();
    tasks.spawn(crate::feedback::retention::run(
        feedback.clone(),
        shutdown.child().cancelled_owned(),
    ));
    tasks.spawn(crate::feedback::teacher::run(
        feedback.clone(),
        engine.clone(),
        shutdown.child().cancelled_owned(),
    ));
    let enrol = enrol.map(|e| tasks.spawn(e.run(shutdown.child().cancelled_owned())));
    if let (Some(m), Some(store)) = (&mqtt, rollouts) {
        let tick = std::time::Duration::from_secs(2);
        tasks.spawn(crate::rollout::controller::run(
            store,
            m.fleet(),
            tick,
            rollout_stop.clone().cancelled_owned(),
        ));
    }
    if let (Some(m), Some(store)) = (&mqtt, calibrations) {
        tasks.spawn(crate::calibrate::push::run(
            store,
            m.fleet(),
            cfg.calibrate.clone(),
            rollout_stop.clone().cancelled_owned(),
        ));
    }
    let mut http = tasks.spawn(server.run(shutdown.child().cancelled_owned()));
    tandem_engine::daemon::watchdog::spawn(&tasks, &engine, &notifier, shutdown.child());
    let mut running = cfg.clone();
    tandem_engine::daemon::shutdown::on_hangup(shutdown.child(), move || {
        crate::reload::on_hangup(&mut running)
    });
    notifier.ready(&format!("serving: QUIC {quic_local}, HTTP {http_local}"));
    tokio::select! {
        () = shutdown.token().cancelled() => {}
        r = &mut http => {
            tracing::error!(result = ?r, "HTTP API stopped on its own: stopping");
            shutdown.token().cancel();
        }
    }
    notifier.stopping();
    let d = shutdown.deadline();
    // 1-2. Stop accepting (HTTP, QUIC connections and streams); requests, deliveries (each
    // stored and fsynced before its acknowledgement) and downloads in flight finish.
    if !http.is_finished()
        && let Some(Ok(Err(e))) = d.step("HTTP requests in flight", &mut http).await
    {
        tracing::error!(error = %e, "HTTP API stopped with an error");
    }
    d.step("QUIC streams in flight", &mut quic).await;
    if let Some(e) = enrol {
        d.step("enrolment requests in flight", e).await;
    }
    // 3. Rollouts and threshold pushes stop stepping; 4. MQTT: the hub's client and the broker stop.
    rollout_stop.cancel();
    if let Some(m) = mqtt {
        d.step("MQTT disconnect", m.stop()).await;
    }
    // 5. QUIC: connections closed, the endpoint idle.
    d.step("QUIC close", ingress.close()).await;
    tasks.close();
    d.step("tasks", tasks.wait()).await;
    d.stop_engine(engine).await;
    tracing::info!("tandem-hub stopped");
    Ok(())
}
