//! (c) The hub's OIP v2 REST endpoint vs the Triton peer on the same model and load.
//!
//! Both serve `vision-fashion`'s cloud ONNX with one worker / instance, the same intra-op
//! threads, the same largest batch and the same batching delay; Triton through its Python
//! backend running onnxruntime with dynamic batching (`scripts/peers/triton.sh`, which installs
//! its own venv on first use). Both get the same OIP v2 JSON body (an FP32 1x1x28x28 tensor, a
//! pre-processed Fashion-MNIST test image) from `concurrency` closed-loop HTTP/1.1 keep-alive
//! connections driven by a minimal client ([`super::http1`]) on one current-thread runtime;
//! servers alternate in rounds.
//!
//! The hub is the release `tandem-hub run` process with HTTP on loopback (no authentication
//! there). A hub without the REST endpoint (404), or a Triton that does not install or start,
//! gives a `skipped: reason` row instead of numbers.

use super::certs::BenchPki;
use super::http1::{self, Conn};
use crate::procs::{self, Server};
use crate::stats::{Stats, summarise};
use anyhow::Context as _;
use bytes::Bytes;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODEL: &str = "vision-fashion";

/// One server's result, or why it was not measured.
#[derive(Debug, Clone)]
pub struct Row {
    /// `tandem-hub` or `triton`.
    pub system: &'static str,
    /// Measured, or the reason it was skipped.
    pub result: Result<Stats, String>,
    /// Requests per model run over the measured windows, from the server's own counters.
    pub mean_batch: Option<f64>,
    /// CPU time the server (with its child processes) used per answered request, in
    /// microseconds: less sensitive to a busy machine than throughput.
    pub cpu_us_per_req: Option<f64>,
}

/// What part (c) measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The hub, then Triton.
    pub rows: Vec<Row>,
    /// The settings both ran with.
    pub notes: Vec<String>,
}

impl Outcome {
    /// Hub requests/s over Triton's, when both were measured.
    pub fn ratio(&self) -> Option<f64> {
        match (self.rows.first(), self.rows.get(1)) {
            (Some(Row { result: Ok(h), .. }), Some(Row { result: Ok(t), .. })) => {
                Some(h.rps / t.rps)
            }
            _ => None,
        }
    }
}

/// The OIP v2 JSON body: the first test image, pre-processed as the cloud variant expects.
fn body(repo: &Path) -> anyhow::Result<Bytes> {
    let dir = repo.join("models").join(MODEL);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json"))?)?;
    let pre = &manifest["variants"]["cloud"]["preprocess"];
    let (scale, mean, std) = (
        pre["scale"].as_f64().unwrap_or(1.0) as f32,
        pre["mean"][0].as_f64().unwrap_or(0.0) as f32,
        pre["std"][0].as_f64().unwrap_or(1.0) as f32,
    );
    let images = crate::cascade::gunzip(&dir.join("data/t10k-images-idx3-ubyte.gz"))?;
    let px = images.get(16..16 + 784).context("short image file")?;
    let data: Vec<f32> = px
        .iter()
        .map(|p| (f32::from(*p) * scale - mean) / std)
        .collect();
    let input = manifest["variants"]["cloud"]["inputs"][0]["name"]
        .as_str()
        .unwrap_or("input");
    Ok(Bytes::from(serde_json::to_vec(&json!({
        "inputs": [{"name": input, "shape": [1, 1, 28, 28], "datatype": "FP32", "data": data}]
    }))?))
}

/// Configs, logs and Triton's model repository for this run; removed at the end.
fn logs_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tandem-bench-rest-{}", std::process::id()))
}

fn logs_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = logs_path();
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// `tandem-hub run` on loopback with the bench's engine settings.
fn hub(repo: &Path, pki: &BenchPki, a: &super::Args) -> anyhow::Result<Server> {
    let exe = std::env::current_exe()?.with_file_name("tandem-hub");
    anyhow::ensure!(
        exe.is_file(),
        "{} missing: run `make release`",
        exe.display()
    );
    let port = procs::free_port()?;
    let dir = logs_dir()?;
    let cfg = dir.join("hub.toml");
    std::fs::write(
        &cfg,
        format!(
            "log_filter = \"warn\"\npki_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [quic]\nlisten = \"127.0.0.1:0\"\n[runtime]\nintra_op_threads = {}\n\
             [engine]\nworkers = {}\nmax_batch = {}\nmax_batch_delay_us = {}\nspin_us = {}\n\
             [models]\ndir = \"{}\"\nenabled = [\"{MODEL}\"]\n",
            pki.dir().display(),
            a.rest_layout.threads,
            a.rest_layout.workers,
            a.max_batch,
            a.rest_batch_delay_us,
            a.spin_us,
            repo.join("models").display()
        ),
    )?;
    let mut cmd = Command::new(&exe);
    cmd.args(["run", "--config"]).arg(&cfg);
    procs::spawn_http(
        cmd,
        format!("127.0.0.1:{port}"),
        "/v2/health/ready",
        Duration::from_secs(60),
        &dir.join("hub.log"),
    )
}

/// The Triton peer (installs its venv on first use: minutes).
fn triton(repo: &Path, a: &super::Args) -> anyhow::Result<Server> {
    let script = repo.join("scripts/peers/triton.sh");
    let st = Command::new(&script)
        .arg("--install-only")
        .status()
        .with_context(|| format!("run {}", script.display()))?;
    anyhow::ensure!(st.success(), "{} --install-only: {st}", script.display());
    let port = procs::free_port()?;
    let dir = logs_dir()?;
    let mut cmd = Command::new(&script);
    cmd.arg(MODEL)
        .arg(repo.join("models").join(MODEL).join("cloud.onnx"))
        .arg(port.to_string())
        .arg(dir.join("triton-repo"))
        .env("TRITON_MAX_BATCH", a.max_batch.to_string())
        .env("TRITON_QUEUE_DELAY_US", a.rest_batch_delay_us.to_string())
        .env("TRITON_INSTANCES", a.rest_layout.workers.to_string())
        .env("TRITON_THREADS", a.rest_layout.threads.to_string());
    procs::spawn_http(
        cmd,
        format!("127.0.0.1:{port}"),
        "/v2/health/ready",
        Duration::from_secs(120),
        &dir.join("triton.log"),
    )
}

/// Requests answered and model runs so far, from the server's counters: the hub's
/// `tandem_batch_size` histogram (`/metrics`), Triton's model statistics.
async fn batch_counters(client: &reqwest::Client, system: &str, addr: &str) -> Option<(f64, f64)> {
    if system == "triton" {
        let v: serde_json::Value = client
            .get(format!("http://{addr}/v2/models/{MODEL}/stats"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let s = &v["model_stats"][0];
        Some((
            s["inference_count"].as_f64()?,
            s["execution_count"].as_f64()?,
        ))
    } else {
        let text = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let value = |name: &str| {
            let key = format!("{name}{{model=\"{MODEL}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&key))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        Some((
            value("tandem_batch_size_sum")?,
            value("tandem_batch_size_count")?,
        ))
    }
}

/// Whether an answer is a 200 with outputs.
fn check((status, body): (u16, Vec<u8>)) -> Result<(), String> {
    if status == 200 && body.windows(9).any(|w| w == b"\"outputs\"") {
        Ok(())
    } else {
        Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    }
}

/// One request on a fresh connection.
async fn probe(addr: &str, request: &[u8]) -> Result<(), String> {
    let mut c = Conn::connect(addr).await.map_err(|e| e.to_string())?;
    check(c.call(request).await.map_err(|e| e.to_string())?)
}

/// `c` closed-loop clients, a keep-alive connection each, for `window`.
async fn window(
    addr: &str,
    request: &Arc<Vec<u8>>,
    c: usize,
    window: Duration,
) -> (Vec<Duration>, usize) {
    let end = Instant::now() + window;
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (addr, request) = (addr.to_string(), request.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0);
                let Ok(mut conn) = Conn::connect(&addr).await else {
                    return (lat, 1);
                };
                while Instant::now() < end {
                    let t = Instant::now();
                    match conn
                        .call(&request)
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(check)
                    {
                        Ok(()) => lat.push(t.elapsed()),
                        Err(_) => {
                            errors += 1;
                            match Conn::connect(&addr).await {
                                Ok(c) => conn = c,
                                Err(_) => break,
                            }
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            errors += e;
        }
    }
    (lat, errors)
}

/// Runs part (c).
pub fn measure(repo: &Path, a: &super::Args) -> Outcome {
    let notes = vec![format!(
        "both: {} worker/instance x {} intra-op threads, max batch {}, batching delay {} us; \
         OIP v2 JSON FP32 [1,1,28,28]; {} HTTP/1.1 keep-alive connections (minimal client, one current-thread runtime)",
        a.rest_layout.workers,
        a.rest_layout.threads,
        a.max_batch,
        a.rest_batch_delay_us,
        a.concurrency
    )];
    let skipped = |reason: String| Outcome {
        rows: vec![
            Row {
                system: "tandem-hub",
                result: Err(reason.clone()),
                mean_batch: None,
                cpu_us_per_req: None,
            },
            Row {
                system: "triton",
                result: Err(reason),
                mean_batch: None,
                cpu_us_per_req: None,
            },
        ],
        notes: notes.clone(),
    };
    let (rt, body, pki) = match (|| {
        anyhow::Ok((
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            body(repo)?,
            BenchPki::new("rest", 0)?,
        ))
    })() {
        Ok(v) => v,
        Err(e) => return skipped(format!("{e:#}")),
    };
    let client = reqwest::Client::new();
    let path = format!("/v2/models/{MODEL}/infer");
    let request = |s: &Server| Arc::new(http1::post_request(&s.addr, &path, &body));
    eprintln!("== (c) REST: the hub and the Triton peer");
    // Each server: started, then probed with one request (a hub without REST answers 404).
    let mut servers: Vec<(&'static str, Result<Server, String>)> = vec![
        (
            "tandem-hub",
            hub(repo, &pki, a).map_err(|e| format!("{e:#}")),
        ),
        ("triton", triton(repo, a).map_err(|e| format!("{e:#}"))),
    ];
    for (name, s) in &mut servers {
        if let Ok(srv) = s
            && let Err(e) = rt.block_on(probe(&srv.addr, &request(srv)))
        {
            let reason = if e.starts_with("404") {
                format!("{name} has no OIP v2 REST endpoint (POST /v2/models/{MODEL}/infer: 404)")
            } else {
                format!("{name} did not answer the probe: {e}")
            };
            *s = Err(reason);
        }
    }
    for (name, s) in &servers {
        if let Err(e) = s {
            eprintln!("  {name}: skipped: {e}");
        }
    }
    let total = Duration::from_secs_f64(a.rest_seconds);
    let live: Vec<(usize, &str, String, Arc<Vec<u8>>)> = servers
        .iter()
        .enumerate()
        .filter_map(|(i, (name, s))| {
            s.as_ref()
                .ok()
                .map(|s| (i, *name, s.addr.clone(), request(s)))
        })
        .collect();
    let mut acc: Vec<(Vec<Duration>, usize)> = servers.iter().map(|_| (Vec::new(), 0)).collect();
    let mut batches: Vec<Option<f64>> = servers.iter().map(|_| None).collect();
    let mut cpu: Vec<f64> = servers.iter().map(|_| 0.0).collect();
    let cpu_now = |i: usize| servers[i].1.as_ref().map_or(0.0, Server::cpu_seconds);
    rt.block_on(async {
        for (_, _, addr, req) in &live {
            window(addr, req, a.concurrency, Duration::from_secs(1)).await;
        }
        let mut before = Vec::new();
        for (_, name, addr, _) in &live {
            before.push(batch_counters(&client, name, addr).await);
        }
        for _ in 0..a.rounds {
            for (i, _, addr, req) in &live {
                let c0 = cpu_now(*i);
                let (l, e) = window(addr, req, a.concurrency, total / a.rounds).await;
                cpu[*i] += cpu_now(*i) - c0;
                acc[*i].0.extend(l);
                acc[*i].1 += e;
            }
        }
        for ((i, name, addr, _), b) in live.iter().zip(before) {
            if let (Some((r0, n0)), Some((r1, n1))) = (b, batch_counters(&client, name, addr).await)
                && n1 > n0
            {
                batches[*i] = Some((r1 - r0) / (n1 - n0));
            }
        }
    });
    let rows = servers
        .into_iter()
        .zip(acc)
        .zip(batches.into_iter().zip(cpu))
        .map(|(((system, s), (lat, errors)), (mean_batch, cpu))| Row {
            system,
            cpu_us_per_req: (!lat.is_empty()).then(|| cpu * 1e6 / lat.len() as f64),
            result: s.map(|_| summarise(lat, total, errors)),
            mean_batch,
        })
        .collect();
    // The servers are stopped (dropped above); a failed start's log tail is in its reason.
    let _ = std::fs::remove_dir_all(logs_path());
    Outcome { rows, notes }
}
