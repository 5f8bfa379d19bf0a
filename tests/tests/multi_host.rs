//! Several hosts (issue 10 item 1): the hub with its mosquitto in one network namespace and
//! three agents in three others, joined by a bridge (`tandem_tests::netns`). The agents reach
//! the hub only by its DNS name (`hub.tandem.test`, in each host's hosts file, and in the hub's
//! certificate through `tandem-hub init --name`) over the bridge: loopback in an agent's host
//! is not the hub's; a name whose first address is dead still connects (every address is
//! tried). Needs root (CI runs as root): without it the rig fails the test, saying so.

use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tandem_tests::fleet::{Daemon, Fleet, MODEL, samples};
use tandem_tests::metrics::{family, one};
use tandem_tests::netns::Rig;
use tandem_tests::wait_for_async;

/// Any one wait.
const PATIENCE: Duration = Duration::from_secs(60);
/// The whole scenario.
const DEADLINE: Duration = Duration::from_secs(400);
/// How long the cable of one agent stays out.
const CUT: Duration = Duration::from_secs(6);

/// A TCP connection from inside `from` to `to`, within a second.
async fn connects(rig: &Rig, from: &str, to: SocketAddr) -> bool {
    rig.on(from, async move {
        matches!(
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(to)).await,
            Ok(Ok(_))
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rig_joins_hosts_by_name_only_through_its_bridge() {
    let rig = Rig::new(&["h1", "h2"]);
    let (h1, h2) = (rig.host("h1").ns.clone(), rig.host("h2").ns.clone());
    // Names from the hosts file, as a process in the host sees them.
    let out = rig
        .command("h2", "getent")
        .args(["hosts", &rig.dns_name("h1")])
        .output()
        .expect("getent");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("10.213.0.1 "),
        "h1 by name from h2: {text:?}"
    );
    // A listener in h1: reachable from h2 at h1's address, not at h2's own loopback.
    rig.on("h1", async {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:7000")
            .await
            .expect("bind in h1");
        tokio::spawn(async move {
            loop {
                let _ = listener.accept().await;
            }
        });
    })
    .await;
    let h1_addr = SocketAddr::from((Ipv4Addr::new(10, 213, 0, 1), 7000));
    assert!(connects(&rig, "h2", h1_addr).await, "h2 reaches h1");
    assert!(
        !connects(&rig, "h2", "127.0.0.1:7000".parse().expect("addr")).await,
        "h2's loopback is its own"
    );
    rig.cut("h1");
    assert!(!connects(&rig, "h2", h1_addr).await, "h1's cable is out");
    rig.restore("h1");
    // The link comes back up (carrier, neighbour resolution) within moments.
    let t = std::time::Instant::now();
    while !connects(&rig, "h2", h1_addr).await {
        assert!(t.elapsed() < Duration::from_secs(20), "h1 back");
    }
    drop(rig);
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    for ns in [&h1, &h2] {
        assert!(!listed.contains(ns.as_str()), "{ns} removed: {listed}");
        assert!(
            !std::path::Path::new("/etc/netns").join(ns).exists(),
            "{ns}'s hosts file removed"
        );
    }
}

/// One classify request to an agent: `(route, degraded)` of its 200 answer.
async fn classify(fleet: &Fleet, agent: &Daemon, image: &[u8]) -> (String, bool) {
    let (status, body) = fleet
        .post(agent, &format!("/v1/classify/{MODEL}"), image.to_vec())
        .await
        .unwrap_or_else(|e| panic!("{} answers: {e}", agent.host));
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(status, 200, "{}: {v}", agent.host);
    (
        v["route"].as_str().unwrap_or_default().to_string(),
        v["degraded"] == true,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_offload_deliver_and_report_to_the_hub_by_name_through_a_cut() {
    tokio::time::timeout(DEADLINE, three_hosts())
        .await
        .expect("the whole scenario within its deadline");
}

async fn three_hosts() {
    let hosts = ["a1", "a2", "a3"];
    let fleet = Fleet::new("multi-host", "hub", &hosts);
    for h in hosts {
        fleet.add_device(&format!("cam-{h}"));
    }
    let mut hub = tokio::task::block_in_place(|| fleet.start_hub(&[]));
    let mut agents: Vec<Daemon> = tokio::task::block_in_place(|| {
        hosts
            .iter()
            .map(|h| fleet.start_agent(h, &format!("cam-{h}"), &[]))
            .collect()
    });
    for a in &agents {
        wait_for_async(
            &format!("{} connected to the hub and its broker by name", a.host),
            PATIENCE,
            || async {
                let m = fleet.metrics(a).await;
                one(&m, "tandem_hub_connected") == 1.0 && one(&m, "tandem_mqtt_connected") == 1.0
            },
        )
        .await;
    }

    // Offloading: every answer from the hub; every answer a hard example, delivered.
    let images = samples();
    for a in &agents {
        for image in images.iter().take(5) {
            assert_eq!(
                classify(&fleet, a, image).await,
                ("cloud".to_string(), false),
                "{} offloads",
                a.host
            );
        }
    }
    for a in &agents {
        wait_for_async(
            &format!("{}'s hard examples delivered", a.host),
            PATIENCE,
            || async {
                let m = fleet.metrics(a).await;
                family(&m, "tandem_outbox_delivered_total") >= 5.0
                    && one(&m, "tandem_outbox_records{class=\"hard_example\"}") == 0.0
            },
        )
        .await;
    }
    // Telemetry over MQTT in the hub's fleet state.
    for h in hosts {
        wait_for_async(
            &format!("cam-{h} online with telemetry in the fleet"),
            PATIENCE,
            || async {
                fleet
                    .get_json(&hub, &format!("/v1/fleet/cam-{h}"))
                    .await
                    .is_some_and(|d| d["online"] == true && d["telemetry"]["seq"].is_u64())
            },
        )
        .await;
    }
    let hub_m = fleet.metrics(&hub).await;
    assert!(
        one(&hub_m, "tandem_hub_records_delivered_total") >= 15.0,
        "the hub stored the deliveries: {hub_m:?}"
    );

    // a1's cable out: a1 answers every request locally; a2 still offloads.
    let (a1, a2) = (&agents[0], &agents[1]);
    let delivered_before = family(&fleet.metrics(a1).await, "tandem_outbox_delivered_total");
    fleet.rig.cut("a1");
    let t = Instant::now();
    let (mut local, mut n) = (0usize, 0usize);
    while t.elapsed() < CUT {
        let (route, degraded) = classify(&fleet, a1, &images[n % images.len()]).await;
        if route == "local" && degraded {
            local += 1;
        }
        assert_eq!(
            classify(&fleet, a2, &images[n % images.len()]).await.0,
            "cloud",
            "a2 carries on while a1 is cut off"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut = fleet.metrics(a1).await;
    assert_eq!(one(&cut, "tandem_hub_connected"), 0.0, "a1 saw the hub go");
    let waiting = one(&cut, "tandem_outbox_records{class=\"hard_example\"}");
    assert!(
        local >= 5 && waiting >= 5.0,
        "a1 answered locally ({local} of {n}) and queued hard examples ({waiting})"
    );

    // The cable back: a1 offloads again and its queue drains to the hub.
    fleet.rig.restore("a1");
    wait_for_async("a1 back on the hub", PATIENCE, || async {
        one(&fleet.metrics(a1).await, "tandem_hub_connected") == 1.0
    })
    .await;
    wait_for_async("a1's queue drained to the hub", PATIENCE, || async {
        let m = fleet.metrics(a1).await;
        one(&m, "tandem_outbox_records{class=\"hard_example\"}") == 0.0
            && family(&m, "tandem_outbox_delivered_total") >= delivered_before + waiting
    })
    .await;
    assert_eq!(classify(&fleet, a1, &images[0]).await.0, "cloud");
    let last = fleet.metrics(a1).await;
    assert_eq!(family(&last, "tandem_outbox_evicted_total"), 0.0);
    assert_eq!(one(&last, "tandem_feedback_examples_dropped_total"), 0.0);

    tokio::task::block_in_place(|| {
        for a in &mut agents {
            a.stop(PATIENCE);
        }
        hub.stop(PATIENCE);
    });
}

/// `hub.address` and `mqtt.url` name the hub; the name is resolved at each connect and every
/// address it resolves to is tried in turn. In the agent's host the hub's name resolves first
/// to an address nobody has (`getent` shows the order), then to the hub's: the agent still
/// offloads over QUIC and connects over MQTT (here: QUIC about 1 s after start, its handshake
/// timeout on the dead address; MQTT about 3 s after, the failed neighbour resolution).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_name_whose_first_address_is_dead_still_connects() {
    let fleet = Fleet::new("names", "hub", &["a1"]);
    // No host has .3 in this rig (hub .1, a1 .2): it shares more leading bits with a1's
    // address than the hub's does, so even an RFC 6724 sort keeps it first.
    let dead = Ipv4Addr::new(10, 213, 0, 3);
    fleet.rig.prepend_address("a1", dead, "hub");
    let out = fleet
        .rig
        .command("a1", "getent")
        .args(["ahostsv4", &fleet.hub_name()])
        .output()
        .expect("getent");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let order: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("STREAM"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(order, ["10.213.0.3", "10.213.0.1"], "{text}");
    fleet.add_device("cam-a1");
    let _hub = tokio::task::block_in_place(|| fleet.start_hub(&[]));
    let agent = tokio::task::block_in_place(|| fleet.start_agent("a1", "cam-a1", &[]));
    let image = samples().remove(0);
    wait_for_async("a1 to offload past the dead address", PATIENCE, || async {
        classify(&fleet, &agent, &image).await == ("cloud".to_string(), false)
    })
    .await;
    wait_for_async("a1's MQTT link past the dead address", PATIENCE, || async {
        one(&fleet.metrics(&agent).await, "tandem_mqtt_connected") == 1.0
    })
    .await;
}
