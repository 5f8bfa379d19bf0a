//! Offloaded inference over real QUIC + mTLS: the hub runs the cloud variant (dynamically
//! batched) and answers with its outputs, version and timings; an unknown model or version, a
//! bad input and a full queue each get their precise answer.

use std::net::SocketAddr;
use std::sync::Arc;
use tandem_engine::settings::EngineSettings;
use tandem_engine::{Engine, metrics::Metrics, runtime};
use tandem_hub::ingress::quic::QuicIngress;
use tandem_hub::pki::Pki;
use tandem_shared::wire::{
    ALPN, DEFAULT_MAX_FRAME_BYTES, DType, ErrorCode, FrameDecoder, Input, Message, Tensor,
    encode_to_vec,
};
use tandem_tests::repo;
use tandem_tests::tls::quic_client_config;

fn engine(queue: usize, max_batch: usize) -> Arc<Engine> {
    engine_with(queue, max_batch, |_| {})
}

fn engine_with(
    queue: usize,
    max_batch: usize,
    tune: impl FnOnce(&mut EngineSettings),
) -> Arc<Engine> {
    let mut s = EngineSettings {
        base_dir: repo(),
        ..Default::default()
    };
    s.models.enabled = vec!["vision-fashion".into(), "vision-imagenet".into()];
    s.models.variant = "cloud".into();
    s.engine.queue_capacity = queue;
    s.engine.max_batch = max_batch;
    s.engine.max_batch_delay_us = 2000;
    tune(&mut s);
    let (_, env) = runtime::init(&s).expect("runtime");
    Arc::new(Engine::start(&s, &env, Arc::new(Metrics::default())).expect("engine"))
}

/// A hub in process serving `engine` over QUIC with a fresh PKI (devices `cam-01`, `cam-02`):
/// its PKI, address, stop sender, counters and the guard of its folder
/// (`tandem-serve-NAME-XXXXXX`, removed when the guard drops: hold it to the test's end).
async fn hub(
    name: &str,
    engine: Arc<Engine>,
) -> (
    Pki,
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    Arc<tandem_hub::ingress::quic::IngressStats>,
    tempfile::TempDir,
) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-serve-{name}-"))
        .tempdir()
        .expect("tmp");
    let pki = Pki::init(dir.path()).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    pki.add_device("cam-02", 365).expect("device");
    let ingress = QuicIngress::bind("127.0.0.1:0".parse().expect("addr"), pki.dir())
        .expect("bind")
        .with_engine(engine);
    let addr = ingress.local_addr().expect("addr");
    let stats = ingress.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ingress.run(async {
        let _ = rx.await;
    }));
    (pki, addr, tx, stats, dir)
}

async fn connect(pki: &Pki, addr: SocketAddr) -> quinn::Connection {
    connect_as(pki, addr, "cam-01").await
}

async fn connect_as(pki: &Pki, addr: SocketAddr, device: &str) -> quinn::Connection {
    let (cert, key) = pki.device_files(device);
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    ep.set_default_client_config(quic_client_config(
        &pki.dir().join("ca.pem"),
        Some((cert, key)),
        ALPN,
    ));
    ep.connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("handshake")
}

async fn call(conn: &quinn::Connection, msg: &Message) -> Message {
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&encode_to_vec(msg, DEFAULT_MAX_FRAME_BYTES).expect("encode"))
        .await
        .expect("write");
    send.finish().expect("finish");
    let bytes = recv
        .read_to_end(DEFAULT_MAX_FRAME_BYTES + 16)
        .await
        .expect("read");
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    d.feed(&bytes);
    d.next_message().expect("decodes").expect("a message")
}

fn argmax(t: &Tensor) -> usize {
    let v: Vec<f32> = t
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

fn request(id: u64, model: &str, input: Input) -> Message {
    Message::InferRequest {
        request_id: id,
        model: model.into(),
        model_version: None,
        deadline_ms: 0,
        input,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_answers_match_the_python_pipeline() {
    let (pki, addr, _stop, _, _tmp) = hub("answers", engine(64, 16)).await;
    let conn = connect(&pki, addr).await;
    let mut checked = 0;
    for (m, model) in ["vision-fashion", "vision-imagenet"]
        .into_iter()
        .enumerate()
    {
        let id_base = 1000 * (m as u64 + 1);
        let dir = repo().join("models").join(model);
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("testdata/expected.json")).expect("expected"),
        )
        .expect("json");
        let cases: Vec<_> = expected["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .filter(|c| c["variant"] == "cloud")
            .cloned()
            .collect();
        // All at once, so the hub can batch them.
        let calls = cases.iter().enumerate().map(|(i, c)| {
            let bytes =
                std::fs::read(dir.join(c["input"].as_str().expect("input"))).expect("sample");
            let conn = conn.clone();
            async move {
                call(
                    &conn,
                    &request(id_base + i as u64, model, Input::ImageBytes(bytes)),
                )
                .await
            }
        });
        let answers = futures_join_all(calls).await;
        for (c, a) in cases.iter().zip(answers) {
            match a {
                Message::InferResponse {
                    model_version,
                    outputs,
                    timing,
                    ..
                } => {
                    assert_eq!(model_version, "1.0.0");
                    assert_eq!(
                        argmax(&outputs[0]) as u64,
                        c["top1_index"].as_u64().expect("index"),
                        "{model} {}",
                        c["input"]
                    );
                    assert!(timing.batch_size >= 1 && timing.service_us > 0);
                    checked += 1;
                }
                other => panic!("{model}: unexpected {other:?}"),
            }
        }
    }
    assert!(checked >= 30, "{checked}");

    // Tensors work too (the fashion FP32 input as raw bytes).
    let t = Tensor {
        name: "input".into(),
        dtype: DType::F32,
        shape: vec![1, 1, 28, 28],
        data: vec![0; 784 * 4],
    };
    assert!(matches!(
        call(
            &conn,
            &request(100, "vision-fashion", Input::Tensors(vec![t]))
        )
        .await,
        Message::InferResponse {
            request_id: 100,
            ..
        }
    ));

    let precise = [
        (
            request(1, "no-such-model", Input::Text("x".into())),
            ErrorCode::UnknownModel,
        ),
        (
            request(
                2,
                "vision-fashion",
                Input::ImageBytes(b"not an image".to_vec()),
            ),
            ErrorCode::BadRequest,
        ),
        (
            request(
                3,
                "vision-fashion",
                Input::Text("a text for an image model".into()),
            ),
            ErrorCode::BadRequest,
        ),
        (
            Message::InferRequest {
                request_id: 4,
                model: "vision-fashion".into(),
                model_version: Some("9.9.9".into()),
                deadline_ms: 0,
                input: Input::Text("x".into()),
            },
            ErrorCode::UnknownModelVersion,
        ),
        (
            // 800 rows, over engine.max_rows_per_request (64): refused before any run.
            request(
                5,
                "vision-fashion",
                Input::Tensors(vec![Tensor {
                    name: "input".into(),
                    dtype: DType::F32,
                    shape: vec![800, 1, 28, 28],
                    data: vec![0; 800 * 784 * 4],
                }]),
            ),
            ErrorCode::BadRequest,
        ),
    ];
    for (req, want) in precise {
        match call(&conn, &req).await {
            Message::Error { code, message, .. } => assert_eq!(code, want, "{message}"),
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }
}

async fn futures_join_all<F: std::future::Future<Output = Message> + Send + 'static>(
    fs: impl Iterator<Item = F>,
) -> Vec<Message> {
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_busy() {
    // Large requests keep the worker busy: above the default rows cap on purpose.
    let e = engine_with(1, 1, |s| s.engine.max_rows_per_request = 3000);
    let (pki, addr, _stop, _, _tmp) = hub("busy", e).await;
    let conn = connect(&pki, addr).await;
    let big = || {
        let t = Tensor {
            name: "input".into(),
            dtype: DType::F32,
            shape: vec![3000, 1, 28, 28],
            data: vec![0; 3000 * 784 * 4],
        };
        request(7, "vision-fashion", Input::Tensors(vec![t]))
    };
    let calls = (0..8).map(|_| {
        let (conn, msg) = (conn.clone(), big());
        async move { call(&conn, &msg).await }
    });
    let answers = futures_join_all(calls).await;
    let busy = answers
        .iter()
        .filter(|m| matches!(m, Message::Busy { retry_after_ms, .. } if *retry_after_ms > 0))
        .count();
    let served = answers
        .iter()
        .filter(|m| matches!(m, Message::InferResponse { .. }))
        .count();
    assert!(busy >= 1, "no Busy among {answers:?}");
    assert_eq!(
        busy + served,
        8,
        "every request is either served or told busy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_id_is_answered_from_memory_per_device() {
    let engine = engine(64, 1);
    let (pki, addr, _stop, stats, _tmp) = hub("idem", engine.clone()).await;
    let png = std::fs::read(repo().join("models/vision-fashion/samples/6_4.png")).expect("sample");
    let req = request(42, "vision-fashion", Input::ImageBytes(png));
    let cam1 = connect_as(&pki, addr, "cam-01").await;
    let first = call(&cam1, &req).await;
    assert!(
        matches!(first, Message::InferResponse { request_id: 42, .. }),
        "{first:?}"
    );
    let ran = || engine.metrics().inference_count("vision-fashion", "ok");
    assert_eq!(ran(), 1);
    // The same device repeats request 42 (a retry, or replayed 0-RTT data): same answer, no run.
    let again = connect_as(&pki, addr, "cam-01").await;
    assert_eq!(call(&again, &req).await, first);
    assert_eq!(ran(), 1, "the repeat ran the model again");
    // Another device's request 42 is a different request.
    let cam2 = connect_as(&pki, addr, "cam-02").await;
    assert!(matches!(
        call(&cam2, &req).await,
        Message::InferResponse { request_id: 42, .. }
    ));
    assert_eq!(ran(), 2);
    let text = tandem_hub::app::render_metrics(&engine, &stats);
    assert!(
        text.contains("tandem_hub_quic_connections_accepted_total 3"),
        "{text}"
    );
    assert!(text.contains("tandem_hub_quic_streams_total 3"), "{text}");
    assert!(
        text.contains("tandem_inferences_total{model=\"vision-fashion\",outcome=\"ok\"} 2"),
        "{text}"
    );
}

/// An offloaded classification is answered with the hub engine's own decoding: the request's
/// `k` best classes (not the engine's `top_k` of 5), equal to what the engine's
/// post-processing makes of the raw outputs the same answer carries, best first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prediction_is_the_hub_engines_top_k_with_the_requests_k() {
    use tandem_shared::answer::Prediction;
    let engine = engine(64, 16);
    assert_eq!(
        engine.top_k(),
        5,
        "the engine's own k differs from the asked ones"
    );
    let (pki, addr, _stop, _, _tmp) = hub("predict", engine.clone()).await;
    let conn = connect(&pki, addr).await;
    let image = std::fs::read(repo().join("models/vision-imagenet/samples/imagenet_00_243.jpg"))
        .expect("sample");
    let ask = |id, top_k, raw_outputs| Message::PredictRequest {
        request_id: id,
        model: "vision-imagenet".into(),
        model_version: None,
        deadline_ms: 0,
        top_k,
        raw_outputs,
        input: Input::ImageBytes(image.clone()),
    };
    let h = engine.model("vision-imagenet").expect("loaded");
    for (id, k, raw) in [(1, 7u16, true), (2, 2, false), (3, 12, true)] {
        let Message::PredictResponse {
            request_id,
            model_version,
            prediction: Prediction::TopK(c),
            outputs,
            ..
        } = call(&conn, &ask(id, k, raw)).await
        else {
            panic!("k {k}: not a top-k PredictResponse");
        };
        assert_eq!((request_id, model_version.as_str()), (id, "1.0.0"));
        assert_eq!(c.top_k.len(), usize::from(k), "k {k}");
        assert_eq!(c.index, 243, "the sample's class (testdata/expected.json)");
        assert!(c.top_k.windows(2).all(|w| w[0].score >= w[1].score));
        assert_eq!(outputs.is_empty(), !raw, "raw outputs only when asked");
        // What the engine's post-processing makes of the same image on the hub's own engine.
        let inf = engine
            .infer(
                "vision-imagenet",
                tandem_engine::Input::Images(vec![image.clone().into()]),
            )
            .await
            .expect("infer");
        let mine = tandem_engine::postprocess::classify_rows(
            &h.files.variant.outputs[0],
            &inf.outputs[0].shape,
            &inf.outputs[0].data,
            &h.files.labels,
            usize::from(k),
        );
        assert_eq!(mine.len(), 1);
        let same_classes = |a: &[tandem_shared::answer::ClassScore],
                            b: &[tandem_shared::answer::ClassScore]| {
            a.iter()
                .map(|s| (s.index, &s.label))
                .eq(b.iter().map(|s| (s.index, &s.label)))
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| (x.score - y.score).abs() < 1e-4)
        };
        assert!(
            same_classes(&c.top_k, &mine[0].top_k),
            "k {k}: {c:?} vs {:?}",
            mine[0]
        );
        if raw {
            let t = &outputs[0];
            let hub = tandem_engine::postprocess::classify_rows(
                &h.files.variant.outputs[0],
                &t.shape,
                &tandem_shared::convert::tensor_data(t),
                &h.files.labels,
                usize::from(k),
            );
            assert_eq!(
                hub[0], c,
                "k {k}: the raw outputs decode to the prediction sent"
            );
        }
    }
}
