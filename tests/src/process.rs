//! A child process whose stderr is kept line by line, started when a given line shows up, and
//! stopped with SIGTERM within a deadline.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A spawned process and every line it wrote to stderr so far.
#[derive(Debug)]
pub struct Logged {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    /// Spawns `cmd` (stdout discarded, stderr kept) and waits up to `patience` for the first
    /// stderr line that `ready` maps to a value. The value is `None` when no such line came in
    /// time (the process is left running: the caller reports it with [`Logged::log_text`]).
    pub fn spawn(
        cmd: &mut Command,
        patience: Duration,
        ready: impl Fn(&str) -> Option<String> + Send + 'static,
    ) -> (Logged, Option<String>) {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(v) = ready(&line) {
                    let _ = tx.send(v);
                }
                lines.lock().expect("log").push(line);
            }
        });
        let value = rx.recv_timeout(patience).ok();
        (Logged { child, log }, value)
    }

    /// The stderr lines so far, one per line.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// SIGTERM, then waits up to `patience` for the exit; `None` if it is still running.
    pub fn terminate(&mut self, patience: Duration) -> Option<ExitStatus> {
        terminate(&mut self.child, patience)
    }
}

/// SIGTERM to `child`, then waits up to `patience` for its exit; `None` if it is still running.
pub fn terminate(child: &mut Child, patience: Duration) -> Option<ExitStatus> {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let t = Instant::now();
    while t.elapsed() < patience {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Runs `cmd` to the end off the async runtime's threads and returns its output; a failing
/// exit fails the test with the command, its status, stdout and stderr.
pub async fn output_ok(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Runs `cmd` to the end: its exit code (`-1` when a signal ended it) and its stdout followed
/// by its stderr, for tests that check a command line's message.
pub fn output_text(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}
