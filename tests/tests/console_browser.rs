//! The fleet console in a real browser (issue 15 item 2): headless Debian Chromium, driven
//! over the DevTools protocol, against a hub (with its mosquitto) and an agent in two network
//! namespaces, the agent offloading every request over QUIC and reporting telemetry over MQTT.
//! The browser runs in the hub's host and opens the console on the hub's loopback API.
//!
//! One scenario, one browser (a start costs about a second), two devices: `cam-01` (the agent,
//! installing versions into its own model folder) and `cam-02` (one status over MQTT, then
//! offline), and the registry holding vision-fashion 1.0.0 and 1.0.1:
//! - an unauthenticated visit to each page ends on the login page, no `/v1` data request
//!   succeeds and no device id is in the document;
//! - the login page takes the operator's token; every page then loads (`data-ready`) with no
//!   console error, no uncaught exception and no failed load;
//! - the fleet page lists both devices and its search narrows the list;
//! - the device page's plots draw from the agent's real telemetry (the offloads the agent made
//!   are the bars of the route plot) with the model version marked; it offers a snapshot of
//!   the camera the agent streams (a button per camera its telemetry lists), and a click
//!   shows the agent's answer through the hub (a classification camera keeps no snapshot:
//!   its 404, in the agent's words);
//! - the models page lists the registry's versions;
//! - [`steer`]: a rollout started from the rollouts page reaches the agent (the API shows it
//!   serving 1.0.1), is aborted from the page, and the page's rollback brings the agent back
//!   to 1.0.0; a label corrected in the feedback gallery is a correction in the store.
//!
//! Screenshots of every page go to a scratch folder whose path the test prints.

#[path = "console_browser/steer.rs"]
mod steer;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tandem_tests::browser::{Chromium, Tab};
use tandem_tests::fleet::{Daemon, Fleet, MODEL, samples};

/// Longest wait for the agent's answers and telemetry, and for a page to be ready.
const PATIENCE: Duration = Duration::from_secs(60);
const PAGE_PATIENCE: Duration = Duration::from_secs(20);
/// Offloaded requests the agent serves before the device page is opened.
const REQUESTS: u64 = 3;
/// The camera whose frame the agent offloads too (one more bar in the route plot).
const CAMERA: &str = "porch-1";
/// Offloads in all: the requests and the camera's frame.
const OFFLOADED: u64 = REQUESTS + 1;
/// The agent's device.
const DEVICE: &str = "cam-01";
/// A device that reported once, then went offline (a rollout target never commanded).
const OFFLINE: &str = "cam-02";
/// The version the agent serves, and the one the rollout brings.
const FIRST: &str = "1.0.0";
const NEXT: &str = "1.0.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    tokio::time::timeout(Duration::from_secs(300), scenario())
        .await
        .expect("the scenario within 300 s");
}

async fn scenario() {
    let fleet = Fleet::new("console", "hub", &["cam"]);
    fleet.add_device(DEVICE);
    fleet.add_device(OFFLINE);
    let hub = fleet.start_hub(&[]);
    tokio::task::block_in_place(|| steer::registry(&fleet));
    let models = format!("dir = \"{}\"", fleet.models_copy("models-cam").display());
    let key = format!(
        "trusted_key = \"{}\"",
        fleet.pki().join("signing.pub").display()
    );
    let agent = fleet.start_agent(
        "cam",
        DEVICE,
        &[
            ("models", &models),
            ("models", &key),
            ("models", "watch_window_s = 1"),
        ],
    );
    steer::offline_device(&fleet);
    serve_and_report(&fleet, &hub, &agent).await;

    // Kept after the test, for a person to look at.
    let shots = tandem_tests::scratch("console-screenshots").keep();
    println!("console screenshots: {}", shots.display());
    let profile = fleet.dir.join("chromium");
    let cmd = Chromium::command_in(&fleet.rig, "hub", &profile);
    let browser = fleet
        .rig
        .on("hub", Chromium::start(cmd, profile))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tab = browser.tab().await.unwrap_or_else(|e| panic!("{e}"));
    let base = format!("{}/console", hub.http);

    unauthenticated(&tab, &base, &shots).await;
    login(&fleet, &tab).await;
    fleet_page(&tab, &base, &shots).await;
    device_page(&tab, &base, &shots, &[FIRST]).await;
    models_page(&tab, &base, &shots).await;
    steer::rollout(&fleet, &hub, &tab, &base, &shots).await;
    device_page(&tab, &base, &shots, &[FIRST, NEXT]).await;
    steer::feedback(&fleet, &hub, &tab, &base, &shots).await;
    drop(tab);
    drop(browser);
}

/// The agent answers [`REQUESTS`] offloaded requests, and the hub's series for the device
/// counts them (the device page's plots draw from it).
async fn serve_and_report(fleet: &Fleet, hub: &Daemon, agent: &Daemon) {
    let image = samples().remove(0);
    let until = Instant::now() + PATIENCE;
    let mut answered = 0;
    while answered < REQUESTS {
        assert!(Instant::now() < until, "{answered} answers from the hub");
        if let Ok((200, body)) = fleet
            .post(agent, &format!("/v1/classify/{MODEL}"), image.clone())
            .await
            && serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["route"] == "cloud")
        {
            answered += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A camera streams one frame: offloaded as well, and listed in telemetry.
    let frames = format!("/v1/cameras/{CAMERA}/frames/{MODEL}");
    let (status, body) = fleet.post(agent, &frames, image).await.expect("post frame");
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let camera = format!("/v1/cameras/{CAMERA}");
    loop {
        let v = fleet.get_json(agent, &camera).await.unwrap_or_default();
        if v["processed"] == 1 {
            assert_eq!(v["latest"]["route"], "cloud", "the frame offloaded: {v}");
            break;
        }
        assert!(Instant::now() < until, "the camera frame not answered: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = format!("/v1/fleet/{DEVICE}/series");
    loop {
        let cloud: u64 = fleet
            .get_json(hub, &path)
            .await
            .and_then(|s| s["points"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|p| p["cloud"].as_u64().unwrap_or(0))
            .sum();
        if cloud >= OFFLOADED {
            break;
        }
        assert!(
            Instant::now() < until,
            "the series never counted {OFFLOADED} offloads:\n{}",
            hub.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Opens `path` (under the console) and waits for the page to say it is ready.
async fn open(tab: &Tab, base: &str, path: &str) {
    tab.clear();
    let url = format!("{base}{path}");
    tab.goto(&url).await.unwrap_or_else(|e| panic!("{e}"));
    tab.ready(PAGE_PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
}

/// Fails the test if the tab saw any console error; saves a screenshot as `name`.
async fn clean_and_shot(tab: &Tab, shots: &Path, name: &str) {
    let path: PathBuf = shots.join(format!("{name}.png"));
    tab.screenshot(&path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let errors = tab.errors();
    assert!(
        errors.is_empty(),
        "console errors on {name} (screenshot {}): {errors:#?}",
        path.display()
    );
}

async fn pathname(tab: &Tab) -> String {
    tab.eval("location.pathname")
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Each page without a session: the login page, no data.
async fn unauthenticated(tab: &Tab, base: &str, shots: &Path) {
    for path in ["", "/device/cam-01", "/rollouts", "/models", "/feedback"] {
        open(tab, base, path).await;
        let url = format!("{base}{path}");
        assert_eq!(pathname(tab).await, "/console/login", "{url}");
        tab.wait_js(
            "!!document.querySelector('[data-testid=login-token]')",
            PAGE_PATIENCE,
        )
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
        let data: Vec<(String, u16)> = tab
            .responses()
            .into_iter()
            .filter(|(u, s)| u.contains("/v1/") && (200..300).contains(s))
            .collect();
        assert!(data.is_empty(), "{url}: data answered: {data:?}");
        let html = tab
            .eval("document.documentElement.outerHTML")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let html = html.as_str().unwrap_or_default();
        for device in [DEVICE, OFFLINE] {
            assert!(!html.contains(device), "{url} shows {device}:\n{html}");
        }
    }
    open(tab, base, "/login").await;
    clean_and_shot(tab, shots, "login").await;
}

/// Logs in with the operator's token: the fleet page follows.
async fn login(fleet: &Fleet, tab: &Tab) {
    let token = tandem_tests::http::operator_token(&fleet.pki());
    tab.type_into("[data-testid=login-token]", &token)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tab.click("[data-testid=login-submit]")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tab.wait_js(
        "location.pathname === '/console' && document.body.dataset.ready === 'true'",
        PAGE_PATIENCE,
    )
    .await
    .unwrap_or_else(|e| panic!("after login: {e}"));
}

/// Rows of the fleet table that are shown.
const VISIBLE_ROWS: &str = "[...document.querySelectorAll('[data-testid=device-row]')]\
    .filter(r => r.offsetParent !== null).map(r => r.dataset.device)";

/// The fleet page lists the device; the search narrows the list.
async fn fleet_page(tab: &Tab, base: &str, shots: &Path) {
    open(tab, base, "").await;
    let rows = tab
        .eval(VISIBLE_ROWS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows, serde_json::json!([DEVICE, OFFLINE]), "fleet rows");
    clean_and_shot(tab, shots, "fleet").await;
    for (search, shown) in [(DEVICE, vec![DEVICE]), ("no-such-device", vec![])] {
        tab.fill("[data-testid=fleet-search]", search)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let want = serde_json::json!(shown).to_string();
        tab.wait_js(
            &format!("JSON.stringify({VISIBLE_ROWS}) === '{want}'"),
            PAGE_PATIENCE,
        )
        .await
        .unwrap_or_else(|e| panic!("search {search:?} shows {want}: {e}"));
    }
}

/// The device page: each plot draws marks from the agent's telemetry, the route plot's
/// offloaded bars add up to the requests the agent offloaded, and `versions` are marked.
async fn device_page(tab: &Tab, base: &str, shots: &Path, versions: &[&str]) {
    open(tab, base, &format!("/device/{DEVICE}")).await;
    for plot in ["plot-offload", "plot-latency", "plot-routes", "plot-queue"] {
        let marks = tab
            .eval(&format!(
                "document.querySelectorAll('svg[data-testid={plot}] path, \
                 svg[data-testid={plot}] rect').length"
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(marks.as_u64() > Some(0), "{plot} draws nothing: {marks}");
    }
    // Each bar's title: `cloud (offloaded): N at TIME`.
    let offloaded = tab
        .eval(
            "[...document.querySelectorAll('svg[data-testid=plot-routes] rect title')]\
             .map(t => t.textContent.match(/^cloud[^:]*: (\\d+) at/))\
             .filter(Boolean).reduce((n, m) => n + Number(m[1]), 0)",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(offloaded, Value::from(OFFLOADED), "offloaded bars");
    let marked = tab
        .eval(
            "[...new Set([...document.querySelectorAll('svg[data-testid=plot-routes] \
             [data-testid=version-marker]')].map(m => m.dataset.version))].sort()",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(marked, serde_json::json!(versions), "version markers");
    for section in ["update-history", "last-events"] {
        let found = tab
            .eval(&format!(
                "!!document.querySelector('[data-testid={section}]')"
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found, Value::Bool(true), "{section}");
    }
    tab.wait_js(
        &format!("JSON.stringify({CAMERA_BUTTONS}) === '[\"{CAMERA}\"]'"),
        PAGE_PATIENCE,
    )
    .await
    .unwrap_or_else(|e| panic!("a snapshot button for {CAMERA}: {e}"));
    clean_and_shot(tab, shots, &format!("device-{}", versions.len())).await;
    if versions.len() == 1 {
        camera_snapshot(tab, shots).await;
    }
}

/// The cameras the device page offers a snapshot of.
const CAMERA_BUTTONS: &str = "[...document.querySelectorAll('[data-testid=camera-snapshot]')]\
    .map(b => b.dataset.camera)";

/// A click on the camera's button asks the hub, which asks the agent over MQTT: a
/// classification camera keeps no snapshot, and the page shows the agent's words. The only
/// error the tab saw is that 404.
async fn camera_snapshot(tab: &Tab, shots: &Path) {
    tab.click(&format!(
        "[data-testid=camera-snapshot][data-camera=\"{CAMERA}\"]"
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let shown = "(e => e && !e.hidden && e.textContent)\
        (document.querySelector('[data-testid=snapshot-error]'))";
    tab.wait_js(shown, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("the snapshot's answer: {e}"));
    let text = tab.eval(shown).await.unwrap_or_else(|e| panic!("{e}"));
    let text = text.as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("camera `{CAMERA}` has no snapshot yet")),
        "{text}"
    );
    let url = format!("/v1/fleet/{DEVICE}/cameras/{CAMERA}/snapshot.jpg");
    let asked: Vec<u16> = tab
        .responses()
        .into_iter()
        .filter(|(u, _)| u.ends_with(&url))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(asked, [404], "{url}");
    let others: Vec<String> = tab
        .errors()
        .into_iter()
        .filter(|e| !(e.contains("404") && e.contains(&url)))
        .collect();
    assert!(others.is_empty(), "errors besides the 404: {others:#?}");
    tab.screenshot(&shots.join("device-snapshot.png"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The models page lists the registry's versions.
async fn models_page(tab: &Tab, base: &str, shots: &Path) {
    open(tab, base, "/models").await;
    let rows = tab
        .eval(
            "[...document.querySelectorAll('[data-testid=model-row]')]\
             .map(r => r.dataset.model + ' ' + r.dataset.version).sort()",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let want = serde_json::json!([format!("{MODEL} {FIRST}"), format!("{MODEL} {NEXT}")]);
    assert_eq!(rows, want, "model rows");
    clean_and_shot(tab, shots, "models").await;
}
