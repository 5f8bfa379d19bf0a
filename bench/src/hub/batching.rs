//! (b) Hub throughput under 64 simulated devices, dynamic batching on vs off.
//!
//! Two hubs run in this process, each the real serving path (engine on the cloud variant +
//! `QuicIngress` with mutual TLS): one with batching (`max_batch`, `max_batch_delay_us`), one
//! with `max_batch = 1`; both with the same workers and intra-op threads. The hubs share one
//! thread with a tokio current-thread runtime (only one is loaded at a time); the devices run on
//! another. Each device is its own QUIC connection with its own certificate (what the hub
//! really sees: 64 handshakes, 64 identities, one connection's flow per device), in a closed
//! loop: a stream per request, as the agent's uplink sends it, the next one as soon as the
//! answer is in. Images are Fashion-MNIST test PNGs; text is the sentiment test sentences.
//! Configurations alternate in rounds.

use super::Layout;
use super::certs::BenchPki;
use super::framing;
use crate::stats::{Stats, summarise};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tandem_engine::Engine;
use tandem_engine::settings::EngineSettings;
use tandem_hub::ingress::quic::QuicIngress;
use tandem_shared::wire::{self, DEFAULT_MAX_FRAME_BYTES, Message, encode_to_vec};

/// One measured configuration of one model.
#[derive(Debug, Clone)]
pub struct Row {
    /// Model name (and variant).
    pub model: String,
    /// `batched` or `unbatched`, with its knobs.
    pub system: String,
    /// Latency and throughput.
    pub stats: Stats,
    /// Average size of the batches that ran (requests / runs).
    pub mean_batch: f64,
    /// `Busy` answers (queue full).
    pub busy: usize,
    /// CPU the hub side used per answer (this process minus the devices' thread), in
    /// microseconds: less sensitive to a busy machine than throughput.
    pub hub_cpu_us_per_req: f64,
}

/// What part (b) measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Rows, batched then unbatched per model.
    pub rows: Vec<Row>,
    /// Notes to print under the table (fallbacks, knobs).
    pub notes: Vec<String>,
    /// vision-fashion throughput batched / unbatched.
    pub speedup: f64,
    /// vision-fashion p99 batched / unbatched.
    pub p99_ratio: f64,
}

/// One model's workload: the model, the variant the hubs serve, the inputs devices send.
struct Workload {
    model: &'static str,
    variant: &'static str,
    inputs: Arc<Vec<wire::Input>>,
    seconds: f64,
    rounds: u32,
}

/// The first `n` Fashion-MNIST test images as PNG inputs.
pub(crate) fn fashion_inputs(repo: &Path, n: usize) -> anyhow::Result<Vec<wire::Input>> {
    let dir = repo.join("models/vision-fashion/data");
    let images = crate::cascade::gunzip(&dir.join("t10k-images-idx3-ubyte.gz"))?;
    images
        .get(16..)
        .context("short image file")?
        .chunks_exact(784)
        .take(n)
        .map(|px| Ok(wire::Input::ImageBytes(crate::cascade::png(px)?)))
        .collect()
}

fn text_inputs(repo: &Path, n: usize) -> anyhow::Result<Vec<wire::Input>> {
    let path = repo.join("models/text-sentiment/data/sentences-test.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(|s| wire::Input::Text(s.to_string())))
        .take(n)
        .collect())
}

/// Whether a model's variant file is present (MPNet, text-sentiment's cloud variant, is
/// optional and built by `make models`).
fn variant_present(repo: &Path, model: &str, variant: &str) -> bool {
    let dir = repo.join("models").join(model);
    std::fs::read_to_string(dir.join("manifest.json"))
        .ok()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
        .and_then(|m| m["variants"][variant]["file"].as_str().map(|f| dir.join(f)))
        .is_some_and(|f| f.is_file())
}

/// A hub configuration: a thread layout, batching on (`max_batch` > 1) or off.
#[derive(Debug, Clone, Copy)]
struct HubConfig {
    layout: Layout,
    max_batch: usize,
    delay_us: u64,
}

impl HubConfig {
    fn label(&self) -> String {
        if self.max_batch > 1 {
            format!(
                "batched (max {}, {} us), {}",
                self.max_batch, self.delay_us, self.layout
            )
        } else {
            format!("unbatched (max 1), {}", self.layout)
        }
    }
}

fn engine(
    repo: &Path,
    w: &Workload,
    hub: HubConfig,
    a: &super::Args,
) -> anyhow::Result<Arc<Engine>> {
    let mut s = EngineSettings {
        base_dir: repo.to_path_buf(),
        ..Default::default()
    };
    let defaults = tandem_hub::config::Config::default();
    s.engine = defaults.engine;
    s.runtime = defaults.runtime;
    s.models.enabled = vec![w.model.into()];
    s.models.variant = w.variant.into();
    s.runtime.intra_op_threads = hub.layout.threads;
    s.engine.workers = hub.layout.workers;
    s.engine.max_batch = hub.max_batch;
    s.engine.max_batch_delay_us = hub.delay_us;
    s.engine.spin_us = a.spin_us;
    s.engine.queue_capacity = s.engine.queue_capacity.max(4 * a.devices);
    let (_, e) = tandem_engine::engine::start(&s, Default::default())?;
    Ok(Arc::new(e))
}

/// The hubs' thread: their ingress endpoints on one current-thread runtime, until dropped.
struct Hubs {
    addrs: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Hubs {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_hubs(pki: &Path, engines: Vec<Arc<Engine>>, multi_thread: bool) -> anyhow::Result<Hubs> {
    let pki = pki.to_path_buf();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("bench-hubs".into())
        .spawn(move || {
            let run = async move {
                let (done_tx, _) = tokio::sync::broadcast::channel::<()>(1);
                let mut addrs = Vec::new();
                let mut tasks = Vec::new();
                for e in engines {
                    let ingress = QuicIngress::bind("127.0.0.1:0".parse()?, &pki)?.with_engine(e);
                    addrs.push(ingress.local_addr()?);
                    let mut done = done_tx.subscribe();
                    tasks.push(tokio::spawn(ingress.run(async move {
                        let _ = done.recv().await;
                    })));
                }
                let _ = addr_tx.send(addrs);
                let _ = stop_rx.await;
                let _ = done_tx.send(());
                for t in tasks {
                    let _ = t.await;
                }
                anyhow::Ok(())
            };
            let rt = if multi_thread {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            };
            match rt {
                Ok(rt) => {
                    if let Err(e) = rt.block_on(run) {
                        eprintln!("  hubs: {e:#}");
                    }
                }
                Err(e) => eprintln!("  hubs: runtime: {e}"),
            }
        })?;
    let addrs = addr_rx.recv().context("the hubs did not start")?;
    Ok(Hubs {
        addrs,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

#[derive(Debug, Default)]
struct Acc {
    lat: Vec<Duration>,
    runs: f64,
    busy: usize,
    errors: usize,
    elapsed: Duration,
    /// CPU seconds of the process outside the devices' thread.
    hub_cpu: f64,
}

impl Acc {
    fn add(&mut self, o: Acc) {
        self.lat.extend(o.lat);
        self.runs += o.runs;
        self.busy += o.busy;
        self.errors += o.errors;
        self.elapsed += o.elapsed;
        self.hub_cpu += o.hub_cpu;
    }
}

/// CPU seconds of this process outside the calling (devices') thread.
fn hub_cpu_now() -> f64 {
    crate::procs::own_cpu_seconds("self") - crate::procs::own_cpu_seconds("thread-self")
}

/// One device in a closed loop until `end`.
async fn device(
    conn: quinn::Connection,
    model: &'static str,
    inputs: Arc<Vec<wire::Input>>,
    first: usize,
    ids: Arc<AtomicU64>,
    end: Instant,
) -> Acc {
    let mut acc = Acc::default();
    let mut k = first;
    while Instant::now() < end {
        let msg = Message::InferRequest {
            request_id: ids.fetch_add(1, Ordering::Relaxed),
            model: model.into(),
            model_version: None,
            deadline_ms: 0,
            input: inputs[k % inputs.len()].clone(),
        };
        k += 1;
        let Ok(frame) = encode_to_vec(&msg, DEFAULT_MAX_FRAME_BYTES) else {
            acc.errors += 1;
            continue;
        };
        let t = Instant::now();
        match framing::quic_stream_call(&conn, &frame).await {
            Ok(Message::InferResponse { timing, .. }) => {
                acc.lat.push(t.elapsed());
                acc.runs += 1.0 / f64::from(timing.batch_size.max(1));
            }
            Ok(Message::Busy { retry_after_ms, .. }) => {
                acc.busy += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(retry_after_ms))).await;
            }
            _ => acc.errors += 1,
        }
    }
    acc
}

/// Every device against one hub for `window`; the elapsed time runs until the last answer.
async fn window(
    conns: &[quinn::Connection],
    w: &Workload,
    ids: &Arc<AtomicU64>,
    window: Duration,
) -> Acc {
    let start = Instant::now();
    let cpu0 = hub_cpu_now();
    let end = start + window;
    let tasks: Vec<_> = conns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(device(
                c.clone(),
                w.model,
                w.inputs.clone(),
                i * 97,
                ids.clone(),
                end,
            ))
        })
        .collect();
    let mut acc = Acc::default();
    for t in tasks {
        match t.await {
            Ok(a) => acc.add(a),
            Err(_) => acc.errors += 1,
        }
    }
    acc.elapsed = start.elapsed();
    acc.hub_cpu = hub_cpu_now() - cpu0;
    acc
}

/// Connects every device to every hub, warms each hub up, then alternates them in rounds
/// (on the calling thread: the devices' thread, whose CPU is not the hub's).
fn drive(pki: &BenchPki, hubs: &[SocketAddr], w: &Workload) -> anyhow::Result<Vec<Acc>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let mut conns: Vec<Vec<quinn::Connection>> = Vec::new();
        for &addr in hubs {
            let mut per_hub = Vec::new();
            for d in pki.devices() {
                let cfg = pki.quic_client(d, Arc::new(quinn::TransportConfig::default()))?;
                per_hub.push(endpoint.connect_with(cfg, addr, "localhost")?.await?);
            }
            conns.push(per_hub);
        }
        let ids = Arc::new(AtomicU64::new(1));
        let round = Duration::from_secs_f64(w.seconds / f64::from(w.rounds));
        for c in &conns {
            window(c, w, &ids, round.min(Duration::from_secs(2))).await;
        }
        let mut acc: Vec<Acc> = hubs.iter().map(|_| Acc::default()).collect();
        for r in 0..w.rounds {
            for (i, (c, a)) in conns.iter().zip(acc.iter_mut()).enumerate() {
                let got = window(c, w, &ids, round).await;
                eprintln!(
                    "  round {r} hub {i}: {} answers, {:.0} req/s",
                    got.lat.len(),
                    got.lat.len() as f64 / got.elapsed.as_secs_f64()
                );
                a.add(got);
            }
        }
        endpoint.close(0u32.into(), b"done");
        Ok(acc)
    })
}

/// Runs part (b): vision-fashion, then text-sentiment (cloud variant, or what is present).
pub fn measure(repo: &Path, a: &super::Args) -> anyhow::Result<Outcome> {
    let mut notes = Vec::new();
    let text_variant = if variant_present(repo, "text-sentiment", "cloud") {
        "cloud"
    } else {
        notes.push(
            "text-sentiment: cloud variant (MPNet) absent (optional, `make models` builds it): \
             measured its edge variant instead"
                .to_string(),
        );
        "edge"
    };
    let workloads = [
        Workload {
            model: "vision-fashion",
            variant: "cloud",
            inputs: Arc::new(fashion_inputs(repo, 1000)?),
            seconds: a.batch_seconds,
            rounds: a.rounds,
        },
        Workload {
            model: "text-sentiment",
            variant: text_variant,
            inputs: Arc::new(text_inputs(repo, 1000)?),
            seconds: a.text_seconds,
            rounds: a.text_rounds,
        },
    ];
    let pki = BenchPki::new("batching", a.devices)?;
    let mut rows = Vec::new();
    // `--text-seconds 0` measures vision-fashion alone (profiling, quick reruns).
    for w in workloads.iter().filter(|w| w.seconds > 0.0) {
        // Every layout for vision-fashion; the first (the hub's) for the slow text model.
        let layouts = if w.model == "vision-fashion" {
            &a.layouts[..]
        } else {
            &a.layouts[..1]
        };
        let configs: Vec<HubConfig> = layouts
            .iter()
            .flat_map(|&layout| {
                [
                    HubConfig {
                        layout,
                        max_batch: a.max_batch,
                        delay_us: a.batch_delay_us,
                    },
                    HubConfig {
                        layout,
                        max_batch: 1,
                        delay_us: 0,
                    },
                ]
            })
            .collect();
        eprintln!(
            "== (b) {} ({}), {} devices",
            w.model,
            w.variant,
            pki.devices().len()
        );
        let engines = configs
            .iter()
            .map(|c| engine(repo, w, *c, a))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let hubs = start_hubs(pki.dir(), engines, a.hub_runtime == "multi")?;
        let acc = drive(&pki, &hubs.addrs, w)?;
        drop(hubs);
        for (c, acc) in configs.iter().zip(acc) {
            let n = acc.lat.len();
            rows.push(Row {
                model: format!("{} ({})", w.model, w.variant),
                system: c.label(),
                mean_batch: if acc.runs > 0.0 {
                    n as f64 / acc.runs
                } else {
                    f64::NAN
                },
                busy: acc.busy,
                hub_cpu_us_per_req: acc.hub_cpu * 1e6 / n.max(1) as f64,
                stats: summarise(acc.lat, acc.elapsed, acc.errors),
            });
        }
    }
    notes.push(format!(
        "knobs: WwxTt = engine.workers x runtime.intra_op_threads (same thread budget batched and \
         unbatched); batched: engine.max_batch={} engine.max_batch_delay_us={}; unbatched: \
         max_batch=1; engine.spin_us={}; queue_capacity from the hub defaults (at least 4 x \
         devices); hub runtime: {}; devices: one QUIC connection and certificate each, a stream \
         per request",
        a.max_batch, a.batch_delay_us, a.spin_us, a.hub_runtime
    ));
    let (speedup, p99_ratio) = match (rows.first(), rows.get(1)) {
        (Some(b), Some(u)) => (b.stats.rps / u.stats.rps, b.stats.p99_us / u.stats.p99_us),
        _ => (f64::NAN, f64::NAN),
    };
    // With more than one layout: the headline's batched row against the best unbatched one.
    let fashion: Vec<&Row> = rows
        .iter()
        .filter(|r| r.model.starts_with("vision-fashion"))
        .collect();
    if a.layouts.len() > 1
        && let (Some(head), Some(best_unbatched), Some(best)) = (
            fashion.first(),
            fashion
                .iter()
                .filter(|r| r.system.starts_with("unbatched"))
                .max_by(|x, y| x.stats.rps.total_cmp(&y.stats.rps)),
            fashion
                .iter()
                .max_by(|x, y| x.stats.rps.total_cmp(&y.stats.rps)),
        )
    {
        notes.push(format!(
            "vision-fashion across layouts: {} / best unbatched ({}) = {:.2}; fastest: {} at {:.0} req/s",
            head.system,
            best_unbatched.system,
            head.stats.rps / best_unbatched.stats.rps,
            best.system,
            best.stats.rps
        ));
    }
    Ok(Outcome {
        rows,
        notes,
        speedup,
        p99_ratio,
    })
}
