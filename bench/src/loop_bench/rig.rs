//! The system under test, on loopback: the release `tandem-hub run` (its supervised mosquitto,
//! QUIC ingress, feedback store and teacher, calibration, training, registry and staged
//! rollout) and `devices` release `tandem-agent run` daemons, each with its own certificate,
//! writable copy of the shipped model, queue and state, offloading to the hub over QUIC and
//! taking orders over MQTT. Both are reached through their HTTP APIs (the hub as its operator).

use crate::procs::{self, Server};
use anyhow::{Context as _, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How the agents sample feedback and the hub weighs it.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// `feedback.shadow_rate` of the agents (`calibrate.shadow_weight` = its inverse).
    pub shadow_rate: f64,
    /// `train.whole_net` of the hub.
    pub whole_net: bool,
}

/// The hub and the devices.
pub struct Rig {
    /// The model the loop runs on (the only one the hub and the agents enable).
    pub model: &'static str,
    /// The hub.
    pub hub: Server,
    /// The agents, one per device.
    pub agents: Vec<Server>,
    /// The hub's operator token.
    token: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// Scratch folder (removed on drop).
    pub dir: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.agents.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The agents' longest wait for the hub's answer (`hub.timeout_ms`, default 2000; below their
/// 30 s request timeout): a degraded answer stops the benchmark, and the text stream's cloud
/// model (MPNet on the CPU, beside the teacher's labelling) can take longer than 2 s on a
/// loaded machine. A longer wait changes no figure: every answer counted is the hub's.
const HUB_TIMEOUT_MS: u64 = 20_000;

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn exe(name: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(p.is_file(), "{} missing: run `make release`", p.display());
    Ok(p)
}

impl Rig {
    /// Starts the hub, then `devices` agents (`loop-00`, `loop-01`, ...), serving `model` of
    /// the models folder `models` (the hub from it, each agent from its own copy).
    pub fn start(
        models: &Path,
        model: &'static str,
        devices: usize,
        s: Sampling,
    ) -> anyhow::Result<Rig> {
        let dir = std::env::temp_dir().join(format!("tandem-bench-loop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let pki_dir = dir.join("pki");
        let pki = tandem_hub::pki::Pki::init(&pki_dir)?;
        let (http, quic, mqtt) = (procs::free_port()?, free_udp_port()?, procs::free_port()?);
        let hub_dir = dir.join("hub");
        std::fs::create_dir_all(&hub_dir)?;
        let cfg = hub_dir.join("hub.toml");
        std::fs::write(
            &cfg,
            format!(
                "log_filter = \"warn,tandem_hub::train=info,tandem_hub::calibrate=info\"\n\
                 pki_dir = \"{pki}\"\n\
                 [http]\nlisten = \"127.0.0.1:{http}\"\n[quic]\nlisten = \"127.0.0.1:{quic}\"\n\
                 [mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\nrestart_backoff_ms = 200\n\
                 [models]\ndir = \"{models}\"\nenabled = [\"{model}\"]\n\
                 [feedback]\nsplit_train_pct = 50\nsplit_calibration_pct = 25\n\
                 [calibrate]\nshadow_weight = {w}\nhard_weight = 1.0\npush_every_ms = 300\n\
                 resend_after_ms = 3000\n\
                 [train]\ncanary_pct = 50\nstages_pct = [100]\nwhole_net = {whole_net}\n",
                pki = pki_dir.display(),
                models = models.display(),
                w = 1.0 / s.shadow_rate,
                whole_net = s.whole_net,
            ),
        )?;
        let mut cmd = Command::new(exe("tandem-hub")?);
        cmd.args(["run", "--config"]).arg(&cfg);
        let hub = procs::spawn_http(
            cmd,
            format!("127.0.0.1:{http}"),
            "/v2/health/ready",
            Duration::from_secs(120),
            &hub_dir.join("hub.log"),
        )?;
        let token = std::fs::read_to_string(pki_dir.join("operator.token"))?
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .context("no operator token")?
            .to_string();
        let mut rig = Rig {
            model,
            hub,
            agents: Vec::new(),
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
            dir: dir.clone(),
        };
        for i in 0..devices {
            let name = format!("loop-{i:02}");
            pki.add_device(&name, 30)?;
            let (cert, key) = pki.device_files(&name);
            let home = dir.join(&name);
            crate::swap::ship(models, model, &home.join("models"))?;
            let port = procs::free_port()?;
            let cfg = home.join("agent.toml");
            std::fs::write(
                &cfg,
                format!(
                    "[server]\nlisten = \"127.0.0.1:{port}\"\n\
                     [models]\ndir = \"models\"\nenabled = [\"{model}\"]\n\
                     trusted_key = \"{signing}\"\nwatch_window_s = 5\n\
                     [log]\nfilter = \"warn\"\n\
                     [hub]\naddress = \"127.0.0.1:{quic}\"\nca = \"{ca}\"\ncert = \"{cert}\"\n\
                     key = \"{key}\"\ntimeout_ms = {HUB_TIMEOUT_MS}\n\
                     [mqtt]\nurl = \"mqtts://127.0.0.1:{mqtt}\"\ntelemetry_interval_ms = 500\n\
                     [feedback]\nsample_rate = 1.0\nmax_per_minute = 0\nmax_per_hour = 0\n\
                     max_per_day = 0\nmax_pending = 4096\nshadow_enabled = true\n\
                     shadow_rate = {rate}\nshadow_max_per_minute = 0\n\
                     shadow_max_bytes_per_hour = 0\n",
                    signing = pki_dir.join("signing.pub").display(),
                    ca = pki_dir.join("ca.pem").display(),
                    cert = cert.display(),
                    key = key.display(),
                    rate = s.shadow_rate,
                ),
            )?;
            let mut cmd = Command::new(exe("tandem-agent")?);
            cmd.args(["run", "--config"]).arg(&cfg);
            rig.agents.push(procs::spawn_http(
                cmd,
                format!("127.0.0.1:{port}"),
                "/v2/health/ready",
                Duration::from_secs(120),
                &home.join("agent.log"),
            )?);
        }
        Ok(rig)
    }

    /// `GET path` on the hub as its operator, as JSON (an error unless 2xx).
    pub async fn hub_get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("http://{}{path}", self.hub.addr))
            .bearer_auth(&self.token)
            .send()
            .await?;
        json_of(r, path).await
    }

    /// Every example of the model the hub holds (`GET /v1/feedback/examples`, page by page).
    pub async fn examples(&self) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let mut page = self
                .hub_get(&format!(
                    "/v1/feedback/examples?model={}&limit=1000{after}",
                    self.model
                ))
                .await?;
            if let Some(items) = page["items"].as_array_mut() {
                out.append(items);
            }
            match page["cursor"].as_str() {
                Some(c) if page["more"] == true => after = format!("&after={c}"),
                _ => return Ok(out),
            }
        }
    }

    /// `POST path` on the hub as its operator with a JSON body: (status, JSON).
    pub async fn hub_post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("http://{}{path}", self.hub.addr))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// One sample of a daemon's `/metrics`: the sum of the series named `name` whose labels
    /// contain every one of `labels`.
    pub async fn metric(&self, addr: &str, name: &str, labels: &[&str]) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                let series = key.split('{').next()?;
                (series == name && labels.iter().all(|x| key.contains(x)))
                    .then(|| value.parse::<f64>().ok())?
            })
            .sum())
    }

    /// The agents' log lines holding any of `words` (the last 10 of each), for an error message.
    pub fn agent_log_lines(&self, words: &[&str]) -> Vec<String> {
        (0..self.agents.len())
            .flat_map(|i| {
                let name = format!("loop-{i:02}");
                let path = self.dir.join(&name).join("agent.log");
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let mut hits: Vec<String> = text
                    .lines()
                    .filter(|l| words.iter().any(|w| l.contains(w)))
                    .map(|l| format!("{name}: {l}"))
                    .collect();
                hits.drain(..hits.len().saturating_sub(10));
                hits
            })
            .collect()
    }

    /// The hub's log, for an error message.
    pub fn hub_log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("hub/hub.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

async fn json_of(r: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = r.status();
    let text = r.text().await?;
    if !status.is_success() {
        bail!("{what}: {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: {text}"))
}

/// Polls `check` every 300 ms until it gives `Some`, for at most `patience`.
pub async fn until<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() > patience {
            bail!("{what}: not within {} s", patience.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
