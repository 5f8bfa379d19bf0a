//! The browser driver the console tests rely on (`tandem_tests::browser`), against a page
//! served from this test on loopback: it must see what a person would see in the developer
//! tools, or the console tests' "no console error" would pass on a broken page.
//!
//! - a clean page is ready and shows no error;
//! - `console.error`, an uncaught exception, a script that fails to load (404) and a rejected
//!   `fetch` each come out as errors, and the responses (with their statuses) are recorded;
//! - a screenshot is a PNG of the window's width.

use std::time::Duration;
use tandem_tests::browser::{Chromium, WINDOW};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLEAN: &str = "<!doctype html><html><head><title>clean</title></head>\
<body><p>fine</p><script src=\"/ready.js\"></script></body></html>";
const READY: &str = "document.body.dataset.ready = 'true';";
const BROKEN: &str = "<!doctype html><html><head><title>broken</title></head><body>\
<script src=\"/missing.js\"></script><script src=\"/broken.js\"></script></body></html>";
const BROKEN_JS: &str = "console.error('drawn wrong', 42);\
fetch('/v1/nothing').then(r => { if (!r.ok) throw new Error('fetch ' + r.status); });\
setTimeout(() => { document.body.dataset.ready = 'true'; }, 50);\
null.boom();";

/// Serves the pages above: `/clean`, `/broken` and their scripts; 404 for anything else.
async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, kind, body) = match path.as_str() {
                "/clean" => ("200 OK", "text/html", CLEAN),
                "/broken" => ("200 OK", "text/html", BROKEN),
                "/ready.js" => ("200 OK", "text/javascript", READY),
                "/broken.js" => ("200 OK", "text/javascript", BROKEN_JS),
                "/favicon.ico" => ("204 No Content", "image/x-icon", ""),
                _ => ("404 Not Found", "text/plain", "no"),
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(answer.as_bytes()).await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_sees_console_errors_and_failed_loads() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve(listener));
    let dir = tandem_tests::scratch("console-driver");
    let profile = dir.join("chromium");
    let browser = Chromium::start(Chromium::command(&profile), profile)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tab = browser.tab().await.unwrap_or_else(|e| panic!("{e}"));

    tab.goto(&format!("{base}/clean"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tab.ready(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tab.errors(), Vec::<String>::new());
    let shot = dir.join("clean.png");
    tab.screenshot(&shot)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let png = std::fs::read(&shot).expect("the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    assert_eq!(width, WINDOW.0, "as wide as the window");

    tab.clear();
    tab.goto(&format!("{base}/broken"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tab.ready(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let expected = [
        "drawn wrong",
        "boom",
        "missing.js",
        "fetch 404",
        "/v1/nothing",
    ];
    let mut errors = Vec::new();
    for _ in 0..50 {
        errors = tab.errors();
        if expected
            .iter()
            .all(|e| errors.iter().any(|x| x.contains(e)))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for e in expected {
        assert!(errors.iter().any(|x| x.contains(e)), "{e}: {errors:#?}");
    }
    let responses = tab.responses();
    for (path, status) in [("/broken", 200), ("/missing.js", 404), ("/v1/nothing", 404)] {
        assert!(
            responses
                .iter()
                .any(|(u, s)| u.ends_with(path) && *s == status),
            "{path} {status}: {responses:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
