//! A candidate the gate must refuse: the hub's own training turn (`TrainService::run_on`, in
//! process on scratch stores, promotion left to an operator so nothing is rolled out) on
//! wrongly labelled examples of the feedback phase (every label moved to the next class),
//! gated on other feedback-phase inputs with their true labels and on the original test set.

use super::stream::{Item, MODEL};
use std::path::Path;
use std::sync::Arc;
use tandem_hub::eval::dataset::{self, LabelSource, LabelledSet, Payload};
use tandem_hub::train::service::{Decision, TrainService};
use tandem_hub::train::{Promotion, TrainConfig, Trainer};

fn set(
    name: &str,
    labels: &[String],
    items: &[Item],
    shift_label: usize,
    source: LabelSource,
) -> LabelledSet {
    LabelledSet {
        name: name.into(),
        labels: labels.to_vec(),
        items: items
            .iter()
            .map(|i| dataset::Item {
                input: Payload::Image(i.body.clone()),
                truth: (i.truth + shift_label) % labels.len().max(1),
                source,
                device: None,
                time_ms: None,
            })
            .collect(),
    }
}

/// Trains on `train` with wrong labels (the whole network when `whole_net`), gates on
/// `target`; the decision (scratch removed).
pub fn run(
    repo: &Path,
    labels: &[String],
    train: &[Item],
    target: &[Item],
    whole_net: bool,
) -> anyhow::Result<Decision> {
    let dir =
        std::env::temp_dir().join(format!("tandem-bench-loop-refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let svc = TrainService {
        trainer: Trainer {
            settings: crate::cascade::settings(repo, "edge"),
            cfg: TrainConfig {
                promotion: Promotion::Operator,
                whole_net,
                ..TrainConfig::default()
            },
            dir: dir.join("train"),
        },
        models_dir: repo.join("models"),
        window_ms: 3_600_000,
        reports: Arc::new(tandem_hub::eval::store::SledReports::open(
            &dir.join("eval"),
        )?),
        feedback: None,
        registry: Arc::new(tandem_hub::registry::Registry::open(&dir.join("registry"))?),
        pki_dir: dir.join("pki"),
        rollouts: None,
    };
    let result = svc.run_on(
        MODEL,
        &set(
            "bench:labels-moved-by-one",
            labels,
            train,
            1,
            LabelSource::Correction,
        ),
        &set(
            "bench:feedback-phase",
            labels,
            target,
            0,
            LabelSource::Dataset,
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result?)
}
