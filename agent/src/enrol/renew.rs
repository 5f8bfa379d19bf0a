//! The renewal task: at two-thirds of the certificate's lifetime, a new key, a `Renew` request
//! over the authenticated hub connection, the new key and certificate installed atomically,
//! then the QUIC link and the MQTT link moved onto them (requests in flight finish on the old
//! connection). A failure is retried after a full-jitter backoff (`tandem_shared::backoff`,
//! 1 s doubling to 60 s), never later than a tenth of the time left; an expired
//! certificate cannot renew (the hub refuses it at the handshake): the task says so at ERROR
//! and stops — the device needs a new claim.

use super::EnrolError;
use super::keys::{Validity, check_issued, install, new_request, validity};
use crate::config::Config;
use crate::uplink::Uplink;
use crate::uplink::mqtt::MqttLink;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};
use tandem_shared::wire::Message;

/// Renews once: new key, request, install, switch. Returns the new validity.
pub async fn renew_once(
    up: &Uplink,
    cfg: &Config,
    mqtt: Option<&MqttLink>,
) -> Result<Validity, EnrolError> {
    let (key_path, cert_path) = (cfg.resolve(&cfg.hub.key), cfg.resolve(&cfg.hub.cert));
    let current = validity(&cert_path)?;
    if let Ok(ago) = SystemTime::now().duration_since(current.not_after) {
        return Err(EnrolError::Expired {
            ago_s: ago.as_secs(),
        });
    }
    let (key, csr) = new_request(&current.name)?;
    let unreachable = |message: String| EnrolError::Unreachable {
        addr: cfg.hub.address.clone(),
        message,
    };
    let answer = up
        .call(&Message::Renew { csr }, up.timeout())
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let pem = match answer {
        Message::Issued { name, cert } if name == current.name => check_issued(&cert, &key, &name)?,
        Message::Error { code, message, .. } => return Err(EnrolError::Refused { code, message }),
        other => {
            return Err(EnrolError::Protocol(format!(
                "{:?} to a renewal",
                other.kind()
            )));
        }
    };
    install(&key_path, &cert_path, &key, &pem)?;
    let renewed = validity(&cert_path)?;
    up.reload_identity(&cfg.hub, |p| cfg.resolve(p))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if let Some(link) = mqtt {
        match crate::uplink::mqtt::config::tls_config(&cfg.hub, |p| cfg.resolve(p)) {
            Ok((tls, _)) => link.reload_identity(tls),
            Err(e) => {
                tracing::warn!(error = %e, "MQTT keeps the old certificate until it restarts")
            }
        }
    }
    Ok(renewed)
}

/// Runs until the link is dropped or the certificate expired.
pub async fn run(up: Weak<Uplink>, cfg: Arc<Config>, mqtt: Option<Arc<MqttLink>>) {
    let cert_path = cfg.resolve(&cfg.hub.cert);
    let mut backoff =
        tandem_shared::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let v = match validity(&cert_path) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the certificate: renewal waits");
                tokio::time::sleep(Duration::from_secs(60)).await;
                continue;
            }
        };
        let now = SystemTime::now();
        if let Some(wait) = v
            .renew_at()
            .duration_since(now)
            .ok()
            .filter(|w| !w.is_zero())
        {
            tracing::info!(device = %v.name, in_s = wait.as_secs(), "certificate renewal scheduled");
            tokio::time::sleep(wait).await;
            continue;
        }
        let Some(link) = up.upgrade() else { return };
        match renew_once(&link, &cfg, mqtt.as_deref()).await {
            Ok(n) => {
                backoff.reset();
                let left = n
                    .not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                tracing::info!(device = %n.name, valid_for_s = left.as_secs(), "certificate renewed");
            }
            Err(e @ EnrolError::Expired { .. }) => {
                tracing::error!(error = %e, "certificate renewal impossible");
                return;
            }
            Err(e) => {
                let left = v
                    .not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let retry = backoff
                    .next_delay()
                    .min(left / 10)
                    .max(Duration::from_millis(100));
                tracing::warn!(error = %e, retry_in_ms = retry.as_millis() as u64, "certificate renewal failed");
                drop(link);
                tokio::time::sleep(retry).await;
            }
        }
    }
}
