//! The rollout controller: every `tick`, what the fleet reports (online, the version of the
//! model each device serves) goes through [`super::RolloutStore::tick`], and each update
//! command it returns is published as `tandem/{device}/cmd/update_model` with
//! `{"model": .., "version": .., "rollback": ..}` (`rollback: true` for a rollout that puts an
//! older version back). A device that answers the command with a refusal counts as
//! failed for the rollout; one that runs the version (its status) as active. A command with
//! no answer within `mqtt.command_timeout_ms` (lost while the device reconnected, say) is
//! sent again at the next step, not after the rollout's `resend_after_ms`; silence leaves the
//! device pending until the stage times out.
//!
//! Devices' labels are the hub-assigned ones (from the claim each enrolled with) over those in
//! their status (`fleet::labels`; `--labels`, `--group`); their update states (`rejected`,
//! `rolled_back` fail them) come from their telemetry. The fleet is read once per step
//! ([`FleetNow`]); a step is skipped when it cannot be read.

use super::plan::DeviceView;
use super::plan::{Outcome, Target};
use super::store::{Command, RolloutStore};
use crate::fleet::link::CommandError;
use crate::fleet::{DeviceState, Fleet, Labels};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The command a device receives.
pub const UPDATE_COMMAND: &str = "update_model";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The fleet as read once for a controller step: every device's state and hub-assigned
/// labels. A step is skipped when either cannot be read: stepping with no devices could halt a
/// stage ("no device matches"), and without the hub's labels a device could select itself by
/// its own.
#[derive(Debug)]
pub struct FleetNow {
    devices: Vec<DeviceState>,
    assigned: BTreeMap<String, Labels>,
}

impl FleetNow {
    /// Reads the fleet's state and labels; the error says which could not be read.
    pub fn read(fleet: &Fleet) -> Result<Self, String> {
        let devices = fleet
            .store()
            .list()
            .map_err(|e| format!("fleet state unreadable: {e}"))?;
        let assigned = fleet
            .assigned_labels()
            .map_err(|e| format!("hub-assigned labels unreadable: {e}"))?;
        Ok(Self { devices, assigned })
    }

    /// From states and labels already read.
    pub fn new(devices: Vec<DeviceState>, assigned: BTreeMap<String, Labels>) -> Self {
        Self { devices, assigned }
    }

    /// Every device's state with its labels (hub-assigned over its own).
    pub fn labelled(self) -> Vec<(DeviceState, Labels)> {
        let assigned = self.assigned;
        self.devices
            .into_iter()
            .map(|d| {
                let labels = Fleet::labels_of(&d, &assigned).labels;
                (d, labels)
            })
            .collect()
    }

    /// The fleet as the rollout plan sees it, for `model`.
    pub fn views(&self, model: &str) -> Vec<DeviceView> {
        self.devices
            .iter()
            .map(|d| DeviceView {
                version: served_version(d, model),
                labels: Fleet::labels_of(d, &self.assigned).labels,
                updates: d
                    .telemetry
                    .as_ref()
                    .map(|t| {
                        t.updates
                            .iter()
                            .filter(|u| u.model == model)
                            .map(|u| (u.version.clone(), u.state.clone(), u.reason.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                reported_ms: d.telemetry_at_ms,
                device: d.device.clone(),
                online: d.online,
            })
            .collect()
    }
}

/// The version of `model` a device serves: from its telemetry (every few seconds, so it shows
/// a swap) when that is newer than its status (sent when it connects).
fn served_version(d: &DeviceState, model: &str) -> Option<String> {
    let from_status = d.status.as_ref().and_then(|s| {
        s.models
            .iter()
            .find(|m| m.name == model)
            .map(|m| (s.ts_ms.unwrap_or(0), m.version.clone()))
    });
    let from_telemetry = d
        .telemetry
        .as_ref()
        .and_then(|t| t.models.get(model).map(|m| (t.ts_ms, m.version.clone())));
    match (from_status, from_telemetry) {
        (Some(s), Some(t)) => Some(if t.0 >= s.0 { t.1 } else { s.1 }),
        (s, t) => s.or(t).map(|(_, v)| v),
    }
}

/// Steps the rollouts every `tick` until `stop` resolves.
pub async fn run(
    store: RolloutStore,
    fleet: Arc<Fleet>,
    tick: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = every.tick() => {}
        }
        let (s, f) = (store.clone(), fleet.clone());
        let stepped = tokio::task::spawn_blocking(move || {
            let now = FleetNow::read(&f)?;
            s.tick(|model| now.views(model), now_ms())
                .map_err(|e| format!("step failed: {e}"))
        })
        .await;
        let commands = match stepped {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "rollout controller: no step this time");
                continue;
            }
            Err(_) => continue,
        };
        for c in commands {
            tokio::spawn(send(store.clone(), fleet.clone(), c));
        }
    }
}

async fn send(store: RolloutStore, fleet: Arc<Fleet>, c: Command) {
    let body = serde_json::json!({"model": c.model, "version": c.version, "rollback": c.rollback});
    let timeout = Duration::from_millis(fleet.command_timeout_ms());
    match fleet
        .link()
        .command(&c.device, UPDATE_COMMAND, body, timeout)
        .await
    {
        Ok(r) if !r.ok => {
            let reason = r.error.unwrap_or_else(|| "refused".into());
            tracing::warn!(rollout = %c.rollout, device = %c.device, reason = %reason, "device refused the update");
            change_target(store, c, move |t| t.outcome = Outcome::Failed { reason }).await;
        }
        Ok(_) => tracing::info!(rollout = %c.rollout, device = %c.device, "update accepted"),
        Err(e @ CommandError::Invalid(_)) => {
            // The device would refuse it the same way: asking again cannot help.
            let reason = e.to_string();
            tracing::warn!(rollout = %c.rollout, device = %c.device, reason = %reason, "update command refused before sending");
            change_target(store, c, move |t| t.outcome = Outcome::Failed { reason }).await;
        }
        Err(e) => {
            // Lost (the device was reconnecting, its session is clean) or not heard: ask again
            // at the next step rather than after the rollout's resend_after_ms. A device that
            // stays silent is asked once per command timeout until its stage times out.
            tracing::info!(rollout = %c.rollout, device = %c.device, error = %e, "no answer to the update command: asking again");
            change_target(store, c, |t| {
                if t.outcome == Outcome::Pending {
                    t.commanded_ms = None;
                }
            })
            .await;
        }
    }
}

/// Applies `f` to the command's target in its rollout (off the reactor: sled).
async fn change_target(
    store: RolloutStore,
    c: Command,
    f: impl FnOnce(&mut Target) + Send + 'static,
) {
    let changed = tokio::task::spawn_blocking(move || {
        store.change(&c.rollout, |r| {
            if let Some(t) = r.targets.get_mut(&c.device) {
                f(t);
            }
            Ok(())
        })
    })
    .await;
    if let Ok(Err(e)) = changed {
        tracing::warn!(error = %e, "rollout controller: a target's change was not saved");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_shared::mqtt::Status;

    fn device(name: &str, own: &[(&str, &str)]) -> DeviceState {
        let mut status = Status::online(1, "0.1.0", Vec::new());
        status.labels = own
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut d: DeviceState = serde_json::from_value(serde_json::json!({
            "device": name, "online": true, "last_seen_ms": 1, "status": null,
            "telemetry": null, "unreadable": 0, "last_error": null
        }))
        .expect("a state");
        d.status = Some(status);
        d
    }

    #[test]
    fn views_carry_the_hubs_labels_over_the_devices() {
        let now = FleetNow::new(
            vec![
                device("north", &[]),
                device("south", &[("site", "north"), ("group", "cams")]),
            ],
            BTreeMap::from([
                (
                    "north".to_string(),
                    Labels::from([("site".into(), "north".into())]),
                ),
                (
                    "south".to_string(),
                    Labels::from([("site".into(), "south".into())]),
                ),
            ]),
        );
        let views = now.views("vision-fashion");
        let site = |name: &str| {
            views
                .iter()
                .find(|v| v.device == name)
                .and_then(|v| v.labels.get("site").cloned())
        };
        assert_eq!(site("north").as_deref(), Some("north"));
        assert_eq!(site("south").as_deref(), Some("south"), "the hub wins");
        assert_eq!(views[1].labels["group"], "cams");
    }
}
