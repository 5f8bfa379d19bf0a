//! The console's steering pages against the real fleet: a rollout started, aborted and rolled
//! back from the rollouts page (the agent follows: the API shows the version it serves), and a
//! correction made in the feedback gallery (the store holds it, linked to what it corrects).

use super::{DEVICE, FIRST, NEXT, OFFLINE, PAGE_PATIENCE, PATIENCE, clean_and_shot, open};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use tandem_tests::browser::Tab;
use tandem_tests::fleet::{Daemon, Fleet, MODEL};

/// Versions [`FIRST`] and [`NEXT`] of [`MODEL`] in the hub's registry (packed from the
/// shipped model, signed and stored by the hub's CLI).
pub fn registry(fleet: &Fleet) {
    let model_dir = tandem_tests::models_dir().join(MODEL);
    let config = fleet.dir.join("hub/hub.toml");
    for version in [FIRST, NEXT] {
        let bundle = fleet.dir.join(format!("bundle-{version}"));
        let bundle = bundle.display().to_string();
        let model_dir = model_dir.display().to_string();
        let config = config.display().to_string();
        fleet.hub_cli(&[
            "models",
            "pack",
            &model_dir,
            &bundle,
            "--version",
            version,
            "--expected",
            "testdata",
        ]);
        fleet.hub_cli(&["models", "push", &bundle, "--config", &config]);
    }
}

/// [`OFFLINE`] says it is online (its own certificate, `mosquitto_pub` from the agent's host),
/// then that it shut down: the hub knows it, as an offline device.
pub fn offline_device(fleet: &Fleet) {
    for status in [
        r#"{"v": 1, "state": "online", "ts_ms": 1764518400000, "agent_version": "0.1.0", "models": [{"name": "vision-fashion", "version": "1.0.0", "variant": "edge", "ep": "cpu"}]}"#,
        r#"{"v": 1, "state": "offline", "ts_ms": 1764518401000, "reason": "shutdown"}"#,
    ] {
        fleet.publish_as("cam", OFFLINE, &format!("tandem/{OFFLINE}/status"), status);
    }
}

/// The version of [`MODEL`] `device` serves, as `GET /v1/fleet` shows it.
async fn served(fleet: &Fleet, hub: &Daemon, device: &str) -> Option<String> {
    let list = fleet.get_json(hub, "/v1/fleet").await?;
    let entry = list["devices"]
        .as_array()?
        .iter()
        .find(|d| d["device"] == device)?
        .clone();
    entry["models"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == MODEL)
        .and_then(|m| m["version"].as_str().map(str::to_string))
}

/// Waits until `what` (a JSON value from the hub) passes `ok`; the value.
async fn until_api<F, Fut>(
    what: &str,
    hub: &Daemon,
    mut get: F,
    ok: impl Fn(&Value) -> bool,
) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let until = Instant::now() + PATIENCE;
    loop {
        let got = get().await;
        if let Some(v) = got.as_ref().filter(|v| ok(v)) {
            return v.clone();
        }
        assert!(
            Instant::now() < until,
            "{what}: last {got:?}\nhub:\n{}",
            hub.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Clicks `selector`, again if the page redrew the element between finding and clicking it
/// (the rollouts page redraws every 3 s).
async fn click(tab: &Tab, selector: &str) {
    let mut last = String::new();
    for _ in 0..5 {
        match tab.click(selector).await {
            Ok(()) => return,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{last}");
}

async fn page_state(tab: &Tab, id: &str, state: &str) {
    let js = format!(
        "(document.querySelector('[data-testid=rollout-row][data-rollout=\"{id}\"] \
         [data-testid=rollout-state]') || {{}}).textContent === '{state}'"
    );
    tab.wait_js(&js, PAGE_PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("rollout {id} shown {state}: {e}"));
}

/// Start, abort and roll back from the rollouts page; the agent follows each.
pub async fn rollout(fleet: &Fleet, hub: &Daemon, tab: &Tab, base: &str, shots: &Path) {
    open(tab, base, "/rollouts").await;
    for (name, value) in [
        ("model", MODEL),
        ("version", NEXT),
        ("canary", "100"),
        ("stages", "100"),
        ("group", ""),
    ] {
        tab.fill(
            &format!("[data-testid=rollout-form] input[name={name}]"),
            value,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    tab.click("[data-testid=rollout-create]")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let id = format!("{MODEL}-{NEXT}-1");
    let api = format!("/v1/rollouts/{id}");

    // The agent installs the version; the rollout runs on (the offline device is a target
    // that cannot be commanded).
    let version = until_api(
        &format!("{DEVICE} serving {NEXT}"),
        hub,
        || async { served(fleet, hub, DEVICE).await.map(Value::from) },
        |v| v == NEXT,
    )
    .await;
    assert_eq!(version, NEXT);
    let r = fleet.get_json(hub, &api).await.expect("the rollout");
    assert_eq!(r["phase"]["state"], "running", "{r}");
    assert!(r["targets"][DEVICE]["commanded_ms"].is_u64(), "{r}");
    assert!(r["targets"][OFFLINE]["commanded_ms"].is_null(), "{r}");
    page_state(tab, &id, "running (stage 1)").await;

    // Abort from the page.
    let row = format!("[data-testid=rollout-row][data-rollout=\"{id}\"]");
    click(tab, &format!("{row} [data-testid=rollout-abort]")).await;
    until_api(
        &format!("{id} aborted"),
        hub,
        || fleet.get_json(hub, &api),
        |r| r["phase"]["state"] == "aborted",
    )
    .await;
    page_state(tab, &id, "aborted").await;

    // Roll back from the page: an ordered rollback to the version before, which the agent
    // installs.
    click(tab, &format!("{row} [data-testid=rollout-rollback]")).await;
    let back = format!("/v1/rollouts/{MODEL}-{FIRST}-1");
    let r = until_api(
        "the rollback succeeded",
        hub,
        || fleet.get_json(hub, &back),
        |r| r["phase"]["state"] == "succeeded",
    )
    .await;
    assert_eq!(r["spec"]["rollback"], true, "{r}");
    assert_eq!(served(fleet, hub, DEVICE).await.as_deref(), Some(FIRST));
    page_state(tab, &format!("{MODEL}-{FIRST}-1"), "succeeded").await;

    // The aborted rollout keeps following its devices: the agent runs FIRST again, so its row
    // no longer counts it active.
    let r = until_api(
        &format!("{id} no longer counts {DEVICE} active"),
        hub,
        || fleet.get_json(hub, &api),
        |r| r["targets"][DEVICE]["outcome"]["state"] == "pending",
    )
    .await;
    assert_eq!(r["phase"]["state"], "aborted", "{r}");
    let js = format!(
        "(document.querySelector('{row} [data-testid=rollout-stage]') || {{}}).textContent \
         === 'stage 1 (100 %): 2 devices, 0 active, 2 without it, 0 failed'"
    );
    tab.wait_js(&js, PAGE_PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("the aborted row's counts: {e}"));
    clean_and_shot(tab, shots, "rollouts").await;
}

/// Every record in the feedback store (`GET /v1/feedback/records`, all pages).
async fn records(fleet: &Fleet, hub: &Daemon) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = fleet
            .get_json(
                hub,
                &format!("/v1/feedback/records?after={after}&limit=1000"),
            )
            .await
            .expect("the feedback records");
        all.extend(page["items"].as_array().cloned().unwrap_or_default());
        after = page["cursor"].as_u64().expect("a cursor");
        if page["more"] != true {
            return all;
        }
    }
}

/// A label corrected in the gallery is a correction in the feedback store.
pub async fn feedback(fleet: &Fleet, hub: &Daemon, tab: &Tab, base: &str, shots: &Path) {
    open(tab, base, "/feedback").await;
    let first = tab
        .eval(
            "(() => { const e = document.querySelector('[data-testid=example]'); \
             return e && [e.dataset.record, \
             e.querySelector('[data-testid=correct-label]').value]; })()",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let record = first[0]
        .as_str()
        .expect("an example in the gallery")
        .to_string();
    let label = if first[1] == "Bag" { "Sandal" } else { "Bag" };
    let card = format!("[data-testid=example][data-record=\"{record}\"]");
    tab.fill(&format!("{card} [data-testid=correct-label]"), label)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tab.click(&format!("{card} [data-testid=correct-submit]"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let saved = tab
        .wait_js(
            &format!(
                "(s => s && s.textContent === 'saved' && s.dataset.correction)\
                 (document.querySelector('{card} [data-testid=example-status]'))"
            ),
            PAGE_PATIENCE,
        )
        .await
        .unwrap_or_else(|e| panic!("the correction saved: {e}"));
    let correction = saved.as_str().expect("the correction's id").to_string();
    clean_and_shot(tab, shots, "feedback").await;

    let all = records(fleet, hub).await;
    let stored = all
        .iter()
        .find(|r| r["id"] == correction.as_str())
        .unwrap_or_else(|| panic!("{correction} not in the store: {all:#?}"));
    assert_eq!(stored["example"]["kind"], "correction", "{stored}");
    assert_eq!(stored["example"]["label"], label, "{stored}");
    let original = all
        .iter()
        .find(|r| r["id"] == record.as_str())
        .expect("the corrected record");
    let by = original["corrected_by"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(by.contains(&Value::from(correction.as_str())), "{original}");
}
