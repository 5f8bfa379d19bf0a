//! The claims' routes on the hub's API (operator routes, behind the API's authentication):
//! - `POST /v1/claims` (`{"labels": {..}, "name_prefix": "lab-", "expires_s": 86400}`): 201
//!   with the claim and its token, shown this once; 422 when a field is invalid.
//! - `GET /v1/claims`: every claim with its state (`unused`, `used by D`, `expired`, `revoked`).
//! - `POST /v1/claims/{id}/revoke`: 200 with the claim; 404 unknown id.
//! - `GET /v1/enrolments`: every certificate enrolment and renewal issued.

use super::claims::{Claim, ClaimError, ClaimStore, new_token};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest a claim may stay valid, in seconds (30 days).
pub const MAX_CLAIM_S: u64 = 30 * 24 * 3600;

/// The body of `POST /v1/claims`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClaim {
    /// Labels recorded with the enrolled device.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Put before the device's proposed name (lowercase letters, digits, `-`; may be empty).
    #[serde(default)]
    pub name_prefix: String,
    /// Validity from now, in seconds (1 to 30 days' worth).
    pub expires_s: u64,
}

impl NewClaim {
    /// Every problem, naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=MAX_CLAIM_S).contains(&self.expires_s) {
            p.push(format!("expires_s must be 1 to {MAX_CLAIM_S}"));
        }
        let ok = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if self.name_prefix.len() > 32
            || !ok(&self.name_prefix)
            || self.name_prefix.starts_with('-')
        {
            p.push(
                "name_prefix: at most 32 lowercase letters, digits and `-`, not starting with `-`"
                    .into(),
            );
        }
        if self.labels.len() > 16 {
            p.push("labels: at most 16".into());
        }
        for (k, v) in &self.labels {
            let fine =
                |s: &str| (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_graphic());
            if !fine(k) || !fine(v) || k.contains('=') {
                p.push(format!(
                    "label `{k}`: key and value 1-64 visible ASCII characters, no `=` in the key"
                ));
            }
        }
        p
    }
}

/// The routes, for any router state (they carry their own).
pub fn routes<S: Clone + Send + Sync + 'static>(store: Arc<dyn ClaimStore>) -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/claims", get(list).post(create))
        .route("/v1/claims/{id}/revoke", post(revoke))
        .route("/v1/enrolments", get(enrolments))
        .with_state(store)
}

fn error(e: ClaimError) -> Response {
    let status = match &e {
        ClaimError::NoSuchId(_) => StatusCode::NOT_FOUND,
        ClaimError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ClaimError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(error),
        Err(e) => Err(error(ClaimError::Store(e.to_string()))),
    }
}

fn now_ms() -> u64 {
    crate::fleet::link::now_ms()
}

async fn create(State(store): State<Arc<dyn ClaimStore>>, Json(req): Json<NewClaim>) -> Response {
    let problems = req.problems();
    if !problems.is_empty() {
        return error(ClaimError::Invalid(problems.join("; ")));
    }
    let made = blocking(move || {
        let (token, digest, id) = new_token()?;
        let now = now_ms();
        let claim = Claim {
            id,
            labels: req.labels,
            name_prefix: req.name_prefix,
            created_ms: now,
            expires_ms: now.saturating_add(req.expires_s.saturating_mul(1000)),
            used: None,
            revoked_ms: None,
        };
        store.insert(&digest, &claim)?;
        tracing::info!(claim = %claim.id, expires_ms = claim.expires_ms, "claim created");
        Ok((token, claim))
    })
    .await;
    match made {
        Ok((token, claim)) => (
            StatusCode::CREATED,
            Json(json!({"token": token, "claim": claim})),
        )
            .into_response(),
        Err(resp) => resp,
    }
}

async fn list(State(store): State<Arc<dyn ClaimStore>>) -> Response {
    match blocking(move || store.list()).await {
        Ok(all) => {
            let now = now_ms();
            let claims: Vec<_> = all
                .iter()
                .map(|c| json!({"claim": c, "state": c.state(now)}))
                .collect();
            Json(json!({ "claims": claims })).into_response()
        }
        Err(resp) => resp,
    }
}

async fn revoke(State(store): State<Arc<dyn ClaimStore>>, Path(id): Path<String>) -> Response {
    match blocking(move || store.revoke(&id, now_ms())).await {
        Ok(c) => {
            tracing::info!(claim = %c.id, "claim revoked");
            Json(c).into_response()
        }
        Err(resp) => resp,
    }
}

async fn enrolments(State(store): State<Arc<dyn ClaimStore>>) -> Response {
    match blocking(move || store.issued()).await {
        Ok(all) => Json(json!({ "enrolments": all })).into_response(),
        Err(resp) => resp,
    }
}
