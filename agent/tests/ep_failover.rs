//! Execution providers in the agent's MQTT telemetry and log, end to end: an in-process agent
//! (real engine with the OpenVINO plugin from `make setup`, real router, telemetry through the
//! hub's real supervised mosquitto) with `execution_providers = ["auto"]`:
//! - telemetry carries the measured choice (each provider's median on the reference cases) and
//!   the providers passed over, with the measured difference or the reason;
//! - a device lost at run time (the engine's `fault-injection` hook: runs on it fail and no
//!   session can be built on it) moves the model to the next provider with no request failing;
//!   the failover count reaches telemetry; the log has one WARN for it however many requests
//!   follow, and one INFO line per retry of the lost provider, each allowed a longer wait;
//!   once the device is back, a retry returns the model to it;
//! - with two workers, a lost device moves both sessions (two failovers counted) and is
//!   warned about once;
//! - a provider whose runs keep failing soon after each return (its sessions still build and
//!   pass the gate) is warned about once, and each return waits longer than the one before;
//!   when no provider at all can take it, that is one ERROR, not one per failed request.
//!
//! OpenVINO's plugin offers a device on Intel CPUs only: elsewhere the first test checks
//! nothing (its subject is `auto` choosing OpenVINO) and the other two run on QNN's HTP
//! simulator, the other plugin EP `make setup` provisions.

mod common;

use common::mqtt::HubView;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_agent::inference::Input;
use tandem_agent::telemetry::MqttService;
use tandem_shared::mqtt::Telemetry;
use tandem_shared::provider::ExecutionProvider;

const FASHION: &str = "vision-fashion";
const IMAGENET: &str = "vision-imagenet";
const TEXT: &str = "text-sentiment";
const PATIENCE: Duration = Duration::from_secs(30);

/// The agent's log lines, as its `text` format writes them (captured here, not on stderr),
/// from `from` on (the buffer's length when the test installed it).
#[derive(Clone, Default)]
struct Log {
    buf: Arc<Mutex<Vec<u8>>>,
    from: usize,
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// The log of this test binary (installed by the first test that asks), from now on.
    fn install() -> Self {
        static LOG: std::sync::OnceLock<Log> = std::sync::OnceLock::new();
        let log = LOG.get_or_init(|| {
            let log = Log::default();
            let writer = log.clone();
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .init();
            log
        });
        let from = log.buf.lock().unwrap_or_else(|p| p.into_inner()).len();
        Log {
            buf: log.buf.clone(),
            from,
        }
    }

    /// Lines containing every one of `words`.
    fn lines_with(&self, words: &[&str]) -> Vec<String> {
        let bytes = self.buf.lock().unwrap_or_else(|p| p.into_inner())[self.from..].to_vec();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .map(str::to_string)
            .collect()
    }
}

/// The number after `key=` in a log line.
fn field(line: &str, key: &str) -> u64 {
    let at = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    line[at + key.len() + 2..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not a number in {line}"))
}

fn image() -> Input {
    let path = common::models_dir()
        .join(FASHION)
        .join("samples")
        .join("0_9.png");
    Input::Images(vec![std::fs::read(path).expect("sample").into()])
}

fn measured<'a>(
    t: &'a Telemetry,
    model: &str,
    ep: &str,
) -> &'a tandem_shared::provider::EpMeasurement {
    t.models[model]
        .ep_measured
        .iter()
        .find(|m| m.ep == ep)
        .unwrap_or_else(|| panic!("{model}: no {ep} measurement in {:?}", t.models[model]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_choice_the_passed_over_and_a_failover_reach_telemetry_and_are_logged_once() {
    if !common::openvino_serves_here() {
        return;
    }
    let log = Log::install();
    let (_dir, pki, broker) = common::mqtt::broker("cam-01").await;
    let mut cfg = common::config(&[FASHION, IMAGENET], "edge", &["auto"]);
    cfg.hub.ca = pki.dir().join("ca.pem");
    (cfg.hub.cert, cfg.hub.key) = pki.device_files("cam-01");
    cfg.mqtt.url = broker.url().to_string();
    cfg.mqtt.telemetry_interval_ms = 200;
    // The INT8 imagenet model differs on OpenVINO by more than the default tolerance: capped
    // there, the gate refuses OpenVINO for it (vision-fashion passes on both).
    cfg.runtime.accuracy_max_abs_diff_cap = cfg.runtime.accuracy_max_abs_diff;
    cfg.runtime.ep_retry_after_ms = 40;
    let engine = tandem_agent::app::start_engine(&cfg).expect("engine");
    let router = tandem_agent::app::start_router(&cfg, engine.clone()).expect("router");
    let fashion = engine.model(FASHION).expect("loaded").clone();
    let chosen = fashion.ep;
    let other = match chosen {
        ExecutionProvider::Cpu => ExecutionProvider::Openvino,
        ExecutionProvider::Openvino => ExecutionProvider::Cpu,
        e => panic!("auto chose {e} on this machine: {:?}", fashion.ep_measured),
    };
    let mut watch = HubView::connect(&pki, &broker, "tandem/cam-01/telemetry").await;
    let _svc = MqttService::start(&cfg, router.clone(), None)
        .expect("mqtt set up")
        .expect("mqtt on");

    // The choice and what it rests on.
    let t = watch
        .telemetry_where(|t| t.models.contains_key(IMAGENET))
        .await;
    let m = &t.models[FASHION];
    assert_eq!(m.ep, chosen.to_string());
    assert_eq!(m.ep_failovers, 0);
    let (ov, cpu) = (
        measured(&t, FASHION, "openvino"),
        measured(&t, FASHION, "cpu"),
    );
    assert!(ov.accurate && cpu.accurate, "{m:?}");
    let fastest = if ov.median_us < cpu.median_us {
        "openvino"
    } else {
        "cpu"
    };
    assert_eq!(
        m.ep, fastest,
        "auto serves the faster accurate provider: {m:?}"
    );
    let cuda = measured(&t, FASHION, "cuda");
    assert!(
        !cuda.accurate && cuda.error.as_deref().is_some_and(|e| !e.is_empty()),
        "{cuda:?}"
    );
    // Passed over with its measured difference and why.
    let refused = measured(&t, IMAGENET, "openvino");
    let diff = refused.max_abs_diff.expect("the difference measured");
    assert!(
        !refused.accurate && diff > cfg.runtime.accuracy_max_abs_diff,
        "{refused:?}"
    );
    assert!(
        refused
            .error
            .as_deref()
            .is_some_and(|e| e.contains("differ from the reference")),
        "{refused:?}"
    );
    assert_eq!(t.models[IMAGENET].ep, "cpu");
    eprintln!(
        "{FASHION}: auto chose {chosen} ({:?} us openvino, {:?} us cpu); {IMAGENET} openvino refused at {diff:.3}",
        ov.median_us, cpu.median_us
    );

    // The chosen provider's device is lost: requests keep being answered, on the other one,
    // while the lost one is retried with a growing wait.
    let alarms = |log: &Log| {
        let mut l = log.lines_with(&[" WARN ", FASHION]);
        l.extend(log.lines_with(&[" ERROR ", FASHION]));
        l
    };
    let alarms_before = alarms(&log).len();
    fashion.lose_device(Some(chosen));
    let retries = |log: &Log| log.lines_with(&["better execution provider still failing", FASHION]);
    let mut requests = 0;
    let started = Instant::now();
    while retries(&log).len() < 3 {
        assert!(started.elapsed() < PATIENCE, "fewer than 3 retries logged");
        router
            .classify(FASHION, image(), None)
            .await
            .expect("answered");
        requests += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let warned = log.lines_with(&["WARN", "failed at run time", FASHION]);
    assert_eq!(
        warned.len(),
        1,
        "one WARN for {requests} requests: {warned:#?}"
    );
    assert!(
        warned[0].contains(&format!("from={chosen}")) && warned[0].contains(&format!("to={other}")),
        "{}",
        warned[0]
    );
    // Nothing else about it at WARN or ERROR: not per request, not per retry.
    let raised = alarms(&log);
    assert_eq!(
        raised.len() - alarms_before,
        1,
        "{:#?}",
        &raised[alarms_before..]
    );
    let lines = retries(&log);
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" INFO ") && l.contains("device lost")),
        "{lines:#?}"
    );
    let first_max = field(&warned[0], "retry_max_ms");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(field(l, "retry"), i as u64 + 1, "{lines:#?}");
        // The backoff's bound doubles with each failed retry (capped at 32 times the first).
        assert_eq!(
            field(l, "retry_max_ms"),
            (first_max << (i + 1)).min(first_max * 32),
            "{lines:#?}"
        );
    }
    let t = watch
        .telemetry_where(|t| {
            t.models[FASHION].ep_failovers >= 1
                && t.models[FASHION].inferences.get("ok").copied().unwrap_or(0) >= requests
        })
        .await;
    let m = &t.models[FASHION];
    assert_eq!(
        (m.ep.as_str(), m.ep_failovers),
        (other.to_string().as_str(), 1),
        "{m:?}"
    );
    assert_eq!(
        m.inferences.len(),
        1,
        "no request failed: {:?}",
        m.inferences
    );

    // The device is back: a retry after the backoff returns the model to it.
    fashion.lose_device(None);
    let started = Instant::now();
    while log
        .lines_with(&["back after a failover", FASHION])
        .is_empty()
    {
        assert!(started.elapsed() < PATIENCE, "never went back to {chosen}");
        router
            .classify(FASHION, image(), None)
            .await
            .expect("answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = watch
        .telemetry_where(|t| t.models[FASHION].ep == chosen.to_string())
        .await;
    assert_eq!(t.models[FASHION].ep_failovers, 1);
    assert_eq!(
        log.lines_with(&[" WARN ", "failed at run time", FASHION])
            .len(),
        1
    );
}

/// What a failover test runs: a model on a plugin EP first, the CPU after it, and an input.
struct Subject {
    model: &'static str,
    ep: ExecutionProvider,
    input: Input,
}

/// Held by each test that calls [`on_plugin`]: off Intel both serve vision-fashion, whose log
/// lines must not mix (each test reads the log from its own start).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// `model` (edge) with `input` on `[openvino, cpu]` where OpenVINO's plugin offers a device
/// (Intel CPUs); elsewhere vision-fashion's FP32 model on `[qnn, cpu]` through QNN's HTP
/// simulator (one row per run, QNN's condition), so failover is exercised on every machine.
/// `tune` applied; the engine and the model, served on the plugin EP.
fn on_plugin(
    model: &'static str,
    input: Input,
    tune: impl FnOnce(&mut tandem_agent::config::Config),
) -> (
    tandem_agent::inference::Engine,
    Arc<tandem_engine::engine::ModelHandle>,
    Subject,
) {
    let (mut cfg, subject) = if common::openvino_serves_here() {
        let cfg = common::config(&[model], "edge", &["openvino", "cpu"]);
        let ep = ExecutionProvider::Openvino;
        (cfg, Subject { model, ep, input })
    } else {
        eprintln!("failover exercised on QNN's HTP simulator with {FASHION} (FP32) instead");
        let mut cfg = common::config(&[FASHION], "cloud", &["qnn", "cpu"]);
        cfg.engine.max_rows_per_run = 1;
        let (model, ep, input) = (FASHION, ExecutionProvider::Qnn, image());
        (cfg, Subject { model, ep, input })
    };
    tune(&mut cfg);
    let engine = common::engine_with(&cfg);
    let h = engine.model(subject.model).expect("loaded").clone();
    assert_eq!(h.ep, subject.ep, "{:?}", h.skipped_eps);
    (engine, h, subject)
}

#[test]
fn a_provider_failing_after_each_return_is_warned_once_and_retried_ever_later() {
    let _serial = one_at_a_time();
    let log = Log::install();
    let text = Input::Texts(vec!["a fine film".into()]);
    let (engine, h, s) = on_plugin(TEXT, text, |cfg| cfg.runtime.ep_retry_after_ms = 10);
    let model = s.model;
    // The plugin EP still builds and passes the gate, but every real run on it fails.
    h.fail_runs(Some(s.ep));
    let started = Instant::now();
    let mut requests = 0;
    while h.ep_failovers() < 3 {
        assert!(
            started.elapsed() < PATIENCE,
            "{} failovers",
            h.ep_failovers()
        );
        let answer = engine
            .infer_blocking(model, s.input.clone())
            .expect("every request is answered");
        assert_eq!(answer.ep, ExecutionProvider::Cpu);
        requests += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let warned = log.lines_with(&[" WARN ", model]);
    assert_eq!(warned.len(), 1, "{requests} requests: {warned:#?}");
    let again = log.lines_with(&[" INFO ", "failed again soon after its return", model]);
    assert!(again.len() >= 2, "{again:#?}");
    // Each return came after a longer wait: the backoff was not reset by the returns.
    let first_max = field(&warned[0], "retry_max_ms");
    for (i, l) in again.iter().enumerate() {
        assert_eq!(
            field(l, "retry_max_ms"),
            (first_max << (i + 1)).min(first_max * 32),
            "{again:#?}"
        );
    }
    assert_eq!(
        log.lines_with(&["back after a failover", model]).len(),
        again.len()
    );

    // Now the CPU's device is lost too: no provider can take the model. Requests fail, and
    // that is said once at ERROR, not per request; the move is tried again after a backoff.
    h.lose_device(Some(ExecutionProvider::Cpu));
    let stuck = |log: &Log| log.lines_with(&[" ERROR ", "no other provider", model]);
    let started = Instant::now();
    while stuck(&log).is_empty() {
        assert!(started.elapsed() < PATIENCE, "never said it is stuck");
        let _ = engine.infer_blocking(model, s.input.clone());
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut failed = 0;
    while log.lines_with(&["still no other provider", model]).len() < 2 {
        assert!(started.elapsed() < PATIENCE, "no retry of the move logged");
        let r = engine.infer_blocking(model, s.input.clone());
        failed += usize::from(r.is_err());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(failed >= 2, "{failed}");
    let errors = log.lines_with(&[" ERROR ", model]);
    assert_eq!(errors.len(), 1, "{failed} failed requests: {errors:#?}");
}

#[test]
fn a_device_lost_under_two_workers_moves_both_and_is_warned_once() {
    let _serial = one_at_a_time();
    let log = Log::install();
    let dir = common::models_dir().join(IMAGENET).join("samples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("samples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let img = Input::Images(vec![std::fs::read(&files[0]).expect("sample").into()]);
    let (engine, h, s) = on_plugin(IMAGENET, img, |cfg| cfg.engine.workers = 2);
    h.lose_device(Some(s.ep));
    // Queued at once: the least-loaded lane takes each, so both workers meet the failure.
    let replies: Vec<_> = (0..8)
        .map(|_| engine.submit(s.model, s.input.clone()).expect("queued"))
        .collect();
    for r in replies {
        let answer = r
            .blocking_recv()
            .expect("answered")
            .expect("no request fails");
        assert_eq!(answer.ep, ExecutionProvider::Cpu);
    }
    assert_eq!(h.ep_failovers(), 2, "each worker's session moved");
    let warned = log.lines_with(&[" WARN ", "execution provider", s.model]);
    assert_eq!(warned.len(), 1, "{warned:#?}");
    let followed = log.lines_with(&[" INFO ", "another worker", s.model]);
    assert_eq!(followed.len(), 1, "{followed:#?}");
}
