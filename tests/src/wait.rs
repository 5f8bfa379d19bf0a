//! Waits for a condition, polled, with a deadline: a wait that runs out fails the test.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
pub const POLL: Duration = Duration::from_millis(50);

/// Waits until `cond()` holds; panics with "gave up waiting for {what}" after `patience`.
pub async fn wait_for(what: &str, patience: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < patience, "gave up waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_for`] for an asynchronous condition (one that scrapes an endpoint, say).
pub async fn wait_for_async<F, Fut>(what: &str, patience: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let t = Instant::now();
    while !cond().await {
        assert!(t.elapsed() < patience, "gave up waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}
