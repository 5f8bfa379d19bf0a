//! Lying and broken peers: each wrong header or payload gives its own precise error, before
//! any allocation the input does not justify, and framing errors stick.

use tandem_shared::wire::{
    DEFAULT_MAX_FRAME_BYTES, DType, ErrorCode, FrameDecoder, HEADER_LEN, Input, MAX_NAME_BYTES,
    MAX_RANK, MAX_TENSORS, Message, Tensor, WireError, decode_payload, encode_frame, encode_to_vec,
};

fn header(version: u8, kind: u8, len: u32) -> Vec<u8> {
    let mut h = b"TD".to_vec();
    h.push(version);
    h.push(kind);
    h.extend_from_slice(&len.to_le_bytes());
    h
}

/// InferRequest payload prefix: request_id 1, model "m", no version, no deadline.
fn request_prefix() -> Vec<u8> {
    let mut p = 1u64.to_le_bytes().to_vec();
    p.extend_from_slice(&1u16.to_le_bytes());
    p.push(b'm');
    p.push(0);
    p.extend_from_slice(&0u32.to_le_bytes());
    p
}

/// A request whose input is one tensor: name "t", `dtype` tag, `shape`, declared data length.
fn tensor_request(dtype: u8, shape: &[i64], data_len: u32, data: &[u8]) -> Vec<u8> {
    let mut p = request_prefix();
    p.push(3);
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&1u16.to_le_bytes());
    p.push(b't');
    p.push(dtype);
    p.push(shape.len() as u8);
    for d in shape {
        p.extend_from_slice(&d.to_le_bytes());
    }
    p.extend_from_slice(&data_len.to_le_bytes());
    p.extend_from_slice(data);
    p
}

#[test]
fn bad_magic_is_caught_on_the_first_byte_and_sticks() {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    dec.feed(b"G");
    let err = dec.next_frame().expect_err("bad magic");
    assert_eq!(err, WireError::BadMagic { got: [b'G', 0] });
    assert!(err.is_framing());
    dec.feed(&encode_to_vec(&Message::Ping { nonce: 1 }, DEFAULT_MAX_FRAME_BYTES).expect("enc"));
    assert_eq!(dec.next_frame(), Err(err.clone()));
    assert_eq!(dec.finish(), Err(err));
}

#[test]
fn http_on_the_stream_is_bad_magic() {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    dec.feed(b"GET / HTTP/1.1\r\n");
    assert_eq!(dec.next_frame(), Err(WireError::BadMagic { got: *b"GE" }));
}

#[test]
fn unknown_version_is_caught_before_the_length() {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    dec.feed(&header(2, 1, 0)[..3]);
    assert_eq!(
        dec.next_frame(),
        Err(WireError::UnsupportedVersion {
            got: 2,
            supported: 1
        })
    );
}

#[test]
fn huge_declared_frame_is_refused_from_the_header_alone() {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    dec.feed(&header(1, 1, u32::MAX));
    assert_eq!(
        dec.next_frame(),
        Err(WireError::FrameTooLarge {
            len: u64::from(u32::MAX),
            max: DEFAULT_MAX_FRAME_BYTES as u64
        })
    );
    assert_eq!(dec.buffered(), HEADER_LEN);
    let mut small = FrameDecoder::new(7);
    small.feed(&encode_to_vec(&Message::Ping { nonce: 1 }, 8).expect("enc"));
    assert_eq!(
        small.next_frame(),
        Err(WireError::FrameTooLarge { len: 8, max: 7 })
    );
}

#[test]
fn unknown_kind_skips_one_frame_and_keeps_the_stream_in_sync() {
    let mut stream = header(1, 0x7f, 3);
    stream.extend_from_slice(b"abc");
    stream
        .extend(encode_to_vec(&Message::Pong { nonce: 9 }, DEFAULT_MAX_FRAME_BYTES).expect("enc"));
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    dec.feed(&stream);
    let err = dec.next_message().expect_err("unknown kind");
    assert_eq!(err, WireError::UnknownKind(0x7f));
    assert!(!err.is_framing());
    // docs/wire.md: an unknown kind is answered with code 6 (UnsupportedKind), not 1.
    assert_eq!(err.answer_code(), ErrorCode::UnsupportedKind);
    assert_eq!(err.answer_code().to_u16(), 6);
    let bad = WireError::TrailingBytes { count: 1 };
    assert_eq!(
        bad.answer_code().to_u16(),
        1,
        "other payload errors: BadRequest"
    );
    assert_eq!(dec.next_message(), Ok(Some(Message::Pong { nonce: 9 })));
}

#[test]
fn stream_ending_inside_a_frame_is_incomplete() {
    let bytes = encode_to_vec(&Message::Ping { nonce: 1 }, DEFAULT_MAX_FRAME_BYTES).expect("enc");
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    dec.feed(&bytes[..5]);
    assert_eq!(dec.next_frame(), Ok(None));
    assert_eq!(
        dec.finish(),
        Err(WireError::IncompleteFrame {
            buffered: 5,
            needed: 8
        })
    );
    dec.feed(&bytes[5..10]);
    assert_eq!(dec.next_frame(), Ok(None));
    assert_eq!(
        dec.finish(),
        Err(WireError::IncompleteFrame {
            buffered: 10,
            needed: 16
        })
    );
}

#[test]
fn declared_lengths_past_the_payload_are_truncated() {
    let mut p = 1u64.to_le_bytes().to_vec();
    p.extend_from_slice(&10u16.to_le_bytes());
    p.extend_from_slice(b"abc");
    assert_eq!(
        decode_payload(1, &p),
        Err(WireError::Truncated {
            field: "model",
            needed: 10,
            remaining: 3
        })
    );
    let mut p = request_prefix();
    p.push(1);
    p.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode_payload(1, &p),
        Err(WireError::Truncated {
            field: "input.image",
            needed: u64::from(u32::MAX),
            remaining: 0
        })
    );
    assert_eq!(
        decode_payload(5, &[1, 2, 3]),
        Err(WireError::Truncated {
            field: "nonce",
            needed: 8,
            remaining: 3
        })
    );
}

#[test]
fn strings_over_their_limit_are_refused_before_reading() {
    let mut p = 1u64.to_le_bytes().to_vec();
    p.extend_from_slice(&u16::MAX.to_le_bytes());
    assert_eq!(
        decode_payload(1, &p),
        Err(WireError::StringTooLong {
            field: "model",
            len: 65535,
            max: MAX_NAME_BYTES
        })
    );
}

#[test]
fn bad_utf8_and_bad_tags_name_their_field() {
    let mut p = request_prefix();
    p.push(2);
    p.extend_from_slice(&2u32.to_le_bytes());
    p.extend_from_slice(&[0xff, 0xfe]);
    assert_eq!(
        decode_payload(1, &p),
        Err(WireError::InvalidUtf8 {
            field: "input.text"
        })
    );
    let mut p = request_prefix();
    p.push(9);
    assert_eq!(
        decode_payload(1, &p),
        Err(WireError::InvalidTag {
            field: "input",
            got: 9
        })
    );
    let mut p = request_prefix();
    p[11] = 2; // model_version option tag
    assert_eq!(
        decode_payload(1, &p),
        Err(WireError::InvalidTag {
            field: "model_version",
            got: 2
        })
    );
    assert_eq!(
        decode_payload(1, &tensor_request(7, &[1], 1, &[0])),
        Err(WireError::InvalidTag {
            field: "tensor.dtype",
            got: 7
        })
    );
}

#[test]
fn tensor_lies_are_refused() {
    let mut p = request_prefix();
    p.push(3);
    p.extend_from_slice(&u16::MAX.to_le_bytes());
    assert_eq!(
        decode_payload(1, &p),
        Err(WireError::TooManyTensors {
            count: 65535,
            max: MAX_TENSORS
        })
    );
    let mut p = tensor_request(1, &[], 0, &[]);
    let rank_at = p.len() - 5;
    p[rank_at] = 200;
    assert_eq!(
        decode_payload(1, &p),
        Err(WireError::RankTooLarge {
            tensor: "t".into(),
            rank: 200,
            max: MAX_RANK
        })
    );
    assert_eq!(
        decode_payload(1, &tensor_request(1, &[2, -1], 0, &[])),
        Err(WireError::InvalidShape {
            tensor: "t".into(),
            shape: vec![2, -1]
        })
    );
    assert_eq!(
        decode_payload(1, &tensor_request(2, &[i64::MAX, i64::MAX], 0, &[])),
        Err(WireError::InvalidShape {
            tensor: "t".into(),
            shape: vec![i64::MAX, i64::MAX]
        })
    );
    assert_eq!(
        decode_payload(1, &tensor_request(1, &[2, 2], 15, &[0; 15])),
        Err(WireError::ShapeMismatch {
            tensor: "t".into(),
            shape: vec![2, 2],
            expected: 16,
            got: 15
        })
    );
    // A shape asking for 4 GiB of data is refused from the header fields, not allocated.
    assert_eq!(
        decode_payload(1, &tensor_request(3, &[1 << 32], u32::MAX, &[])),
        Err(WireError::ShapeMismatch {
            tensor: "t".into(),
            shape: vec![1 << 32],
            expected: 1 << 32,
            got: u64::from(u32::MAX)
        })
    );
    assert_eq!(
        decode_payload(1, &tensor_request(3, &[8], 8, &[0; 3])),
        Err(WireError::Truncated {
            field: "tensor.data",
            needed: 8,
            remaining: 3
        })
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let mut p = 7u64.to_le_bytes().to_vec();
    p.push(0);
    assert_eq!(
        decode_payload(5, &p),
        Err(WireError::TrailingBytes { count: 1 })
    );
}

#[test]
fn unknown_error_codes_survive_a_round_trip() {
    let msg = Message::Error {
        request_id: 0,
        code: ErrorCode::from_u16(999),
        message: String::new(),
    };
    assert!(matches!(
        msg,
        Message::Error {
            code: ErrorCode::Unknown(999),
            ..
        }
    ));
    let bytes = encode_to_vec(&msg, DEFAULT_MAX_FRAME_BYTES).expect("enc");
    assert_eq!(decode_payload(bytes[3], &bytes[8..]), Ok(msg));
}

#[test]
fn encoder_refuses_what_the_decoder_would_and_leaves_the_buffer_alone() {
    let mut out = b"keep".to_vec();
    let big = Message::Deliver {
        epoch: 0,
        seq: 0,
        payload: vec![0; 100],
    };
    assert_eq!(
        encode_frame(&big, 50, &mut out),
        Err(WireError::FrameTooLarge { len: 120, max: 50 })
    );
    let long = Message::InferRequest {
        request_id: 1,
        model: "m".repeat(MAX_NAME_BYTES + 1),
        model_version: None,
        deadline_ms: 0,
        input: Input::Text(String::new()),
    };
    assert!(matches!(
        encode_frame(&long, DEFAULT_MAX_FRAME_BYTES, &mut out),
        Err(WireError::StringTooLong { field: "model", .. })
    ));
    let bad = Message::InferRequest {
        request_id: 1,
        model: "m".into(),
        model_version: None,
        deadline_ms: 0,
        input: Input::Tensors(vec![Tensor {
            name: "t".into(),
            dtype: DType::F32,
            shape: vec![3],
            data: vec![0; 4],
        }]),
    };
    assert!(matches!(
        encode_frame(&bad, DEFAULT_MAX_FRAME_BYTES, &mut out),
        Err(WireError::ShapeMismatch {
            expected: 12,
            got: 4,
            ..
        })
    ));
    assert_eq!(out, b"keep");
}

/// A `PredictResponse` payload with a one-class top-k whose score is `score` (bits).
fn top_k_response(count: u16, score: u32) -> Vec<u8> {
    let mut p = 1u64.to_le_bytes().to_vec();
    for s in ["m", "1"] {
        p.extend_from_slice(&1u16.to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    }
    p.extend_from_slice(&[0; 12]); // timing
    p.push(1); // top-k
    p.extend_from_slice(&[0; 12]); // signals 0, 0, 0
    p.extend_from_slice(&count.to_le_bytes());
    for _ in 0..count.min(1) {
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(&0u16.to_le_bytes());
        p.extend_from_slice(&score.to_le_bytes());
    }
    p.extend_from_slice(&0u16.to_le_bytes()); // no outputs
    p
}

#[test]
fn prediction_lies_are_refused() {
    let ok = decode_payload(0x08, &top_k_response(1, 0.5f32.to_bits())).expect("decodes");
    let Message::PredictResponse { prediction, .. } = ok else {
        panic!("not a PredictResponse: {ok:?}");
    };
    assert_eq!(prediction.classification().map(|c| c.index), Some(7));
    for (what, payload, field) in [
        (
            "NaN score",
            top_k_response(1, f32::NAN.to_bits()),
            "class.score",
        ),
        (
            "infinite score",
            top_k_response(1, f32::INFINITY.to_bits()),
            "class.score",
        ),
        ("empty top-k", top_k_response(0, 0), "top_k"),
        ("over 4096 classes", top_k_response(5000, 0), "top_k"),
    ] {
        match decode_payload(0x08, &payload) {
            Err(WireError::InvalidValue { field: f, .. }) => assert_eq!(f, field, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    // A count the payload cannot hold is truncated, not allocated.
    assert!(matches!(
        decode_payload(0x08, &top_k_response(4000, 0)),
        Err(WireError::Truncated { .. })
    ));
    // The request's k: 0 and over 4096 are refused, and a raw-outputs flag must be 0 or 1.
    let request = |k: u16, flag: u8| {
        let mut p = request_prefix();
        p.extend_from_slice(&k.to_le_bytes());
        p.push(flag);
        p.push(2);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(b'x');
        p
    };
    assert!(decode_payload(0x07, &request(5, 0)).is_ok());
    for (k, flag) in [(0, 0), (4097, 0)] {
        assert!(
            matches!(
                decode_payload(0x07, &request(k, flag)),
                Err(WireError::InvalidValue { field: "top_k", .. })
            ),
            "k {k}"
        );
    }
    assert!(matches!(
        decode_payload(0x07, &request(5, 2)),
        Err(WireError::InvalidTag {
            field: "raw_outputs",
            got: 2
        })
    ));
    // The encoder refuses the same.
    let bad = Message::PredictRequest {
        request_id: 1,
        model: "m".into(),
        model_version: None,
        deadline_ms: 0,
        top_k: 0,
        raw_outputs: false,
        input: Input::Text("x".into()),
    };
    assert!(encode_to_vec(&bad, DEFAULT_MAX_FRAME_BYTES).is_err());
}
