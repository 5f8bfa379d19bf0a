//! `tandem-hub run`: the engine on the cloud variants, the QUIC ingress for devices, the HTTP
//! health and metrics endpoints; until SIGTERM/SIGINT, then a drain.

use crate::config::Config;
use crate::ingress::quic::QuicIngress;
use axum::Router;
use axum::routing::get;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use tandem_engine::{Engine, metrics::Metrics};

/// Why the hub stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// ONNX Runtime or the models.
    #[error(transparent)]
    Start(#[from] tandem_engine::engine::StartError),
    /// QUIC ingress.
    #[error(transparent)]
    Ingress(#[from] crate::ingress::quic::IngressError),
    /// HTTP.
    #[error("HTTP on {addr}: {source}")]
    Http {
        /// Address.
        addr: String,
        /// IO error.
        source: std::io::Error,
    },
}

async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut t) => {
                t.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

/// Prometheus text: the engine's counters, queue depths, and the QUIC ingress counters.
pub fn render_metrics(engine: &Engine, ingress: &crate::ingress::quic::IngressStats) -> String {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let gauges: Vec<_> = engine
        .models()
        .map(|m| {
            (
                "tandem_queue_depth",
                "Requests waiting in a model's queue.",
                vec![("model", m.name().to_string())],
                m.queue_depth() as f64,
            )
        })
        .collect();
    let mut out = engine.metrics().render(&gauges);
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
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Relaxed)
        );
    }
    out
}

/// Serves until a signal.
pub async fn run(cfg: Config) -> Result<(), AppError> {
    let settings = cfg.engine_settings();
    let engine = tokio::task::block_in_place(|| -> Result<Arc<Engine>, AppError> {
        let (_, engine) = tandem_engine::engine::start(&settings, Arc::new(Metrics::default()))?;
        Ok(Arc::new(engine))
    })?;
    let quic_addr: SocketAddr = cfg.quic.listen.parse().map_err(|_| AppError::Http {
        addr: cfg.quic.listen.clone(),
        source: std::io::Error::other("quic.listen is not an address"),
    })?;
    let ingress = QuicIngress::bind(quic_addr, &cfg.pki_dir())?.with_engine(engine.clone());
    let quic_local = ingress.local_addr().map_err(|source| AppError::Http {
        addr: cfg.quic.listen.clone(),
        source,
    })?;
    let (e2, stats) = (engine.clone(), ingress.stats());
    let app = Router::new()
        .route("/v2/health/live", get(|| async { "{\"live\":true}" }))
        .route(
            "/metrics",
            get(move || {
                let (e, st) = (e2.clone(), stats.clone());
                async move { render_metrics(&e, &st) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .map_err(|source| AppError::Http {
            addr: cfg.http.listen.clone(),
            source,
        })?;
    let http_local = listener.local_addr().map_err(|source| AppError::Http {
        addr: cfg.http.listen.clone(),
        source,
    })?;
    let models: Vec<String> = engine
        .models()
        .map(|m| format!("{}@{}({})", m.name(), m.files.manifest.version, m.ep))
        .collect();
    tracing::info!(quic = %quic_local, http = %http_local, models = %models.join(", "), "tandem-hub serving");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let quic = tokio::spawn(ingress.run(stopped(stop_rx.clone())));
    let http = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped(stop_rx))
            .into_future(),
    );
    signal().await;
    tracing::info!("signal received: stopping");
    let _ = stop_tx.send(true);
    let _ = quic.await;
    let _ = http.await;
    let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    tracing::info!("tandem-hub stopped");
    Ok(())
}
