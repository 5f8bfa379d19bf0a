//! The HTTP API both daemons serve over their engine (feature `http`): OIP v2 REST (JSON and
//! binary tensors, classification extension, BYTES images and texts), `/metrics`, and the JSON
//! error shape with its status codes. A daemon implements [`OipService`] (how it answers a
//! request: the agent routes through its hybrid router, the hub answers from its engine) and
//! builds its router with [`routes`] and [`finish`].
//!
//! # Layout
//! - [`error`]: the JSON error body and status of every failure.
//! - [`oip`]: the OIP v2 handlers and conversions.
//! - [`params`]: a response's `parameters` and detection tensors, from the typed answer.
//! - [`inflight`]: the bound on request body bytes in flight per listener (503 over it).
//! - [`serve`]: the serve loop of a listener (connection cap, header, idle and body timeouts),
//!   over the connection table and limits of [`conn`] and the request body of [`body`].
//! - this file: the service trait, the routes, response counting, the body limit.

pub mod body;
pub mod conn;
pub mod error;
pub mod inflight;
pub mod oip;
pub mod params;
pub mod serve;

pub use conn::ConnLimits;

use crate::{Engine, Inference, Input};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Route of the liveness probe (left open by authentication layers).
pub const LIVE_PATH: &str = "/v2/health/live";

/// A daemon's HTTP limits and the config section that sets them (named in error messages).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, bytes (413 above).
    pub max_body_bytes: usize,
    /// Longest wait for an answer (504 after).
    pub request_timeout: Duration,
    /// Most bytes of request bodies in flight at once on the listener (503 over it).
    pub max_inflight_body_bytes: usize,
    /// The config section of these keys: `server` (agent), `http` (hub).
    pub section: &'static str,
}

/// What every handler reads: the engine whose models the API serves, the limits, the name.
#[derive(Debug, Clone)]
pub struct ApiContext {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Body and time limits.
    pub limits: Limits,
    /// The server name in `GET /v2`.
    pub server_name: &'static str,
}

/// One inference request, decoded and checked (the model exists in the version asked for).
#[derive(Debug)]
pub struct Call<'a> {
    /// Model name.
    pub model: &'a str,
    /// The input for the engine.
    pub input: Input,
    /// The request's `deadline_ms` parameter, when set.
    pub deadline_ms: Option<u32>,
    /// The most classes an output's classification extension asks for (`None`: the
    /// engine's `top_k`).
    pub top_k: Option<usize>,
}

/// What a daemon answers an inference with.
#[derive(Debug)]
pub struct Answered {
    /// The inference whose outputs the response carries.
    pub inference: Inference,
    /// The response's `parameters` (label, score, how it was answered), serialised from a
    /// typed answer (`params::to_map`).
    pub parameters: Map<String, Value>,
}

/// What a daemon provides for its HTTP API.
pub trait OipService: Send + Sync + 'static {
    /// The engine, limits and name.
    fn context(&self) -> &ApiContext;

    /// Answers one request.
    fn answer(&self, call: Call<'_>) -> impl Future<Output = Result<Answered, ApiError>> + Send;

    /// `/metrics` in the Prometheus text format: by default the engine's metrics and model
    /// gauges.
    fn metrics_text(&self) -> String {
        let engine = &self.context().engine;
        engine
            .metrics()
            .render(&crate::metrics::model_gauges(engine))
    }
}

/// The OIP v2 routes and `/metrics`, with the JSON 404 for anything else. Add daemon-specific
/// routes and layers, then [`finish`].
pub fn routes<S: OipService>() -> Router<Arc<S>> {
    let model = "/v2/models/{model}";
    let version = "/v2/models/{model}/versions/{version}";
    Router::new()
        .route("/v2", get(oip::server_metadata::<S>))
        .route(LIVE_PATH, get(oip::live))
        .route("/v2/health/ready", get(oip::ready::<S>))
        .route(model, get(oip::model_metadata::<S>))
        .route(version, get(oip::model_metadata::<S>))
        .route(&format!("{model}/ready"), get(oip::model_ready::<S>))
        .route(&format!("{version}/ready"), get(oip::model_ready::<S>))
        .route(&format!("{model}/infer"), post(oip::infer::<S>))
        .route(&format!("{version}/infer"), post(oip::infer::<S>))
        .route("/metrics", get(metrics::<S>))
        .fallback(error::not_found)
}

/// Counts every response by route and status (`tandem_http_responses_total`), bounds the body
/// (`Limits::max_body_bytes`, 413) and the bodies in flight (`Limits::max_inflight_body_bytes`,
/// 503), and attaches the state.
pub fn finish<S: OipService>(routes: Router<Arc<S>>, state: Arc<S>) -> Router {
    let ctx = state.context();
    let limit = ctx.limits.max_body_bytes;
    let inflight = Arc::new(inflight::InflightBytes::new(
        &ctx.limits,
        ctx.engine.metrics().clone(),
    ));
    routes
        .layer(middleware::from_fn_with_state(inflight, inflight::bound))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses::<S>,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn count_responses<S: OipService>(
    State(state): State<Arc<S>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    state
        .context()
        .engine
        .metrics()
        .http(&route, resp.status().as_u16());
    resp
}

async fn metrics<S: OipService>(State(state): State<Arc<S>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics_text(),
    )
}
