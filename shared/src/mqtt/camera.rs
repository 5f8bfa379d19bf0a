//! The cameras a device streams, as its telemetry reports them ([`CameraTelemetry`]): what the
//! hub's fleet view lists and the console offers a snapshot of (docs/mqtt.md "Telemetry").

use serde::{Deserialize, Serialize};

/// One camera with a frame stream on the device (a frame was posted for it since the agent
/// started), with its counters since then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraTelemetry {
    /// The camera id (1-64 of `A-Z a-z 0-9 _ . -`): the `{camera}` of its topics and paths.
    pub id: String,
    /// The model its last frame was posted for.
    pub model: String,
    /// Frames posted.
    pub received: u64,
    /// Frames answered.
    pub processed: u64,
    /// Frames dropped because inference fell behind (`[cameras] drop`).
    pub dropped: u64,
    /// Snapshots (the best frame of a track) kept on the device now: what a snapshot request
    /// can get (0 without a detection model).
    pub snapshots: u64,
}
