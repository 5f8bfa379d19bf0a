//! A hub and agents on a [`Rig`]: the built `tandem-hub` (with the mosquitto it supervises)
//! and `tandem-agent` binaries, each started in a host of the rig with a config that reaches
//! the hub by its DNS name (`hub.tandem.test`), through the rig's bridge, never over loopback.
//!
//! - [`Fleet::new`] makes the PKI with `tandem-hub init --name` (the hub's certificate carries
//!   its DNS name) in a scratch folder; [`Fleet::add_device`] issues device certificates.
//! - [`Fleet::start_hub`] and [`Fleet::start_agent`] write a config (defaults below, plus the
//!   caller's lines per TOML section) and wait for the daemon's ready line.
//! - [`Fleet::get`] and friends reach a daemon's HTTP API from inside its host;
//!   [`Fleet::hub_cli`] runs the hub's CLI there as its operator.

use crate::netns::Rig;
use crate::process::Logged;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The hub's QUIC port.
pub const QUIC_PORT: u16 = 4433;
/// The hub's MQTT (TLS) port.
pub const MQTT_PORT: u16 = 8883;
/// The model every daemon serves.
pub const MODEL: &str = "vision-fashion";
/// Longest wait for a daemon to be ready.
pub const START_PATIENCE: Duration = Duration::from_secs(120);

/// Config lines per TOML section (`""` is the top level), added to a daemon's defaults; a key
/// given here replaces the default of the same section and key.
pub type Extra<'a> = &'a [(&'a str, &'a str)];

/// A daemon running in a host of the rig.
#[derive(Debug)]
pub struct Daemon {
    /// The process (`ip netns exec` replaced itself with the daemon: same pid) and its log.
    pub proc: Logged,
    /// The rig host it runs in.
    pub host: String,
    /// `http://IP:PORT` of its HTTP API, reachable from inside its host.
    pub http: String,
}

impl Daemon {
    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }

    /// SIGTERM, then waits up to `patience`; panics with its log if it did not exit cleanly.
    pub fn stop(&mut self, patience: Duration) {
        match self.proc.terminate(patience) {
            Some(s) if s.success() => {}
            other => panic!(
                "{} did not stop cleanly ({other:?}):\n{}",
                self.host,
                self.log_text()
            ),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.child.try_wait() {
            let _ = self.proc.child.kill();
            let _ = self.proc.child.wait();
        }
    }
}

/// A rig with a PKI for a hub and its devices.
#[derive(Debug)]
pub struct Fleet {
    /// The hosts.
    pub rig: Rig,
    /// Scratch folder: `pki/`, `hub/`, one folder per agent (removed with the fleet).
    pub dir: crate::Scratch,
    /// The rig host the hub runs in.
    pub hub_host: String,
}

fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TOML document from default lines per section with `extra` merged over them.
fn toml(defaults: Extra<'_>, extra: Extra<'_>) -> String {
    let mut sections: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for (section, line) in defaults.iter().chain(extra) {
        let key = line.split('=').next().unwrap_or("").trim().to_string();
        let lines = sections.entry(section).or_default();
        lines.retain(|(k, _)| *k != key);
        lines.push((key, line.to_string()));
    }
    let mut out = String::new();
    for (section, lines) in &sections {
        if !section.is_empty() {
            out.push_str(&format!("[{section}]\n"));
        }
        for (_, l) in lines {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

impl Fleet {
    /// A rig with the hub in host `hub_host` and the other hosts, and a PKI whose hub
    /// certificate names the hub `hub_host.tandem.test`.
    pub fn new(name: &str, hub_host: &str, others: &[&str]) -> Fleet {
        let mut hosts = vec![hub_host];
        hosts.extend_from_slice(others);
        let rig = Rig::new(&hosts);
        let dir = crate::scratch(name);
        run_ok(
            std::process::Command::new(crate::binary("tandem-hub"))
                .args(["init", "--dir"])
                .arg(dir.join("pki"))
                .args(["--name", &rig.dns_name(hub_host)]),
        );
        Fleet {
            rig,
            dir,
            hub_host: hub_host.to_string(),
        }
    }

    /// The PKI folder.
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// `tandem-hub device add NAME` (certificate and key under `pki/devices/`).
    pub fn add_device(&self, name: &str) {
        run_ok(
            std::process::Command::new(crate::binary("tandem-hub"))
                .args(["device", "add", name, "--dir"])
                .arg(self.pki()),
        );
    }

    /// Publishes `payload` on `topic` (QoS 1) to the hub's broker as `device`, with its own
    /// certificate (`mosquitto_pub` from inside host `host`): a device that says what it is
    /// told to, for the hub's side of a test.
    pub fn publish_as(&self, host: &str, device: &str, topic: &str, payload: &str) {
        let pki = self.pki();
        let mut publish = self.rig.command(host, "mosquitto_pub");
        publish
            .args(["-h", &self.hub_name(), "-p", &MQTT_PORT.to_string()])
            .args(["-i", device, "--cafile"])
            .arg(pki.join("ca.pem"))
            .arg("--cert")
            .arg(pki.join(format!("devices/{device}.pem")))
            .arg("--key")
            .arg(pki.join(format!("devices/{device}.key")))
            .args(["-q", "1", "-t", topic, "-m", payload]);
        let out = publish
            .output()
            .expect("mosquitto_pub (make setup installs it)");
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
    }

    /// `tandem-hub device revoke NAME` (rewrites `crl.pem`).
    pub fn revoke_device(&self, name: &str) {
        run_ok(
            std::process::Command::new(crate::binary("tandem-hub"))
                .args(["device", "revoke", name, "--dir"])
                .arg(self.pki()),
        );
    }

    /// `tandem-hub ARGS` in the hub's host as its operator (`TANDEM_HUB_TOKEN_FILE`); its
    /// stdout (panics with its output if it fails).
    pub fn hub_cli(&self, args: &[&str]) -> String {
        run_ok(
            self.rig
                .command(&self.hub_host, crate::binary("tandem-hub"))
                .args(args)
                .env("TANDEM_HUB_TOKEN_FILE", self.pki().join("operator.token")),
        )
    }

    /// A model folder of its own for an agent that installs versions (`dir/NAME/`, with
    /// [`MODEL`]'s manifest, edge variant and labels copied in): its `[models] dir`.
    pub fn models_copy(&self, name: &str) -> PathBuf {
        let models = self.dir.join(name);
        let from = crate::models_dir().join(MODEL);
        std::fs::create_dir_all(models.join(MODEL)).expect("models dir");
        for f in ["manifest.json", "edge.onnx", "labels.txt"] {
            std::fs::copy(from.join(f), models.join(MODEL).join(f)).expect("copy the model");
        }
        models
    }

    /// The hub's DNS name.
    pub fn hub_name(&self) -> String {
        self.rig.dns_name(&self.hub_host)
    }

    /// Starts `tandem-hub run` in the hub's host: QUIC on `0.0.0.0:4433`, its mosquitto on
    /// `0.0.0.0:8883`, the HTTP API on loopback (inside the hub's host), [`MODEL`] on the
    /// cloud variant; `extra` adds or replaces config lines.
    pub fn start_hub(&self, extra: Extra<'_>) -> Daemon {
        let dir = self.dir.join("hub");
        std::fs::create_dir_all(&dir).expect("hub dir");
        let pki = format!("pki_dir = \"{}\"", self.pki().display());
        let models = format!("dir = \"{}\"", crate::models_dir().display());
        let enabled = format!("enabled = [\"{MODEL}\"]");
        let quic = format!("listen = \"0.0.0.0:{QUIC_PORT}\"");
        let mqtt = format!("listen = \"0.0.0.0:{MQTT_PORT}\"");
        let defaults: Extra<'_> = &[
            ("", "log_filter = \"info,ort=warn\""),
            ("", &pki),
            ("", "feedback_dir = \"feedback\""),
            ("", "registry_dir = \"registry\""),
            ("http", "listen = \"127.0.0.1:0\""),
            ("quic", &quic),
            ("runtime", "intra_op_threads = 1"),
            ("engine", "max_batch = 8"),
            ("engine", "max_batch_delay_us = 1000"),
            ("models", &models),
            ("models", &enabled),
            ("mqtt", &mqtt),
            ("mqtt", "runtime_dir = \"run/mqtt\""),
            ("mqtt", "restart_backoff_ms = 200"),
            ("fleet", "dir = \"state\""),
        ];
        let path = dir.join("hub.toml");
        std::fs::write(&path, toml(defaults, extra)).expect("write hub config");
        let mut cmd = self
            .rig
            .command(&self.hub_host, crate::binary("tandem-hub"));
        cmd.args(["run", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG");
        let (proc, http) = Logged::spawn(&mut cmd, START_PATIENCE, |line| {
            line.contains("tandem-hub serving")
                .then(|| log_field(line, "http"))
                .flatten()
                .map(|a| format!("http://{a}"))
        });
        match http {
            Some(http) => Daemon {
                proc,
                host: self.hub_host.clone(),
                http,
            },
            None => panic!("the hub did not start:\n{}", proc.log_text()),
        }
    }

    /// Starts `tandem-agent run` in host `host` as device `device` (its certificate from
    /// [`Fleet::add_device`]): offloading every request of [`MODEL`] (threshold 2.0) to
    /// `hub.tandem.test:4433`, MQTT to `mqtts://hub.tandem.test:8883`, a queue in its folder,
    /// every answer a hard example; `extra` adds or replaces config lines.
    pub fn start_agent(&self, host: &str, device: &str, extra: Extra<'_>) -> Daemon {
        let dir = self.dir.join(format!("agent-{host}"));
        std::fs::create_dir_all(&dir).expect("agent dir");
        let pki = self.pki();
        let file = |p: &Path| format!("\"{}\"", p.display());
        let models = format!("dir = \"{}\"", crate::models_dir().display());
        let enabled = format!("enabled = [\"{MODEL}\"]");
        let address = format!("address = \"{}:{QUIC_PORT}\"", self.hub_name());
        let ca = format!("ca = {}", file(&pki.join("ca.pem")));
        let cert = format!(
            "cert = {}",
            file(&pki.join(format!("devices/{device}.pem")))
        );
        let key = format!("key = {}", file(&pki.join(format!("devices/{device}.key"))));
        let url = format!("url = \"mqtts://{}:{MQTT_PORT}\"", self.hub_name());
        let queue = format!("dir = {}", file(&dir.join("queue")));
        let policy = format!("policy.models.{MODEL}");
        let defaults: Extra<'_> = &[
            ("server", "listen = \"127.0.0.1:0\""),
            ("models", &models),
            ("models", &enabled),
            ("models", "variant = \"edge\""),
            ("runtime", "intra_op_threads = 1"),
            ("log", "filter = \"info,ort=warn\""),
            ("hub", &address),
            ("hub", &ca),
            ("hub", &cert),
            ("hub", &key),
            ("hub", "timeout_ms = 1000"),
            ("hub", "keep_alive_ms = 500"),
            ("hub", "idle_timeout_ms = 2000"),
            (&policy, "threshold = 2.0"),
            ("mqtt", &url),
            ("mqtt", "telemetry_interval_ms = 300"),
            ("mqtt", "events_sample_rate = 0.0"),
            ("mqtt", "keep_alive_ms = 2000"),
            ("queue", &queue),
            ("feedback", "sample_rate = 1.0"),
            ("feedback", "max_per_minute = 0"),
            ("feedback", "max_per_hour = 0"),
            ("feedback", "max_per_day = 0"),
            ("feedback", "max_pending = 4096"),
        ];
        let path = dir.join("agent.toml");
        std::fs::write(&path, toml(defaults, extra)).expect("write agent config");
        let mut cmd = self.rig.command(host, crate::binary("tandem-agent"));
        cmd.args(["run", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG");
        let (proc, addr) =
            Logged::spawn(&mut cmd, START_PATIENCE, |line| log_field(line, "listen"));
        match addr {
            Some(a) => Daemon {
                proc,
                host: host.to_string(),
                http: format!("http://{a}"),
            },
            None => panic!("the agent in {host} did not start:\n{}", proc.log_text()),
        }
    }

    /// `GET path` on a daemon's API, from inside its host (on the hub as its operator):
    /// `(status, body)`, or why not.
    pub async fn get(&self, d: &Daemon, path: &str) -> Result<(u16, Vec<u8>), String> {
        self.rig
            .http_as(
                &d.host,
                "GET",
                &format!("{}{path}", d.http),
                None,
                self.as_operator(d),
            )
            .await
    }

    /// The headers of an operator's JSON call when `d` is the hub (its operator token, written
    /// at `tandem-hub init`); none for an agent.
    fn as_operator(&self, d: &Daemon) -> Vec<(&'static str, String)> {
        if d.host != self.hub_host {
            return Vec::new();
        }
        let token = crate::http::operator_token(&self.pki());
        vec![
            ("Authorization", format!("Bearer {token}")),
            ("Content-Type", "application/json".into()),
        ]
    }

    /// `GET path` as JSON when it answers 200; `None` otherwise.
    pub async fn get_json(&self, d: &Daemon, path: &str) -> Option<Value> {
        match self.get(d, path).await {
            Ok((200, body)) => serde_json::from_slice(&body).ok(),
            _ => None,
        }
    }

    /// A daemon's `/metrics`, parsed (empty when it does not answer).
    pub async fn metrics(&self, d: &Daemon) -> crate::metrics::Samples {
        match self.get(d, "/metrics").await {
            Ok((200, body)) => crate::metrics::parse(&String::from_utf8_lossy(&body)),
            _ => Default::default(),
        }
    }

    /// `POST path` with `body` on a daemon's API, from inside its host (on the hub as its
    /// operator, a JSON body).
    pub async fn post(
        &self,
        d: &Daemon,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{}{path}", d.http);
        self.rig
            .http_as(&d.host, "POST", &url, Some(body), self.as_operator(d))
            .await
    }
}

/// Field `key` of a log line: `key=value` of a text line, or the key of a JSON line
/// (`[log] format = "json"`).
pub fn log_field(line: &str, key: &str) -> Option<String> {
    if line.starts_with('{') {
        let v: Value = serde_json::from_str(line).ok()?;
        return v.get(key)?.as_str().map(str::to_string);
    }
    let i = line.find(&format!("{key}="))?;
    line[i + key.len() + 1..]
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// The sample images of [`MODEL`] (PNG bytes), in name order.
pub fn samples() -> Vec<Vec<u8>> {
    let dir = crate::models_dir().join(MODEL).join("samples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("sample"))
        .collect()
}
