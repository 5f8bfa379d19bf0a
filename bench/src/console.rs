//! `tandem-bench console` (make bench-console): the console's fleet page for a fleet of
//! simulated devices (1,000 by default), loaded in headless Chromium. The devices are written
//! into the hub's fleet store before the hub starts (each with a status and a telemetry sample
//! made from the MQTT contract's golden fixtures: its own counters, version, labels, online or
//! not), then the release hub serves them with its own mosquitto on loopback.
//!
//! Measured per page load (one warm-up, then `--runs`): the server time of each API call the
//! page makes (Resource Timing: request sent to first byte, on loopback), and the render time
//! (navigation start to `data-ready`, taken in the page by an observer the benchmark adds
//! before the page's own scripts run). The same API calls are also timed whole (to the last
//! byte) from outside the browser. Last line: `console: devices=N server_ms=X render_ms=Y` (medians; `server_ms` is
//! the sum over the page's API calls).
//!
//! `tandem-bench console-shot` takes one screenshot of a console page (the demo's).

use crate::procs::{self, Server};
use crate::stats::median;
use anyhow::{Context as _, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tandem_hub::fleet::FleetStore;
use tandem_shared::mqtt::{Status, Telemetry};
use tandem_tests::browser::{Chromium, Tab};

/// `tandem-bench console`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated devices in the fleet store.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Page loads measured (after one warm-up load).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// `tandem-bench console-shot`.
#[derive(Debug, clap::Args)]
pub struct ShotArgs {
    /// The hub's HTTP API (`http://127.0.0.1:8480`).
    #[arg(long)]
    hub: String,
    /// The operator token file (`operator.token` in the hub's PKI folder).
    #[arg(long)]
    token_file: PathBuf,
    /// The console page (`/console`, `/console/device/demo-cam`).
    #[arg(long, default_value = "/console")]
    page: String,
    /// Where the PNG goes.
    #[arg(long)]
    out: PathBuf,
}

/// Records, in the page, when `data-ready` turns true (ms since navigation start). Added with
/// `Page.addScriptToEvaluateOnNewDocument`, so it runs before the page's own scripts.
const READY_OBSERVER: &str = "new MutationObserver((_, o) => {\
  if (document.body && document.body.dataset.ready === 'true' && !window.__tandemReadyMs) {\
    window.__tandemReadyMs = performance.now(); o.disconnect(); }\
}).observe(document, {attributes: true, subtree: true, attributeFilter: ['data-ready']});";

/// The page's API calls of the load: `[[path, server_ms, bytes]]`.
const API_TIMINGS: &str = "performance.getEntriesByType('resource')\
  .filter(e => new URL(e.name).pathname.startsWith('/v1/'))\
  .map(e => [new URL(e.name).pathname + new URL(e.name).search, \
             e.responseStart - e.requestStart, e.encodedBodySize])";

/// The operator token: the first line of the file that is not a comment.
fn token(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .with_context(|| format!("{} holds no token", file.display()))
}

fn golden(repo: &Path, name: &str) -> anyhow::Result<Value> {
    let path = repo.join("shared/tests/fixtures/mqtt").join(name);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

/// The median of `v` (NaN when empty).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Writes `n` devices into the fleet store under `dir`: every tenth offline, three groups,
/// two model versions, counters that differ per device.
fn simulate(repo: &Path, dir: &Path, n: usize) -> anyhow::Result<()> {
    let status = golden(repo, "status_online.json")?;
    let telemetry = golden(repo, "telemetry.json")?;
    let store = FleetStore::open(dir, 64 << 20).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = now_ms();
    for i in 0..n {
        let device = format!("sim-{i:04}");
        let version = if i % 3 == 0 { "1.0.1" } else { "1.0.0" };
        let mut s = status.clone();
        s["ts_ms"] = now.into();
        let group = ["north", "south", "lab"][i % 3];
        s["labels"] = serde_json::json!({ "group": group });
        if let Some(models) = s["models"].as_array_mut() {
            for m in models {
                m["version"] = version.into();
            }
        }
        let s: Status = serde_json::from_value(s).context("status fixture")?;
        let mut t = telemetry.clone();
        t["ts_ms"] = now.into();
        t["seq"] = (i as u64).into();
        t["models"]["vision-fashion"]["version"] = version.into();
        t["routes"][1]["count"] = (50 + (i as u64 * 37) % 400).into();
        t["routes"][2]["count"] = ((i as u64 * 13) % 30).into();
        let t: Telemetry = serde_json::from_value(t).context("telemetry fixture")?;
        let last_seen = now - (i as u64 % 60) * 1000;
        store
            .update(&device, |d| {
                d.online = i % 10 != 0;
                d.status = Some(s);
                d.take_telemetry(t, last_seen, false);
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    store.flush();
    Ok(())
}

/// The release hub on loopback (HTTP, QUIC, its own mosquitto) over `dir`.
fn start_hub(repo: &Path, dir: &Path) -> anyhow::Result<Server> {
    let exe = std::env::current_exe()?.with_file_name("tandem-hub");
    anyhow::ensure!(
        exe.is_file(),
        "{} missing: run `make release`",
        exe.display()
    );
    let out = Command::new(&exe)
        .args(["init", "--dir"])
        .arg(dir.join("pki"))
        .output()?;
    if !out.status.success() {
        bail!("tandem-hub init: {}", String::from_utf8_lossy(&out.stderr));
    }
    let http = format!("127.0.0.1:{}", procs::free_port()?);
    let quic = format!("127.0.0.1:{}", procs::free_port()?);
    let mqtt = format!("127.0.0.1:{}", procs::free_port()?);
    let cfg = dir.join("hub.toml");
    std::fs::write(
        &cfg,
        format!(
            "log_filter = \"warn\"\npki_dir = \"pki\"\nregistry_dir = \"registry\"\n\
             feedback_dir = \"feedback\"\n[http]\nlisten = \"{http}\"\n[quic]\nlisten = \"{quic}\"\n\
             [models]\ndir = \"{}\"\nenabled = [\"vision-fashion\"]\n\
             [mqtt]\nlisten = \"{mqtt}\"\nruntime_dir = \"mqtt\"\n[fleet]\ndir = \"state\"\n",
            repo.join("models").display()
        ),
    )?;
    let mut cmd = Command::new(&exe);
    cmd.args(["run", "--config"]).arg(&cfg);
    procs::spawn_http(
        cmd,
        http,
        "/v2/health/ready",
        Duration::from_secs(120),
        &dir.join("hub.log"),
    )
}

/// A browser tab logged in to the console at `base` (`http://host:port`) with `token`.
async fn logged_in(browser: &Chromium, base: &str, token: &str) -> anyhow::Result<Tab> {
    let tab = browser.tab().await.map_err(anyhow::Error::msg)?;
    tab.goto(&format!("{base}/console/login"))
        .await
        .map_err(anyhow::Error::msg)?;
    tab.ready(Duration::from_secs(30))
        .await
        .map_err(anyhow::Error::msg)?;
    tab.type_into("[data-testid=login-token]", token)
        .await
        .map_err(anyhow::Error::msg)?;
    tab.click("[data-testid=login-submit]")
        .await
        .map_err(anyhow::Error::msg)?;
    tab.wait_js(
        "location.pathname !== '/console/login' && document.body.dataset.ready === 'true'",
        Duration::from_secs(30),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    Ok(tab)
}

/// One measured load of the fleet page: (render ms, [(path, server ms, bytes)]).
type Load = (f64, Vec<(String, f64, f64)>);

async fn load(tab: &Tab, url: &str, devices: usize) -> anyhow::Result<Load> {
    tab.goto(url).await.map_err(anyhow::Error::msg)?;
    tab.ready(Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    let rows = tab
        .eval("document.querySelectorAll('[data-testid=device-row]').length")
        .await
        .map_err(anyhow::Error::msg)?;
    if rows.as_u64() != Some(devices as u64) {
        bail!("the fleet page shows {rows} rows, not {devices}");
    }
    let ready = tab
        .wait_js("window.__tandemReadyMs", Duration::from_secs(5))
        .await
        .map_err(anyhow::Error::msg)?;
    let calls = tab.eval(API_TIMINGS).await.map_err(anyhow::Error::msg)?;
    let calls = calls
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c[0].as_str().unwrap_or_default().to_string(),
                c[1].as_f64().unwrap_or(f64::NAN),
                c[2].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    Ok((ready.as_f64().unwrap_or(f64::NAN), calls))
}

/// A fresh headless browser with its profile under `dir`.
async fn browser(dir: &Path) -> anyhow::Result<Chromium> {
    let profile = dir.join("chromium");
    Chromium::start(Chromium::command(&profile), profile)
        .await
        .map_err(anyhow::Error::msg)
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let repo = procs::repo()?;
    let dir = std::env::temp_dir().join(format!("tandem-bench-console-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = measure(&repo, &dir, a);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(repo: &Path, dir: &Path, a: &Args) -> anyhow::Result<()> {
    let t = Instant::now();
    simulate(repo, &dir.join("state"), a.devices)?;
    println!(
        "{} simulated devices written to the fleet store in {:.1} s",
        a.devices,
        t.elapsed().as_secs_f64()
    );
    let hub = start_hub(repo, dir)?;
    let base = format!("http://{}", hub.addr);
    let token = token(&dir.join("pki/operator.token"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let browser = browser(dir).await?;
        let tab = logged_in(&browser, &base, &token).await?;
        tab.page
            .evaluate_on_new_document(READY_OBSERVER)
            .await
            .context("add the ready observer")?;
        let url = format!("{base}/console");
        load(&tab, &url, a.devices).await?; // warm-up
        let mut loads = Vec::new();
        for _ in 0..a.runs.max(1) {
            loads.push(load(&tab, &url, a.devices).await?);
        }
        let errors = tab.errors();
        if !errors.is_empty() {
            bail!("console errors on the fleet page: {errors:?}");
        }
        // The same calls from outside the browser (reqwest, the operator's token).
        let http = reqwest::Client::new();
        let mut direct: Vec<(String, Vec<f64>)> = Vec::new();
        for (path, _, _) in &loads[0].1 {
            let mut ms = Vec::new();
            // One warm-up (the connection), then the timed calls.
            for i in 0..=a.runs.max(1) {
                let t = Instant::now();
                let r = http
                    .get(format!("{base}{path}"))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                let ok = r.status().is_success();
                r.bytes().await?;
                anyhow::ensure!(ok, "GET {path} failed");
                if i > 0 {
                    ms.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            direct.push((path.clone(), ms));
        }
        report(a, &loads, &direct);
        Ok::<_, anyhow::Error>(())
    })?;
    drop(hub);
    Ok(())
}

fn report(a: &Args, loads: &[Load], direct: &[(String, Vec<f64>)]) {
    println!(
        "\nfleet page, {} devices, {} loads (median)",
        a.devices,
        loads.len()
    );
    println!(
        "{:<34} {:>12} {:>18} {:>10}",
        "API call", "server ms", "whole, outside ms", "KiB"
    );
    let mut server_total = 0.0;
    for (i, (path, outside)) in direct.iter().enumerate() {
        let mut server: Vec<f64> = loads
            .iter()
            .filter_map(|l| l.1.get(i))
            .map(|c| c.1)
            .collect();
        let kib = loads[0].1.get(i).map_or(f64::NAN, |c| c.2 / 1024.0);
        let s = median(&mut server);
        server_total += s;
        let mut outside = outside.clone();
        println!(
            "{:<34} {:>12.1} {:>18.1} {:>10.0}",
            path,
            s,
            median(&mut outside),
            kib
        );
    }
    let mut render: Vec<f64> = loads.iter().map(|l| l.0).collect();
    let render = median(&mut render);
    println!("{:<34} {:>12.1}", "navigation start to data-ready", render);
    println!(
        "console: devices={} server_ms={server_total:.1} render_ms={render:.1}",
        a.devices
    );
}

/// `tandem-bench console-shot`: logs in and saves a screenshot of one page.
pub fn shot(a: &ShotArgs) -> anyhow::Result<()> {
    let token = token(&a.token_file)?;
    let dir = std::env::temp_dir().join(format!("tandem-console-shot-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let browser = browser(&dir).await?;
        let tab = logged_in(&browser, a.hub.trim_end_matches('/'), &token).await?;
        tab.goto(&format!("{}{}", a.hub.trim_end_matches('/'), a.page))
            .await
            .map_err(anyhow::Error::msg)?;
        tab.ready(Duration::from_secs(30))
            .await
            .map_err(anyhow::Error::msg)?;
        tab.screenshot(&a.out).await.map_err(anyhow::Error::msg)?;
        Ok::<_, anyhow::Error>(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
