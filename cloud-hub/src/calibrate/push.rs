//! Desired thresholds to devices: every `calibrate.push_every_ms`, each online device's
//! reported thresholds (telemetry `thresholds`: value, signal, source) are compared with the
//! desired one it should use ([`super::desired::resolve`]); a device that differs is sent
//! `set_threshold {model, threshold, signal, source}` on `tandem/{device}/cmd/set_threshold`,
//! and not again for that value until `calibrate.resend_after_ms` passed without its telemetry
//! showing it (a device that was offline gets it when it is back; one that restarted reports
//! the value it kept and is not commanded again). Devices that report no thresholds (agents
//! before them) are left alone.

use super::desired::{Desired, resolve};
use super::store::CalibrationStore;
use super::{CalibrateConfig, Labels};
use crate::fleet::{DeviceState, Fleet};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tandem_shared::mqtt::ThresholdView;

/// The command devices receive.
pub const COMMAND: &str = "set_threshold";

/// One device's model: what it should use and what it reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceThreshold {
    /// The device.
    pub device: String,
    /// The model.
    pub model: String,
    /// The desired threshold it should use, if any.
    pub desired: Option<Desired>,
    /// What it reports (its latest telemetry).
    pub reported: Option<ThresholdView>,
    /// Whether they agree (value, signal and source); true without a desired one.
    pub in_sync: bool,
}

/// Whether a reported threshold is the desired one.
pub fn agrees(want: &Desired, have: &ThresholdView) -> bool {
    (want.threshold - have.threshold).abs() <= 1e-6
        && want.signal == have.signal
        && want.source == have.source
}

/// Every online or offline device's models with what they should use and report, for the
/// devices with `labels` (hub-assigned over their own).
pub fn states(devices: &[(DeviceState, Labels)], desired: &[Desired]) -> Vec<DeviceThreshold> {
    let mut out = Vec::new();
    for (d, labels) in devices {
        let Some(t) = &d.telemetry else { continue };
        for (model, have) in &t.thresholds {
            let want = resolve(desired, model, labels).cloned();
            out.push(DeviceThreshold {
                device: d.device.clone(),
                model: model.clone(),
                in_sync: want.as_ref().is_none_or(|w| agrees(w, have)),
                desired: want,
                reported: Some(*have),
            });
        }
    }
    out
}

/// What was sent: (device, model) → (when, the desired threshold sent).
pub type Sent = BTreeMap<(String, String), (u64, Desired)>;

/// The commands to send now: online devices out of sync, not already sent the same value
/// within `resend_after_ms`. Records them in `sent`.
pub fn due(
    devices: &[(DeviceState, Labels)],
    desired: &[Desired],
    sent: &mut Sent,
    now_ms: u64,
    resend_after_ms: u64,
) -> Vec<(String, Desired)> {
    let online: Vec<(DeviceState, Labels)> =
        devices.iter().filter(|(d, _)| d.online).cloned().collect();
    let mut out = Vec::new();
    for s in states(&online, desired) {
        let Some(want) = s.desired.filter(|_| !s.in_sync) else {
            sent.remove(&(s.device.clone(), s.model.clone()));
            continue;
        };
        let key = (s.device.clone(), s.model.clone());
        let recent = sent
            .get(&key)
            .is_some_and(|(at, w)| *w == want && now_ms.saturating_sub(*at) < resend_after_ms);
        if !recent {
            sent.insert(key, (now_ms, want.clone()));
            out.push((s.device, want));
        }
    }
    out
}

/// The fleet's devices with their labels (hub-assigned over their own).
pub fn devices(fleet: &Fleet) -> Result<Vec<(DeviceState, Labels)>, String> {
    crate::rollout::controller::FleetNow::read(fleet).map(|now| now.labelled())
}

/// Brings devices to their desired thresholds until `stop` resolves.
pub async fn run(
    store: Arc<dyn CalibrationStore>,
    fleet: Arc<Fleet>,
    cfg: CalibrateConfig,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut every = tokio::time::interval(Duration::from_millis(cfg.push_every_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = Sent::new();
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = every.tick() => {}
        }
        let (s, f) = (store.clone(), fleet.clone());
        let read = tokio::task::spawn_blocking(move || {
            let desired = s.desired().map_err(|e| e.to_string())?;
            Ok::<_, String>((devices(&f)?, desired))
        })
        .await;
        let (devs, desired) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "threshold push: no step this time");
                continue;
            }
            Err(_) => continue,
        };
        let now = crate::fleet::link::now_ms();
        for (device, want) in due(&devs, &desired, &mut sent, now, cfg.resend_after_ms) {
            tokio::spawn(send(fleet.clone(), device, want));
        }
    }
}

async fn send(fleet: Arc<Fleet>, device: String, want: Desired) {
    let body = serde_json::json!({
        "model": want.model,
        "threshold": want.threshold,
        "signal": want.signal,
        "source": want.source,
    });
    let timeout = Duration::from_millis(fleet.command_timeout_ms());
    match fleet.link().command(&device, COMMAND, body, timeout).await {
        Ok(r) if r.ok => {
            tracing::info!(device = %device, model = %want.model, threshold = want.threshold, source = want.source.as_str(), "desired threshold set on the device")
        }
        Ok(r) => {
            tracing::warn!(device = %device, model = %want.model, reason = r.error.as_deref().unwrap_or("refused"), "device refused the desired threshold")
        }
        Err(e) => {
            tracing::info!(device = %device, model = %want.model, error = %e, "no answer to set_threshold: sent again after calibrate.resend_after_ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_shared::manifest::Signal;
    use tandem_shared::mqtt::ThresholdSource;

    fn device(name: &str, reported: Option<(f32, ThresholdSource)>) -> DeviceState {
        let thresholds = reported.map(
            |(t, s)| serde_json::json!({"m": {"threshold": t, "signal": "max_prob", "source": s}}),
        );
        serde_json::from_value(serde_json::json!({
            "device": name, "online": true, "last_seen_ms": 1, "status": null,
            "telemetry": {
                "v": 1, "ts_ms": 1, "seq": 1, "uptime_s": 1, "agent_version": "0",
                "models": {}, "routes": [], "mqtt": {"queued": {}, "dropped": {}, "connects": 0, "commands": {}},
                "process": {"cpu_s": 0.0, "rss_bytes": 0},
                "thresholds": thresholds.unwrap_or(serde_json::json!({}))
            },
            "unreadable": 0, "last_error": null
        }))
        .expect("a state")
    }

    #[test]
    fn out_of_sync_devices_are_commanded_once_per_resend_window() {
        let want = Desired {
            model: "m".into(),
            labels: Labels::new(),
            threshold: 0.8,
            signal: Signal::MaxProb,
            source: ThresholdSource::HubCalibrated,
            calibration: None,
            set_ms: 1,
        };
        let devs = vec![
            (
                device("a", Some((0.7, ThresholdSource::Manifest))),
                Labels::new(),
            ),
            (
                device("b", Some((0.8, ThresholdSource::HubCalibrated))),
                Labels::new(),
            ),
            (device("c", None), Labels::new()),
        ];
        let mut sent = Sent::new();
        let d = due(&devs, std::slice::from_ref(&want), &mut sent, 1000, 500);
        assert_eq!(d.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["a"]);
        assert!(due(&devs, std::slice::from_ref(&want), &mut sent, 1200, 500).is_empty());
        assert_eq!(
            due(&devs, std::slice::from_ref(&want), &mut sent, 1600, 500).len(),
            1,
            "resent"
        );
        let s = states(&devs, &[want]);
        assert_eq!(s.iter().filter(|x| x.in_sync).count(), 1);
    }
}
