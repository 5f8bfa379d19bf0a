//! Tests of [`super`]: the shares by confidence block and what a fit on them does.

use super::*;
use crate::calibrate::fit::figures;

fn judged(signal: f32, edge_right: bool, cloud_right: bool, corrected: bool) -> Judged {
    let agree = if corrected {
        // Both right or both wrong here means the same answer.
        edge_right == cloud_right
    } else {
        edge_right
    };
    Judged {
        sample: Sample {
            signal,
            edge_right,
            cloud_right,
            weight: 1.0,
        },
        corrected,
        agree,
    }
}

#[test]
fn teacher_disagreements_take_the_corrected_shares() {
    // Corrected: 4 disagreements (edge right in 3, cloud in 1), 2 agreements (1 right).
    let mut all = vec![
        judged(0.9, true, false, true),
        judged(0.8, true, false, true),
        judged(0.7, true, false, true),
        judged(0.6, false, true, true),
        judged(0.95, true, true, true),
        judged(0.5, false, false, true),
    ];
    // Teacher-labelled: one disagreement, one agreement.
    all.push(judged(0.85, false, true, false));
    all.push(judged(0.99, true, true, false));
    let (samples, check) = resolve_in(&all, 4, false, 0.0);
    let check = check.expect("enough corrected disagreements");
    assert_eq!(check.corrected_disagreements, 4);
    assert_eq!(check.teacher_samples, 2);
    assert!((check.disagree_edge_right - 0.75).abs() < 1e-12);
    assert!((check.disagree_cloud_right - 0.25).abs() < 1e-12);
    assert!((check.agree_right - 0.5).abs() < 1e-12);
    // Weight is kept: 8 inputs.
    let w: f64 = samples.iter().map(|s| s.weight).sum();
    assert!((w - 8.0).abs() < 1e-12);
    // Everything local: the edge is right on 3 + 0.5 + 0.75 + 0.5 (the agreement).
    let f = figures(&samples, 0.0).expect("figures");
    assert!(
        (f.accuracy - (3.0 + 1.0 + 0.75 + 0.5) / 8.0).abs() < 1e-12,
        "{f:?}"
    );
    assert!((f.cloud_accuracy - (1.0 + 1.0 + 0.25 + 0.5) / 8.0).abs() < 1e-12);
    // One fewer corrected disagreement than asked: the teacher stands.
    let (as_is, none) = resolve(&all, 5);
    assert!(none.is_none());
    assert_eq!(as_is, all.iter().map(|j| j.sample).collect::<Vec<_>>());
}

/// Where the edge hesitates and disagrees it is always wrong, where it is surer and
/// disagrees it is always right: one share for every confidence credits the first with
/// the second's successes and the second with the first's failures, and the threshold it
/// fits offloads most of what the edge answers better; the blocks follow the step, meet
/// the objective on the truth too, and offload far less.
#[test]
fn blocks_follow_the_confidence_where_one_share_offloads_too_much() {
    use crate::calibrate::fit::{Objective, fit};
    // 1000 inputs: signal in [0, 0.5) disagreements where only the cloud model is right,
    // [0.5, 0.7) disagreements where only the edge is, [0.7, 1) agreements (both right).
    // Every third input is corrected.
    let (mut all, mut truth) = (Vec::new(), Vec::new());
    for i in 0..1000u32 {
        let signal = i as f32 / 1000.0;
        let (edge_right, cloud_right) = match i {
            0..500 => (false, true),
            500..700 => (true, false),
            _ => (true, true),
        };
        let sample = Sample {
            signal,
            edge_right,
            cloud_right,
            weight: 1.0,
        };
        truth.push(sample);
        let agree = i >= 700;
        all.push(if i % 3 == 0 {
            Judged {
                sample,
                corrected: true,
                agree,
            }
        } else {
            // The teacher: the cloud model right by definition.
            Judged {
                sample: Sample {
                    edge_right: agree,
                    cloud_right: true,
                    ..sample
                },
                corrected: false,
                agree,
            }
        });
    }
    let objective = Objective::KeepAccuracy { factor: 0.995 };
    let on_truth = |by_confidence| {
        let (samples, check) = resolve_in(&all, 20, by_confidence, PESSIMISM);
        let check = check.expect("enough corrected disagreements");
        let f = fit(&samples, objective, 1.0).expect("fits");
        let t = figures(&truth, f.threshold).expect("figures");
        (check, f.threshold, t)
    };
    let (pooled_check, pooled_t, pooled) = on_truth(false);
    let (check, t, blocks) = on_truth(true);
    assert_eq!(pooled_check.disagree_bins.len(), 1);
    assert_eq!(check.disagree_bins.len(), 2, "the step: {check:?}");
    let [low, high] = [check.disagree_bins[0], check.disagree_bins[1]];
    assert!(
        low.below.is_some_and(|b| (0.49..0.51).contains(&b)),
        "{low:?}"
    );
    assert!(low.edge_right < 0.02 && low.cloud_right > 0.98, "{low:?}");
    assert!(high.edge_right > 0.9 && high.cloud_right < 0.1, "{high:?}");
    assert_eq!(
        check.agree_bins.len(),
        1,
        "every agreement right: one block"
    );
    // Both meet the objective on the truth; one share offloads far more (the truth's
    // least offload is 0.3: below it the edge's errors outweigh its surplus).
    assert!(
        pooled.accuracy_ratio >= 0.995 && blocks.accuracy_ratio >= 0.995,
        "one share: {pooled_t} {pooled:?}; blocks: {t} {blocks:?}"
    );
    assert!(
        pooled.offload > 0.45 && blocks.offload < 0.35,
        "one share: {pooled_t} {pooled:?}; blocks: {t} {blocks:?}"
    );
}

#[test]
fn blocks_are_monotone_and_thin_ones_merge() {
    let s = |signal: f32, edge_right: bool| Sample {
        signal,
        edge_right,
        cloud_right: !edge_right,
        weight: 1.0,
    };
    // Edge right: 0 0 1 0 | 1 1 (signals rising): the 1 before a 0 pools with it.
    let v = vec![
        s(0.1, false),
        s(0.2, false),
        s(0.3, true),
        s(0.4, false),
        s(0.8, true),
        s(0.9, true),
    ];
    let b = bins(v.clone(), 1, true, (0.5, 0.5), 0.0);
    let raw: Vec<(u64, f64)> = b
        .iter()
        .map(|b| {
            let n = b.n as f64;
            // Undo the pooling to read the block's own share.
            (
                b.n,
                (b.edge_right * (n + PRIOR_SAMPLES) - PRIOR_SAMPLES * 0.5) / n,
            )
        })
        .collect();
    assert_eq!(raw.len(), 3, "{b:?}");
    assert_eq!(raw[0].0, 2);
    assert!(raw[0].1.abs() < 1e-9);
    assert_eq!(raw[1].0, 2);
    assert!((raw[1].1 - 0.5).abs() < 1e-9);
    assert_eq!(raw[2].0, 2);
    assert!((raw[2].1 - 1.0).abs() < 1e-9);
    assert!(b.windows(2).all(|w| w[0].edge_right <= w[1].edge_right));
    assert_eq!(b[0].below, Some(0.25));
    // Blocks of at least 3: the thin ones join a neighbour.
    let b = bins(v.clone(), 3, true, (0.5, 0.5), 0.0);
    assert!(b.iter().all(|b| b.n >= 3), "{b:?}");
    // One block without confidence; lookups.
    let one = bins(v, 1, false, (0.5, 0.5), 0.0);
    assert_eq!(one.len(), 1);
    assert!((one[0].edge_right - 0.5).abs() < 1e-9, "the overall share");
    assert_eq!(bin_of(&one, 0.0), Some(&one[0]));
    assert_eq!(bin_of(&[], 0.5), None);
}
