//! API errors: one JSON shape (`{"error": "..."}`, as OIP v2 specifies) and a precise status.

use super::Limits;
use crate::InferenceError;
use crate::preprocess::PreprocessError;
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tandem_shared::oip::OipError;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The caller sent something unusable.
    #[error("{0}")]
    BadRequest(String),
    /// No such model, version or route.
    #[error("{0}")]
    NotFound(String),
    /// Body or image over a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The request conflicts with what was done before (a second correction of one request).
    #[error("{0}")]
    Conflict(String),
    /// The model's queue is full: try again shortly.
    #[error("{0}")]
    Busy(String),
    /// Not ready or stopping.
    #[error("{0}")]
    Unavailable(String),
    /// The answer did not come in time.
    #[error("{0}")]
    Timeout(String),
    /// Our fault.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Busy(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps a body extraction failure, naming the limit and its key when it was the size.
    pub fn from_body(e: BytesRejection, limits: &Limits) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge(format!(
                "request body is larger than the limit of {} bytes ({}.max_body_bytes)",
                limits.max_body_bytes, limits.section
            ))
        } else {
            Self::BadRequest(format!("cannot read the request body: {e}"))
        }
    }

    /// No answer within the request timeout, naming its key.
    pub fn timeout(limits: &Limits) -> Self {
        Self::Timeout(format!(
            "no answer within {} ms ({}.request_timeout_ms)",
            limits.request_timeout.as_millis(),
            limits.section
        ))
    }
}

impl From<InferenceError> for ApiError {
    fn from(e: InferenceError) -> Self {
        let msg = e.to_string();
        match e {
            InferenceError::UnknownModel(_) => Self::NotFound(msg),
            InferenceError::Preprocess(PreprocessError::TooLarge { .. })
            | InferenceError::TooManyRows { .. } => Self::TooLarge(msg),
            InferenceError::Preprocess(_) | InferenceError::BadInput(_) => Self::BadRequest(msg),
            InferenceError::QueueFull { .. } => Self::Busy(msg),
            InferenceError::ShuttingDown => Self::Unavailable(msg),
            InferenceError::Runtime(_) | InferenceError::Panicked(_) => Self::Internal(msg),
        }
    }
}

impl From<OipError> for ApiError {
    fn from(e: OipError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && !matches!(self, Self::Busy(_) | Self::Unavailable(_)) {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        if matches!(self, Self::Busy(_)) {
            (status, [("retry-after", "1")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

/// Fallback for unknown routes.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
