//! The agent's links to the outside world. `quic`: the hub (offload; one long-lived mutual-TLS
//! connection, a stream per request, 0-RTT on reconnect); `keeper`: the background task that
//! keeps that connection up (connects at start, notices a closed or silent hub, reconnects with
//! jittered backoff, reports close reasons); `config`: the `[hub]` section and the TLS client.

mod config;
mod keeper;
mod quic;

pub use config::HubConfig;
pub use quic::{LinkStatus, Uplink, UplinkError};
