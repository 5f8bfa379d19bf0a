//! The measurement cache key: equal for equal inputs, and another key when the model digest,
//! the hardware (device inventory), the provider options or any other part changes.

use super::KeyParts;
use crate::provider::options::EpOptions;
use tandem_shared::provider::{Accelerator, ExecutionProvider};

fn device(ep: &str, kind: &str, vendor: &str) -> Accelerator {
    Accelerator {
        ep: ep.into(),
        ep_vendor: "Microsoft".into(),
        kind: kind.into(),
        vendor: vendor.into(),
        device_id: 0,
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializes")
}

fn parts() -> KeyParts {
    KeyParts {
        digest: "a".repeat(64),
        ep: ExecutionProvider::Openvino,
        options: json(&EpOptions::default()),
        intra_threads: 2,
        rows_per_run: 16,
        tolerance: 0.01,
        plugins: vec!["/opt/ort/ep/openvino/libplugin.so:1234".into()],
        hardware: json(&[
            device("CPUExecutionProvider", "cpu", "Intel"),
            device("OpenVINOExecutionProvider", "cpu", "Intel"),
        ]),
        ort: "/opt/ort/libonnxruntime.so.1.23.2".into(),
    }
}

#[test]
fn equal_inputs_give_the_same_key() {
    assert_eq!(parts().key(), parts().key());
    assert_eq!(parts().key().len(), 64, "a sha256 in hex");
}

#[test]
fn another_model_digest_gives_another_key() {
    let mut p = parts();
    p.digest = "b".repeat(64);
    assert_ne!(p.key(), parts().key());
}

#[test]
fn other_hardware_gives_another_key() {
    let base = parts().key();
    // A GPU appears (same EPs, same libraries).
    let mut p = parts();
    p.hardware = json(&[
        device("CPUExecutionProvider", "cpu", "Intel"),
        device("OpenVINOExecutionProvider", "cpu", "Intel"),
        device("OpenVINOExecutionProvider", "gpu", "Intel"),
    ]);
    assert_ne!(p.key(), base);
    // The same kinds of device from another vendor.
    let mut p = parts();
    p.hardware = json(&[
        device("CPUExecutionProvider", "cpu", "AMD"),
        device("OpenVINOExecutionProvider", "cpu", "AMD"),
    ]);
    assert_ne!(p.key(), base);
}

#[test]
fn other_provider_options_give_another_key() {
    let base = parts().key();
    let mut o = EpOptions::default();
    o.openvino.precision = "bf16".into();
    let mut p = parts();
    p.options = json(&o);
    assert_ne!(p.key(), base);
    // An option of another provider counts too (the key does not pick options per EP).
    let mut o = EpOptions::default();
    o.cuda.device_id = 1;
    let mut p = parts();
    p.options = json(&o);
    assert_ne!(p.key(), base);
}

#[test]
fn every_other_part_gives_another_key() {
    let base = parts().key();
    let changes: [fn(&mut KeyParts); 6] = [
        |p| p.ep = ExecutionProvider::Cpu,
        |p| p.intra_threads = 1,
        |p| p.rows_per_run = 1,
        |p| p.tolerance = 0.02,
        |p| p.plugins[0] = "/opt/ort/ep/openvino/libplugin.so:4321".into(),
        |p| p.ort = "/opt/ort/gpu/libonnxruntime.so.1.31.1".into(),
    ];
    for (i, change) in changes.iter().enumerate() {
        let mut p = parts();
        change(&mut p);
        assert_ne!(p.key(), base, "change {i}");
    }
}

/// The parts of a real selector: this machine's device inventory as ONNX Runtime reports it,
/// the model digest and the options it was given.
#[test]
fn the_key_of_a_selector_holds_the_device_inventory_digest_and_options() {
    use crate::provider::{Selector, plugins, session::Params};
    let (_, env) = crate::runtime::for_tests();
    let mut options = EpOptions::default();
    options.openvino.precision = "bf16".into();
    let sel = Selector {
        params: Params {
            env: &env,
            path: std::path::Path::new("model.onnx"),
            intra_threads: 3,
            spinning: false,
            options: &options,
            plugins: &[],
            rows_per_run: 1,
        },
        order: Vec::new(),
        auto: true,
        cases: Vec::new(),
        tolerance: (0.01, "runtime.accuracy_max_abs_diff"),
        digest: "d".repeat(64),
        cache_file: None,
    };
    let p = KeyParts::of(&sel, ExecutionProvider::Cpu);
    assert_eq!(p.hardware, json(&plugins::inventory(&env)));
    assert!(
        p.hardware.contains("CPUExecutionProvider"),
        "{}",
        p.hardware
    );
    assert_eq!(p.digest, sel.digest);
    assert_eq!(p.options, json(&options));
    assert_eq!(
        (p.ep, p.intra_threads, p.rows_per_run),
        (ExecutionProvider::Cpu, 3, 1)
    );
}
