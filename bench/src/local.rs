//! `tandem-bench local`: what the agent costs over raw ONNX Runtime, and over a FastAPI peer.
//!
//! For each model (edge variant), intra-op thread count and concurrency, one window each of:
//! - `floor`: raw `ort` `Session::run` in process on the prepared tensor (W sessions);
//! - `engine`: the agent's engine in process on the same prepared tensor (W workers);
//! - `engine-e2e`: the engine from the image file / text (decode or tokenise included);
//! - `http`: the agent daemon's OIP v2 endpoint, same tensor (JSON for small inputs, the binary
//!   tensor extension for images);
//! - `http-e2e`: the daemon's `/v1/classify` with the raw file / text;
//! - `fastapi`, `fastapi-e2e`: the FastAPI + Python onnxruntime peer, same encodings.
//!
//! W (sessions / workers) = cores / intra-op threads (at least 1) in every row of a thread count,
//! so floor, engine, daemon and peer get the same thread budget and no row oversubscribes.

use crate::procs::{self, Server};
use crate::stats::{Stats, summarise};
use bytes::Bytes;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_agent::config::Config;
use tandem_agent::inference::settings::EngineSettings;
use tandem_agent::inference::{Engine, Input};
use tandem_agent::runtime;
use tandem_agent::telemetry::Metrics;
use tandem_shared::oip::{InputTensor, TensorData};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds per measured window.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Models to measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "vision-imagenet,text-sentiment,vision-fashion"
    )]
    models: Vec<String>,
    /// Intra-op thread counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    concurrency: Vec<usize>,
}

/// Sessions (floor) and workers (engine, daemon) for an intra-op thread count.
fn workers(threads: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / threads.max(1)).max(1)
}
const WARMUP: Duration = Duration::from_millis(300);
/// Interleaved rounds per window.
const ROUNDS: u32 = 10;

/// What one model is fed in every row.
struct Workload {
    model: String,
    tensors: Arc<Vec<InputTensor>>,
    output: String,
    raw: Bytes,
    raw_input: Input,
    oip_body: Bytes,
    oip_header_len: Option<usize>,
}

fn workload(repo: &Path, model: &str) -> anyhow::Result<Workload> {
    let dir = repo.join("models").join(model);
    let refs: Value = serde_json::from_str(&std::fs::read_to_string(
        dir.join("testdata/reference.json"),
    )?)?;
    let case = refs["cases"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["variant"] == "edge"))
        .ok_or_else(|| anyhow::anyhow!("{model}: no edge reference case"))?;
    let mut tensors = Vec::new();
    for spec in case["inputs"].as_array().into_iter().flatten() {
        let raw = std::fs::read(dir.join(spec["file"].as_str().unwrap_or_default()))?;
        let shape: Vec<i64> = spec["shape"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .collect();
        let data = match spec["dtype"].as_str() {
            Some("int64") => TensorData::I64(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            _ => TensorData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
        };
        tensors.push(InputTensor {
            name: spec["name"].as_str().unwrap_or_default().to_string(),
            shape,
            data,
        });
    }
    let output = case["outputs"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let source = case["source"].as_str().unwrap_or_default();
    let (raw, raw_input) = if let Some(line) = source.strip_prefix("text:") {
        (
            Bytes::from(line.to_string()),
            Input::Texts(vec![line.to_string()]),
        )
    } else if source.ends_with(".jsonl") || case.get("text").is_some() {
        let text = case["text"].as_str().unwrap_or("a fine day").to_string();
        (Bytes::from(text.clone()), Input::Texts(vec![text]))
    } else {
        let b = Bytes::from(std::fs::read(dir.join(source))?);
        (b.clone(), Input::Images(vec![b]))
    };
    // Same encoding for the agent and the peer: JSON for small tensors, binary for images.
    let elements: usize = tensors.iter().map(|t| t.data.len()).sum();
    let (oip_body, oip_header_len) = if elements > 10_000 {
        let mut inputs = Vec::new();
        let mut bin = Vec::new();
        for t in &tensors {
            let TensorData::F32(d) = &t.data else {
                anyhow::bail!("binary path is for FP32")
            };
            inputs.push(json!({"name": t.name, "shape": t.shape, "datatype": "FP32", "parameters": {"binary_data_size": d.len() * 4}}));
            bin.extend(d.iter().flat_map(|x| x.to_le_bytes()));
        }
        let mut body = serde_json::to_vec(&json!({ "inputs": inputs }))?;
        let n = body.len();
        body.extend(bin);
        (Bytes::from(body), Some(n))
    } else {
        let inputs: Vec<Value> = tensors
            .iter()
            .map(|t| match &t.data {
                TensorData::F32(d) => {
                    json!({"name": t.name, "shape": t.shape, "datatype": "FP32", "data": d})
                }
                TensorData::I64(d) => {
                    json!({"name": t.name, "shape": t.shape, "datatype": "INT64", "data": d})
                }
                TensorData::Bytes(_) => json!({}),
            })
            .collect();
        (
            Bytes::from(serde_json::to_vec(&json!({ "inputs": inputs }))?),
            None,
        )
    };
    Ok(Workload {
        model: model.to_string(),
        tensors: Arc::new(tensors),
        output,
        raw,
        raw_input,
        oip_body,
        oip_header_len,
    })
}

/// Latencies of successful calls and the count of failed ones, for one window.
pub(crate) type Window = (Vec<Duration>, usize);

/// Calls `f` from `c` threads for `window`; `f` returns whether the call worked.
pub(crate) fn threads_window(
    c: usize,
    window: Duration,
    f: &(dyn Fn(usize) -> bool + Sync),
) -> Window {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..c)
            .map(|i| {
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut errors = 0;
                    let end = Instant::now() + window;
                    while Instant::now() < end {
                        let t = Instant::now();
                        if f(i) {
                            lat.push(t.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        let mut all = (Vec::new(), 0);
        for h in handles {
            let (l, e) = h.join().unwrap_or_default();
            all.0.extend(l);
            all.1 += e;
        }
        all
    })
}

/// POSTs `body` to `url` from `c` tasks on a single-threaded client runtime for `window`.
pub(crate) fn http_window(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    c: usize,
    window: Duration,
    url: &str,
    body: &Bytes,
    header_len: Option<usize>,
) -> Window {
    rt.block_on(async {
        let tasks: Vec<_> = (0..c)
            .map(|_| {
                let (client, body, url) = (client.clone(), body.clone(), url.to_string());
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut errors = 0;
                    let end = Instant::now() + window;
                    while Instant::now() < end {
                        let t = Instant::now();
                        let mut req = client.post(&url).body(body.clone());
                        if let Some(n) = header_len {
                            req = req.header("Inference-Header-Content-Length", n);
                        }
                        let ok = match req.send().await {
                            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                            Err(_) => false,
                        };
                        if ok {
                            lat.push(t.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        let mut all = (Vec::new(), 0);
        for t in tasks {
            if let Ok((l, e)) = t.await {
                all.0.extend(l);
                all.1 += e;
            }
        }
        all
    })
}

/// A named system under test: runs one window.
pub(crate) type System<'a> = (&'static str, Box<dyn Fn(Duration) -> Window + 'a>);

/// Measures every system in interleaved rounds (so drift in machine speed hits all alike):
/// a warm-up each, then `rounds` x (each system for window / rounds).
pub(crate) fn interleaved(systems: &[System<'_>], window: Duration, rounds: u32) -> Vec<Stats> {
    for (_, f) in systems {
        f(WARMUP);
    }
    let mut acc: Vec<Window> = systems.iter().map(|_| (Vec::new(), 0)).collect();
    for _ in 0..rounds {
        for ((_, f), a) in systems.iter().zip(acc.iter_mut()) {
            let (l, e) = f(window / rounds);
            a.0.extend(l);
            a.1 += e;
        }
    }
    acc.into_iter()
        .map(|(l, e)| summarise(l, window, e))
        .collect()
}

struct Floor {
    sessions: Vec<Mutex<Session>>,
}

impl Floor {
    fn new(cfg: &EngineSettings, path: &Path, threads: usize) -> anyhow::Result<Self> {
        let (_, env) = runtime::init(cfg)?;
        let sessions = (0..workers(threads))
            .map(|_| {
                Session::builder(&env)
                    .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
                    .and_then(|mut b| b.commit_from_file(path))
                    .map(Mutex::new)
                    .map_err(|e| anyhow::anyhow!("{e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { sessions })
    }

    fn call(&self, i: usize, w: &Workload) -> bool {
        let Ok(mut s) = self.sessions[i % self.sessions.len()].lock() else {
            return false;
        };
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        for t in w.tensors.iter() {
            let v: SessionInputValue<'_> = match &t.data {
                TensorData::F32(d) => {
                    match TensorRef::from_array_view((t.shape.clone(), d.as_slice())) {
                        Ok(v) => v.into(),
                        Err(_) => return false,
                    }
                }
                TensorData::I64(d) => {
                    match TensorRef::from_array_view((t.shape.clone(), d.as_slice())) {
                        Ok(v) => v.into(),
                        Err(_) => return false,
                    }
                }
                TensorData::Bytes(_) => return false,
            };
            values.push((Cow::Borrowed(t.name.as_str()), v));
        }
        match s.run(values) {
            Ok(out) => out
                .get(&w.output)
                .and_then(|v| v.try_extract_tensor::<f32>().ok())
                .is_some_and(|(_, d)| std::hint::black_box(d[0]).is_finite()),
            Err(_) => false,
        }
    }
}

struct Row {
    model: String,
    threads: usize,
    system: &'static str,
    c: usize,
    stats: Stats,
    floor_p50: f64,
}

/// Runs the benchmark and prints the table; the last line is `local-overhead-p50: X.XX`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let repo = procs::repo()?;
    let window = Duration::from_secs_f64(a.seconds);
    let mut rows: Vec<Row> = Vec::new();
    let mut rss: Vec<(String, usize, f64, f64)> = Vec::new();
    for model in &a.models {
        let w = workload(&repo, model)?;
        for &threads in &a.threads {
            eprintln!(
                "== {model}, {threads} intra-op thread(s), {} session(s)/worker(s)",
                workers(threads)
            );
            let mut cfg = Config {
                base_dir: repo.clone(),
                ..Default::default()
            };
            cfg.models.enabled = vec![model.clone()];
            cfg.runtime.intra_op_threads = threads;
            cfg.engine.workers = workers(threads);
            cfg.engine.queue_capacity = 256;
            let onnx = repo.join("models").join(model).join("edge.onnx");
            let settings = cfg.engine_settings();
            let floor = Floor::new(&settings, &onnx, threads)?;
            let (_, env) = runtime::init(&settings)?;
            let engine = Engine::start(&settings, &env, Arc::new(Metrics::default()))?;
            let agent = procs::agent(&repo, model, workers(threads), threads)?;
            let peer = procs::fastapi_peer(&repo, model, threads)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let client = reqwest::Client::new();
            let infer_url = |s: &Server| format!("http://{}/v2/models/{model}/infer", s.addr);
            let classify_url = |s: &Server| format!("http://{}/v1/classify/{model}", s.addr);
            let (agent_infer, agent_classify) = (infer_url(&agent), classify_url(&agent));
            let (peer_infer, peer_classify) = (infer_url(&peer), classify_url(&peer));
            for &c in &a.concurrency {
                let (w, engine, floor, rt, client) = (&w, &engine, &floor, &rt, &client);
                let systems: Vec<System<'_>> = vec![
                    (
                        "floor",
                        Box::new(move |win| threads_window(c, win, &|i| floor.call(i, w))),
                    ),
                    (
                        "engine",
                        Box::new(move |win| {
                            threads_window(c, win, &|_| {
                                engine
                                    .infer_blocking(&w.model, Input::Tensors(w.tensors.clone()))
                                    .is_ok()
                            })
                        }),
                    ),
                    (
                        "engine-e2e",
                        Box::new(move |win| {
                            threads_window(c, win, &|_| {
                                engine.infer_blocking(&w.model, w.raw_input.clone()).is_ok()
                            })
                        }),
                    ),
                    (
                        "http",
                        Box::new(|win| {
                            http_window(
                                rt,
                                client,
                                c,
                                win,
                                &agent_infer,
                                &w.oip_body,
                                w.oip_header_len,
                            )
                        }),
                    ),
                    (
                        "http-e2e",
                        Box::new(|win| {
                            http_window(rt, client, c, win, &agent_classify, &w.raw, None)
                        }),
                    ),
                    (
                        "fastapi",
                        Box::new(|win| {
                            http_window(
                                rt,
                                client,
                                c,
                                win,
                                &peer_infer,
                                &w.oip_body,
                                w.oip_header_len,
                            )
                        }),
                    ),
                    (
                        "fastapi-e2e",
                        Box::new(|win| {
                            http_window(rt, client, c, win, &peer_classify, &w.raw, None)
                        }),
                    ),
                ];
                let stats = interleaved(&systems, window, ROUNDS);
                let floor_p50 = stats[0].p50_us;
                for ((system, _), st) in systems.iter().zip(stats) {
                    eprintln!(
                        "  {system:12} c={c}: p50 {:.0} us, p99 {:.0} us, {:.0} req/s, errors {}",
                        st.p50_us, st.p99_us, st.rps, st.errors
                    );
                    rows.push(Row {
                        model: model.clone(),
                        threads,
                        system,
                        c,
                        stats: st,
                        floor_p50,
                    });
                }
            }
            rss.push((model.clone(), threads, agent.rss_mib(), peer.rss_mib()));
        }
    }
    print_report(&rows, &rss);
    Ok(())
}

fn find<'a>(
    rows: &'a [Row],
    model: &str,
    threads: usize,
    system: &str,
    c: usize,
) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.model == model && r.threads == threads && r.system == system && r.c == c)
}

fn print_report(rows: &[Row], rss: &[(String, usize, f64, f64)]) {
    println!();
    println!(
        "| model | threads | system | conc | calls | p50 us | p99 us | req/s | p50 / floor | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.3} | {} |",
            r.model,
            r.threads,
            r.system,
            r.c,
            r.stats.n,
            r.stats.p50_us,
            r.stats.p99_us,
            r.stats.rps,
            r.stats.p50_us / r.floor_p50,
            r.stats.errors
        );
    }
    println!();
    println!("| model | threads | agent RSS MiB | FastAPI peer RSS MiB |");
    println!("|---|---|---|---|");
    for (m, t, a, p) in rss {
        println!("| {m} | {t} | {a:.0} | {p:.0} |");
    }
    println!();
    println!("targets (measured in this run):");
    for model in ["vision-imagenet", "text-sentiment"] {
        for t in [1, 2] {
            if let (Some(f), Some(e)) = (
                find(rows, model, t, "floor", 1),
                find(rows, model, t, "engine", 1),
            ) {
                println!(
                    "  {model} {t}t c1: engine p50 / floor p50 = {:.3} (target <= 1.03)",
                    e.stats.p50_us / f.stats.p50_us
                );
            }
            if let (Some(f), Some(h), Some(p)) = (
                find(rows, model, t, "floor", 1),
                find(rows, model, t, "http", 1),
                find(rows, model, t, "fastapi", 1),
            ) {
                let (ours, theirs) = (
                    h.stats.p50_us - f.stats.p50_us,
                    p.stats.p50_us - f.stats.p50_us,
                );
                println!(
                    "  {model} {t}t c1: HTTP added p50 {ours:.0} us vs FastAPI {theirs:.0} us = {:.2} (target <= 0.33)",
                    ours / theirs
                );
            }
        }
    }
    for t in [1, 2] {
        if let (Some(h), Some(p)) = (
            find(rows, "vision-fashion", t, "http", 8),
            find(rows, "vision-fashion", t, "fastapi", 8),
        ) {
            println!(
                "  vision-fashion {t}t c8: HTTP throughput / FastAPI = {:.2} (target >= 3)",
                h.stats.rps / p.stats.rps
            );
        }
    }
    let headline = match (
        find(rows, "vision-imagenet", 1, "floor", 1),
        find(rows, "vision-imagenet", 1, "engine", 1),
    ) {
        (Some(f), Some(e)) => e.stats.p50_us / f.stats.p50_us,
        _ => f64::NAN,
    };
    println!("local-overhead-p50: {headline:.2}");
}
