//! The hub under test: the release `tandem-hub run` beside this binary, on loopback, its QUIC
//! port fixed so a restart comes back where the devices look; started, killed with SIGKILL and
//! started again on the same state; sampled every 100 ms from `/proc` (CPU, RSS) and from its
//! `/metrics` (handshake and connection counters of `[quic.limits]`).

use crate::procs::{self, Server};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_hub::ingress::limits::QuicLimits;

/// The model the devices offload (its cloud variant on the hub).
pub const MODEL: &str = "vision-fashion";

/// How to start the hub, again and again on the same state.
#[derive(Debug, Clone)]
pub struct HubSpec {
    exe: PathBuf,
    cfg: PathBuf,
    log: PathBuf,
    /// HTTP `host:port` (health, `/metrics`).
    pub http: String,
    /// QUIC `host:port` for the devices.
    pub quic: String,
    /// The `[quic.limits]` it runs with.
    pub limits: QuicLimits,
}

/// A free UDP port on loopback (the hub's QUIC port, the same across restarts).
fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Writes the hub's configuration under `dir`: the bench's PKI, state under `dir`, MQTT off
/// (the QUIC ingress is what is measured), the hub's `[quic.limits]` defaults unless
/// `max_connections` is given.
pub fn prepare(
    repo: &Path,
    pki: &Path,
    dir: &Path,
    max_connections: Option<u32>,
) -> anyhow::Result<HubSpec> {
    let exe = std::env::current_exe()?.with_file_name("tandem-hub");
    anyhow::ensure!(
        exe.is_file(),
        "{} missing: run `make release`",
        exe.display()
    );
    let (http, quic) = (
        format!("127.0.0.1:{}", procs::free_port()?),
        format!("127.0.0.1:{}", free_udp_port()?),
    );
    let mut limits = QuicLimits::default();
    let mut limits_toml = String::new();
    if let Some(n) = max_connections {
        limits.max_connections = n;
        limits_toml = format!("[quic.limits]\nmax_connections = {n}\n");
    }
    let cfg = dir.join("hub.toml");
    std::fs::write(
        &cfg,
        format!(
            "log_filter = \"warn\"\npki_dir = \"{}\"\nregistry_dir = \"{}\"\n\
             feedback_dir = \"{}\"\n[http]\nlisten = \"{http}\"\n[quic]\nlisten = \"{quic}\"\n\
             {limits_toml}[models]\ndir = \"{}\"\nenabled = [\"{MODEL}\"]\n[mqtt]\nmode = \"off\"\n",
            pki.display(),
            dir.join("registry").display(),
            dir.join("feedback").display(),
            repo.join("models").display()
        ),
    )?;
    Ok(HubSpec {
        exe,
        cfg,
        log: dir.join("hub.log"),
        http,
        quic,
        limits,
    })
}

impl HubSpec {
    /// Starts the hub and waits until `/v2/health/ready` answers (polled every 20 ms).
    pub fn start(&self) -> anyhow::Result<Server> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["run", "--config"]).arg(&self.cfg);
        procs::spawn_http(
            cmd,
            self.http.clone(),
            "/v2/health/ready",
            Duration::from_secs(120),
            &self.log,
        )
    }
}

/// Kills the hub with SIGKILL (no shutdown, no goodbye to the devices) and reaps it.
pub fn kill(hub: Server) -> anyhow::Result<()> {
    let pid = rustix::process::Pid::from_raw(hub.pid() as i32).context("hub pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).context("SIGKILL")?;
    drop(hub);
    Ok(())
}

/// One 100 ms sample of the hub.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Seconds since the bench's epoch.
    pub t: f64,
    /// CPU seconds of the process so far.
    pub cpu_s: f64,
    /// Resident set size, MiB.
    pub rss_mib: f64,
    /// `tandem_hub_quic_connections_accepted_total`.
    pub accepted: u64,
    /// `tandem_hub_quic_handshakes_refused_total` (over `max_handshakes`).
    pub refused_handshakes: u64,
    /// `tandem_hub_quic_connections_over_cap_total` (over `max_connections`).
    pub refused_connections: u64,
    /// `tandem_hub_quic_handshakes` (in progress now).
    pub handshakes_now: u64,
    /// Whether `/metrics` answered.
    pub metrics: bool,
}

/// Samples the hub whose pid is in `pid` (0: none) every 100 ms until `stop`.
pub struct Sampler {
    /// The hub process to sample; set at each start.
    pub pid: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling (on its own thread: blocking reads, off the devices' runtime).
    pub fn start(http: String, epoch: Instant) -> anyhow::Result<Self> {
        let pid = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (p, s, out) = (pid.clone(), stop.clone(), samples.clone());
        let thread = std::thread::Builder::new()
            .name("hub-sampler".into())
            .spawn(move || {
                let mut next = Instant::now();
                while !s.load(Ordering::Relaxed) {
                    let pid = p.load(Ordering::Relaxed);
                    if pid != 0
                        && let Some(cpu_s) = procs::pid_cpu_seconds(pid)
                    {
                        let mut x = Sample {
                            t: epoch.elapsed().as_secs_f64(),
                            cpu_s,
                            rss_mib: procs::pid_rss_mib(pid),
                            ..Sample::default()
                        };
                        if let Some(m) = get(&http, "/metrics") {
                            x.metrics = true;
                            x.accepted = metric(&m, "tandem_hub_quic_connections_accepted_total");
                            x.refused_handshakes =
                                metric(&m, "tandem_hub_quic_handshakes_refused_total");
                            x.refused_connections =
                                metric(&m, "tandem_hub_quic_connections_over_cap_total");
                            x.handshakes_now = metric(&m, "tandem_hub_quic_handshakes");
                        }
                        if let Ok(mut v) = out.lock() {
                            v.push(x);
                        }
                    }
                    next += Duration::from_millis(100);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })?;
        Ok(Self {
            pid,
            stop,
            samples,
            thread: Some(thread),
        })
    }

    /// Stops and returns the samples.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// A plain `GET` with a short timeout; the body of a 200 answer.
fn get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let sock = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of an unlabelled Prometheus metric (0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
