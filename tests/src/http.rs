//! HTTP GETs that a test expects to succeed: the body as text or as JSON.

use serde_json::Value;

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
