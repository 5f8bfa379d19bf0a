//! The Debian packages (`scripts/deb.sh`, a debug build for speed) unpacked into a temporary
//! root, each daemon run with its unit's exact `ExecStart` (paths under the root, the
//! config's state paths under the root and its ports free ones), `/` and the root read-only
//! but for the unit's state directory: it reports READY=1 and WATCHDOG=1 to the test's notify
//! socket, answers, reloads on SIGHUP (a bad config is refused and the old one kept), writes
//! nothing outside its state directory, and stops with status 0 on SIGTERM. The
//! `tandem-ep-openvino` package is installed and purged with the real dpkg (its own database in
//! the root), and the installed agent serves on OpenVINO from it.

mod install;

use install::{Running, deb, dpkg, prefix_config, snapshot, start, under, unit, unpack};
use rustix::process::Signal;
use std::path::Path;
use std::time::Duration;

const START: Duration = Duration::from_secs(240);

fn free_tcp() -> u16 {
    tandem_tests::net::free_ports().1
}

/// Checks common to both daemons once they run; returns their log for the caller's checks.
fn ready_and_fed(d: &mut Running) {
    assert!(
        d.wait_state("READY=1", START),
        "no READY=1; notifications {:?}; log:\n{}",
        d.states,
        d.proc.log_text()
    );
    assert!(
        d.wait_state("WATCHDOG=1", Duration::from_secs(20)),
        "no WATCHDOG=1 within 20 s of a 2 s watchdog; notifications {:?}",
        d.states
    );
}

/// The installed agent on `port` classifies the shipped vision-fashion sample (an ankle boot):
/// status and body.
fn classify_boot(root: &Path, port: u16) -> (u16, String) {
    let png = std::fs::read(under(
        root,
        "/var/lib/tandem/models/vision-fashion/samples/0_9.png",
    ))
    .expect("shipped sample");
    let r = reqwest::blocking::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/v1/classify/vision-fashion"
        ))
        .body(png)
        .send()
        .expect("classify");
    let status = r.status().as_u16();
    (status, r.text().unwrap_or_default())
}

/// SIGHUP, then a log line containing `line`.
fn hup_and_expect(d: &Running, line: &str) {
    d.signal(Signal::HUP);
    assert!(
        d.wait_log(line, Duration::from_secs(20)),
        "no `{line}` after SIGHUP:\n{}",
        d.proc.log_text()
    );
}

fn stops_cleanly(mut d: Running, root: &Path, skip: &[&Path], before: &[install::FileStamp]) {
    // One SIGTERM (a second one would be the documented exit-at-once, status 130).
    let status = d.proc.terminate(Duration::from_secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "SIGTERM: exit status; log:\n{}",
        d.proc.log_text()
    );
    assert!(d.wait_state("STOPPING=1", Duration::ZERO), "{:?}", d.states);
    assert_eq!(
        snapshot(root, skip),
        before,
        "files outside the state directory changed"
    );
}

#[test]
fn agent_package_runs_as_its_unit_says() {
    let root = unpack("pkg-agent", &["tandem-onnxruntime", "tandem-agent"]);
    let u = unit(&root, "tandem-agent.service");
    assert_eq!(u.exec[0], "/usr/bin/tandem-agent", "{:?}", u.exec);
    assert!(
        !u.text.contains("RUST_LOG"),
        "the unit must not override [log] filter"
    );
    let port = free_tcp();
    let conf = "/etc/tandem/agent.toml";
    prefix_config(
        &root,
        conf,
        &[("127.0.0.1:8470", format!("127.0.0.1:{port}"))],
    );
    let (state, cfg_path) = (under(&root, &u.state), under(&root, conf));
    let skip = [state.as_path(), cfg_path.as_path()];
    let before = snapshot(&root, &skip);
    let mut d = start(&root, &u);
    ready_and_fed(&mut d);
    let (s, body) = classify_boot(&root, port);
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("Ankle boot"), "{body}");
    assert!(
        state.join("queue").is_dir(),
        "the queue lives in the state directory"
    );
    assert!(
        d.proc
            .log_text()
            .contains(&format!("{}/usr/lib/tandem/", root.display())),
        "ONNX Runtime from the package, found without ORT_DYLIB_PATH:\n{}",
        d.proc.log_text()
    );

    // SIGHUP: the routing policy and the log filter come from the file again.
    let good = std::fs::read_to_string(&cfg_path).expect("config");
    let changed = good.replace("filter = \"info,ort=warn\"", "filter = \"debug,ort=warn\"")
        + "\n[policy]\nmode = \"local\"\n";
    std::fs::write(&cfg_path, &changed).expect("edit config");
    hup_and_expect(&d, "routing policy reloaded");
    assert!(
        d.wait_log("log filter changed", Duration::from_secs(5)),
        "{}",
        d.proc.log_text()
    );
    // A bad file is refused; the running config stays and the agent keeps answering.
    std::fs::write(
        &cfg_path,
        changed.replace("mode = \"local\"", "mode = \"sideways\""),
    )
    .expect("edit");
    hup_and_expect(&d, "config not reloaded: the running one is kept");
    assert_eq!(classify_boot(&root, port).0, 200);
    stops_cleanly(d, &root, &skip, &before);
    install::done(&root);
}

#[test]
fn hub_package_runs_as_its_unit_says() {
    let root = unpack("pkg-hub", &["tandem-onnxruntime", "tandem-hub"]);
    let u = unit(&root, "tandem-hub.service");
    assert_eq!(u.exec[0], "/usr/bin/tandem-hub", "{:?}", u.exec);
    assert!(
        !u.text.contains("RUST_LOG"),
        "the unit must not override log_filter"
    );
    let (http, quic) = (free_tcp(), tandem_tests::net::free_ports().0);
    let conf = "/etc/tandem/hub.toml";
    prefix_config(
        &root,
        conf,
        &[
            ("127.0.0.1:8480", format!("127.0.0.1:{http}")),
            ("127.0.0.1:8471", format!("127.0.0.1:{quic}")),
            ("127.0.0.1:8883", "127.0.0.1:0".to_string()),
        ],
    );
    let state = under(&root, &u.state);
    // What the package's postinst does: a first PKI in the state directory.
    let init = std::process::Command::new(under(&root, "/usr/bin/tandem-hub"))
        .args(["init", "--dir"])
        .arg(state.join("pki"))
        .output()
        .expect("tandem-hub init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let cfg_path = under(&root, conf);
    let skip = [state.as_path(), cfg_path.as_path()];
    let before = snapshot(&root, &skip);
    let mut d = start(&root, &u);
    ready_and_fed(&mut d);
    let body = serde_json::json!({"inputs": [{
        "name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
        "data": vec![0.5f32; 784],
    }]});
    let r = reqwest::blocking::Client::new()
        .post(format!(
            "http://127.0.0.1:{http}/v2/models/vision-fashion/infer"
        ))
        .json(&body)
        .send()
        .expect("infer");
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("outputs"), "{text}");
    assert!(
        state.join("mqtt").is_dir() && state.join("fleet").is_dir(),
        "broker and fleet state in the state directory"
    );

    let good = std::fs::read_to_string(&cfg_path).expect("config");
    std::fs::write(
        &cfg_path,
        good.replace(
            "log_filter = \"info,ort=warn\"",
            "log_filter = \"debug,ort=warn\"",
        ),
    )
    .expect("edit");
    hup_and_expect(&d, "log filter changed");
    std::fs::write(
        &cfg_path,
        good.replace("log_filter = \"info,ort=warn\"", "log_filter = \"info,[=\""),
    )
    .expect("edit");
    hup_and_expect(&d, "config not reloaded: the running one is kept");
    stops_cleanly(d, &root, &skip, &before);
    install::done(&root);
}

/// `dpkg --root` succeeded; its output otherwise.
fn dpkg_ok(root: &Path, args: &[&std::ffi::OsStr]) {
    let out = dpkg(root, args);
    assert!(
        out.status.success(),
        "dpkg {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn openvino_plugin_package_installs_serves_on_openvino_and_purges_cleanly() {
    let root = unpack("pkg-ep", &["tandem-agent"]);
    let (ort, ep) = (deb("tandem-onnxruntime"), deb("tandem-ep-openvino"));
    // The runtime through dpkg too (libc6 and libstdc++6 are not in the root's database); the
    // plugin's own dependency on it is then checked for real.
    dpkg_ok(
        &root,
        &["--force-depends".as_ref(), "-i".as_ref(), ort.as_os_str()],
    );
    let u = unit(&root, "tandem-agent.service");
    let port = free_tcp();
    let conf = "/etc/tandem/agent.toml";
    prefix_config(
        &root,
        conf,
        &[
            ("127.0.0.1:8470", format!("127.0.0.1:{port}")),
            // As README "Accelerators" says for an Intel device, the CPU EP as the fallback.
            (
                "[runtime]\n",
                "[runtime]\nexecution_providers = [\"openvino\", \"cpu\"]\n".to_string(),
            ),
        ],
    );
    let (state, cfg_path, admin) = (
        under(&root, &u.state),
        under(&root, conf),
        under(&root, "/var/lib/dpkg"),
    );
    let skip = [state.as_path(), cfg_path.as_path(), admin.as_path()];
    let without_plugin = snapshot(&root, &skip);

    dpkg_ok(&root, &["-i".as_ref(), ep.as_os_str()]);
    let dir = under(&root, "/usr/lib/tandem/ep/openvino");
    let lib = dir.join("libonnxruntime_providers_openvino_plugin.so");
    assert!(lib.is_file(), "{} not installed", lib.display());
    assert!(
        !dir.join(".wheel-sha256").exists(),
        "provisioning stamps stay out of the package"
    );
    let before = snapshot(&root, &skip);
    let mut d = start(&root, &u);
    ready_and_fed(&mut d);
    let log = d.proc.log_text();
    assert!(
        log.contains("execution-provider plugin registered")
            && log.contains(&dir.display().to_string()),
        "the plugin from the package's folder, found without runtime.ep_plugins:\n{log}"
    );
    let (status, body) = classify_boot(&root, port);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Ankle boot"), "{body}");
    let meta: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/v2/models/vision-fashion"))
        .send()
        .and_then(|r| r.json())
        .expect("model metadata");
    // OpenVINO's plugin offers the CPU device on Intel CPUs only: elsewhere the package's
    // plugin must be found, registered and passed over with its reason, the CPU serving.
    let intel = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .any(|l| l.starts_with("vendor_id") && l.contains("GenuineIntel"))
    });
    assert_eq!(
        meta["parameters"]["execution_provider"],
        if intel { "openvino" } else { "cpu" },
        "{meta}\n{}",
        d.proc.log_text()
    );
    if !intel {
        let first = &meta["parameters"]["execution_providers_measured"][0];
        assert_eq!(first["ep"], "openvino", "{meta}");
        assert!(
            first["error"]
                .as_str()
                .is_some_and(|e| e.contains("offers no cpu device on this machine")),
            "{meta}"
        );
        eprintln!("not an Intel CPU: the packaged plugin was passed over as it must be");
    }
    stops_cleanly(d, &root, &skip, &before);

    // Purged: not one file of the plugin left, the rest of the installation as it was.
    dpkg_ok(&root, &["--purge".as_ref(), "tandem-ep-openvino".as_ref()]);
    assert!(
        !under(&root, "/usr/lib/tandem/ep").exists(),
        "dpkg --purge left {:?}",
        std::fs::read_dir(under(&root, "/usr/lib/tandem/ep")).map(|r| r.count())
    );
    assert_eq!(snapshot(&root, &skip), without_plugin);
    let status = dpkg(&root, &["-s".as_ref(), "tandem-ep-openvino".as_ref()]);
    assert!(!status.status.success(), "still known to dpkg after purge");
    install::done(&root);
}
