//! The agent's hub link: a reconnection to the same hub sends its first request as 0-RTT data,
//! and the hub accepts it; a hub that refuses the device's certificate is reported with the
//! cause; a hub that goes silent (packets lost, no close) is noticed after one timed-out
//! request, and the keeper reconnects when it is back; a burst of requests while no connection
//! is up opens one connection (the hub counts them); a connection the hub closed is replaced
//! only after the backoff.

mod common;

use common::{hub_engine, models_dir, start_hub, tmp_dir};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tandem_agent::uplink::{HubConfig, Uplink, UplinkError};
use tandem_hub::pki::Pki;
use tandem_shared::wire::{Input, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_connection_uses_0rtt() {
    let (_tmp, dir) = tmp_dir("uplink");
    let pki = Pki::init(&dir).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    let (addr, _stop, _task) = start_hub(&pki, "127.0.0.1:0".parse().expect("addr"), hub_engine());
    let (cert, key) = pki.device_files("cam-01");
    let cfg = HubConfig {
        address: addr.to_string(),
        ca: dir.join("ca.pem"),
        cert,
        key,
        ..Default::default()
    };
    let up = Uplink::new(&cfg, |p| p.to_path_buf()).expect("uplink");
    let ping = |n| Message::Ping { nonce: n };
    assert_eq!(
        up.call(&ping(1), Duration::from_secs(5))
            .await
            .expect("first call"),
        Message::Pong { nonce: 1 }
    );
    assert_eq!(up.zero_rtt(), (0, 0), "the first connection has no ticket");

    let image = std::fs::read(models_dir().join("vision-fashion/samples/6_4.png")).expect("sample");
    let mut accepted = 0;
    for round in 0..5u64 {
        up.disconnect();
        let req = Message::InferRequest {
            request_id: 100 + round,
            model: "vision-fashion".into(),
            model_version: None,
            deadline_ms: 0,
            input: Input::ImageBytes(image.clone()),
        };
        match up
            .call(&req, Duration::from_secs(5))
            .await
            .expect("call after reconnecting")
        {
            Message::InferResponse { request_id, .. } => assert_eq!(request_id, 100 + round),
            other => panic!("unexpected {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        accepted = up.zero_rtt().1;
        if accepted > 0 {
            break;
        }
    }
    let (sent, _) = up.zero_rtt();
    assert!(sent >= 1, "no reconnection tried 0-RTT");
    assert!(
        accepted >= 1,
        "the hub never accepted 0-RTT data ({sent} attempts)"
    );
}

fn link(pki: &Pki, device: &str, addr: std::net::SocketAddr) -> Arc<Uplink> {
    link_with(pki, device, addr, 1000)
}

/// [`link`] with its own `hub.timeout_ms`.
fn link_with(pki: &Pki, device: &str, addr: std::net::SocketAddr, timeout_ms: u64) -> Arc<Uplink> {
    let (cert, key) = pki.device_files(device);
    let cfg = HubConfig {
        address: addr.to_string(),
        ca: pki.dir().join("ca.pem"),
        cert,
        key,
        timeout_ms,
        ..Default::default()
    };
    Arc::new(Uplink::new(&cfg, |p| p.to_path_buf()).expect("uplink"))
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_reported_with_its_cause() {
    let (_tmp, dir) = tmp_dir("uplink-expired");
    let pki = Pki::init(&dir).expect("pki");
    pki.add_device_at(
        "old-cam",
        time::OffsetDateTime::now_utc() - time::Duration::days(10),
        1,
    )
    .expect("expired device");
    let (addr, _stop, _task) = start_hub(&pki, "127.0.0.1:0".parse().expect("addr"), hub_engine());
    let up = link(&pki, "old-cam", addr);
    up.keep();
    until("the keeper records why the hub refused", || {
        up.status().last_error.is_some()
    })
    .await;
    let status = up.status();
    let why = status.last_error.clone().unwrap_or_default();
    assert!(
        why.to_lowercase().contains("expired"),
        "the close reason names the cause: {why}"
    );
    assert!(!status.connected);
    // A caller learns the same cause, not a silent retry.
    match up
        .call(&Message::Ping { nonce: 9 }, Duration::from_secs(2))
        .await
    {
        Err(UplinkError::Unreachable(e)) => {
            assert!(e.to_lowercase().contains("expired"), "{e}")
        }
        other => panic!("an expired certificate got {other:?}"),
    }
}

/// A UDP relay between the agent and the hub that can drop every packet (a hub that vanished
/// without closing: power cut, network gone).
struct Blackhole {
    addr: std::net::SocketAddr,
    drop: Arc<AtomicBool>,
}

async fn blackhole(hub: std::net::SocketAddr) -> Blackhole {
    let front = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    let back = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    back.connect(hub).await.expect("connect");
    let drop = Arc::new(AtomicBool::new(false));
    let client = Arc::new(std::sync::Mutex::new(None));
    let (f, b, d, c) = (front.clone(), back.clone(), drop.clone(), client.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *c.lock().expect("lock") = Some(from);
            if !d.load(Ordering::Relaxed) {
                let _ = b.send(&buf[..n]).await;
            }
        }
    });
    let (f, d) = (front.clone(), drop.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = back.recv(&mut buf).await {
            let to = *client.lock().expect("lock");
            if let (Some(to), false) = (to, d.load(Ordering::Relaxed)) {
                let _ = f.send_to(&buf[..n], to).await;
            }
        }
    });
    Blackhole {
        addr: front.local_addr().expect("addr"),
        drop,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_hub_is_noticed_and_the_keeper_reconnects() {
    let (_tmp, dir) = tmp_dir("uplink-silent");
    let pki = Pki::init(&dir).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    let (hub, _stop, _task) = start_hub(&pki, "127.0.0.1:0".parse().expect("addr"), hub_engine());
    let relay = blackhole(hub).await;
    let up = link(&pki, "cam-01", relay.addr);
    up.keep();
    until("the keeper connects on its own", || up.status().connected).await;
    assert_eq!(up.status().connects, 1);
    assert!(up.view().available);

    relay.drop.store(true, Ordering::Relaxed);
    let r = up
        .call(&Message::Ping { nonce: 1 }, Duration::from_millis(300))
        .await;
    assert!(matches!(r, Err(UplinkError::Timeout(300))), "{r:?}");
    assert!(
        !up.view().available,
        "after a timeout the hub is not offered to the next request"
    );
    until("the silent connection is given up", || {
        !up.status().connected && up.status().disconnects == 1
    })
    .await;
    let why = up.status().last_error.unwrap_or_default();
    assert!(why.contains("did not answer a ping"), "{why}");

    relay.drop.store(false, Ordering::Relaxed);
    until("the keeper reconnects once the hub answers again", || {
        up.status().connected
    })
    .await;
    assert!(up.status().connects >= 2);
    assert_eq!(
        up.call(&Message::Ping { nonce: 2 }, Duration::from_secs(2))
            .await
            .expect("answered after the reconnection"),
        Message::Pong { nonce: 2 }
    );
    assert_eq!(
        up.status().last_error,
        None,
        "a working link clears the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_with_no_connection_opens_one() {
    let (_tmp, dir) = tmp_dir("uplink-burst");
    let pki = Pki::init(&dir).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    let ingress =
        tandem_hub::ingress::quic::QuicIngress::bind("127.0.0.1:0".parse().expect("addr"), &dir)
            .expect("bind hub");
    let (addr, stats) = (ingress.local_addr().expect("addr"), ingress.stats());
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ingress.run(async {
        let _ = rx.await;
    }));
    // A handshake on a loaded machine may be slow: this test counts connections, not time.
    let up = link_with(&pki, "cam-01", addr, 30_000);
    // 48 requests at once and no connection up (no keeper): one connects, the others wait.
    let calls: Vec<_> = (0..48u64)
        .map(|n| {
            let up = up.clone();
            tokio::spawn(async move {
                up.call(&Message::Ping { nonce: n }, Duration::from_secs(30))
                    .await
            })
        })
        .collect();
    for (n, c) in (0..48u64).zip(calls) {
        assert_eq!(
            c.await.expect("join").expect("answered"),
            Message::Pong { nonce: n }
        );
    }
    assert_eq!(up.status().connects, 1, "{:?}", up.status());
    assert_eq!(
        stats.accepted.load(Ordering::Relaxed),
        1,
        "connections the hub accepted for one burst"
    );
}

/// The hub closes the device's connection (as a hub restart closes every device's at one
/// moment) while it would take a new one: the next request does not reconnect at once but waits the link's backoff (up to
/// 200 ms after a first loss), then reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_hub_closed_is_replaced_only_after_the_backoff() {
    let (_tmp, dir) = tmp_dir("uplink-closed");
    let pki = Pki::init(&dir).expect("pki");
    let serial = pki.add_device("cam-01", 365).expect("device").serial;
    let ingress =
        tandem_hub::ingress::quic::QuicIngress::bind("127.0.0.1:0".parse().expect("addr"), &dir)
            .expect("bind hub");
    let (addr, stats, reload) = (
        ingress.local_addr().expect("addr"),
        ingress.stats(),
        ingress.reload(),
    );
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ingress.run(async {
        let _ = rx.await;
    }));
    // No keeper: the request path alone meets the closed connection.
    let up = link_with(&pki, "cam-01", addr, 30_000);
    let ping = |n| Message::Ping { nonce: n };
    up.call(&ping(1), Duration::from_secs(30))
        .await
        .expect("answered");
    assert!(up.status().connected);
    // The hub ends the connection (by serial, as for a revocation), then takes that
    // certificate again (an empty revoked list): a reconnect would be accepted.
    let closed = reload
        .apply(&dir, &std::collections::BTreeSet::from([serial]))
        .expect("close");
    assert_eq!(closed, ["cam-01"]);
    reload
        .apply(&dir, &std::collections::BTreeSet::new())
        .expect("accept it again");
    until("the link to see the close", || !up.status().connected).await;
    match up.connection().await {
        Err(UplinkError::Unreachable(why)) => {
            assert!(why.contains("next attempt in"), "{why}")
        }
        other => panic!("reconnected at once: {other:?}"),
    }
    assert_eq!(
        stats.accepted.load(Ordering::Relaxed),
        1,
        "no new connection"
    );
    // After the backoff it reconnects.
    let mut answered = false;
    for n in 0..100 {
        if up.call(&ping(n), Duration::from_secs(30)).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "never reconnected: {:?}", up.status());
    assert_eq!(up.status().connects, 2, "{:?}", up.status());
}
