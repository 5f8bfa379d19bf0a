//! Dynamic batching in the engine: requests queued together run as one batch, each gets
//! exactly its own rows (the same answer it gets alone), and a bad input in a batch fails only
//! its own request.

mod common;

use bytes::Bytes;
use common::{models_dir, read_json};
use tandem_agent::inference::Input;
use tandem_shared::oip::{InputTensor, TensorData};

fn reference_inputs() -> Vec<Vec<f32>> {
    let refs = read_json(&models_dir().join("vision-fashion/testdata/reference.json"));
    refs["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["variant"] == "cloud")
        .map(|c| {
            let raw = std::fs::read(
                models_dir()
                    .join("vision-fashion")
                    .join(c["inputs"][0]["file"].as_str().expect("file")),
            )
            .expect("bin");
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .collect()
}

fn tensor(data: &[f32]) -> Input {
    Input::tensors(vec![InputTensor {
        name: "input".into(),
        shape: vec![1, 1, 28, 28],
        data: TensorData::F32(data.to_vec()),
    }])
}

#[test]
fn batched_answers_equal_unbatched_ones() {
    let inputs = reference_inputs();
    assert!(inputs.len() >= 4);
    let plain = common::engine(&["vision-fashion"], "cloud");
    let alone: Vec<Vec<f32>> = inputs
        .iter()
        .map(|x| {
            match &plain
                .infer_blocking("vision-fashion", tensor(x))
                .expect("runs")
                .outputs[0]
                .data
            {
                TensorData::F32(v) => v.clone(),
                _ => panic!("f32"),
            }
        })
        .collect();

    let mut cfg = common::config(&["vision-fashion"], "cloud", &["cpu"]);
    cfg.engine.workers = 1;
    cfg.engine.max_batch = 16;
    cfg.engine.max_batch_delay_us = 200_000;
    let e = common::engine_with(&cfg);
    // Submit everything before waiting: the worker gathers them into batches.
    let pending: Vec<_> = (0..3)
        .flat_map(|_| inputs.iter())
        .map(|x| e.submit("vision-fashion", tensor(x)).expect("queued"))
        .collect();
    let mut biggest = 0;
    for (i, rx) in pending.into_iter().enumerate() {
        let inf = rx.blocking_recv().expect("answered").expect("ok");
        biggest = biggest.max(inf.timing.batch_size);
        assert_eq!(inf.predictions.len(), 1);
        assert_eq!(inf.outputs[0].shape, vec![1, 10]);
        let TensorData::F32(got) = &inf.outputs[0].data else {
            panic!("f32")
        };
        let want = &alone[i % inputs.len()];
        let diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff <= 1e-4,
            "request {i}: batched output differs by {diff}"
        );
    }
    assert!(biggest > 1, "nothing was batched");
}

#[test]
fn a_bad_image_in_a_batch_fails_alone() {
    let mut cfg = common::config(&["vision-fashion"], "edge", &["cpu"]);
    cfg.engine.workers = 1;
    cfg.engine.max_batch = 8;
    cfg.engine.max_batch_delay_us = 200_000;
    let e = common::engine_with(&cfg);
    let good = Bytes::from(
        std::fs::read(models_dir().join("vision-fashion/samples/0_9.png")).expect("png"),
    );
    let bad = Bytes::from_static(b"not an image at all");
    let inputs = [good.clone(), bad, good.clone(), good];
    let pending: Vec<_> = inputs
        .iter()
        .map(|b| {
            e.submit("vision-fashion", Input::Images(vec![b.clone()]))
                .expect("queued")
        })
        .collect();
    let results: Vec<_> = pending
        .into_iter()
        .map(|rx| rx.blocking_recv().expect("answered"))
        .collect();
    assert!(
        results[1]
            .as_ref()
            .is_err_and(|e| e.to_string().contains("not a JPEG or PNG"))
    );
    for i in [0, 2, 3] {
        assert_eq!(
            results[i]
                .as_ref()
                .expect("good image answered")
                .predictions[0]
                .label,
            "Ankle boot"
        );
    }
}
