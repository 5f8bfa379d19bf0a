//! Hub and broker stopped under load (issue 4 item 6, first check), every part real and in its
//! own process: the hub (`tandem_hub::app::run`, as `tandem-hub run` runs it: the engine on the
//! cloud variant, QUIC ingress, feedback store, fleet state, and the mosquitto it supervises)
//! and the agent daemon (engine, cascade, durable queue, delivery loop, MQTT telemetry), over
//! vision-fashion.
//!
//! Requests flow throughout; every answer is offloaded (threshold 2.0), so each one is a hard
//! example. The hub's process group is killed (SIGKILL: the hub and its broker at once). The
//! agent keeps answering, locally and degraded, and its queue (hard examples, and telemetry the
//! broker could not take) grows within `queue.max_bytes` (agent `/metrics`). The hub starts
//! again on the same state and the queue drains. Then, both stopped, by key: the hub's feedback
//! store holds every sequence number the agent's queue gave out in its epoch, once; every
//! degraded answer's hard example is there once; the telemetry snapshots queued offline reached
//! the fleet state once each (`late_telemetry`) without replacing newer telemetry; every answer
//! (events sampled at 1.0) asked for after the agent reported its broker gone and answered
//! before the hub started again has its event in the store, and no more events are there from
//! that time than answers.
//!
//! The hub is this test binary started again (`hub_process`, an ignored test that does nothing
//! unless `TANDEM_TEST_HUB_CONFIG` is set): the hub code of this very build, in a process group
//! of its own that can be killed with its broker. Every wait has a deadline, the whole test has
//! one ([`DEADLINE`]), and both processes are killed when the test ends, however it ends.

mod common;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_tests::metrics::{family, one, scrape as metrics};
use tandem_tests::net::free_ports;
use tandem_tests::process::Logged;
use tandem_tests::wait_for_async;

const HUB_CONFIG_ENV: &str = "TANDEM_TEST_HUB_CONFIG";
const MODEL: &str = "vision-fashion";
const DEVICE: &str = "cam-01";
/// The whole test.
const DEADLINE: Duration = Duration::from_secs(300);
/// Any one wait.
const PATIENCE: Duration = Duration::from_secs(90);
/// How long hub and broker stay down.
const OUTAGE: Duration = Duration::from_secs(6);
/// The agent's `queue.max_bytes`.
const MAX_BYTES: u64 = 4 << 20;

/// Not a test on its own: the hub process of [`hub_and_broker_down_under_load`], which starts
/// this binary again with `TANDEM_TEST_HUB_CONFIG` naming the hub's config.
#[test]
#[ignore = "the hub process of hub_and_broker_down_under_load, which starts it"]
fn hub_process() {
    let Ok(path) = std::env::var(HUB_CONFIG_ENV) else {
        return;
    };
    // The test gone (killed, timed out): stop as on SIGTERM, broker included.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM));
    let cfg = tandem_hub::config::Config::load(Some(Path::new(&path))).expect("hub config");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cfg.log_filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(tandem_hub::app::run(cfg)).expect("the hub ran");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The hub process and its log.
struct Hub {
    proc: Logged,
    /// `http://IP:PORT` of its API.
    http: String,
}

impl Hub {
    /// Starts the hub with `config` in a new process group; waits for its `serving` line.
    fn start(config: &Path) -> Hub {
        let (proc, http) = Logged::spawn(
            Command::new(std::env::current_exe().expect("this test binary"))
                .args(["hub_process", "--exact", "--ignored", "--nocapture"])
                .args(["--test-threads", "1"])
                .env(HUB_CONFIG_ENV, config)
                .env_remove("RUST_LOG")
                .process_group(0),
            PATIENCE,
            |line| {
                line.contains("tandem-hub serving")
                    .then(|| {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix("http="))
                    })
                    .flatten()
                    .map(|http| format!("http://{http}"))
            },
        );
        let mut hub = Hub {
            proc,
            http: String::new(),
        };
        match http {
            Some(http) => hub.http = http,
            None => panic!("the hub did not start:\n{}", hub.log_text()),
        }
        hub
    }

    fn log_text(&self) -> String {
        self.proc.log_text()
    }

    /// SIGKILL to the hub's process group: the hub and its mosquitto, at once.
    fn kill(&mut self) {
        let pgid = rustix::process::Pid::from_raw(self.proc.child.id() as i32).expect("pid");
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        let _ = self.proc.child.wait();
    }

    /// SIGTERM (the hub stops its broker and flushes its databases); killed after `PATIENCE`.
    fn stop(&mut self) {
        let Some(status) = self.proc.terminate(PATIENCE) else {
            self.kill();
            panic!("the hub did not stop on SIGTERM:\n{}", self.log_text());
        };
        assert!(status.success(), "{status:?}:\n{}", self.log_text());
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.child.try_wait() {
            self.kill();
        }
    }
}

/// Stops the agent daemon with SIGTERM (its queue flushed and closed); killed after `PATIENCE`.
fn stop_agent(agent: &mut common::Daemon) {
    let Some(status) = tandem_tests::process::terminate(&mut agent.child, PATIENCE) else {
        panic!("the agent did not stop on SIGTERM:\n{}", agent.log_text());
    };
    assert!(status.success(), "{status:?}:\n{}", agent.log_text());
}

/// One answer the load got: when, and what.
#[derive(Debug, Clone)]
struct Answered {
    phase: u8,
    /// When it was asked for and when its answer came (ms since the epoch).
    sent_ms: u64,
    done_ms: u64,
    request_id: String,
    route: String,
    degraded: bool,
}

const BEFORE: u8 = 0;
const DOWN: u8 = 1;
const BACK: u8 = 2;

/// Two clients sending the samples in turn until `stop`; every answer must be a 200.
fn load(
    base: String,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Answered>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let dir = common::models_dir().join(MODEL).join("samples");
    let mut samples: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("samples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    samples.sort();
    let samples: Arc<Vec<Vec<u8>>> = Arc::new(
        samples
            .iter()
            .map(|p| std::fs::read(p).expect("sample"))
            .collect(),
    );
    (0..2)
        .map(|w| {
            let (base, phase, stop, out, samples) = (
                base.clone(),
                phase.clone(),
                stop.clone(),
                out.clone(),
                samples.clone(),
            );
            tokio::spawn(async move {
                let c = reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .expect("client");
                let mut n = w;
                while !stop.load(Relaxed) {
                    let p = phase.load(Relaxed);
                    let sent_ms = now_ms();
                    let r = c
                        .post(format!("{base}/v1/classify/{MODEL}"))
                        .body(samples[n % samples.len()].clone())
                        .send()
                        .await
                        .expect("the agent answers");
                    assert_eq!(r.status().as_u16(), 200, "phase {p}");
                    let v: Value = r.json().await.expect("json");
                    out.lock().expect("answers").push(Answered {
                        phase: p,
                        sent_ms,
                        done_ms: now_ms(),
                        request_id: v["request_id"].as_str().expect("request_id").into(),
                        route: v["route"].as_str().unwrap_or_default().into(),
                        degraded: v["degraded"] == true,
                    });
                    n += 2;
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            })
        })
        .collect()
}

fn hub_config(dir: &Path, quic: u16, mqtt: u16) -> PathBuf {
    let path = dir.join("hub.toml");
    std::fs::write(
        &path,
        format!(
            "log_filter = \"info,ort=warn\"\npki_dir = \"pki\"\nfeedback_dir = \"feedback\"\n\
             registry_dir = \"registry\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[quic]\nlisten = \"127.0.0.1:{quic}\"\n\
             [runtime]\nintra_op_threads = 1\n\
             [engine]\nmax_batch = 8\nmax_batch_delay_us = 1000\n\
             [models]\ndir = \"{}\"\nenabled = [\"{MODEL}\"]\n\
             [mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\nruntime_dir = \"run/mqtt\"\n\
             restart_backoff_ms = 200\n[fleet]\ndir = \"state\"\n",
            common::models_dir().display()
        ),
    )
    .expect("write hub config");
    path
}

fn agent_config(dir: &Path, pki: &tandem_hub::pki::Pki, quic: u16, mqtt: u16) -> String {
    let (cert, key) = pki.device_files(DEVICE);
    let extra = format!(
        "[runtime]\nintra_op_threads = 1\n\
         [hub]\naddress = \"127.0.0.1:{quic}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
         timeout_ms = 1000\nkeep_alive_ms = 500\nidle_timeout_ms = 2000\n\
         [policy.models.{MODEL}]\nthreshold = 2.0\n\
         [mqtt]\nurl = \"mqtts://127.0.0.1:{mqtt}\"\ntelemetry_interval_ms = 200\n\
         events_sample_rate = 1.0\nkeep_alive_ms = 2000\n\
         [queue]\ndir = \"{}\"\nmax_bytes = {MAX_BYTES}\n\
         [feedback]\nsample_rate = 1.0\nmax_per_minute = 0\nmax_per_hour = 0\nmax_per_day = 0\n\
         max_pending = 4096\n",
        pki.dir().join("ca.pem").display(),
        cert.display(),
        key.display(),
        dir.join("queue").display(),
    );
    common::daemon_config(&[MODEL], "edge", &extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_broker_down_under_load() {
    tokio::time::timeout(DEADLINE, scenario())
        .await
        .expect("the whole test within its deadline");
}

async fn scenario() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let hub_dir = dir.join("hub");
    let agent_dir = dir.join("agent");
    std::fs::create_dir_all(&agent_dir).expect("agent dir");
    let pki = tandem_hub::pki::Pki::init(&hub_dir.join("pki")).expect("pki");
    pki.add_device(DEVICE, 30).expect("device");
    let (quic, mqtt) = free_ports();
    let hub_toml = hub_config(&hub_dir, quic, mqtt);
    let mut hub = tokio::task::block_in_place(|| Hub::start(&hub_toml));
    let mut agent = tokio::task::block_in_place(|| {
        common::Daemon::start(&agent_dir, &agent_config(&agent_dir, &pki, quic, mqtt))
    });
    let base = agent.url("");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    // The agent's links to the hub (QUIC) and to its broker (MQTT), both up.
    let both_links_up = || async {
        let m = metrics(&c, &base).await;
        one(&m, "tandem_hub_connected") == 1.0 && one(&m, "tandem_mqtt_connected") == 1.0
    };
    wait_for_async(
        "the agent connected to the hub and its broker",
        PATIENCE,
        both_links_up,
    )
    .await;
    let fleet_url = |hub: &Hub| format!("{}/v1/fleet/{DEVICE}", hub.http);
    // The fleet is an operator's read: the hub's operator token (written at its first run).
    let token = tandem_tests::http::operator_token(pki.dir());
    let device = |url: String| {
        let (c, token) = (c.clone(), token.clone());
        async move {
            let r = c.get(url).bearer_auth(token).send().await.ok()?;
            if !r.status().is_success() {
                return None;
            }
            r.json::<Value>().await.ok()
        }
    };
    wait_for_async("the device online in the fleet", PATIENCE, || async {
        device(fleet_url(&hub))
            .await
            .is_some_and(|d| d["online"] == true)
    })
    .await;

    // Load, hub up: answers come from the hub.
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answered>::new()));
    let workers = load(base.clone(), phase.clone(), stop.clone(), answers.clone());
    let count = |p: u8, f: &dyn Fn(&Answered) -> bool| {
        answers
            .lock()
            .expect("answers")
            .iter()
            .filter(|a| a.phase == p && f(a))
            .count()
    };
    wait_for_async("answers from the hub", PATIENCE, || async {
        count(BEFORE, &|a| a.route == "cloud" && !a.degraded) >= 20
    })
    .await;
    // Let the fleet database flush what it took so far (sled: every 500 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Hub and broker killed; the load goes on.
    let at_start = metrics(&c, &base).await;
    let bytes_at_start = family(&at_start, "tandem_outbox_bytes");
    tokio::task::block_in_place(|| hub.kill());
    phase.store(DOWN, Relaxed);
    let killed_ms = now_ms();
    let t = Instant::now();
    let mut peak_bytes = 0.0f64;
    // The first time the agent was seen without its broker (after that scrape came back).
    let mut mqtt_down_ms = None;
    while t.elapsed() < OUTAGE {
        let m = metrics(&c, &base).await;
        let bytes = family(&m, "tandem_outbox_bytes");
        assert_eq!(one(&m, "tandem_outbox_max_bytes"), MAX_BYTES as f64);
        assert!(
            bytes <= MAX_BYTES as f64,
            "queue bytes {bytes} over the budget {MAX_BYTES}"
        );
        peak_bytes = peak_bytes.max(bytes);
        if mqtt_down_ms.is_none() && one(&m, "tandem_mqtt_connected") == 0.0 {
            mqtt_down_ms = Some(now_ms());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let down = metrics(&c, &base).await;
    let mqtt_down_ms = mqtt_down_ms.expect("the agent saw its broker go");
    assert_eq!(one(&down, "tandem_hub_connected"), 0.0);
    for class in ["hard_example", "event", "telemetry"] {
        assert!(
            one(
                &down,
                &format!("tandem_outbox_records{{class=\"{class}\"}}")
            ) >= 3.0,
            "{class} records wait in the queue: {down:?}"
        );
    }
    let bytes_down = family(&down, "tandem_outbox_bytes");
    assert!(
        bytes_down > bytes_at_start && bytes_down <= MAX_BYTES as f64,
        "the queue grew within its budget: {bytes_at_start} -> {bytes_down} (max {MAX_BYTES})"
    );
    assert_eq!(
        family(&down, "tandem_outbox_evicted_total"),
        0.0,
        "nothing evicted"
    );
    let degraded_down = count(DOWN, &|a| a.degraded && a.route == "local");
    assert!(
        degraded_down >= 10,
        "the agent kept answering, locally: {degraded_down} degraded answers while the hub was down"
    );
    assert_eq!(
        count(DOWN, &|a| !a.degraded && a.route == "cloud"),
        0,
        "no answer from a dead hub"
    );

    // The hub again, same state and ports; the queue drains.
    let relaunch_ms = now_ms();
    let mut hub = tokio::task::block_in_place(|| {
        drop(hub);
        Hub::start(&hub_toml)
    });
    let restarted_ms = now_ms();
    phase.store(BACK, Relaxed);
    wait_for_async(
        "the agent back on the hub and its broker",
        PATIENCE,
        both_links_up,
    )
    .await;
    wait_for_async("answers from the hub again", PATIENCE, || async {
        count(BACK, &|a| a.route == "cloud" && !a.degraded) >= 10
    })
    .await;
    stop.store(true, Relaxed);
    for w in workers {
        w.await.expect("a load worker failed");
    }
    wait_for_async("the queue drained", PATIENCE, || async {
        let m = metrics(&c, &base).await;
        family(&m, "tandem_outbox_records") == 0.0
    })
    .await;
    let last = metrics(&c, &base).await;
    assert_eq!(family(&last, "tandem_outbox_evicted_total"), 0.0);
    assert_eq!(one(&last, "tandem_feedback_examples_dropped_total"), 0.0);
    assert_eq!(one(&last, "tandem_outbox_crc_failures_total"), 0.0);
    wait_for_async("fresh live telemetry in the fleet", PATIENCE, || async {
        device(fleet_url(&hub)).await.is_some_and(|d| {
            d["online"] == true && d["telemetry"]["ts_ms"].as_u64().unwrap_or(0) > restarted_ms
        })
    })
    .await;
    let hub_metrics = c
        .get(format!("{}/metrics", hub.http))
        .send()
        .await
        .expect("hub metrics")
        .text()
        .await
        .expect("text");
    let redelivered = hub_metrics
        .lines()
        .find_map(|l| l.strip_prefix("tandem_hub_records_redelivered_total "))
        .unwrap_or("?")
        .to_string();

    // Both stopped; the stores, by key.
    tokio::task::block_in_place(|| {
        stop_agent(&mut agent);
        hub.stop();
    });
    let queue = tandem_agent::queue::store::open_dir(&agent_dir.join("queue")).expect("queue");
    let qs = tandem_agent::queue::Queue::stats(&queue);
    assert_eq!(qs.depth(), 0);
    drop(queue);
    let store = tandem_hub::feedback::Store::open(&hub_dir.join("feedback")).expect("store");
    let records: Vec<_> = store
        .iter()
        .map(|r| r.expect("record"))
        .filter(|r| r.device == DEVICE)
        .collect();
    assert!(records.iter().all(|r| r.epoch == qs.epoch), "one epoch");
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    let expected: Vec<u64> = (1..qs.next_seq).collect();
    assert_eq!(
        seqs.len(),
        expected.len(),
        "every record the queue gave out is at the hub"
    );
    assert_eq!(seqs, expected, "each sequence number once, none missing");
    assert!(records.iter().all(|r| r.kind != "rejected"));

    // Every degraded answer's hard example, once.
    let mut examples: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        if let Some(e) = &r.example {
            *examples.entry(e.request_id.clone()).or_default() += 1;
        }
    }
    assert!(
        examples.values().all(|n| *n == 1),
        "a request's example stored twice"
    );
    let all = answers.lock().expect("answers").clone();
    let degraded: BTreeSet<&str> = all
        .iter()
        .filter(|a| a.degraded)
        .map(|a| a.request_id.as_str())
        .collect();
    let missing: Vec<&&str> = degraded
        .iter()
        .filter(|id| !examples.contains_key(**id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} degraded answers have no example at the hub: {missing:?}",
        missing.len(),
        degraded.len()
    );
    assert_eq!(
        examples.len(),
        all.len(),
        "one example per answer (all offloaded)"
    );

    // Telemetry queued while the broker was down: stored once each, and into the fleet state.
    let telemetry: Vec<&Value> = records
        .iter()
        .filter(|r| r.kind == "telemetry")
        .filter_map(|r| r.payload.as_ref())
        .collect();
    let offline = telemetry
        .iter()
        .filter(|t| {
            let ts = t["ts_ms"].as_u64().unwrap_or(0);
            ts >= killed_ms && ts <= restarted_ms
        })
        .count();
    assert!(
        offline >= 5,
        "telemetry taken during the outage reached the hub: {offline}"
    );
    // Events sampled while the broker was known to be gone: each one at the hub.
    let events: Vec<&Value> = records
        .iter()
        .filter(|r| r.kind == "event")
        .filter_map(|r| r.payload.as_ref())
        .collect();
    let in_outage: Vec<&&Value> = events
        .iter()
        .filter(|e| {
            let ts = e["ts_ms"].as_u64().unwrap_or(0);
            ts >= mqtt_down_ms && ts <= relaunch_ms
        })
        .collect();
    let must = all
        .iter()
        .filter(|a| a.sent_ms >= mqtt_down_ms && a.done_ms <= relaunch_ms)
        .count();
    let could = all
        .iter()
        .filter(|a| a.sent_ms <= relaunch_ms && a.done_ms >= mqtt_down_ms)
        .count();
    assert!(
        must >= 10 && in_outage.len() >= must && in_outage.len() <= could,
        "events sampled during the outage at the hub: {} (answers wholly inside it {must}, \
         overlapping it {could})",
        in_outage.len()
    );
    assert!(
        in_outage
            .iter()
            .all(|e| e["degraded"] == true && e["model"] == MODEL),
        "{in_outage:?}"
    );
    let tseqs: BTreeSet<u64> = telemetry.iter().filter_map(|t| t["seq"].as_u64()).collect();
    assert_eq!(tseqs.len(), telemetry.len(), "each snapshot once");
    let newest_late = telemetry
        .iter()
        .filter_map(|t| t["ts_ms"].as_u64())
        .max()
        .unwrap_or(0);
    drop(store);
    let fleet =
        tandem_hub::fleet::FleetStore::open(&hub_dir.join("state"), 1 << 20).expect("fleet store");
    let d = fleet.get(DEVICE).expect("get").expect("the device");
    assert_eq!(
        d.late_telemetry,
        telemetry.len() as u64,
        "each delivered snapshot reached the fleet state once"
    );
    let kept = d.telemetry.as_ref().expect("telemetry");
    assert!(
        kept.ts_ms >= newest_late && kept.ts_ms > restarted_ms,
        "the newest sample is kept: {} vs newest late {newest_late}",
        kept.ts_ms
    );
    assert!(d.last_seen_ms >= restarted_ms);
    eprintln!(
        "outage: {} answers ({} degraded while down), queue peak {peak_bytes} B of {MAX_BYTES}, \
         {} records delivered ({} examples, {} telemetry, {offline} taken offline, {} events, \
         {} of them sampled offline), hub redeliveries {redelivered}",
        all.len(),
        degraded_down,
        records.len(),
        examples.len(),
        telemetry.len(),
        events.len(),
        in_outage.len()
    );
}
