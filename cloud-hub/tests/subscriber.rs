//! Read-only subscribers on the hub's real mosquitto (`tandem-hub subscriber add`): added while
//! the broker runs (the ACL is rewritten and reloaded), a subscriber reads devices' telemetry,
//! status and events; every publish it makes is refused (MQTT 5: PUBACK 0x87) and reaches no
//! one; its subscription to `tandem/+/cmd/#` delivers nothing; once revoked it is dropped and
//! cannot connect again; and `tandem-hub subscriber add|list|revoke` as the operator runs it.

mod broker_kit;

use broker_kit::*;
use rumqttc::QoS;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use tandem_hub::broker::Broker;
use tandem_hub::pki::subscriber::subscriber_files;
use tandem_tests::tls::client_config as tls;
use tandem_tests::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_reads_telemetry_writes_nothing_and_is_revocable() {
    let s = setup(&["cam-01"]);
    let broker = Broker::start(spec(&s)).await.expect("mosquitto starts");
    let url = broker.url();
    let stats = broker.stats();
    let ca = s.pki.dir().join("ca.pem");

    // Added while the broker runs: the hub's supervisor rewrites the ACL and reloads it.
    let out = s.runtime.with_file_name("dash-certs");
    s.pki.add_subscriber("dash", 30, &out).expect("subscriber");
    wait_for("the ACL reload", PATIENCE, || stats.reloads() == 1).await;
    let acl = std::fs::read_to_string(s.runtime.join("acl")).expect("acl");
    assert!(acl.contains("user subscriber:dash\n"), "{acl}");
    let identity = || Some(subscriber_files(&out, "dash"));
    let (dev, mut dev_rx) =
        connected(&url, "cam-01", tls(&ca, device_identity(&s.pki, "cam-01"))).await;
    subscribe(&dev, &mut dev_rx, "tandem/cam-01/#").await;

    // Every publish is refused, under devices' trees, its own name's, discovery and anywhere
    // (the broker takes the CN as client id: this connection is the subscriber's only one
    // until it closes).
    let topics = [
        "tandem/cam-01/cmd/set_policy",
        "tandem/cam-01/telemetry",
        "tandem/cam-01/status",
        "tandem/subscriber:dash/status",
        "homeassistant/sensor/x/config",
        "elsewhere",
    ];
    let acks = publish_all(&url, tls(&ca, identity()), &topics).await;
    assert_eq!(
        acks,
        vec![PubAckReason::NotAuthorized; topics.len()],
        "{topics:?}"
    );
    // The device, reading its own tree, got none of them: its next message is its own.
    dev.publish("tandem/cam-01/events", QoS::AtLeastOnce, false, "control")
        .await
        .expect("queue");
    let (topic, body) = message(&mut dev_rx).await;
    assert_eq!(
        (topic.as_str(), body.as_slice()),
        ("tandem/cam-01/events", &b"control"[..])
    );

    let (dash, mut seen) = connected(&url, "dash", tls(&ca, identity())).await;
    for filter in ["tandem/+/cmd/#", "tandem/+/telemetry", "#"] {
        subscribe(&dash, &mut seen, filter).await;
    }
    // A command to the device, then its telemetry: the subscriber gets the telemetry first.
    dev.publish(
        "tandem/cam-01/cmd/set_policy",
        QoS::AtLeastOnce,
        false,
        "secret",
    )
    .await
    .expect("queue");
    dev.publish(
        "tandem/cam-01/telemetry",
        QoS::AtLeastOnce,
        false,
        r#"{"seq":1}"#,
    )
    .await
    .expect("queue");
    let (topic, body) = message(&mut seen).await;
    assert_eq!(
        (topic.as_str(), body.as_slice()),
        ("tandem/cam-01/telemetry", &br#"{"seq":1}"#[..]),
        "the subscriber reads telemetry, and no command"
    );

    // Revoked: the broker restarts on the new CRL, dropping it; it cannot connect again.
    s.pki.revoke_subscriber("dash").expect("revoke");
    match next(&mut seen).await {
        Seen::Failed(e) => eprintln!("dropped: {e}"),
        other => panic!("the revoked subscriber stayed connected: {other:?}"),
    }
    wait_for("the broker back up", PATIENCE, || stats.is_up()).await;
    let e = refused(&url, "dash", tls(&ca, identity()))
        .await
        .expect("a revoked subscriber is refused");
    eprintln!("refused: {e}");
    broker.stop().await;
}

/// `tandem-hub ARGS`: (exit code, stdout + stderr).
fn hub_cli(args: &[&str]) -> (i32, String) {
    tandem_tests::process::output_text(
        std::process::Command::new(env!("CARGO_BIN_EXE_tandem-hub")).args(args),
    )
}

#[test]
fn the_cli_adds_lists_and_revokes_subscribers() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let pki = dir.path().join("pki");
    let pki_arg = pki.to_str().expect("utf-8");
    let out = dir.path().join("telegraf");
    let out_arg = out.to_str().expect("utf-8");
    assert_eq!(hub_cli(&["init", "--dir", pki_arg]).0, 0);
    let (code, text) = hub_cli(&[
        "subscriber",
        "add",
        "grafana",
        "--dir",
        pki_arg,
        "--out",
        out_arg,
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("MQTT username subscriber:grafana"), "{text}");
    let (cert, key) = subscriber_files(&out, "grafana");
    assert!(cert.is_file());
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key is private");
    let (code, text) = hub_cli(&["subscriber", "add", "Bad_Name", "--dir", pki_arg]);
    assert_eq!(code, 64, "{text}");
    let (code, text) = hub_cli(&["subscriber", "list", "--dir", pki_arg]);
    assert!(
        code == 0 && text.contains("grafana") && text.contains("valid"),
        "{text}"
    );
    let (code, text) = hub_cli(&["subscriber", "revoke", "grafana", "--dir", pki_arg]);
    assert!(code == 0 && text.contains("crl.pem rewritten"), "{text}");
    let (_, text) = hub_cli(&["subscriber", "list", "--dir", pki_arg]);
    assert!(text.contains("revoked"), "{text}");
    let (code, text) = hub_cli(&["subscriber", "revoke", "nobody", "--dir", pki_arg]);
    assert!(code == 65 && text.contains("subscriber list"), "{text}");
}
