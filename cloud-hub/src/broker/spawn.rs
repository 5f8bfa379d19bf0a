//! Starts mosquitto so that it dies with the hub, even when the hub is killed (SIGKILL, OOM):
//! the child asks the kernel for SIGTERM when its parent goes (`PR_SET_PDEATHSIG`).
//!
//! - How: mosquitto is started through util-linux's `setpriv --pdeathsig TERM` (Debian:
//!   essential), which sets the signal and then executes mosquitto in the same process (the
//!   workspace forbids the `unsafe` a `pre_exec` hook would need). Without `setpriv`, mosquitto
//!   is started directly, not tied (said once at WARN).
//! - The kernel sends that signal when the *thread* that forked the child exits, not the
//!   process. tokio forks from whichever thread runs the task, and its worker and blocking
//!   threads come and go (a blocking thread idles out after 10 s; `block_in_place` hands a
//!   worker's place to a new thread). So every broker is forked by one dedicated thread,
//!   started on first use and never ended, that lives as long as the process.
//! - SIGTERM, not SIGKILL: mosquitto saves its retained messages on the way out.
//! - A hub killed between the fork and `setpriv`'s `prctl` (a few microseconds) leaves its
//!   broker running; the pid file the supervisor keeps (`supervisor::stop_stale`) stops it at
//!   the next start.

use std::io;
use std::path::Path;
use std::sync::{OnceLock, mpsc};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// One start: the command, the runtime to register the child with, where to answer.
struct Job {
    cmd: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The spawner thread's queue (unbounded: one job per broker start or restart, each answered
/// within a fork and exec); the thread starts on first use.
fn spawner() -> mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new()
                .name("tandem-broker-spawner".into())
                .spawn(move || {
                    for job in rx {
                        let _runtime = job.runtime.enter();
                        let mut cmd = job.cmd;
                        let _ = job.reply.send(cmd.spawn());
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the broker's spawner thread");
            }
            tx
        })
        .clone()
}

/// Where util-linux installs `setpriv`.
const SETPRIV: [&str; 2] = ["/usr/bin/setpriv", "/bin/setpriv"];

/// A command that runs `bin` tied to the hub's life (its arguments follow), through
/// `setpriv` where there is one.
pub(super) fn tied_command(bin: &Path) -> Command {
    static WARNED: std::sync::Once = std::sync::Once::new();
    match SETPRIV.iter().map(Path::new).find(|p| p.is_file()) {
        Some(setpriv) => {
            let mut cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "TERM", "--"]).arg(bin);
            cmd
        }
        None => {
            WARNED.call_once(|| {
                tracing::warn!(
                    "setpriv (util-linux) not found: mosquitto is not tied to the hub's life; a killed hub leaves it running until the hub starts again"
                );
            });
            Command::new(bin)
        }
    }
}

/// Spawns `cmd` from the spawner thread (the parent whose exit the kernel watches), in the
/// current runtime (which reaps the child).
pub(super) async fn spawn_tied(cmd: Command) -> io::Result<Child> {
    let (reply, answer) = oneshot::channel();
    let job = Job {
        cmd,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    spawner()
        .send(job)
        .map_err(|_| io::Error::other("the broker's spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the broker's spawner thread is gone"))?
}
