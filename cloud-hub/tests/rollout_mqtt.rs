//! The rollout controller over the hub's supervised mosquitto with simulated devices (MQTT
//! clients with device certificates): devices that refuse `update_model` halt the rollout at
//! its canary; devices that install it (and say so in their status) carry it to the end.

mod mqtt_kit;

use mqtt_kit::{device_client, fleet_hub};
use rumqttc::{Event, Packet, QoS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tandem_hub::fleet::FleetService;
use tandem_hub::pki::Pki;
use tandem_hub::rollout::{Phase, RolloutStore, Spec, controller};
use tandem_shared::mqtt::{CommandResult, ModelStatus, Status, Topic};
use tandem_tests::wait_for;

const PATIENCE: Duration = Duration::from_secs(30);

fn status(version: &str) -> Vec<u8> {
    Status::online(
        1,
        "0.1.0",
        vec![ModelStatus {
            name: "vision-fashion".into(),
            version: version.into(),
            variant: "edge".into(),
            ep: "cpu".into(),
        }],
    )
    .encode()
}

/// What a simulated device does with `update_model`.
#[derive(Clone, Copy, PartialEq)]
enum Does {
    /// Installs the version: answers ok and publishes its new status.
    Install,
    /// Refuses it (a failed self-test).
    Refuse,
    /// Misses the first command (no answer, as when it was lost), installs the next.
    MissFirst,
}

/// A device serving vision-fashion 1.0.0 that treats `update_model` as `does` says.
fn device(pki: &Pki, url: &tandem_shared::mqtt::BrokerUrl, name: &str, does: Does) {
    let (c, mut ev) = device_client(pki, url, name);
    let name = name.to_string();
    let mut missed = false;
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    c.subscribe(format!("tandem/{name}/cmd/+"), QoS::AtLeastOnce)
                        .await
                        .expect("subscribe");
                    c.publish(
                        Topic::status(&name),
                        QoS::AtLeastOnce,
                        true,
                        status("1.0.0"),
                    )
                    .await
                    .expect("status");
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let cmd = p.topic.rsplit('/').next().unwrap_or("").to_string();
                    let body: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    let id = body["id"].as_str().unwrap_or("").to_string();
                    if does == Does::MissFirst && !missed {
                        missed = true;
                        continue;
                    }
                    let result = if cmd == controller::UPDATE_COMMAND && does != Does::Refuse {
                        let version = body["version"].as_str().unwrap_or("").to_string();
                        c.publish(
                            Topic::status(&name),
                            QoS::AtLeastOnce,
                            true,
                            status(&version),
                        )
                        .await
                        .expect("status");
                        CommandResult::ok(&id)
                    } else {
                        CommandResult::error(Some(&id), "selftest_failed: top-1 differs")
                    };
                    c.publish(
                        Topic::command_result(&name, &cmd),
                        QoS::AtLeastOnce,
                        false,
                        result.encode(),
                    )
                    .await
                    .expect("result");
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn spec(version: &str) -> Spec {
    Spec {
        model: "vision-fashion".into(),
        version: version.into(),
        canary_pct: 25,
        stages_pct: vec![100],
        labels: BTreeMap::new(),
        success_share: 1.0,
        failure_share: 0.0,
        stage_timeout_ms: 60_000,
        resend_after_ms: 60_000,
        rollback: false,
    }
}

struct Hub {
    _dir: tempfile::TempDir,
    svc: FleetService,
    store: RolloutStore,
    stop: tokio::sync::watch::Sender<bool>,
}

/// The hub's fleet over its own mosquitto, the rollout controller, and `n` devices that
/// treat what they are told as `does` says.
async fn hub_with_devices(n: usize, does: Does) -> Hub {
    let dir = tempfile::tempdir().expect("tmp");
    let (pki, svc, url) = fleet_hub(dir.path(), PATIENCE).await;
    let fleet = svc.fleet();
    for i in 0..n {
        let name = format!("cam-{i:02}");
        pki.add_device(&name, 30).expect("device");
        device(&pki, &url, &name, does);
    }
    wait_for("the devices online", PATIENCE, || {
        fleet
            .store()
            .list()
            .map(|d| d.iter().filter(|d| d.online).count() == n)
            .unwrap_or(false)
    })
    .await;
    let store = RolloutStore::open(&dir.path().join("rollouts")).expect("store");
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(controller::run(
        store.clone(),
        fleet,
        Duration::from_millis(100),
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    Hub {
        _dir: dir,
        svc,
        store,
        stop,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_that_refuse_halt_the_rollout_at_its_canary() {
    let hub = hub_with_devices(4, Does::Refuse).await;
    let r = hub
        .store
        .create(spec("1.0.1"), true, now_ms())
        .expect("create");
    wait_for("the halt", PATIENCE, || {
        hub.store
            .get(&r.id)
            .is_ok_and(|r| matches!(r.phase, Phase::Halted { .. }))
    })
    .await;
    let r = hub.store.get(&r.id).expect("get");
    assert_eq!(
        r.targets.len(),
        1,
        "only the canary was commanded: {:?}",
        r.targets
    );
    let Phase::Halted { reason } = &r.phase else {
        unreachable!("checked above")
    };
    assert!(reason.contains("selftest_failed"), "{reason}");
    let _ = hub.stop.send(true);
    hub.svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_that_install_carry_the_rollout_to_the_end() {
    let hub = hub_with_devices(4, Does::Install).await;
    let r = hub
        .store
        .create(spec("1.0.1"), true, now_ms())
        .expect("create");
    wait_for("the end", PATIENCE, || {
        hub.store.get(&r.id).is_ok_and(|r| r.finished())
    })
    .await;
    let r = hub.store.get(&r.id).expect("get");
    assert_eq!(r.phase, Phase::Succeeded, "{r:?}");
    assert_eq!(r.targets.len(), 4);
    assert!(
        r.targets
            .values()
            .all(|t| t.outcome == tandem_hub::rollout::Outcome::Active),
        "{r:?}"
    );
    let _ = hub.stop.send(true);
    hub.svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_gets_no_answer_is_sent_again_without_waiting_for_resend_after() {
    // The device misses the first `update_model` (lost while it reconnected, say). The hub
    // asks again once the command times out (mqtt.command_timeout_ms, 5 s), not after the
    // rollout's resend_after_ms (60 s, beyond this test's patience).
    let hub = hub_with_devices(1, Does::MissFirst).await;
    let mut spec = spec("1.0.1");
    spec.canary_pct = 100;
    spec.stages_pct = vec![];
    let r = hub.store.create(spec, true, now_ms()).expect("create");
    wait_for("the end", PATIENCE, || {
        hub.store.get(&r.id).is_ok_and(|r| r.finished())
    })
    .await;
    let r = hub.store.get(&r.id).expect("get");
    assert_eq!(r.phase, Phase::Succeeded, "{r:?}");
    let _ = hub.stop.send(true);
    hub.svc.stop().await;
}
