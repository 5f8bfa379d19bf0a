//! A request body with a deadline: a client that sends a request head and then trickles (or
//! withholds) its body would otherwise hold a busy connection and its bytes in flight for as
//! long as it likes. Past the deadline the body fails (the handler answers 400 and the
//! connection closes), counted as `body_timeout`.

use super::conn::Refusals;
use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// Why a body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed while the body arrived.
    #[error(transparent)]
    Read(#[from] hyper::Error),
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {ms} ms ({section}.request_timeout_ms)")]
    Timeout {
        /// The limit, milliseconds.
        ms: u128,
        /// The config section.
        section: &'static str,
    },
}

/// A request body that fails once its deadline passes.
#[derive(Debug)]
pub(super) struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    refusals: Arc<Refusals>,
    section: &'static str,
}

impl TimedBody {
    pub(super) fn new(
        inner: Incoming,
        limit: Duration,
        refusals: Arc<Refusals>,
        section: &'static str,
    ) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
            refusals,
            section,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::from)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let (ms, section) = (self.limit.as_millis(), self.section);
            self.refusals.refuse(
                "body_timeout",
                &format!(
                    "a request body did not arrive within {ms} ms ({section}.request_timeout_ms)"
                ),
            );
            return Poll::Ready(Some(Err(BodyError::Timeout { ms, section })));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
