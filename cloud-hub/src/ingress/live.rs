//! The open connections (QUIC and HTTPS) by the serial of their client certificate, so that a
//! device whose certificate is revoked loses the connections it has, not only its next
//! handshake: a QUIC connection is closed with [`CLOSE_REVOKED`], an HTTPS one is signalled
//! and its stream fails its next read or write ([`Revocable`]). Each connection registers once
//! its handshake completes and leaves when it ends ([`Registered`] on drop).

use rustls_pki_types::CertificateDer;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// QUIC application error: the device's certificate was revoked.
pub const CLOSE_REVOKED: u32 = 0x6;

/// The serial of a certificate as a number (`None` for one over 64 bits or unreadable).
pub fn serial(cert: &CertificateDer<'_>) -> Option<u64> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let bytes = cert.serial();
    let bytes = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
    if bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// The QUIC side of a new CRL: the endpoint whose server configuration is swapped, the limits
/// it was built with, the open connections.
#[derive(Debug, Clone)]
pub struct QuicReload {
    /// The endpoint.
    pub endpoint: quinn::Endpoint,
    /// Its limits (transport settings of a rebuilt configuration).
    pub limits: super::limits::QuicLimits,
    /// Its open connections.
    pub live: Arc<LiveConns>,
}

impl QuicReload {
    /// New handshakes use the PKI folder's CRL from now on; the open connections of `revoked`
    /// serials are closed. Returns their devices.
    pub fn apply(
        &self,
        pki: &std::path::Path,
        revoked: &BTreeSet<u64>,
    ) -> Result<Vec<String>, super::quic::IngressError> {
        self.endpoint
            .set_server_config(Some(super::quic::server_config(pki, &self.limits)?));
        Ok(self.live.close_revoked(revoked))
    }
}

/// How a registered connection is closed.
#[derive(Debug)]
enum Closer {
    Quic(quinn::Connection),
    Stream(tokio::sync::watch::Sender<bool>),
}

impl Closer {
    fn close(&self) {
        match self {
            Closer::Quic(c) => c.close(
                quinn::VarInt::from_u32(CLOSE_REVOKED),
                b"certificate revoked",
            ),
            Closer::Stream(tx) => {
                let _ = tx.send(true);
            }
        }
    }
}

#[derive(Debug)]
struct Entry {
    serial: u64,
    device: String,
    closer: Closer,
}

/// The open connections.
#[derive(Debug, Default)]
pub struct LiveConns {
    by_id: Mutex<HashMap<u64, Entry>>,
    next_id: std::sync::atomic::AtomicU64,
    /// The revoked serials last given to [`LiveConns::close_revoked`]: a connection whose
    /// handshake finished under the previous CRL and registers after it is closed at once.
    revoked: Mutex<BTreeSet<u64>>,
}

/// A connection's registration; dropping it removes the connection.
#[derive(Debug)]
pub struct Registered {
    live: Arc<LiveConns>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut m) = self.live.by_id.lock() {
            m.remove(&self.id);
        }
    }
}

impl LiveConns {
    /// Registers QUIC connection `conn` of `device`, whose certificate has `serial`.
    pub fn register(
        self: &Arc<Self>,
        conn: &quinn::Connection,
        serial: u64,
        device: &str,
    ) -> Registered {
        self.insert(serial, device, Closer::Quic(conn.clone()))
    }

    /// Registers a stream connection (HTTPS) of `device`, whose certificate has `serial`: the
    /// receiver turns `true` when it is revoked.
    pub fn register_stream(
        self: &Arc<Self>,
        serial: u64,
        device: &str,
    ) -> (Registered, tokio::sync::watch::Receiver<bool>) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (self.insert(serial, device, Closer::Stream(tx)), rx)
    }

    fn insert(self: &Arc<Self>, serial: u64, device: &str, closer: Closer) -> Registered {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.revoked.lock().is_ok_and(|r| r.contains(&serial)) {
            closer.close();
        }
        if let Ok(mut m) = self.by_id.lock() {
            m.insert(
                id,
                Entry {
                    serial,
                    device: device.to_string(),
                    closer,
                },
            );
        }
        Registered {
            live: self.clone(),
            id,
        }
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.by_id.lock().map_or(0, |m| m.len())
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every connection whose certificate serial is in `revoked` (error
    /// [`CLOSE_REVOKED`], reason "certificate revoked"); returns the devices closed.
    pub fn close_revoked(&self, revoked: &BTreeSet<u64>) -> Vec<String> {
        if let Ok(mut r) = self.revoked.lock() {
            r.clone_from(revoked);
        }
        let Ok(m) = self.by_id.lock() else {
            return Vec::new();
        };
        let mut closed = Vec::new();
        for e in m.values().filter(|e| revoked.contains(&e.serial)) {
            e.closer.close();
            closed.push(e.device.clone());
        }
        closed
    }
}

/// A stream (an HTTPS connection) that fails its next read or write once its certificate is
/// revoked: hyper, always reading a kept-alive connection, is woken and drops it. Holds the
/// connection's registration.
pub struct Revocable<S> {
    inner: S,
    revoked: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    gone: bool,
    _registered: Registered,
}

impl<S> std::fmt::Debug for Revocable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocable")
            .field("gone", &self.gone)
            .finish()
    }
}

impl<S> Revocable<S> {
    /// `inner`, registered in `live` as `device` with certificate `serial`.
    pub fn new(inner: S, live: &Arc<LiveConns>, serial: u64, device: &str) -> Self {
        let (registered, mut rx) = live.register_stream(serial, device);
        Self {
            inner,
            revoked: Box::pin(async move {
                let _ = rx.wait_for(|r| *r).await;
            }),
            gone: false,
            _registered: registered,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Whether the certificate was revoked (checked now; wakes the task when it is later).
    fn check(&mut self, cx: &mut std::task::Context<'_>) -> std::io::Result<()> {
        if !self.gone && self.revoked.as_mut().poll(cx).is_ready() {
            self.gone = true;
        }
        if self.gone {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "certificate revoked",
            ));
        }
        Ok(())
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Revocable<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Revocable<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Err(e) = self.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_serials_of_pki_certificates() {
        use rustls_pki_types::pem::PemObject;
        let dir = tempfile::tempdir().expect("tmp");
        let pki = crate::pki::Pki::init(dir.path()).expect("pki");
        let rec = pki.add_device("cam-01", 1).expect("device");
        let (cert, _) = pki.device_files("cam-01");
        let der = CertificateDer::from_pem_file(cert).expect("pem");
        assert_eq!(serial(&der), Some(rec.serial));
    }

    #[tokio::test]
    async fn a_revoked_stream_fails_its_pending_read() {
        use tokio::io::AsyncReadExt;
        let live = Arc::new(LiveConns::default());
        let (a, _b) = tokio::io::duplex(64);
        let (c, _d) = tokio::io::duplex(64);
        let mut revoked = Revocable::new(a, &live, 7, "cam-07");
        let mut kept = Revocable::new(c, &live, 8, "cam-08");
        let reading = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            revoked.read(&mut buf).await
        });
        tokio::task::yield_now().await;
        assert_eq!(live.close_revoked(&BTreeSet::from([7])), vec!["cam-07"]);
        let err = reading.await.expect("task").expect_err("revoked");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
        let mut buf = [0u8; 1];
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), kept.read(&mut buf))
                .await
                .is_err(),
            "the other stream still waits for data"
        );
        // A registration that arrives after the revocation is closed at once.
        let (e, _f) = tokio::io::duplex(64);
        let mut late = Revocable::new(e, &live, 7, "cam-07");
        assert!(late.read(&mut buf).await.is_err());
        assert_eq!(live.len(), 2, "the revoked stream left when it was dropped");
        drop((kept, late));
        assert!(live.is_empty());
    }
}
