//! Topic names: `tandem/{device}/status`, `/telemetry`, `/events`, `/events/objects`,
//! `/cmd/{name}`, `/cmd/{name}/result`, `/cameras/{camera}/snapshot/get` and
//! `/cameras/{camera}/snapshot`. A device name is 1-63 lowercase letters, digits and `-`, not starting
//! or ending with `-` (the certificate CN the broker uses as identity); a command name is 1-32
//! lowercase letters, digits and `_`.

use std::fmt;

/// The first level of every Tandem topic.
pub const ROOT: &str = "tandem";

/// The hub's subscription to every device's status.
pub const ALL_STATUS: &str = "tandem/+/status";
/// The hub's subscription to every device's telemetry.
pub const ALL_TELEMETRY: &str = "tandem/+/telemetry";
/// The hub's subscription to every device's events.
pub const ALL_EVENTS: &str = "tandem/+/events";
/// The hub's subscription to every command result.
pub const ALL_RESULTS: &str = "tandem/+/cmd/+/result";
/// The hub's subscription to every camera's snapshot replies.
pub const ALL_SNAPSHOTS: &str = "tandem/+/cameras/+/snapshot";

/// Why a topic is not a Tandem topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not under `tandem/`.
    #[error("topic `{0}` is not under `tandem/`")]
    Root(String),
    /// The device level is not a valid device name.
    #[error("topic `{topic}`: `{device}` is not a valid device name")]
    Device {
        /// The topic.
        topic: String,
        /// The device level.
        device: String,
    },
    /// The command level is not a valid command name.
    #[error("topic `{topic}`: `{name}` is not a valid command name")]
    CommandName {
        /// The topic.
        topic: String,
        /// The command level.
        name: String,
    },
    /// Levels after the device that match no topic of the contract.
    #[error(
        "topic `{0}` is not one of status, telemetry, events, events/objects, cmd/NAME, cmd/NAME/result, cameras/CAMERA/snapshot[/get]"
    )]
    Kind(String),
}

/// Whether `name` is a valid device name (the certificate CN): 1-63 lowercase letters, digits
/// and `-`, not starting or ending with `-`.
pub fn valid_device_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `id` is a valid camera id (as the agent's camera API takes it): 1-64 characters of
/// `[A-Za-z0-9_.-]`, so never `+`, `#` or `/` in a topic level.
pub fn valid_camera_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Whether `name` is a valid command name: 1-32 lowercase letters, digits and `_`.
pub fn valid_command_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// What a topic carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicKind {
    /// Online/offline (retained; `offline` by last will).
    Status,
    /// Periodic counters.
    Telemetry,
    /// Sampled per-inference events.
    Events,
    /// Object events from camera trackers (`events/objects`).
    Objects,
    /// A command to the device.
    Command(String),
    /// The device's answer to a command.
    CommandResult(String),
    /// A request for a camera's snapshot (`cameras/{camera}/snapshot/get`).
    SnapshotRequest(String),
    /// The answer to one (`cameras/{camera}/snapshot`).
    Snapshot(String),
}

/// A parsed Tandem topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// The device the topic belongs to.
    pub device: String,
    /// What it carries.
    pub kind: TopicKind,
}

impl Topic {
    /// `tandem/{device}/status`.
    pub fn status(device: &str) -> String {
        format!("{ROOT}/{device}/status")
    }

    /// `tandem/{device}/telemetry`.
    pub fn telemetry(device: &str) -> String {
        format!("{ROOT}/{device}/telemetry")
    }

    /// `tandem/{device}/events`.
    pub fn events(device: &str) -> String {
        format!("{ROOT}/{device}/events")
    }

    /// `tandem/{device}/events/objects`.
    pub fn objects(device: &str) -> String {
        format!("{ROOT}/{device}/events/objects")
    }

    /// `tandem/{device}/cmd/{name}`.
    pub fn command(device: &str, name: &str) -> String {
        format!("{ROOT}/{device}/cmd/{name}")
    }

    /// `tandem/{device}/cmd/{name}/result`.
    pub fn command_result(device: &str, name: &str) -> String {
        format!("{ROOT}/{device}/cmd/{name}/result")
    }

    /// `tandem/{device}/cmd/+`: what a device subscribes to.
    pub fn commands_filter(device: &str) -> String {
        format!("{ROOT}/{device}/cmd/+")
    }

    /// `tandem/{device}/cameras/{camera}/snapshot/get`.
    pub fn snapshot_request(device: &str, camera: &str) -> String {
        format!("{ROOT}/{device}/cameras/{camera}/snapshot/get")
    }

    /// `tandem/{device}/cameras/{camera}/snapshot`.
    pub fn snapshot(device: &str, camera: &str) -> String {
        format!("{ROOT}/{device}/cameras/{camera}/snapshot")
    }

    /// An agent's subscription to snapshot requests for its cameras.
    pub fn snapshot_requests_filter(device: &str) -> String {
        format!("{ROOT}/{device}/cameras/+/snapshot/get")
    }

    /// Parses an incoming topic; anything outside the contract is an error.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let mut levels = topic.split('/');
        if levels.next() != Some(ROOT) {
            return Err(TopicError::Root(topic.to_string()));
        }
        let device = levels.next().unwrap_or_default();
        if !valid_device_name(device) {
            return Err(TopicError::Device {
                topic: topic.to_string(),
                device: device.to_string(),
            });
        }
        let rest: Vec<&str> = levels.collect();
        let kind = match rest.as_slice() {
            ["status"] => TopicKind::Status,
            ["telemetry"] => TopicKind::Telemetry,
            ["events"] => TopicKind::Events,
            ["events", "objects"] => TopicKind::Objects,
            ["cmd", name] | ["cmd", name, "result"] => {
                if !valid_command_name(name) {
                    return Err(TopicError::CommandName {
                        topic: topic.to_string(),
                        name: name.to_string(),
                    });
                }
                if rest.len() == 2 {
                    TopicKind::Command(name.to_string())
                } else {
                    TopicKind::CommandResult(name.to_string())
                }
            }
            ["cameras", camera, "snapshot"] | ["cameras", camera, "snapshot", "get"] => {
                if !valid_camera_id(camera) {
                    return Err(TopicError::Kind(topic.to_string()));
                }
                if rest.len() == 3 {
                    TopicKind::Snapshot(camera.to_string())
                } else {
                    TopicKind::SnapshotRequest(camera.to_string())
                }
            }
            _ => return Err(TopicError::Kind(topic.to_string())),
        };
        Ok(Self {
            device: device.to_string(),
            kind,
        })
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.device;
        match &self.kind {
            TopicKind::Status => write!(f, "{ROOT}/{d}/status"),
            TopicKind::Telemetry => write!(f, "{ROOT}/{d}/telemetry"),
            TopicKind::Events => write!(f, "{ROOT}/{d}/events"),
            TopicKind::Objects => write!(f, "{ROOT}/{d}/events/objects"),
            TopicKind::Command(n) => write!(f, "{ROOT}/{d}/cmd/{n}"),
            TopicKind::CommandResult(n) => write!(f, "{ROOT}/{d}/cmd/{n}/result"),
            TopicKind::SnapshotRequest(c) => write!(f, "{ROOT}/{d}/cameras/{c}/snapshot/get"),
            TopicKind::Snapshot(c) => write!(f, "{ROOT}/{d}/cameras/{c}/snapshot"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_and_parser_agree() {
        for (built, kind) in [
            (Topic::status("cam-01"), TopicKind::Status),
            (Topic::telemetry("cam-01"), TopicKind::Telemetry),
            (Topic::events("cam-01"), TopicKind::Events),
            (Topic::objects("cam-01"), TopicKind::Objects),
            (
                Topic::snapshot_request("cam-01", "porch-1"),
                TopicKind::SnapshotRequest("porch-1".into()),
            ),
            (
                Topic::snapshot("cam-01", "porch-1"),
                TopicKind::Snapshot("porch-1".into()),
            ),
            (
                Topic::command("cam-01", "set_threshold"),
                TopicKind::Command("set_threshold".into()),
            ),
            (
                Topic::command_result("cam-01", "set_threshold"),
                TopicKind::CommandResult("set_threshold".into()),
            ),
        ] {
            let t = Topic::parse(&built).expect("parses");
            assert_eq!(t.device, "cam-01");
            assert_eq!(t.kind, kind);
            assert_eq!(t.to_string(), built);
        }
        assert_eq!(Topic::commands_filter("cam-01"), "tandem/cam-01/cmd/+");
    }

    #[test]
    fn foreign_topics_are_errors() {
        for bad in [
            "",
            "tandem",
            "other/cam-01/status",
            "tandem/Cam-01/status",
            "tandem/-cam/status",
            "tandem/+/status",
            "tandem/#",
            "tandem/cam-01",
            "tandem/cam-01/",
            "tandem/cam-01/status/extra",
            "tandem/cam-01/cmd",
            "tandem/cam-01/cmd/Set",
            "tandem/cam-01/cmd/set/result/x",
            "tandem/cam-01/cmd/set/results",
            "tandem/cam-01/cmd/+",
            "tandem/cam-01/events/people",
            "tandem/cam-01/cameras/+/snapshot/get",
            "tandem/cam-01/cameras/a b/snapshot",
            "tandem/cam-01/cameras/porch/snapshot/put",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn names() {
        assert!(valid_device_name("cam-01"));
        assert!(valid_device_name("a"));
        assert!(!valid_device_name(&"a".repeat(64)));
        assert!(!valid_device_name("cam_01"));
        assert!(!valid_device_name("cam-"));
        assert!(valid_command_name("telemetry_now"));
        assert!(!valid_command_name("telemetry-now"));
        assert!(!valid_command_name(""));
    }
}
