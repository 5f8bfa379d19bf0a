//! Golden JSON for every MQTT payload: `fixtures/mqtt/*.json` must decode with the shared types
//! and encode back to the same JSON, and docs/mqtt.md must show each one verbatim, so the
//! contract, the code and the documentation cannot drift apart.

use serde_json::Value;
use tandem_shared::mqtt::objects::snapshot_path;
use tandem_shared::mqtt::{
    Command, CommandResult, Event, GoneReason, ObjectEvent, ObjectEventType, PayloadError,
    SnapshotErrorCode, SnapshotRef, SnapshotReply, SnapshotRequest, Status, Telemetry, VERSION,
};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/mqtt/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// Decodes a fixture with `decode`, encodes it again with `encode`: same JSON.
fn round_trip<T>(
    name: &str,
    decode: impl Fn(&[u8]) -> Result<T, PayloadError>,
    encode: impl Fn(&T) -> Vec<u8>,
) {
    let text = fixture(name);
    let decoded = decode(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(json(&encode(&decoded)), json(text.as_bytes()), "{name}");
}

#[test]
fn device_payloads() {
    for name in [
        "status_online",
        "status_offline_will",
        "status_offline_shutdown",
    ] {
        round_trip(name, Status::decode, Status::encode);
    }
    round_trip("telemetry", Telemetry::decode, Telemetry::encode);
    round_trip("event", Event::decode, Event::encode);
    assert_eq!(
        json(&Status::last_will().encode()),
        json(fixture("status_offline_will").as_bytes())
    );
}

/// The three object events of one track, built from the typed structs the agent fills: each
/// serialises to its golden file, and the file decodes back to it.
#[test]
fn object_events() {
    let id = "1764518461200-7";
    let snap = |ts_ms, score, bbox| {
        Some(SnapshotRef {
            path: snapshot_path("porch-1", id),
            ts_ms,
            score,
            bbox,
        })
    };
    let first = [412.5, 96.0, 530.0, 377.25];
    let best = [468.0, 101.5, 590.0, 380.0];
    let appeared = ObjectEvent {
        v: VERSION,
        kind: ObjectEventType::Appeared,
        ts_ms: 1_764_518_461_300,
        camera: "porch-1".into(),
        id: id.into(),
        model: "detect-coco".into(),
        label: "person".into(),
        class: 0,
        score: 0.71,
        best_score: 0.71,
        bbox: first,
        width: 1000,
        height: 563,
        first_seen_ms: 1_764_518_461_200,
        last_seen_ms: 1_764_518_461_300,
        frames: 2,
        snapshot: snap(1_764_518_461_300, 0.71, first),
        reason: None,
    };
    let updated = ObjectEvent {
        kind: ObjectEventType::Updated,
        ts_ms: 1_764_518_462_500,
        score: 0.83,
        best_score: 0.83,
        bbox: best,
        last_seen_ms: 1_764_518_462_500,
        frames: 14,
        snapshot: snap(1_764_518_462_500, 0.83, best),
        ..appeared.clone()
    };
    let gone = ObjectEvent {
        kind: ObjectEventType::Gone,
        ts_ms: 1_764_518_468_100,
        score: 0.64,
        bbox: [702.0, 110.0, 815.5, 371.0],
        last_seen_ms: 1_764_518_463_100,
        frames: 20,
        reason: Some(GoneReason::Unseen),
        ..updated.clone()
    };
    for (name, event) in [
        ("object_appeared", appeared),
        ("object_updated", updated),
        ("object_gone", gone),
    ] {
        assert_eq!(
            json(&event.encode()),
            json(fixture(name).as_bytes()),
            "{name}"
        );
        round_trip(name, ObjectEvent::decode, ObjectEvent::encode);
        assert_eq!(
            ObjectEvent::decode(fixture(name).as_bytes()).expect("decodes"),
            event
        );
    }
}

#[test]
fn commands() {
    for (name, cmd) in [
        ("cmd_set_threshold", "set_threshold"),
        ("cmd_set_policy", "set_policy"),
        ("cmd_telemetry_now", "telemetry_now"),
        ("cmd_update_model", "update_model"),
    ] {
        let text = fixture(name);
        let (id, c) = Command::decode(cmd, text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json(&c.encode(&id)), json(text.as_bytes()), "{name}");
    }
}

#[test]
fn results() {
    for name in [
        "result_set_threshold",
        "result_telemetry_now",
        "result_error",
        "result_unreadable",
    ] {
        round_trip(name, CommandResult::decode, CommandResult::encode);
    }
    // The error results are exactly what decoding the malformed commands gives.
    let e = Command::decode(
        "set_threshold",
        br#"{"v": 1, "id": "c-20", "model": "vision-fashion"}"#,
    )
    .expect_err("no threshold");
    let r = CommandResult::error(e.id.as_deref(), e.to_string());
    assert_eq!(json(&r.encode()), json(fixture("result_error").as_bytes()));
    let e = Command::decode("set_threshold", b"hello").expect_err("not JSON");
    let r = CommandResult::error(e.id.as_deref(), e.to_string());
    assert_eq!(
        json(&r.encode()),
        json(fixture("result_unreadable").as_bytes())
    );
}

#[test]
fn docs_show_every_fixture() {
    let path = format!("{}/../docs/mqtt.md", env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let dir = format!("{}/tests/fixtures/mqtt", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    names.sort();
    assert!(names.len() >= 12, "fixtures missing in {dir}");
    for p in names {
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(
            doc.contains(text.trim_end()),
            "docs/mqtt.md does not show {} verbatim",
            p.display()
        );
    }
}

/// Snapshot requests and replies (docs/mqtt.md "Snapshots"): each golden file decodes and
/// encodes back to itself; the reply's JPEG is base64 of the bytes it counts.
#[test]
fn snapshots() {
    for name in ["snapshot_request", "snapshot_request_latest"] {
        round_trip(
            name,
            |b| SnapshotRequest::decode(b).map_err(|(_, e)| e),
            SnapshotRequest::encode,
        );
    }
    for name in [
        "snapshot_reply",
        "snapshot_reply_no_camera",
        "snapshot_reply_no_snapshot",
    ] {
        round_trip(name, SnapshotReply::decode, SnapshotReply::encode);
    }
    let r = SnapshotReply::decode(fixture("snapshot_reply").as_bytes()).expect("reply");
    let jpeg = r.jpeg().expect("base64");
    assert_eq!(Some(jpeg.len() as u64), r.image.as_ref().map(|i| i.bytes));
    assert!(
        jpeg.starts_with(&[0xFF, 0xD8, 0xFF]),
        "a JPEG's first bytes"
    );
    let failed =
        SnapshotReply::decode(fixture("snapshot_reply_no_camera").as_bytes()).expect("failure");
    assert_eq!(
        (failed.ok, failed.code, failed.image),
        (false, Some(SnapshotErrorCode::NoCamera), None)
    );
}
