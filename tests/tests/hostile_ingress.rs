//! Hostile devices against the built `tandem-hub` (spawned, real QUIC with mutual TLS on
//! loopback; the attacker holds a device certificate of the hub's own CA):
//! - registry path traversal: a `ChunkRequest` whose model or version climbs out of the
//!   registry (`..`, an absolute path) is refused with `BadRequest`, nothing read;
//! - an unfinished huge delivery stream (30 frames of 8 MiB, never finished): records are
//!   stored as they arrive and the hub's peak RSS grows by less than 128 MiB (it held the whole
//!   stream before: 240 MiB and more);
//! - a stream flood (300 streams on one connection, each an unfinished 16 MiB frame): at most
//!   `max_streams_per_connection` (64) open, peak RSS growth under 128 MiB, and another device
//!   is served meanwhile;
//! - a device over its feedback quota gets the `Ack`s of what was stored, then `Busy`, counted
//!   in `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tandem_shared::wire::{
    ALPN, DEFAULT_MAX_FRAME_BYTES, ErrorCode, FrameDecoder, Message, encode_to_vec,
};
use tandem_tests::process::{Logged, output_ok};
use tandem_tests::{binary, repo, scratch};

/// Peak RSS growth an attack may cause: the per-connection byte budget (32 MiB), quinn's
/// receive window (32 MiB), the store's cache (32 MiB) and slack for one frame's copies.
const RSS_BOUND_BYTES: u64 = 128 << 20;

struct Hub {
    proc: Logged,
    dir: tandem_tests::Scratch,
    quic: SocketAddr,
    http: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }
}

fn field(line: &str, key: &str) -> Option<String> {
    let i = line.find(key)?;
    Some(
        line[i + key.len()..]
            .split(|c: char| c.is_whitespace() || c == '\u{1b}')
            .next()?
            .to_string(),
    )
}

/// `tandem-hub init`, a device certificate per name, then `tandem-hub run` with `extra`
/// appended to its config.
async fn start(name: &str, devices: &[&str], extra: &str) -> Hub {
    let dir = scratch(name);
    let hub = binary("tandem-hub");
    let mut init = Command::new(&hub);
    init.args(["init", "--dir"]).arg(dir.join("pki"));
    output_ok(init).await;
    for d in devices {
        let mut add = Command::new(&hub);
        add.args(["device", "add", d, "--dir"]).arg(dir.join("pki"));
        output_ok(add).await;
    }
    let config = format!(
        "pki_dir = \"pki\"\nregistry_dir = \"registry\"\nfeedback_dir = \"feedback\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[quic]\nlisten = \"127.0.0.1:0\"\n\
         [mqtt]\nmode = \"off\"\n[fleet]\ndir = \"state\"\n\
         [models]\ndir = \"{}\"\nenabled = [\"vision-fashion\"]\n{extra}",
        repo().join("models").display()
    );
    std::fs::write(dir.join("hub.toml"), config).expect("config");
    let (proc, ready) = Logged::spawn(
        Command::new(&hub)
            .args(["run", "--config"])
            .arg(dir.join("hub.toml"))
            .env("RUST_LOG", "info,ort=warn"),
        Duration::from_secs(120),
        |line| {
            line.contains("tandem-hub serving").then(|| {
                format!(
                    "{} {}",
                    field(line, "quic=").unwrap_or_default(),
                    field(line, "http=").unwrap_or_default()
                )
            })
        },
    );
    let Some(ready) = ready else {
        panic!("the hub did not start:\n{}", proc.log_text());
    };
    let (quic, http) = ready.split_once(' ').expect("two addresses");
    Hub {
        quic: quic.parse().expect("quic address"),
        http: format!("http://{http}"),
        dir,
        proc,
    }
}

impl Hub {
    async fn connect(&self, device: &str) -> quinn::Connection {
        let pki = self.dir.join("pki");
        let devices = pki.join("devices");
        let cfg = tandem_tests::tls::quic_client_config(
            &pki.join("ca.pem"),
            Some((
                devices.join(format!("{device}.pem")),
                devices.join(format!("{device}.key")),
            )),
            ALPN,
        );
        let ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        ep.connect_with(cfg, self.quic, "localhost")
            .expect("connect")
            .await
            .expect("handshake")
    }

    /// (VmRSS, VmHWM) of the hub, in bytes.
    fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.child.id()))
            .expect("/proc status");
        let kb = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("{key} in /proc status"))
        };
        (kb("VmRSS:") * 1024, kb("VmHWM:") * 1024)
    }
}

/// One stream: `bytes` out, every answer frame back (or why not).
async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<Message>, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let answer = recv.read_to_end(1 << 20).await.map_err(|e| e.to_string())?;
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    d.feed(&answer);
    let mut out = Vec::new();
    while let Some(m) = d.next_message().map_err(|e| e.to_string())? {
        out.push(m);
    }
    Ok(out)
}

fn frame(m: &Message) -> Vec<u8> {
    encode_to_vec(m, DEFAULT_MAX_FRAME_BYTES).expect("frame")
}

/// A `Deliver` header declaring `len` payload bytes (the payload follows separately).
fn deliver_header(len: u32) -> Vec<u8> {
    let mut h = b"TD\x01\x10".to_vec();
    h.extend(len.to_le_bytes());
    h
}

fn secret(dir: &Path) -> PathBuf {
    let bundle = dir.join("secret").join("1.0.0").join("bundle");
    std::fs::create_dir_all(&bundle).expect("secret dir");
    std::fs::write(bundle.join("passwd"), b"root:x:0:0").expect("secret file");
    dir.join("secret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_path_traversal_is_refused() {
    let hub = start("hostile-traversal", &["mallory"], "").await;
    let outside = secret(&hub.dir);
    let conn = hub.connect("mallory").await;
    let outside_abs = outside.display().to_string();
    for (model, version, path) in [
        // registry/../secret/1.0.0/bundle/passwd
        ("..", "secret/1.0.0", "passwd"),
        // an absolute model: Path::join replaces the registry folder
        (outside_abs.as_str(), "1.0.0", "passwd"),
        // a version that climbs: registry/m/../../secret/1.0.0/bundle
        ("vision-fashion", "../../secret/1.0.0", "passwd"),
    ] {
        let ask = Message::ChunkRequest {
            model: model.into(),
            version: version.into(),
            path: path.into(),
            offset: 0,
            len: 0,
        };
        let answer = exchange(&conn, &frame(&ask)).await.expect("answered");
        match answer.as_slice() {
            [Message::Error { code, message, .. }] => {
                assert_eq!(*code, ErrorCode::BadRequest, "{message}");
                assert!(message.contains("not valid"), "{message}");
            }
            other => panic!("{model} {version}: expected a BadRequest, got {other:?}"),
        }
    }
    let ask = Message::BundleRequest {
        model: "..".into(),
        version: "secret".into(),
    };
    let answer = exchange(&conn, &frame(&ask)).await.expect("answered");
    assert!(
        matches!(
            answer.as_slice(),
            [Message::Error {
                code: ErrorCode::BadRequest,
                ..
            }]
        ),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_huge_delivery_stream_keeps_the_hub_small() {
    // 240 MiB: within the default quota (256 MiB per device per hour).
    let hub = start("hostile-huge-stream", &["mallory"], "").await;
    let conn = hub.connect("mallory").await;
    let (before, _) = hub.rss();
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    let payload = vec![0x5au8; 8 << 20];
    let mut one = Vec::with_capacity(payload.len() + 32);
    one.extend(deliver_header(0));
    let frames = 30u64;
    for seq in 0..frames {
        let mut body = Vec::with_capacity(payload.len() + 20);
        body.extend(7u64.to_le_bytes());
        body.extend(seq.to_le_bytes());
        body.extend((payload.len() as u32).to_le_bytes());
        body.extend(&payload);
        one.clear();
        one.extend(deliver_header(body.len() as u32));
        one.extend(&body);
        send.write_all(&one).await.expect("the hub keeps reading");
    }
    // Never finished. Every byte is written (flow control: the hub read nearly all of it);
    // wait until the hub stored what it read, then read its peak.
    let metrics = reqwest::Client::new();
    tandem_tests::wait_for_async(
        "the delivered records stored",
        Duration::from_secs(120),
        || {
            let (c, base) = (metrics.clone(), hub.http.clone());
            async move {
                let m = tandem_tests::metrics::scrape(&c, &base).await;
                tandem_tests::metrics::one(&m, "tandem_hub_records_delivered_total")
                    >= (frames - 4) as f64
            }
        },
    )
    .await;
    let (_, peak) = hub.rss();
    let growth = peak.saturating_sub(before);
    eprintln!("huge stream: peak RSS growth {} MiB", growth >> 20);
    assert!(
        growth < RSS_BOUND_BYTES,
        "peak RSS grew by {} MiB (bound {} MiB) for a {} MiB stream",
        growth >> 20,
        RSS_BOUND_BYTES >> 20,
        (frames * 8)
    );
    drop(send);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_flood_stays_within_the_stream_cap_and_budget() {
    // The default quic.limits.max_streams_per_connection: 64.
    let hub = start("hostile-flood", &["mallory", "cam-ok"], "").await;
    let conn = hub.connect("mallory").await;
    let (before, _) = hub.rss();
    let chunk = vec![0x33u8; 1 << 20];
    let mut opened = 0;
    let mut writers = Vec::new();
    for _ in 0..300 {
        let Ok(Ok((mut send, recv))) =
            tokio::time::timeout(Duration::from_secs(3), conn.open_bi()).await
        else {
            break;
        };
        opened += 1;
        let chunk = chunk.clone();
        writers.push(tokio::spawn(async move {
            let _keep = recv;
            let _ = send.write_all(&deliver_header(16 << 20)).await;
            let _ = send.write_all(&chunk).await;
            // Never finished: the stream stays open.
            std::future::pending::<()>().await;
        }));
    }
    assert!(
        opened <= 64,
        "{opened} streams open at once on one connection"
    );
    // Another device is served meanwhile.
    let other = hub.connect("cam-ok").await;
    let pong = exchange(&other, &frame(&Message::Ping { nonce: 4 }))
        .await
        .expect("the other device is answered");
    assert_eq!(pong, vec![Message::Pong { nonce: 4 }]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, peak) = hub.rss();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "flood: {opened} streams, peak RSS growth {} MiB",
        growth >> 20
    );
    assert!(
        growth < RSS_BOUND_BYTES,
        "peak RSS grew by {} MiB (bound {} MiB) under {opened} streams",
        growth >> 20,
        RSS_BOUND_BYTES >> 20
    );
    for w in writers {
        w.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_over_its_quota_is_refused_with_busy() {
    let hub = start(
        "hostile-quota",
        &["mallory"],
        "[feedback]\nquota_bytes_per_device = 1048576\n",
    )
    .await;
    let conn = hub.connect("mallory").await;
    let mut frames = Vec::new();
    for seq in 0..6u64 {
        frames.extend(frame(&Message::Deliver {
            epoch: 1,
            seq,
            payload: vec![1u8; 400_000],
        }));
    }
    let answer = exchange(&conn, &frames).await.expect("answered");
    let acks = answer
        .iter()
        .filter(|m| matches!(m, Message::Ack { .. }))
        .count();
    assert_eq!(acks, 2, "{answer:?}");
    assert!(
        matches!(answer.last(), Some(Message::Busy { request_id: 0, retry_after_ms }) if *retry_after_ms > 0),
        "{answer:?}"
    );
    let m = tandem_tests::metrics::scrape(&reqwest::Client::new(), &hub.http).await;
    assert_eq!(
        tandem_tests::metrics::one(&m, "tandem_hub_records_over_quota_total"),
        1.0
    );
    // The hub logs the refusal before it answers, but its stderr reaches `log_text` through
    // a pipe and a reader thread of this process: wait for the line rather than race it.
    tandem_tests::wait::wait_for(
        "the hub to log the refusal (`over its feedback quota`)",
        Duration::from_secs(30),
        || hub.proc.log_text().contains("over its feedback quota"),
    )
    .await;
}
