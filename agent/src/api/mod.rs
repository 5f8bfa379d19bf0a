//! The local HTTP API that applications on the device call.
//!
//! # Layout
//! - [`error`]: the JSON error body and status of every failure.
//! - [`oip`]: Open Inference Protocol v2 (health, metadata, infer; binary tensor extension).
//! - [`classify`]: `POST /v1/classify/{model}` with raw image bytes or text.
//! - this file: the router, shared state and `/metrics`.

pub mod classify;
pub mod error;
pub mod oip;

use crate::config::Config;
use crate::inference::Engine;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// Local inference plus offloading per policy.
    pub router: Arc<crate::hybrid::Router>,
    /// Largest body, bytes.
    pub max_body_bytes: usize,
    /// Per-request time limit.
    pub request_timeout: Duration,
    next_id: AtomicU64,
    id_prefix: String,
}

impl AppState {
    /// State for a config and a started engine.
    pub fn new(cfg: &Config, router: Arc<crate::hybrid::Router>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            router,
            max_body_bytes: cfg.server.max_body_bytes,
            request_timeout: Duration::from_millis(cfg.server.request_timeout_ms),
            next_id: AtomicU64::new(1),
            id_prefix: format!("{:x}", nanos & 0xffff_ffff),
        }
    }

    /// The engine (the router's).
    pub fn engine(&self) -> &Arc<Engine> {
        self.router.engine()
    }

    /// A fresh request id, unique within this process run.
    pub fn request_id(&self) -> String {
        format!(
            "{}-{}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v2", get(oip::server_metadata))
        .route("/v2/health/live", get(oip::live))
        .route("/v2/health/ready", get(oip::ready))
        .route("/v2/models/{model}", get(oip::model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(oip::model_metadata_version),
        )
        .route("/v2/models/{model}/ready", get(oip::model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(oip::model_ready_version),
        )
        .route("/v2/models/{model}/infer", post(oip::infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(oip::infer_version),
        )
        .route("/v1/classify/{model}", post(classify::classify))
        .route("/metrics", get(metrics))
        .fallback(error::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn count_responses(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    state
        .engine()
        .metrics()
        .http(&route, resp.status().as_u16());
    resp
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut gauges = Vec::new();
    for m in state.engine().models() {
        gauges.push((
            "tandem_queue_depth",
            "Requests waiting in a model's queue.",
            vec![("model", m.name().to_string())],
            m.queue_depth() as f64,
        ));
    }
    for m in state.engine().models() {
        gauges.push((
            "tandem_model_info",
            "Loaded model, version, variant and execution provider in use.",
            vec![
                ("model", m.name().to_string()),
                ("version", m.files.manifest.version.clone()),
                ("variant", m.files.role.as_str().to_string()),
                ("ep", m.ep.to_string()),
            ],
            1.0,
        ));
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.engine().metrics().render(&gauges),
    )
}
