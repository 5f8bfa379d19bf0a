//! Property tests of the wire codec: every message round-trips, also when the encoded stream
//! is cut at arbitrary points; arbitrary bytes never panic the decoder; whatever decodes
//! re-encodes to the same bytes.

use proptest::prelude::*;
use tandem_shared::answer::{ClassScore, ClassSignals, Classification, Prediction};
use tandem_shared::detect::{Detection, Detections};
use tandem_shared::wire::{
    BundleFile, DEFAULT_MAX_FRAME_BYTES, DType, ErrorCode, FrameDecoder, Input, MAX_NAME_BYTES,
    Message, Tensor, Timing, decode_payload, encode_to_vec,
};

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._-]{0,24}",
        any::<String>().prop_filter("fits", |s| s.len() <= MAX_NAME_BYTES),
    ]
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::I64), Just(DType::U8)]
}

fn tensor() -> impl Strategy<Value = Tensor> {
    (name(), dtype(), prop::collection::vec(0i64..5, 0..5)).prop_flat_map(|(name, dtype, shape)| {
        let len = shape.iter().product::<i64>() as usize * dtype.size() as usize;
        prop::collection::vec(any::<u8>(), len).prop_map(move |data| Tensor {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
            data,
        })
    })
}

fn tensors() -> impl Strategy<Value = Vec<Tensor>> {
    prop::collection::vec(tensor(), 0..4)
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256).prop_map(Input::ImageBytes),
        any::<String>().prop_map(Input::Text),
        tensors().prop_map(Input::Tensors),
    ]
}

fn score() -> impl Strategy<Value = f32> {
    prop_oneof![0.0f32..=1.0, -1e30f32..1e30, Just(-0.0f32)]
}

fn prediction() -> impl Strategy<Value = Prediction> {
    let class = (0usize..=u32::MAX as usize, name(), score()).prop_map(|(index, label, score)| {
        ClassScore {
            index,
            label,
            score,
        }
    });
    let top_k = (
        prop::collection::vec(class, 1..6),
        score(),
        score(),
        score(),
    )
        .prop_map(|(top_k, max_prob, margin, entropy)| {
            Prediction::TopK(Classification::from_top_k(
                top_k,
                ClassSignals {
                    max_prob,
                    margin,
                    entropy,
                },
            ))
        });
    let bbox = (
        [score(), score(), score(), score()],
        0usize..=u32::MAX as usize,
        name(),
        score(),
    )
        .prop_map(|(bbox, class, label, score)| Detection {
            bbox,
            class,
            label,
            score,
        });
    let boxes = (
        any::<u32>(),
        any::<u32>(),
        prop::collection::vec(bbox, 0..6),
    )
        .prop_map(|(width, height, boxes)| {
            Prediction::Boxes(Detections {
                width,
                height,
                boxes,
            })
        });
    prop_oneof![top_k, boxes]
}

fn predict() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u64>(),
            name(),
            prop::option::of(name()),
            any::<u32>(),
            1u16..=4096,
            any::<bool>(),
            input()
        )
            .prop_map(
                |(request_id, model, model_version, deadline_ms, top_k, raw_outputs, input)| {
                    Message::PredictRequest {
                        request_id,
                        model,
                        model_version,
                        deadline_ms,
                        top_k,
                        raw_outputs,
                        input,
                    }
                }
            ),
        (
            any::<u64>(),
            name(),
            name(),
            any::<(u32, u32, u32)>(),
            prediction(),
            tensors()
        )
            .prop_map(
                |(request_id, model, model_version, t, prediction, outputs)| {
                    Message::PredictResponse {
                        request_id,
                        model,
                        model_version,
                        timing: Timing {
                            queue_us: t.0,
                            service_us: t.1,
                            batch_size: t.2,
                        },
                        prediction,
                        outputs,
                    }
                }
            ),
    ]
}

fn code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode::from_u16)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        predict(),
        (
            any::<u64>(),
            name(),
            prop::option::of(name()),
            any::<u32>(),
            input()
        )
            .prop_map(|(request_id, model, model_version, deadline_ms, input)| {
                Message::InferRequest {
                    request_id,
                    model,
                    model_version,
                    deadline_ms,
                    input,
                }
            }),
        (
            any::<u64>(),
            name(),
            name(),
            tensors(),
            any::<(u32, u32, u32)>()
        )
            .prop_map(|(request_id, model, model_version, outputs, t)| {
                Message::InferResponse {
                    request_id,
                    model,
                    model_version,
                    outputs,
                    timing: Timing {
                        queue_us: t.0,
                        service_us: t.1,
                        batch_size: t.2,
                    },
                }
            }),
        (any::<u64>(), any::<u32>()).prop_map(|(request_id, retry_after_ms)| Message::Busy {
            request_id,
            retry_after_ms
        }),
        (any::<u64>(), code(), any::<String>()).prop_map(|(request_id, code, message)| {
            Message::Error {
                request_id,
                code,
                message,
            }
        }),
        any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..128)
        )
            .prop_map(|(epoch, seq, payload)| Message::Deliver {
                epoch,
                seq,
                payload
            }),
        (any::<u64>(), any::<u64>()).prop_map(|(epoch, seq)| Message::Ack { epoch, seq }),
        (name(), name()).prop_map(|(model, version)| Message::BundleRequest { model, version }),
        (
            name(),
            name(),
            name(),
            prop::collection::vec((name(), any::<u64>()), 0..8)
        )
            .prop_map(|(model, version, digest, files)| Message::BundleOffer {
                model,
                version,
                digest,
                files: files
                    .into_iter()
                    .map(|(path, size)| BundleFile { path, size })
                    .collect(),
            }),
        (name(), name(), name(), any::<u64>(), any::<u64>()).prop_map(
            |(model, version, path, offset, len)| Message::ChunkRequest {
                model,
                version,
                path,
                offset,
                len
            }
        ),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..128))
            .prop_map(|(offset, data)| Message::Chunk { offset, data }),
        (name(), name(), prop::collection::vec(any::<u8>(), 0..128))
            .prop_map(|(token, name, csr)| Message::Enrol { token, name, csr }),
        prop::collection::vec(any::<u8>(), 0..128).prop_map(|csr| Message::Renew { csr }),
        (name(), prop::collection::vec(any::<u8>(), 0..128))
            .prop_map(|(name, cert)| Message::Issued { name, cert }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(msg in message()) {
        let bytes = encode_to_vec(&msg, DEFAULT_MAX_FRAME_BYTES).expect("encodes");
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        dec.feed(&bytes);
        let frame = dec.next_frame().expect("frames").expect("complete");
        prop_assert_eq!(frame.kind, msg.kind() as u8);
        prop_assert_eq!(decode_payload(frame.kind, &frame.payload).expect("decodes"), msg);
        prop_assert_eq!(dec.buffered(), 0);
        dec.finish().expect("clean end");
    }

    #[test]
    fn stream_split_at_arbitrary_points_round_trips(
        msgs in prop::collection::vec(message(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend(encode_to_vec(m, DEFAULT_MAX_FRAME_BYTES).expect("encodes"));
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        let mut got = Vec::new();
        for w in points.windows(2) {
            dec.feed(&stream[w[0]..w[1]]);
            while let Some(m) = dec.next_message().expect("decodes") {
                got.push(m);
            }
        }
        prop_assert_eq!(got, msgs);
        dec.finish().expect("clean end");
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        chunk in 1usize..64,
        max in 0usize..1024,
    ) {
        let mut dec = FrameDecoder::new(max);
        for c in bytes.chunks(chunk) {
            dec.feed(c);
            while let Ok(Some(frame)) = dec.next_frame() {
                let _ = frame.decode();
            }
        }
        let _ = dec.finish();
    }

    #[test]
    fn arbitrary_payloads_never_panic_and_reencode_exactly(
        kind in prop_oneof![1u8..=8, 0x10u8..=0x11, 0x20u8..=0x23, 0x30u8..=0x32, any::<u8>()],
        payload in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        if let Ok(msg) = decode_payload(kind, &payload) {
            let bytes = encode_to_vec(&msg, DEFAULT_MAX_FRAME_BYTES).expect("re-encodes");
            prop_assert_eq!(&bytes[8..], &payload[..]);
        }
    }

    #[test]
    fn corrupted_valid_frames_never_panic_and_reencode_exactly(
        msg in message(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode_to_vec(&msg, DEFAULT_MAX_FRAME_BYTES).expect("encodes");
        for (i, b) in flips {
            let i = i.index(bytes.len() - 8) + 8;
            bytes[i] = b;
        }
        if let Ok(m) = decode_payload(bytes[3], &bytes[8..]) {
            let again = encode_to_vec(&m, DEFAULT_MAX_FRAME_BYTES).expect("re-encodes");
            prop_assert_eq!(&again[8..], &bytes[8..]);
        }
    }
}
