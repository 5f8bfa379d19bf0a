//! The feedback store's HTTP routes on the hub's API (operator reads, `api::rights`), served
//! while the hub runs:
//! - `GET /v1/feedback/records?after=N&limit=L`: records in arrival order after the cursor `N`
//!   (0: from the first), at most `L` (default 100, at most 1000): `{items, cursor, more}`;
//!   keep `cursor` and ask again later for what arrived since (each record seen once).
//!   `?order=newest&before=N`: newest first, those that arrived before `N` (0 or none: from
//!   the newest); pass `cursor` as `before` for the next, older page. `after` goes with the
//!   default `order=oldest` only, `before` with `order=newest` only (400 otherwise).
//! - `GET /v1/feedback/examples?after=DIGEST&limit=L&model=M&split=S&labelled=true`: examples
//!   collapsed by input, in digest order: `{items, cursor, more}`.
//! - `GET /v1/feedback/inputs/{digest}`: an input's bytes (`image/png`, `image/jpeg`,
//!   `text/plain` by its content; `nosniff` and a sandboxing CSP, since they come from devices).
//! - `POST /v1/feedback/corrections` `{"record": "device/epoch/seq", "label": "..."}` (an
//!   operator): stores the correction (`super::operator`); 201 with it as listed, 404 for no
//!   such record, 422 for a record that is not an example or a bad label, 429 over the
//!   device's quota.
//!
//! Also the store's metrics (records held, evicted).

use super::listing::ExampleFilter;
use super::split::Split;
use super::store::Store;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// Largest page.
pub const MAX_PAGE: usize = 1000;
/// Page when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;

/// The routes, for any router state (they carry their own).
pub fn routes<S: Clone + Send + Sync + 'static>(store: Arc<Store>) -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/feedback/records", get(records))
        .route("/v1/feedback/examples", get(examples))
        .route("/v1/feedback/inputs/{digest}", get(input))
        .route("/v1/feedback/corrections", post(correct))
        .with_state(store)
}

/// The store's lines of `/metrics`.
pub fn render(store: &Store) -> String {
    let mut out = String::new();
    let s = store.stats();
    for (name, kind, help, v) in [
        (
            "tandem_hub_feedback_records",
            "gauge",
            "Records held in the feedback store.",
            store.held(),
        ),
        (
            "tandem_hub_feedback_evicted_total",
            "counter",
            "Feedback records evicted by the retention limits (feedback.max_records, max_age_ms).",
            s.evicted.load(Relaxed),
        ),
    ] {
        tandem_engine::metrics::write_one(&mut out, name, kind, help, v as f64);
    }
    out
}

fn bad(message: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.to_string()})),
    )
        .into_response()
}

fn limit(l: Option<usize>) -> Result<usize, String> {
    match l.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        n => Err(format!("limit {n} is not between 1 and {MAX_PAGE}")),
    }
}

/// The parsed query and its page size.
fn args<T>(
    q: Result<Query<T>, QueryRejection>,
    limit_of: impl Fn(&T) -> Option<usize>,
) -> Result<(T, usize), String> {
    let Query(q) = q.map_err(|e| e.body_text())?;
    let l = limit(limit_of(&q))?;
    Ok((q, l))
}

fn digest(s: &str) -> Result<[u8; 32], String> {
    hex::decode(s)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| format!("`{s}` is not a sha256 digest (64 hex digits)"))
}

async fn blocking<T: serde::Serialize + Send + 'static>(
    f: impl FnOnce() -> Result<T, super::FeedbackError> + Send + 'static,
) -> Response {
    let done = tokio::task::spawn_blocking(f).await;
    match done
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e })),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsQuery {
    after: Option<u64>,
    before: Option<u64>,
    limit: Option<usize>,
    #[serde(default)]
    order: Order,
}

/// The order records are listed in.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Order {
    /// Arrival order, from the cursor `after`.
    #[default]
    Oldest,
    /// Newest first, from the cursor `before`.
    Newest,
}

async fn records(
    State(store): State<Arc<Store>>,
    q: Result<Query<RecordsQuery>, QueryRejection>,
) -> Response {
    let (q, limit) = match args(q, |q: &RecordsQuery| q.limit) {
        Ok(a) => a,
        Err(e) => return bad(e),
    };
    match (q.order, q.after, q.before) {
        (Order::Oldest, after, None) => {
            blocking(move || store.records_after(after.unwrap_or(0), limit)).await
        }
        (Order::Newest, None, before) => {
            blocking(move || store.records_before(before.unwrap_or(0), limit)).await
        }
        (Order::Oldest, _, Some(_)) => bad("`before` goes with `order=newest`"),
        (Order::Newest, Some(_), _) => bad("`after` goes with `order=oldest` (the default)"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExamplesQuery {
    after: Option<String>,
    limit: Option<usize>,
    model: Option<String>,
    split: Option<String>,
    #[serde(default)]
    labelled: bool,
}

async fn examples(
    State(store): State<Arc<Store>>,
    q: Result<Query<ExamplesQuery>, QueryRejection>,
) -> Response {
    let (q, limit) = match args(q, |q: &ExamplesQuery| q.limit) {
        Ok(a) => a,
        Err(e) => return bad(e),
    };
    let after = match q.after.as_deref().map(digest).transpose() {
        Ok(a) => a,
        Err(e) => return bad(e),
    };
    let split = match q.split.as_deref().map(str::parse::<Split>).transpose() {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let filter = ExampleFilter {
        model: q.model,
        split,
        labelled: q.labelled,
    };
    blocking(move || store.examples_after(after, limit, &filter)).await
}

async fn input(State(store): State<Arc<Store>>, Path(d): Path<String>) -> Response {
    let d = match digest(&d) {
        Ok(d) => d,
        Err(e) => return bad(e),
    };
    let found = tokio::task::spawn_blocking(move || {
        let path = store.input_path(&d).ok().flatten()?;
        let bytes = std::fs::read(&path).ok()?;
        Some((path, bytes))
    })
    .await
    .ok()
    .flatten();
    let Some((path, bytes)) = found else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no stored record has this input"})),
        )
            .into_response();
    };
    let ct = match path.extension().and_then(|e| e.to_str()) {
        Some("png") => "image/png",
        Some("jpg") => "image/jpeg",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox",
            ),
        ],
        bytes,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorrectionBody {
    record: String,
    label: String,
}

async fn correct(
    State(store): State<Arc<Store>>,
    who: Option<axum::Extension<crate::api::rights::Principal>>,
    body: Result<Json<CorrectionBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    use super::operator::CorrectionError as E;
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => {
            return bad(format!(
                "{} (expected {{\"record\": \"device/epoch/seq\", \"label\": \"...\"}})",
                e.body_text()
            ));
        }
    };
    let operator = match who.map(|w| w.0) {
        Some(crate::api::rights::Principal::Operator(o)) => o,
        _ => "?".into(),
    };
    let done =
        tokio::task::spawn_blocking(move || store.correct(&body.record, &body.label, &operator))
            .await;
    let (status, message) = match done {
        Ok(Ok(listed)) => return (StatusCode::CREATED, Json(listed)).into_response(),
        Ok(Err(e @ E::BadId(_))) => (StatusCode::BAD_REQUEST, e.to_string()),
        Ok(Err(e @ E::NotFound(_))) => (StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e @ (E::NotExample(_) | E::BadLabel(_)))) => {
            (StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        Ok(Err(e @ E::Store(super::FeedbackError::OverQuota { .. }))) => {
            (StatusCode::TOO_MANY_REQUESTS, e.to_string())
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    (status, Json(json!({ "error": message }))).into_response()
}
