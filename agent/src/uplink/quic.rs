//! The agent's QUIC link to the hub: one long-lived mutual-TLS connection (ALPN `tandem/1`), a
//! bidirectional stream per request, reconnection with exponential backoff and full jitter
//! (`tandem_shared::backoff`: a random wait up to 200 ms, doubling per failure to 10 s), and
//! the round-trip and service times the routing policy reads.
//!
//! A reconnection to a hub that gave this process a session ticket sends its first request as
//! 0-RTT data (inference requests are idempotent). A failure never blocks a caller: while the
//! link backs off, or while a hub that let a request time out has not answered a probe,
//! [`Uplink::view`] says the hub is unavailable and the caller answers locally. One connection
//! attempt at a time: callers that find none up while one is under way wait for it rather than
//! open their own (a burst of requests opens one connection, not one each). When the hub
//! closes the connection (for instance because the device certificate expired or was revoked)
//! the close reason is logged at WARN and kept in [`Uplink::status`].

use super::address::HubAddress;
use super::config::{HubConfig, client_config};
use crate::policy::HubView;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_shared::backoff::Backoff;
use tandem_shared::wire::{DEFAULT_MAX_FRAME_BYTES, FrameDecoder, Message, encode_to_vec};

/// Longest wait after the first failed attempt to reach the hub; it doubles per failure.
const RETRY_BASE: Duration = Duration::from_millis(200);
/// Longest wait between attempts to reach the hub.
const RETRY_CAP: Duration = Duration::from_secs(10);

/// The keeper's wait before its first connection: uniform in [0, the backoff's base].
pub(super) fn first_connect_delay() -> Duration {
    Backoff::new(RETRY_BASE, RETRY_BASE).next_delay()
}

/// Why the hub did not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UplinkError {
    /// TLS material missing or unusable, or a bad `[hub]` setting.
    #[error("hub TLS setup: {0}")]
    Setup(String),
    /// No connection (refused, closed, backing off).
    #[error("hub unreachable: {0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("hub did not answer within {0} ms")]
    Timeout(u64),
    /// The answer was not a valid frame.
    #[error("hub answered with an invalid frame: {0}")]
    Protocol(String),
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) conn: Option<quinn::Connection>,
    /// Whether `conn` finished its handshake (a 0-RTT connection is usable before it has).
    pub(super) established: Arc<AtomicBool>,
    /// A request timed out on `conn` at this instant: unavailable until the hub answers a
    /// probe (the keeper's), or for one `timeout` at most when no keeper runs.
    pub(super) suspect: Option<Instant>,
    /// The hub has answered on `conn` (a request or the keeper's probe): until then a new
    /// connection is not reported as connected (a hub that refuses the certificate closes it
    /// right after the handshake).
    answered: bool,
    /// Waits between connection attempts (full jitter; reset by any answer).
    backoff: Backoff,
    pub(super) retry_at: Option<Instant>,
    service_ms: Option<f64>,
    last_error: Option<String>,
}

/// The link as an operator sees it (`/metrics`, telemetry).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkStatus {
    /// A connection is up, the hub has answered on it, and it is not suspected dead.
    pub connected: bool,
    /// Connections established since start.
    pub connects: u64,
    /// Connections lost (closed by either side, timed out, or given up after a silent probe).
    pub disconnects: u64,
    /// Why the last connection ended or the last attempt failed.
    pub last_error: Option<String>,
}

/// The link to the hub.
#[derive(Debug)]
pub struct Uplink {
    pub(super) endpoint: quinn::Endpoint,
    /// The client configuration (TLS identity) new connections use; replaced by
    /// [`Uplink::reload_identity`] after a renewal.
    pub(super) client: Mutex<quinn::ClientConfig>,
    /// Held while [`Uplink::connection`] or the keeper makes a connection: one attempt at a
    /// time.
    connecting: tokio::sync::Mutex<()>,
    /// `hub.address`, resolved at each connect.
    pub(super) hub: HubAddress,
    pub(super) server_name: String,
    timeout: Duration,
    pub(super) state: Mutex<State>,
    /// Wakes the keeper: a request timed out.
    pub(super) wake: tokio::sync::Notify,
    /// 0-RTT connections attempted and accepted by the hub.
    zero_rtt: Arc<(AtomicU64, AtomicU64)>,
    pub(super) connects: AtomicU64,
    disconnects: AtomicU64,
    delivery: Arc<super::deliver::DeliveryStats>,
}

impl Uplink {
    /// Builds the client (no connection yet; [`Uplink::keep`] starts the keeper). Paths
    /// resolve with `resolve`. Needs a tokio runtime context.
    pub fn new(cfg: &HubConfig, resolve: impl Fn(&Path) -> PathBuf) -> Result<Self, UplinkError> {
        let hub = HubAddress::parse(&cfg.address)
            .map_err(|e| UplinkError::Setup(format!("hub.address: {e}")))?;
        let client = client_config(cfg, resolve)?;
        let v4: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 0));
        let v6: SocketAddr = SocketAddr::from(([0u16; 8], 0));
        let endpoint = match hub.ip() {
            Some(ip) if ip.is_ipv4() => quinn::Endpoint::client(v4),
            Some(_) => quinn::Endpoint::client(v6),
            // A name may resolve to either family: a dual-stack socket where the host has IPv6,
            // IPv4 alone where it has not.
            None => quinn::Endpoint::client(v6).or_else(|_| quinn::Endpoint::client(v4)),
        }
        .map_err(|e| UplinkError::Setup(e.to_string()))?;
        Ok(Self {
            endpoint,
            client: Mutex::new(client),
            connecting: tokio::sync::Mutex::new(()),
            server_name: hub.server_name(&cfg.server_name),
            hub,
            timeout: Duration::from_millis(cfg.timeout_ms),
            state: Mutex::new(State {
                conn: None,
                established: Arc::new(AtomicBool::new(false)),
                suspect: None,
                answered: false,
                backoff: Backoff::new(RETRY_BASE, RETRY_CAP),
                retry_at: None,
                service_ms: None,
                last_error: None,
            }),
            wake: tokio::sync::Notify::new(),
            zero_rtt: Arc::new((AtomicU64::new(0), AtomicU64::new(0))),
            connects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            delivery: Arc::default(),
        })
    }

    /// Starts the keeper: connects now and keeps the connection up in the background for as
    /// long as the link lives (see `keeper`).
    pub fn keep(self: &Arc<Self>) {
        tokio::spawn(super::keeper::run(Arc::downgrade(self)));
    }

    /// Shutdown: closes the connection and the endpoint, and waits until the hub has been
    /// told (or the close timed out); the keeper's reconnects fail from then on.
    pub async fn close(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"agent shutting down");
        self.endpoint.wait_idle().await;
    }

    /// The delivery loop's counters.
    pub fn delivery_stats(&self) -> &Arc<super::deliver::DeliveryStats> {
        &self.delivery
    }

    /// Connections opened with 0-RTT data, and how many of those the hub accepted.
    pub fn zero_rtt(&self) -> (u64, u64) {
        (
            self.zero_rtt.0.load(Ordering::Relaxed),
            self.zero_rtt.1.load(Ordering::Relaxed),
        )
    }

    /// Closes the current connection (the next request reconnects, with 0-RTT when it can).
    pub fn disconnect(&self) {
        if let Ok(mut s) = self.state.lock()
            && let Some(c) = s.conn.take()
        {
            c.close(quinn::VarInt::from_u32(0), b"agent reconnecting");
        }
    }

    /// Default answer timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The link's state and counters.
    pub fn status(&self) -> LinkStatus {
        let (connected, last_error) = self.state.lock().map_or((false, None), |s| {
            (
                s.conn.as_ref().is_some_and(|c| c.close_reason().is_none())
                    && s.answered
                    && s.suspect.is_none(),
                s.last_error.clone(),
            )
        });
        LinkStatus {
            connected,
            connects: self.connects.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            last_error,
        }
    }

    /// The hub as the policy sees it.
    pub fn view(&self) -> HubView {
        let Ok(s) = self.state.lock() else {
            return HubView::default();
        };
        let live = s.conn.as_ref().filter(|c| c.close_reason().is_none());
        HubView {
            available: match live {
                Some(_) => s.suspect.is_none_or(|t| t.elapsed() >= self.timeout),
                None => s.retry_at.is_none_or(|t| Instant::now() >= t),
            },
            rtt_ms: live.map(|c| c.rtt().as_secs_f64() * 1000.0),
            service_ms: s.service_ms,
        }
    }

    /// Forgets the connection `conn` (if it is still the current one), records why, and backs
    /// off before the next attempt. The reason is logged at WARN when it differs from the last
    /// one (a hub refusing this device's certificate is reported, not retried silently).
    pub(super) fn fail(&self, conn: Option<&quinn::Connection>, why: &str) {
        let Ok(mut s) = self.state.lock() else { return };
        let current = match (conn, s.conn.as_ref()) {
            (Some(c), Some(cur)) => c.stable_id() == cur.stable_id(),
            (None, _) => true,
            (Some(_), None) => false,
        };
        if !current {
            return;
        }
        if let Some(c) = s.conn.take() {
            self.disconnects.fetch_add(1, Ordering::Relaxed);
            if c.close_reason().is_none() {
                c.close(quinn::VarInt::from_u32(0), why.as_bytes());
            }
        }
        s.suspect = None;
        let wait = s.backoff.next_delay();
        s.retry_at = Some(Instant::now() + wait);
        let retry_in_ms = wait.as_millis() as u64;
        if s.last_error.as_deref() != Some(why) {
            tracing::warn!(hub = %self.hub, reason = why, retry_in_ms, "hub link lost");
            s.last_error = Some(why.to_string());
        } else {
            let failures = s.backoff.failures();
            tracing::debug!(hub = %self.hub, reason = why, retry_in_ms, failures, "hub link failed again");
        }
    }

    /// The hub answered: the connection is trusted, the backoff and the last error reset.
    pub(super) fn confirmed(&self) {
        if let Ok(mut s) = self.state.lock() {
            confirm(&mut s, &self.hub);
        }
    }

    fn install(&self, conn: quinn::Connection, established: Arc<AtomicBool>) -> quinn::Connection {
        let Ok(mut s) = self.state.lock() else {
            return conn;
        };
        if let Some(cur) = s.conn.as_ref().filter(|c| c.close_reason().is_none()) {
            // Another task connected meanwhile: keep one connection.
            conn.close(quinn::VarInt::from_u32(0), b"duplicate");
            return cur.clone();
        }
        s.conn = Some(conn.clone());
        s.established = established;
        s.suspect = None;
        s.answered = false;
        s.retry_at = None;
        self.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(hub = %self.hub, "connected to the hub");
        conn
    }

    /// The live connection, if any (the keeper watches it).
    pub(super) fn current(&self) -> Option<quinn::Connection> {
        self.state
            .lock()
            .ok()?
            .conn
            .as_ref()
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// Starts a connection to `addr` with the current client configuration (TLS identity).
    pub(super) fn connect_to(&self, addr: SocketAddr) -> Result<quinn::Connecting, UplinkError> {
        let client = self
            .client
            .lock()
            .map_err(|_| UplinkError::Setup("client configuration lock".into()))?
            .clone();
        self.endpoint
            .connect_with(client, addr, &self.server_name)
            .map_err(|e| UplinkError::Unreachable(e.to_string()))
    }

    /// A full handshake (no 0-RTT: nothing is waiting to be sent), for the keeper.
    pub(super) async fn connect_full(&self) -> Result<quinn::Connection, UplinkError> {
        let _one = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let addrs = self.resolve().await?;
        self.handshake(&addrs, None).await
    }

    /// The hub's addresses now; a failed lookup starts the backoff.
    async fn resolve(&self) -> Result<Vec<SocketAddr>, UplinkError> {
        self.hub.resolve().await.map_err(|why| {
            self.fail(None, &why);
            UplinkError::Unreachable(why)
        })
    }

    /// A full handshake with each address in turn (the first one's attempt may be under way
    /// already: `first`), each within `hub.timeout_ms`, until one succeeds; when none does,
    /// the backoff starts.
    async fn handshake(
        &self,
        addrs: &[SocketAddr],
        mut first: Option<quinn::Connecting>,
    ) -> Result<quinn::Connection, UplinkError> {
        let mut why = Vec::new();
        for addr in addrs {
            let connecting = match first.take() {
                Some(c) => c,
                None => match self.connect_to(*addr) {
                    Ok(c) => c,
                    Err(e) => {
                        why.push(format!("{addr}: {e}"));
                        continue;
                    }
                },
            };
            match tokio::time::timeout(self.timeout, connecting).await {
                Ok(Ok(c)) => return Ok(self.install(c, Arc::new(AtomicBool::new(true)))),
                Ok(Err(e)) => why.push(format!("{addr}: {e}")),
                Err(_) => why.push(format!("{addr}: connect timed out")),
            }
        }
        let why = why.join("; ");
        self.fail(None, &why);
        Err(UplinkError::Unreachable(why))
    }

    /// Records the loss of a connection that closed without anyone noticing yet (no keeper,
    /// or the keeper not there yet), so that the next attempt waits its backoff like after
    /// every other loss. Without it, a request right after the hub closed every device's
    /// connection at one moment (a hub restart) would reconnect at once, the whole fleet in
    /// one wave.
    pub(super) fn record_closed(&self) {
        let closed = self.state.lock().ok().and_then(|s| {
            s.conn
                .as_ref()
                .and_then(|c| c.close_reason().map(|r| (c.clone(), r.to_string())))
        });
        if let Some((conn, why)) = closed {
            self.fail(Some(&conn), &why);
        }
    }

    /// The live connection; `None` when there is none and an attempt may be made now; the
    /// reason while backing off.
    fn live(&self) -> Result<Option<quinn::Connection>, UplinkError> {
        self.record_closed();
        let s = self
            .state
            .lock()
            .map_err(|_| UplinkError::Unreachable("state".into()))?;
        if let Some(c) = s.conn.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(Some(c.clone()));
        }
        if let Some(t) = s.retry_at.filter(|t| Instant::now() < *t) {
            let why = s.last_error.as_deref().unwrap_or("the last attempt failed");
            return Err(UplinkError::Unreachable(format!(
                "{why} (next attempt in {} ms)",
                (t - Instant::now()).as_millis()
            )));
        }
        Ok(None)
    }

    /// The live connection to the hub (connecting if needed, within the backoff), for streams
    /// of the caller's own: model downloads.
    pub async fn connection(&self) -> Result<quinn::Connection, UplinkError> {
        if let Some(c) = self.live()? {
            return Ok(c);
        }
        // One attempt at a time: callers arriving meanwhile take the connection it makes (a
        // burst of first requests opens one connection, not one each: the hub caps
        // connections per device) or its failure's backoff.
        let _one = self.connecting.lock().await;
        if let Some(c) = self.live()? {
            return Ok(c);
        }
        let addrs = self.resolve().await?;
        let first = *addrs
            .first()
            .ok_or_else(|| UplinkError::Unreachable("no address".into()))?;
        let connecting = self.connect_to(first)?;
        // With a session ticket from an earlier connection, send at once (0-RTT) to the first
        // address: inference requests are idempotent (the hub keys them by identity and request
        // id), so a replay is harmless. Without one, a full handshake with each address in turn.
        match connecting.into_0rtt() {
            Ok((conn, accepted)) => {
                self.zero_rtt.0.fetch_add(1, Ordering::Relaxed);
                let established = Arc::new(AtomicBool::new(false));
                let (counter, done) = (self.zero_rtt.clone(), established.clone());
                tokio::spawn(async move {
                    // Resolves when the handshake completes (true: the 0-RTT data was accepted);
                    // never, if the hub is gone.
                    if accepted.await {
                        counter.1.fetch_add(1, Ordering::Relaxed);
                    }
                    done.store(true, Ordering::Release);
                });
                Ok(self.install(conn, established))
            }
            Err(connecting) => self.handshake(&addrs, Some(connecting)).await,
        }
    }

    /// Sends one request on a new stream and waits for the answer.
    pub async fn call(&self, msg: &Message, timeout: Duration) -> Result<Message, UplinkError> {
        let conn = self.connection().await?;
        let frame = encode_to_vec(msg, DEFAULT_MAX_FRAME_BYTES)
            .map_err(|e| UplinkError::Protocol(e.to_string()))?;
        let started = Instant::now();
        let mut outcome = tokio::time::timeout(timeout, exchange(&conn, &frame)).await;
        if matches!(outcome, Ok(Err(_))) && conn.close_reason().is_none() {
            // The stream failed but the connection lives (e.g. 0-RTT data the hub rejected):
            // the request is idempotent, send it once more.
            let left = timeout.saturating_sub(started.elapsed());
            outcome = tokio::time::timeout(left, exchange(&conn, &frame)).await;
        }
        let bytes = match outcome {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let e = conn.close_reason().map_or(e, |r| r.to_string());
                self.fail(Some(&conn), &e);
                return Err(UplinkError::Unreachable(e));
            }
            Err(_) => {
                let established = self
                    .state
                    .lock()
                    .map(|s| s.established.load(Ordering::Acquire))
                    .unwrap_or(false);
                if !established {
                    // A 0-RTT attempt to a hub that never completed the handshake: gone.
                    let why = "the hub did not complete the handshake";
                    self.fail(Some(&conn), why);
                    return Err(UplinkError::Unreachable(why.into()));
                }
                // Slow or gone: until a probe says otherwise, answer locally at once.
                if let Ok(mut s) = self.state.lock() {
                    s.suspect = Some(Instant::now());
                }
                self.wake.notify_one();
                return Err(UplinkError::Timeout(timeout.as_millis() as u64));
            }
        };
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        d.feed(&bytes);
        let answer = d
            .next_message()
            .map_err(|e| UplinkError::Protocol(e.to_string()))?
            .ok_or_else(|| UplinkError::Protocol("empty answer".into()))?;
        if let Ok(mut s) = self.state.lock() {
            confirm(&mut s, &self.hub);
            if let Message::InferResponse { timing, .. } | Message::PredictResponse { timing, .. } =
                &answer
            {
                let ms = f64::from(timing.service_us + timing.queue_us) / 1000.0;
                s.service_ms = Some(s.service_ms.map_or(ms, |old| 0.8 * old + 0.2 * ms));
            }
        }
        tracing::trace!(
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            "hub answered"
        );
        Ok(answer)
    }
}

/// The hub's answer to a delivery.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// `(epoch, seq)` of every record it acknowledged (stored durably).
    pub acks: Vec<(u64, u64)>,
    /// It takes no more from this device for now (`Busy`, its quota): try again after this.
    pub retry_after: Option<Duration>,
}

impl Uplink {
    /// Sends `frames` (`Deliver` frames, back to back) on one stream and returns the
    /// `(epoch, seq)` of every `Ack` the hub answered with, and its `Busy` hint if it sent one.
    pub async fn deliver(
        &self,
        frames: &[u8],
        timeout: Duration,
    ) -> Result<Delivered, UplinkError> {
        let conn = self.connection().await?;
        let bytes = match tokio::time::timeout(timeout, exchange(&conn, frames)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let e = conn.close_reason().map_or(e, |r| r.to_string());
                return Err(UplinkError::Unreachable(e));
            }
            Err(_) => return Err(UplinkError::Timeout(timeout.as_millis() as u64)),
        };
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        d.feed(&bytes);
        let mut out = Delivered::default();
        loop {
            match d.next_message() {
                Ok(Some(Message::Ack { epoch, seq })) => out.acks.push((epoch, seq)),
                // Over this device's quota: keep what was acknowledged; the rest waits for a
                // later round, after the hub's hint (the delivery loop).
                Ok(Some(Message::Busy { retry_after_ms, .. })) => {
                    tracing::info!(
                        acked = out.acks.len(),
                        retry_after_ms,
                        "the hub takes no more records from this device for now (quota): the rest stays queued"
                    );
                    out.retry_after = Some(Duration::from_millis(u64::from(retry_after_ms)));
                    break;
                }
                Ok(Some(Message::Error { message, .. })) => {
                    return Err(UplinkError::Protocol(format!(
                        "the hub refused the records: {message}"
                    )));
                }
                Ok(Some(other)) => {
                    return Err(UplinkError::Protocol(format!(
                        "unexpected {:?} in a delivery answer",
                        other.kind()
                    )));
                }
                Ok(None) => break,
                Err(e) => return Err(UplinkError::Protocol(e.to_string())),
            }
        }
        if let Ok(mut s) = self.state.lock() {
            confirm(&mut s, &self.hub);
        }
        Ok(out)
    }
}

/// Any answer shows the hub is alive and accepts this device.
fn confirm(s: &mut State, addr: &HubAddress) {
    s.suspect = None;
    s.answered = true;
    s.backoff.reset();
    if let Some(e) = s.last_error.take() {
        tracing::info!(hub = %addr, after = %e, "hub link restored");
    }
}

/// One request frame out on a new stream, the whole answer back.
pub(super) async fn exchange(conn: &quinn::Connection, frame: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    match send.write_all(frame).await {
        Ok(()) => send.finish().map_err(|e| e.to_string())?,
        // The hub stopped reading (a refused delivery): its answer says why.
        Err(quinn::WriteError::Stopped(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    recv.read_to_end(DEFAULT_MAX_FRAME_BYTES + 64)
        .await
        .map_err(|e| e.to_string())
}
