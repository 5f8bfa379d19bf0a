//! The engine's bounded queue: when full, new requests are refused at once with QueueFull
//! (accepted work is never dropped), and the refusals are counted.

mod common;

use tandem_agent::inference::{InferenceError, Input};
use tandem_shared::oip::{InputTensor, TensorData};

#[test]
fn a_full_queue_refuses_new_requests_and_finishes_accepted_ones() {
    let mut cfg = common::config(&["vision-fashion"], "cloud", &["cpu"]);
    cfg.engine.queue_capacity = 2;
    cfg.engine.workers = 1;
    cfg.runtime.intra_op_threads = 1;
    let batch = 2000;
    // Large requests keep the worker busy: above the default rows cap on purpose.
    cfg.engine.max_rows_per_request = batch as usize;
    let e = common::engine_with(&cfg);
    let big = || {
        Input::tensors(vec![InputTensor {
            name: "input".into(),
            shape: vec![batch, 1, 28, 28],
            data: TensorData::F32(vec![0.5; batch as usize * 784]),
        }])
    };
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..12 {
        match e.submit("vision-fashion", big()) {
            Ok(rx) => accepted.push(rx),
            Err(InferenceError::QueueFull { capacity, .. }) => {
                assert_eq!(capacity, 2);
                refused += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    // One may be running, two waiting: at most three accepted.
    assert!(
        accepted.len() <= 3 && refused >= 9,
        "accepted {} refused {refused}",
        accepted.len()
    );
    for rx in accepted {
        let inf = rx
            .blocking_recv()
            .expect("answered")
            .expect("accepted work completes");
        assert_eq!(inf.predictions.len(), batch as usize);
    }
    let text = e.metrics().render(&[]);
    assert!(
        text.contains(&format!(
            "tandem_queue_rejected_total{{model=\"vision-fashion\"}} {refused}"
        )),
        "{text}"
    );
    // Once drained, it accepts again.
    assert!(e.infer_blocking("vision-fashion", big()).is_ok());
}
