//! A headless Chromium for the console's browser tests and benchmark, driven over the Chrome
//! DevTools Protocol ([chromiumoxide](https://docs.rs/chromiumoxide)): the Debian `chromium`
//! (`make setup` installs it) started by [`Chromium::start`] from a [`Command`] the caller
//! gives (plain, or `ip netns exec` into a rig's host through [`Chromium::command_in`]).
//!
//! - Headless, `--no-sandbox` (the tests run as root), its own profile folder, its own process
//!   group: dropping the [`Chromium`] kills the group and removes the profile, however the test
//!   ends (a rig's namespace sweep catches what escapes the group).
//! - Each [`Tab`] records what a person would see in the developer tools: console errors
//!   (`Runtime.consoleAPICalled` of `console.error`/`assert`), uncaught exceptions
//!   (`Runtime.exceptionThrown`), browser log errors (`Log.entryAdded`: failed loads, CSP) and
//!   every HTTP response (`Network.responseReceived`: URL and status).
//! - Pages say they are done with `document.body.dataset.ready = "true"` (`data-error` on
//!   failure): [`Tab::ready`] waits for that.

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::browser_protocol::network::{
    EnableParams as NetworkEnable, EventResponseReceived,
};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use futures::StreamExt;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The browser's executable (Debian's package name).
pub const EXECUTABLE: &str = "chromium";
/// Width and height of the window and of screenshots, in CSS pixels.
pub const WINDOW: (u32, u32) = (1280, 860);
/// Longest wait for the browser to print its DevTools address.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// A running headless Chromium; killed (with its process group) and its profile removed on drop.
#[derive(Debug)]
pub struct Chromium {
    child: Child,
    profile: PathBuf,
    browser: Option<chromiumoxide::Browser>,
    /// Polls the DevTools connection (on the runtime that connected it).
    handler: Option<tokio::task::JoinHandle<()>>,
    log: Arc<Mutex<String>>,
}

/// The switches every run gets: headless, no sandbox (root), a profile in `profile`, no
/// first-run or background traffic, a fixed window, a DevTools port the kernel picks.
fn arguments(profile: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-features=Translate,MediaRouter,OptimizationHints",
        "--hide-scrollbars",
        "--mute-audio",
        "--force-device-scale-factor=1",
        "--remote-debugging-port=0",
    ]
    .map(str::to_string)
    .to_vec();
    args.push(format!("--window-size={},{}", WINDOW.0, WINDOW.1));
    args.push(format!("--user-data-dir={}", profile.display()));
    args.push("about:blank".into());
    args
}

impl Chromium {
    /// `chromium` with the standard switches, its profile in `profile` (made empty).
    pub fn command(profile: &Path) -> Command {
        let mut c = Command::new(EXECUTABLE);
        c.args(arguments(profile));
        c
    }

    /// [`Chromium::command`] run inside host `host` of `rig` (`ip netns exec`): the browser
    /// reaches what listens on that host's loopback.
    pub fn command_in(rig: &crate::netns::Rig, host: &str, profile: &Path) -> Command {
        let mut c = rig.command(host, EXECUTABLE);
        c.args(arguments(profile));
        c
    }

    /// Starts `cmd` (from [`Chromium::command`] or [`Chromium::command_in`]) with its profile
    /// in `profile`, and connects to it. The connection is opened by the calling task: for a
    /// browser in a rig's host, call this inside [`crate::netns::Rig::on`] for that host.
    pub async fn start(mut cmd: Command, profile: PathBuf) -> Result<Chromium, String> {
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).map_err(|e| format!("{}: {e}", profile.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            format!("start {EXECUTABLE} ({e}): the browser tests need Debian's `chromium` (`make setup` installs it)")
        })?;
        let stderr = child.stderr.take().expect("stderr was piped above");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = Arc::clone(&log);
        // Reads the browser's stderr to its end (a full pipe would stall it), handing over the
        // DevTools address when it appears.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url.trim().to_string());
                }
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let mut me = Chromium {
            child,
            profile,
            browser: None,
            handler: None,
            log,
        };
        let ws = tokio::time::timeout(START_PATIENCE, rx).await;
        let ws = ws.ok().and_then(Result::ok).ok_or_else(|| {
            format!(
                "{EXECUTABLE} printed no DevTools address in {START_PATIENCE:?}:\n{}",
                me.log_text()
            )
        })?;
        let config = HandlerConfig {
            viewport: Some(Viewport {
                width: WINDOW.0,
                height: WINDOW.1,
                ..Viewport::default()
            }),
            request_timeout: Duration::from_secs(30),
            ..HandlerConfig::default()
        };
        let (browser, mut handler) = chromiumoxide::Browser::connect_with_config(&ws, config)
            .await
            .map_err(|e| format!("connect to {ws}: {e}"))?;
        me.handler = Some(tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                if event.is_err() {
                    break;
                }
            }
        }));
        me.browser = Some(browser);
        Ok(me)
    }

    /// What the browser wrote on stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A new tab on `about:blank`, recording console errors and responses from now on.
    pub async fn tab(&self) -> Result<Tab, String> {
        let browser = self.browser.as_ref().expect("connected in start");
        let page = browser
            .new_page("about:blank")
            .await
            .map_err(|e| format!("new tab: {e}"))?;
        Tab::watch(page).await
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Some(h) = self.handler.take() {
            h.abort();
        }
        self.browser = None;
        // The whole process group: the browser and its renderers, GPU and zygote processes.
        if let Some(pgid) = rustix::process::Pid::from_raw(self.child.id().cast_signed()) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// What a tab saw: console errors and HTTP responses.
#[derive(Debug, Default)]
struct Seen {
    errors: Vec<String>,
    responses: Vec<(String, u16)>,
}

/// One tab of the browser, with what it saw since it opened.
#[derive(Debug)]
pub struct Tab {
    /// The page (for what the helpers below do not cover).
    pub page: Page,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Tab {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Spawns a task that records each `T` event of `page` as `record` says.
async fn record<T, F>(
    page: &Page,
    seen: &Arc<Mutex<Seen>>,
    record: F,
) -> Result<tokio::task::JoinHandle<()>, String>
where
    T: chromiumoxide::cdp::IntoEventKind + Unpin + std::fmt::Debug + Send + Sync + 'static,
    F: Fn(&T, &mut Seen) + Send + 'static,
{
    let mut events = page
        .event_listener::<T>()
        .await
        .map_err(|e| format!("listen: {e}"))?;
    let seen = Arc::clone(seen);
    Ok(tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if let Ok(mut s) = seen.lock() {
                record(&e, &mut s);
            }
        }
    }))
}

impl Tab {
    async fn watch(page: Page) -> Result<Tab, String> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let tasks = vec![
            record::<EventConsoleApiCalled, _>(&page, &seen, |e, s| {
                if matches!(
                    e.r#type,
                    ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert
                ) {
                    let args: Vec<String> = e
                        .args
                        .iter()
                        .map(|a| match (&a.value, &a.description) {
                            (Some(v), _) => v.to_string(),
                            (None, Some(d)) => d.clone(),
                            (None, None) => format!("{:?}", a.r#type),
                        })
                        .collect();
                    s.errors.push(format!("console.error: {}", args.join(" ")));
                }
            })
            .await?,
            record::<EventExceptionThrown, _>(&page, &seen, |e, s| {
                let d = &e.exception_details;
                let what = d
                    .exception
                    .as_ref()
                    .and_then(|x| x.description.clone())
                    .unwrap_or_default();
                s.errors.push(format!(
                    "uncaught: {} {what} (line {})",
                    d.text, d.line_number
                ));
            })
            .await?,
            record::<EventEntryAdded, _>(&page, &seen, |e, s| {
                if e.entry.level == LogEntryLevel::Error {
                    let url = e.entry.url.clone().unwrap_or_default();
                    s.errors.push(format!("log: {} {url}", e.entry.text));
                }
            })
            .await?,
            record::<EventResponseReceived, _>(&page, &seen, |e, s| {
                let status = u16::try_from(e.response.status).unwrap_or(0);
                s.responses.push((e.response.url.clone(), status));
            })
            .await?,
        ];
        page.enable_log()
            .await
            .map_err(|e| format!("Log.enable: {e}"))?;
        page.enable_runtime()
            .await
            .map_err(|e| format!("Runtime.enable: {e}"))?;
        page.execute(NetworkEnable::default())
            .await
            .map_err(|e| format!("Network.enable: {e}"))?;
        Ok(Tab { page, seen, tasks })
    }

    /// Opens `url` and waits for the load event.
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.page
            .goto(url)
            .await
            .map(|_| ())
            .map_err(|e| format!("open {url}: {e}"))
    }

    /// The value of JavaScript expression `js` (awaited when it is a promise), as JSON.
    pub async fn eval(&self, js: &str) -> Result<Value, String> {
        self.page
            .evaluate(js)
            .await
            .map_err(|e| format!("evaluate `{js}`: {e}"))?
            .into_value::<Value>()
            .map_err(|e| format!("evaluate `{js}`: {e}"))
    }

    /// Polls `js` until it is truthy (errors while a page navigates count as not yet); its
    /// last value, or why not within `patience`.
    pub async fn wait_js(&self, js: &str, patience: Duration) -> Result<Value, String> {
        let until = Instant::now() + patience;
        loop {
            let got = self.eval(js).await;
            match &got {
                Ok(v) if truthy(v) => return got,
                _ if Instant::now() >= until => {
                    return Err(format!(
                        "`{js}` not true within {patience:?} (last: {got:?}); errors: {:?}",
                        self.errors()
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits until the page set `document.body.dataset.ready = "true"`; its `data-error` (or
    /// the wait's end) is the error.
    pub async fn ready(&self, patience: Duration) -> Result<(), String> {
        let js = "document.body && (document.body.dataset.ready === 'true' \
                  || (document.body.dataset.error ? 'error: ' + document.body.dataset.error : false))";
        match self.wait_js(js, patience).await? {
            Value::String(s) if s.starts_with("error: ") => Err(format!(
                "{} failed: {s}",
                self.eval("location.href").await.unwrap_or_default()
            )),
            _ => Ok(()),
        }
    }

    async fn find(&self, selector: &str) -> Result<chromiumoxide::Element, String> {
        self.page
            .find_element(selector)
            .await
            .map_err(|e| format!("find {selector}: {e}"))
    }

    /// Clicks the element `selector` finds (mouse events at its centre).
    pub async fn click(&self, selector: &str) -> Result<(), String> {
        self.find(selector)
            .await?
            .click()
            .await
            .map(|_| ())
            .map_err(|e| format!("click {selector}: {e}"))
    }

    /// Types `text` into the element `selector` finds (after focusing it with a click), after
    /// what it holds.
    pub async fn type_into(&self, selector: &str, text: &str) -> Result<(), String> {
        self.type_after(selector, text, false).await
    }

    /// Empties the input `selector` finds, then types `text` into it.
    pub async fn fill(&self, selector: &str, text: &str) -> Result<(), String> {
        self.type_after(selector, text, true).await
    }

    async fn type_after(&self, selector: &str, text: &str, empty: bool) -> Result<(), String> {
        let el = self.find(selector).await?;
        if empty {
            el.call_js_fn("function() { this.value = ''; }", false)
                .await
                .map_err(|e| format!("empty {selector}: {e}"))?;
        }
        el.click()
            .await
            .map_err(|e| format!("focus {selector}: {e}"))?;
        el.type_str(text)
            .await
            .map(|_| ())
            .map_err(|e| format!("type into {selector}: {e}"))
    }

    /// A PNG of the page (its full height) in `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let params = ScreenshotParams::builder().full_page(true).build();
        self.page
            .save_screenshot(params, path)
            .await
            .map(|_| ())
            .map_err(|e| format!("screenshot {}: {e}", path.display()))
    }

    /// The console errors, uncaught exceptions and error log entries seen so far.
    pub fn errors(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|s| s.errors.clone())
            .unwrap_or_default()
    }

    /// Every HTTP response seen so far: (URL, status).
    pub fn responses(&self) -> Vec<(String, u16)> {
        self.seen
            .lock()
            .map(|s| s.responses.clone())
            .unwrap_or_default()
    }

    /// Forgets the errors and responses seen so far.
    pub fn clear(&self) {
        if let Ok(mut s) = self.seen.lock() {
            *s = Seen::default();
        }
    }
}

/// JavaScript truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}
