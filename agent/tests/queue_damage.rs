//! A queue that never lies (issue 11, Found 5), with a real hub (QUIC + mTLS, its feedback
//! store and dedup): 30 corrections delivered and acknowledged, 30 more accepted while the hub
//! is away, then 64 KiB of garbage written into the middle of sled's file. Before, the agent
//! reopened with a few of them, logged nothing, and handed out used seqs again in the same
//! epoch, which the hub then dropped as duplicates. Now the loss is logged at ERROR with its
//! count and counted (`tandem_outbox_lost_total` source), a new epoch starts, and the records
//! accepted after the damage are stored by the hub.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_agent::app;
use tandem_agent::config::Config;
use tandem_agent::queue::{Class, Queue};
use tandem_agent::uplink::deliver;
use tandem_hub::feedback::Store;
use tandem_hub::ingress::quic::QuicIngress;
use tandem_hub::pki::Pki;
use tandem_shared::record::{self, ExampleKind, ExampleMeta, Record};

/// Log lines, for the ERROR the test expects.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn correction(n: usize) -> Vec<u8> {
    record::encode(&Record::Example {
        meta: Box::new(ExampleMeta {
            kind: ExampleKind::Correction,
            request_id: format!("req-{n}"),
            model: "vision-fashion".into(),
            time_ms: 1,
            input_kind: "image".into(),
            reason: "correction".into(),
            local: None,
            cloud: None,
            label: Some("Bag".into()),
            boxes: None,
        }),
        input: vec![n as u8; 64],
    })
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The hub's stored request ids for one epoch.
fn stored(store: &Store, epoch: u64) -> Vec<String> {
    store
        .iter()
        .map(|r| r.expect("record"))
        .filter(|r| r.epoch == epoch)
        .filter_map(|r| r.example.map(|e| e.request_id))
        .collect()
}

/// Runs the agent's queue, uplink and delivery loop until `f` is done with them.
async fn with_agent<T>(cfg: &Config, f: impl AsyncFnOnce(Arc<dyn Queue>) -> T) -> T {
    let engine = app::start_engine(cfg).expect("agent engine");
    let queue = app::open_queue(cfg).expect("queue");
    let router = app::start_router_with(cfg, engine, None).expect("router");
    let uplink = router.uplink().expect("uplink").clone();
    uplink.keep();
    let wake = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn(deliver::run(Arc::downgrade(&uplink), queue.clone(), wake));
    let out = f(queue).await;
    drop(uplink);
    drop(router);
    let _ = task.await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_lost_to_damage_are_reported_and_new_ones_reach_the_hub() {
    let log = Lines::default();
    let writer = log.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    )
    .expect("subscriber");
    let (_tmp, dir) = common::tmp_dir("queue-damage");
    let pki = Pki::init(&dir.join("pki")).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    let store = Arc::new(Store::open(&dir.join("hub-feedback")).expect("hub store"));
    let ingress = QuicIngress::bind("127.0.0.1:0".parse().expect("addr"), pki.dir())
        .expect("bind hub")
        .with_engine(common::hub_engine())
        .with_feedback(store.clone());
    let hub_addr = ingress.local_addr().expect("addr");
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ingress.run(async {
        let _ = rx.await;
    }));

    let mut cfg = common::config(&["vision-fashion"], "edge", &["cpu"]);
    cfg.hub.address = hub_addr.to_string();
    cfg.hub.ca = pki.dir().join("ca.pem");
    (cfg.hub.cert, cfg.hub.key) = pki.device_files("cam-01");
    cfg.queue.dir = dir.join("agent-queue");

    // 30 corrections delivered and acknowledged.
    let epoch = with_agent(&cfg, async |q: Arc<dyn Queue>| {
        for n in 0..30 {
            let q = q.clone();
            tokio::task::spawn_blocking(move || q.append(Class::Correction, correction(n)))
                .await
                .expect("join")
                .expect("append");
        }
        until("the hub stores the first 30", || {
            stored(&store, q.epoch()).len() == 30 && q.stats().depth() == 0
        })
        .await;
        q.epoch()
    })
    .await;

    // 30 more accepted while the hub is away (no delivery loop), then the damage.
    let last = tokio::task::spawn_blocking({
        let dir = cfg.queue.dir.clone();
        move || {
            let q = tandem_agent::queue::store::open_dir(&dir).expect("queue");
            let mut last = 0;
            for n in 30..60 {
                last = q.append(Class::Correction, correction(n)).expect("append");
            }
            last
        }
    })
    .await
    .expect("join");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let db = cfg.queue.dir.join("db");
    let mut bytes = std::fs::read(&db).expect("db");
    // Two thirds into what sled wrote (its segments are preallocated: zeros after the data).
    let used = bytes.iter().rposition(|b| *b != 0).unwrap_or(bytes.len());
    let at = used * 2 / 3;
    let end = (at + 64 * 1024).min(bytes.len());
    for (i, b) in bytes[at..end].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151) ^ 0x5a;
    }
    std::fs::write(&db, &bytes).expect("damage");

    // Reopened: the loss is reported, a new epoch starts, and new records reach the hub.
    with_agent(&cfg, async |q: Arc<dyn Queue>| {
        let s = q.stats();
        assert_ne!(s.epoch, epoch, "a new epoch after a loss: {s:?}");
        assert!(s.lost > 0, "the loss is counted: {s:?}");
        assert!(
            s.next_seq > last,
            "no seq handed out again: {s:?} (last {last})"
        );
        let text = String::from_utf8_lossy(&log.0.lock().expect("log")).to_string();
        let line = text
            .lines()
            .find(|l| l.contains("ERROR") && l.contains("lost"))
            .unwrap_or_else(|| panic!("no ERROR line about the loss:\n{text}"));
        assert!(line.contains(&s.lost.to_string()), "{line}");
        for n in 100..105 {
            let q = q.clone();
            tokio::task::spawn_blocking(move || q.append(Class::Correction, correction(n)))
                .await
                .expect("join")
                .expect("append after the damage");
        }
        until(
            "the hub stores the records accepted after the damage",
            || {
                let ids = stored(&store, s.epoch);
                (100..105).all(|n| ids.contains(&format!("req-{n}")))
            },
        )
        .await;
        eprintln!(
            "damage: {} records lost, {} held; new epoch {:016x}",
            s.lost,
            s.depth(),
            s.epoch
        );
    })
    .await;
}
