//! Threshold fitting on real model outputs: vision-fashion's edge and cloud variants run by
//! the real engine over 4000 Fashion-MNIST test images, split by the feedback store's own rule
//! (by content digest) into a calibration and a test part; the threshold is fitted on the
//! first and reported on the second. The parts never share an input, the objective holds on
//! the part fitted on, and the report's figures are those of the other part.

use sha2::{Digest, Sha256};
use tandem_hub::calibrate::fit::{Objective, Sample, figures, fit};
use tandem_hub::eval::dataset::{Payload, shipped};
use tandem_hub::eval::run::{predict, start_engine};
use tandem_hub::feedback::Split;
use tandem_tests::repo;

const MODEL: &str = "vision-fashion";
const IMAGES: usize = 4000;

/// (digest, sample) per image, with the true label as reference.
fn judged() -> Vec<([u8; 32], Sample)> {
    let cfg = tandem_hub::config::Config {
        base_dir: repo(),
        ..Default::default()
    };
    let settings = cfg.engine_settings();
    let set = shipped(&repo().join("models").join(MODEL), IMAGES).expect("the shipped set");
    assert_eq!(set.items.len(), IMAGES);
    let inputs: Vec<Payload> = set.items.iter().map(|i| i.input.clone()).collect();
    let mut answers = Vec::new();
    for variant in ["edge", "cloud"] {
        let engine = start_engine(&settings, MODEL, variant).expect("engine");
        let (preds, _) = predict(&engine, MODEL, &inputs, 64).expect("inference");
        engine.shutdown();
        answers.push(preds);
    }
    set.items
        .iter()
        .zip(answers[0].iter().zip(&answers[1]))
        .map(|(item, (edge, cloud))| {
            let Payload::Image(bytes) = &item.input else {
                panic!("vision-fashion's set is images")
            };
            let digest: [u8; 32] = Sha256::digest(bytes).into();
            let sample = Sample {
                signal: edge.1,
                edge_right: edge.0 == item.truth,
                cloud_right: cloud.0 == item.truth,
                weight: 1.0,
            };
            (digest, sample)
        })
        .collect()
}

#[test]
fn fitted_on_the_calibration_split_reported_on_the_test_split() {
    let all = judged();
    // The feedback store's split rule, with no training share: half calibration, half test.
    let part = |s: Split| -> Vec<([u8; 32], Sample)> {
        all.iter()
            .filter(|(d, _)| Split::of(d, 0, 50) == s)
            .copied()
            .collect()
    };
    let (cal, test) = (part(Split::Calibration), part(Split::Test));
    assert_eq!(cal.len() + test.len(), IMAGES);
    assert!(
        cal.len() > 1500 && test.len() > 1500,
        "{} {}",
        cal.len(),
        test.len()
    );
    let cal_digests: std::collections::HashSet<_> = cal.iter().map(|x| x.0).collect();
    assert!(
        test.iter().all(|(d, _)| !cal_digests.contains(d)),
        "the splits share an input"
    );
    let cal: Vec<Sample> = cal.into_iter().map(|x| x.1).collect();
    let test: Vec<Sample> = test.into_iter().map(|x| x.1).collect();

    let keep = Objective::KeepAccuracy { factor: 0.995 };
    let f = fit(&cal, keep, 1.0).expect("a threshold");
    let on_test = figures(&test, f.threshold).expect("test figures");
    println!("keep_accuracy: {f:?}\n  on test: {on_test:?}");
    assert_eq!(
        f.figures.n as usize,
        cal.len(),
        "fit figures are the fit split's"
    );
    assert_eq!(
        on_test.n as usize,
        test.len(),
        "report figures are the test split's"
    );
    assert!(
        f.figures.accuracy >= 0.995 * f.figures.cloud_accuracy,
        "the objective holds where it was fitted: {f:?}"
    );
    assert!(f.threshold > 0.0 && f.threshold < 1.0, "{f:?}");
    // Real outputs: the edge is worse than the cloud model, so keeping 99.5% needs some
    // offload, and far from all of it.
    assert!(f.figures.offload > 0.02 && f.figures.offload < 0.8, "{f:?}");
    // Less offload than any threshold a step lower on the fit split, by construction: a
    // threshold just under the fitted one either offloads as much or breaks the objective.
    let lower = figures(&cal, f.threshold - 0.01).expect("figures");
    assert!(
        lower.offload >= f.figures.offload - 1e-9 || lower.accuracy < 0.995 * lower.cloud_accuracy,
        "{lower:?}"
    );
    // On unseen inputs it generalises: close to the objective (a few tenths of a percent).
    assert!(on_test.accuracy_ratio > 0.98, "{on_test:?}");

    let budget = Objective::OffloadBudget { budget: 0.1 };
    let b = fit(&cal, budget, 1.0).expect("a threshold");
    let b_test = figures(&test, b.threshold).expect("test figures");
    println!("offload_budget(0.1): {b:?}\n  on test: {b_test:?}");
    assert!(b.figures.offload <= 0.1 + 1e-9, "{b:?}");
    assert!(
        b.figures.accuracy > b.figures.edge_accuracy,
        "offloading helps: {b:?}"
    );
    assert!((b_test.offload - 0.1).abs() < 0.05, "{b_test:?}");
}
