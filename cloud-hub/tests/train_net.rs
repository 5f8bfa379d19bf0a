//! Training vision-fashion's whole 24k-parameter edge network on real data with the real
//! engine: the network read from the shipped (INT8 QDQ) graph gives the engine's answers; a
//! few hundred brightened Fashion-MNIST images train every layer; on other brightened images
//! the candidate beats the serving model clearly; the exported FP32 graph keeps the inputs and
//! outputs, loads in ONNX Runtime (the engine packs and checks it), reads back as the same
//! network, and is a bundle the registry signs. The text model, not a CNN, trains its head.

use std::path::Path;
use tandem_hub::eval::dataset::{self, LabelledSet, Payload};
use tandem_hub::train::{TrainConfig, Trainer, cnn_graph, features, net};
mod common;

use common::{engine_settings as settings, fashion, shifted};

/// The engine's answers of the model folder `dir` (named as its model) on `set`: logits and
/// accuracy.
fn run(dir: &Path, set: &LabelledSet) -> (Vec<Vec<f32>>, f64) {
    let name = dir.file_name().and_then(|n| n.to_str()).expect("name");
    let engine = features::engine_on(&settings(), dir, name).expect("engine");
    let inputs: Vec<Payload> = set.items.iter().map(|i| i.input.clone()).collect();
    let rows = features::output_rows(&engine, name, &inputs, "logits", 64).expect("runs");
    engine.shutdown();
    let right = rows
        .iter()
        .zip(&set.items)
        .filter(|(r, i)| tandem_hub::train::head::argmax(r) == i.truth)
        .count();
    (rows, right as f64 / set.items.len() as f64)
}

#[test]
fn the_read_network_gives_the_shipped_models_answers() {
    let folder = features::read_folder(&fashion()).expect("folder");
    let cnn = net::read(&folder).expect("a network the trainer reads");
    assert_eq!(
        cnn.parameters(),
        23_946,
        "3 convolutions and a linear layer"
    );
    let set = dataset::shipped(&fashion(), 60).expect("set");
    let inputs: Vec<Payload> = set.items.iter().map(|i| i.input.clone()).collect();
    let x = net::tensors(&settings(), &folder, &inputs).expect("tensors");
    let ours = cnn.logits(&x).expect("runs");
    let (engine, _) = run(&fashion(), &set);
    let mut worst = 0.0f32;
    let mut agree = 0;
    for (a, b) in ours.iter().zip(&engine) {
        worst = a
            .iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(worst, f32::max);
        let top = tandem_hub::train::head::argmax;
        agree += usize::from(top(a) == top(b));
    }
    eprintln!(
        "FP32 network vs the INT8 engine: largest logit difference {worst}, top-1 {agree}/60"
    );
    assert!(worst < 1.0, "{worst}");
    assert!(agree >= 58, "{agree}/60");
    // Writing it back and reading the result gives the same network.
    let onnx = cnn_graph::write(&folder.onnx, &cnn).expect("writes");
    let again = cnn_graph::read(&onnx, (1, 28, 28)).expect("reads its own graph");
    assert_eq!(again, cnn);
}

#[test]
fn training_the_whole_network_beats_the_serving_model_and_exports() {
    let tmp = tempfile::tempdir().expect("tmp");
    let trainer = Trainer {
        settings: settings(),
        cfg: TrainConfig {
            whole_net: true,
            net_epochs: 4,
            ..TrainConfig::default()
        },
        dir: tmp.path().join("train"),
    };
    let train = shifted(8000, 8300, "brightness:0.3");
    let held_out = shifted(9000, 9400, "brightness:0.3");
    let c = trainer
        .train(&fashion(), &train, |_| false)
        .expect("trains");
    assert_eq!((c.scope.as_str(), c.version.as_str()), ("net", "1.0.1"));
    assert_eq!(c.fit.examples, 300);
    assert!(c.fit.loss_after < c.fit.loss_before, "{:?}", c.fit);
    assert!(c.export_max_abs_diff < 1e-3, "{}", c.export_max_abs_diff);
    let (_, before) = run(&fashion(), &held_out);
    let (_, after) = run(&c.bundle, &held_out);
    eprintln!("held-out brightened accuracy: serving {before:.4}, whole-net candidate {after:.4}");
    assert!(after > before + 0.3, "serving {before}, candidate {after}");

    let read = tandem_engine::bundle::read_folder(&c.bundle).expect("bundle folder");
    let role = tandem_shared::manifest::VariantRole::Edge;
    let (doc, _) = tandem_shared::bundle::inspect(&read.bundle_json, &read.files, Some(role))
        .expect("valid bundle");
    let base = tandem_engine::model::read_manifest(&fashion()).expect("base manifest");
    let (new, old) = (&doc.manifest.variants[&role], &base.variants[&role]);
    assert_eq!((&new.inputs, &new.outputs), (&old.inputs, &old.outputs));
    assert_eq!(new.preprocess, old.preprocess);
    assert!(doc.selftests.len() >= 5, "self-tests recorded");
    let onnx = std::fs::read(c.bundle.join("edge.onnx")).expect("onnx");
    let cnn = cnn_graph::read(&onnx, (1, 28, 28)).expect("the exported graph reads back");
    assert_eq!(cnn.parameters(), 23_946);
    let has = |s: &[u8]| onnx.windows(s.len()).any(|w| w == s);
    assert!(
        has(b"tandem.net.node0") && !has(b"QuantizeLinear"),
        "an FP32 graph"
    );
    let pki = tmp.path().join("pki");
    tandem_hub::pki::Pki::init(&pki).expect("pki");
    let signer = tandem_hub::registry::load_signer(&pki).expect("signer");
    let reg = tandem_hub::registry::Registry::open(&tmp.path().join("registry")).expect("registry");
    reg.push(&c.bundle, &signer).expect("the registry takes it");
}
