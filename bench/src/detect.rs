//! `tandem-bench detect` (make bench-detect): the detection models on the labelled photos of
//! `models/detection-set/` (labels.json): mAP@0.5, precision and recall of the boxes as the
//! engine answers them, for the edge variant, the cloud variant and the cascade (a frame goes
//! to the cloud variant when the agent's frame policy, `tandem_shared::detect::cascade`, finds
//! it unsure), the share of frames offloaded, and the engine's per-frame latency on this
//! machine (in process, 2 intra-op threads, one frame at a time; no network). The cascade's
//! policy is fitted and judged on disjoint frames (k-fold cross-validation, [`detect_fit`]).

use crate::detect_edges::Candidate;
use crate::detect_eval::{Pred, Scores, Truth, evaluate, paired_bootstrap, per_class};
use crate::detect_fit::{self, Frame};
use crate::detect_signals;
use crate::detect_views::{self, Views};
use anyhow::Context as _;
use bytes::Bytes;
use std::time::Instant;
use tandem_agent::inference::Input;
use tandem_engine::settings::EngineSettings;
use tandem_shared::detect::Detections;
use tandem_shared::detect::cascade::CascadeSpec;

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Most frames the fitted policy may offload (on the frames it is fitted on).
    #[arg(long, default_value_t = 0.30)]
    max_offload: f64,
    /// Folds of the cross-validation (frame i is in fold i mod k).
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Fold assignments of the cross-validation (repeat 0: frame i in fold i mod k; the others
    /// fixed permutations); the figure is their mean.
    #[arg(long, default_value_t = 5)]
    repeats: u64,
    /// Inner folds of the nested fit that tunes the fitting cap on the fitting frames so that
    /// their held-out offload stays under --max-offload (0 or 1: fit under --max-offload).
    #[arg(long, default_value_t = 4)]
    inner_folds: usize,
    /// Lowest uncertain-band bottom tried (the edge decodes down to it for the signals).
    #[arg(long, default_value_t = 0.10)]
    floor: f32,
    /// Skip the diagnostic that measures candidate routing signals the same way.
    #[arg(long)]
    no_signals: bool,
    /// Also measure the disagreement signals ([`detect_views`]): three more edge passes (each
    /// scale alone, the mirrored frames), their families cross-fitted like the others.
    #[arg(long)]
    disagreement: bool,
    /// Measure this candidate of models/detect-coco-edges/candidates.json (`edge-416`, the
    /// edge before; `edge-512`; `edge-2s-512`) as detect-coco's edge, beside the shipped one: its row, the
    /// cascade on top of it (the same cross-fitting), its latency over the shipped edge's.
    #[arg(long)]
    edge: Option<String>,
    /// Measure this cloud candidate of candidates.json (`cloud-2s`: the cloud file's levels
    /// without the mirrored ones; `cloud-3s-m`: a 320 px third scale too) as detect-coco's cloud, beside the shipped one; the ratio is
    /// then against it.
    #[arg(long)]
    cloud: Option<String>,
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

/// A copy of `repo`'s model `model` under a temporary folder whose `variant` decodes down to
/// `floor` (its `detection.cascade.uncertain_low`; the model files are links): the boxes it
/// answers are unchanged, those under its threshold come back as `Inference::below`. The
/// `candidates` replace the copy's variants of their roles.
fn with_floor(
    repo: &std::path::Path,
    model: &str,
    variant: &str,
    floor: f32,
    candidates: &[&Candidate],
) -> anyhow::Result<std::path::PathBuf> {
    model_copy(&repo.join("models").join(model), model, "", |m, dir| {
        for c in candidates {
            c.install(m, dir)?;
        }
        let det = &mut m["variants"][variant]["detection"];
        let high = det["cascade"]["uncertain_high"].as_f64().unwrap_or(1.0);
        det["cascade"] = serde_json::json!({"uncertain_low": floor, "uncertain_high": high});
        Ok(())
    })
}

/// A copy of the model folder `src` as `<temp>/tandem-bench-detect-<pid><suffix>/models/<model>`:
/// its manifest as `edit` leaves it (`edit` gets the copy's folder too, to add files), every
/// other file of `src` linked. Returns the copy's base, for `EngineSettings::base_dir`.
fn model_copy(
    src: &std::path::Path,
    model: &str,
    suffix: &str,
    edit: impl FnOnce(&mut serde_json::Value, &std::path::Path) -> anyhow::Result<()>,
) -> anyhow::Result<std::path::PathBuf> {
    let base = std::env::temp_dir().join(format!(
        "tandem-bench-detect-{}{suffix}",
        std::process::id()
    ));
    let dir = base.join("models").join(model);
    std::fs::create_dir_all(&dir)?;
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("manifest.json"))?)?;
    edit(&mut m, &dir)?;
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m)?)?;
    for entry in std::fs::read_dir(src)? {
        let name = entry?.file_name();
        let link = dir.join(&name);
        if name != "manifest.json" && !link.exists() {
            std::os::unix::fs::symlink(src.join(&name), link)?;
        }
    }
    Ok(base)
}

/// One variant's answers on the images, and the wall time of each inference (ms).
struct Run {
    dets: Vec<Detections>,
    below: Vec<Vec<tandem_shared::detect::Detection>>,
    ms: Vec<f64>,
}

/// Each image's detections and the wall time of its inference, in milliseconds.
fn run_variant(
    base: &std::path::Path,
    model: &str,
    variant: &str,
    images: &[&Image],
) -> anyhow::Result<Run> {
    let mut s = EngineSettings {
        base_dir: base.to_path_buf(),
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
    let mut run = Run {
        dets: Vec::new(),
        below: Vec::new(),
        ms: Vec::new(),
    };
    for im in images {
        let t = Instant::now();
        let inf = engine
            .infer_blocking(model, Input::Images(vec![im.bytes.clone()]))
            .with_context(|| format!("{model} {variant} {}", im.file))?;
        run.ms.push(t.elapsed().as_secs_f64() * 1000.0);
        run.dets
            .push(inf.detections.into_iter().next().unwrap_or_default());
        run.below
            .push(inf.below.into_iter().next().unwrap_or_default());
    }
    Ok(run)
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
        let r = run_variant(&repo, "detect-face", variant, &faced)?;
        let p: Vec<Vec<Pred>> = r.dets.iter().map(|d| preds(d, true)).collect();
        row(variant, &evaluate(&face_truth, &p), 0.0, median(&r.ms));
    }

    // Objects: NanoDet-g edge (INT8 at 608 and 416 in one graph) vs cloud (FP32 at 608 and 416
    // and on the mirror image, in one graph; boxes down to 0.2) vs cascade.
    let imgs: Vec<&Image> = all.iter().filter(|i| i.objects.is_some()).collect();
    let truth: Vec<Vec<Truth>> = imgs.iter().filter_map(|i| i.objects.clone()).collect();
    println!(
        "\ndetect-coco: {} photos, {} boxes",
        imgs.len(),
        truth.iter().map(Vec::len).sum::<usize>()
    );
    let cand = a
        .edge
        .as_deref()
        .map(|n| Candidate::load(&repo, n, "edge"))
        .transpose()?;
    let cloud_cand = a
        .cloud
        .as_deref()
        .map(|n| Candidate::load(&repo, n, "cloud"))
        .transpose()?;
    let installed: Vec<&Candidate> = cand.iter().chain(cloud_cand.iter()).collect();
    let floored = with_floor(&repo, "detect-coco", "edge", a.floor, &installed)?;
    let runs = run_variant(&floored, "detect-coco", "edge", &imgs).and_then(|e| {
        let views = match a.disagreement {
            true => views(&floored, &imgs, &e)?,
            false => vec![Views::default(); imgs.len()],
        };
        Ok((
            e,
            run_variant(&floored, "detect-coco", "cloud", &imgs)?,
            views,
        ))
    });
    let _ = std::fs::remove_dir_all(&floored);
    let (edge, cloud, views) = runs?;
    let ep: Vec<Vec<Pred>> = edge.dets.iter().map(|d| preds(d, false)).collect();
    let cp: Vec<Vec<Pred>> = cloud.dets.iter().map(|d| preds(d, false)).collect();
    let (es, cs) = (evaluate(&truth, &ep), evaluate(&truth, &cp));
    let (em, cm) = (median(&edge.ms), median(&cloud.ms));
    let shipped = format!("INT8 {}", architecture(&repo, "edge")?);
    header();
    match &cand {
        Some(c) => row(&format!("edge ({}, {})", c.label(), c.name), &es, 0.0, em),
        None => row(&format!("edge ({shipped})"), &es, 0.0, em),
    }
    let shipped_cloud = format!("FP32 {}", architecture(&repo, "cloud")?);
    match &cloud_cand {
        Some(c) => row(&format!("cloud ({}, {})", c.label(), c.name), &cs, 1.0, cm),
        None => row(&format!("cloud ({shipped_cloud}, >= 0.2)"), &cs, 1.0, cm),
    }
    // The shipped variant beside a candidate: its row, its answers and its p50 (ms).
    let beside = |variant: &str, label: &str, offload: f64| -> anyhow::Result<_> {
        let base = run_variant(&repo, "detect-coco", variant, &imgs)?;
        let bp: Vec<Vec<Pred>> = base.dets.iter().map(|d| preds(d, false)).collect();
        let bm = median(&base.ms);
        row(
            &format!("shipped {variant} ({label})"),
            &evaluate(&truth, &bp),
            offload,
            bm,
        );
        Ok((bp, bm))
    };
    if let Some(c) = &cloud_cand {
        let (bp, _) = beside("cloud", &shipped_cloud, 1.0)?;
        bootstrap_line(&format!("shipped cloud - {}", c.name), &truth, &bp, &cp);
    }
    // What a candidate edge costs the device.
    if let Some(c) = &cand {
        let (bp, bm) = beside("edge", &shipped, 0.0)?;
        println!(
            "  {} per frame: p50 {em:.1} ms = {:.2}x the shipped edge's {bm:.1} ms (this run)",
            c.name,
            em / bm.max(1e-9)
        );
        bootstrap_line(&format!("{} - shipped edge", c.name), &truth, &ep, &bp);
    }
    bootstrap_line("cloud - edge", &truth, &cp, &ep);
    // Diagnostic, not an answer: the edge's boxes down to the cloud's answer threshold (the
    // edge decoded down to `--floor`), to tell the models apart from their thresholds.
    let cloud_thr = threshold(&repo, "cloud")?;
    if a.floor <= cloud_thr {
        let low: Vec<Vec<Pred>> = (0..imgs.len())
            .map(|i| {
                let mut p = ep[i].clone();
                let below = Detections {
                    boxes: edge.below[i].clone(),
                    ..Default::default()
                };
                p.extend(
                    preds(&below, false)
                        .into_iter()
                        .filter(|b| b.score >= cloud_thr),
                );
                p
            })
            .collect();
        row(
            &format!("edge >= {cloud_thr:.2} (not answered)"),
            &evaluate(&truth, &low),
            0.0,
            f64::NAN,
        );
    }

    // Where the edge loses to the cloud: AP@0.5 per labelled class, both as answered.
    println!("  AP@0.5 per class (boxes): edge / cloud");
    for (e, c) in per_class(&truth, &ep).iter().zip(per_class(&truth, &cp)) {
        println!(
            "    {:<14} {:>3} {:>7.3} {:>7.3}",
            e.label, e.boxes, e.ap50, c.ap50
        );
    }

    let mut frames: Vec<Frame> = views
        .into_iter()
        .enumerate()
        .map(|(i, views)| Frame {
            width: edge.dets[i].width,
            height: edge.dets[i].height,
            edge: edge.dets[i].boxes.clone(),
            below: edge.below[i].clone(),
            edge_preds: ep[i].clone(),
            cloud_preds: cp[i].clone(),
            truth: truth[i].clone(),
            views,
        })
        .collect();
    if a.disagreement {
        let all = detect_views::all(a.floor);
        for f in &mut frames {
            Views::tally(f, &all);
        }
    }
    let answer = match &cand {
        Some(c) => c.variant["detection"]["score_threshold"]
            .as_f64()
            .context("candidate's detection.score_threshold")? as f32,
        None => threshold(&repo, "edge")?,
    };
    let grid = detect_fit::grid(a.floor, answer);
    let mut held = Vec::new();
    for r in 0..a.repeats.max(1) {
        let order = detect_fit::order(frames.len(), r);
        held.push(
            detect_fit::cross_validate(
                &frames,
                &order,
                &grid,
                a.max_offload,
                a.folds,
                a.inner_folds,
            )
            .context("no policy of the grid keeps the offload under --max-offload")?,
        );
    }
    let n = held.len() as f64;
    let mean =
        |f: &dyn Fn(&detect_fit::Held<CascadeSpec>) -> f64| held.iter().map(f).sum::<f64>() / n;
    let (map50, offload) = (mean(&|h| h.scores.map50), mean(&|h| h.offload));
    let s = Scores {
        map50,
        precision: mean(&|h| h.scores.precision),
        recall: mean(&|h| h.scores.recall),
    };
    row(
        &format!("cascade ({}-fold, {} rep.)", a.folds, held.len()),
        &s,
        offload,
        em + offload * cm,
    );
    for (r, h) in held.iter().enumerate() {
        println!(
            "  repeat {r}: mAP@0.5 {:.3} (ratio {:.3}), offload {:.1}%",
            h.scores.map50,
            h.scores.map50 / cs.map50.max(1e-9),
            h.offload * 100.0
        );
    }
    if let Some(h) = held.first() {
        for (k, p) in h.policies.iter().enumerate() {
            println!(
                "  repeat 0, fold {k} policy (fitted on the other folds under {:.0}%): {}",
                p.cap * 100.0,
                show(&p.policy)
            );
        }
    }
    let all: Vec<&Frame> = frames.iter().collect();
    if let Some(f) = detect_fit::fit_nested(&all, &grid, a.max_offload, a.inner_folds) {
        println!(
            "  fitted on all {} frames under {:.0}% (the manifest's default; in-sample mAP@0.5 \
             {:.3}, offload {:.1}%: not the figure): {}",
            frames.len(),
            f.cap * 100.0,
            f.scores.map50,
            f.offload * 100.0,
            show(&f.policy)
        );
        println!(
            "  as the manifest's detection.cascade: {}",
            serde_json::to_string(&f.policy).unwrap_or_default()
        );
    }
    oracle(&all, a.max_offload, cs.map50);
    if !a.no_signals || a.disagreement {
        signals(a, &frames, cs.map50, answer);
    }
    println!(
        "cascade: policy fitted on {}/{} of the frames, mAP@0.5 and offload on the held-out \
         rest, {} folds pooled (never on what was fitted), the mean of {} fold assignments; \
         latency: edge p50 + offload share x cloud p50 (in process, no network)",
        a.folds - 1,
        a.folds,
        a.folds,
        held.len()
    );
    println!(
        "detect: cascade_map50_ratio={:.3} offload={:.3}",
        map50 / cs.map50.max(1e-9),
        offload
    );
    Ok(())
}

/// Diagnostic: how much of the cloud's lead a router reading the labels captures
/// ([`detect_fit::oracle`]): the ratio at the last step and the least offload reaching 0.97.
fn oracle(frames: &[&Frame], max_offload: f64, cloud: f64) {
    let path = detect_fit::oracle(frames, max_offload);
    let ratio = |s: &Scores| s.map50 / cloud.max(1e-9);
    let reach = path.iter().find(|(s, _)| ratio(s) >= 0.97);
    let (last, sent) = path[path.len() - 1];
    println!(
        "  reference, not a policy: frames chosen by their labels (greedy, in-sample): ratio {:.3} \
         at {:.1}%; 0.97 first at {}",
        ratio(&last),
        sent * 100.0,
        reach.map_or("no share under the cap".into(), |(_, o)| format!(
            "{:.1}%",
            o * 100.0
        ))
    );
}

/// Diagnostic: each candidate routing signal's held-out ratio and offload, cross-fitted as
/// the policy is (same folds, repeats and nested cap), and its fit on all frames.
fn signals(a: &Args, frames: &[Frame], cloud: f64, answer: f32) {
    println!(
        "  routing signals (held-out ratio and offload, mean of {} fold assignments; then each):",
        a.repeats.max(1)
    );
    println!(
        "    {:<38} {:>6} {:>6} {:>7}  assignments",
        "signal", "rules", "ratio", "offload"
    );
    if !a.no_signals {
        for fam in detect_signals::families(a.floor, answer) {
            measure(a, frames, cloud, &fam.name, &fam.rules, |r| r.show());
        }
    }
    if a.disagreement {
        let band: Vec<detect_signals::Rule> = detect_fit::band_grid(a.floor)
            .iter()
            .map(detect_signals::Rule::of)
            .collect();
        for (name, rules) in detect_views::families(a.floor, &band) {
            measure(a, frames, cloud, &name, &rules, |r| r.show());
        }
    }
}

/// One family's line of [`signals`]: its held-out ratio and offload (the mean over the fold
/// assignments, then each), and its fit on all frames.
fn measure<P: detect_fit::Route>(
    a: &Args,
    frames: &[Frame],
    cloud: f64,
    name: &str,
    rules: &[P],
    show: impl Fn(&P) -> String,
) {
    let held: Vec<_> = (0..a.repeats.max(1))
        .filter_map(|r| {
            let order = detect_fit::order(frames.len(), r);
            detect_fit::cross_validate(frames, &order, rules, a.max_offload, a.folds, a.inner_folds)
        })
        .collect();
    if held.is_empty() {
        let quietest = rules
            .iter()
            .map(|r| frames.iter().filter(|f| r.offloads(f)).count())
            .min()
            .unwrap_or(0);
        println!(
            "    {:<38} {:>6}   none under the cap: the quietest rule offloads {:.1}%",
            name,
            rules.len(),
            100.0 * quietest as f64 / frames.len().max(1) as f64
        );
        return;
    }
    let n = held.len() as f64;
    let ratio = held.iter().map(|h| h.scores.map50).sum::<f64>() / n / cloud.max(1e-9);
    let offload = held.iter().map(|h| h.offload).sum::<f64>() / n;
    let each: Vec<String> = held
        .iter()
        .map(|h| {
            format!(
                "{:.3}@{:.0}%",
                h.scores.map50 / cloud.max(1e-9),
                h.offload * 100.0
            )
        })
        .collect();
    println!(
        "    {:<38} {:>6} {:>6.3} {:>6.1}%  {}",
        name,
        rules.len(),
        ratio,
        offload * 100.0,
        each.join(" ")
    );
    let all: Vec<&Frame> = frames.iter().collect();
    if let Some(f) = detect_fit::fit_nested(&all, rules, a.max_offload, a.inner_folds) {
        println!("      on all frames: {}", show(&f.policy));
    }
}

/// The edge's other views of each image ([`detect_views::Views`]): its 608 and 416 branches
/// alone (copies of the floored model folder `floored` decoding one branch's levels) and its
/// answer on the mirrored image (decoded here, mirrored, sent as an RGB24 frame), boxes down
/// to the floor. `edge` is the edge's run, for the widths.
fn views(floored: &std::path::Path, imgs: &[&Image], edge: &Run) -> anyhow::Result<Vec<Views>> {
    let all = |r: Run| -> Vec<Vec<tandem_shared::detect::Detection>> {
        r.dets
            .into_iter()
            .zip(r.below)
            .map(|(d, b)| d.boxes.into_iter().chain(b).collect())
            .collect()
    };
    let branch = |tag: &str, s416: bool| -> anyhow::Result<_> {
        let dir = one_branch(floored, tag, s416)?;
        let run = run_variant(&dir, "detect-coco", "edge", imgs);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(all(run?))
    };
    let s608 = branch("608", false)?;
    let s416 = branch("416", true)?;
    let flipped: Vec<Image> = imgs
        .iter()
        .map(|im| mirrored(im))
        .collect::<Result<_, _>>()?;
    let flipped: Vec<&Image> = flipped.iter().collect();
    let mirrored = all(run_variant(floored, "detect-coco", "edge", &flipped)?);
    Ok(s608
        .into_iter()
        .zip(s416)
        .zip(mirrored)
        .zip(&edge.dets)
        .map(|(((s608, s416), m), d)| Views {
            s608,
            s416,
            mirrored: detect_views::mirror_back(&m, d.width),
            counts: Vec::new(),
        })
        .collect())
}

/// A copy of the floored model folder under `base` (see [`with_floor`]) whose edge variant
/// decodes only its 416 px levels (`s416`) or only the others.
fn one_branch(base: &std::path::Path, tag: &str, s416: bool) -> anyhow::Result<std::path::PathBuf> {
    let src = base.join("models/detect-coco");
    model_copy(&src, "detect-coco", &format!("-{tag}"), |m, _| {
        let levels = m["variants"]["edge"]["detection"]["decode"]["levels"]
            .as_array_mut()
            .context("edge variant: detection.decode.levels")?;
        levels.retain(|l| {
            (l["input_size"].as_array().and_then(|s| s.first()?.as_u64()) == Some(416)) == s416
        });
        anyhow::ensure!(
            !levels.is_empty(),
            "edge variant: no levels of the {tag} branch"
        );
        Ok(())
    })
}

/// `im` mirrored left-right, as an RGB24 raw frame (`tandem_shared::frame`).
fn mirrored(im: &Image) -> anyhow::Result<Image> {
    let rgb = image::load_from_memory(&im.bytes)
        .with_context(|| im.file.clone())?
        .to_rgb8();
    let flipped = image::imageops::flip_horizontal(&rgb);
    let spec = tandem_shared::frame::FrameSpec {
        format: tandem_shared::frame::FrameFormat::Rgb24,
        width: flipped.width(),
        height: flipped.height(),
        stride: flipped.width() * 3,
    };
    Ok(Image {
        file: format!("{} (mirrored)", im.file),
        bytes: Bytes::from(spec.encode(flipped.as_raw())?),
        objects: None,
        faces: None,
    })
}

/// Variant `variant` of the repository's detect-coco manifest.
fn shipped_variant(repo: &std::path::Path, variant: &str) -> anyhow::Result<serde_json::Value> {
    let path = repo.join("models/detect-coco/manifest.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    Ok(m["variants"][variant].take())
}

/// A detect-coco variant's size as its `architecture` names it (`608+416`).
fn architecture(repo: &std::path::Path, variant: &str) -> anyhow::Result<String> {
    let v = shipped_variant(repo, variant)?;
    let arch = v["architecture"]
        .as_str()
        .with_context(|| format!("detect-coco manifest: variants.{variant}.architecture"))?;
    Ok(crate::detect_edges::size(arch).to_string())
}

/// `  paired bootstrap over photos, NAME: mean +d, 90% interval [lo, hi], share <= 0: s`.
fn bootstrap_line(name: &str, truth: &[Vec<Truth>], a: &[Vec<Pred>], b: &[Vec<Pred>]) {
    let d = paired_bootstrap(truth, a, b, BOOTSTRAP);
    println!(
        "  paired bootstrap over photos ({BOOTSTRAP} resamples), mAP@0.5 {name}: mean {:+.3}, \
         90% interval [{:+.3}, {:+.3}], share <= 0: {:.3}",
        d.mean, d.low, d.high, d.share_le_zero
    );
}

/// Resamples of the paired bootstraps.
const BOOTSTRAP: usize = 1000;

/// A detect-coco variant's answer threshold (`detection.score_threshold` in its manifest).
fn threshold(repo: &std::path::Path, variant: &str) -> anyhow::Result<f32> {
    shipped_variant(repo, variant)?["detection"]["score_threshold"]
        .as_f64()
        .map(|v| v as f32)
        .with_context(|| {
            format!("detect-coco manifest: variants.{variant}.detection.score_threshold")
        })
}

fn show(p: &CascadeSpec) -> String {
    let rare = match (p.rare_low, p.rare_high) {
        (Some(low), Some(high)) => format!(
            ", or >= {} box(es) not {} in [{low:.2}, {high:.2})",
            p.rare_boxes.unwrap_or(1),
            p.common_classes.join("/")
        ),
        _ => String::new(),
    };
    format!(
        "band [{:.2}, {:.2}), >= {} box(es) in it{}{rare}",
        p.uncertain_low,
        p.uncertain_high,
        p.uncertain_boxes,
        p.max_boxes
            .map(|m| format!(", or > {m} boxes"))
            .unwrap_or_default()
    )
}
