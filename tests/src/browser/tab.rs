//! One tab of the browser ([`Tab`]): what it saw (console errors, uncaught exceptions, error
//! log entries, HTTP responses) and the helpers a test drives a page with.

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::browser_protocol::network::{
    EnableParams as NetworkEnable, EventResponseReceived,
};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::page::ScreenshotParams;
use futures::StreamExt;
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    pub(super) async fn watch(page: Page) -> Result<Tab, String> {
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
