//! The registry's HTTP routes on the hub's API (behind the same authentication as the rest):
//! - `GET /v1/models`: every stored model with its versions (oldest first) and the latest.

use super::store::{Entry, Registry};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The routes, for any router state (they carry their own).
pub fn routes<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/models", get(list))
        .with_state(registry)
}

async fn list(State(registry): State<Arc<Registry>>) -> Response {
    let listed = tokio::task::spawn_blocking(move || registry.list()).await;
    match listed {
        Ok(Ok(entries)) => {
            let mut by_model: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
            for e in entries {
                by_model.entry(e.model.clone()).or_default().push(e);
            }
            let models: Vec<_> = by_model
                .into_iter()
                .map(|(name, versions)| {
                    let latest = versions.last().map(|e| e.version.clone());
                    json!({"name": name, "latest": latest, "versions": versions})
                })
                .collect();
            Json(json!({ "models": models })).into_response()
        }
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}
