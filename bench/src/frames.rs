//! `tandem-bench frames` (make bench-frames): pre-processing and end-to-end time of
//! vision-imagenet (edge, 1 intra-op thread, concurrency 1) for the 20 ImageNet samples and
//! for a 1080p and a 4K camera frame (JPEG, quality 90), in one run:
//! - `pre-before`: the earlier path (full zune decode, `image` resize, per-pixel normalise);
//! - `pre-after`: the SIMD path (jpeg-decoder at a reduced DCT scale where it applies,
//!   fast_image_resize, fused normalise/layout);
//! - `pre-wgpu`: decode on the CPU, resize/normalise/layout on the wgpu adapter (if any);
//! - `floor`: raw `ort` `Session::run` on the prepared tensor;
//! - `e2e-before`, `e2e-wgpu`: the matching pre-processing then the same session;
//! - `e2e-after`: the engine from the file (`Engine::infer_blocking`, what the agent runs);
//! - `http-e2e`: the agent daemon's `/v1/classify` with the file;
//! - `fastapi-e2e`: the FastAPI + PIL + onnxruntime peer's `/v1/classify` with the file.
//!
//! Last line: `frames: e2e_vs_floor=X vs_fastapi=Y` on the ImageNet samples, X = e2e-after p50
//! / floor p50, Y = fastapi-e2e p50 / http-e2e p50.

use crate::local::{System, Window, interleaved, threads_window};
use crate::procs;
use crate::stats::Stats;
use bytes::Bytes;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tandem_agent::config::Config;
use tandem_agent::inference::{Engine, Input};
use tandem_agent::runtime;
use tandem_agent::telemetry::Metrics;
use tandem_engine::preprocess::image::{self as img, Backend, Limits};
use tandem_engine::preprocess::reference;
use tandem_shared::manifest::{ImagePreprocess, Manifest, Preprocess};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds per measured window (per system and input set).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
}

const MODEL: &str = "vision-imagenet";

struct Set {
    name: &'static str,
    files: Vec<Bytes>,
}

fn frame(sample: &Path, w: u32, h: u32) -> anyhow::Result<Bytes> {
    let img = image::open(sample)?.to_rgb8();
    let big = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&big)?;
    Ok(Bytes::from(out))
}

fn sets(dir: &Path) -> anyhow::Result<Vec<Set>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("samples"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    paths.sort();
    let files = paths
        .iter()
        .map(|p| std::fs::read(p).map(Bytes::from))
        .collect::<Result<Vec<_>, _>>()?;
    let first = paths.first().ok_or_else(|| anyhow::anyhow!("no samples"))?;
    Ok(vec![
        Set {
            name: "imagenet",
            files,
        },
        Set {
            name: "1080p",
            files: vec![frame(first, 1920, 1080)?],
        },
        Set {
            name: "4k",
            files: vec![frame(first, 3840, 2160)?],
        },
    ])
}

/// The next file of a set, round robin.
struct Cycle<'a> {
    files: &'a [Bytes],
    at: AtomicUsize,
}

impl<'a> Cycle<'a> {
    fn new(files: &'a [Bytes]) -> Self {
        Self {
            files,
            at: AtomicUsize::new(0),
        }
    }
    fn next(&self) -> &'a Bytes {
        &self.files[self.at.fetch_add(1, Ordering::Relaxed) % self.files.len()]
    }
}

fn run_session(s: &Mutex<Session>, name: &str, shape: &[i64], data: &[f32]) -> bool {
    let Ok(mut s) = s.lock() else { return false };
    let Ok(t) = TensorRef::from_array_view((shape.to_vec(), data)) else {
        return false;
    };
    match s.run(ort::inputs![name => t]) {
        Ok(out) => out[0]
            .try_extract_tensor::<f32>()
            .is_ok_and(|(_, d)| std::hint::black_box(d[0]).is_finite()),
        Err(_) => false,
    }
}

/// POSTs the set's files in turn to `url` for `window`.
fn http_cycle(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    window: Duration,
    url: &str,
    files: &Cycle<'_>,
) -> Window {
    rt.block_on(async {
        let (mut lat, mut errors) = (Vec::new(), 0);
        let end = Instant::now() + window;
        while Instant::now() < end {
            let t = Instant::now();
            let ok = match client.post(url).body(files.next().clone()).send().await {
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
}

/// Runs the benchmark and prints the table; the last line is `frames: ...`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let repo = procs::repo()?;
    let dir = repo.join("models").join(MODEL);
    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json"))?)?;
    let variant = manifest
        .variants
        .get(&tandem_shared::manifest::VariantRole::Edge)
        .ok_or_else(|| anyhow::anyhow!("{MODEL}: no edge variant"))?;
    let Preprocess::Image(p) = &variant.preprocess else {
        anyhow::bail!("{MODEL} is not an image model")
    };
    let p: ImagePreprocess = p.clone();
    let input = variant
        .inputs
        .first()
        .map(|i| i.name.clone())
        .unwrap_or_default();
    let limits = Limits {
        max_width: 8192,
        max_height: 8192,
        max_alloc_bytes: 256 << 20,
    };
    let mut cfg = Config {
        base_dir: repo.clone(),
        ..Default::default()
    };
    cfg.models.enabled = vec![MODEL.to_string()];
    cfg.runtime.intra_op_threads = 1;
    cfg.engine.workers = 1;
    let settings = cfg.engine_settings();
    let (_, env) = runtime::init(&settings)?;
    let session = Mutex::new(
        Session::builder(&env)
            .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(dir.join(&variant.file)))
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let engine = Engine::start(&settings, &env, std::sync::Arc::new(Metrics::default()))?;
    let gpu = tandem_engine::preprocess::gpu::shared_gpu();
    let gpu_backend = match &gpu {
        Ok(g) => {
            eprintln!("wgpu adapter: {} (software: {})", g.name, g.software);
            Some(Backend::Gpu(g.clone()))
        }
        Err(e) => {
            eprintln!("wgpu: {e}");
            None
        }
    };
    let agent = procs::agent(&repo, MODEL, 1, 1)?;
    let peer = procs::fastapi_peer(&repo, MODEL, 1)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::new();
    let agent_url = format!("http://{}/v1/classify/{MODEL}", agent.addr);
    let peer_url = format!("http://{}/v1/classify/{MODEL}", peer.addr);
    let per = p.color.channels() * (p.width * p.height) as usize;
    let shape = img::batch_shape(&p, 1);
    let window = Duration::from_secs_f64(a.seconds);
    let mut rows: Vec<(&'static str, &'static str, Stats)> = Vec::new();
    for set in sets(&dir)? {
        eprintln!("== {} ({} file(s))", set.name, set.files.len());
        let cyc = Cycle::new(&set.files);
        let (p, limits, session, engine, shape) = (&p, &limits, &session, &engine, &shape);
        let (input, cyc, gpu_backend) = (&input, &cyc, &gpu_backend);
        let pre_before = move || {
            let mut out = vec![0.0f32; per];
            reference::prepare_into(cyc.next(), p, limits, &mut out).is_ok()
        };
        let pre_with = move |b: &Backend| {
            let mut out = vec![0.0f32; per];
            img::prepare_into(cyc.next(), p, limits, b, &mut out).is_ok()
        };
        let tensor = {
            let mut out = vec![0.0f32; per];
            img::prepare_into(&set.files[0], p, limits, &Backend::Cpu, &mut out)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            out
        };
        let tensor = &tensor;
        let mut systems: Vec<System<'_>> = vec![
            (
                "pre-before",
                Box::new(move |w| threads_window(1, w, &|_| pre_before())),
            ),
            (
                "pre-after",
                Box::new(move |w| threads_window(1, w, &|_| pre_with(&Backend::Cpu))),
            ),
            (
                "floor",
                Box::new(move |w| {
                    threads_window(1, w, &|_| run_session(session, input, shape, tensor))
                }),
            ),
            (
                "e2e-before",
                Box::new(move |w| {
                    threads_window(1, w, &|_| {
                        let mut out = vec![0.0f32; per];
                        reference::prepare_into(cyc.next(), p, limits, &mut out).is_ok()
                            && run_session(session, input, shape, &out)
                    })
                }),
            ),
            (
                "e2e-after",
                Box::new(move |w| {
                    threads_window(1, w, &|_| {
                        engine
                            .infer_blocking(MODEL, Input::Images(vec![cyc.next().clone()]))
                            .is_ok()
                    })
                }),
            ),
            (
                "http-e2e",
                Box::new(|w| http_cycle(&rt, &client, w, &agent_url, cyc)),
            ),
            (
                "fastapi-e2e",
                Box::new(|w| http_cycle(&rt, &client, w, &peer_url, cyc)),
            ),
        ];
        if let Some(b) = gpu_backend {
            systems.push((
                "pre-wgpu",
                Box::new(move |w| threads_window(1, w, &|_| pre_with(b))),
            ));
            systems.push((
                "e2e-wgpu",
                Box::new(move |w| {
                    threads_window(1, w, &|_| {
                        let mut out = vec![0.0f32; per];
                        img::prepare_into(cyc.next(), p, limits, b, &mut out).is_ok()
                            && run_session(session, input, shape, &out)
                    })
                }),
            ));
        }
        let stats = interleaved(&systems, window, 5);
        for ((name, _), st) in systems.iter().zip(stats) {
            eprintln!(
                "  {name:12} p50 {:.0} us, p99 {:.0} us, errors {}",
                st.p50_us, st.p99_us, st.errors
            );
            rows.push((set.name, name, st));
        }
    }
    print_report(&rows, gpu.as_ref().err());
    Ok(())
}

fn print_report(rows: &[(&str, &str, Stats)], gpu_missing: Option<&String>) {
    let find = |set: &str, sys: &str| {
        rows.iter()
            .find(|r| r.0 == set && r.1 == sys)
            .map(|r| r.2.p50_us)
    };
    println!();
    println!("vision-imagenet edge, 1 intra-op thread, concurrency 1; p50/p99 in microseconds");
    if let Some(e) = gpu_missing {
        println!("(no wgpu rows: {e})");
    }
    println!("| input | system | calls | p50 us | p99 us | p50 / floor | errors |");
    println!("|---|---|---|---|---|---|---|");
    for (set, sys, st) in rows {
        let floor = find(set, "floor").unwrap_or(f64::NAN);
        println!(
            "| {set} | {sys} | {} | {:.0} | {:.0} | {:.2} | {} |",
            st.n,
            st.p50_us,
            st.p99_us,
            st.p50_us / floor,
            st.errors
        );
    }
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => a / b,
        _ => f64::NAN,
    };
    println!();
    for set in ["imagenet", "1080p", "4k"] {
        println!(
            "{set}: pre-processing before/after = {:.2}x, e2e after/floor = {:.2}, FastAPI/http-e2e = {:.2}",
            ratio(find(set, "pre-before"), find(set, "pre-after")),
            ratio(find(set, "e2e-after"), find(set, "floor")),
            ratio(find(set, "fastapi-e2e"), find(set, "http-e2e")),
        );
    }
    println!("targets: e2e_vs_floor <= 1.5, vs_fastapi >= 1.5");
    println!(
        "frames: e2e_vs_floor={:.2} vs_fastapi={:.2}",
        ratio(find("imagenet", "e2e-after"), find("imagenet", "floor")),
        ratio(
            find("imagenet", "fastapi-e2e"),
            find("imagenet", "http-e2e")
        ),
    );
}
