//! The agent's hub link: a reconnection to the same hub sends its first request as 0-RTT data,
//! and the hub accepts it (the request is answered on the resumed connection).

mod common;

use common::{hub_engine, models_dir, start_hub};
use std::time::Duration;
use tandem_agent::uplink::{HubConfig, Uplink};
use tandem_hub::pki::Pki;
use tandem_shared::wire::{Input, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_connection_uses_0rtt() {
    let dir = std::env::temp_dir().join(format!("tandem-uplink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
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
