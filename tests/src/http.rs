//! HTTP GETs that a test expects to succeed: the body as text or as JSON; the hub's operator
//! token for its operator routes.

use serde_json::Value;
use std::path::Path;

/// The hub's operator token: the first token line of `operator.token` in its PKI folder
/// (written 0600 by `tandem-hub init` and by the hub's first run). Panics if there is none.
pub fn operator_token(pki_dir: &Path) -> String {
    let path = pki_dir.join("operator.token");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (does the hub run on this PKI?)", path.display()));
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("{} holds no token", path.display()))
        .to_string()
}

/// `GET url` as the operator (bearer `token`), the body parsed as JSON (panics if the request
/// fails or the body is not JSON).
pub async fn get_json_as(c: &reqwest::Client, url: &str, token: &str) -> Value {
    let r = c
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let text = r
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: JSON: {e}: {text}"))
}

/// `GET url`, the body as text (panics if the request fails).
pub async fn get_text(c: &reqwest::Client, url: &str) -> String {
    c.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"))
}

/// `GET url`, the body parsed as JSON (panics if the request fails or the body is not JSON).
pub async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    let text = get_text(c, url).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: JSON: {e}: {text}"))
}
