//! Hostile inputs that tried to exhaust a daemon's memory with tiny requests (issue 11, Found
//! 3), against the built binaries on the shipped models: many rows in one small OIP request
//! (800 tiny PNGs in ~320 KB took the agent to 4 GB before) on the agent and on the hub's REST
//! API, and one 15 MiB text (tokenised whole before truncation: ~2 GB). Each daemon's peak
//! resident memory (`VmHWM`) may grow by at most [`MAX_GROWTH_KIB`] over the attack.

use serde_json::{Value, json};
use tandem_tests::daemon::Daemon;
use tandem_tests::models_dir;

/// Peak resident memory a daemon may gain over one attack, KiB. A worker decoding and running
/// `engine.max_rows_per_run` rows of the shipped models, plus the request's own bytes, stays
/// well below it; the attacks took gigabytes.
const MAX_GROWTH_KIB: u64 = 256 * 1024;

/// The shipped vision-fashion sample PNGs (28x28, ~400 bytes each).
fn samples() -> Vec<Vec<u8>> {
    let dir = models_dir().join("vision-fashion/samples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("samples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("sample"))
        .collect()
}

/// An OIP request (binary tensor extension) carrying `rows` PNGs as one BYTES input.
fn image_rows(rows: usize) -> (Vec<u8>, usize) {
    let pngs = samples();
    let mut data = Vec::new();
    for png in pngs.iter().cycle().take(rows) {
        data.extend((png.len() as u32).to_le_bytes());
        data.extend(png);
    }
    let header = serde_json::to_vec(&json!({"inputs": [{"name": "image", "shape": [rows], "datatype": "BYTES", "parameters": {"binary_data_size": data.len()}}]})).expect("json");
    let n = header.len();
    let mut body = header;
    body.extend(data);
    (body, n)
}

async fn infer(c: &reqwest::Client, base: &str, rows: usize) -> (u16, Value) {
    let (body, header_len) = image_rows(rows);
    let r = c
        .post(format!("{base}/v2/models/vision-fashion/infer"))
        .header("Inference-Header-Content-Length", header_len)
        .body(body)
        .send()
        .await
        .expect("infer");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The attack on one daemon: its metadata states the cap; 800 rows get 413 naming the limit;
/// 64 rows (the cap) are answered row by row; the peak memory stays within the bound.
async fn many_rows(d: &Daemon) {
    let c = reqwest::Client::new();
    let meta: Value = c
        .get(format!("{}/v2/models/vision-fashion", d.base))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(meta["parameters"]["max_batch_size"], 64, "{meta}");
    let before = d.status_kib("VmHWM");
    for _ in 0..3 {
        let (status, v) = infer(&c, &d.base, 800).await;
        assert_eq!(status, 413, "{v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("800 rows") && msg.contains("64") && msg.contains("max_rows_per_request"),
            "{msg}"
        );
    }
    let (status, v) = infer(&c, &d.base, 64).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outputs"][0]["shape"][0], 64, "{v}");
    let grown = d.status_kib("VmHWM").saturating_sub(before);
    assert!(
        grown < MAX_GROWTH_KIB,
        "peak memory grew by {grown} KiB (bound {MAX_GROWTH_KIB} KiB)\n{}",
        d.proc.log_text()
    );
    eprintln!("many rows: VmHWM grew by {grown} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rows_in_a_small_request_are_refused_by_the_agent() {
    let d = Daemon::agent("hostile-rows-agent", "", None);
    many_rows(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rows_in_a_small_request_are_refused_by_the_hub() {
    let d = Daemon::hub("hostile-rows-hub", "");
    many_rows(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_15_mib_text_is_cut_before_tokenising() {
    let d = Daemon::agent("hostile-text", "", None);
    let c = reqwest::Client::new();
    let url = format!("{}/v1/classify/text-sentiment", d.base);
    let short = c
        .post(&url)
        .body("what a wonderful, lovely film")
        .send()
        .await
        .expect("classify");
    assert_eq!(short.status().as_u16(), 200);
    let before = d.status_kib("VmHWM");
    // Words of every length and multi-byte characters, so the cut falls inside a character.
    let unit = "a wonderful film, truly lovely ✓ — très beau ";
    let text = unit.repeat(15 * 1024 * 1024 / unit.len());
    let r = c.post(&url).body(text).send().await.expect("classify");
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{v}");
    assert!(v["label"].is_string(), "{v}");
    let grown = d.status_kib("VmHWM").saturating_sub(before);
    assert!(
        grown < MAX_GROWTH_KIB,
        "peak memory grew by {grown} KiB (bound {MAX_GROWTH_KIB} KiB)"
    );
    eprintln!("15 MiB text: VmHWM grew by {grown} KiB");
}
