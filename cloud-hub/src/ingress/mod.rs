//! Ingress: how devices reach the hub.
//!
//! - [`tls`]: the hub's TLS configuration from its PKI folder (mutual TLS, CRL, ALPN).
//! - [`quic`]: the QUIC endpoint: handshake refusals logged with their cause, device identity
//!   from the client certificate, one bidirectional stream per request.
//! - [`limits`]: `[quic.limits]`: caps on handshakes, connections (in all and per device),
//!   streams and buffered bytes, with their counters.
//! - `reader`: a stream's frames read within those limits (per-kind size, byte budgets).
//! - `deliver`: delivery streams, stored frame by frame, acknowledged once durable.
//! - [`live`]: the open connections by certificate serial, closed when it is revoked.

mod deliver;
pub mod limits;
pub mod live;
pub mod quic;
mod reader;
pub mod tls;

pub use deliver::MAX_DELIVERIES_PER_STREAM;
