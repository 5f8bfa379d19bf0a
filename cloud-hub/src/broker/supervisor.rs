//! [`Broker`]: the hub's mosquitto as a supervised child process.
//!
//! - Start: find the binary, write the configuration and ACL to the runtime folder, stop a
//!   broker left behind by a hub that was killed (its pid file), start mosquitto and wait until
//!   it says it is running and accepts a TCP connection. A broker that does not come up is a
//!   start-up error carrying its last log lines.
//! - Supervise: when it exits, log at ERROR with the exit status and its last log lines, count
//!   the restart (`tandem_hub_broker_restarts_total`), wait (full jitter: a random wait up to
//!   `mqtt.restart_backoff_ms`, the bound doubling up to `restart_backoff_max_ms`, reset after
//!   30 s up; `tandem_shared::backoff`) and start it again on the same port. `crl.pem` is
//!   watched (both counted as a reload): a change that revokes a certificate for cause (an
//!   operator's `device revoke`) restarts mosquitto, which drops the connections of the
//!   revoked devices (mosquitto closes no open connection on its own); a change that only
//!   re-signs the list (the hub does so at half its validity) or adds certificates a renewal
//!   superseded (their device reconnected with its new one when it renewed) is loaded with
//!   SIGHUP, which mosquitto 2 answers by reading its CRL and certificates again, and every
//!   connection stays up. The ledger's subscribers and operators are watched too
//!   (`super::acl`): a new or revoked subscriber, or a new operator, rewrites the ACL, loaded
//!   with SIGHUP.
//! - Stop: SIGTERM (mosquitto saves retained messages), SIGKILL after 5 s. A hub that is
//!   killed takes its broker with it (`super::spawn`: SIGTERM on the parent's death).

use super::mosquitto::{self, ConfigSpec, Files};
use super::{BrokerError, HUB_IDENTITY, MqttConfig};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tandem_shared::backoff::Backoff;
use tandem_shared::mqtt::BrokerUrl;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::{oneshot, watch};

/// Log lines of the broker kept for error reports.
const TAIL_LINES: usize = 30;
/// A broker up this long gets the shortest backoff again after its next exit.
const STABLE: Duration = Duration::from_secs(30);
/// Grace period between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What the supervisor needs, resolved from `[mqtt]` and the PKI folder.
#[derive(Debug, Clone)]
pub struct BrokerSpec {
    /// `mqtt.mosquitto_bin` (empty: searched).
    pub mosquitto_bin: PathBuf,
    /// The listener; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The PKI folder.
    pub pki_dir: PathBuf,
    /// The runtime folder.
    pub runtime_dir: PathBuf,
    /// Bound of the first restart delay (the delay is a random time up to it).
    pub restart_backoff: Duration,
    /// Bound of the longest restart delay.
    pub restart_backoff_max: Duration,
    /// Longest wait for readiness.
    pub ready_timeout: Duration,
    /// How often `crl.pem` is checked.
    pub crl_check: Duration,
}

impl BrokerSpec {
    /// From `[mqtt]`; `resolve` makes relative paths absolute (against the config's folder).
    pub fn from_config(
        cfg: &MqttConfig,
        pki_dir: PathBuf,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<Self, BrokerError> {
        let ms = Duration::from_millis;
        Ok(Self {
            mosquitto_bin: if cfg.mosquitto_bin.as_os_str().is_empty() {
                PathBuf::new()
            } else {
                resolve(&cfg.mosquitto_bin)
            },
            listen: cfg
                .listen
                .parse()
                .map_err(|_| BrokerError::Listen(cfg.listen.clone()))?,
            pki_dir,
            runtime_dir: resolve(&cfg.runtime_dir),
            restart_backoff: ms(cfg.restart_backoff_ms),
            restart_backoff_max: ms(cfg.restart_backoff_max_ms),
            ready_timeout: ms(cfg.ready_timeout_ms),
            crl_check: ms(cfg.crl_check_ms),
        })
    }
}

/// The supervisor's counters (the hub's `/metrics`).
#[derive(Debug, Default)]
pub struct BrokerStats {
    restarts: AtomicU64,
    reloads: AtomicU64,
    up: AtomicBool,
    pid: AtomicU32,
}

impl BrokerStats {
    /// Times the broker exited on its own and was started again.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Relaxed)
    }

    /// Times the broker was restarted to load a new CRL.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Relaxed)
    }

    /// Whether the broker is running and accepted a connection.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// The broker's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Relaxed)).filter(|p| *p != 0)
    }

    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP tandem_hub_broker_up Whether the hub's mosquitto is running and accepting connections.\n\
             # TYPE tandem_hub_broker_up gauge\ntandem_hub_broker_up {}\n\
             # HELP tandem_hub_broker_restarts_total Times the hub's mosquitto exited and was restarted.\n\
             # TYPE tandem_hub_broker_restarts_total counter\ntandem_hub_broker_restarts_total {}\n\
             # HELP tandem_hub_broker_reloads_total Times the hub's mosquitto loaded a changed crl.pem (restarted after a revocation, SIGHUP after a re-signing).\n\
             # TYPE tandem_hub_broker_reloads_total counter\ntandem_hub_broker_reloads_total {}",
            u8::from(self.is_up()),
            self.restarts(),
            self.reloads()
        );
    }
}

/// The hub's mosquitto, supervised until [`Broker::stop`] (or drop).
#[derive(Debug)]
pub struct Broker {
    addr: SocketAddr,
    stats: Arc<BrokerStats>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// One run of the process.
struct Running {
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    started: Instant,
}

impl Running {
    fn tail(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The process and paths a run is made from.
#[derive(Debug, Clone)]
struct Launch {
    bin: PathBuf,
    files: Files,
    addr: SocketAddr,
    ready_timeout: Duration,
}

impl Broker {
    /// Writes the configuration, starts mosquitto and waits until it accepts connections; then
    /// supervises it in the background.
    pub async fn start(spec: BrokerSpec) -> Result<Self, BrokerError> {
        let bin = mosquitto::find_binary(&spec.mosquitto_bin)?;
        for f in ["ca.pem", "hub.pem", "hub.key", "crl.pem"] {
            let p = spec.pki_dir.join(f);
            if !p.is_file() {
                return Err(BrokerError::Pki(p));
            }
        }
        let addr = if spec.listen.port() == 0 {
            free_port(spec.listen.ip())?
        } else {
            spec.listen
        };
        let files = Files::new(&spec.runtime_dir);
        std::fs::create_dir_all(&files.dir)
            .map_err(BrokerError::io(format!("create {}", files.dir.display())))?;
        let conf = mosquitto::config_text(&ConfigSpec {
            listen: addr,
            pki_dir: &spec.pki_dir,
            files: &files,
            as_root: rustix::process::geteuid().is_root(),
        })?;
        let acl = super::acl::current(&spec.pki_dir, HUB_IDENTITY)
            .unwrap_or_else(|| super::acl::acl_text(HUB_IDENTITY, &[], &[]));
        for (path, text) in [(&files.conf, conf), (&files.acl, acl)] {
            std::fs::write(path, text)
                .map_err(BrokerError::io(format!("write {}", path.display())))?;
        }
        stop_stale(&files).await;
        let launch = Launch {
            bin,
            files,
            addr,
            ready_timeout: spec.ready_timeout,
        };
        let stats = Arc::new(BrokerStats::default());
        let running = launch.run(&stats).await?;
        tracing::info!(addr = %addr, pid = ?stats.pid(), bin = %launch.bin.display(), "mosquitto running (supervised by the hub)");
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(
            running,
            launch,
            spec.clone(),
            stats.clone(),
            stop_rx,
        ));
        Ok(Self {
            addr,
            stats,
            stop,
            task: Some(task),
        })
    }

    /// The listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL the hub's own client uses: the listener's address, or loopback when it
    /// listens on every address (`0.0.0.0`, `::`), which the hub certificate always carries.
    pub fn url(&self) -> BrokerUrl {
        let ip = match self.addr.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        BrokerUrl {
            host: ip.to_string(),
            port: self.addr.port(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<BrokerStats> {
        self.stats.clone()
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 5 s) and the supervision.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Launch {
    /// Starts the process and waits until it is ready; an error kills it.
    async fn run(&self, stats: &BrokerStats) -> Result<Running, BrokerError> {
        let mut cmd = super::spawn::tied_command(&self.bin);
        cmd.arg("-c")
            .arg(&self.files.conf)
            // Debian's mosquitto speaks sd_notify: the hub's readiness is the hub's to report.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = super::spawn::spawn_tied(cmd)
            .await
            .map_err(BrokerError::io(format!("start {}", self.bin.display())))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, ready_rx) = oneshot::channel();
        if let Some(err) = child.stderr.take() {
            tokio::spawn(read_log(err, tail.clone(), ready_tx));
        }
        let pid = child.id().unwrap_or(0);
        let _ = std::fs::write(&self.files.pid, format!("{pid}\n"));
        let mut running = Running {
            child,
            tail,
            started: Instant::now(),
        };
        let ready = async {
            let _ = ready_rx.await;
            // It says it is running; the listener must take a connection too.
            while tokio::net::TcpStream::connect(self.addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            () = ready => {
                stats.pid.store(pid, Relaxed);
                stats.up.store(true, Relaxed);
                Ok(running)
            }
            status = running.child.wait() => {
                // Let the log reader catch the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(BrokerError::Exited {
                    status: status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    stderr: running.tail(),
                })
            }
            () = tokio::time::sleep(self.ready_timeout) => {
                let _ = running.child.kill().await;
                Err(BrokerError::NotReady {
                    addr: self.addr,
                    ms: self.ready_timeout.as_millis() as u64,
                    stderr: running.tail(),
                })
            }
        }
    }
}

/// Keeps the tail of mosquitto's log; says when it reports running.
async fn read_log(
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "mosquitto", "{line}");
        if line.contains("mosquitto version")
            && line.ends_with(" running")
            && let Some(r) = ready.take()
        {
            let _ = r.send(());
        }
        let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}

enum Wake {
    Exited(String),
    CrlChanged,
    Stop,
}

async fn supervise(
    mut running: Running,
    launch: Launch,
    spec: BrokerSpec,
    stats: Arc<BrokerStats>,
    mut stop: watch::Receiver<bool>,
) {
    let crl = spec.pki_dir.join("crl.pem");
    let mut crl_seen = modified(&crl);
    let mut revoked = revoked_serials(&spec.pki_dir);
    let mut backoff = Backoff::new(spec.restart_backoff, spec.restart_backoff_max);
    let mut acl = std::fs::read_to_string(&launch.files.acl).unwrap_or_default();
    loop {
        let wake = tokio::select! {
            text = super::acl::changed(&spec.pki_dir, HUB_IDENTITY, &acl, spec.crl_check) => {
                if reload_acl(&launch.files.acl, &text, running.child.id(), &stats) {
                    acl = text;
                }
                continue;
            }
            status = running.child.wait() => {
                Wake::Exited(status.map_or_else(|e| e.to_string(), |s| s.to_string()))
            }
            () = crl_change(&crl, &mut crl_seen, spec.crl_check) => Wake::CrlChanged,
            _ = stop.wait_for(|s| *s) => Wake::Stop,
        };
        if matches!(wake, Wake::CrlChanged) {
            let now = revoked_serials(&spec.pki_dir);
            if now.is_some()
                && now == revoked
                && let Some(pid) = running.child.id()
                && signal(pid, rustix::process::Signal::HUP)
            {
                tracing::debug!(crl = %crl.display(), "crl.pem re-signed: mosquitto reloads it (SIGHUP)");
                stats.reloads.fetch_add(1, Relaxed);
                continue;
            }
            revoked = now;
        }
        stats.up.store(false, Relaxed);
        stats.pid.store(0, Relaxed);
        match wake {
            Wake::Stop => {
                terminate(&mut running).await;
                let _ = std::fs::remove_file(&launch.files.pid);
                tracing::info!("mosquitto stopped");
                return;
            }
            Wake::CrlChanged => {
                tracing::info!(crl = %crl.display(), "crl.pem revokes another certificate: restarting mosquitto to load it and drop the revoked devices");
                terminate(&mut running).await;
                stats.reloads.fetch_add(1, Relaxed);
            }
            Wake::Exited(status) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if running.started.elapsed() >= STABLE {
                    backoff.reset();
                }
                let wait = backoff.next_delay();
                tracing::error!(
                    %status,
                    restart_in_ms = wait.as_millis() as u64,
                    last_lines = %running.tail(),
                    "mosquitto exited; restarting it"
                );
                if sleep_or_stop(wait, &mut stop).await {
                    return;
                }
                stats.restarts.fetch_add(1, Relaxed);
            }
        }
        running = loop {
            match launch.run(&stats).await {
                Ok(r) => {
                    tracing::info!(addr = %launch.addr, pid = ?stats.pid(), restarts = stats.restarts(), "mosquitto running again");
                    break r;
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::error!(error = %e, restart_in_ms = wait.as_millis() as u64, "mosquitto failed to start again");
                    if sleep_or_stop(wait, &mut stop).await {
                        return;
                    }
                    stats.restarts.fetch_add(1, Relaxed);
                }
            }
        };
    }
}

/// A subscriber was added or revoked, or an operator added: writes the new ACL, which mosquitto reads again on
/// SIGHUP (connections stay up); `false` when the file cannot be written (tried again at the
/// next check).
fn reload_acl(path: &Path, text: &str, pid: Option<u32>, stats: &BrokerStats) -> bool {
    match std::fs::write(path, text) {
        Ok(()) => {
            if let Some(pid) = pid {
                signal(pid, rustix::process::Signal::HUP);
            }
            tracing::info!(acl = %path.display(), "subscribers or operators changed: mosquitto reloads its ACL (SIGHUP)");
            stats.reloads.fetch_add(1, Relaxed);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, acl = %path.display(), "cannot rewrite the broker's ACL: the changes wait for the next attempt");
            false
        }
    }
}

/// Sleeps; `true` when asked to stop meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

/// The serials the PKI's ledger revokes for cause, not superseded ones (`None` when it
/// cannot be read).
fn revoked_serials(pki_dir: &Path) -> Option<std::collections::BTreeSet<u64>> {
    crate::pki::Pki::open(pki_dir)
        .and_then(|p| p.revoked_for_cause())
        .ok()
}

fn modified(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Returns when the file's modification time or size differs from `seen` (updated).
async fn crl_change(p: &Path, seen: &mut Option<(SystemTime, u64)>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let now = modified(p);
        if now.is_some() && now != *seen {
            *seen = now;
            return;
        }
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|p| rustix::process::kill_process(p, sig).is_ok())
}

/// SIGTERM, then SIGKILL after the grace period.
async fn terminate(running: &mut Running) {
    if let Some(pid) = running.child.id() {
        signal(pid, rustix::process::Signal::TERM);
        if tokio::time::timeout(STOP_GRACE, running.child.wait())
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!(pid, "mosquitto ignored SIGTERM: killing it");
    }
    let _ = running.child.kill().await;
}

/// Stops a mosquitto a previous hub started from this runtime folder (the hub was killed and
/// its broker kept the port).
async fn stop_stale(files: &Files) {
    let Some(pid) = std::fs::read_to_string(&files.pid)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return;
    };
    let ours = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("mosquitto") && c.contains(&*files.conf.to_string_lossy())
        })
    };
    if !ours(pid) {
        return;
    }
    tracing::warn!(pid, "stopping the mosquitto a previous hub left running");
    signal(pid, rustix::process::Signal::TERM);
    let t = Instant::now();
    while ours(pid) && t.elapsed() < STOP_GRACE {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if ours(pid) {
        signal(pid, rustix::process::Signal::KILL);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port(ip: std::net::IpAddr) -> Result<SocketAddr, BrokerError> {
    let l = std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .map_err(BrokerError::io("pick a free port for mosquitto"))?;
    l.local_addr()
        .map_err(BrokerError::io("pick a free port for mosquitto"))
}
