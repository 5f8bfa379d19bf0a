//! The shutdown trees (ARCHITECTURE.md "Shutdown") of the built daemons: SIGTERM under load
//! lets every request in flight finish and exits 0 inside the grace period, nothing the agent
//! acknowledged is lost (its corrections are in the queue at the next start); a second signal
//! while the stop waits exits at once with status 130.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tandem_tests::process::Logged;
use tandem_tests::{binary, models_dir, scratch};

const READY: Duration = Duration::from_secs(240);

fn free_tcp() -> u16 {
    tandem_tests::net::free_ports().1
}

fn agent_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let cfg = dir.join("agent.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_ms = 30000\n\
         [models]\ndir = \"{}\"\nenabled = [\"vision-imagenet\"]\n\
         [engine]\nqueue_capacity = 512\n[queue]\ndir = \"{}\"\n",
        models_dir().display(),
        dir.join("queue").display()
    );
    std::fs::write(&cfg, text).expect("config");
    cfg
}

fn hub_config(dir: &Path, http: u16) -> std::path::PathBuf {
    let out = Command::new(binary("tandem-hub"))
        .args(["init", "--dir"])
        .arg(dir.join("pki"))
        .output()
        .expect("init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.join("hub.toml");
    let text = format!(
        "shutdown_grace_ms = 30000\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\n[quic]\nlisten = \"127.0.0.1:{}\"\n\
         [models]\ndir = \"{}\"\nenabled = [\"vision-imagenet\"]\n[mqtt]\nlisten = \"127.0.0.1:0\"\n",
        tandem_tests::net::free_ports().0,
        models_dir().display()
    );
    std::fs::write(&cfg, text).expect("config");
    cfg
}

fn spawn(bin: &str, cfg: &Path, ready: &'static str) -> Logged {
    let mut cmd = Command::new(binary(bin));
    cmd.args(["run", "--config"])
        .arg(cfg)
        .env_remove("RUST_LOG");
    let (p, up) = Logged::spawn(&mut cmd, READY, move |l| {
        l.contains(ready).then(String::new)
    });
    assert!(up.is_some(), "{bin} did not start:\n{}", p.log_text());
    p
}

fn signal(p: &Logged, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(p.child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, sig).expect("kill");
}

fn wait_exit(p: &mut Logged, patience: Duration) -> Option<i32> {
    let t = std::time::Instant::now();
    while t.elapsed() < patience {
        if let Ok(Some(s)) = p.child.try_wait() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = p.child.kill();
    None
}

/// What the load saw: HTTP statuses other than the expected, answers after SIGTERM, and
/// (agent) corrections acknowledged.
#[derive(Debug, Default)]
struct Load {
    bad: AtomicUsize,
    after_term: AtomicUsize,
    ok: AtomicUsize,
    corrections: AtomicUsize,
}

/// `clients` threads sending `req` until a connection fails; returns once `min` answers came.
fn load(
    clients: usize,
    min: usize,
    term: Arc<AtomicBool>,
    req: impl Fn(&reqwest::blocking::Client, &Load) -> Result<(), reqwest::Error>
    + Send
    + Sync
    + 'static,
) -> (Arc<Load>, Vec<std::thread::JoinHandle<()>>) {
    let seen = Arc::new(Load::default());
    let req = Arc::new(req);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (seen, req, term) = (seen.clone(), req.clone(), term.clone());
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::new();
                while req(&c, &seen).is_ok() {
                    if term.load(Ordering::SeqCst) {
                        seen.after_term.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    while seen.ok.load(Ordering::SeqCst) < min {
        assert_eq!(
            seen.bad.load(Ordering::SeqCst),
            0,
            "refused before any signal: {seen:?}"
        );
        assert!(
            threads.iter().any(|t| !t.is_finished()),
            "every client failed: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (seen, threads)
}

#[test]
fn agent_sigterm_under_load_finishes_in_flight_and_loses_nothing_acknowledged() {
    let dir = scratch("shutdown-agent");
    let port = free_tcp();
    let cfg = agent_config(&dir, port);
    let mut agent = spawn("tandem-agent", &cfg, "tandem-agent serving");
    let jpg = std::fs::read(models_dir().join("vision-imagenet/samples/imagenet_00_243.jpg"))
        .expect("sample");
    let base = format!("http://127.0.0.1:{port}");
    let term = Arc::new(AtomicBool::new(false));
    let answered_late = term.clone();
    let (seen, threads) = load(12, 40, term.clone(), move |c, seen| {
        let r = c
            .post(format!("{base}/v1/classify/vision-imagenet"))
            .body(jpg.clone())
            .send()?;
        if r.status().as_u16() != 200 {
            seen.bad.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        let v: serde_json::Value = r.json()?;
        seen.ok.fetch_add(1, Ordering::SeqCst);
        if answered_late.load(Ordering::SeqCst) {
            // An answer that came after SIGTERM: it was in flight.
            seen.after_term.fetch_add(1, Ordering::SeqCst);
        }
        let id = v["request_id"].as_str().unwrap_or_default().to_string();
        let label = v["label"].as_str().unwrap_or_default().to_string();
        let body = serde_json::json!({"request_id": id, "label": label});
        let r = c.post(format!("{base}/v1/feedback")).json(&body).send()?;
        match r.status().as_u16() {
            202 => seen.corrections.fetch_add(1, Ordering::SeqCst),
            _ => seen.bad.fetch_add(1, Ordering::SeqCst),
        };
        Ok(())
    });
    term.store(true, Ordering::SeqCst);
    signal(&agent, rustix::process::Signal::TERM);
    let code = wait_exit(&mut agent, Duration::from_secs(120));
    for t in threads {
        t.join().expect("client");
    }
    let log = agent.log_text();
    assert_eq!(code, Some(0), "exit status after SIGTERM; log:\n{log}");
    assert!(
        !log.contains("grace period over"),
        "the stop overran its grace:\n{log}"
    );
    assert_eq!(seen.bad.load(Ordering::SeqCst), 0, "{seen:?}");
    assert!(
        seen.after_term.load(Ordering::SeqCst) > 0,
        "nothing was in flight at SIGTERM: {seen:?}"
    );
    // Every acknowledged correction is in the queue the next start opens.
    let acked = seen.corrections.load(Ordering::SeqCst);
    let mut again = spawn("tandem-agent", &cfg, "tandem-agent serving");
    let records: usize = again
        .log_text()
        .lines()
        .find(|l| l.contains("queue open") && l.contains("records="))
        .and_then(|l| {
            l.split("records=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no queue line:\n{}", again.log_text()));
    assert!(
        records >= acked,
        "{acked} corrections acknowledged, {records} records queued"
    );
    assert_eq!(
        again
            .terminate(Duration::from_secs(60))
            .and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn hub_sigterm_under_load_finishes_in_flight() {
    let dir = scratch("shutdown-hub");
    let http = free_tcp();
    let cfg = hub_config(&dir, http);
    let mut hub = spawn("tandem-hub", &cfg, "tandem-hub serving");
    let url = format!("http://127.0.0.1:{http}/v2/models/vision-imagenet/infer");
    let body = serde_json::json!({"inputs": [{
        "name": "input", "shape": [1, 3, 260, 260], "datatype": "FP32",
        "data": vec![0.1f32; 3 * 260 * 260],
    }]});
    let term = Arc::new(AtomicBool::new(false));
    let (seen, threads) = load(6, 12, term.clone(), move |c, seen| {
        let r = c.post(&url).json(&body).send()?;
        match r.status().as_u16() {
            200 => seen.ok.fetch_add(1, Ordering::SeqCst),
            _ => seen.bad.fetch_add(1, Ordering::SeqCst),
        };
        Ok(())
    });
    term.store(true, Ordering::SeqCst);
    signal(&hub, rustix::process::Signal::TERM);
    let code = wait_exit(&mut hub, Duration::from_secs(120));
    for t in threads {
        t.join().expect("client");
    }
    let log = hub.log_text();
    assert_eq!(code, Some(0), "exit status after SIGTERM; log:\n{log}");
    assert!(
        !log.contains("grace period over"),
        "the stop overran its grace:\n{log}"
    );
    assert!(log.contains("tandem-hub stopped"), "{log}");
    assert_eq!(seen.bad.load(Ordering::SeqCst), 0, "{seen:?}");
    assert!(
        seen.after_term.load(Ordering::SeqCst) > 0,
        "nothing was in flight at SIGTERM: {seen:?}"
    );
}

/// A request whose body never completes keeps the stop waiting (step 2) until its grace ends:
/// a second signal then exits at once with status 130.
fn second_signal_exits_at_once(bin: &str, cfg: &Path, port: u16, ready: &'static str, path: &str) {
    let mut p = spawn(bin, cfg, ready);
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        slow,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    )
    .expect("partial request");
    std::thread::sleep(Duration::from_millis(300));
    signal(&p, rustix::process::Signal::TERM);
    let stopping = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        p.log_text()
            .contains("stopping (a second signal exits at once)")
    });
    assert!(stopping, "{}", p.log_text());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        matches!(p.child.try_wait(), Ok(None)),
        "{bin} should still wait for the slow request:\n{}",
        p.log_text()
    );
    signal(&p, rustix::process::Signal::INT);
    let code = wait_exit(&mut p, Duration::from_secs(10));
    assert_eq!(
        code,
        Some(130),
        "{bin}: second signal; log:\n{}",
        p.log_text()
    );
    drop(slow);
}

#[test]
fn agent_second_signal_exits_at_once() {
    let dir = scratch("shutdown-agent-2");
    let port = free_tcp();
    let cfg = agent_config(&dir, port);
    second_signal_exits_at_once(
        "tandem-agent",
        &cfg,
        port,
        "tandem-agent serving",
        "/v1/feedback",
    );
}

#[test]
fn hub_second_signal_exits_at_once() {
    let dir = scratch("shutdown-hub-2");
    let http = free_tcp();
    let cfg = hub_config(&dir, http);
    second_signal_exits_at_once(
        "tandem-hub",
        &cfg,
        http,
        "tandem-hub serving",
        "/v2/models/vision-imagenet/infer",
    );
}
