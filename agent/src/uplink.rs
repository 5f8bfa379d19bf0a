//! The agent's QUIC link to the hub: one long-lived mutual-TLS connection (ALPN `tandem/1`), a
//! bidirectional stream per request, reconnection with jittered exponential backoff, and the
//! round-trip and service times the routing policy reads.
//!
//! A reconnection to a hub that gave this process a session ticket sends its first request as
//! 0-RTT data (inference requests are idempotent). A failure never blocks a caller: while the link backs off, [`Uplink::view`] says the hub is
//! unavailable and the caller answers locally. When the hub closes the connection (for instance
//! because the device certificate expired or was revoked) the close reason is logged at WARN.

use crate::policy::HubView;
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_shared::wire::{ALPN, DEFAULT_MAX_FRAME_BYTES, FrameDecoder, Message, encode_to_vec};

/// `[hub]` in the agent config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Hub QUIC address (`IP:port`); empty disables offloading.
    pub address: String,
    /// Name the hub's certificate is checked against.
    pub server_name: String,
    /// CA certificate (PEM) the hub's certificate chains to.
    pub ca: PathBuf,
    /// This device's certificate (PEM), from `tandem-hub device add`.
    pub cert: PathBuf,
    /// This device's private key (PEM).
    pub key: PathBuf,
    /// Longest wait for the hub's answer when the caller set no deadline, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            address: String::new(),
            server_name: "localhost".into(),
            ca: PathBuf::from("pki/ca.pem"),
            cert: PathBuf::from("pki/device.pem"),
            key: PathBuf::from("pki/device.key"),
            timeout_ms: 2000,
        }
    }
}

/// Why the hub did not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UplinkError {
    /// TLS material missing or unusable.
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
struct State {
    conn: Option<quinn::Connection>,
    /// Whether `conn` finished its handshake (a 0-RTT connection is usable before it has).
    established: Arc<AtomicBool>,
    failures: u32,
    retry_at: Option<Instant>,
    service_ms: Option<f64>,
}

/// The link to the hub.
#[derive(Debug)]
pub struct Uplink {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    server_name: String,
    timeout: Duration,
    state: Mutex<State>,
    /// 0-RTT connections attempted and accepted by the hub.
    zero_rtt: Arc<(AtomicU64, AtomicU64)>,
}

fn pem_err(p: &Path) -> impl FnOnce(rustls_pki_types::pem::Error) -> UplinkError + '_ {
    move |e| UplinkError::Setup(format!("{}: {e}", p.display()))
}

impl Uplink {
    /// Builds the client (no connection yet). Paths resolve with `resolve`.
    pub fn new(cfg: &HubConfig, resolve: impl Fn(&Path) -> PathBuf) -> Result<Self, UplinkError> {
        let addr: SocketAddr = cfg.address.parse().map_err(|_| {
            UplinkError::Setup(format!("hub.address `{}` is not IP:port", cfg.address))
        })?;
        let (ca, cert, key) = (resolve(&cfg.ca), resolve(&cfg.cert), resolve(&cfg.key));
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&ca).map_err(pem_err(&ca))?)
            .map_err(|e| UplinkError::Setup(e.to_string()))?;
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| UplinkError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(&cert).map_err(pem_err(&cert))?],
            PrivateKeyDer::from_pem_file(&key).map_err(pem_err(&key))?,
        )
        .map_err(|e| UplinkError::Setup(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.enable_early_data = true;
        let crypto =
            QuicClientConfig::try_from(tls).map_err(|e| UplinkError::Setup(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(5)));
        client.transport_config(Arc::new(transport));
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(|_| UplinkError::Setup("bind address".into()))?;
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| UplinkError::Setup(e.to_string()))?;
        endpoint.set_default_client_config(client);
        Ok(Self {
            endpoint,
            addr,
            server_name: cfg.server_name.clone(),
            timeout: Duration::from_millis(cfg.timeout_ms),
            state: Mutex::new(State {
                conn: None,
                established: Arc::new(AtomicBool::new(false)),
                failures: 0,
                retry_at: None,
                service_ms: None,
            }),
            zero_rtt: Arc::new((AtomicU64::new(0), AtomicU64::new(0))),
        })
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

    /// The hub as the policy sees it.
    pub fn view(&self) -> HubView {
        let Ok(s) = self.state.lock() else {
            return HubView::default();
        };
        let live = s.conn.as_ref().filter(|c| c.close_reason().is_none());
        HubView {
            available: live.is_some() || s.retry_at.is_none_or(|t| Instant::now() >= t),
            rtt_ms: live.map(|c| c.rtt().as_secs_f64() * 1000.0),
            service_ms: s.service_ms,
        }
    }

    fn fail(&self, why: &str) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(c) = s.conn.take()
                && let Some(reason) = c.close_reason()
            {
                tracing::warn!(hub = %self.addr, reason = %reason, "hub connection closed");
            }
            s.failures = s.failures.saturating_add(1);
            let base = 100u64.saturating_mul(1 << s.failures.min(7)).min(10_000);
            let jitter = (Instant::now().elapsed().subsec_nanos() as u64
                ^ u64::from(std::process::id()))
                % (base / 2 + 1);
            s.retry_at = Some(Instant::now() + Duration::from_millis(base / 2 + jitter));
            tracing::debug!(hub = %self.addr, why, backoff_ms = base, "hub link failed");
        }
    }

    async fn connection(&self) -> Result<quinn::Connection, UplinkError> {
        {
            let s = self
                .state
                .lock()
                .map_err(|_| UplinkError::Unreachable("state".into()))?;
            if let Some(c) = s.conn.as_ref().filter(|c| c.close_reason().is_none()) {
                return Ok(c.clone());
            }
            if let Some(t) = s.retry_at.filter(|t| Instant::now() < *t) {
                return Err(UplinkError::Unreachable(format!(
                    "backing off for {} ms",
                    (t - Instant::now()).as_millis()
                )));
            }
        }
        let connecting = self
            .endpoint
            .connect(self.addr, &self.server_name)
            .map_err(|e| UplinkError::Unreachable(e.to_string()))?;
        // With a session ticket from an earlier connection, send at once (0-RTT): inference
        // requests are idempotent (the hub keys them by identity and request id), so a replay
        // is harmless. Without one, a full handshake.
        let established = Arc::new(AtomicBool::new(false));
        let conn = match connecting.into_0rtt() {
            Ok((conn, accepted)) => {
                self.zero_rtt.0.fetch_add(1, Ordering::Relaxed);
                let (counter, done) = (self.zero_rtt.clone(), established.clone());
                tokio::spawn(async move {
                    // Resolves when the handshake completes (true: the 0-RTT data was accepted);
                    // never, if the hub is gone.
                    if accepted.await {
                        counter.1.fetch_add(1, Ordering::Relaxed);
                    }
                    done.store(true, Ordering::Release);
                });
                conn
            }
            Err(connecting) => match tokio::time::timeout(self.timeout, connecting).await {
                Ok(Ok(c)) => {
                    established.store(true, Ordering::Release);
                    c
                }
                Ok(Err(e)) => {
                    self.fail(&e.to_string());
                    return Err(UplinkError::Unreachable(e.to_string()));
                }
                Err(_) => {
                    self.fail("connect timeout");
                    return Err(UplinkError::Unreachable("connect timed out".into()));
                }
            },
        };
        if let Ok(mut s) = self.state.lock() {
            s.conn = Some(conn.clone());
            s.established = established;
            s.failures = 0;
            s.retry_at = None;
        }
        tracing::info!(hub = %self.addr, "connected to the hub");
        Ok(conn)
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
                self.fail(&e);
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
                    self.fail("the hub did not complete the handshake");
                    return Err(UplinkError::Unreachable(
                        "the hub did not complete the handshake".into(),
                    ));
                }
                return Err(UplinkError::Timeout(timeout.as_millis() as u64));
            }
        };
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        d.feed(&bytes);
        let answer = d
            .next_message()
            .map_err(|e| UplinkError::Protocol(e.to_string()))?
            .ok_or_else(|| UplinkError::Protocol("empty answer".into()))?;
        if let Message::InferResponse { timing, .. } = &answer
            && let Ok(mut s) = self.state.lock()
        {
            let ms = f64::from(timing.service_us + timing.queue_us) / 1000.0;
            s.service_ms = Some(s.service_ms.map_or(ms, |old| 0.8 * old + 0.2 * ms));
        }
        tracing::trace!(
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            "hub answered"
        );
        Ok(answer)
    }
}

/// One request frame out on a new stream, the whole answer back.
async fn exchange(conn: &quinn::Connection, frame: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(frame).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    recv.read_to_end(DEFAULT_MAX_FRAME_BYTES + 64)
        .await
        .map_err(|e| e.to_string())
}
