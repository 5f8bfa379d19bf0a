//! `tandem-bench detect` (make bench-detect): the detection models on the labelled photos of
//! `models/detection-set/` (labels.json): mAP@0.5, precision and recall of the boxes as the
//! engine answers them, for the edge variant, the cloud variant and the cascade (a frame goes
//! to the cloud variant when the edge answer holds a box scoring under the band's top: an
//! uncertain box), the share of frames offloaded, and the engine's per-frame latency on this
//! machine (in process, 2 intra-op threads, one frame at a time; no network).

use crate::detect_eval::{Pred, Scores, Truth, evaluate};
use anyhow::Context as _;
use bytes::Bytes;
use std::time::Instant;
use tandem_agent::inference::Input;
use tandem_engine::settings::EngineSettings;
use tandem_shared::detect::Detections;

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Most frames offloaded in the cascade (the band is the widest that stays under it).
    #[arg(long, default_value_t = 0.30)]
    max_offload: f64,
}

struct Image {
    file: String,
    bytes: Bytes,
    objects: Option<Vec<Truth>>,
    faces: Option<Vec<Truth>>,
}

fn truths(v: &serde_json::Value, face: bool) -> Option<Vec<Truth>> {
    let arr = v.as_array()?;
    Some(
        arr.iter()
            .filter_map(|b| {
                let (label, bx) = if face {
                    ("face".to_string(), b)
                } else {
                    (b["label"].as_str()?.to_string(), &b["box"])
                };
                let c: Vec<f32> = bx
                    .as_array()?
                    .iter()
                    .filter_map(|x| x.as_f64())
                    .map(|x| x as f32)
                    .collect();
                Some(Truth {
                    label,
                    bbox: [*c.first()?, *c.get(1)?, *c.get(2)?, *c.get(3)?],
                })
            })
            .collect(),
    )
}

fn load(repo: &std::path::Path) -> anyhow::Result<Vec<Image>> {
    let dir = repo.join("models/detection-set");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("labels.json"))?)?;
    let mut out = Vec::new();
    for im in doc["images"].as_array().context("images")? {
        let file = im["file"].as_str().context("file")?.to_string();
        let bytes = Bytes::from(std::fs::read(dir.join(&file)).with_context(|| file.clone())?);
        out.push(Image {
            file,
            bytes,
            objects: truths(&im["objects"], false),
            faces: truths(&im["faces"], true),
        });
    }
    Ok(out)
}

/// Each image's detections and the wall time of its inference, in milliseconds.
fn run_variant(
    repo: &std::path::Path,
    model: &str,
    variant: &str,
    images: &[&Image],
) -> anyhow::Result<(Vec<Detections>, Vec<f64>)> {
    let mut s = EngineSettings {
        base_dir: repo.to_path_buf(),
        ..Default::default()
    };
    s.models.enabled = vec![model.into()];
    s.models.variant = variant.into();
    s.runtime.intra_op_threads = 2;
    let (_, engine) = tandem_engine::engine::start(&s, Default::default())?;
    // One warm-up run: session start-up is not a frame's cost.
    if let Some(first) = images.first() {
        engine.infer_blocking(model, Input::Images(vec![first.bytes.clone()]))?;
    }
    let (mut dets, mut ms) = (Vec::new(), Vec::new());
    for im in images {
        let t = Instant::now();
        let inf = engine
            .infer_blocking(model, Input::Images(vec![im.bytes.clone()]))
            .with_context(|| format!("{model} {variant} {}", im.file))?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        dets.push(inf.detections.into_iter().next().unwrap_or_default());
    }
    Ok((dets, ms))
}

fn preds(d: &Detections, face: bool) -> Vec<Pred> {
    d.boxes
        .iter()
        .map(|b| Pred {
            label: if face { "face".into() } else { b.label.clone() },
            bbox: b.bbox,
            score: b.score,
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn row(name: &str, s: &Scores, offload: f64, ms: f64) {
    println!(
        "{name:<28} {:>7.3} {:>9.3} {:>7.3} {:>8.1}% {:>9.1}",
        s.map50,
        s.precision,
        s.recall,
        offload * 100.0,
        ms
    );
}

/// Runs the benchmark; the last line is `detect: cascade_map50_ratio=X offload=Y`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let repo = crate::procs::repo()?;
    let all = load(&repo)?;
    let header = || {
        println!(
            "{:<28} {:>7} {:>9} {:>7} {:>9} {:>9}",
            "", "mAP@0.5", "precision", "recall", "offload", "p50 ms"
        )
    };

    // Faces: CenterFace edge (INT8) vs cloud (FP32).
    let faced: Vec<&Image> = all.iter().filter(|i| i.faces.is_some()).collect();
    let face_truth: Vec<Vec<Truth>> = faced.iter().filter_map(|i| i.faces.clone()).collect();
    println!(
        "detect-face: {} photos, {} faces",
        faced.len(),
        face_truth.iter().map(Vec::len).sum::<usize>()
    );
    header();
    for variant in ["edge", "cloud"] {
        let (d, ms) = run_variant(&repo, "detect-face", variant, &faced)?;
        let p: Vec<Vec<Pred>> = d.iter().map(|d| preds(d, true)).collect();
        row(variant, &evaluate(&face_truth, &p), 0.0, median(&ms));
    }

    // Objects: NanoDet-g edge (INT8 416) vs cloud (FP32 416, boxes down to 0.2) vs cascade.
    let imgs: Vec<&Image> = all.iter().filter(|i| i.objects.is_some()).collect();
    let truth: Vec<Vec<Truth>> = imgs.iter().filter_map(|i| i.objects.clone()).collect();
    println!(
        "\ndetect-coco: {} photos, {} boxes",
        imgs.len(),
        truth.iter().map(Vec::len).sum::<usize>()
    );
    let (edge, edge_ms) = run_variant(&repo, "detect-coco", "edge", &imgs)?;
    let (cloud, cloud_ms) = run_variant(&repo, "detect-coco", "cloud", &imgs)?;
    let ep: Vec<Vec<Pred>> = edge.iter().map(|d| preds(d, false)).collect();
    let cp: Vec<Vec<Pred>> = cloud.iter().map(|d| preds(d, false)).collect();
    let (es, cs) = (evaluate(&truth, &ep), evaluate(&truth, &cp));
    let (em, cm) = (median(&edge_ms), median(&cloud_ms));
    header();
    row("edge (INT8 416)", &es, 0.0, em);
    row("cloud (FP32 416, >= 0.2)", &cs, 1.0, cm);

    // The band sweep: offload when a kept edge box scores under `top`.
    let mut best: Option<(f32, Scores, f64)> = None;
    let mut top = 0.36f32;
    while top <= 0.80 {
        let send: Vec<bool> = edge
            .iter()
            .map(|d| d.boxes.iter().any(|b| b.score < top))
            .collect();
        let offload = send.iter().filter(|s| **s).count() as f64 / send.len().max(1) as f64;
        let mixed: Vec<Vec<Pred>> = send
            .iter()
            .enumerate()
            .map(|(i, s)| if *s { cp[i].clone() } else { ep[i].clone() })
            .collect();
        let s = evaluate(&truth, &mixed);
        println!(
            "  cascade, uncertain box < {top:.2}: mAP@0.5 {:.3}, offload {:.1}%",
            s.map50,
            offload * 100.0
        );
        if offload <= a.max_offload + 1e-9 && best.as_ref().is_none_or(|b| s.map50 > b.1.map50) {
            best = Some((top, s, offload));
        }
        top += 0.04;
    }
    let (top, s, offload) = best.context("no band keeps the offload under --max-offload")?;
    row(
        &format!("cascade (box < {top:.2})"),
        &s,
        offload,
        em + offload * cm,
    );
    println!(
        "cascade latency: edge p50 + offload share x cloud p50 (in process, no network); \
         band chosen on this same set (indicative)"
    );
    println!(
        "detect: cascade_map50_ratio={:.3} offload={:.3}",
        s.map50 / cs.map50.max(1e-9),
        offload
    );
    Ok(())
}
