//! The calibration routes on the hub's API (operator only, `api::rights`):
//! - `POST /v1/calibrations` (a [`CalibrationRequest`] as JSON): fits on the calibration split,
//!   reports on the test split, stores it and (with `apply`, the default) makes it the group's
//!   desired threshold; 201 with the calibration and its reports. 422 for a request that
//!   cannot be calibrated, with the sample counts when a split has too few; 409 while another
//!   runs.
//! - `GET /v1/calibrations[?model=M]`, `GET /v1/calibrations/{id}`: kept calibrations.
//! - `GET /v1/thresholds`: the desired thresholds, and per device and model what it should use
//!   and what it reports (value, signal, source).
//! - `POST /v1/thresholds/pin` (`{model, labels?, threshold, signal?}`): an operator's value
//!   for a group, which calibration does not override; `POST /v1/thresholds/unpin`
//!   (`{model, labels?}`): calibration decides again.

use super::desired::{Desired, selector_key};
use super::{CalibrateError, CalibrationRequest, Calibrator, Labels};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tandem_shared::manifest::{Signal, VariantRole};
use tandem_shared::mqtt::ThresholdSource;

/// What the routes reach.
#[derive(Debug)]
pub struct CalibrateApi {
    /// Fits and stores.
    pub calibrator: Arc<Calibrator>,
    /// The devices and their labels.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// One calibration at a time.
    pub running: tokio::sync::Semaphore,
}

impl CalibrateApi {
    /// The API over a calibrator.
    pub fn new(calibrator: Arc<Calibrator>, fleet: Option<Arc<crate::fleet::Fleet>>) -> Self {
        Self {
            calibrator,
            fleet,
            running: tokio::sync::Semaphore::new(1),
        }
    }
}

/// The routes, for any router state (they carry their own).
pub fn routes<S: Clone + Send + Sync + 'static>(api: Arc<CalibrateApi>) -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/calibrations", get(list).post(calibrate))
        .route("/v1/calibrations/{id}", get(one))
        .route("/v1/thresholds", get(thresholds))
        .route("/v1/thresholds/pin", post(pin))
        .route("/v1/thresholds/unpin", post(unpin))
        .with_state(api)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

fn failed(e: &CalibrateError) -> Response {
    let status = match e {
        CalibrateError::Invalid(_) | CalibrateError::TooFew { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CalibrateError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| failed(&e)),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

fn devices(api: &CalibrateApi) -> Vec<(crate::fleet::DeviceState, Labels)> {
    api.fleet
        .as_ref()
        .and_then(|f| super::push::devices(f).ok())
        .unwrap_or_default()
}

async fn calibrate(
    State(api): State<Arc<CalibrateApi>>,
    body: Result<Json<CalibrationRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Ok(_permit) = api.running.try_acquire() else {
        return error(
            StatusCode::CONFLICT,
            "a calibration is running: try again when it ends",
        );
    };
    let a = api.clone();
    let run = blocking(move || {
        let devices = devices(&a)
            .into_iter()
            .map(|(d, l)| (d.device, l))
            .collect();
        a.calibrator.run(&req, &devices)
    })
    .await;
    match run {
        Ok(c) => (StatusCode::CREATED, Json(c)).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ByModel {
    model: Option<String>,
}

async fn list(
    State(api): State<Arc<CalibrateApi>>,
    q: Result<Query<ByModel>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q.map_err(|e| e.body_text()) else {
        return error(StatusCode::BAD_REQUEST, "the query takes `model` only");
    };
    let store = api.calibrator.store.clone();
    match blocking(move || Ok(store.list(q.model.as_deref())?)).await {
        Ok(all) => Json(json!({ "calibrations": all })).into_response(),
        Err(r) => r,
    }
}

async fn one(State(api): State<Arc<CalibrateApi>>, Path(id): Path<String>) -> Response {
    let store = api.calibrator.store.clone();
    match blocking(move || Ok(store.get(&id)?)).await {
        Ok(Some(c)) => Json(c).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such calibration"),
        Err(r) => r,
    }
}

async fn thresholds(State(api): State<Arc<CalibrateApi>>) -> Response {
    let a = api.clone();
    let read = blocking(move || {
        let desired = a.calibrator.store.desired()?;
        let devices = super::push::states(&devices(&a), &desired);
        Ok(json!({"desired": desired, "devices": devices}))
    })
    .await;
    match read {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// `POST /v1/thresholds/pin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pin {
    model: String,
    #[serde(default)]
    labels: Labels,
    threshold: f32,
    #[serde(default)]
    signal: Option<Signal>,
}

/// `POST /v1/thresholds/unpin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unpin {
    model: String,
    #[serde(default)]
    labels: Labels,
}

async fn pin(
    State(api): State<Arc<CalibrateApi>>,
    body: Result<Json<Pin>, JsonRejection>,
) -> Response {
    let p = match body {
        Ok(Json(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let c = api.calibrator.clone();
    let set = blocking(move || {
        let manifest = c.manifest(&p.model)?;
        let signal = p
            .signal
            .or(manifest
                .variants
                .get(&VariantRole::Edge)
                .and_then(|v| v.threshold_signal))
            .unwrap_or(Signal::MaxProb);
        tandem_shared::mqtt::args::check_threshold(Some(signal), p.threshold)
            .map_err(|e| CalibrateError::Invalid(e.to_string()))?;
        let d = Desired {
            model: p.model,
            labels: p.labels,
            threshold: p.threshold,
            signal,
            source: ThresholdSource::Operator,
            calibration: None,
            set_ms: super::now_ms(),
        };
        c.store.set_desired(&d)?;
        tracing::info!(model = %d.model, labels = %selector_key(&d.labels), threshold = d.threshold, "threshold pinned by an operator");
        Ok(d)
    })
    .await;
    match set {
        Ok(d) => (StatusCode::OK, Json(d)).into_response(),
        Err(r) => r,
    }
}

async fn unpin(
    State(api): State<Arc<CalibrateApi>>,
    body: Result<Json<Unpin>, JsonRejection>,
) -> Response {
    let u = match body {
        Ok(Json(u)) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let c = api.calibrator.clone();
    let removed = blocking(move || {
        Ok(c.store.remove_desired(
            &u.model,
            &selector_key(&u.labels),
            ThresholdSource::Operator,
        )?)
    })
    .await;
    match removed {
        Ok(true) => Json(json!({"unpinned": true})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "no pin for that model and labels"),
        Err(r) => r,
    }
}
