//! Real QUIC with mutual TLS on loopback: a device with a certificate from the hub's CA is
//! served and known by its certificate name; no certificate, an expired, a revoked or a
//! foreign-CA certificate is refused during the handshake, with the cause visible on both
//! sides; a lying peer loses its stream or connection while other devices keep being served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tandem_hub::ingress::quic::{IngressStats, QuicIngress};
use tandem_hub::pki::Pki;
use tandem_shared::wire::{
    ALPN, DEFAULT_MAX_FRAME_BYTES, ErrorCode, FrameDecoder, Message, encode_to_vec,
};

struct Fixture {
    pki: Pki,
    foreign: Pki,
    addr: SocketAddr,
    stats: Arc<IngressStats>,
    _stop: tokio::sync::oneshot::Sender<()>,
    /// The folder of both PKIs, removed when the fixture drops (after the hub's stop).
    _tmp: tempfile::TempDir,
}

async fn start(name: &str) -> Fixture {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("tandem-quic-{name}-"))
        .tempdir()
        .expect("tmp");
    let pki = Pki::init(&tmp.path().join("pki")).expect("pki");
    pki.add_device("cam-01", 365).expect("cam-01");
    pki.add_device("cam-02", 365).expect("cam-02");
    pki.add_device("gone", 365).expect("gone");
    pki.revoke_device("gone").expect("revoke");
    pki.add_device_at(
        "old-cam",
        time::OffsetDateTime::now_utc() - time::Duration::days(10),
        1,
    )
    .expect("expired");
    let foreign = Pki::init(&tmp.path().join("foreign")).expect("foreign pki");
    foreign.add_device("cam-01", 365).expect("foreign cam-01");
    let ingress = QuicIngress::bind("127.0.0.1:0".parse().expect("addr"), pki.dir()).expect("bind");
    let addr = ingress.local_addr().expect("addr");
    let stats = ingress.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ingress.run(async {
        let _ = rx.await;
    }));
    Fixture {
        pki,
        foreign,
        addr,
        stats,
        _stop: tx,
        _tmp: tmp,
    }
}

fn client(ca: &Path, identity: Option<(PathBuf, PathBuf)>) -> quinn::ClientConfig {
    tandem_tests::tls::quic_client_config(ca, identity, ALPN)
}

/// Connects and sends one ping; returns the pong nonce or the error (with the close reason).
async fn ping(addr: SocketAddr, cfg: quinn::ClientConfig, nonce: u64) -> Result<u64, String> {
    let ep =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    let conn = ep
        .connect_with(cfg, addr, "localhost")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let frame = encode_to_vec(&Message::Ping { nonce }, DEFAULT_MAX_FRAME_BYTES)
            .map_err(|e| e.to_string())?;
        send.write_all(&frame).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let bytes = recv.read_to_end(1 << 20).await.map_err(|e| e.to_string())?;
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        d.feed(&bytes);
        match d.next_message().map_err(|e| e.to_string())? {
            Some(Message::Pong { nonce }) => Ok(nonce),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
    .await;
    result.map_err(|e| format!("{e}; close reason: {:?}", conn.close_reason()))
}

async fn refusal_mentions(stats: &IngressStats, needle: &str) -> bool {
    for _ in 0..50 {
        if stats
            .recent_refusals
            .lock()
            .expect("lock")
            .iter()
            .any(|r| r.to_lowercase().contains(needle))
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_valid_device_certificates_get_through() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let f = start("mtls").await;
    let ca = f.pki.dir().join("ca.pem");

    let ok = ping(f.addr, client(&ca, Some(f.pki.device_files("cam-01"))), 42).await;
    assert_eq!(ok, Ok(42));
    assert!(
        f.stats
            .recent_devices
            .lock()
            .expect("lock")
            .iter()
            .any(|d| d == "cam-01")
    );

    let cases = [
        ("no certificate", None, "no certificates"),
        ("expired", Some(f.pki.device_files("old-cam")), "expired"),
        ("revoked", Some(f.pki.device_files("gone")), "revoked"),
        (
            "foreign CA",
            Some(f.foreign.device_files("cam-01")),
            "unknownissuer",
        ),
    ];
    for (what, identity, cause) in cases {
        let before = f.stats.refused.load(Ordering::Relaxed);
        let err = ping(f.addr, client(&ca, identity), 7)
            .await
            .expect_err(what);
        assert!(
            err.to_lowercase().contains(cause),
            "{what}: client sees `{err}`"
        );
        assert!(
            refusal_mentions(&f.stats, cause).await,
            "{what}: hub refusals {:?}",
            f.stats.recent_refusals.lock().expect("lock")
        );
        assert!(
            f.stats.refused.load(Ordering::Relaxed) > before,
            "{what}: not counted"
        );
    }
    // Valid devices are still served after all that.
    assert_eq!(
        ping(f.addr, client(&ca, Some(f.pki.device_files("cam-02"))), 9).await,
        Ok(9)
    );
}

async fn raw_stream(
    addr: SocketAddr,
    cfg: quinn::ClientConfig,
    bytes: &[u8],
) -> (quinn::Connection, Result<Vec<u8>, String>) {
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let conn = ep
        .connect_with(cfg, addr, "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let r = recv.read_to_end(1 << 20).await.map_err(|e| e.to_string());
    (conn, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_peers_lose_their_stream_or_connection_and_others_are_served() {
    let f = start("lies").await;
    let ca = f.pki.dir().join("ca.pem");
    let dev = || client(&ca, Some(f.pki.device_files("cam-01")));

    // Not our protocol at all: the connection is closed as a protocol violation.
    let (conn, r) = raw_stream(f.addr, dev(), b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(r.is_err(), "{r:?}");
    let reason = format!("{:?}", conn.closed().await);
    assert!(reason.contains("magic"), "{reason}");

    // A header declaring a 4 GiB frame: that stream is stopped, the connection lives.
    let mut huge = b"TD\x01\x01".to_vec();
    huge.extend(u32::MAX.to_le_bytes());
    let (conn, r) = raw_stream(f.addr, dev(), &huge).await;
    assert!(
        r.as_ref()
            .is_err_and(|e| e.contains("reset") || e.contains("2")),
        "{r:?}"
    );
    assert!(
        conn.close_reason().is_none(),
        "connection must survive a stopped stream"
    );

    // A frame whose payload lies about a string length: an Error answer naming it.
    // InferRequest whose model name claims 65535 bytes of a 10-byte payload.
    let mut lie = b"TD\x01\x01".to_vec();
    lie.extend(10u32.to_le_bytes());
    lie.extend(7u64.to_le_bytes());
    lie.extend(u16::MAX.to_le_bytes());
    let (_c, r) = raw_stream(f.addr, dev(), &lie).await;
    let bytes = r.expect("answered");
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    d.feed(&bytes);
    match d.next_message() {
        Ok(Some(Message::Error { code, .. })) => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("expected an Error frame, got {other:?}"),
    }

    // A kind this build does not know: UnsupportedKind (6), as docs/wire.md says.
    let (_c, r) = raw_stream(f.addr, dev(), b"TD\x01\x7f\x03\0\0\0abc").await;
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    d.feed(&r.expect("answered"));
    match d.next_message() {
        Ok(Some(Message::Error { code, .. })) => assert_eq!(code.to_u16(), 6),
        other => panic!("expected an Error frame, got {other:?}"),
    }

    // A Ping declaring 1 MiB (a Ping is 8 bytes): stopped at its header, like an oversized frame.
    let mut fat = b"TD\x01\x05".to_vec();
    fat.extend((1u32 << 20).to_le_bytes());
    let (conn, r) = raw_stream(f.addr, dev(), &fat).await;
    assert!(
        r.as_ref()
            .is_err_and(|e| e.contains("reset") || e.contains("2")),
        "{r:?}"
    );
    assert!(conn.close_reason().is_none());

    // Unknown version: connection closed.
    let (conn, _) = raw_stream(f.addr, dev(), b"TD\x09\x05\0\0\0\0").await;
    let reason = format!("{:?}", conn.closed().await);
    assert!(reason.contains("version"), "{reason}");

    // Others are still served.
    assert_eq!(
        ping(f.addr, client(&ca, Some(f.pki.device_files("cam-02"))), 5).await,
        Ok(5)
    );
}
