//! `tandem-bench cascade` (make bench-cascade): edge-only, cloud-only and the cascade over a
//! sweep of thresholds on `vision-fashion`'s 10,000-image test set, split in two halves: the
//! threshold is fitted on the even-indexed images (the hub's own fit,
//! `tandem_hub::calibrate::fit`, least offload keeping >= 99.5% of cloud-only accuracy) and every
//! figure is reported on the odd-indexed ones, which the fit never saw.
//!
//! Accuracy and offload share come from running both variants on every image in process (the
//! cascade answer is the edge answer when its max probability reaches the threshold, else the
//! cloud answer: exactly what the router does). Bytes uplinked count the whole wire frame of
//! each offloaded request with the image in its compact form (PNG, as a camera would send it),
//! relative to cloud-only sending every image. Latency is measured end to end through the real
//! agent router and a real hub over QUIC + mTLS on loopback, at the chosen threshold.

use anyhow::Context as _;
use bytes::Bytes;
use flate2::read::GzDecoder;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;
use tandem_agent::config::Config;
use tandem_agent::inference::Input;
use tandem_engine::settings::EngineSettings;
use tandem_shared::oip::{InputTensor, TensorData};
use tandem_shared::wire::{self, DEFAULT_MAX_FRAME_BYTES, Message, encode_to_vec};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images sent through the real hub for the latency figures.
    #[arg(long, default_value_t = 2000)]
    latency_samples: usize,
}

/// A gzip file's contents.
pub(crate) fn gunzip(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(std::fs::File::open(path).with_context(|| path.display().to_string())?)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// Engine settings for `vision-fashion`'s `variant` in process (the repository's models).
pub(crate) fn settings(repo: &std::path::Path, variant: &str) -> EngineSettings {
    let mut s = EngineSettings {
        base_dir: repo.to_path_buf(),
        ..Default::default()
    };
    s.models.enabled = vec!["vision-fashion".into()];
    s.models.variant = variant.into();
    s.runtime.intra_op_threads = 2;
    s.engine.max_batch = 16;
    s.engine.max_batch_delay_us = 1000;
    s
}

/// A 28x28 grey image as PNG bytes.
pub(crate) fn png(pixels: &[u8]) -> anyhow::Result<Vec<u8>> {
    let img = image::GrayImage::from_raw(28, 28, pixels.to_vec()).context("28x28")?;
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img).write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

/// Bytes of the whole `InferRequest` wire frame that offloads the image file `image`.
pub(crate) fn frame_bytes(model: &str, request_id: u64, image: &[u8]) -> usize {
    let msg = Message::InferRequest {
        request_id,
        model: model.into(),
        model_version: None,
        deadline_ms: 0,
        input: wire::Input::ImageBytes(image.to_vec()),
    };
    encode_to_vec(&msg, DEFAULT_MAX_FRAME_BYTES).map_or(0, |f| f.len())
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Runs the benchmark; the last line is `cascade: accuracy_ratio=X offload=Y`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let repo = crate::procs::repo()?;
    let dir = repo.join("models/vision-fashion");
    let images = gunzip(&dir.join("data/t10k-images-idx3-ubyte.gz"))?;
    let labels = gunzip(&dir.join("data/t10k-labels-idx1-ubyte.gz"))?;
    let (pixels, labels) = (&images[16..], &labels[8..]);
    let n = labels.len();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json"))?)?;
    let pre = &manifest["variants"]["edge"]["preprocess"];
    let (scale, mean, std) = (
        pre["scale"].as_f64().unwrap_or(1.0) as f32,
        pre["mean"][0].as_f64().unwrap_or(0.0) as f32,
        pre["std"][0].as_f64().unwrap_or(1.0) as f32,
    );

    // Both variants on every image.
    let mut results = Vec::new();
    for variant in ["edge", "cloud"] {
        let (_, engine) =
            tandem_engine::engine::start(&settings(&repo, variant), Default::default())?;
        let mut preds = Vec::with_capacity(n);
        // At most engine.max_rows_per_request (64 by default) rows per request.
        for (chunk, lab) in pixels.chunks(784 * 64).zip(labels.chunks(64)) {
            let t = InputTensor {
                name: "input".into(),
                shape: vec![lab.len() as i64, 1, 28, 28],
                data: TensorData::F32(
                    chunk
                        .iter()
                        .map(|p| (f32::from(*p) * scale - mean) / std)
                        .collect(),
                ),
            };
            let inf = engine.infer_blocking("vision-fashion", Input::tensors(vec![t]))?;
            preds.extend(inf.predictions.into_iter().map(|p| (p.index, p.score)));
        }
        results.push(preds);
    }
    let (edge, cloud) = (&results[0], &results[1]);
    // Fit on the even-indexed half, report on the odd-indexed half.
    let sample = |i: usize| tandem_hub::calibrate::fit::Sample {
        signal: edge[i].1,
        edge_right: edge[i].0 == usize::from(labels[i]),
        cloud_right: cloud[i].0 == usize::from(labels[i]),
        weight: 1.0,
    };
    let fit_half: Vec<_> = (0..n).step_by(2).map(sample).collect();
    let fitted = tandem_hub::calibrate::fit::fit(
        &fit_half,
        tandem_hub::calibrate::fit::Objective::KeepAccuracy { factor: 0.995 },
        1.0,
    )?;
    let report: Vec<usize> = (1..n).step_by(2).collect();
    let m = report.len();
    let correct = |pred: &[(usize, f32)]| {
        report
            .iter()
            .filter(|&&i| pred[i].0 == usize::from(labels[i]))
            .count() as f64
            / m as f64
    };
    let edge_acc = correct(edge);
    let cloud_acc = correct(cloud);

    // Bytes: the whole InferRequest frame with the PNG, per image.
    let frame_bytes: Vec<usize> = pixels
        .chunks(784)
        .enumerate()
        .map(|(i, px)| frame_bytes("vision-fashion", i as u64 + 1, &png(px).unwrap_or_default()))
        .collect();
    let all_bytes: usize = report.iter().map(|&i| frame_bytes[i]).sum();
    println!(
        "threshold fitted on the {} even-indexed images, every figure below on the {m} odd-indexed ones (never fitted on)",
        fit_half.len()
    );

    println!("| threshold | accuracy | vs cloud-only | offloaded | bytes uplinked vs cloud-only |");
    println!("|---|---|---|---|---|");
    println!(
        "| edge-only | {:.4} | {:.4} | 0.000 | 0.000 |",
        edge_acc,
        edge_acc / cloud_acc
    );
    println!("| cloud-only | {:.4} | 1.0000 | 1.000 | 1.000 |", cloud_acc);
    let manifest_th = manifest["variants"]["edge"]["threshold"]
        .as_f64()
        .map(|t| t as f32);
    let mut rows: Vec<(String, f32)> = (1..=19)
        .map(|step| step as f32 * 0.05)
        .map(|t| (format!("{t:.2}"), t))
        .collect();
    if let Some(t) = manifest_th {
        rows.push((format!("{t:.2} (manifest)"), t));
    }
    rows.push((
        format!("{:.4} (fitted)", fitted.threshold),
        fitted.threshold,
    ));
    let mut chosen = (0.0, 0.0);
    for (name, th) in rows {
        let mut right = 0usize;
        let mut off = 0usize;
        let mut bytes = 0usize;
        for &i in &report {
            let pick = if edge[i].1 >= th {
                edge[i].0
            } else {
                off += 1;
                bytes += frame_bytes[i];
                cloud[i].0
            };
            right += usize::from(pick == usize::from(labels[i]));
        }
        let acc = right as f64 / m as f64;
        let share = off as f64 / m as f64;
        println!(
            "| {name} | {acc:.4} | {:.4} | {share:.3} | {:.3} |",
            acc / cloud_acc,
            bytes as f64 / all_bytes as f64
        );
        if th == fitted.threshold {
            chosen = (acc / cloud_acc, share);
        }
    }
    let (th, (ratio, share)) = (fitted.threshold, chosen);
    println!();
    println!(
        "edge-only {:.2}%, cloud-only {:.2}% (report half); threshold {th:.4} fitted on the other half for the fewest offloads keeping >= 99.5% of cloud-only accuracy there (fit half: ratio {:.4}, offload {:.3})",
        edge_acc * 100.0,
        cloud_acc * 100.0,
        fitted.figures.accuracy_ratio,
        fitted.figures.offload
    );

    // Latency through the real router and hub at that threshold.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let lat = rt.block_on(latency(&repo, pixels, th, a.latency_samples))?;
    println!(
        "latency over {} images through the agent router and a real hub (QUIC + mTLS, loopback):",
        a.latency_samples
    );
    println!("| route | count | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for (route, v) in [("local", &lat.0), ("cloud", &lat.1)] {
        println!(
            "| {route} | {} | {:.3} | {:.3} |",
            v.len(),
            pct(v.clone(), 0.5),
            pct(v.clone(), 0.99)
        );
    }
    let all: Vec<f64> = lat.0.iter().chain(lat.1.iter()).copied().collect();
    println!(
        "| all | {} | {:.3} | {:.3} |",
        all.len(),
        pct(all.clone(), 0.5),
        pct(all, 0.99)
    );
    println!("cascade: accuracy_ratio={ratio:.4} offload={share:.3}");
    Ok(())
}

async fn latency(
    repo: &std::path::Path,
    pixels: &[u8],
    threshold: f32,
    samples: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let dir = std::env::temp_dir().join(format!("tandem-bench-cascade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = tandem_hub::pki::Pki::init(&dir)?;
    pki.add_device("bench", 365)?;
    let (_, hub_engine) =
        tandem_engine::engine::start(&settings(repo, "cloud"), Default::default())?;
    let ingress = tandem_hub::ingress::quic::QuicIngress::bind("127.0.0.1:0".parse()?, pki.dir())?
        .with_engine(Arc::new(hub_engine));
    let addr = ingress.local_addr()?;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ingress.run(async {
        let _ = rx.await;
    }));
    let mut cfg = Config {
        base_dir: repo.to_path_buf(),
        ..Default::default()
    };
    cfg.models.enabled = vec!["vision-fashion".into()];
    cfg.hub.address = addr.to_string();
    cfg.hub.ca = dir.join("ca.pem");
    (cfg.hub.cert, cfg.hub.key) = pki.device_files("bench");
    cfg.policy.models.insert(
        "vision-fashion".into(),
        tandem_agent::hybrid::ModelPolicyConfig {
            threshold: Some(threshold),
            ..Default::default()
        },
    );
    let engine = tandem_agent::app::start_engine(&cfg)?;
    let router = tandem_agent::app::start_router(&cfg, engine)?;
    let (mut local, mut cloud) = (Vec::new(), Vec::new());
    for px in pixels.chunks(784).take(samples) {
        let input = Input::Images(vec![Bytes::from(png(px)?)]);
        let t = Instant::now();
        let a = router.classify("vision-fashion", input, None).await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(
            !a.degraded,
            "the hub failed during the benchmark: {:?}",
            a.reason
        );
        if a.cloud.is_some() {
            cloud.push(ms)
        } else {
            local.push(ms)
        }
    }
    let _ = stop.send(());
    Ok((local, cloud))
}
