//! A hub that is killed (SIGKILL: no chance to stop its broker) takes its mosquitto with it.
//!
//! The "hub" is this test binary started again (`hub_process`): it starts `broker::Broker`
//! from a tokio blocking thread that then idles out and exits (as tokio's threads do), writes
//! mosquitto's pid and waits. The test checks that mosquitto outlives that thread, kills the
//! hub process with SIGKILL, and waits for mosquitto to be gone.

mod broker_kit;

use broker_kit::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tandem_hub::broker::Broker;

/// The runtime folder of the hub process's broker (set: this binary is the hub process).
const RUNTIME_ENV: &str = "TANDEM_TEST_BROKER_RUNTIME";
/// Its PKI folder.
const PKI_ENV: &str = "TANDEM_TEST_BROKER_PKI";

/// Whether `pid` runs (a zombie waiting for its reaper counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Not a test on its own: the hub process of [`a_killed_hub_takes_its_broker_with_it`].
#[test]
#[ignore = "the hub process of a_killed_hub_takes_its_broker_with_it, which starts it"]
fn hub_process() {
    let (Ok(runtime), Ok(pki)) = (std::env::var(RUNTIME_ENV), std::env::var(PKI_ENV)) else {
        return;
    };
    // Blocking threads exit 100 ms after their last job.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_keep_alive(Duration::from_millis(100))
        .enable_all()
        .build()
        .expect("runtime");
    let mut spec = spec_at(Path::new(&pki), Path::new(&runtime));
    spec.crl_check = Duration::from_secs(60);
    let handle = rt.handle().clone();
    let broker = rt.block_on(async move {
        tokio::task::spawn_blocking(move || handle.block_on(Broker::start(spec)))
            .await
            .expect("the blocking thread")
            .expect("mosquitto starts")
    });
    let pid = broker.stats().pid().expect("mosquitto runs");
    std::fs::write(Path::new(&runtime).join("test-broker.pid"), pid.to_string()).expect("write");
    rt.block_on(std::future::pending::<()>());
}

#[test]
fn a_killed_hub_takes_its_broker_with_it() {
    let s = setup(&[]);
    std::fs::create_dir_all(&s.runtime).expect("runtime dir");
    let pid_file: PathBuf = s.runtime.join("test-broker.pid");
    let mut hub = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["hub_process", "--exact", "--ignored", "--nocapture"])
        .env(RUNTIME_ENV, &s.runtime)
        .env(PKI_ENV, s.pki.dir())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the hub process");
    let t = Instant::now();
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
        {
            break pid;
        }
        assert!(
            hub.try_wait().expect("wait").is_none(),
            "the hub process ended"
        );
        assert!(t.elapsed() < PATIENCE, "no broker pid from the hub process");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The thread that started it has idled out by now; the broker must not have gone with it.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        alive(pid),
        "mosquitto {pid} died with the thread that started it"
    );

    hub.kill().expect("SIGKILL the hub process");
    hub.wait().expect("reap the hub process");
    let t = Instant::now();
    while alive(pid) {
        if t.elapsed() > PATIENCE {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("mosquitto {pid} outlived its killed hub");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
