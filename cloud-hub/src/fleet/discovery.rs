//! Home Assistant MQTT discovery (`mqtt.ha_discovery`, off by default): for every device the
//! hub hears online, retained `homeassistant/{component}/tandem_{device}/{object}/config`
//! messages describing entities over the device's own topics, so Home Assistant (or any
//! subscriber) finds them without configuration:
//! - `binary_sensor/.../online`: connectivity, from `tandem/{device}/status`;
//! - `sensor/.../offload_share`: the share of answers that went to the hub (`route = cloud`),
//!   in percent, cumulative since the agent started, from `tandem/{device}/telemetry`;
//! - per model, `sensor/.../latency_{model}`: mean inference latency in ms since the agent
//!   started (telemetry), and `sensor/.../version_{model}`: the version served (status).
//!
//! Each is built from the device's status (its models), published again only when what it
//! would say changes (a new model or agent version), on the hub's own connection: a publish
//! the link cannot queue now is tried again at the device's next status.

use rumqttc::{AsyncClient, QoS};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use tandem_shared::mqtt::Status;

/// The discovery prefix (Home Assistant's default; the subscriber ACL grants reading it).
pub const PREFIX: &str = "homeassistant";

/// An object id part: the characters Home Assistant takes (`[a-zA-Z0-9_-]`), others as `_`.
fn object_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A string inside a single-quoted Jinja literal.
fn jinja_str(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// The discovery messages for `device` as `status` describes it: `(topic, JSON payload)`.
pub fn configs(device: &str, status: &Status) -> Vec<(String, String)> {
    let node = format!("tandem_{}", object_part(device));
    let status_topic = format!("tandem/{device}/status");
    let telemetry_topic = format!("tandem/{device}/telemetry");
    let dev = json!({
        "identifiers": [node],
        "name": device,
        "manufacturer": "Tandem",
        "model": "tandem-agent",
        "sw_version": status.agent_version,
    });
    let availability = json!({
        "availability_topic": status_topic,
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    });
    let entity = |component: &str, object: &str, mut body: Value, available: bool| {
        let unique = format!("{node}_{object}");
        if let Value::Object(m) = &mut body {
            m.insert("unique_id".into(), json!(unique));
            m.insert("object_id".into(), json!(unique));
            m.insert("device".into(), dev.clone());
            if available && let Value::Object(a) = &availability {
                m.extend(a.clone());
            }
        }
        (
            format!("{PREFIX}/{component}/{node}/{object}/config"),
            body.to_string(),
        )
    };
    let mut out = vec![
        entity(
            "binary_sensor",
            "online",
            json!({
                "name": "online",
                "device_class": "connectivity",
                "state_topic": status_topic,
                "value_template": "{{ value_json.state }}",
                "payload_on": "online",
                "payload_off": "offline",
            }),
            false,
        ),
        entity(
            "sensor",
            "offload_share",
            json!({
                "name": "offload share",
                "unit_of_measurement": "%",
                "state_class": "measurement",
                "state_topic": telemetry_topic,
                "value_template": "{% set t = value_json.routes | map(attribute='count') | sum %}\
                    {% set c = value_json.routes | selectattr('route', 'eq', 'cloud') | map(attribute='count') | sum %}\
                    {{ ((100 * c / t) | round(1)) if t > 0 else 0 }}",
            }),
            true,
        ),
    ];
    for m in &status.models {
        let id = object_part(&m.name);
        let name = jinja_str(&m.name);
        out.push(entity(
            "sensor",
            &format!("latency_{id}"),
            json!({
                "name": format!("{} latency", m.name),
                "unit_of_measurement": "ms",
                "state_class": "measurement",
                "state_topic": telemetry_topic,
                "value_template": format!(
                    "{{% set l = value_json.models['{name}'].latency %}}\
                     {{{{ ((1000 * l.sum_s / l.count) | round(2)) if l.count > 0 else 0 }}}}"
                ),
            }),
            true,
        ));
        out.push(entity(
            "sensor",
            &format!("version_{id}"),
            json!({
                "name": format!("{} version", m.name),
                "state_topic": status_topic,
                "value_template": format!(
                    "{{% for m in value_json.models if m.name == '{name}' %}}{{{{ m.version }}}}{{% endfor %}}"
                ),
            }),
            true,
        ));
    }
    out
}

/// What the hub announced per device (topic and payload), to publish only changes.
#[derive(Debug, Default)]
pub struct Discovery {
    announced: Mutex<HashMap<String, Vec<(String, String)>>>,
}

impl Discovery {
    /// Publishes (retained) the messages for `device` online with `status` when they differ
    /// from the last announced; a config topic no longer described (a model gone) is cleared.
    pub fn on_status(&self, client: &AsyncClient, device: &str, status: &Status) {
        let now = configs(device, status);
        let mut announced = self.announced.lock().unwrap_or_else(|p| p.into_inner());
        let before = announced.get(device).cloned().unwrap_or_default();
        if before == now {
            return;
        }
        let gone = before
            .iter()
            .filter(|(t, _)| !now.iter().any(|(n, _)| n == t))
            .map(|(t, _)| (t.clone(), String::new()));
        for (topic, payload) in now.iter().cloned().chain(gone) {
            if let Err(e) = client.try_publish(topic.clone(), QoS::AtLeastOnce, true, payload) {
                tracing::warn!(device, topic, error = %e, "discovery message not queued; sent again at the device's next status");
                announced.remove(device);
                return;
            }
        }
        tracing::debug!(
            device,
            entities = now.len(),
            "Home Assistant discovery published"
        );
        announced.insert(device.to_string(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_shared::mqtt::ModelStatus;

    #[test]
    fn every_entity_names_its_state_topic_and_a_unique_id() {
        let status = Status::online(
            1,
            "0.1.0",
            vec![ModelStatus {
                name: "vision-fashion".into(),
                version: "1.0.0".into(),
                variant: "edge".into(),
                ep: "cpu".into(),
            }],
        );
        let msgs = configs("cam-01", &status);
        assert_eq!(msgs.len(), 4);
        let mut ids = Vec::new();
        for (topic, payload) in &msgs {
            assert!(topic.starts_with("homeassistant/") && topic.ends_with("/config"));
            let v: Value = serde_json::from_str(payload).expect("JSON");
            let state = v["state_topic"].as_str().expect("state_topic");
            assert!(state.starts_with("tandem/cam-01/"), "{state}");
            ids.push(v["unique_id"].as_str().expect("id").to_string());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4);
        assert_eq!(
            msgs[0].0,
            "homeassistant/binary_sensor/tandem_cam-01/online/config"
        );
    }
}
