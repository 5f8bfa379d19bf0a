//! Logs and metrics as operators' tools read them (issue 16 items 3 and 4, issue 15 item 4),
//! on the real daemons: a hub (with its mosquitto) and an agent in two network namespaces,
//! both with `[log] format = "json"`, one request offloaded from the agent to the hub.
//!
//! - Every line either daemon writes parses as JSON, and the request's lines carry `device`,
//!   `model` and `request_id` on both sides (agent: engine and router; hub: serving).
//! - Both `/metrics` have the `process_*` families with values `/proc` agrees with, and
//!   `tandem_build_info{version, commit}` naming this checkout's commit.
//! - A second device (`mosquitto_pub` with its own certificate) sends telemetry whose model
//!   names and outcomes hold quotes, backslashes and line feeds; the hub's whole scrape, and
//!   the agent's, still read with the Prometheus client's parser (`prometheus_client`, in
//!   `.venv` from `make setup`) and a check that each family is declared once with its samples
//!   together, and the odd labels come back exactly as the device sent them.

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tandem_tests::fleet::{Daemon, Fleet, MODEL, samples};
use tandem_tests::repo;

const PATIENCE: Duration = Duration::from_secs(60);
const ODD_MODEL: &str = "we\"ird\\model\nname";
const ODD_OUTCOME: &str = "bad \"input\"\\\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_process_metrics_and_odd_labels_on_the_real_daemons() {
    tokio::time::timeout(Duration::from_secs(300), scenario())
        .await
        .expect("the scenario within 300 s");
}

async fn scenario() {
    let fleet = Fleet::new("observability", "hub", &["cam", "odd"]);
    fleet.add_device("cam-01");
    fleet.add_device("odd-01");
    let hub = fleet.start_hub(&[
        (
            "",
            "log_filter = \"info,tandem_hub=debug,tandem_engine=debug,ort=warn\"",
        ),
        ("log", "format = \"json\""),
    ]);
    let agent = fleet.start_agent(
        "cam",
        "cam-01",
        &[
            (
                "log",
                "filter = \"info,tandem_agent=debug,tandem_engine=debug,ort=warn\"",
            ),
            ("log", "format = \"json\""),
        ],
    );

    // One request, offloaded (the rig's agents offload everything: threshold 2.0).
    let image = samples().remove(0);
    let answer = poll("an answer from the hub", PATIENCE, || async {
        let (status, body) = fleet
            .post(&agent, &format!("/v1/classify/{MODEL}"), image.clone())
            .await
            .ok()?;
        let v: Value = serde_json::from_slice(&body).ok()?;
        (status == 200 && v["route"] == "cloud").then_some(v)
    })
    .await;
    let rid = answer["request_id"]
        .as_str()
        .expect("request_id")
        .to_string();
    let on_request = |d: &Daemon, target: &'static str| {
        lines(d).into_iter().find(|l| {
            l["request_id"] == rid.as_str()
                && l["target"].as_str().is_some_and(|t| t.starts_with(target))
        })
    };
    poll("the request's lines on both sides", PATIENCE, || async {
        (on_request(&hub, "tandem_hub::serving").is_some()
            && on_request(&agent, "tandem_agent::hybrid").is_some())
        .then_some(())
    })
    .await;
    for (d, targets) in [
        (&agent, &["tandem_agent::hybrid", "tandem_engine"][..]),
        (&hub, &["tandem_hub::serving", "tandem_engine"][..]),
    ] {
        for t in targets {
            let l = on_request(d, t).unwrap_or_else(|| {
                panic!(
                    "no line of {t} with request_id {rid} in {}:\n{}",
                    d.host,
                    d.log_text()
                )
            });
            assert_eq!(l["device"], "cam-01", "{l}");
            assert_eq!(l["model"], MODEL, "{l}");
            assert_eq!(l["span"], "request", "{l}");
            for key in ["timestamp", "level", "message"] {
                assert!(l[key].is_string(), "{key} in {l}");
            }
        }
    }

    // The odd device's telemetry reaches the hub's scrape.
    let telemetry = odd_telemetry();
    fleet.publish_as("odd", "odd-01", "tandem/odd-01/telemetry", &telemetry);
    let hub_text = poll("the odd device in the hub's /metrics", PATIENCE, || async {
        let text = scrape(&fleet, &hub).await?;
        text.contains("device=\"odd-01\"").then_some(text)
    })
    .await;
    let agent_text = scrape(&fleet, &agent).await.expect("the agent's /metrics");

    for (who, text) in [("hub", &hub_text), ("agent", &agent_text)] {
        let parsed = parse_strictly(who, text);
        process_families(who, &parsed);
        let build = &parsed["tandem_build_info"];
        assert_eq!(build.len(), 1, "{who}: {build:?}");
        assert_eq!(build[0].0["version"], "0.1.0", "{who}");
        assert_eq!(
            build[0].0["commit"],
            head_commit(),
            "{who}: the binary is from another commit than HEAD (run `cargo build --workspace --bins`)"
        );
        if who == "hub" {
            let odd: Vec<_> = parsed["tandem_hub_fleet_inferences_total"]
                .iter()
                .filter(|(l, _)| l["device"] == "odd-01")
                .collect();
            let want = BTreeSet::from([
                (ODD_MODEL.to_string(), ODD_OUTCOME.to_string(), 5),
                (ODD_MODEL.to_string(), "ok".to_string(), 7),
            ]);
            let got: BTreeSet<_> = odd
                .iter()
                .map(|(l, v)| (l["model"].clone(), l["outcome"].clone(), *v as u64))
                .collect();
            assert_eq!(got, want, "{hub_text}");
        } else {
            let mine = &parsed["tandem_route_answers_total"];
            assert!(
                mine.iter()
                    .any(|(l, v)| l["model"] == MODEL && l["route"] == "cloud" && *v >= 1.0),
                "{mine:?}"
            );
        }
    }
}

/// The first `Some` of `f`, tried every 200 ms for up to `patience` (the test fails after).
async fn poll<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    patience: Duration,
    mut f: impl FnMut() -> Fut,
) -> T {
    let until = std::time::Instant::now() + patience;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < until,
            "{what}: not within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every stderr line of `d` as JSON (a line that is not fails the test).
fn lines(d: &Daemon) -> Vec<Value> {
    d.log_text()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| {
                    panic!("{}: a log line that is not a JSON object: {l:?}", d.host)
                })
        })
        .collect()
}

async fn scrape(fleet: &Fleet, d: &Daemon) -> Option<String> {
    match fleet.get(d, "/metrics").await {
        Ok((200, body)) => String::from_utf8(body).ok(),
        _ => None,
    }
}

/// The fixture telemetry with one model named [`ODD_MODEL`] whose outcomes include
/// [`ODD_OUTCOME`].
fn odd_telemetry() -> String {
    let path = repo().join("shared/tests/fixtures/mqtt/telemetry.json");
    let mut t: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
    let mut m = t["models"][MODEL].take();
    m["inferences"] = json!({ "ok": 7, ODD_OUTCOME: 5 });
    t["models"] = json!({ ODD_MODEL: m });
    t["routes"] = json!([]);
    t.to_string()
}

/// Samples by family: `(labels, value)`.
type Families = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

/// `text` through `prometheus_client.parser` (the whole scrape or the test fails), after a
/// check the parser does not make: each family's `# TYPE` once, its samples right after it.
fn parse_strictly(who: &str, text: &str) -> Families {
    let mut declared = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default().to_string();
            assert!(
                declared.insert(name.clone()),
                "{who}: family {name} declared twice"
            );
            current = Some(name);
        } else if !line.starts_with('#') && !line.is_empty() {
            let family = current.as_deref().unwrap_or_default();
            assert!(
                !family.is_empty() && line.starts_with(family),
                "{who}: sample outside its family ({family}): {line:?}"
            );
        }
    }
    let script = "import json, sys\n\
        from prometheus_client.parser import text_string_to_metric_families as parse\n\
        out = {}\n\
        for f in parse(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       out.setdefault(s.name, []).append([s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let mut child = std::process::Command::new(repo().join(".venv/bin/python"))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(".venv/bin/python (make setup)");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("to the parser");
    }
    let out = child.wait_with_output().expect("the parser");
    assert!(
        out.status.success(),
        "{who}: the Prometheus parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Keyed by sample name (the parser names a counter's family without `_total`).
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

/// The `process_*` families, checked against this machine's `/proc`.
fn process_families(who: &str, f: &Families) {
    let one = |name: &str| -> f64 {
        let s = f.get(name).unwrap_or_else(|| panic!("{who}: no {name}"));
        assert_eq!(s.len(), 1, "{who}: {name}: {s:?}");
        s[0].1
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let start = one("process_start_time_seconds");
    assert!(
        start > now - 600.0 && start <= now + 1.0,
        "{who}: started at {start}, now {now}"
    );
    assert!(one("process_cpu_seconds_total") > 0.0, "{who}");
    assert!(
        one("process_resident_memory_bytes") > 8.0 * 1024.0 * 1024.0,
        "{who}"
    );
    let (open, max) = (one("process_open_fds"), one("process_max_fds"));
    assert!(open >= 3.0 && open <= max, "{who}: {open} of {max}");
}

/// The commit the daemons were built from: `$TANDEM_BUILD_COMMIT` when set, else `git
/// rev-parse --short=12 HEAD` of the checkout, or `unknown` outside one.
fn head_commit() -> String {
    if let Ok(c) = std::env::var("TANDEM_BUILD_COMMIT")
        && !c.trim().is_empty()
    {
        return c.trim().to_string();
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
