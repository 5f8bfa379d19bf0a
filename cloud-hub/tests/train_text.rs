//! Retraining text-sentiment's head on MiniLM features: fitted on 1000 labelled sentences of
//! the shipped test set, the candidate is as good as the shipped head on the other 1000 — the
//! text path (tokenizer, feature extraction, fit, export, the engine on the bundle) loses
//! nothing of its own when the L2 pull toward the serving head suits 384 standardised
//! features. The default config chooses that pull on held-out folds of the 1000 (`train.l2_grid`):
//! the weak pull tuned on vision-fashion's 64 features (0.01) overfits here (0.702 on the
//! folds), the strong ones do not (10: 0.808), and the grid must move off 0.01.

use tandem_hub::eval::dataset::{self, LabelledSet};
use tandem_hub::train::{TrainConfig, Trainer};
mod common;

use common::{accuracy, engine_settings as settings, repo};

#[test]
fn a_text_head_refitted_on_its_own_data_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = repo().join("models/text-sentiment");
    let trainer = Trainer {
        settings: settings(),
        cfg: TrainConfig::default(),
        dir: tmp.path().join("train"),
    };
    let mut train = dataset::shipped(&dir, 2000).expect("sentences");
    let held_out = LabelledSet {
        items: train.items.split_off(1000),
        ..train.clone()
    };
    let c = trainer.train(&dir, &train, |_| false).expect("trains");
    assert_eq!(
        (c.feature.as_str(), c.dim, c.fit.examples),
        ("/Div_1_output_0", 384, 1000)
    );
    assert!(c.fit.loss_after < c.fit.loss_before, "{:?}", c.fit);
    let before = accuracy(&dir, &held_out);
    let after = accuracy(&c.bundle, &held_out);
    let pull = c.pull.as_ref().expect("a head fit records its pull");
    eprintln!(
        "held-out sentences: serving {before:.4}, candidate {after:.4}; fit {:?}; pull {pull:?}",
        c.fit
    );
    assert_eq!(pull.folds, 4, "the default grid was scored");
    assert!(
        pull.l2 > 0.01,
        "the grid moved off the weakest pull: {pull:?}"
    );
    assert!(before > 0.75, "the shipped head: {before}");
    assert!(
        after >= before - 0.01,
        "serving {before}, candidate {after}"
    );
}
