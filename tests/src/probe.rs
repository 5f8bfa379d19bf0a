//! Fresh handshakes with the hub from inside a rig host, presenting a device's certificate
//! (`pki/devices/NAME.pem`): QUIC (ALPN `tandem/1`) and HTTPS. In TLS 1.3 the server checks
//! the client's certificate after the client has finished its side of the handshake, so a
//! refusal shows up as the connection closing right after: each probe waits for that.

use crate::fleet::{Fleet, QUIC_PORT};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long an accepted connection must stay open to count as accepted.
const SETTLE: Duration = Duration::from_millis(1500);

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `addr` (checked as `name`) presenting `(cert, key)`.
async fn connect_tls(
    ca: PathBuf,
    (cert, key): (PathBuf, PathBuf),
    addr: SocketAddr,
    name: String,
) -> Result<Tls, String> {
    let cfg = crate::tls::client_config(&ca, Some((cert, key)));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let server = rustls_pki_types::ServerName::try_from(name).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    connector
        .connect(server, tcp)
        .await
        .map_err(|e| e.to_string())
}

impl Fleet {
    fn identity(&self, device: &str) -> (PathBuf, PathBuf, PathBuf) {
        let pki = self.pki();
        (
            pki.join("ca.pem"),
            pki.join(format!("devices/{device}.pem")),
            pki.join(format!("devices/{device}.key")),
        )
    }

    fn hub_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.rig.host(&self.hub_host).ip, port))
    }

    /// A new QUIC connection from `host` to the hub as `device`: `Ok` when the hub accepted
    /// it (still open after a moment), the close reason when it refused it.
    pub async fn quic_handshake(&self, host: &str, device: &str) -> Result<(), String> {
        let (ca, cert, key) = self.identity(device);
        let (addr, name) = (self.hub_addr(QUIC_PORT), self.hub_name());
        self.rig
            .on(host, async move {
                let cfg = crate::tls::quic_client_config(&ca, Some((cert, key)), b"tandem/1");
                let mut ep = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
                    .map_err(|e| e.to_string())?;
                ep.set_default_client_config(cfg);
                let connecting = ep.connect(addr, &name).map_err(|e| e.to_string())?;
                let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
                    .await
                    .map_err(|_| "handshake timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                let outcome = match tokio::time::timeout(SETTLE, conn.closed()).await {
                    Ok(reason) => Err(reason.to_string()),
                    Err(_) => Ok(()),
                };
                conn.close(0u32.into(), b"probe done");
                ep.wait_idle().await;
                outcome
            })
            .await
    }

    /// An HTTPS connection from `host` to the hub's port `port` as `device`, kept alive after
    /// one `GET path` answered 200: the task ends when the hub closes it (`Ok`), or with why
    /// it could not be set up. Started at once, in the background.
    pub fn https_kept_open(
        &self,
        host: &str,
        device: &str,
        port: u16,
        path: &str,
    ) -> tokio::task::JoinHandle<Result<(), String>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ca, cert, key) = self.identity(device);
        let (addr, name, path) = (self.hub_addr(port), self.hub_name(), path.to_string());
        self.rig.spawn_on(host, async move {
            let mut tls = connect_tls(ca, (cert, key), addr, name.clone()).await?;
            let req = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\n\r\n");
            tls.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 16 * 1024];
            let n = tls.read(&mut buf).await.map_err(|e| e.to_string())?;
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !head.starts_with("HTTP/1.1 200") {
                return Err(format!("not a 200: {head:?}"));
            }
            // Until the hub ends it (EOF or an error): whatever else arrives is ignored.
            while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
            Ok(())
        })
    }

    /// `GET path` over a new HTTPS connection from `host` to the hub's port `port` as
    /// `device`: the status code, or why there was none (the handshake refused).
    pub async fn https_get(
        &self,
        host: &str,
        device: &str,
        port: u16,
        path: &str,
    ) -> Result<u16, String> {
        self.https_get_text(host, device, port, path)
            .await
            .map(|(status, _)| status)
    }

    /// [`Fleet::https_get`] with the whole answer (head and body) as text.
    pub async fn https_get_text(
        &self,
        host: &str,
        device: &str,
        port: u16,
        path: &str,
    ) -> Result<(u16, String), String> {
        self.https_get_text_with(host, device, port, path, None)
            .await
    }

    /// [`Fleet::https_get_text`] as the hub's operator: its bearer token (`pki/operator.token`)
    /// over `device`'s TLS connection (the token is the principal, not the certificate).
    pub async fn https_get_text_as_operator(
        &self,
        host: &str,
        device: &str,
        port: u16,
        path: &str,
    ) -> Result<(u16, String), String> {
        let token = crate::http::operator_token(&self.pki());
        self.https_get_text_with(host, device, port, path, Some(token))
            .await
    }

    async fn https_get_text_with(
        &self,
        host: &str,
        device: &str,
        port: u16,
        path: &str,
        bearer: Option<String>,
    ) -> Result<(u16, String), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let (ca, cert, key) = self.identity(device);
        let (addr, name, path) = (self.hub_addr(port), self.hub_name(), path.to_string());
        self.rig
            .on(host, async move {
                let exchange = async {
                    let mut tls = connect_tls(ca, (cert, key), addr, name.clone()).await?;
                    let req = format!(
                        "GET {path} HTTP/1.1\r\nHost: {name}\r\n{auth}Connection: close\r\n\r\n"
                    );
                    tls.write_all(req.as_bytes())
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut answer = Vec::new();
                    tls.read_to_end(&mut answer)
                        .await
                        .map_err(|e| e.to_string())?;
                    let text = String::from_utf8_lossy(&answer).into_owned();
                    match text.split_whitespace().nth(1).and_then(|c| c.parse().ok()) {
                        Some(status) => Ok((status, text)),
                        None => Err(format!("no HTTP answer: {text:?}")),
                    }
                };
                tokio::time::timeout(Duration::from_secs(10), exchange)
                    .await
                    .map_err(|_| "timed out".to_string())?
            })
            .await
    }
}
