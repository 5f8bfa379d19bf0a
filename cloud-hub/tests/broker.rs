//! The hub's supervised mosquitto, for real: started by `broker::Broker` on a free loopback
//! port with certificates from `tandem_hub::pki::Pki`, then probed with rumqttc clients.
//! - kill -9 of the broker: restarted on the same port, counted, serving again;
//! - a device cannot publish under another device's topic (MQTT 5: PUBACK 0x87; and the hub
//!   never sees it) nor read another device's topics;
//! - revoked (the CRL is reloaded while running), missing and foreign certificates are refused;
//! - the hub's fleet: state from status and telemetry, commands answered through MQTT;
//! - no mosquitto binary: a start-up error naming `make setup`.

mod broker_kit;

use broker_kit::*;
use rumqttc::{QoS, Transport};
use std::path::PathBuf;
use tandem_hub::broker::Broker;
use tandem_hub::pki::PkiError;
use tandem_tests::tls::client_config as tls;
use tandem_tests::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_is_restarted_and_counted() {
    let s = setup(&["cam-01"]);
    let broker = Broker::start(spec(&s)).await.expect("mosquitto starts");
    let stats = broker.stats();
    assert!(stats.is_up());
    let mut text = String::new();
    stats.render(&mut text);
    assert!(text.contains("tandem_hub_broker_up 1"), "{text}");
    assert!(
        text.contains("tandem_hub_broker_restarts_total 0"),
        "{text}"
    );
    let first = stats.pid().expect("running");
    let url = broker.url();
    connected(
        &url,
        "cam-01",
        tls(&ca(&s), device_identity(&s.pki, "cam-01")),
    )
    .await;

    let pid = rustix::process::Pid::from_raw(first as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill -9");
    wait_for("the restart", PATIENCE, || {
        stats.restarts() == 1 && stats.is_up() && stats.pid().is_some_and(|p| p != first)
    })
    .await;
    let mut text = String::new();
    stats.render(&mut text);
    assert!(
        text.contains("tandem_hub_broker_restarts_total 1"),
        "{text}"
    );
    assert!(text.contains("tandem_hub_broker_up 1"), "{text}");
    // Same port, serving again.
    assert_eq!(broker.url(), url);
    connected(
        &url,
        "cam-01",
        tls(&ca(&s), device_identity(&s.pki, "cam-01")),
    )
    .await;
    broker.stop().await;
    assert!(!stats.is_up());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_under_another_devices_topic() {
    use rumqttc::v5::mqttbytes::QoS as Qos5;
    use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PubAckReason};
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    let s = setup(&["cam-01", "cam-02"]);
    let broker = Broker::start(spec(&s)).await.expect("mosquitto starts");
    let url = broker.url();
    let (hub, mut seen) = connected(&url, "tandem-hub", tls(&ca(&s), hub_identity(&s.pki))).await;
    subscribe(&hub, &mut seen, "tandem/#").await;

    // cam-01 over MQTT 5, where a refused QoS 1 publish is answered with a reason code.
    let mut o = Options5::new("cam-01", url.host.clone(), url.port);
    o.set_transport(Transport::tls_with_config(
        tls(&ca(&s), device_identity(&s.pki, "cam-01")).into(),
    ));
    let (dev, mut ev) = Client5::new(o, 16);
    let mut acks = Vec::new();
    let publish = |topic: &'static str, body: &'static str| {
        let dev = dev.clone();
        async move {
            dev.publish(topic, Qos5::AtLeastOnce, false, body)
                .await
                .expect("queue");
        }
    };
    publish("tandem/cam-02/telemetry", "forged").await;
    publish("tandem/cam-01/telemetry", "own").await;
    let t = std::time::Instant::now();
    while acks.len() < 2 {
        assert!(t.elapsed() < PATIENCE, "no PUBACKs: {acks:?}");
        match tokio::time::timeout(PATIENCE, ev.poll())
            .await
            .expect("event")
        {
            Ok(Event5::Incoming(Packet5::PubAck(a))) => acks.push(a.reason),
            Ok(_) => {}
            Err(e) => panic!("cam-01 lost its connection: {e}"),
        }
    }
    assert_eq!(
        acks,
        [PubAckReason::NotAuthorized, PubAckReason::Success],
        "the forged publish is refused, the device's own accepted"
    );
    // The hub, subscribed to everything, gets the device's own message and never the forged
    // one (published first on the same connection, so it would have come first).
    let (topic, body) = message(&mut seen).await;
    assert_eq!(
        (topic.as_str(), body.as_slice()),
        ("tandem/cam-01/telemetry", &b"own"[..])
    );

    // Over MQTT 3.1.1 (no reason codes) the forged message is dropped just the same.
    let (d4, _rx) = connected(
        &url,
        "cam-01",
        tls(&ca(&s), device_identity(&s.pki, "cam-01")),
    )
    .await;
    d4.publish("tandem/cam-02/status", QoS::AtLeastOnce, true, "forged")
        .await
        .expect("queue");
    d4.publish("tandem/cam-01/events", QoS::AtLeastOnce, false, "control")
        .await
        .expect("queue");
    let (topic, body) = message(&mut seen).await;
    assert_eq!(
        (topic.as_str(), body.as_slice()),
        ("tandem/cam-01/events", &b"control"[..])
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reads_nothing_of_another_device() {
    let s = setup(&["cam-01", "cam-02"]);
    let broker = Broker::start(spec(&s)).await.expect("mosquitto starts");
    let url = broker.url();
    let (spy, mut spied) = connected(
        &url,
        "cam-02",
        tls(&ca(&s), device_identity(&s.pki, "cam-02")),
    )
    .await;
    subscribe(&spy, &mut spied, "tandem/cam-01/#").await;
    subscribe(&spy, &mut spied, "tandem/+/status").await;
    subscribe(&spy, &mut spied, "tandem/cam-02/cmd/+").await;
    let (hub, _rx) = connected(&url, "tandem-hub", tls(&ca(&s), hub_identity(&s.pki))).await;
    for (topic, body) in [
        ("tandem/cam-01/cmd/set_policy", "secret command"),
        ("tandem/cam-01/status", "secret status"),
        ("tandem/cam-02/cmd/telemetry_now", "control"),
    ] {
        hub.publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .expect("queue");
    }
    let (topic, body) = message(&mut spied).await;
    assert_eq!(
        (topic.as_str(), body.as_slice()),
        ("tandem/cam-02/cmd/telemetry_now", &b"control"[..]),
        "cam-02 saw another device's message"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_missing_and_foreign_certificates_are_refused() {
    let s = setup(&["cam-01", "cam-03"]);
    let broker = Broker::start(spec(&s)).await.expect("mosquitto starts");
    let url = broker.url();
    let stats = broker.stats();
    connected(
        &url,
        "cam-03",
        tls(&ca(&s), device_identity(&s.pki, "cam-03")),
    )
    .await;

    // Revoked while the broker runs: the CRL is reloaded (a restart), then cam-03 is refused.
    s.pki.revoke_device("cam-03").expect("revoke");
    wait_for("the CRL reload", PATIENCE, || {
        stats.reloads() == 1 && stats.is_up()
    })
    .await;
    assert_eq!(stats.restarts(), 0, "a reload is not a crash");
    let e = refused(
        &url,
        "cam-03",
        tls(&ca(&s), device_identity(&s.pki, "cam-03")),
    )
    .await
    .expect("revoked certificate refused");
    eprintln!("revoked: {e}");
    // Others still get in.
    connected(
        &url,
        "cam-01",
        tls(&ca(&s), device_identity(&s.pki, "cam-01")),
    )
    .await;
    // No certificate at all.
    refused(&url, "anonymous", tls(&ca(&s), None))
        .await
        .expect("a client without a certificate is refused");
    // A certificate from another CA.
    let other = setup(&["cam-01"]);
    refused(
        &url,
        "cam-01",
        tls(&ca(&s), device_identity(&other.pki, "cam-01")),
    )
    .await
    .expect("a foreign certificate is refused");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_mosquitto_is_a_clear_start_up_error() {
    let s = setup(&[]);
    let mut sp = spec(&s);
    sp.mosquitto_bin = PathBuf::from("/nonexistent/mosquitto");
    let e = Broker::start(sp).await.expect_err("no binary");
    assert!(e.to_string().contains("make setup"), "{e}");
}

#[test]
fn the_hub_identity_is_not_a_device_name() {
    let s = setup(&[]);
    assert!(matches!(
        s.pki.add_device("tandem-hub", 30),
        Err(PkiError::Reserved(_))
    ));
}
