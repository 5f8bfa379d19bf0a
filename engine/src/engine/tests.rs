//! The engine on a real model (the shipped `vision-fashion`, real ONNX Runtime): the rows cap,
//! chunked runs, a worker that survives a panic, and a request's k decoded only by the version
//! that ran.

use super::{Engine, InferenceError, Input};
use crate::metrics::Metrics;
use crate::settings::EngineSettings;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;

fn engine(tune: impl FnOnce(&mut EngineSettings)) -> Engine {
    let (mut s, env) = crate::runtime::for_tests();
    s.models.enabled = vec!["vision-fashion".into()];
    tune(&mut s);
    Engine::start(&s, &env, Arc::new(Metrics::default())).expect("engine starts")
}

fn samples() -> Vec<Bytes> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/vision-fashion/samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("samples folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| Bytes::from(std::fs::read(p).expect("sample")))
        .collect()
}

#[test]
fn a_worker_that_panics_answers_an_error_and_serves_the_next_request() {
    let e = engine(|_| {});
    let img = samples().swap_remove(0);
    let h = e.model("vision-fashion").expect("loaded");
    h.fail_next();
    let err = e
        .infer_blocking("vision-fashion", Input::Images(vec![img.clone()]))
        .expect_err("the injected panic fails this request");
    assert!(
        matches!(err, InferenceError::Panicked(ref m) if m.contains("fault injected")),
        "{err:?}"
    );
    assert_eq!(e.metrics().inference_count("vision-fashion", "panic"), 1);
    let ok = e
        .infer_blocking("vision-fashion", Input::Images(vec![img]))
        .expect("the same worker answers the next request");
    assert_eq!(ok.predictions.len(), 1);
}

#[test]
fn rows_over_the_cap_are_refused_and_rows_under_it_run_in_chunks() {
    let e = engine(|s| {
        s.engine.max_rows_per_request = 40;
        s.engine.max_rows_per_run = 7;
    });
    let imgs = samples();
    let many: Vec<Bytes> = imgs.iter().cycle().take(41).cloned().collect();
    let err = e
        .infer_blocking("vision-fashion", Input::Images(many.clone()))
        .expect_err("41 rows are over the cap");
    assert!(
        matches!(
            err,
            InferenceError::TooManyRows {
                rows: 41,
                limit: 40
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("engine.max_rows_per_request"));
    // 40 rows run as 6 chunks of 7 and one of 5: the same answers as one image at a time.
    let all = e
        .infer_blocking("vision-fashion", Input::Images(many[..40].to_vec()))
        .expect("40 rows are answered");
    assert_eq!(all.predictions.len(), 40);
    assert_eq!(all.outputs[0].shape[0], 40);
    for (i, img) in many[..40].iter().enumerate().take(imgs.len()) {
        let one = e
            .infer_blocking("vision-fashion", Input::Images(vec![img.clone()]))
            .expect("one image");
        assert_eq!(
            one.predictions[0].index, all.predictions[i].index,
            "row {i}"
        );
        assert!((one.predictions[0].score - all.predictions[i].score).abs() < 1e-4);
    }
    // The same rows repeat with the cycle: row 10 + k is row k.
    assert_eq!(
        all.predictions[3].index,
        all.predictions[3 + imgs.len()].index
    );
}

#[test]
fn a_provider_lost_at_run_time_fails_over_without_dropping_queued_requests() {
    use tandem_shared::provider::ExecutionProvider::{Cpu, Openvino};
    let e = engine(|s| {
        s.runtime.execution_providers = vec!["openvino".into(), "cpu".into()];
        s.runtime.ep_retry_after_ms = 20;
    });
    let h = e.model("vision-fashion").expect("loaded").clone();
    if !crate::provider::plugins::openvino_offers_this_cpu() {
        // Not an Intel CPU: the plugin offers no device, and the CPU serves from the start.
        assert_eq!(h.ep, Cpu, "{:?}", h.skipped_eps);
        assert!(
            h.skipped_eps
                .iter()
                .any(|(ep, why)| *ep == Openvino && why.contains("offers no cpu device")),
            "{:?}",
            h.skipped_eps
        );
        return;
    }
    assert_eq!(
        h.ep, Openvino,
        "the OpenVINO plugin serves (run `make setup`)"
    );
    h.lose_device(Some(Openvino));
    let imgs = samples();
    // Queued before the worker meets the failure: every one must be answered, on the CPU.
    let replies: Vec<_> = (0..16)
        .map(|i| {
            e.submit(
                "vision-fashion",
                Input::Images(vec![imgs[i % imgs.len()].clone()]),
            )
            .expect("queued")
        })
        .collect();
    for r in replies {
        let inf = r
            .blocking_recv()
            .expect("answered")
            .expect("no request fails");
        assert_eq!(inf.ep, Cpu);
    }
    assert_eq!(h.ep_failovers(), 1, "one move, however many requests");
    assert_eq!(h.ep_now(), Cpu);
    assert_eq!(e.metrics().inference_count("vision-fashion", "ok"), 16);
    // The device comes back: after the backoff the worker returns to OpenVINO.
    h.lose_device(None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let inf = e
            .infer_blocking("vision-fashion", Input::Images(vec![imgs[0].clone()]))
            .expect("answered");
        if inf.ep == Openvino {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never went back to OpenVINO"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(h.ep_now(), Openvino);
    assert_eq!(h.ep_failovers(), 1);
    let text = e.metrics().render(&crate::metrics::model_gauges(&e));
    assert!(
        text.contains("# TYPE tandem_ep_failovers_total counter\n"),
        "{text}"
    );
    let sample = format!(
        "tandem_ep_failovers_total{{model=\"vision-fashion\",version=\"{}\"}} 1\n",
        h.files.manifest.version
    );
    assert!(text.contains(&sample), "{text}");
    assert!(text.contains("# TYPE tandem_ep_reference_median_seconds gauge\n"));
}

#[test]
fn a_request_k_is_decoded_only_by_the_version_that_ran() {
    let e = engine(|s| s.engine.top_k = 5);
    let img = samples().swap_remove(0);
    let inf = e
        .infer_blocking("vision-fashion", Input::Images(vec![img]))
        .expect("answer");
    let best = inf.predictions[0].top_k[0].clone();
    assert_eq!(inf.predictions[0].top_k.len(), 5);

    // A swap between the run and the re-decoding: the answer keeps the engine's k.
    let mut swapped = inf.clone();
    swapped.version = format!("{}-retired", inf.version);
    assert!(!e.with_top_k(&mut swapped, 2));
    assert_eq!(swapped.predictions[0].top_k.len(), 5);

    let mut same = inf;
    assert!(e.with_top_k(&mut same, 2));
    assert_eq!(same.predictions[0].top_k.len(), 2);
    assert_eq!(same.predictions[0].top_k[0], best);
}
