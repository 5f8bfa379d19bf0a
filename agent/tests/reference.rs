//! Rust vs Python: the same input tensors through the engine give the reference outputs that
//! Python onnxruntime produced (FP32: max abs diff <= 1e-4; INT8: same top-1), and end to end
//! from the committed sample files the top-1 agrees with the Python pipeline (one INT8 near
//! tie allowed: `tandem_tests::reference`).

mod common;

use bytes::Bytes;
use common::{
    engine, infer_reference_case, model_names, models_dir, read_json, variant_cases,
    variant_present,
};
use tandem_agent::inference::Input;
use tandem_shared::oip::TensorData;
use tandem_tests::reference::{MAX_NEAR_TIES, near_tie};

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

#[test]
fn engine_outputs_match_python_onnxruntime() {
    let mut checked = 0;
    for model in model_names() {
        let refs = read_json(&models_dir().join(&model).join("testdata/reference.json"));
        let manifest = read_json(&models_dir().join(&model).join("manifest.json"));
        for variant in ["edge", "cloud"] {
            if !variant_present(&model, variant) {
                continue;
            }
            let quantized = manifest["variants"][variant]["quantization"]
                .as_str()
                .unwrap_or("none")
                != "none";
            let e = engine(&[&model], variant);
            for case in variant_cases(&refs, variant) {
                let inf = infer_reference_case(&e, &model, case);
                for want in case["outputs"].as_array().expect("outputs") {
                    let name = want["name"].as_str().expect("name");
                    let got = inf
                        .outputs
                        .iter()
                        .find(|o| o.name == name)
                        .unwrap_or_else(|| panic!("{model} {variant}: no output {name}"));
                    let TensorData::F32(got) = &got.data else {
                        panic!("float output")
                    };
                    let want: Vec<f32> = want["data"]
                        .as_array()
                        .expect("data")
                        .iter()
                        .map(|v| v.as_f64().expect("num") as f32)
                        .collect();
                    assert_eq!(got.len(), want.len(), "{model} {variant} {name}: length");
                    let diff = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0f32, f32::max);
                    let rows = inf.predictions.len().max(1);
                    let per = want.len() / rows;
                    for r in 0..rows {
                        let (g, w) = (&got[r * per..(r + 1) * per], &want[r * per..(r + 1) * per]);
                        assert_eq!(
                            argmax(g),
                            argmax(w),
                            "{model} {variant} {}: top-1 differs",
                            case["source"]
                        );
                    }
                    if !quantized {
                        assert!(
                            diff <= 1e-4,
                            "{model} {variant} {}: max abs diff {diff} > 1e-4",
                            case["source"]
                        );
                    }
                    eprintln!(
                        "{model} {variant} {}: max abs diff {diff:e}",
                        case["source"]
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} reference outputs checked");
}

#[test]
fn end_to_end_top1_matches_python_pipeline() {
    let (mut checked, mut near_ties) = (0, 0);
    for model in model_names() {
        let expected = read_json(&models_dir().join(&model).join("testdata/expected.json"));
        for variant in ["edge", "cloud"] {
            if !variant_present(&model, variant) {
                continue;
            }
            let e = engine(&[&model], variant);
            for case in expected["cases"]
                .as_array()
                .expect("cases")
                .iter()
                .filter(|c| c["variant"] == variant)
            {
                let (what, input) = match (case["input"].as_str(), case["text"].as_str()) {
                    (Some(file), _) => {
                        let bytes = std::fs::read(models_dir().join(&model).join(file))
                            .expect("sample file");
                        (file.to_string(), Input::Images(vec![Bytes::from(bytes)]))
                    }
                    (None, Some(text)) => (text.to_string(), Input::Texts(vec![text.to_string()])),
                    _ => panic!("case without input or text: {case}"),
                };
                let inf = e.infer_blocking(&model, input).expect("inference runs");
                let p = &inf.predictions[0];
                let want = case["top1_index"].as_u64().expect("top1_index") as usize;
                if p.index != want {
                    let theirs = p.top_k.iter().map(|s| (s.index, s.score));
                    assert!(
                        near_tie(p.score, theirs, want),
                        "{model} {variant} {what}: Rust says {} ({:.3}), Python {} ({}); Rust's top-k {:?}",
                        p.label,
                        p.score,
                        case["top1"],
                        case["score"],
                        p.top_k
                    );
                    eprintln!(
                        "near tie: {model} {variant} {what}: Rust {} {:.3}, Python {} {}",
                        p.label, p.score, case["top1"], case["score"]
                    );
                    near_ties += 1;
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} samples checked");
    assert!(
        near_ties <= MAX_NEAR_TIES,
        "{near_ties} of {checked} top-1 answers differ"
    );
}

#[test]
fn cuda_then_cpu_falls_back_to_cpu_and_says_why() {
    let cfg = common::config(&["vision-fashion"], "edge", &["cuda", "cpu"]);
    let e = common::engine_with(&cfg);
    let h = e.model("vision-fashion").expect("loaded");
    assert_eq!(h.ep.as_str(), "cpu");
    assert_eq!(h.skipped_eps.len(), 1);
    assert_eq!(h.skipped_eps[0].0.as_str(), "cuda");
    assert!(!h.skipped_eps[0].1.is_empty());
    let sample = std::fs::read(
        models_dir()
            .join("vision-fashion/samples")
            .read_dir()
            .expect("samples")
            .next()
            .expect("a sample")
            .expect("entry")
            .path(),
    )
    .expect("read");
    let inf = e
        .infer_blocking("vision-fashion", Input::Images(vec![Bytes::from(sample)]))
        .expect("runs on cpu");
    assert_eq!(inf.ep.as_str(), "cpu");
}

#[test]
fn only_an_unavailable_provider_is_a_clear_error() {
    let cfg = common::config(&["vision-fashion"], "edge", &["cuda"]);
    let settings = cfg.engine_settings();
    let (_, env) = tandem_agent::runtime::init(&settings).expect("runtime");
    let err = tandem_agent::inference::Engine::start(&settings, &env, Default::default())
        .expect_err("cuda alone cannot load here");
    let msg = err.to_string();
    assert!(
        msg.contains("no execution provider") && msg.contains("cuda"),
        "{msg}"
    );
}
