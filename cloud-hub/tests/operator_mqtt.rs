//! Operators have no business on the hub's MQTT broker (the HTTPS API is theirs), though their
//! certificates come from the CA the broker trusts: on the hub's real mosquitto, an operator
//! added while the broker runs (the ACL is rewritten and reloaded) may connect, but every
//! publish it makes, under its own name's tree, a device's or anywhere, is refused (MQTT 5:
//! PUBACK 0x87) and reaches no one; its subscription to `tandem/#` delivers nothing; the
//! device and the hub's identity still talk.

mod broker_kit;

use broker_kit::*;
use rumqttc::QoS;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use tandem_hub::broker::Broker;
use tandem_tests::tls::client_config as tls;
use tandem_tests::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_certificate_can_do_nothing_on_the_broker() {
    let s = setup(&["cam-01"]);
    let broker = Broker::start(spec(&s)).await.expect("mosquitto starts");
    let url = broker.url();
    let stats = broker.stats();
    let ca = ca(&s);

    s.pki.add_operator("alice", 30).expect("operator");
    wait_for("the ACL reload", PATIENCE, || stats.reloads() == 1).await;
    let acl = std::fs::read_to_string(s.runtime.join("acl")).expect("acl");
    assert!(acl.contains("user operator:alice\ntopic deny #\n"), "{acl}");
    let operator = || Some(s.pki.operator_files("alice"));

    // The hub's identity reads every tree, the device its own.
    let (hub, mut hub_rx) = connected(&url, "hub", tls(&ca, hub_identity(&s.pki))).await;
    subscribe(&hub, &mut hub_rx, "tandem/#").await;
    let (dev, mut dev_rx) =
        connected(&url, "cam-01", tls(&ca, device_identity(&s.pki, "cam-01"))).await;
    subscribe(&dev, &mut dev_rx, "tandem/cam-01/#").await;

    // Every publish is refused: its own name's tree (which the device pattern would give it),
    // a device's, the discovery tree and elsewhere.
    let topics = [
        "tandem/operator:alice/status",
        "tandem/operator:alice/telemetry",
        "tandem/cam-01/status",
        "tandem/cam-01/cmd/set_policy",
        "homeassistant/sensor/x/config",
        "elsewhere",
    ];
    let acks = publish_all(&url, tls(&ca, operator()), &topics).await;
    assert_eq!(
        acks,
        vec![PubAckReason::NotAuthorized; topics.len()],
        "{topics:?}"
    );

    // Subscribed to every device's tree, the operator gets nothing of what follows.
    let (op, mut op_rx) = connected(&url, "alice", tls(&ca, operator())).await;
    subscribe(&op, &mut op_rx, "tandem/#").await;
    dev.publish("tandem/cam-01/status", QoS::AtLeastOnce, false, "control")
        .await
        .expect("queue");
    // The first message the hub and the device see is the device's own: no forged one
    // reached them.
    for rx in [&mut hub_rx, &mut dev_rx] {
        let (topic, body) = message(rx).await;
        assert_eq!(
            (topic.as_str(), body.as_slice()),
            ("tandem/cam-01/status", &b"control"[..])
        );
    }
    hub.publish(
        "tandem/cam-01/cmd/set_policy",
        QoS::AtLeastOnce,
        false,
        "policy",
    )
    .await
    .expect("queue");
    let (topic, body) = message(&mut dev_rx).await;
    assert_eq!(
        (topic.as_str(), body.as_slice()),
        ("tandem/cam-01/cmd/set_policy", &b"policy"[..]),
        "the device still takes the hub's commands"
    );
    // mosquitto writes a connection's packets in order: had either message been delivered to
    // the operator, it would come before the SUBACK of a later subscription.
    subscribe(&op, &mut op_rx, "tandem/cam-01/#").await;
    assert!(op_rx.try_recv().is_err(), "the operator received a message");
    broker.stop().await;
}
