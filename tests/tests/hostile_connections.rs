//! Hostile connections against the built daemons' HTTP listeners (issue 11, Found 8): 1,100
//! idle half-open connections (some sent nothing, some half a request head) made the agent
//! stop answering under an open-file limit of 1,024, with nothing logged. Now the listener
//! caps its connections below the limit, closes the oldest idle one to admit a new one, and
//! counts and logs it; requests with too many body bytes in flight get 503.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tandem_tests::daemon::{Daemon, raise_nofile};
use tandem_tests::metrics::{one, scrape};

/// Half-open connections the attack holds.
const IDLE: usize = 1100;

/// Longest the test waits for the API's answer under attack (the daemon's header and idle
/// timeouts are far longer, so only the cap's eviction can let the request through in time).
const PATIENCE: Duration = Duration::from_secs(20);

/// Opens `n` connections to `base`: every other one sends half a request head, the rest
/// nothing. They stay open as long as the returned sockets live.
fn attack(base: &str, n: usize) -> Vec<TcpStream> {
    let addr = base.trim_start_matches("http://");
    (0..n)
        .filter_map(|i| {
            let mut s = TcpStream::connect(addr).ok()?;
            if i % 2 == 0 {
                let _ = s.write_all(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n");
            }
            Some(s)
        })
        .collect()
}

async fn answers_under_attack(d: &Daemon, section: &str) {
    raise_nofile(4096);
    let held = tokio::task::block_in_place(|| attack(&d.base, IDLE));
    assert!(
        held.len() >= IDLE / 2,
        "only {} connections opened",
        held.len()
    );
    let c = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .expect("client");
    let r = c
        .get(format!("{}/v2/health/ready", d.base))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the API did not answer under {} idle connections: {e}\n{}",
                held.len(),
                d.proc.log_text()
            )
        });
    assert_eq!(r.status().as_u16(), 200);
    let m = scrape(&c, &d.base).await;
    let evicted = one(&m, "tandem_http_refused_total{reason=\"evicted\"}");
    assert!(evicted >= 1.0, "evictions not counted: {evicted}");
    let open = one(&m, "tandem_http_connections");
    assert!(
        open < IDLE as f64,
        "{open} connections open: the cap did not hold"
    );
    let log = d.proc.log_text();
    assert!(
        log.contains("reason=\"evicted\"") || log.contains("reason=evicted"),
        "the refusals were not logged:\n{log}"
    );
    assert!(log.contains(section), "{log}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_answers_under_1100_idle_connections() {
    let d = Daemon::agent("hostile-conns-agent", "", Some(1024));
    answers_under_attack(&d, "server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_answers_under_1100_idle_connections() {
    let d = Daemon::hub("hostile-conns-hub", "max_connections = 256");
    answers_under_attack(&d, "http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_heads_are_closed_after_their_timeouts() {
    let d = Daemon::agent(
        "hostile-conns-timeouts",
        "header_read_timeout_ms = 500\nidle_timeout_ms = 800",
        None,
    );
    let held = tokio::task::block_in_place(|| attack(&d.base, 20));
    let c = reqwest::Client::new();
    tandem_tests::wait_for_async("the idle connections to be closed", PATIENCE, || async {
        let m = scrape(&c, &d.base).await;
        one(&m, "tandem_http_refused_total{reason=\"idle_timeout\"}") >= 10.0
            && one(&m, "tandem_http_refused_total{reason=\"header_timeout\"}") >= 10.0
    })
    .await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_in_flight_are_bounded() {
    // Bodies of 1 MiB against a bound of 2 MiB: a third request declared while two are held
    // open (head sent, body not) is refused with 503 and counted.
    let d = Daemon::agent(
        "hostile-inflight",
        "max_body_bytes = 1048576\nmax_inflight_body_bytes = 2097152",
        None,
    );
    let addr = d.base.trim_start_matches("http://").to_string();
    let head =
        "POST /v1/classify/vision-fashion HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n";
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.write_all(head.as_bytes()).expect("head");
            s
        })
        .collect();
    // No pooled connections: the server closes one whose body it refused unread.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    // Both held requests hold their bytes before the third head is sent.
    tandem_tests::wait_for_async("two bodies in flight", PATIENCE, || async {
        one(
            &scrape(&c, &d.base).await,
            "tandem_http_inflight_body_bytes",
        ) == 2_097_152.0
    })
    .await;
    // The third head: refused at once, before its body is sent (the server never reads it).
    let refused = tokio::task::block_in_place(|| {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        s.write_all(head.as_bytes()).expect("head");
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        String::from_utf8_lossy(&resp).to_ascii_lowercase()
    });
    assert!(refused.starts_with("http/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after"), "{refused}");
    assert!(refused.contains("max_inflight_body_bytes"), "{refused}");
    let m = scrape(&c, &d.base).await;
    assert!(one(&m, "tandem_http_refused_total{reason=\"inflight_bytes\"}") >= 1.0);
    drop(held);
    // Once the held requests are gone, a body fits again (400: not an image; not 503).
    tandem_tests::wait_for_async("a body to fit again", PATIENCE, || async {
        // Not an image: 400 once it gets through (an error: the server refused it unread).
        c.post(format!("{}/v1/classify/vision-fashion", d.base))
            .body(vec![0u8; 1 << 20])
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 400)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_cut_off() {
    // A head that promises 1,000 bytes, then 3: without a body deadline the request would hold
    // its connection and its bytes in flight for ever.
    let d = Daemon::agent("hostile-slow-body", "request_timeout_ms = 1000", None);
    let addr = d.base.trim_start_matches("http://").to_string();
    let resp = tokio::task::block_in_place(|| {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        s.write_all(
            b"POST /v1/classify/vision-fashion HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc",
        )
        .expect("head");
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).map(|_| resp)
    })
    .expect("the server answers and closes the connection");
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("request_timeout_ms"), "{text}");
    let m = scrape(&reqwest::Client::new(), &d.base).await;
    assert!(one(&m, "tandem_http_refused_total{reason=\"body_timeout\"}") >= 1.0);
}
