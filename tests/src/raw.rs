//! One HTTP/1.1 request on a fresh connection, plain or TLS with a client identity, every
//! header set by hand (`Host`, `Origin`, `Content-Type`, as a hostile client would): the
//! status code and the body.

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A request: method, path, headers (`Host: localhost` unless one is given) and body.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// Extra headers.
    pub headers: &'a [(&'a str, &'a str)],
    /// Body (sent with its `Content-Length`).
    pub body: &'a [u8],
}

impl<'a> Raw<'a> {
    /// `GET path`.
    pub fn get(path: &'a str) -> Self {
        Self {
            method: "GET",
            path,
            headers: &[],
            body: b"",
        }
    }

    /// `POST path` with a JSON body.
    pub fn post_json(path: &'a str, body: &'a str) -> Self {
        Self {
            method: "POST",
            path,
            headers: &[("Content-Type", "application/json")],
            body: body.as_bytes(),
        }
    }

    /// The same request with these headers instead.
    pub fn with_headers(self, headers: &'a [(&'a str, &'a str)]) -> Self {
        Self { headers, ..self }
    }
}

/// Sends `req` to `addr` over TLS when `tls` is given (server name `localhost`); the status
/// and body, or why there is no answer (a refused handshake, a closed connection).
pub async fn request(
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    req: Raw<'_>,
) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match tls {
        None => exchange(tcp, req).await,
        Some(cfg) => {
            let name = ServerName::try_from("localhost").expect("a valid server name");
            let stream = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            exchange(stream, req).await
        }
    }
}

async fn exchange(
    mut s: impl AsyncRead + AsyncWrite + Unpin,
    req: Raw<'_>,
) -> Result<(u16, String), String> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nConnection: close\r\n",
        req.method, req.path
    );
    if !req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"))
    {
        head.push_str("Host: localhost\r\n");
    }
    for (k, v) in req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(req.body);
    s.write_all(&bytes)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let read = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    match status {
        Some(code) => Ok((
            code,
            text.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default(),
        )),
        None => Err(format!("no HTTP answer ({read:?}): {text}")),
    }
}
