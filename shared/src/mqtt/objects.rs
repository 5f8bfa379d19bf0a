//! Object events (`tandem/{device}/events/objects`): a camera's tracker saying that an object
//! `appeared`, was `updated` (a better score, or it moved), or is `gone`. One typed payload for
//! the three, written by the agent and read by the hub and by anyone subscribed; docs/mqtt.md
//! "Object events" shows a golden example of each (`shared/tests/fixtures/mqtt/object_*.json`).

use serde::{Deserialize, Serialize};

/// What happened to the tracked object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectEventType {
    /// Seen in enough frames in a row to be believed (the tracker's `min_hits`).
    Appeared,
    /// Its best score so far went up, or its box moved notably (rate-limited).
    Updated,
    /// Not seen for the tracker's `max_missed_frames` frames or `max_unseen_ms`, or the
    /// agent is stopping.
    Gone,
}

/// Why a track ended (`gone` events only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoneReason {
    /// Not seen in the last frames or for too long.
    Unseen,
    /// The camera stream stopped (the agent shut down): every live track ends.
    Shutdown,
}

/// Where the best frame of a track can be fetched: the local API path of a JPEG kept while
/// the snapshot store has room (`null` in the event when it was evicted or never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// `GET` path on the agent's local API (`/v1/cameras/{camera}/events/{id}/snapshot.jpg`).
    pub path: String,
    /// When that frame was received, milliseconds since the Unix epoch (device clock).
    pub ts_ms: u64,
    /// The object's score in that frame (its best so far).
    pub score: f32,
    /// The object's box in that frame: left, top, right, bottom, frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// `tandem/{device}/events/objects`: one change of one tracked object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectEvent {
    /// Payload version.
    pub v: u32,
    /// `appeared`, `updated` or `gone`.
    #[serde(rename = "type")]
    pub kind: ObjectEventType,
    /// When the event was made, milliseconds since the Unix epoch (device clock).
    pub ts_ms: u64,
    /// Camera id (as posted to `/v1/cameras/{camera}/frames/{model}`).
    pub camera: String,
    /// Track id, unique on the device: `{first_seen_ms}-{n}` (`n` counts the camera's tracks).
    pub id: String,
    /// Detection model.
    pub model: String,
    /// Class label.
    pub label: String,
    /// Class index (line of the model's labels file).
    pub class: usize,
    /// Score in the latest frame the object was seen in.
    pub score: f32,
    /// Best score so far.
    pub best_score: f32,
    /// Box in the latest frame seen: left, top, right, bottom, frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Width of the frames, pixels.
    pub width: u32,
    /// Height of the frames, pixels.
    pub height: u32,
    /// First frame it was seen in, milliseconds since the Unix epoch (device clock).
    pub first_seen_ms: u64,
    /// Latest frame it was seen in.
    pub last_seen_ms: u64,
    /// Frames it was seen in.
    pub frames: u64,
    /// The best frame's JPEG, when kept.
    pub snapshot: Option<SnapshotRef>,
    /// Why the track ended (`gone` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<GoneReason>,
}

impl ObjectEvent {
    /// Decodes the payload (version checked first).
    pub fn decode(bytes: &[u8]) -> Result<Self, super::PayloadError> {
        super::payload::decode(bytes)
    }

    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        super::payload::encode(self)
    }
}

/// The local API path of a track's snapshot.
pub fn snapshot_path(camera: &str, id: &str) -> String {
    format!("/v1/cameras/{camera}/events/{id}/snapshot.jpg")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_without_a_snapshot_round_trips() {
        let e = ObjectEvent {
            v: 1,
            kind: ObjectEventType::Gone,
            ts_ms: 5,
            camera: "c".into(),
            id: "1-1".into(),
            model: "m".into(),
            label: "cat".into(),
            class: 15,
            score: 0.5,
            best_score: 0.5,
            bbox: [0.0, 0.0, 1.0, 1.0],
            width: 2,
            height: 2,
            first_seen_ms: 1,
            last_seen_ms: 2,
            frames: 2,
            snapshot: None,
            reason: Some(GoneReason::Shutdown),
        };
        let bytes = e.encode();
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(text.contains(r#""type":"gone""#), "{text}");
        assert!(text.contains(r#""snapshot":null"#), "{text}");
        assert_eq!(ObjectEvent::decode(&bytes), Ok(e));
        assert!(ObjectEvent::decode(br#"{"v":1,"type":"moved"}"#).is_err());
    }
}
