//! Built daemons on loopback for the hostile-input suite: an agent or a hub started from a
//! config text in a scratch folder (the hub with its PKI made by `tandem-hub init` and MQTT
//! off), optionally under an open-file limit, and what the kernel says of their memory.

use crate::paths::{Scratch, binary, models_dir, scratch};
use crate::process::Logged;
use std::process::Command;
use std::time::Duration;

/// A daemon started by a test; killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// The process and its log.
    pub proc: Logged,
    /// `http://IP:PORT` of its HTTP API.
    pub base: String,
    /// Its scratch folder (removed when the daemon is dropped, after the process).
    pub dir: Scratch,
}

impl Daemon {
    /// `tandem-agent run` on a free port with vision-fashion and text-sentiment (edge) and
    /// `extra` appended to the config; `nofile`: the open-file limit it runs under.
    pub fn agent(name: &str, extra: &str, nofile: Option<u32>) -> Daemon {
        let dir = scratch(name);
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n[models]\ndir = \"{}\"\nenabled = [\"vision-fashion\", \"text-sentiment\"]\n",
            models_dir().display()
        );
        let path = dir.join("agent.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = limited(nofile, "tandem-agent");
        cmd.args(["run", "--config"]).arg(&path);
        Self::spawn(cmd, dir, |line| {
            let i = line.find("listen=")?;
            line[i + 7..].split_whitespace().next().map(str::to_string)
        })
    }

    /// `tandem-hub run` (QUIC and HTTP on free ports, MQTT off) with vision-fashion (cloud) and
    /// `http_extra` appended to its `[http]` section.
    pub fn hub(name: &str, http_extra: &str) -> Daemon {
        Self::hub_with(name, http_extra, "mode = \"off\"")
    }

    /// [`Daemon::hub`] with `mqtt` as its `[mqtt]` section (its own mosquitto: `listen` and
    /// `runtime_dir`).
    pub fn hub_with(name: &str, http_extra: &str, mqtt: &str) -> Daemon {
        let dir = scratch(name);
        let init = Command::new(binary("tandem-hub"))
            .args(["init", "--dir"])
            .arg(dir.join("pki"))
            .output()
            .expect("run tandem-hub init");
        assert!(init.status.success(), "tandem-hub init: {init:?}");
        let config = format!(
            "pki_dir = \"pki\"\nregistry_dir = \"registry\"\nfeedback_dir = \"feedback\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n{http_extra}\n[quic]\nlisten = \"127.0.0.1:0\"\n\
             [mqtt]\n{mqtt}\n[models]\ndir = \"{}\"\nenabled = [\"vision-fashion\"]\n",
            models_dir().display()
        );
        let path = dir.join("hub.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(binary("tandem-hub"));
        cmd.args(["run", "--config"]).arg(&path);
        Self::spawn(cmd, dir, |line| {
            line.contains("tandem-hub serving")
                .then(|| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix("http="))
                })
                .flatten()
                .map(str::to_string)
        })
    }

    fn spawn(
        mut cmd: Command,
        dir: Scratch,
        ready: impl Fn(&str) -> Option<String> + Send + 'static,
    ) -> Daemon {
        cmd.env("RUST_LOG", "info,ort=warn");
        let (proc, addr) = Logged::spawn(&mut cmd, Duration::from_secs(120), ready);
        let Some(addr) = addr else {
            panic!("the daemon did not start:\n{}", proc.log_text());
        };
        Daemon {
            proc,
            base: format!("http://{addr}"),
            dir,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// A `/proc/<pid>/status` field in KiB: `VmRSS` (resident now) or `VmHWM` (the peak).
    pub fn status_kib(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the daemon's /proc status");
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }
}

/// A command for a built binary, under an open-file limit when one is given (through the
/// shell's `ulimit`, as systemd's `LimitNOFILE` would set it).
fn limited(nofile: Option<u32>, bin: &str) -> Command {
    match nofile {
        None => Command::new(binary(bin)),
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(binary(bin));
            c
        }
    }
}

/// Raises this process's open-file limit to `want` (or its hard limit), for tests that hold
/// many sockets.
pub fn raise_nofile(want: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    let target = cur.maximum.map_or(want, |m| m.min(want));
    if cur.current.is_some_and(|c| c >= target) {
        return;
    }
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: cur.maximum,
        },
    );
}
