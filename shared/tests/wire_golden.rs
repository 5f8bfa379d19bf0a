//! Golden bytes for every wire message kind: `fixtures/wire/*.hex` (annotated hex) must equal
//! what the encoder writes and must decode back to the same message, so an accidental format
//! change fails here.

use tandem_shared::wire::{
    BundleFile, DEFAULT_MAX_FRAME_BYTES, DType, ErrorCode, FrameDecoder, Input, Message, Tensor,
    Timing, encode_to_vec,
};

/// Reads an annotated hex fixture: `#` starts a comment, whitespace is ignored.
fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/wire/{name}.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert!(
        digits.len().is_multiple_of(2),
        "{path}: odd number of hex digits"
    );
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn check(name: &str, msg: Message) {
    let want = fixture(name);
    let got = encode_to_vec(&msg, DEFAULT_MAX_FRAME_BYTES).expect("encodes");
    assert_eq!(
        hex(&got),
        hex(&want),
        "{name}: encoder output differs from the fixture"
    );
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    dec.feed(&want);
    assert_eq!(dec.next_message().expect("decodes"), Some(msg), "{name}");
    assert_eq!(dec.next_frame().expect("no error"), None);
    dec.finish().expect("nothing left over");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn golden_infer_request_image() {
    check(
        "infer_request_image",
        Message::InferRequest {
            request_id: 42,
            model: "vision-fashion".into(),
            model_version: Some("1.0.0".into()),
            deadline_ms: 250,
            input: Input::ImageBytes(vec![0x89, b'P', b'N', b'G']),
        },
    );
}

#[test]
fn golden_infer_request_text() {
    check(
        "infer_request_text",
        Message::InferRequest {
            request_id: 43,
            model: "text-sentiment".into(),
            model_version: None,
            deadline_ms: 0,
            input: Input::Text("good film".into()),
        },
    );
}

#[test]
fn golden_infer_request_tensors() {
    check(
        "infer_request_tensors",
        Message::InferRequest {
            request_id: 44,
            model: "vision-fashion".into(),
            model_version: None,
            deadline_ms: 100,
            input: Input::Tensors(vec![Tensor {
                name: "input".into(),
                dtype: DType::U8,
                shape: vec![1, 2, 2],
                data: vec![0, 1, 2, 3],
            }]),
        },
    );
}

#[test]
fn golden_infer_response() {
    let data = [0.25f32, 0.75]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    check(
        "infer_response",
        Message::InferResponse {
            request_id: 44,
            model: "vision-fashion".into(),
            model_version: "1.0.0".into(),
            outputs: vec![Tensor {
                name: "probs".into(),
                dtype: DType::F32,
                shape: vec![1, 2],
                data,
            }],
            timing: Timing {
                queue_us: 1500,
                service_us: 3200,
                batch_size: 8,
            },
        },
    );
}

#[test]
fn golden_busy() {
    check(
        "busy",
        Message::Busy {
            request_id: 45,
            retry_after_ms: 1000,
        },
    );
}

#[test]
fn golden_error() {
    check(
        "error",
        Message::Error {
            request_id: 46,
            code: ErrorCode::UnknownModel,
            message: "no model `x`".into(),
        },
    );
}

#[test]
fn golden_ping_pong() {
    check(
        "ping",
        Message::Ping {
            nonce: 0x0123_4567_89ab_cdef,
        },
    );
    check(
        "pong",
        Message::Pong {
            nonce: 0x0123_4567_89ab_cdef,
        },
    );
}

#[test]
fn golden_deliver_ack() {
    check(
        "deliver",
        Message::Deliver {
            epoch: 3,
            seq: 17,
            payload: b"{}".to_vec(),
        },
    );
    check("ack", Message::Ack { epoch: 3, seq: 17 });
}

#[test]
fn golden_model_download() {
    check(
        "bundle_request",
        Message::BundleRequest {
            model: "vision-fashion".into(),
            version: "1.0.1".into(),
        },
    );
    check(
        "bundle_offer",
        Message::BundleOffer {
            model: "vision-fashion".into(),
            version: "1.0.1".into(),
            digest: "3f".repeat(32),
            files: vec![
                BundleFile {
                    path: "bundle.json".into(),
                    size: 1234,
                },
                BundleFile {
                    path: "edge.onnx".into(),
                    size: 35891,
                },
            ],
        },
    );
    check(
        "chunk_request",
        Message::ChunkRequest {
            model: "vision-fashion".into(),
            version: "1.0.1".into(),
            path: "edge.onnx".into(),
            offset: 65536,
            len: 0,
        },
    );
    check(
        "chunk",
        Message::Chunk {
            offset: 65536,
            data: b"abc".to_vec(),
        },
    );
}

#[test]
fn golden_certificates() {
    check(
        "enrol",
        Message::Enrol {
            token: "tok1".into(),
            name: "cam1".into(),
            csr: vec![0x30, 0x01, 0x00],
        },
    );
    check(
        "renew",
        Message::Renew {
            csr: vec![0x30, 0x00],
        },
    );
    check(
        "issued",
        Message::Issued {
            name: "lab-cam-1".into(),
            cert: vec![0x30, 0x00],
        },
    );
}

#[test]
fn forbidden_error_code_is_eight() {
    assert_eq!(ErrorCode::Forbidden.to_u16(), 8);
    assert_eq!(ErrorCode::from_u16(8), ErrorCode::Forbidden);
}

#[test]
fn golden_frames_concatenated_decode_in_order() {
    let names = ["ping", "infer_request_text", "busy", "ack"];
    let stream: Vec<u8> = names.iter().flat_map(|n| fixture(n)).collect();
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    dec.feed(&stream);
    let mut kinds = Vec::new();
    while let Some(m) = dec.next_message().expect("decodes") {
        kinds.push(m.kind() as u8);
    }
    assert_eq!(kinds, [0x05, 0x01, 0x03, 0x11]);
    dec.finish().expect("clean end");
}

#[test]
fn golden_predict_request() {
    check(
        "predict_request",
        Message::PredictRequest {
            request_id: 45,
            model: "vision-imagenet".into(),
            model_version: None,
            deadline_ms: 300,
            top_k: 3,
            raw_outputs: true,
            input: Input::ImageBytes(vec![0xff, 0xd8, 0xff, 0xd9]),
        },
    );
}

#[test]
fn golden_predict_response_top_k() {
    use tandem_shared::answer::{ClassScore, ClassSignals, Classification, Prediction};
    let class = |index, label: &str, score| ClassScore {
        index,
        label: label.into(),
        score,
    };
    check(
        "predict_response_top_k",
        Message::PredictResponse {
            request_id: 45,
            model: "vision-imagenet".into(),
            model_version: "2.0.0".into(),
            timing: Timing {
                queue_us: 120,
                service_us: 4100,
                batch_size: 2,
            },
            prediction: Prediction::TopK(Classification::from_top_k(
                vec![
                    class(207, "golden retriever", 0.75),
                    class(208, "Labrador", 0.25),
                ],
                ClassSignals {
                    max_prob: 0.75,
                    margin: 0.5,
                    entropy: 0.625,
                },
            )),
            outputs: Vec::new(),
        },
    );
}

#[test]
fn golden_predict_response_boxes() {
    use tandem_shared::answer::Prediction;
    use tandem_shared::detect::{Detection, Detections};
    check(
        "predict_response_boxes",
        Message::PredictResponse {
            request_id: 46,
            model: "detect-coco".into(),
            model_version: "1.0.0".into(),
            timing: Timing {
                queue_us: 900,
                service_us: 30000,
                batch_size: 1,
            },
            prediction: Prediction::Boxes(Detections {
                width: 500,
                height: 375,
                boxes: vec![Detection {
                    bbox: [84.0, 20.0, 435.0, 373.0],
                    class: 5,
                    label: "bus".into(),
                    score: 0.875,
                }],
            }),
            outputs: Vec::new(),
        },
    );
}
