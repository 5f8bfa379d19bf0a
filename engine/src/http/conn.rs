//! What a listener knows of its connections: each one's state (a request in progress or not,
//! since when it is idle, when the bytes of a request head began to arrive), the table of open
//! connections with the cap and the eviction of the oldest idle one, the connection limits of a
//! daemon's config, and the rate-limited log of refusals.

use crate::metrics::Metrics;
use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Connections a listener keeps open when the config says 0 (auto) and the open-file limit
/// cannot be read.
pub const FALLBACK_MAX_CONNECTIONS: usize = 512;

/// The auto cap never goes above this.
pub const AUTO_MAX_CONNECTIONS: usize = 4096;

/// Shortest interval between two log lines about refused connections (the rest are counted).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A listener's connection limits (`[server]` on the agent, `[http]` on the hub).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Most connections open at once (the TLS handshake included); at the cap a new
    /// connection closes the oldest idle one, or is refused when every one is busy.
    pub max_connections: usize,
    /// Longest a request head may take to arrive once its first byte came.
    pub header_read_timeout: Duration,
    /// Longest a connection may stay open with no request in progress: from its accept (TLS
    /// handshake included) or the end of its last response.
    pub idle_timeout: Duration,
    /// Longest a request's body may take to arrive once its head did (the section's
    /// `request_timeout_ms`): a body cut short gets 400 and the connection closes.
    pub body_timeout: Duration,
    /// The config section of these keys, named in log lines.
    pub section: &'static str,
}

impl ConnLimits {
    /// The limits of a config section's keys (`max_connections` resolved: see
    /// [`Self::resolve_max_connections`]).
    pub fn from_config(
        section: &'static str,
        max_connections: usize,
        header_read_timeout_ms: u64,
        idle_timeout_ms: u64,
        request_timeout_ms: u64,
    ) -> Self {
        Self {
            max_connections: Self::resolve_max_connections(max_connections),
            header_read_timeout: Duration::from_millis(header_read_timeout_ms),
            idle_timeout: Duration::from_millis(idle_timeout_ms),
            body_timeout: Duration::from_millis(request_timeout_ms),
            section,
        }
    }

    /// Every problem with a section's listener keys, each naming its key.
    pub fn problems(
        section: &str,
        max_body_bytes: usize,
        max_inflight_body_bytes: usize,
        header_read_timeout_ms: u64,
        idle_timeout_ms: u64,
    ) -> Vec<String> {
        let mut p = Vec::new();
        if max_body_bytes > u32::MAX as usize {
            p.push(format!(
                "{section}.max_body_bytes must be at most {}",
                u32::MAX
            ));
        }
        if max_inflight_body_bytes < max_body_bytes {
            p.push(format!(
                "{section}.max_inflight_body_bytes must be at least {section}.max_body_bytes"
            ));
        }
        if !(100..=600_000).contains(&header_read_timeout_ms) {
            p.push(format!(
                "{section}.header_read_timeout_ms must be between 100 and 600000"
            ));
        }
        if !(100..=3_600_000).contains(&idle_timeout_ms) {
            p.push(format!(
                "{section}.idle_timeout_ms must be between 100 and 3600000"
            ));
        }
        p
    }

    /// The cap for a configured `max_connections`: itself, or when 0 half the process's
    /// open-file limit (`LimitNOFILE`, the soft `RLIMIT_NOFILE`), between 16 and
    /// [`AUTO_MAX_CONNECTIONS`], so the listener can never use up the descriptors the daemon
    /// needs for its own files and links.
    pub fn resolve_max_connections(configured: usize) -> usize {
        if configured > 0 {
            return configured;
        }
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        soft.and_then(|n| usize::try_from(n / 2).ok())
            .map_or(FALLBACK_MAX_CONNECTIONS, |n| {
                n.clamp(16, AUTO_MAX_CONNECTIONS)
            })
    }
}

/// One connection's state, shared by its task, its IO wrapper and the table.
#[derive(Debug)]
pub(super) struct ConnState {
    origin: Instant,
    /// Requests in progress (from the parsed head to the response handed to hyper).
    busy: AtomicUsize,
    /// Milliseconds since `origin` when it last became idle.
    idle_since_ms: AtomicU64,
    /// Milliseconds since `origin` + 1 when the first byte after it became idle arrived; 0: none.
    head_started_ms: AtomicU64,
    /// Wakes the task to close the connection (evicted).
    pub(super) close: Notify,
}

/// Why a connection's timer closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// No request in progress and no byte for `idle_timeout`.
    Idle,
    /// A request head began but did not complete within `header_read_timeout`.
    Header,
}

impl ConnState {
    pub(super) fn new(origin: Instant) -> Self {
        let s = Self {
            origin,
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            close: Notify::new(),
        };
        s.idle_since_ms.store(s.now_ms(), Ordering::Release);
        s
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    pub(super) fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    /// A request head was parsed: busy until the returned guard drops.
    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_started_ms.store(0, Ordering::Release);
        Busy(self.clone())
    }

    fn bytes_read(&self) {
        if self.is_idle() && self.head_started_ms.load(Ordering::Acquire) == 0 {
            self.head_started_ms
                .store(self.now_ms() + 1, Ordering::Release);
        }
    }

    /// When the connection's timer next looks at it, and what closes it then: `None` while a
    /// request is in progress (look again after `idle_timeout`).
    pub(super) fn deadline(&self, limits: &ConnLimits) -> (Instant, Option<Expiry>) {
        if !self.is_idle() {
            return (Instant::now() + limits.idle_timeout, None);
        }
        match self.head_started_ms.load(Ordering::Acquire) {
            0 => {
                let since = self.idle_since_ms.load(Ordering::Acquire);
                (self.at(since) + limits.idle_timeout, Some(Expiry::Idle))
            }
            started => (
                self.at(started - 1) + limits.header_read_timeout,
                Some(Expiry::Header),
            ),
        }
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub(super) struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        let s = &self.0;
        s.idle_since_ms.store(s.now_ms(), Ordering::Release);
        s.head_started_ms.store(0, Ordering::Release);
        s.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's stream that tells its state when bytes arrive (a request head begins).
#[derive(Debug)]
pub(super) struct Tracked<IO> {
    inner: IO,
    state: Arc<ConnState>,
}

impl<IO> Tracked<IO> {
    pub(super) fn new(inner: IO, state: Arc<ConnState>) -> Self {
        Self { inner, state }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.bytes_read();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The open connections of a listener, oldest first.
#[derive(Debug)]
pub(super) struct Table {
    cap: usize,
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<ConnState>>>,
}

/// Whether a new connection may open.
#[derive(Debug)]
pub(super) enum Admit {
    /// Under the cap.
    Open(u64),
    /// At the cap: the oldest idle connection was told to close to make room.
    Evicted(u64),
    /// At the cap with every connection busy.
    Full,
}

impl Table {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap,
            next: AtomicU64::new(0),
            open: Mutex::new(BTreeMap::new()),
        }
    }

    /// Admits a connection, evicting the oldest idle one at the cap.
    pub(super) fn admit(&self, state: Arc<ConnState>) -> Admit {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = false;
        if open.len() >= self.cap {
            let Some(oldest) = open.iter().find(|(_, s)| s.is_idle()).map(|(id, _)| *id) else {
                return Admit::Full;
            };
            if let Some(s) = open.remove(&oldest) {
                s.close.notify_one();
            }
            evicted = true;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        open.insert(id, state);
        if evicted {
            Admit::Evicted(id)
        } else {
            Admit::Open(id)
        }
    }

    pub(super) fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Counts refusals in the metrics and logs them at most once per [`REFUSAL_LOG_INTERVAL`]
/// with how many came since the last line.
#[derive(Debug)]
pub(super) struct Refusals {
    metrics: Arc<Metrics>,
    section: &'static str,
    last: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl Refusals {
    pub(super) fn new(metrics: Arc<Metrics>, section: &'static str) -> Self {
        Self {
            metrics,
            section,
            last: Mutex::new(None),
            unlogged: AtomicU64::new(0),
        }
    }

    /// One refusal: `reason` is the metric label, `why` the log line's detail.
    pub(super) fn refuse(&self, reason: &'static str, why: &str) {
        self.metrics.http_refused(reason);
        let n = self.unlogged.fetch_add(1, Ordering::AcqRel) + 1;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        self.unlogged.store(0, Ordering::Release);
        tracing::warn!(
            reason,
            since_last_line = n,
            section = self.section,
            "HTTP listener refused or closed a connection or request: {why} (counted in tandem_http_refused_total; further ones logged at most every {} s)",
            REFUSAL_LOG_INTERVAL.as_secs()
        );
    }
}
