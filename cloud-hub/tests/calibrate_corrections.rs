//! Calibration with operators' corrections (issue 13 items 3 and 8) on the real feedback
//! store (sled, input files) and calibration store: devices' hard examples whose cloud answer
//! is wrong on a quarter of the inputs, where the edge is right whenever it is confident. With
//! the teacher's labels only, every such input counts as an edge error and the fit offloads
//! almost everything; once an operator corrects a share of the examples through the console's
//! path (`Store::correct`), those are judged against the truth, the teacher-labelled rest by
//! the shares the corrected ones show, and the fitted threshold keeps the edge's confident
//! answers. The report says how many labels are corrections and how many the teacher's.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use tandem_hub::calibrate::store::SledCalibrations;
use tandem_hub::calibrate::{CalibrateConfig, Calibration, CalibrationRequest, Calibrator};
use tandem_hub::feedback::{FeedbackConfig, Split, Store};
use tandem_shared::record::{self, ExampleKind, ExampleMeta, Outcome, Record};
use tandem_tests::repo;

const MODEL: &str = "vision-fashion";
const INPUTS: u64 = 800;
const DEVICE: &str = "cam-1";

fn outcome(label: &str, score: f32) -> Outcome {
    Outcome {
        version: "1.0.0".into(),
        label: label.into(),
        index: 0,
        score,
        top_k: vec![],
    }
}

/// Input `i`: the truth is always `Shirt`; the edge's signal spreads over (0, 1), and the edge
/// is right (`Shirt`) from 0.3 up, `Coat` below; the cloud model answers `Bag` on every fourth
/// input, `Shirt` otherwise.
fn answers(i: u64) -> (f32, &'static str, &'static str) {
    let signal = ((i * 7919) % INPUTS) as f32 / INPUTS as f32 + 0.0005;
    let edge = if signal >= 0.3 { "Shirt" } else { "Coat" };
    let cloud = if i.is_multiple_of(4) { "Bag" } else { "Shirt" };
    (signal, edge, cloud)
}

fn hard_example(i: u64) -> Vec<u8> {
    let (signal, edge, cloud) = answers(i);
    record::encode(&Record::Example {
        meta: Box::new(ExampleMeta {
            kind: ExampleKind::Hard,
            request_id: format!("r-{i}"),
            model: MODEL.into(),
            time_ms: 1_000 + i,
            input_kind: "image".into(),
            reason: "low_confidence".into(),
            local: Some(outcome(edge, signal)),
            cloud: Some(outcome(cloud, 0.9)),
            label: None,
            boxes: None,
        }),
        input: format!("input {i}").into_bytes(),
    })
}

fn calibrate(calibrator: &Calibrator) -> Calibration {
    let req: CalibrationRequest =
        serde_json::from_value(serde_json::json!({"model": MODEL, "apply": false}))
            .expect("request");
    calibrator.run(&req, &BTreeMap::new()).expect("calibration")
}

#[test]
fn corrections_judge_the_teacher_and_keep_the_edge_right_answers() {
    let dir = tempfile::tempdir().expect("tmp");
    let feedback = Arc::new(
        Store::open(&dir.path().join("feedback"))
            .expect("feedback store")
            .with_config(FeedbackConfig {
                split_train_pct: 0,
                split_calibration_pct: 50,
                ..FeedbackConfig::default()
            }),
    );
    let records: Vec<Vec<u8>> = (0..INPUTS).map(hard_example).collect();
    let batch: Vec<(u64, u64, &[u8])> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (1, i as u64 + 1, r.as_slice()))
        .collect();
    feedback.ingest(DEVICE, &batch).expect("ingest");
    let cfg = tandem_hub::config::Config {
        base_dir: repo(),
        ..Default::default()
    };
    let calibrator = Calibrator {
        settings: cfg.engine_settings(),
        cfg: CalibrateConfig {
            min_fit_samples: 100,
            min_test_samples: 100,
            shadow_weight: 1.0,
            hard_weight: 1.0,
            ..CalibrateConfig::default()
        },
        store: Arc::new(
            SledCalibrations::open(&dir.path().join("calibrate")).expect("calibration store"),
        ),
        feedback: feedback.clone(),
    };

    // The teacher alone: a quarter of the confident edge answers look wrong.
    let teacher = calibrate(&calibrator);
    println!(
        "teacher only: threshold {} fit {:?} test {:?}",
        teacher.threshold, teacher.fit.at_fitted, teacher.test.at_fitted
    );
    for part in [&teacher.fit, &teacher.test] {
        assert_eq!(part.counts.corrections, 0);
        assert_eq!(part.counts.teacher, part.counts.samples);
        assert!(part.teacher_check.is_none() && part.corrected_only.is_none());
        assert_eq!(
            part.at_fitted.cloud_accuracy, 1.0,
            "the teacher is its own truth"
        );
    }
    assert!(
        teacher.fit.at_fitted.offload > 0.9,
        "every confident input where the cloud model says otherwise counts against the edge: {:?}",
        teacher.fit.at_fitted
    );

    // An operator corrects every third example (whatever either answer was) to the truth.
    let corrected: Vec<u64> = (0..INPUTS).filter(|i| i.is_multiple_of(3)).collect();
    for &i in &corrected {
        feedback
            .correct(&format!("{DEVICE}/1/{}", i + 1), "Shirt", "operator")
            .expect("correction stored");
    }
    let with = calibrate(&calibrator);
    println!(
        "with corrections: threshold {} fit {:?} {:?}\n test {:?} corrected only {:?}",
        with.threshold,
        with.fit.at_fitted,
        with.fit.teacher_check,
        with.test.at_fitted,
        with.test.corrected_only
    );
    let mut counted = 0;
    for part in [&with.fit, &with.test] {
        let c = &part.counts;
        assert_eq!(c.corrections + c.teacher, c.samples);
        assert!(
            c.corrections * 4 > c.samples && c.corrections * 2 < c.samples,
            "about a third corrected: {c:?}"
        );
        assert_eq!(c.left_out.get("correction_only"), None, "{c:?}");
        counted += c.corrections;
        let check = part
            .teacher_check
            .clone()
            .expect("enough corrected disagreements");
        assert_eq!(check.teacher_samples, c.teacher);
        // Disagreements: the cloud wrong (Bag) where the edge is right (17.5% of inputs) or
        // both are wrong (7.5%), the edge wrong (Coat) where the cloud is right (22.5%).
        assert!(
            (check.disagree_edge_right - 0.37).abs() < 0.1
                && (check.disagree_cloud_right - 0.47).abs() < 0.1,
            "{check:?}"
        );
        // Agreements are all right (edge and cloud both Shirt).
        assert_eq!(check.agree_right, 1.0);
        // Cloud-only accuracy now is the truth's (3/4), not the teacher's 1.
        assert!(
            (part.at_fitted.cloud_accuracy - 0.75).abs() < 0.05,
            "{:?}",
            part.at_fitted
        );
    }
    assert_eq!(
        counted as usize,
        corrected
            .iter()
            .filter(|&&i| {
                let digest: [u8; 32] = Sha256::digest(format!("input {i}").as_bytes()).into();
                feedback.split_of(&digest) != Split::Train
            })
            .count(),
        "every corrected input counted once, in its split"
    );
    // The edge is right from 0.3 up, where the cloud model is wrong on a quarter: the fit
    // keeps those answers local, and some below (the cascade is above cloud-only there).
    assert!(
        with.threshold < 0.3 && with.threshold > 0.05,
        "{}",
        with.threshold
    );
    assert!(with.fit.at_fitted.offload < 0.3, "{:?}", with.fit.at_fitted);
    assert!(
        with.fit.at_fitted.edge_accuracy > teacher.fit.at_fitted.edge_accuracy,
        "edge-right, cloud-wrong inputs no longer count as edge errors"
    );
    // On the test split's corrected inputs alone (the truth), the objective holds.
    let truth = with.test.corrected_only.expect("corrected test samples");
    assert!(truth.accuracy_ratio >= 0.995, "{truth:?}");
}
