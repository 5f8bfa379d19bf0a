//! The local HTTP API that applications on the device call.
//!
//! # Layout
//! - [`error`]: the JSON error body and status of every failure (the engine's
//!   `tandem_engine::http::error`).
//! - OIP v2 (health, metadata, infer; binary tensor and classification extensions) and
//!   `/metrics`: the engine's shared handlers (`tandem_engine::http`), answering through the
//!   hybrid router (this file's [`OipService`] implementation).
//! - [`classify`]: `POST /v1/classify/{model}` with raw image bytes or text.
//! - [`camera`]: per-camera frame streams (`/v1/cameras/...`).
//! - [`frame`]: raw camera frames (RGB24, NV12, YUYV) described by the query.
//! - [`detect`]: `POST /v1/detect/{model}` with raw image bytes: boxes.
//! - [`feedback`]: `POST /v1/feedback`: a person's correction of an earlier answer.
//! - this file: the router and shared state.

pub mod camera;
pub mod classify;
pub mod detect;
pub mod feedback;
pub mod frame;

pub use tandem_engine::http::error;

use crate::config::Config;
use crate::inference::Engine;
use axum::Router;
use axum::routing::post;
use error::ApiError;
use std::sync::Arc;
use std::time::Duration;
use tandem_engine::http::{self, Answered, ApiContext, Call, Limits, OipService};

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// Local inference plus offloading per policy.
    pub router: Arc<crate::hybrid::Router>,
    /// The router's engine, the `[server]` limits, the server name.
    pub context: ApiContext,
    /// Per-camera frame streams.
    pub cameras: crate::camera::Cameras,
}

impl AppState {
    /// State for a config and a started engine.
    pub fn new(cfg: &Config, router: Arc<crate::hybrid::Router>) -> Self {
        let limits = Limits {
            max_body_bytes: cfg.server.max_body_bytes,
            request_timeout: Duration::from_millis(cfg.server.request_timeout_ms),
            max_inflight_body_bytes: cfg.server.max_inflight_body_bytes,
            section: "server",
        };
        Self {
            context: ApiContext {
                engine: router.engine().clone(),
                limits,
                server_name: "tandem-agent",
            },
            router,
            cameras: crate::camera::Cameras::new(
                cfg.cameras.clone(),
                tandem_engine::preprocess::image::Limits::from(&cfg.image),
            ),
        }
    }

    /// The engine (the router's).
    pub fn engine(&self) -> &Arc<Engine> {
        self.router.engine()
    }

    /// Body and time limits.
    pub fn limits(&self) -> &Limits {
        &self.context.limits
    }
}

impl OipService for AppState {
    fn context(&self) -> &ApiContext {
        &self.context
    }

    /// The engine's metrics and model gauges, the route mix, the MQTT link's counters, and
    /// the process and build-info families.
    fn metrics_text(&self) -> String {
        let engine = self.engine();
        let mut text = engine
            .metrics()
            .render(&tandem_engine::metrics::model_gauges(engine));
        self.router.counters().render(&mut text);
        crate::hybrid::thresholds::render(&mut text, self.router.thresholds().into_iter());
        self.cameras.render(&mut text);
        crate::uplink::report::render(
            &mut text,
            self.router.uplink().map(|u| &**u),
            self.router.feedback().map(|f| &**f),
        );
        if let Some(p) = self.router.privacy() {
            crate::privacy::report::render(&mut text, p);
        }
        tandem_engine::daemon::process::render(
            &mut text,
            tandem_buildinfo::VERSION,
            tandem_buildinfo::COMMIT,
        );
        text
    }

    /// Through the hybrid router: the outputs are the hub's when it answered, else the local
    /// ones; the parameters say the route, whether the answer is degraded, and why.
    async fn answer(&self, call: Call<'_>) -> Result<Answered, ApiError> {
        let ask = crate::hybrid::Ask {
            deadline_ms: call.deadline_ms,
            top_k: call.top_k,
            raw_outputs: true,
        };
        let answer = self
            .router
            .classify_with(call.model, call.input, ask)
            .await
            .map_err(route_error)?;
        let inference = answer.inference();
        let parameters = answer.oip_parameters();
        Ok(Answered {
            inference,
            parameters,
        })
    }
}

/// A request that got no answer: the local engine's error as it is; a model only the hub runs
/// while the hub cannot answer is 503 with the hub's story.
pub fn route_error(e: crate::hybrid::RouteError) -> ApiError {
    match e {
        crate::hybrid::RouteError::Local(e) => e.into(),
        e @ crate::hybrid::RouteError::Hub { .. } => ApiError::Unavailable(e.to_string()),
    }
}

/// Builds the router: OIP v2, `/metrics`, `/v1/classify/{model}` and `/v1/detect/{model}`.
pub fn router(state: Arc<AppState>) -> Router {
    let routes = http::routes::<AppState>()
        .route("/v1/classify/{model}", post(classify::classify))
        .route("/v1/detect/{model}", post(detect::detect))
        .route("/v1/feedback", post(feedback::correct))
        .route(
            "/v1/cameras/{camera}/frames/{model}",
            post(camera::post_frame),
        )
        .route("/v1/cameras/{camera}", axum::routing::get(camera::report))
        .route(
            "/v1/cameras/{camera}/snapshot.jpg",
            axum::routing::get(camera::latest),
        )
        .route(
            "/v1/cameras/{camera}/events/{id}/snapshot.jpg",
            axum::routing::get(camera::snapshot),
        );
    http::finish(routes, state)
}
