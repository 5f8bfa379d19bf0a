//! The packages of `scripts/deb.sh`, unpacked into a temporary root and run as their units
//! say: the unit's `ExecStart` with the root as prefix, in a mount namespace where `/` and the
//! root are read-only but for the unit's state directory, with a notify socket of the test's.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tandem_tests::process::Logged;
use tandem_tests::repo;

/// The packages, built once per test binary from the debug build (`--fast`: gzip -1), with
/// `tandem-ep-openvino` from the plugin `make setup` provisions.
pub fn packages() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        assert!(
            rustix::process::geteuid().is_root(),
            "the package tests need root (mount namespaces); CI runs them as root"
        );
        let _ = tandem_tests::binary("tandem-agent");
        let _ = tandem_tests::binary("tandem-hub");
        let out = tandem_tests::scratch("debs");
        let run = Command::new(repo().join("scripts/deb.sh"))
            .args(["--profile", "debug", "--fast", "--ep", "openvino", "--out"])
            .arg(&out)
            .output()
            .expect("scripts/deb.sh runs");
        assert!(
            run.status.success(),
            "scripts/deb.sh failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        out.keep()
    })
}

/// The `.deb` whose name starts with `pkg_`.
pub fn deb(pkg: &str) -> PathBuf {
    std::fs::read_dir(packages())
        .expect("packages dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pkg}_")))
        })
        .unwrap_or_else(|| panic!("no {pkg} package in {}", packages().display()))
}

/// Tests that still need [`packages`]: the last to finish ([`done`]) removes them (~170 MB).
static USERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(3);

/// A test is done with `root` (~125 MB, removed) and, the last one, with the packages.
pub fn done(root: &Path) {
    let _ = std::fs::remove_dir_all(root);
    let _ = std::fs::remove_dir_all(root.with_extension("tmp"));
    let _ = std::fs::remove_file(root.with_extension("notify"));
    if USERS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
        let _ = std::fs::remove_dir_all(packages());
    }
}

/// `pkgs` unpacked (`dpkg-deb -x`) into a fresh root.
pub fn unpack(name: &str, pkgs: &[&str]) -> tandem_tests::Scratch {
    let root = tandem_tests::scratch(name);
    for p in pkgs {
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb(p))
            .arg(&root)
            .status()
            .expect("dpkg-deb");
        assert!(st.success(), "dpkg-deb -x {p}");
    }
    root
}

/// `dpkg --root=ROOT ARGS`: the real dpkg with its own database in `root/var/lib/dpkg` (created
/// empty the first time), so a test installs and removes packages without touching the host.
pub fn dpkg(root: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates"] {
        std::fs::create_dir_all(admin.join(d)).expect("dpkg database");
    }
    if !admin.join("status").exists() {
        std::fs::write(admin.join("status"), b"").expect("dpkg status");
    }
    Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(args)
        .output()
        .expect("dpkg runs")
}

/// What the unit file says about how to run it.
#[derive(Debug)]
pub struct Unit {
    /// `ExecStart`, split on spaces.
    pub exec: Vec<String>,
    /// `WorkingDirectory`.
    pub workdir: String,
    /// `/var/lib/` + `StateDirectory`.
    pub state: String,
    /// The whole text.
    pub text: String,
}

/// Reads `lib/systemd/system/NAME` from the root.
pub fn unit(root: &Path, name: &str) -> Unit {
    let text = std::fs::read_to_string(root.join("lib/systemd/system").join(name))
        .unwrap_or_else(|e| panic!("{name} in the package: {e}"));
    let key = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{name} has no {k}="))
            .trim()
            .to_string()
    };
    Unit {
        exec: key("ExecStart")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        workdir: key("WorkingDirectory"),
        state: format!("/var/lib/{}", key("StateDirectory")),
        text: text.clone(),
    }
}

/// An absolute path of the installed system, under `root`.
pub fn under(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

/// Rewrites a packaged config file: every `"/var/lib/` path under the root, then `swaps`.
pub fn prefix_config(root: &Path, file: &str, swaps: &[(&str, String)]) {
    let path = under(root, file);
    let mut text = std::fs::read_to_string(&path).expect("packaged config");
    text = text.replace("\"/var/lib/", &format!("\"{}/var/lib/", root.display()));
    for (from, to) in swaps {
        assert!(text.contains(from), "{file} has no `{from}`");
        text = text.replace(from, to);
    }
    std::fs::write(&path, text).expect("write config");
}

/// A daemon started from its unit, and the notify socket it reports to.
#[derive(Debug)]
pub struct Running {
    /// The process (the command of `ExecStart`, exec'd by the namespace's shell).
    pub proc: Logged,
    notify: UnixDatagram,
    /// Every notification so far.
    pub states: Vec<String>,
}

/// Starts `unit` from `root`: `ExecStart` with absolute paths under `root`, in `WorkingDirectory`,
/// `/` and `root` read-only, the state directory and a private temp folder (`TMPDIR`, for
/// `PrivateTmp=yes`) writable, `NOTIFY_SOCKET` and a 2 s `WATCHDOG_USEC`; no `ORT_DYLIB_PATH`
/// or `RUST_LOG`.
pub fn start(root: &Path, unit: &Unit) -> Running {
    let sock = root.with_extension("notify");
    let _ = std::fs::remove_file(&sock);
    let notify = UnixDatagram::bind(&sock).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let state = under(root, &unit.state);
    std::fs::create_dir_all(&state).expect("state dir");
    // `PrivateTmp=yes`: a temp folder of its own, writable (here through TMPDIR, as the root
    // itself lives under /tmp), rather than relying on what other processes left in /tmp.
    assert!(
        unit.text.contains("\nPrivateTmp=yes\n"),
        "the harness stands in for PrivateTmp=yes"
    );
    let tmp = root.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("private tmp");
    let argv: Vec<String> = unit
        .exec
        .iter()
        .map(|a| {
            if a.starts_with('/') {
                under(root, a).display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let script = r#"set -e
mount --bind "$1" "$1"
mount --bind "$2" "$2"
mount --bind "$3" "$3"
mount -o remount,bind,ro "$1"
mount -o remount,bind,ro /
shift 3
exec "$@""#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c", script, "sh"])
        .arg(root)
        .arg(&state)
        .arg(&tmp)
        .args(&argv)
        .current_dir(under(root, &unit.workdir))
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("RUST_LOG")
        .env("TMPDIR", &tmp)
        .env("NOTIFY_SOCKET", &sock)
        .env("WATCHDOG_USEC", "2000000");
    let (proc, _) = Logged::spawn(&mut cmd, Duration::ZERO, |_| None);
    Running {
        proc,
        notify,
        states: Vec::new(),
    }
}

impl Running {
    /// Waits up to `patience` for a notification containing `line`.
    pub fn wait_state(&mut self, line: &str, patience: Duration) -> bool {
        let t = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            if self.states.iter().any(|s| s.lines().any(|l| l == line)) {
                return true;
            }
            match self.notify.recv(&mut buf) {
                Ok(n) => self
                    .states
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => {
                    let exited = matches!(self.proc.child.try_wait(), Ok(Some(_)));
                    if exited || t.elapsed() > patience {
                        return false;
                    }
                }
            }
        }
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.proc.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("kill");
    }

    /// Waits up to `patience` for a log line containing `text`.
    pub fn wait_log(&self, text: &str, patience: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < patience {
            if self.proc.log_text().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// A file, its length and its modification time.
pub type FileStamp = (PathBuf, u64, std::time::SystemTime);

/// Every file under `root` but those under `skip`, with its length and modification time.
pub fn snapshot(root: &Path, skip: &[&Path]) -> Vec<FileStamp> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if skip.contains(&d.as_path()) {
            continue;
        }
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if skip.contains(&p.as_path()) {
                continue;
            }
            if m.is_dir() {
                stack.push(p);
            } else {
                out.push((p, m.len(), m.modified().expect("mtime")));
            }
        }
    }
    out.sort();
    out
}
