//! Snapshot requests over MQTT: `{"v": 1, "id": "...", "track": "..."?}` on
//! `tandem/{device}/cameras/{camera}/snapshot/get` asks a camera's kept snapshot (a track's
//! best frame, or without `track` the one stored last); the answer, [`SnapshotReply`], goes to
//! `tandem/{device}/cameras/{camera}/snapshot` with the same `id`: the JPEG in base64 (faces
//! blurred on the device), or `ok: false` with a [`SnapshotErrorCode`] and a message.
//!
//! Requests refuse unknown fields (like commands); replies ignore them (like every
//! device-to-hub payload). docs/mqtt.md "Snapshots" shows the golden files
//! `shared/tests/fixtures/mqtt/snapshot_*.json`.

use super::command::{MAX_COMMAND_BYTES, MAX_ID_BYTES};
use super::payload::{PayloadError, VERSION, versioned_object};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `tandem/{device}/cameras/{camera}/snapshot/get`: which snapshot to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// Payload version.
    pub v: u32,
    /// Echoed in the reply (1-128 bytes).
    pub id: String,
    /// The track whose best frame is wanted (an object event's `id`); absent: the camera's
    /// snapshot stored last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
}

impl SnapshotRequest {
    /// Decodes a request: size (the command limit), JSON, `v`, fields, the id's length. The
    /// error comes with the id when one could be read, for the reply.
    pub fn decode(bytes: &[u8]) -> Result<Self, (Option<String>, PayloadError)> {
        let map = versioned_object(bytes, MAX_COMMAND_BYTES).map_err(|e| (None, e))?;
        let id = map.get("id").and_then(Value::as_str).map(str::to_string);
        let req: Self = serde_json::from_value(Value::Object(map))
            .map_err(|e| (id.clone(), PayloadError::Invalid(e.to_string())))?;
        if req.id.is_empty() || req.id.len() > MAX_ID_BYTES {
            return Err((
                None,
                PayloadError::Argument(format!("`id` must be 1-{MAX_ID_BYTES} bytes")),
            ));
        }
        Ok(req)
    }

    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        super::payload::encode(self)
    }
}

/// Why a snapshot was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotErrorCode {
    /// The request could not be read (the local API's 400).
    BadRequest,
    /// The camera has posted no frame since the agent started: no stream is linked (404).
    NoCamera,
    /// The camera keeps no such snapshot: no track yet, or the track is unknown or evicted
    /// (404).
    NoSnapshot,
    /// The JPEG is over the agent's `cameras.snapshots.mqtt_max_bytes` (the local API still
    /// serves it).
    TooLarge,
    /// The face blur could not run: the snapshot stays on the device (503).
    Privacy,
    /// Too many snapshot requests in flight (503; ask again).
    Busy,
}

impl SnapshotErrorCode {
    /// Every code (a new variant goes here too: the wire-name test walks this list).
    pub const ALL: [SnapshotErrorCode; 6] = [
        Self::BadRequest,
        Self::NoCamera,
        Self::NoSnapshot,
        Self::TooLarge,
        Self::Privacy,
        Self::Busy,
    ];

    /// The wire name (the payload's `code`), e.g. `no_snapshot`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::NoCamera => "no_camera",
            Self::NoSnapshot => "no_snapshot",
            Self::TooLarge => "too_large",
            Self::Privacy => "privacy",
            Self::Busy => "busy",
        }
    }
}

/// Writes the wire name, as in the payload.
impl std::fmt::Display for SnapshotErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JPEG of a reply and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotImage {
    /// The track the frame is the best of.
    pub track: String,
    /// Detection model that tracked it.
    pub model: String,
    /// When the frame was received, milliseconds since the Unix epoch (device clock).
    pub ts_ms: u64,
    /// The object's score in it.
    pub score: f32,
    /// The object's box in it: left, top, right, bottom, frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Always `image/jpeg`.
    pub content_type: String,
    /// Length of the JPEG, bytes.
    pub bytes: u64,
    /// The JPEG, standard base64 with padding.
    pub jpeg: String,
}

/// `tandem/{device}/cameras/{camera}/snapshot`: the answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotReply {
    /// Payload version.
    pub v: u32,
    /// The request's id (`null` when none could be read).
    pub id: Option<String>,
    /// Camera id (the topic's).
    pub camera: String,
    /// Whether a JPEG is attached.
    pub ok: bool,
    /// The snapshot (`ok: true`).
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub image: Option<SnapshotImage>,
    /// Why none is (`ok: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<SnapshotErrorCode>,
    /// For a person (`ok: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SnapshotReply {
    /// A failure.
    pub fn failed(
        id: Option<String>,
        camera: &str,
        code: SnapshotErrorCode,
        error: String,
    ) -> Self {
        Self {
            v: VERSION,
            id,
            camera: camera.to_string(),
            ok: false,
            image: None,
            code: Some(code),
            error: Some(error),
        }
    }

    /// Decodes a reply (version checked first).
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        super::payload::decode(bytes)
    }

    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        super::payload::encode(self)
    }

    /// The JPEG bytes of a successful reply (`None` without one or when `jpeg` is not base64).
    pub fn jpeg(&self) -> Option<Vec<u8>> {
        let image = self.image.as_ref()?;
        base64::engine::general_purpose::STANDARD
            .decode(&image.jpeg)
            .ok()
    }
}

/// `jpeg` as the base64 text of [`SnapshotImage::jpeg`].
pub fn encode_jpeg(jpeg: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(jpeg)
}

/// Base64 text of `n` bytes (with padding): what a JPEG of `n` bytes adds to a reply.
pub fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_strict_and_replies_round_trip() {
        let r = SnapshotRequest::decode(br#"{"v":1,"id":"s-1"}"#).expect("request");
        assert_eq!(r.track, None);
        let (id, e) = SnapshotRequest::decode(br#"{"v":1,"id":"s-2","trak":"1-2"}"#)
            .expect_err("unknown field");
        assert_eq!(id.as_deref(), Some("s-2"));
        assert!(e.to_string().contains("trak"), "{e}");
        assert!(SnapshotRequest::decode(br#"{"v":2,"id":"s"}"#).is_err());
        assert!(SnapshotRequest::decode(br#"{"v":1,"id":""}"#).is_err());
        assert!(SnapshotRequest::decode(b"not json").is_err());

        let jpeg = [0xFFu8, 0xD8, 0xFF, 0xE0, 0, 1];
        let reply = SnapshotReply {
            v: VERSION,
            id: Some("s-1".into()),
            camera: "porch-1".into(),
            ok: true,
            image: Some(SnapshotImage {
                track: "1-2".into(),
                model: "detect-coco".into(),
                ts_ms: 3,
                score: 0.5,
                bbox: [0.0, 1.0, 2.0, 3.0],
                content_type: "image/jpeg".into(),
                bytes: jpeg.len() as u64,
                jpeg: encode_jpeg(&jpeg),
            }),
            code: None,
            error: None,
        };
        let back = SnapshotReply::decode(&reply.encode()).expect("decodes");
        assert_eq!(back, reply);
        assert_eq!(back.jpeg().as_deref(), Some(&jpeg[..]));
        assert_eq!(encoded_len(jpeg.len()), encode_jpeg(&jpeg).len());
        let failed = SnapshotReply::failed(None, "c", SnapshotErrorCode::NoCamera, "x".into());
        assert_eq!(SnapshotReply::decode(&failed.encode()), Ok(failed));
    }

    #[test]
    fn a_code_displays_as_its_wire_name() {
        for code in SnapshotErrorCode::ALL {
            let wire = serde_json::to_value(code).expect("serialises");
            assert_eq!(wire.as_str(), Some(code.to_string().as_str()), "{code:?}");
            let back: SnapshotErrorCode = serde_json::from_value(wire).expect("deserialises");
            assert_eq!(back, code);
        }
    }
}
