//! Ingress: how devices reach the hub.
//!
//! - [`tls`]: the hub's TLS configuration from its PKI folder (mutual TLS, CRL, ALPN).
//! - [`quic`]: the QUIC endpoint: handshake refusals logged with their cause, device identity
//!   from the client certificate, one bidirectional stream per request.

pub mod quic;
pub mod tls;
