//! Child processes for benchmarks: the agent daemon (release build beside this binary) and the
//! FastAPI peer (from the repository's .venv). Killed on drop.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process serving HTTP on `addr`.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// `host:port`.
    pub addr: String,
    /// Stopped with SIGTERM (then killed after 10 s) rather than killed at once.
    graceful: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.graceful {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// CPU seconds (user + system) used so far by the process and its descendants (Triton's
    /// Python backend runs in child processes). Linux `/proc`, 100 ticks per second.
    pub fn cpu_seconds(&self) -> f64 {
        let stats: Vec<(u32, u32, u64)> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let (ppid, ticks) = stat(&format!("/proc/{pid}/stat"))?;
                Some((pid, ppid, ticks))
            })
            .collect();
        let mut tree = vec![self.child.id()];
        let mut i = 0;
        while i < tree.len() {
            let parent = tree[i];
            tree.extend(stats.iter().filter(|s| s.1 == parent).map(|s| s.0));
            i += 1;
        }
        stats
            .iter()
            .filter(|s| tree.contains(&s.0))
            .map(|s| s.2)
            .sum::<u64>() as f64
            / 100.0
    }

    /// Resident set size of the process, in MiB.
    pub fn rss_mib(&self) -> f64 {
        pid_rss_mib(self.child.id())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Resident set size of process `pid`, in MiB (NaN when it is gone).
pub fn pid_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) used so far by process `pid` (threads included), if it lives.
pub fn pid_cpu_seconds(pid: u32) -> Option<f64> {
    stat(&format!("/proc/{pid}/stat")).map(|(_, t)| t as f64 / 100.0)
}

/// Parent pid and CPU ticks (user + system) from a `/proc/.../stat` file.
fn stat(path: &str) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command: state ppid ... utime(14) stime(15).
    let rest: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some((ppid, ticks))
}

/// CPU seconds used so far by this process (`self`) or by the calling thread (`thread-self`).
pub fn own_cpu_seconds(which: &str) -> f64 {
    stat(&format!("/proc/{which}/stat")).map_or(0.0, |(_, t)| t as f64 / 100.0)
}

/// The repository root (this binary lives in `<repo>/target/<profile>/`).
pub fn repo() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .find(|p| p.join("Cargo.toml").is_file() && p.join("models").is_dir())
        .map(Path::to_path_buf)
        .context("cannot find the repository above the tandem-bench binary")
}

/// A free TCP port on loopback.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_ready(addr: &str, child: &mut Child) -> anyhow::Result<()> {
    wait_http(addr, "/v2/health/ready", child, Duration::from_secs(60))
}

/// Waits until `GET path` on `addr` answers 200.
fn wait_http(addr: &str, path: &str, child: &mut Child, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(st) = child.try_wait()? {
            bail!("server exited early: {st}");
        }
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            let _ = write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            );
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        // Short polls: the fleet benchmark times from this moment.
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("server at {addr} not ready within {} s", timeout.as_secs())
}

/// Starts `cmd` (stderr to `log`, SIGTERM on drop) serving HTTP on `addr`, and waits until
/// `GET ready_path` answers 200; on failure the error carries the log's last lines.
pub fn spawn_http(
    mut cmd: Command,
    addr: String,
    ready_path: &str,
    timeout: Duration,
    log: &Path,
) -> anyhow::Result<Server> {
    let file = std::fs::File::create(log).with_context(|| log.display().to_string())?;
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    match wait_http(&addr, ready_path, &mut child, timeout) {
        Ok(()) => Ok(Server {
            child,
            addr,
            graceful: true,
        }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(e.context(tail.join(" | ")))
        }
    }
}

/// Starts `tandem-agent run` for one model with the given worker and thread counts.
pub fn agent(repo: &Path, model: &str, workers: usize, threads: usize) -> anyhow::Result<Server> {
    let exe = std::env::current_exe()?.with_file_name("tandem-agent");
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("tandem-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join(format!("{model}-{threads}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[runtime]\nintra_op_threads = {threads}\n[engine]\nworkers = {workers}\nqueue_capacity = 256\n[models]\ndir = \"{}\"\nenabled = [\"{model}\"]\n[log]\nfilter = \"warn\"\n",
            repo.join("models").display()
        ),
    )?;
    let mut child = Command::new(&exe)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {}", exe.display()))?;
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("  agent: {line}");
            }
        });
    }
    let addr = format!("127.0.0.1:{port}");
    wait_ready(&addr, &mut child)?;
    Ok(Server {
        child,
        addr,
        graceful: false,
    })
}

/// Starts the FastAPI + onnxruntime peer for one model.
pub fn fastapi_peer(repo: &Path, model: &str, threads: usize) -> anyhow::Result<Server> {
    let python = repo.join(".venv/bin/python");
    if !python.is_file() {
        bail!("{} missing: run `make setup`", python.display());
    }
    let port = free_port()?;
    let mut child = Command::new(&python)
        .args(["-m", "uvicorn", "fastapi_oip:app", "--app-dir"])
        .arg(repo.join("scripts/peers"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--log-level",
            "warning",
        ])
        .env("PEER_MODEL_DIR", repo.join("models").join(model))
        .env("PEER_THREADS", threads.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .stdout(Stdio::null())
        .spawn()
        .context("spawn the FastAPI peer")?;
    let addr = format!("127.0.0.1:{port}");
    wait_ready(&addr, &mut child)?;
    Ok(Server {
        child,
        addr,
        graceful: false,
    })
}
