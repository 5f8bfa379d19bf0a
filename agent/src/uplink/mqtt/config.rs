//! `[mqtt]` in the agent config, and the TLS client configuration built from `[hub]`'s CA,
//! certificate and key (the device certificate is the MQTT identity too).

use super::MqttError;
use crate::uplink::HubConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tandem_shared::mqtt::BrokerUrl;

/// `[mqtt]` in the agent config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker, `mqtts://HOST[:PORT]`; empty turns MQTT off. TLS with the device
    /// certificate from `[hub]` (`ca`, `cert`, `key`); the client id is the certificate's CN.
    pub url: String,
    /// Interval of telemetry messages, in milliseconds.
    pub telemetry_interval_ms: u64,
    /// QoS of telemetry messages: 0 (the contract's default: a lost message is made up by the
    /// next, counters being cumulative) or 1 (the broker acknowledges each; past rumqttc's
    /// window of 100 unacknowledged messages, new ones wait in the outgoing queue).
    pub telemetry_qos: u8,
    /// Fraction of answered requests sent as events (0 to 1; 0 sends none).
    pub events_sample_rate: f64,
    /// Outgoing messages (telemetry, events, results) waiting for the broker; when full, a new
    /// message is dropped and counted (`tandem_mqtt_dropped_total`), except events, which go
    /// to the durable queue (through a channel of this size too). Never blocks inference.
    /// Default 256.
    pub max_pending: usize,
    /// MQTT keep-alive, in milliseconds: a dead connection is noticed within about 1.5 times
    /// this, and the broker then publishes the device's last will (`offline`).
    pub keep_alive_ms: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            telemetry_interval_ms: 10_000,
            telemetry_qos: 0,
            events_sample_rate: 0.01,
            max_pending: 256,
            keep_alive_ms: 15_000,
        }
    }
}

impl MqttConfig {
    /// Every problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.url.is_empty()
            && let Err(e) = BrokerUrl::parse(&self.url)
        {
            p.push(format!("mqtt.url: {e}"));
        }
        if self.telemetry_interval_ms == 0 {
            p.push("mqtt.telemetry_interval_ms must be > 0".into());
        }
        if self.telemetry_qos > 1 {
            p.push("mqtt.telemetry_qos must be 0 or 1".into());
        }
        if !(0.0..=1.0).contains(&self.events_sample_rate) {
            p.push("mqtt.events_sample_rate must be between 0 and 1".into());
        }
        if self.max_pending == 0 {
            p.push("mqtt.max_pending must be > 0".into());
        }
        if self.keep_alive_ms < 1000 {
            p.push("mqtt.keep_alive_ms must be at least 1000".into());
        }
        p
    }
}

fn pem_err(p: &Path) -> impl FnOnce(rustls_pki_types::pem::Error) -> MqttError + '_ {
    move |e| MqttError::Setup(format!("{}: {e}", p.display()))
}

/// The TLS client configuration (TLS 1.3, the CA from `[hub] ca` as the only root, the device
/// certificate as client identity) and the device certificate's DER.
pub fn tls_config(
    hub: &HubConfig,
    resolve: impl Fn(&Path) -> PathBuf,
) -> Result<(rustls::ClientConfig, CertificateDer<'static>), MqttError> {
    let (ca, cert, key) = (resolve(&hub.ca), resolve(&hub.cert), resolve(&hub.key));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca).map_err(pem_err(&ca))?)
        .map_err(|e| MqttError::Setup(format!("{}: {e}", ca.display())))?;
    let cert_der = CertificateDer::from_pem_file(&cert).map_err(pem_err(&cert))?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| MqttError::Setup(e.to_string()))?
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![cert_der.clone()],
        PrivateKeyDer::from_pem_file(&key).map_err(pem_err(&key))?,
    )
    .map_err(|e| MqttError::Setup(e.to_string()))?;
    Ok((tls, cert_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_qos_is_0_or_1() {
        for (qos, ok) in [(0, true), (1, true), (2, false)] {
            let c = MqttConfig {
                telemetry_qos: qos,
                ..MqttConfig::default()
            };
            assert_eq!(c.problems().is_empty(), ok, "{:?}", c.problems());
        }
    }
}
