//! Golden JSON for every MQTT payload: `fixtures/mqtt/*.json` must decode with the shared types
//! and encode back to the same JSON, and docs/mqtt.md must show each one verbatim, so the
//! contract, the code and the documentation cannot drift apart.

use serde_json::Value;
use tandem_shared::mqtt::{Command, CommandResult, Event, PayloadError, Status, Telemetry};

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
