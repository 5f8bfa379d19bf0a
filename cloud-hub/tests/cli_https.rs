//! The operator's command line against a real hub serving HTTPS (`tandem-hub run`, its own
//! mosquitto, a simulated device cam-01 over MQTT): `fleet list|show|cmd`, `rollout status`
//! and `claim list` with an operator certificate, with the operator token (next to a device
//! certificate, as HTTPS requires one), and from environment variables; and each failure
//! naming what to fix with its exit code: the wrong CA, a revoked or expired certificate, no
//! certificate, a device's certificate (403), a subscriber's (401), plain HTTP against HTTPS,
//! nothing listening.

mod mqtt_kit;

use mqtt_kit::{answering_device, publish_online};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tandem_hub::pki::Pki;
use tandem_shared::mqtt::BrokerUrl;
use tandem_tests::daemon::Daemon;

const PATIENCE: Duration = Duration::from_secs(20);

/// The variables the client reads, cleared for every run so the test's environment counts
/// for nothing.
const ENV: [&str; 6] = [
    "TANDEM_HUB_URL",
    "TANDEM_HUB_CA",
    "TANDEM_HUB_CERT",
    "TANDEM_HUB_KEY",
    "TANDEM_HUB_TOKEN",
    "TANDEM_HUB_TOKEN_FILE",
];

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `tandem-hub ARGS` with the environment `env` (and none of [`ENV`] otherwise).
fn cli(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem-hub"));
    for v in ENV {
        cmd.env_remove(v);
    }
    cmd.args(args).envs(env.iter().copied());
    let out = tokio::task::block_in_place(|| cmd.output()).expect("run tandem-hub");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Asserts a failure with `code` whose message contains every one of `words`.
fn fails(o: &Outcome, code: i32, words: &[&str], what: &str) {
    eprintln!("{what}: {}", o.stderr.trim());
    assert_eq!(o.code, Some(code), "{what}: {}{}", o.stdout, o.stderr);
    for w in words {
        assert!(o.stderr.contains(w), "{what}: `{w}` not in: {}", o.stderr);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `tandem-hub ARGS` against `hub` trusting `ca`, with the client certificate `cert`, `key`.
fn as_identity(hub: &str, ca: &Path, (cert, key): (&Path, &Path), args: &[&str]) -> Outcome {
    let mut all = args.to_vec();
    all.extend([
        "--hub",
        hub,
        "--ca",
        path(ca),
        "--cert",
        path(cert),
        "--key",
        path(key),
    ]);
    cli(&all, &[])
}

/// `tandem-hub run` over a new PKI with HTTPS on a free port and its mosquitto on another;
/// returns the daemon, its HTTPS URL and the broker's URL.
fn start_hub(name: &str) -> (Daemon, String, BrokerUrl) {
    let (_, mqtt_port) = tandem_tests::net::free_ports();
    let mqtt = format!("listen = \"127.0.0.1:{mqtt_port}\"\nruntime_dir = \"run/mqtt\"");
    let hub = Daemon::hub_with(name, "tls = true", &mqtt);
    let base = hub.base.replace("http://", "https://");
    let url = BrokerUrl {
        host: "127.0.0.1".into(),
        port: mqtt_port,
    };
    (hub, base, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operator_command_works_over_https_and_failures_say_what_to_fix() {
    let (mut hub, base, mqtt) = start_hub("cli-https");
    let dir = hub.dir.to_path_buf();
    let pki = Pki::open(&dir.join("pki")).expect("pki");
    pki.add_device("cam-01", 30).expect("device");
    for o in ["alice", "mallory"] {
        pki.add_operator(o, 30).expect("operator");
    }
    pki.add_subscriber("dash", 30, &dir.join("subs"))
        .expect("subscriber");
    let day = time::Duration::days(1);
    pki.add_device_at("old", time::OffsetDateTime::now_utc() - 3 * day, 1)
        .expect("expired device");

    // cam-01 online over MQTT, answering commands.
    let dev = answering_device(&pki, &mqtt);
    publish_online(&dev).await;

    let ca = pki.dir().join("ca.pem");
    let (alice_cert, alice_key) = pki.operator_files("alice");
    let alice = (alice_cert.as_path(), alice_key.as_path());
    let operator = |args: &[&str]| as_identity(&base, &ca, alice, args);

    // fleet list: cam-01 shows up once the hub has its status.
    let t = std::time::Instant::now();
    let list = loop {
        let o = operator(&["fleet", "list"]);
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        if o.stdout.contains("cam-01") || t.elapsed() > PATIENCE {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let line = list.stdout.lines().next().unwrap_or_default().to_string();
    assert!(
        line.starts_with("cam-01")
            && line.contains("online")
            && line.contains("vision-fashion@1.0.0/cpu"),
        "{}",
        list.stdout
    );
    let show = operator(&["fleet", "show", "cam-01"]);
    assert_eq!(show.code, Some(0), "{}", show.stderr);
    let v: serde_json::Value = serde_json::from_str(&show.stdout).expect("JSON");
    assert_eq!(v["status"]["agent_version"], "0.1.0", "{v}");
    let cmd = operator(&[
        "fleet",
        "cmd",
        "cam-01",
        "set_threshold",
        "--args",
        r#"{"model":"vision-fashion","threshold":0.7,"signal":"margin"}"#,
    ]);
    assert_eq!(cmd.code, Some(0), "{}", cmd.stderr);
    assert!(cmd.stdout.contains("\"ok\": true"), "{}", cmd.stdout);
    // The device refuses another command: 422 with its result, a request error.
    let refused = operator(&["fleet", "cmd", "cam-01", "telemetry_now"]);
    fails(&refused, 65, &["422", "not here"], "a refused command");
    let unknown = operator(&["fleet", "show", "cam-99"]);
    fails(&unknown, 65, &["404", "cam-99"], "an unknown device");

    // The registry and evaluations on the running hub (whose stores only it may open).
    let o = operator(&["models", "list"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.contains("registry of the hub at https://"),
        "{}",
        o.stdout
    );
    let o = operator(&[
        "eval",
        "run",
        "--model",
        "vision-fashion",
        "--limit",
        "20",
        "--no-shifts",
        "--json",
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let report: serde_json::Value = serde_json::from_str(&o.stdout).expect("report JSON");
    let id = report["id"].as_str().expect("report id").to_string();
    assert_eq!(report["overall"]["n"], 20, "{report}");
    let o = operator(&["eval", "list", "--model", "vision-fashion"]);
    assert!(
        o.code == Some(0) && o.stdout.contains(&id),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = operator(&["eval", "show", &id]);
    assert!(
        o.code == Some(0) && o.stdout.contains("accuracy"),
        "{}{}",
        o.stdout,
        o.stderr
    );

    // The same through environment variables; rollout and claim too.
    let env = [
        ("TANDEM_HUB_URL", base.as_str()),
        ("TANDEM_HUB_CA", path(&ca)),
        ("TANDEM_HUB_CERT", path(&alice_cert)),
        ("TANDEM_HUB_KEY", path(&alice_key)),
    ];
    let o = cli(&["rollout", "status"], &env);
    assert_eq!(
        (o.code, o.stdout.trim()),
        (Some(0), "no rollouts"),
        "{}",
        o.stderr
    );
    let o = cli(&["claim", "list"], &env);
    assert_eq!(
        (o.code, o.stdout.trim()),
        (Some(0), "no claims"),
        "{}",
        o.stderr
    );

    // The operator token, next to a device's certificate (HTTPS wants one at the handshake).
    let (cam_cert, cam_key) = pki.device_files("cam-01");
    let token = tandem_tests::http::operator_token(pki.dir());
    let as_device = |token: Option<&str>| {
        let mut env = vec![
            ("TANDEM_HUB_URL", base.as_str()),
            ("TANDEM_HUB_CA", path(&ca)),
            ("TANDEM_HUB_CERT", path(&cam_cert)),
            ("TANDEM_HUB_KEY", path(&cam_key)),
        ];
        if let Some(t) = token {
            env.push(("TANDEM_HUB_TOKEN", t));
        }
        cli(&["fleet", "list"], &env)
    };
    let o = as_device(Some(&token));
    assert!(
        o.code == Some(0) && o.stdout.contains("cam-01"),
        "{}",
        o.stderr
    );
    fails(
        &as_device(None),
        77,
        &["403", "operator"],
        "a device certificate",
    );

    // What goes wrong, and what the message says to do.
    let other = Pki::init(&dir.join("other-pki")).expect("other pki");
    let list =
        |ca: &Path, identity: (&Path, &Path)| as_identity(&base, ca, identity, &["fleet", "list"]);
    fails(
        &list(&other.dir().join("ca.pem"), alice),
        77,
        &["not signed by the CA given", "--ca"],
        "the wrong CA",
    );
    pki.revoke_operator("mallory").expect("revoke");
    let (m_cert, m_key) = pki.operator_files("mallory");
    let t = std::time::Instant::now();
    let revoked = loop {
        // The hub applies the new CRL within its check interval.
        let o = list(&ca, (&m_cert, &m_key));
        if o.code != Some(0) || t.elapsed() > PATIENCE {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    fails(
        &revoked,
        77,
        &["revoked", "operator add"],
        "a revoked certificate",
    );
    let (old_cert, old_key) = pki.device_files("old");
    fails(
        &list(&ca, (&old_cert, &old_key)),
        77,
        &["expired"],
        "an expired certificate",
    );
    let (sub_cert, sub_key) =
        tandem_hub::pki::subscriber::subscriber_files(&dir.join("subs"), "dash");
    fails(
        &list(&ca, (&sub_cert, &sub_key)),
        77,
        &["401", "--cert/--key"],
        "a subscriber's certificate",
    );
    let no_cert = cli(&["fleet", "list", "--hub", &base, "--ca", path(&ca)], &[]);
    fails(
        &no_cert,
        77,
        &["requires a client certificate", "--cert"],
        "no certificate",
    );
    let plain = base.replace("https://", "http://");
    let o = cli(&["fleet", "list", "--hub", &plain], &[]);
    fails(&o, 69, &["https://"], "plain HTTP to HTTPS");
    let closed = format!("https://127.0.0.1:{}", tandem_tests::net::free_ports().1);
    let o = as_identity(&closed, &ca, alice, &["fleet", "list"]);
    fails(
        &o,
        69,
        &["cannot reach the hub", "is it running"],
        "nothing listening",
    );
    let o = list(&ca, (&alice_cert, &ca));
    fails(&o, 66, &["--key"], "a certificate as the key");

    let _ = hub.proc.terminate(PATIENCE);
}
