//! The evaluation metrics against an independent computation (numpy in the checkout's venv,
//! `make setup`), and the whole evaluation path (shipped set → real engine → metrics) against
//! the accuracy the model build measured in Python (the manifest's figure): equal, but for the
//! samples where the engine's answer differs from Python's recorded one by a near tie
//! (`tandem_tests::reference`), each checked against Python's answer for that file.

use std::process::Command;
use tandem_hub::eval::metrics::{Judged, compute};
use tandem_tests::reference::{MAX_NEAR_TIES, near_tie};
use tandem_tests::repo;

/// Deterministic pseudo-random items over 5 classes: a prediction right about 60% of the time,
/// a confidence that tends to be higher when right.
fn items(n: usize) -> Vec<Judged> {
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..n)
        .map(|_| {
            let truth = (next() % 5) as usize;
            let right = next() % 10 < 6;
            let predicted = if right { truth } else { (next() % 5) as usize };
            let base = if predicted == truth { 0.5 } else { 0.2 };
            let confidence = (base + (next() % 1000) as f32 / 2000.0).min(1.0);
            Judged {
                truth,
                predicted,
                confidence,
            }
        })
        .collect()
}

const NUMPY: &str = r#"
import json, sys
import numpy as np
d = json.load(sys.stdin)
t = np.array(d["truth"]); p = np.array(d["pred"]); c = np.array(d["conf"], dtype=np.float64)
k = d["k"]
cm = np.zeros((k, k), dtype=np.int64)
np.add.at(cm, (t, p), 1)
tp = np.diag(cm).astype(float)
support = cm.sum(axis=1); predicted = cm.sum(axis=0)
prec = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
rec = np.divide(tp, support, out=np.zeros(k), where=support > 0)
f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(k), where=(prec + rec) > 0)
present = (support > 0) | (predicted > 0)
B = 15
edges = np.linspace(0.0, 1.0, B + 1)
idx = np.clip(np.searchsorted(edges, c, side="left") - 1, 0, B - 1)
ece = 0.0
for b in range(B):
    m = idx == b
    if m.any():
        ece += m.mean() * abs((t[m] == p[m]).mean() - c[m].mean())
print(json.dumps({"accuracy": float((t == p).mean()), "precision": prec.tolist(),
  "recall": rec.tolist(), "f1": f1.tolist(), "macro_f1": float(f1[present].mean()),
  "ece": float(ece), "confusion": cm.tolist()}))
"#;

#[test]
fn metrics_match_numpy() {
    let items = items(3000);
    let labels: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
    let m = compute(&labels, &items);
    let input = serde_json::json!({
        "k": 5,
        "truth": items.iter().map(|j| j.truth).collect::<Vec<_>>(),
        "pred": items.iter().map(|j| j.predicted).collect::<Vec<_>>(),
        // As f64, exactly the f32 values the Rust side used.
        "conf": items.iter().map(|j| f64::from(j.confidence)).collect::<Vec<_>>(),
    });
    let python = repo().join(".venv/bin/python");
    let mut child = Command::new(&python)
        .args(["-c", NUMPY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} (run `make setup`): {e}", python.display()));
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("numpy");
    assert!(out.status.success(), "numpy script failed");
    let np: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let close = |a: f64, b: &serde_json::Value| {
        let b = b.as_f64().expect("number");
        assert!((a - b).abs() < 1e-9, "{a} vs numpy {b}");
    };
    close(m.accuracy, &np["accuracy"]);
    close(m.macro_f1, &np["macro_f1"]);
    close(m.ece, &np["ece"]);
    for (i, c) in m.classes.iter().enumerate() {
        close(c.precision, &np["precision"][i]);
        close(c.recall, &np["recall"][i]);
        close(c.f1, &np["f1"][i]);
    }
    let cm: Vec<Vec<u64>> = serde_json::from_value(np["confusion"].clone()).expect("matrix");
    assert_eq!(m.confusion, cm);
    assert!(m.ece > 0.0 && m.accuracy > 0.5 && m.accuracy < 0.8, "{m:?}");
}

/// Where a model's shipped set is its samples, Python's recorded answer for each
/// (`testdata/expected.json`) against the engine's on the same file: the net change in correct
/// answers over the near ties, after checking that every difference is one. Also checks that
/// the recorded answers give the manifest's figure (they are the same build's).
fn near_tie_shift(model: &str, variant: &str, n: u64, build_top1: f64) -> (i64, usize) {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo()
                .join("models")
                .join(model)
                .join("testdata/expected.json"),
        )
        .expect("expected.json"),
    )
    .expect("json");
    let cases: Vec<&serde_json::Value> = expected["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["variant"] == variant && c["true_index"].is_u64())
        .collect();
    if cases.len() as u64 != n {
        return (0, 0); // not the samples (e.g. Fashion-MNIST's 10,000): figures compared as they are
    }
    let right = |c: &serde_json::Value| c["top1_index"] == c["true_index"];
    let python = cases.iter().filter(|c| right(c)).count() as f64 / n as f64;
    assert!(
        (python - build_top1).abs() < 1e-3,
        "{model}: expected.json gives {python}, the manifest {build_top1}"
    );
    let mut s = tandem_engine::settings::EngineSettings {
        base_dir: repo(),
        ..Default::default()
    };
    s.models.enabled = vec![model.into()];
    s.models.variant = variant.into();
    let (_, engine) = tandem_engine::engine::start(&s, Default::default()).expect("engine");
    let (mut shift, mut ties) = (0i64, 0);
    for c in cases {
        let file = c["input"].as_str().expect("input");
        let bytes = std::fs::read(repo().join("models").join(model).join(file)).expect("sample");
        let input = tandem_engine::Input::Images(vec![bytes.into()]);
        let inf = engine.infer_blocking(model, input).expect("infers");
        let p = &inf.predictions[0];
        let want = c["top1_index"].as_u64().expect("top1_index") as usize;
        if p.index == want {
            continue;
        }
        let top_k = p.top_k.iter().map(|s| (s.index, s.score));
        assert!(
            near_tie(p.score, top_k, want),
            "{model} {file}: engine {} ({:.3}), Python {} ({}): not a near tie",
            p.label,
            p.score,
            c["top1"],
            c["score"]
        );
        let truth = c["true_index"].as_u64().expect("true_index") as usize;
        shift += i64::from(p.index == truth) - i64::from(want == truth);
        ties += 1;
    }
    (shift, ties)
}

/// The whole path on the real models: each shipped set evaluated by the Rust engine gives the
/// accuracy the model build measured with Python onnxruntime (manifest `accuracy.top1`), moved
/// only by the near ties [`near_tie_shift`] finds, and each report is kept with its version,
/// listed again after the store is reopened.
#[test]
fn shipped_sets_give_the_accuracy_the_build_measured() {
    use tandem_hub::eval::store::{ReportStore, SledReports};
    use tandem_hub::eval::{EvalRequest, Evaluator, SetKind};
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = tandem_hub::config::Config {
        base_dir: repo(),
        ..Default::default()
    };
    let evaluator = Evaluator {
        settings: cfg.engine_settings(),
        cfg: cfg.eval.clone(),
        reports: std::sync::Arc::new(SledReports::open(dir.path()).expect("store")),
        feedback: None,
    };
    let (mut ids, mut ties) = (Vec::new(), 0);
    for model in ["vision-fashion", "vision-imagenet"] {
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(repo().join("models").join(model).join("manifest.json"))
                .expect("manifest"),
        )
        .expect("json");
        let acc = &manifest["variants"]["edge"]["accuracy"];
        let req = EvalRequest {
            model: model.into(),
            variant: "edge".into(),
            set: SetKind::Shipped,
            split: None,
            limit: 0,
            shifts: Some(Vec::new()),
        };
        let r = evaluator.run(&req, Default::default()).expect("evaluates");
        assert_eq!(
            r.overall.n,
            acc["samples"].as_u64().expect("samples"),
            "{model}"
        );
        let want = acc["top1"].as_f64().expect("top1");
        let (shift, t) = near_tie_shift(model, "edge", r.overall.n, want);
        ties += t;
        let moved = want + shift as f64 / r.overall.n as f64;
        assert!(
            (r.overall.accuracy - moved).abs() < 1e-3,
            "{model}: {} vs the build's {want} ({shift:+} answers by {t} near ties)",
            r.overall.accuracy
        );
        assert_eq!(r.version, manifest["version"].as_str().expect("version"));
        ids.push(r.id);
    }
    assert!(ties <= MAX_NEAR_TIES, "{ties} near ties");
    drop(evaluator);
    let store = SledReports::open(dir.path()).expect("reopen at once");
    let listed: Vec<String> = store
        .list(None)
        .expect("list")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, ids);
    assert_eq!(store.list(Some("vision-imagenet")).expect("list").len(), 1);
}
