//! The gate and promotion on real data with the real engine, registry and rollout store: a
//! candidate trained on wrong labels is refused with its reason recorded and never reaches
//! the registry; a candidate trained on a real shift passes, waits for the operator
//! (`promotion = "operator"`), and once promoted is signed into the registry and starts a
//! staged rollout; every decision is kept with its four reports. The fit replays the model's
//! shipped training sample (`train.replay_share`), which keeps the original set within 0.015.

use std::sync::Arc;
use tandem_hub::eval::dataset::{self, LabelledSet};
use tandem_hub::eval::shift::Shift;
use tandem_hub::eval::store::{ReportStore, SledReports};
use tandem_hub::train::service::{Status, TrainService};
use tandem_hub::train::{Promotion, TrainConfig, TrainError, Trainer};
use tandem_tests::repo;

/// Items `from..to` of the shipped Fashion-MNIST test set, every other one brightened (a
/// fleet where some cameras see a brighter scene).
fn half_bright(from: usize, to: usize) -> LabelledSet {
    let mut set = dataset::shipped(&repo().join("models/vision-fashion"), to).expect("set");
    set.items.drain(..from);
    let shift: Shift = "brightness:0.3".parse().expect("shift");
    for (i, item) in set.items.iter_mut().enumerate().filter(|(i, _)| i % 2 == 0) {
        item.input = shift.apply(&item.input, i as u64).expect("shift");
    }
    set
}

#[test]
fn gate_refuses_a_worse_candidate_and_promotes_a_better_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tandem_hub::config::Config {
        base_dir: repo(),
        ..Default::default()
    };
    let pki = tmp.path().join("pki");
    tandem_hub::pki::Pki::init(&pki).expect("pki");
    let reports = Arc::new(SledReports::open(&tmp.path().join("eval")).expect("reports"));
    let rollouts =
        tandem_hub::rollout::RolloutStore::open(&tmp.path().join("rollouts")).expect("rollouts");
    let svc = TrainService {
        trainer: Trainer {
            settings: cfg.engine_settings(),
            cfg: TrainConfig {
                promotion: Promotion::Operator,
                original_items: 1000,
                // With the default replay (`replay_share` 0.75: 1800 of the shipped training
                // images beside the 600 examples) the head keeps the original set within a
                // point (measured: 0.915 -> 0.907; 0.888 without replay, 0.899 at 0.5).
                tolerance: 0.015,
                ..TrainConfig::default()
            },
            dir: tmp.path().join("train"),
        },
        models_dir: repo().join("models"),
        window_ms: 0,
        reports: reports.clone(),
        feedback: None,
        registry: Arc::new(
            tandem_hub::registry::Registry::open(&tmp.path().join("registry")).expect("registry"),
        ),
        pki_dir: pki,
        rollouts: Some(rollouts.clone()),
    };
    let train = half_bright(8000, 8600);
    let target = half_bright(9000, 9400);

    // Wrong labels (each shifted by one class): refused, reason recorded, nothing signed.
    let mut wrong = train.clone();
    for i in &mut wrong.items {
        i.truth = (i.truth + 1) % 10;
    }
    let refused = svc
        .run_on("vision-fashion", &wrong, &target)
        .expect("decides");
    assert_eq!(refused.status, Status::Refused, "{refused:?}");
    assert!(
        refused
            .reasons
            .iter()
            .any(|r| r.contains("not better on the target set")),
        "{:?}",
        refused.reasons
    );
    assert!(
        svc.registry
            .get("vision-fashion", &refused.candidate.version)
            .expect("registry")
            .is_none()
    );
    assert!(matches!(
        svc.promote(&refused.id),
        Err(TrainError::Phase(_))
    ));
    assert!(
        !refused.candidate.bundle.exists(),
        "a refused bundle is not kept"
    );

    // Real labels: passes, waits for the operator, then is signed and rolled out.
    let passed = svc
        .run_on("vision-fashion", &train, &target)
        .expect("decides");
    let figures: Vec<String> = passed
        .checks
        .iter()
        .map(|c| format!("{} {:.4}->{:.4}", c.what, c.serving, c.candidate))
        .collect();
    eprintln!("gate: {figures:?}");
    assert_eq!(
        passed.status,
        Status::AwaitingOperator,
        "{:?}",
        passed.reasons
    );
    assert_eq!(
        passed.candidate.label_sources.get("replay"),
        Some(&1800),
        "three replayed training images per feedback example"
    );
    assert_eq!(passed.candidate.fit.examples, 2400);
    assert_ne!(
        passed.candidate.version, refused.candidate.version,
        "each candidate its own version"
    );
    assert!(
        rollouts.list().expect("list").is_empty(),
        "no rollout before the operator"
    );
    assert!(passed.candidate.bundle.is_dir(), "kept while it waits");
    let promoted = svc.promote(&passed.id).expect("promotes");
    assert!(
        !passed.candidate.bundle.exists(),
        "the registry holds the signed copy"
    );
    assert_eq!(promoted.status, Status::RolledOut);
    let rollout = rollouts
        .get(promoted.rollout.as_deref().expect("rollout id"))
        .expect("rollout stored");
    assert_eq!(
        (rollout.spec.model.as_str(), rollout.spec.version.as_str()),
        ("vision-fashion", passed.candidate.version.as_str())
    );
    assert!(
        svc.registry
            .get("vision-fashion", &passed.candidate.version)
            .expect("registry")
            .is_some()
    );

    // Decisions and their reports stay visible; the next turn starts from the promoted version.
    let listed: Vec<_> = svc
        .list(Some("vision-fashion"))
        .expect("list")
        .into_iter()
        .map(|d| (d.id, d.status))
        .collect();
    assert_eq!(
        listed,
        vec![
            (refused.id.clone(), Status::Refused),
            (passed.id.clone(), Status::RolledOut)
        ]
    );
    for id in promoted.reports.iter().chain(&refused.reports) {
        assert!(reports.get(id).expect("get").is_some(), "report {id} kept");
    }
    assert_eq!(
        svc.serving_dir("vision-fashion").expect("serving"),
        svc.registry
            .bundle_dir("vision-fashion", &passed.candidate.version)
    );
}

/// The replay sets are training data: not one input is also in the test set the gate judges on.
#[test]
fn replay_sets_share_nothing_with_the_test_sets() {
    for model in ["vision-fashion", "text-sentiment"] {
        let dir = repo().join("models").join(model);
        let replay = dataset::replay(&dir, 0)
            .expect("readable")
            .expect("a replay set ships");
        let test = dataset::shipped(&dir, 0).expect("test set");
        assert!(
            replay.items.len() >= 2000,
            "{model}: {}",
            replay.items.len()
        );
        assert!(
            replay
                .items
                .iter()
                .all(|i| i.source == dataset::LabelSource::Replay && i.truth < replay.labels.len())
        );
        let key = |p: &dataset::Payload| match p {
            dataset::Payload::Image(b) => b.to_vec(),
            dataset::Payload::Text(t) => t.as_bytes().to_vec(),
        };
        let seen: std::collections::HashSet<Vec<u8>> =
            test.items.iter().map(|i| key(&i.input)).collect();
        let shared = replay
            .items
            .iter()
            .filter(|i| seen.contains(&key(&i.input)))
            .count();
        assert_eq!(shared, 0, "{model}: replay items in the test set");
        // Balanced: every class replayed.
        let classes: std::collections::BTreeSet<usize> =
            replay.items.iter().map(|i| i.truth).collect();
        assert_eq!(classes.len(), replay.labels.len(), "{model}");
    }
}
