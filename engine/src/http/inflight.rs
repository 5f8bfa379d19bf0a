//! The bound on request bodies in flight on one listener: a semaphore of bytes. A request with
//! a body holds its declared `Content-Length` (the body limit when it declares none) from its
//! head to its response; one that would pass `max_inflight_body_bytes` is refused at once with
//! 503 and `Retry-After` (counted as `inflight_bytes` in `tandem_http_refused_total`), before
//! its body is read. Requests without a body hold nothing. The bytes held show as
//! `tandem_http_inflight_body_bytes`.

use super::Limits;
use super::error::ApiError;
use crate::metrics::Metrics;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The bytes of request bodies a listener holds at once.
#[derive(Debug)]
pub struct InflightBytes {
    permits: Semaphore,
    limit: usize,
    max_body: usize,
    section: &'static str,
    metrics: Arc<Metrics>,
    refusals: super::conn::Refusals,
}

impl InflightBytes {
    /// The bound of a listener with these limits.
    pub fn new(limits: &Limits, metrics: Arc<Metrics>) -> Self {
        let limit = limits.max_inflight_body_bytes.min(Semaphore::MAX_PERMITS);
        Self {
            permits: Semaphore::new(limit),
            limit,
            max_body: limits.max_body_bytes,
            section: limits.section,
            refusals: super::conn::Refusals::new(metrics.clone(), limits.section),
            metrics,
        }
    }

    /// Bytes a request holds: its declared length, the body limit when it declares none and
    /// may have a body; at most the body limit (a longer body is refused with 413 anyway).
    fn charge(&self, req: &Request) -> usize {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
        match declared {
            Some(n) if !chunked => n,
            _ if chunked => self.max_body,
            _ => 0,
        }
        .min(self.max_body)
        .min(self.limit)
    }
}

/// Middleware: holds the request's bytes until its response, or answers 503.
pub async fn bound(State(b): State<Arc<InflightBytes>>, req: Request, next: Next) -> Response {
    let n = b.charge(&req);
    if n == 0 {
        return next.run(req).await;
    }
    let Ok(permit) = u32::try_from(n)
        .ok()
        .and_then(|n| b.permits.try_acquire_many(n).ok())
        .ok_or(())
    else {
        let msg = format!(
            "busy: {} of {} bytes of request bodies already in flight ({}.max_inflight_body_bytes); retry shortly",
            b.limit - b.permits.available_permits().min(b.limit),
            b.limit,
            b.section
        );
        b.refusals.refuse("inflight_bytes", &msg);
        return ApiError::Busy(msg).into_response();
    };
    let held = i64::try_from(n).unwrap_or(i64::MAX);
    b.metrics.http_inflight_bytes(held);
    let resp = next.run(req).await;
    drop(permit);
    b.metrics.http_inflight_bytes(-held);
    resp
}
