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

mod tab;

pub use tab::Tab;

use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::handler::viewport::Viewport;
use futures::StreamExt;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
