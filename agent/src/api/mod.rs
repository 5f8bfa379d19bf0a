//! The local HTTP API that applications on the device call.
//!
//! # Layout
//! - [`error`]: the JSON error body and status of every failure (the engine's
//!   `tandem_engine::http::error`).
//! - OIP v2 (health, metadata, infer; binary tensor and classification extensions) and
//!   `/metrics`: the engine's shared handlers (`tandem_engine::http`), answering through the
//!   hybrid router (this file's [`OipService`] implementation).
//! - [`classify`]: `POST /v1/classify/{model}` with raw image bytes or text.
//! - this file: the router and shared state.

pub mod classify;

pub use tandem_engine::http::error;

use crate::config::Config;
use crate::inference::{Engine, Inference};
use axum::Router;
use axum::routing::post;
use error::ApiError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tandem_engine::http::{self, Answered, ApiContext, Call, Limits, OipService};

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// Local inference plus offloading per policy.
    pub router: Arc<crate::hybrid::Router>,
    /// The router's engine, the `[server]` limits, the server name.
    pub context: ApiContext,
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
        let limits = Limits {
            max_body_bytes: cfg.server.max_body_bytes,
            request_timeout: Duration::from_millis(cfg.server.request_timeout_ms),
            section: "server",
        };
        Self {
            context: ApiContext {
                engine: router.engine().clone(),
                limits,
                server_name: "tandem-agent",
            },
            router,
            next_id: AtomicU64::new(1),
            id_prefix: format!("{:x}", nanos & 0xffff_ffff),
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

    /// A fresh request id, unique within this process run.
    pub fn request_id(&self) -> String {
        format!(
            "{}-{}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl OipService for AppState {
    fn context(&self) -> &ApiContext {
        &self.context
    }

    /// Through the hybrid router: the outputs are the hub's when it answered, else the local
    /// ones; the parameters say the route, whether the answer is degraded, and why.
    async fn answer(&self, call: Call<'_>) -> Result<Answered, ApiError> {
        let answer = self
            .router
            .classify(call.model, call.input, call.deadline_ms)
            .await?;
        let inference = match &answer.cloud {
            Some(c) => Inference {
                outputs: c.outputs.clone(),
                predictions: vec![c.prediction.clone()],
                version: c.version.clone(),
                ..answer.local.clone()
            },
            None => answer.local.clone(),
        };
        let parameters = http::oip::response_parameters(
            answer.to_json(),
            answer.local.predictions.len(),
            answer.local.variant.as_str(),
        );
        Ok(Answered {
            inference,
            parameters,
        })
    }
}

/// Builds the router: OIP v2, `/metrics`, and `/v1/classify/{model}`.
pub fn router(state: Arc<AppState>) -> Router {
    let routes = http::routes::<AppState>().route("/v1/classify/{model}", post(classify::classify));
    http::finish(routes, state)
}
