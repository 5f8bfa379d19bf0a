//! Deliveries and limits on the real QUIC ingress (mutual TLS on loopback, a real sled store):
//! two overlapping streams of one device delivering the same records store each once and both
//! get every `Ack`; a device over its quota gets the `Ack`s of what was stored, then `Busy`;
//! connections over `max_connections` are refused and counted while the open ones keep
//! working; a device's connection over `max_connections_per_device` replaces its oldest; while
//! a silent client holds the only handshake place (`max_handshakes = 1`), a new one is refused;
//! a frame that never completes is reset after `frame_timeout_ms` and its budget given back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tandem_hub::feedback::{FeedbackConfig, Store};
use tandem_hub::ingress::limits::{CLOSE_REPLACED, QuicLimits};
use tandem_hub::ingress::quic::{IngressStats, QuicIngress};
use tandem_hub::pki::Pki;
use tandem_shared::record::{self, Record};
use tandem_shared::wire::{ALPN, DEFAULT_MAX_FRAME_BYTES, FrameDecoder, Message, encode_to_vec};

struct Hub {
    _dir: tempfile::TempDir,
    pki: Pki,
    addr: SocketAddr,
    stats: Arc<IngressStats>,
    store: Arc<Store>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn hub(limits: QuicLimits, feedback: FeedbackConfig) -> Hub {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::init(&dir.path().join("pki")).expect("pki");
    for d in ["cam-1", "cam-2", "cam-3", "cam-4"] {
        pki.add_device(d, 30).expect("device");
    }
    let store = Arc::new(
        Store::open(&dir.path().join("feedback"))
            .expect("store")
            .with_config(feedback),
    );
    let ingress = QuicIngress::bind_with("127.0.0.1:0".parse().expect("addr"), pki.dir(), limits)
        .expect("bind")
        .with_feedback(store.clone());
    let addr = ingress.local_addr().expect("addr");
    let stats = ingress.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ingress.run(async {
        let _ = rx.await;
    }));
    Hub {
        _dir: dir,
        pki,
        addr,
        stats,
        store,
        _stop: tx,
    }
}

async fn connect(h: &Hub, device: &str) -> Result<quinn::Connection, String> {
    let cfg = tandem_tests::tls::quic_client_config(
        &h.pki.dir().join("ca.pem"),
        Some(h.pki.device_files(device)),
        ALPN,
    );
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let conn = ep
        .connect_with(cfg, h.addr, "localhost")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Polls `cond` every 25 ms for up to 5 s (the assertion after it says what was expected).
async fn until(cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// One stream: `frames` out, every answer frame back.
async fn exchange(conn: &quinn::Connection, frames: &[u8]) -> Vec<Message> {
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let _ = send.write_all(frames).await;
    let _ = send.finish();
    let bytes = recv.read_to_end(1 << 20).await.expect("answer");
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    d.feed(&bytes);
    std::iter::from_fn(|| d.next_message().expect("answer frame")).collect()
}

fn delivers(epoch: u64, seqs: std::ops::Range<u64>, bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for seq in seqs {
        let payload = record::encode(&Record::Event(
            serde_json::json!({ "seq": seq, "pad": "x".repeat(bytes) }),
        ));
        out.extend(
            encode_to_vec(
                &Message::Deliver {
                    epoch,
                    seq,
                    payload,
                },
                DEFAULT_MAX_FRAME_BYTES,
            )
            .expect("frame"),
        );
    }
    out
}

async fn ping(conn: &quinn::Connection) -> bool {
    let frame = encode_to_vec(&Message::Ping { nonce: 3 }, DEFAULT_MAX_FRAME_BYTES).expect("ping");
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(_) => return false,
    };
    if send.write_all(&frame).await.is_err() || send.finish().is_err() {
        return false;
    }
    let Ok(bytes) = recv.read_to_end(1024).await else {
        return false;
    };
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    d.feed(&bytes);
    matches!(d.next_message(), Ok(Some(Message::Pong { nonce: 3 })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_redeliveries_are_stored_once_and_acked_on_both_streams() {
    let h = hub(QuicLimits::default(), FeedbackConfig::default());
    let conn = connect(&h, "cam-1").await.expect("connect");
    let n = 300u64;
    for round in 0..4u64 {
        let frames = delivers(round, 0..n, 200);
        let (a, b) = tokio::join!(exchange(&conn, &frames), exchange(&conn, &frames));
        for answers in [a, b] {
            let acks: Vec<(u64, u64)> = answers
                .iter()
                .map(|m| match m {
                    Message::Ack { epoch, seq } => (*epoch, *seq),
                    other => panic!("expected only acks, got {other:?}"),
                })
                .collect();
            let want: Vec<(u64, u64)> = (0..n).map(|s| (round, s)).collect();
            assert_eq!(acks, want, "every record acknowledged, in order");
        }
    }
    assert_eq!(
        h.store.len() as u64,
        4 * n,
        "each record stored exactly once"
    );
    assert_eq!(h.stats.delivered.load(Ordering::Relaxed), 4 * n);
    assert_eq!(h.stats.redelivered.load(Ordering::Relaxed), 4 * n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_acks_what_was_stored_then_answers_busy() {
    let quota = FeedbackConfig {
        quota_bytes_per_device: 64 << 10,
        quota_window_ms: 3_600_000,
        ..Default::default()
    };
    let h = hub(QuicLimits::default(), quota);
    let conn = connect(&h, "cam-1").await.expect("connect");
    // 10 records of ~20 KB: 3 fit in 64 KiB.
    let answers = exchange(&conn, &delivers(1, 0..10, 20_000)).await;
    let acks = answers
        .iter()
        .filter(|m| matches!(m, Message::Ack { .. }))
        .count();
    assert_eq!(acks, 3, "{answers:?}");
    match answers.last() {
        Some(Message::Busy {
            request_id: 0,
            retry_after_ms,
        }) => assert!(*retry_after_ms > 0),
        other => panic!("expected Busy last, got {other:?}"),
    }
    assert_eq!(h.store.len(), 3);
    assert_eq!(h.stats.limits.over_quota.load(Ordering::Relaxed), 1);
    // Redelivering what was stored still gets its acks; another device has its own quota.
    let again = exchange(&conn, &delivers(1, 0..3, 20_000)).await;
    assert_eq!(again.len(), 3, "{again:?}");
    let other = connect(&h, "cam-2").await.expect("connect");
    let theirs = exchange(&other, &delivers(1, 0..2, 20_000)).await;
    assert!(
        theirs.iter().all(|m| matches!(m, Message::Ack { .. })),
        "{theirs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_refused_or_replace_the_oldest() {
    let limits = QuicLimits {
        max_connections: 3,
        max_connections_per_device: 1,
        ..QuicLimits::default()
    };
    let h = hub(limits, FeedbackConfig::default());
    let a = connect(&h, "cam-1").await.expect("cam-1");
    let b = connect(&h, "cam-2").await.expect("cam-2");
    let c = connect(&h, "cam-3").await.expect("cam-3");
    for conn in [&a, &b, &c] {
        assert!(ping(conn).await);
    }
    let refused = connect(&h, "cam-4")
        .await
        .expect_err("over max_connections");
    assert!(refused.to_lowercase().contains("refused"), "{refused}");
    assert_eq!(
        h.stats.limits.connections_refused.load(Ordering::Relaxed),
        1
    );
    for conn in [&a, &b, &c] {
        assert!(ping(conn).await, "the open connections keep working");
    }

    // cam-2 leaves; cam-3 connects again: its older connection gives way (one per device).
    b.close(0u32.into(), b"leaving");
    until(|| h.stats.limits.connections.load(Ordering::Relaxed) == 2).await;
    assert_eq!(h.stats.limits.connections.load(Ordering::Relaxed), 2);
    let c2 = connect(&h, "cam-3").await.expect("cam-3 again");
    let reason = c.closed().await;
    assert!(
        matches!(&reason, quinn::ConnectionError::ApplicationClosed(a) if a.error_code == quinn::VarInt::from_u32(CLOSE_REPLACED)),
        "{reason:?}"
    );
    assert!(ping(&c2).await);
    assert!(ping(&a).await);
    assert_eq!(
        h.stats.limits.connections_replaced.load(Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_over_the_cap_are_refused_while_one_stalls() {
    let limits = QuicLimits {
        max_handshakes: 1,
        handshake_timeout_ms: 1_000,
        ..QuicLimits::default()
    };
    let h = hub(limits, FeedbackConfig::default());
    let before = connect(&h, "cam-1").await.expect("cam-1");
    // The client's handshake ends before the hub's (the hub still waits for the client's
    // Finished): until the hub has counted cam-1 in, cam-1 holds the only handshake place.
    until(|| {
        h.stats.accepted.load(Ordering::Relaxed) == 1
            && h.stats.limits.handshakes.load(Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(h.stats.limits.handshakes.load(Ordering::Relaxed), 0);
    // A client that sends its Initial packet and then goes silent: catch a real client's first
    // datagram on a socket of ours and replay it to the hub from a socket that never answers.
    let trap = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("trap");
    let cfg = tandem_tests::tls::quic_client_config(
        &h.pki.dir().join("ca.pem"),
        Some(h.pki.device_files("cam-2")),
        ALPN,
    );
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let _stalled = ep
        .connect_with(cfg, trap.local_addr().expect("trap addr"), "localhost")
        .expect("connect");
    let mut initial = vec![0u8; 4096];
    let (n, _) = trap.recv_from(&mut initial).await.expect("initial packet");
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("silent");
    silent.send_to(&initial[..n], h.addr).await.expect("replay");
    until(|| h.stats.limits.handshakes.load(Ordering::Relaxed) == 1).await;
    assert_eq!(h.stats.limits.handshakes.load(Ordering::Relaxed), 1);
    assert_eq!(
        h.stats.limits.handshakes_refused.load(Ordering::Relaxed),
        0,
        "the silent client got the free place"
    );

    let refused = connect(&h, "cam-3").await.expect_err("over max_handshakes");
    assert!(refused.to_lowercase().contains("refused"), "{refused}");
    assert_eq!(h.stats.limits.handshakes_refused.load(Ordering::Relaxed), 1);
    assert!(
        ping(&before).await,
        "an established connection keeps working"
    );
    // The silent handshake is dropped after handshake_timeout_ms: the place is free again.
    until(|| h.stats.limits.handshakes.load(Ordering::Relaxed) == 0).await;
    assert_eq!(h.stats.limits.handshakes.load(Ordering::Relaxed), 0);
    let after = connect(&h, "cam-3").await.expect("a handshake place again");
    assert!(ping(&after).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_never_completes_gives_its_budget_back() {
    let limits = QuicLimits {
        frame_timeout_ms: 300,
        max_frame_bytes: 4 << 20,
        max_buffered_bytes_per_connection: 4 << 20,
        max_buffered_bytes: 4 << 20,
        ..QuicLimits::default()
    };
    let h = hub(limits, FeedbackConfig::default());
    let conn = connect(&h, "cam-1").await.expect("connect");
    // A Deliver header declaring the whole hub budget, a few bytes, then silence.
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let mut header = b"TD\x01\x10".to_vec();
    header.extend((4u32 << 20).to_le_bytes());
    send.write_all(&header).await.expect("header");
    send.write_all(&[0u8; 100]).await.expect("some payload");
    let cut = recv.read_to_end(1024).await;
    assert!(cut.is_err(), "the stalled stream is reset: {cut:?}");
    assert_eq!(h.stats.limits.frames_refused.load(Ordering::Relaxed), 1);
    // The budget is free again: a frame as large as all of it is taken.
    let big = delivers(1, 0..1, (4 << 20) - 4096);
    let (answers, other) = tokio::join!(exchange(&conn, &big), ping(&conn));
    assert!(
        matches!(answers.as_slice(), [Message::Ack { .. }]),
        "{answers:?}"
    );
    assert!(other);
}
