//! Enrolment by claim and automatic renewal (issue 10 item 4), across the built binaries on
//! loopback: `tandem-hub init`, `tandem-hub run` (engine, QUIC ingress, enrolment endpoint,
//! embedded mosquitto), `tandem-hub claim create|revoke`, `tandem-agent enrol`,
//! `tandem-agent run`.
//!
//! - `enrol_once_and_refuse_reuse_expiry_and_revocation`: a device enrols with a token and the
//!   CA alone (key made on the device, 0600; the hub names it prefix + proposed name, client
//!   authentication only); the same token again, an expired one and a revoked one are refused
//!   with exit 77 and a message saying which.
//! - `renewal_under_load_fails_no_request`: certificates of 6 s; every request is offloaded
//!   (threshold 2.0) while the agent renews several times: every answer is a 200 from the hub,
//!   none degraded; the hub recorded the renewals, and revoked each replaced certificate as
//!   superseded (1 s after the agent connected with its new one); MQTT reconnected with the
//!   new identity.
//! - `a_lapsed_certificate_recovers_through_a_new_claim`: the certificate expires while the
//!   agent is stopped; started again, it cannot connect or renew (it says so); a new claim in
//!   the token file its config names makes it enrol at its next start, under the same name,
//!   and it offloads.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_tests::net::free_ports;
use tandem_tests::paths::{binary, models_dir, scratch};
use tandem_tests::process::Logged;

const MODEL: &str = "vision-fashion";
const PATIENCE: Duration = Duration::from_secs(90);

struct Hub {
    proc: Logged,
    http: String,
    enrol: String,
    dir: PathBuf,
}

impl Drop for Hub {
    fn drop(&mut self) {
        if self.proc.terminate(Duration::from_secs(20)).is_none() {
            let _ = self.proc.child.kill();
            let _ = self.proc.child.wait();
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// `tandem-hub init`, then `tandem-hub run` with certificates of `lifetime_s`.
fn start_hub(dir: &Path, lifetime_s: u64) -> Hub {
    let init = run(Command::new(binary("tandem-hub"))
        .args(["init", "--dir"])
        .arg(dir.join("pki")));
    assert!(init.status.success(), "{init:?}");
    let (quic, mqtt) = free_ports();
    let (enrol, _) = free_ports();
    let cfg = dir.join("hub.toml");
    std::fs::write(
        &cfg,
        format!(
            "log_filter = \"info,ort=warn\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[quic]\nlisten = \"127.0.0.1:{quic}\"\n\
             [runtime]\nintra_op_threads = 1\n[engine]\nmax_batch = 8\nmax_batch_delay_us = 1000\n\
             [models]\ndir = \"{}\"\nenabled = [\"{MODEL}\"]\n\
             [mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\nruntime_dir = \"run/mqtt\"\n\
             [enrol]\nlisten = \"127.0.0.1:{enrol}\"\ncert_lifetime_s = {lifetime_s}\n\
             superseded_grace_ms = 1000\n[pki]\ncrl_check_ms = 250\n",
            models_dir().display()
        ),
    )
    .expect("hub config");
    let (proc, http) = Logged::spawn(
        Command::new(binary("tandem-hub"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env_remove("RUST_LOG"),
        PATIENCE,
        |line| {
            line.contains("tandem-hub serving")
                .then(|| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix("http="))
                })
                .flatten()
                .map(|h| format!("http://{h}"))
        },
    );
    let Some(http) = http else {
        panic!("the hub did not start:\n{}", proc.log_text());
    };
    let hub = Hub {
        proc,
        http,
        enrol: format!("127.0.0.1:{enrol}"),
        dir: dir.to_path_buf(),
    };
    std::fs::write(dir.join("mqtt.port"), mqtt.to_string()).expect("port");
    std::fs::write(dir.join("quic.port"), quic.to_string()).expect("port");
    hub
}

impl Hub {
    /// `tandem-hub claim create`; returns (token, id).
    fn claim(&self, expires: &str) -> (String, String) {
        let out = run(Command::new(binary("tandem-hub"))
            .args([
                "claim",
                "create",
                "--labels",
                "site=lab,floor=2",
                "--name-prefix",
                "lab-",
            ])
            .args(["--expires", expires, "--hub", &self.http])
            .env("TANDEM_HUB_TOKEN_FILE", self.operator_token_file()));
        assert!(out.status.success(), "{out:?}");
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let id = err
            .split_whitespace()
            .nth(1)
            .expect("claim <id> on stderr")
            .to_string();
        (token, id)
    }

    /// `GET path` as the operator (the token `tandem-hub init` wrote).
    fn get(&self, path: &str) -> Value {
        let token = tandem_tests::http::operator_token(&self.dir.join("pki"));
        reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.http))
            .bearer_auth(token)
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The hub's operator token file, for the CLI (`TANDEM_HUB_TOKEN_FILE`).
    fn operator_token_file(&self) -> PathBuf {
        self.dir.join("pki").join("operator.token")
    }

    /// A counter from the hub's `/metrics`.
    fn counter(&self, name: &str) -> f64 {
        let text = reqwest::blocking::get(format!("{}/metrics", self.http))
            .and_then(|r| r.text())
            .expect("/metrics");
        tandem_tests::metrics::family(&tandem_tests::metrics::parse(&text), name)
    }

    fn port(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).expect("port")
    }
}

/// An agent config offloading every request (threshold 2.0) with its files under `dir`; it
/// enrols at start with `dir/claim.token` when that file exists and the certificate is
/// missing or expired.
fn agent_config(hub: &Hub, dir: &Path) -> PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [models]\ndir = \"{}\"\nenabled = [\"{MODEL}\"]\nvariant = \"edge\"\n\
             [runtime]\nintra_op_threads = 1\n\
             [hub]\naddress = \"127.0.0.1:{}\"\nca = \"{}\"\ncert = \"device.pem\"\nkey = \"device.key\"\n\
             timeout_ms = 5000\nkeep_alive_ms = 500\nidle_timeout_ms = 4000\n\
             enrol_address = \"{}\"\nclaim_token_file = \"claim.token\"\ndevice_name = \"cam1\"\n\
             [policy.models.{MODEL}]\nthreshold = 2.0\n\
             [mqtt]\nurl = \"mqtts://127.0.0.1:{}\"\ntelemetry_interval_ms = 500\nevents_sample_rate = 0.0\n\
             [queue]\ndir = \"queue\"\n",
            models_dir().display(),
            hub.port("quic.port"),
            hub.dir.join("pki/ca.pem").display(),
            hub.enrol,
            hub.port("mqtt.port"),
        ),
    )
    .expect("agent config");
    path
}

fn enrol(hub: &Hub, config: &Path, token: &str, name: &str) -> Output {
    run(Command::new(binary("tandem-agent"))
        .args([
            "enrol",
            "--hub",
            &hub.enrol,
            "--server-name",
            "localhost",
            "--force",
        ])
        .args(["--token", token, "--name", name, "--config"])
        .arg(config))
}

/// An agent process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Agent(Logged);

impl Agent {
    fn log_text(&self) -> String {
        self.0.log_text()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.0.terminate(Duration::from_secs(20)).is_none() {
            let _ = self.0.child.kill();
            let _ = self.0.child.wait();
        }
    }
}

fn start_agent(config: &Path) -> (Agent, String) {
    let (proc, addr) = Logged::spawn(
        Command::new(binary("tandem-agent"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,ort=warn"),
        PATIENCE,
        |line| {
            let i = line.find("listen=")?;
            line[i + 7..].split_whitespace().next().map(str::to_string)
        },
    );
    let Some(addr) = addr else {
        panic!("the agent did not start:\n{}", proc.log_text());
    };
    (Agent(proc), format!("http://{addr}"))
}

fn sample() -> Vec<u8> {
    let dir = models_dir().join(MODEL).join("samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("samples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    files.sort();
    std::fs::read(&files[0]).expect("sample")
}

/// One classify request: (status, route, degraded).
fn classify(c: &reqwest::blocking::Client, base: &str, body: &[u8]) -> (u16, String, bool) {
    let r = c
        .post(format!("{base}/v1/classify/{MODEL}"))
        .body(body.to_vec())
        .send()
        .expect("the agent answers");
    let status = r.status().as_u16();
    let v: Value = r.json().unwrap_or(Value::Null);
    (
        status,
        v["route"].as_str().unwrap_or_default().to_string(),
        v["degraded"] == true,
    )
}

fn wait_offloading(base: &str, what: &str, log: impl Fn() -> String) {
    let c = reqwest::blocking::Client::new();
    let body = sample();
    let start = Instant::now();
    loop {
        let (status, route, degraded) = classify(&c, base, &body);
        if status == 200 && !degraded && route != "local" {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: never offloaded ({route}, degraded {degraded}):\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether the certificate (PEM) at `pem` carries `name` (its subject CN and DNS name).
fn names(pem: &Path, name: &str) -> bool {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_file(pem).expect("a certificate");
    der.windows(name.len()).any(|w| w == name.as_bytes())
}

/// A hub with certificates of `lifetime_s` and one device enrolled as `lab-cam1`, its
/// config in `dir/dev/agent.toml`.
fn enrolled(name: &str, lifetime_s: u64) -> (tandem_tests::Scratch, Hub, PathBuf) {
    let dir = scratch(name);
    let hub = start_hub(&dir, lifetime_s);
    let dev = dir.join("dev");
    std::fs::create_dir_all(&dev).expect("dir");
    let cfg = agent_config(&hub, &dev);
    let (token, _) = hub.claim("1h");
    let out = enrol(&hub, &cfg, &token, "cam1");
    assert!(out.status.success(), "{out:?}\n{}", hub.proc.log_text());
    (dir, hub, cfg)
}

#[test]
fn enrol_once_and_refuse_reuse_expiry_and_revocation() {
    let dir = scratch("enrol-once");
    let hub = start_hub(&dir, 3600);
    let dev = dir.join("dev1");
    std::fs::create_dir_all(&dev).expect("dir");
    let cfg = agent_config(&hub, &dev);
    let (token, id) = hub.claim("1h");
    let out = enrol(&hub, &cfg, &token, "cam1");
    assert!(out.status.success(), "{out:?}\n{}", hub.proc.log_text());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("enrolled as lab-cam1"),
        "{out:?}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dev.join("device.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
    }
    // The hub named it (prefix + proposed name); its extensions are the hub's alone
    // (tandem-hub pki::sign tests: client authentication only, nothing from the request).
    assert!(names(&dev.join("device.pem"), "lab-cam1"));
    assert!(
        !dir.join("pki/devices/lab-cam1.key").exists(),
        "the hub never holds the key"
    );

    // The same token again: refused, saying it was used.
    let other = dir.join("dev2");
    std::fs::create_dir_all(&other).expect("dir");
    let cfg2 = agent_config(&hub, &other);
    let again = enrol(&hub, &cfg2, &token, "cam2");
    assert_eq!(again.status.code(), Some(77), "{again:?}");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("already used") && err.contains("lab-cam1"),
        "{err}"
    );
    assert!(!other.join("device.pem").exists());

    // Expired.
    let (short, _) = hub.claim("1s");
    std::thread::sleep(Duration::from_millis(1500));
    let late = enrol(&hub, &cfg2, &short, "cam2");
    assert_eq!(late.status.code(), Some(77), "{late:?}");
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("expired"),
        "{late:?}"
    );

    // Revoked.
    let (revoked, rid) = hub.claim("1h");
    let out = run(Command::new(binary("tandem-hub"))
        .args(["claim", "revoke", &rid, "--hub", &hub.http])
        .env("TANDEM_HUB_TOKEN_FILE", hub.operator_token_file()));
    assert!(out.status.success(), "{out:?}");
    let refused = enrol(&hub, &cfg2, &revoked, "cam2");
    assert_eq!(refused.status.code(), Some(77), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("revoked"),
        "{refused:?}"
    );

    // A taken name is refused too, and leaves the claim usable.
    let (fresh, _) = hub.claim("1h");
    let taken = enrol(&hub, &cfg2, &fresh, "cam1");
    assert_ne!(taken.status.code(), Some(0), "{taken:?}");
    assert!(
        String::from_utf8_lossy(&taken.stderr).contains("taken"),
        "{taken:?}"
    );
    let ok = enrol(&hub, &cfg2, &fresh, "cam2");
    assert!(ok.status.success(), "{ok:?}");

    let claims = hub.get("/v1/claims");
    let states: Vec<(String, String)> = claims["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .map(|c| {
            (
                c["claim"]["id"].as_str().unwrap_or("").to_string(),
                c["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&(id, "used by lab-cam1".into())),
        "{states:?}"
    );
    assert!(states.contains(&(rid, "revoked".into())), "{states:?}");
    assert_eq!(hub.counter("tandem_hub_enrolments_total"), 2.0);
    assert_eq!(hub.counter("tandem_hub_enrolments_refused_total"), 4.0);
    let issued = hub.get("/v1/enrolments");
    let first = &issued["enrolments"][0];
    assert_eq!(first["device"], "lab-cam1");
    assert_eq!(first["labels"]["site"], "lab");
}

#[test]
fn renewal_under_load_fails_no_request() {
    let (dir, hub, cfg) = enrolled("enrol-renew", 6);
    let (agent, base) = start_agent(&cfg);
    wait_offloading(&base, "before renewal", || agent.log_text());

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let body = Arc::new(sample());
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, answers, body, base) =
                (stop.clone(), answers.clone(), body.clone(), base.clone());
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("client");
                while !stop.load(Relaxed) {
                    let a = classify(&c, &base, &body);
                    answers.lock().expect("answers").push(a);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();
    // Certificates of 6 s renew about every 4.5 s: wait for three renewals.
    let start = Instant::now();
    let renewals = || {
        hub.get("/v1/enrolments")["enrolments"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|e| e["how"] == "renewal").count())
    };
    while renewals() < 3 {
        assert!(
            start.elapsed() < PATIENCE,
            "no three renewals:\n{}\nhub:\n{}",
            agent.log_text(),
            hub.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
    let answers = answers.lock().expect("answers");
    let failed: Vec<_> = answers.iter().filter(|(s, _, d)| *s != 200 || *d).collect();
    println!(
        "{} requests across 3 renewals, {} failed or degraded",
        answers.len(),
        failed.len()
    );
    assert!(answers.len() > 20, "load ran: {}", answers.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed or degraded: {:?}\n{}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)],
        agent.log_text()
    );
    assert!(hub.counter("tandem_hub_renewals_total") >= 3.0);
    assert_eq!(hub.counter("tandem_hub_renewals_refused_total"), 0.0);
    // Revoking the replaced certificates (their connections closed) failed no request.
    assert!(
        hub.counter("tandem_hub_certificates_superseded_total") >= 2.0,
        "{}",
        hub.proc.log_text()
    );
    let log = agent.log_text();
    assert!(
        log.matches("hub link moved to the renewed certificate")
            .count()
            >= 3,
        "{log}"
    );
    assert!(
        log.matches("MQTT link reconnecting with the renewed certificate")
            .count()
            >= 3,
        "{log}"
    );
    // The MQTT link is up again on the latest certificate (connected after the last switch).
    let last_switch = log.rfind("MQTT link reconnecting").expect("switch");
    let reconnected = || agent.log_text()[last_switch..].contains("connected to the MQTT broker");
    let start = Instant::now();
    while !reconnected() {
        assert!(
            start.elapsed() < PATIENCE,
            "MQTT did not reconnect:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The ledger has the enrolment and every renewal, each with its own serial.
    let ledger: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pki/pki.json")).expect("ledger"))
            .expect("json");
    let serials = ledger["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| d["name"] == "lab-cam1")
        .count();
    assert!(serials >= 4, "{ledger}");
}

#[test]
fn a_lapsed_certificate_recovers_through_a_new_claim() {
    let (_dir, hub, cfg) = enrolled("enrol-lapse", 4);
    // Offline past the certificate's end.
    std::thread::sleep(Duration::from_secs(5));
    let (agent, base) = start_agent(&cfg);
    let start = Instant::now();
    while !agent.log_text().contains("certificate renewal impossible") {
        assert!(
            start.elapsed() < PATIENCE,
            "no renewal refusal:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = reqwest::blocking::Client::new();
    let (status, _, degraded) = classify(&c, &base, &sample());
    assert_eq!(
        (status, degraded),
        (200, true),
        "answered locally, degraded"
    );
    assert!(agent.log_text().contains("expired"), "{}", agent.log_text());
    drop(agent);
    // A new claim, in the token file the config names: at its next start the agent enrols
    // again (its certificate expired) under the same name, free again, then offloads.
    let (again, _) = hub.claim("1h");
    let dev = cfg.parent().expect("agent dir");
    std::fs::write(dev.join("claim.token"), format!("{again}\n")).expect("token file");
    let (agent, base) = start_agent(&cfg);
    wait_offloading(&base, "after re-enrolment", || agent.log_text());
    assert!(
        agent.log_text().contains("no valid certificate: enrolling"),
        "{}",
        agent.log_text()
    );
}
