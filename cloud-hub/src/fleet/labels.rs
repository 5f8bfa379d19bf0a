//! Device labels as the fleet view and the rollouts see them: the hub's (assigned by the claim
//! a device enrolled with, `tandem-hub claim create --labels`) over the device's own (its
//! `[labels]`, reported in its MQTT status). On a key both have, the hub's value wins: a device
//! cannot move itself into (or out of) a group the operator put it in.
//!
//! Where hub-assigned labels come from is behind [`AssignedLabels`] (the claim store
//! implements it, `enrol::ClaimLabels`); the fleet holds none of its own.

use serde::Serialize;
use std::collections::BTreeMap;

/// A set of labels, key → value.
pub type Labels = BTreeMap<String, String>;

/// Where the hub-assigned labels of devices are kept.
pub trait AssignedLabels: Send + Sync + std::fmt::Debug {
    /// Every device with hub-assigned labels, by device name. An error is the store's, as
    /// text (the fleet reports it; it never guesses labels).
    fn assigned(&self) -> Result<BTreeMap<String, Labels>, String>;
}

/// One device's labels: the merged set, and where each part came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceLabels {
    /// What rollouts select on: the device's labels with the hub's put over them.
    pub labels: Labels,
    /// Assigned by the hub (the claim the device enrolled with).
    pub hub_labels: Labels,
    /// Reported by the device (its `[labels]`); a key the hub also assigns is overridden.
    pub agent_labels: Labels,
}

impl DeviceLabels {
    /// Merges `hub` over `agent`.
    pub fn merge(hub: Labels, agent: Labels) -> Self {
        let mut labels = agent.clone();
        labels.extend(hub.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self {
            labels,
            hub_labels: hub,
            agent_labels: agent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_hubs_value_wins_and_both_sources_stay_visible() {
        let d = DeviceLabels::merge(
            labels(&[("site", "south"), ("owner", "ops")]),
            labels(&[("site", "north"), ("group", "cams")]),
        );
        assert_eq!(
            d.labels,
            labels(&[("group", "cams"), ("owner", "ops"), ("site", "south")])
        );
        assert_eq!(d.agent_labels["site"], "north");
        assert_eq!(d.hub_labels["site"], "south");
        assert_eq!(
            DeviceLabels::merge(Labels::new(), labels(&[("a", "b")])).labels,
            labels(&[("a", "b")])
        );
    }
}
