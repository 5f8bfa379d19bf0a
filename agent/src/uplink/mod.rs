//! The agent's links to the outside world. `quic`: the hub (offload; one long-lived mutual-TLS
//! connection, a stream per request, 0-RTT on reconnect); `keeper`: the background task that
//! keeps that connection up (connects at start, notices a closed or silent hub, reconnects with
//! jittered backoff, reports close reasons); `deliver`: the loop that drains the durable queue
//! to the hub; `report`: the link's, the queue's and the feedback side's metrics; `config`: the `[hub]` section and the TLS client; [`mqtt`]: the MQTT link to the
//! hub's broker (status, telemetry, events, commands); `address`: `hub.address` as
//! `HOST:PORT`, resolved at each connect.

mod address;
mod config;
pub mod deliver;
mod keeper;
pub mod mqtt;
mod quic;
pub mod report;
mod rotate;

pub use address::HubAddress;
pub use config::HubConfig;
pub use quic::{LinkStatus, Uplink, UplinkError};
