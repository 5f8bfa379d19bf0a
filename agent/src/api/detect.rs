//! `POST /v1/detect/{model}`: the body is one raw image file (JPEG/PNG); the answer is
//! `tandem_shared::detect::DetectAnswer` (boxes in image pixels, class, score, signals; the
//! hub's boxes when the cascade offloaded the frame, the device's then in `local`) plus
//! `request_id` and `reason`.

use super::AppState;
use super::error::ApiError;
use crate::inference::Input;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Detects objects in one image.
pub async fn detect(
    State(s): State<Arc<AppState>>,
    Path(model): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::from_body(e, s.limits()))?;
    match s.router.detects(&model) {
        None => return Err(ApiError::NotFound(format!("model `{model}` is not loaded"))),
        Some(false) => {
            return Err(ApiError::BadRequest(format!(
                "model `{model}` is not a detection model: use /v1/classify/{model}"
            )));
        }
        Some(true) => {}
    }
    let answer = tokio::time::timeout(
        s.limits().request_timeout,
        s.router.classify(&model, Input::Images(vec![body]), None),
    )
    .await
    .map_err(|_| ApiError::timeout(s.limits()))?
    .map_err(super::route_error)?;
    if answer.detections().is_none() {
        return Err(ApiError::Unavailable(format!(
            "model `{model}` gave no detections for the image"
        )));
    }
    Ok(Json(answer.body()).into_response())
}
