//! Property tests of the OIP v2 codec: binary-extension requests round-trip, and no byte
//! string makes the decoder panic.

use proptest::prelude::*;
use serde_json::json;
use tandem_shared::oip::{TensorData, decode_request};

fn data() -> impl Strategy<Value = TensorData> {
    prop_oneof![
        prop::collection::vec(any::<f32>().prop_filter("finite", |x| x.is_finite()), 0..64)
            .prop_map(TensorData::F32),
        prop::collection::vec(any::<i64>(), 0..64).prop_map(TensorData::I64),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 0..8)
            .prop_map(TensorData::Bytes),
    ]
}

fn raw(d: &TensorData) -> Vec<u8> {
    match d {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bytes(v) => v
            .iter()
            .flat_map(|b| {
                (b.len() as u32)
                    .to_le_bytes()
                    .into_iter()
                    .chain(b.iter().copied())
            })
            .collect(),
    }
}

proptest! {
    #[test]
    fn binary_requests_round_trip(tensors in prop::collection::vec(data(), 1..4)) {
        let mut inputs = Vec::new();
        let mut bin = Vec::new();
        for (i, t) in tensors.iter().enumerate() {
            let r = raw(t);
            inputs.push(json!({"name": format!("in{i}"), "shape": [t.len()], "datatype": t.datatype(), "parameters": {"binary_data_size": r.len()}}));
            bin.extend(r);
        }
        let mut body = serde_json::to_vec(&json!({"inputs": inputs})).expect("json");
        let n = body.len();
        body.extend(bin);
        let d = decode_request(&body, Some(n)).expect("decodes");
        prop_assert_eq!(d.inputs.len(), tensors.len());
        for (got, want) in d.inputs.iter().zip(&tensors) {
            prop_assert_eq!(&got.data, want);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), split in any::<Option<u16>>()) {
        let _ = decode_request(&body, split.map(usize::from));
    }

    #[test]
    fn lying_sizes_are_errors_not_panics(size in any::<u64>(), dims in prop::collection::vec(any::<i64>(), 0..4), extra in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut body = serde_json::to_vec(&json!({"inputs": [{"name": "x", "shape": dims, "datatype": "FP32", "parameters": {"binary_data_size": size}}]})).expect("json");
        let n = body.len();
        body.extend(extra);
        let _ = decode_request(&body, Some(n));
    }
}
