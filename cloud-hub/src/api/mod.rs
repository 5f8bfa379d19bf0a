//! The hub's HTTP API: OIP v2 REST on the cloud variants (the engine's shared handlers, answered
//! straight from the hub's engine, dynamically batched), `/metrics`, and health; over HTTP, or
//! HTTPS with client certificates, with operator bearer tokens.
//!
//! # Layout
//! - [`auth`]: operator bearer tokens (files, constant-time check).
//! - [`rights`]: route classes × principals, the one table of who may call what.
//! - [`gate`]: the middleware that applies it (Host, Origin, principal, rights, body type).
//! - [`https`]: the TLS listener (mutual TLS, handshakes off the accept path).
//! - this file: the [`OipService`] of the hub, and [`HttpServer`] (bind, serve until stopped).

pub mod auth;
pub mod gate;
pub mod https;
pub mod rights;

use crate::config::Config;
use crate::ingress::quic::IngressStats;
use crate::ingress::tls::{self, TlsError};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tandem_engine::Engine;
use tandem_engine::http::error::ApiError;
use tandem_engine::http::serve::{PlainTcp, serve};
use tandem_engine::http::{self, Answered, ApiContext, Call, Limits, OipService};

/// Why the HTTP API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Bind {
        /// The address.
        addr: String,
        /// IO error.
        source: std::io::Error,
    },
    /// The token file (`http.bearer_token_file`).
    #[error("http.bearer_token_file: {0}")]
    Tokens(#[from] auth::AuthError),
    /// TLS material for `http.tls`.
    #[error("http.tls: {0}")]
    Tls(#[from] TlsError),
    /// Serving failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// What the hub's handlers reach: the engine, the limits, and the QUIC counters for `/metrics`.
#[derive(Debug)]
pub struct HubApi {
    context: ApiContext,
    ingress: Option<Arc<IngressStats>>,
    fleet: Option<Arc<crate::fleet::Fleet>>,
    registry: Option<Arc<crate::registry::Registry>>,
    rollouts: Option<Arc<crate::rollout::http::RolloutApi>>,
    enrolment: Option<Arc<crate::enrol::Enroller>>,
    feedback: Option<Arc<crate::feedback::Store>>,
    eval: Option<Arc<crate::eval::http::EvalApi>>,
    train: Option<Arc<crate::train::http::TrainApi>>,
    calibrate: Option<Arc<crate::calibrate::http::CalibrateApi>>,
}

impl HubApi {
    /// The API over an engine, with the `[http]` limits; `ingress` adds the QUIC counters to
    /// `/metrics`.
    pub fn new(cfg: &Config, engine: Arc<Engine>, ingress: Option<Arc<IngressStats>>) -> Self {
        let limits = Limits {
            max_body_bytes: cfg.http.max_body_bytes,
            request_timeout: Duration::from_millis(cfg.http.request_timeout_ms),
            max_inflight_body_bytes: cfg.http.max_inflight_body_bytes,
            section: "http",
        };
        Self {
            context: ApiContext {
                engine,
                limits,
                server_name: "tandem-hub",
            },
            ingress,
            fleet: None,
            registry: None,
            rollouts: None,
            enrolment: None,
            feedback: None,
            eval: None,
            train: None,
            calibrate: None,
        }
    }

    /// Adds the fleet: its routes (`/v1/fleet...`) and its metrics (broker, MQTT, devices).
    pub fn with_fleet(mut self, fleet: Arc<crate::fleet::Fleet>) -> Self {
        self.fleet = Some(fleet);
        self
    }
}

impl HubApi {
    /// Adds the model registry's routes (`/v1/models`).
    pub fn with_registry(mut self, registry: Arc<crate::registry::Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Adds the rollouts' routes (`/v1/rollouts`).
    pub fn with_rollouts(mut self, rollouts: Arc<crate::rollout::http::RolloutApi>) -> Self {
        self.rollouts = Some(rollouts);
        self
    }

    /// Adds the feedback store's routes (`/v1/feedback/...`) and its metrics.
    pub fn with_feedback(mut self, store: Arc<crate::feedback::Store>) -> Self {
        self.feedback = Some(store);
        self
    }

    /// Adds the evaluation routes (`/v1/eval...`).
    pub fn with_eval(mut self, eval: Arc<crate::eval::http::EvalApi>) -> Self {
        self.eval = Some(eval);
        self
    }

    /// Adds the training routes (`/v1/train...`).
    pub fn with_train(mut self, train: Arc<crate::train::http::TrainApi>) -> Self {
        self.train = Some(train);
        self
    }

    /// Adds the calibration routes (`/v1/calibrations...`, `/v1/thresholds...`).
    pub fn with_calibrate(mut self, api: Arc<crate::calibrate::http::CalibrateApi>) -> Self {
        self.calibrate = Some(api);
        self
    }

    /// Adds the claims' routes (`/v1/claims`, `/v1/enrolments`) and the enrolment counters.
    pub fn with_enrolment(mut self, enroller: Arc<crate::enrol::Enroller>) -> Self {
        self.enrolment = Some(enroller);
        self
    }
}

/// The `parameters` of the hub's OIP v2 answers: the variant and provider that ran, the
/// timings and, for a single row, its classification or boxes.
#[derive(serde::Serialize)]
struct HubParameters {
    variant: &'static str,
    ep: &'static str,
    latency_ms: f64,
    batch_size: usize,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    row: Option<http::params::RowParameters>,
}

impl OipService for HubApi {
    fn context(&self) -> &ApiContext {
        &self.context
    }

    /// From the engine (the cloud variant, batched with whatever else is queued); a request's
    /// `deadline_ms` bounds the wait (504 after). The parameters carry the batch size.
    async fn answer(&self, call: Call<'_>) -> Result<Answered, ApiError> {
        let run = self.context.engine.infer(call.model, call.input);
        let mut inference = match call.deadline_ms.filter(|d| *d > 0) {
            None => run.await?,
            Some(d) => tokio::time::timeout(Duration::from_millis(u64::from(d)), run)
                .await
                .map_err(|_| {
                    ApiError::Timeout(format!("no answer within the {d} ms deadline"))
                })??,
        };
        if let Some(k) = call.top_k {
            self.context.engine.with_top_k(&mut inference, k);
        }
        // Routing is the agent's business: the hub always answers with its own model.
        let parameters = http::params::to_map(&HubParameters {
            variant: inference.variant.as_str(),
            ep: inference.ep.as_str(),
            latency_ms: inference.timing.total_us as f64 / 1000.0,
            batch_size: inference.timing.batch_size,
            row: (inference.predictions.len().max(inference.detections.len()) == 1)
                .then(|| http::params::RowParameters::of(&inference, 0))
                .flatten(),
        });
        Ok(Answered {
            inference,
            parameters,
        })
    }

    fn metrics_text(&self) -> String {
        let engine = &self.context.engine;
        let mut text = match &self.ingress {
            Some(stats) => crate::app::render_metrics(engine, stats),
            None => engine
                .metrics()
                .render(&tandem_engine::metrics::model_gauges(engine)),
        };
        if let Some(f) = &self.fleet {
            text.push_str(&f.render());
        }
        if let Some(e) = &self.enrolment {
            text.push_str(&e.render());
        }
        if let Some(f) = &self.feedback {
            text.push_str(&crate::feedback::http::render(f));
        }
        tandem_engine::daemon::process::render(
            &mut text,
            tandem_buildinfo::VERSION,
            tandem_buildinfo::COMMIT,
        );
        text
    }
}

/// The router: OIP v2 and `/metrics` (and the fleet's, registry's and rollouts' routes),
/// behind the [`gate`].
pub fn router(api: Arc<HubApi>, gate: gate::Gate) -> Router {
    let mut routes = http::routes::<HubApi>();
    if let Some(f) = &api.fleet {
        routes = routes.merge(crate::fleet::http::routes(f.clone()));
    }
    if let Some(r) = &api.registry {
        routes = routes.merge(crate::registry::http::routes(r.clone()));
    }
    if let Some(r) = &api.rollouts {
        routes = routes.merge(crate::rollout::http::routes(r.clone()));
    }
    if let Some(e) = &api.enrolment {
        routes = routes.merge(crate::enrol::http::routes(e.claims().clone()));
    }
    if let Some(f) = &api.feedback {
        routes = routes.merge(crate::feedback::http::routes(f.clone()));
    }
    if let Some(e) = &api.eval {
        routes = routes.merge(crate::eval::http::routes(e.clone()));
    }
    if let Some(t) = &api.train {
        routes = routes.merge(crate::train::http::routes(t.clone()));
    }
    if let Some(c) = &api.calibrate {
        routes = routes.merge(crate::calibrate::http::routes(c.clone()));
    }
    routes = routes.merge(crate::console::routes(gate.sessions.clone(), gate.tls));
    let routes = routes.layer(axum::middleware::from_fn_with_state(
        Arc::new(gate),
        gate::check,
    ));
    http::finish(routes, api)
}

/// The bound HTTP API, ready to serve.
pub struct HttpServer {
    tcp: tokio::net::TcpListener,
    tls: Option<https::TlsHandshake>,
    local: SocketAddr,
    app: Router,
    limits: http::ConnLimits,
    metrics: Arc<tandem_engine::metrics::Metrics>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpServer({}, tls: {})", self.local, self.tls.is_some())
    }
}

impl HttpServer {
    /// Binds `http.listen` with the `[http]` authentication (the operator token file of
    /// `pki_dir` when there is one, `http.bearer_token_file`, TLS from `pki_dir`).
    pub async fn bind(cfg: &Config, api: Arc<HubApi>) -> Result<Self, HttpError> {
        let operator = cfg.operator_token_file();
        let operator = operator
            .exists()
            .then(|| auth::Tokens::load(&operator))
            .transpose()?;
        let configured = cfg
            .bearer_token_file()
            .map(|p| auth::Tokens::load(&p))
            .transpose()?;
        let tokens = match (operator, configured) {
            (Some(a), Some(b)) => Some(a.join(b)),
            (a, b) => a.or(b),
        };
        let bind_err = |source| HttpError::Bind {
            addr: cfg.http.listen.clone(),
            source,
        };
        let tls_config = if cfg.http.tls {
            Some(tls::https_config(&cfg.pki_dir())?)
        } else {
            None
        };
        let tcp = tokio::net::TcpListener::bind(&cfg.http.listen)
            .await
            .map_err(bind_err)?;
        let local = tcp.local_addr().map_err(bind_err)?;
        let limits = http::ConnLimits::from_config(
            "http",
            cfg.http.max_connections,
            cfg.http.header_read_timeout_ms,
            cfg.http.idle_timeout_ms,
            cfg.http.request_timeout_ms,
        );
        if !cfg.http.is_loopback() {
            tracing::info!(listen = %local, tokens = tokens.is_some(), tls = cfg.http.tls, "HTTP API off loopback: authenticated");
        }
        let gate = gate::Gate {
            tokens,
            open: !cfg.http.tls && cfg.bearer_token_file().is_none(),
            hosts: gate::HostPolicy::new(
                &[
                    cfg.http.allowed_hosts.clone(),
                    gate::hub_cert_names(&cfg.pki_dir()),
                ]
                .concat(),
                local,
            ),
            sessions: Arc::default(),
            tls: cfg.http.tls,
        };
        Ok(Self {
            tcp,
            tls: tls_config.map(https::TlsHandshake::new),
            local,
            metrics: api.context.engine.metrics().clone(),
            app: router(api, gate),
            limits,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The handle that replaces the HTTPS server configuration (a new CRL), when it serves
    /// HTTPS.
    pub fn tls_reload(&self) -> Option<Arc<https::TlsReload>> {
        self.tls.as_ref().map(https::TlsHandshake::reload)
    }

    /// Serves until `stop` completes, then lets in-flight requests finish.
    pub async fn run(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HttpError> {
        tracing::info!(
            listen = %self.local,
            max_connections = self.limits.max_connections,
            "HTTP API connection cap"
        );
        let (app, limits, metrics) = (self.app, self.limits, self.metrics);
        match self.tls {
            Some(tls) => serve(self.tcp, tls, app, limits, metrics, stop).await,
            None => serve(self.tcp, PlainTcp, app, limits, metrics, stop).await,
        }
        Ok(())
    }
}
