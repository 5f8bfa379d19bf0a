//! `tandem-bench frames` (make bench-frames): pre-processing and end-to-end time of
//! vision-imagenet (edge, 1 intra-op thread, concurrency 1) for the 20 ImageNet samples (the
//! committed files: 512x512 progressive JPEGs), the same 20 photos as baseline JPEG
//! (`imagenet-baseline`: what cameras send; see [`baseline`]) and a 1080p and a 4K camera
//! frame (JPEG, quality 90), in one run:
//! - `pre-before`: the earlier path (full zune decode, `image` resize, per-pixel normalise);
//! - `pre-after`: the SIMD path (libjpeg-turbo at a reduced DCT scale where it applies,
//!   fast_image_resize, fused normalise/layout);
//! - `decode`: the JPEG decode alone, at the scale `pre-after` decodes at;
//! - `floor`: raw `ort` `Session::run` on the prepared tensor;
//! - `e2e-before`: the earlier pre-processing then the same session;
//! - `e2e-direct`: the engine's pre-processing then the same session, on the caller's
//!   thread (no queue, no worker, no post-processing): `e2e-after` minus this is the
//!   engine's own cost; this minus `pre-after` and `floor` is what running the two in turn
//!   costs (caches);
//! - `e2e-after`: the engine from the file (`Engine::infer_blocking`, what the agent runs);
//! - `http-e2e`: the agent daemon's `/v1/classify` with the file;
//! - `fastapi-e2e`: the FastAPI + PIL + onnxruntime peer's `/v1/classify` with the file;
//! - `pre-wgpu`, `e2e-wgpu`, a second `floor` and `pre-cpu-proc` (the CPU path beside the
//!   GPU one): in a child process of their own
//!   ([`frames_wgpu`](crate::frames_wgpu)), after the rows above, so that the Vulkan device
//!   (lavapipe's threads and memory on a machine without a GPU) does not slow the CPU rows.
//!
//! After the table, the engine's and the agent's per-call split ([`frames_split`](crate::frames_split)).
//!
//! Last line: `frames: e2e_vs_floor=X vs_fastapi=Y` on the committed ImageNet samples (the
//! issue's set), X = e2e-after p50 / floor p50, Y = fastapi-e2e p50 / http-e2e p50.

use crate::frames_split::{Calls, timing_of};
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
use tandem_engine::preprocess::geometry::Plan;
use tandem_engine::preprocess::image::{self as img, Backend, Limits};
use tandem_engine::preprocess::reference;
use tandem_shared::manifest::{ImagePreprocess, Manifest, Preprocess};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds per measured window (per system and input set).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) seconds: f64,
    /// Internal: measure only the wgpu rows and print them as JSON lines (the child process
    /// the run starts for them).
    #[arg(long, hide = true)]
    pub(crate) wgpu_rows: bool,
    /// Only these input sets (comma-separated: imagenet, imagenet-baseline, 1080p, 4k); all
    /// by default. The last line needs `imagenet`.
    #[arg(long, value_delimiter = ',')]
    pub(crate) sets: Vec<String>,
    /// Skip the wgpu rows (and their child process).
    #[arg(long)]
    pub(crate) no_wgpu: bool,
}

pub(crate) const MODEL: &str = "vision-imagenet";

pub(crate) struct Set {
    pub(crate) name: &'static str,
    pub(crate) files: Vec<Bytes>,
}

fn frame(sample: &Path, w: u32, h: u32) -> anyhow::Result<Bytes> {
    let img = image::open(sample)?.to_rgb8();
    let big = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&big)?;
    Ok(Bytes::from(out))
}

/// The same JPEG with baseline (sequential) entropy coding: a lossless transcode (libjpeg-turbo's
/// `jpegtran`), so the quantisation tables and DCT coefficients, hence the decoded pixels and
/// the model's answers, are those of the committed progressive file. Kept in memory; the
/// committed samples are never replaced.
pub(crate) fn baseline(jpeg: &[u8]) -> anyhow::Result<Bytes> {
    let out = turbojpeg::transform(&turbojpeg::Transform::default(), jpeg)?;
    Ok(Bytes::copy_from_slice(&out))
}

/// Input sets the run measures; `with_baseline` adds `imagenet-baseline`.
pub(crate) fn sets(dir: &Path, with_baseline: bool) -> anyhow::Result<Vec<Set>> {
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
    let mut sets = vec![Set {
        name: "imagenet",
        files,
    }];
    if with_baseline {
        sets.push(Set {
            name: "imagenet-baseline",
            files: sets[0]
                .files
                .iter()
                .map(|f| baseline(f))
                .collect::<anyhow::Result<_>>()?,
        });
    }
    sets.extend([
        Set {
            name: "1080p",
            files: vec![frame(first, 1920, 1080)?],
        },
        Set {
            name: "4k",
            files: vec![frame(first, 3840, 2160)?],
        },
    ]);
    Ok(sets)
}

/// The next file of a set, round robin.
pub(crate) struct Cycle<'a> {
    files: &'a [Bytes],
    at: AtomicUsize,
}

impl<'a> Cycle<'a> {
    pub(crate) fn new(files: &'a [Bytes]) -> Self {
        Self {
            files,
            at: AtomicUsize::new(0),
        }
    }
    pub(crate) fn next(&self) -> &'a Bytes {
        &self.files[self.at.fetch_add(1, Ordering::Relaxed) % self.files.len()]
    }
}

pub(crate) fn run_session(s: &Mutex<Session>, name: &str, shape: &[i64], data: &[f32]) -> bool {
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

/// POSTs the set's files in turn to `url` for `window`; with `calls`, records each answer's
/// engine timings next to its wall time.
fn http_cycle(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    window: Duration,
    url: &str,
    files: &Cycle<'_>,
    calls: Option<&Calls>,
) -> Window {
    rt.block_on(async {
        let (mut lat, mut errors) = (Vec::new(), 0);
        let end = Instant::now() + window;
        while Instant::now() < end {
            let t = Instant::now();
            let body = match client.post(url).body(files.next().clone()).send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.ok(),
                _ => None,
            };
            if let Some(body) = body {
                let took = t.elapsed();
                lat.push(took);
                if let Some((calls, timing)) = calls.zip(timing_of(&body)) {
                    calls.push(took, timing);
                }
            } else {
                errors += 1;
            }
        }
        (lat, errors)
    })
}

/// What both processes measure with: the model's pre-processing, its input name, the decode
/// limits, a raw session (1 intra-op thread) and the engine settings.
pub(crate) struct Setup {
    pub(crate) repo: std::path::PathBuf,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) p: ImagePreprocess,
    pub(crate) input: String,
    pub(crate) limits: Limits,
    pub(crate) settings: tandem_engine::settings::EngineSettings,
    pub(crate) env: ort::environment::Environment,
    pub(crate) session: Mutex<Session>,
}

impl Setup {
    pub(crate) fn open() -> anyhow::Result<Self> {
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
        let input = variant
            .inputs
            .first()
            .map(|i| i.name.clone())
            .unwrap_or_default();
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
        Ok(Self {
            p: p.clone(),
            input,
            limits: Limits {
                max_width: 8192,
                max_height: 8192,
                max_alloc_bytes: 256 << 20,
            },
            repo,
            dir,
            settings,
            env,
            session,
        })
    }

    /// Values per prepared image.
    pub(crate) fn per(&self) -> usize {
        self.p.color.channels() * (self.p.width * self.p.height) as usize
    }

    /// The first file of `set` prepared by the CPU path.
    pub(crate) fn tensor(&self, set: &Set) -> anyhow::Result<Vec<f32>> {
        let mut out = vec![0.0f32; self.per()];
        img::prepare_into(
            &set.files[0],
            &self.p,
            &self.limits,
            &Backend::Cpu,
            &mut out,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(out)
    }
}

/// Runs the benchmark and prints the table; the last line is `frames: ...`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    if a.wgpu_rows {
        return crate::frames_wgpu::child(a);
    }
    let setup = Setup::open()?;
    let (repo, dir, p, input, limits, session) = (
        &setup.repo,
        &setup.dir,
        &setup.p,
        &setup.input,
        &setup.limits,
        &setup.session,
    );
    let engine = Engine::start(
        &setup.settings,
        &setup.env,
        std::sync::Arc::new(Metrics::default()),
    )?;
    let agent = procs::agent(repo, MODEL, 1, 1)?;
    let peer = procs::fastapi_peer(repo, MODEL, 1)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::new();
    let agent_url = format!("http://{}/v1/classify/{MODEL}", agent.addr);
    let peer_url = format!("http://{}/v1/classify/{MODEL}", peer.addr);
    let per = setup.per();
    let shape = img::batch_shape(p, 1);
    let window = Duration::from_secs_f64(a.seconds);
    let mut rows: Vec<Row> = Vec::new();
    let mut split = Vec::new();
    let wanted = |name: &str| a.sets.is_empty() || a.sets.iter().any(|s| s == name);
    for set in sets(dir, true)?.into_iter().filter(|s| wanted(s.name)) {
        eprintln!("== {} ({} file(s))", set.name, set.files.len());
        let cyc = Cycle::new(&set.files);
        let (engine, shape, cyc) = (&engine, &shape, &cyc);
        let pre_before = move || {
            let mut out = vec![0.0f32; per];
            reference::prepare_into(cyc.next(), p, limits, &mut out).is_ok()
        };
        let pre_with = move |b: &Backend| {
            let mut out = vec![0.0f32; per];
            img::prepare_into(cyc.next(), p, limits, b, &mut out).is_ok()
        };
        // The decode alone, at the scale `pre-after` decodes at: the rest of `pre-after` is
        // the resize, normalise and layout.
        let decode_only = move || decode_only(cyc.next(), p, limits);
        let tensor = setup.tensor(&set)?;
        let tensor = &tensor;
        let (engine_calls, http_calls) = (Calls::default(), Calls::default());
        let (engine_calls, http_calls) = (&engine_calls, &http_calls);
        let systems: Vec<System<'_>> = vec![
            (
                "pre-before",
                Box::new(move |w| threads_window(1, w, &|_| pre_before())),
            ),
            (
                "pre-after",
                Box::new(move |w| threads_window(1, w, &|_| pre_with(&Backend::Cpu))),
            ),
            (
                "decode",
                Box::new(move |w| threads_window(1, w, &|_| decode_only())),
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
                "e2e-direct",
                Box::new(move |w| {
                    threads_window(1, w, &|_| {
                        img::prepare_batch_with(&[cyc.next().as_ref()], p, limits, &Backend::Cpu)
                            .is_ok_and(|(_, data, _)| run_session(session, input, shape, &data))
                    })
                }),
            ),
            (
                "e2e-after",
                Box::new(move |w| {
                    threads_window(1, w, &|_| {
                        let t = Instant::now();
                        let r =
                            engine.infer_blocking(MODEL, Input::Images(vec![cyc.next().clone()]));
                        let took = t.elapsed();
                        r.map(|inf| engine_calls.push(took, inf.timing)).is_ok()
                    })
                }),
            ),
            (
                "http-e2e",
                Box::new(|w| http_cycle(&rt, &client, w, &agent_url, cyc, Some(http_calls))),
            ),
            (
                "fastapi-e2e",
                Box::new(|w| http_cycle(&rt, &client, w, &peer_url, cyc, None)),
            ),
        ];
        let stats = interleaved(&systems, window, 5);
        let floor = systems
            .iter()
            .zip(&stats)
            .find(|((n, _), _)| *n == "floor")
            .map_or(f64::NAN, |(_, st)| st.p50_us);
        split.push(engine_calls.engine_line(set.name, floor));
        split.push(http_calls.http_line(set.name));
        for ((name, _), st) in systems.iter().zip(stats) {
            eprintln!(
                "  {name:12} p50 {:.0} us, p99 {:.0} us, errors {}",
                st.p50_us, st.p99_us, st.errors
            );
            rows.push((set.name.into(), (*name).into(), st));
        }
    }
    drop((agent, peer, engine));
    let gpu = if a.no_wgpu {
        Err("--no-wgpu".to_string())
    } else {
        crate::frames_wgpu::rows_in_child(a)
    };
    if let Ok(r) = &gpu {
        rows.extend(r.iter().cloned());
    }
    print_report(&rows, &split, gpu.as_ref().err());
    Ok(())
}

/// The JPEG decode alone, at the reduced DCT scale the engine would pick (the `decode` rows).
pub(crate) fn decode_only(bytes: &[u8], p: &ImagePreprocess, limits: &Limits) -> bool {
    img::peek_dims(bytes).is_ok_and(|(w, h)| {
        let (mw, mh) = Plan::new(w, h, p).min_source();
        img::decode_at_least(bytes, p.color, limits, (mw * 2, mh * 2)).is_ok()
    })
}

/// One measured cell: input set, system, figures.
pub(crate) type Row = (String, String, Stats);

fn print_report(rows: &[Row], split: &[String], gpu_missing: Option<&String>) {
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
    for line in split {
        println!("{line}");
    }
    println!();
    for set in ["imagenet", "imagenet-baseline", "1080p", "4k"] {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The first frame header's marker: 0xC0/0xC1 baseline or extended sequential, 0xC2
    /// progressive.
    fn sof_marker(jpeg: &[u8]) -> Option<u8> {
        jpeg.windows(2)
            .find(|w| w[0] == 0xFF && matches!(w[1], 0xC0..=0xC2))
            .map(|w| w[1])
    }

    #[test]
    fn the_baseline_set_is_the_same_photos_sequentially_coded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/vision-imagenet");
        let sets = sets(&dir, true).expect("sets");
        let (prog, base) = (&sets[0], &sets[1]);
        assert_eq!((prog.name, base.name), ("imagenet", "imagenet-baseline"));
        assert_eq!(prog.files.len(), base.files.len());
        assert!(!prog.files.is_empty());
        for (p, b) in prog.files.iter().zip(&base.files) {
            assert_eq!(
                sof_marker(p),
                Some(0xC2),
                "the committed samples are progressive"
            );
            assert!(matches!(sof_marker(b), Some(0xC0 | 0xC1)), "baseline");
            let px = |j: &[u8]| {
                turbojpeg::decompress(j, turbojpeg::PixelFormat::RGB)
                    .expect("decodes")
                    .pixels
            };
            assert!(
                px(p) == px(b),
                "a lossless transcode decodes to the same pixels"
            );
        }
    }
}
