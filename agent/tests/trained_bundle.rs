//! A head the hub retrained (issue 13 item 4) is installed by the agent's model manager with
//! no change on the agent: the registry signs the candidate, the agent verifies it (same
//! inputs and outputs as the serving version), runs its self-tests on its own engine, swaps
//! it in, and the new version answers.

mod common;

use common::{config, engine_with, models_dir};
use std::path::PathBuf;
use std::sync::Arc;
use tandem_agent::inference::Input;
use tandem_agent::models::{Manager, Order};
use tandem_hub::eval::dataset::{self, Payload};
use tandem_hub::eval::shift::Shift;
use tandem_hub::pki::Pki;
use tandem_hub::registry::{Registry, load_signer};
use tandem_hub::train::Trainer;

const MODEL: &str = "vision-fashion";

#[test]
fn the_agent_installs_a_retrained_head() {
    let dir = tempfile::tempdir().expect("tmp");
    let models = dir.path().join("models").join(MODEL);
    std::fs::create_dir_all(&models).expect("mkdir");
    for f in ["manifest.json", "edge.onnx", "labels.txt"] {
        std::fs::copy(models_dir().join(MODEL).join(f), models.join(f)).expect("copy");
    }
    let pki = dir.path().join("pki");
    Pki::init(&pki).expect("pki");

    // The hub: 300 brightened images, a candidate, signed into the registry.
    let mut set = dataset::shipped(&models_dir().join(MODEL), 8300).expect("set");
    set.items.drain(..8000);
    let shift: Shift = "brightness:0.3".parse().expect("shift");
    for (i, item) in set.items.iter_mut().enumerate() {
        item.input = shift.apply(&item.input, i as u64).expect("shift");
    }
    let hub_cfg = tandem_hub::config::Config {
        base_dir: models_dir().parent().expect("repo").to_path_buf(),
        ..Default::default()
    };
    let trainer = Trainer {
        settings: hub_cfg.engine_settings(),
        cfg: Default::default(),
        dir: dir.path().join("train"),
    };
    let c = trainer
        .train(&models_dir().join(MODEL), &set, |_| false)
        .expect("trains");
    let registry = Registry::open(&dir.path().join("registry")).expect("registry");
    registry
        .push(&c.bundle, &load_signer(&pki).expect("signer"))
        .expect("signed");

    // The agent: its own engine on the shipped 1.0.0, the hub's key trusted.
    let mut cfg = config(&[MODEL], "edge", &["cpu"]);
    cfg.base_dir = dir.path().to_path_buf();
    cfg.models.dir = PathBuf::from("models");
    cfg.models.trusted_key = "pki/signing.pub".into();
    let engine = Arc::new(engine_with(&cfg));
    let manager = Manager::new(engine.clone(), &cfg.engine_settings());
    let bright = match &set.items[0].input {
        Payload::Image(b) => Input::Images(vec![b.clone()]),
        Payload::Text(_) => panic!("an image set"),
    };
    let before = engine
        .infer_blocking(MODEL, bright.clone())
        .expect("answers");
    assert_eq!(before.version, "1.0.0");

    let done = manager
        .install(&registry.bundle_dir(MODEL, &c.version), Order::default())
        .expect("the agent installs the retrained head");
    assert_eq!(
        (done.from.as_str(), done.to.as_str()),
        ("1.0.0", c.version.as_str())
    );
    let after = engine.infer_blocking(MODEL, bright).expect("answers");
    assert_eq!(after.version, c.version);
    assert_eq!(after.predictions.len(), 1);
    assert_eq!(after.outputs[0].shape, before.outputs[0].shape);
}
