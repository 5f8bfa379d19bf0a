//! `POST /v1/classify/{model}`: the convenience endpoint. The body is the raw image file
//! (JPEG/PNG), a raw camera frame described by the query ([`super::frame`]) or the UTF-8 text; the answer is the label, score, top-k and how it was made
//! (`route`, `degraded`, `reason`, both models' results when both ran).

use super::AppState;
use super::error::ApiError;
use crate::inference::Input;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tandem_shared::manifest::Preprocess;

/// Classifies one image or text.
pub async fn classify(
    State(s): State<Arc<AppState>>,
    Path(model): Path<String>,
    query: Result<Query<super::frame::FrameQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::from_body(e, s.limits()))?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let prep = s
        .router
        .preprocess(&model)
        .ok_or_else(|| ApiError::NotFound(format!("model `{model}` is not loaded")))?;
    if s.router.detects(&model) == Some(true) {
        return Err(ApiError::BadRequest(format!(
            "model `{model}` is a detection model: use /v1/detect/{model}"
        )));
    }
    let input = match prep {
        Preprocess::Image(_) => Input::Images(vec![super::frame::body(&query, body)?]),
        Preprocess::Text(_) => {
            Input::Texts(vec![String::from_utf8(body.to_vec()).map_err(|_| {
                ApiError::BadRequest("text body is not valid UTF-8".into())
            })?])
        }
    };
    let answer = tokio::time::timeout(
        s.limits().request_timeout,
        s.router.classify(&model, input, None),
    )
    .await
    .map_err(|_| ApiError::timeout(s.limits()))?
    .map_err(super::route_error)?;
    if answer.prediction().is_none() {
        return Err(ApiError::Internal(
            "the model returned no prediction".into(),
        ));
    }
    Ok(Json(answer.body()).into_response())
}
