//! `[log] format = "journald"` against a real systemd-journald (issue 16 item 3): the journal
//! runs in a private mount namespace (`unshare -m`, a tmpfs on `/run`, so the test touches no
//! journal of the machine's), the built agent logs into it, one request is classified, and
//! `journalctl -o json` reads the entries back: the request's entries carry `DEVICE`, `MODEL`
//! and `REQUEST_ID` (the JSON and text formats' `device`, `model`, `request_id`), and
//! `SYSLOG_IDENTIFIER=tandem-agent`. Before the journal starts, the same agent finds no socket:
//! it says so on stderr and logs text there instead, where a request's lines show the same keys
//! (`request{device=... model=... request_id=...}`). Needs root (as CI runs) and
//! `/lib/systemd/systemd-journald` (Debian's `systemd` package); without them the test fails
//! saying so.

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use tandem_tests::{binary, models_dir, scratch};

const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// The namespace's steps: the agent without a journal (fallback), then journald, the agent
/// again, one request, the journal exported.
const SCRIPT: &str = r#"set -eu
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal
ready() { for _ in $(seq 1200); do curl -sf "http://$ADDR/v2/health/ready" >/dev/null && return 0; sleep 0.1; done; return 1; }
"$AGENT" run --config "$DIR/agent.toml" 2> "$DIR/fallback.err" & pid=$!
ready || { kill $pid; exit 11; }
curl -sf -X POST -H 'Content-Type: image/png' --data-binary "@$IMAGE" \
  "http://$ADDR/v1/classify/vision-fashion" > "$DIR/fallback-answer.json"
kill -TERM $pid; wait $pid || true
"$JOURNALD" 2> "$DIR/journald.err" & jd=$!
for _ in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.1; done
"$AGENT" run --config "$DIR/agent.toml" 2> "$DIR/agent.err" & pid=$!
ready || { kill $pid $jd; exit 12; }
curl -sf -X POST -H 'Content-Type: image/png' --data-binary "@$IMAGE" \
  "http://$ADDR/v1/classify/vision-fashion" > "$DIR/answer.json"
kill -TERM $pid; wait $pid || true
journalctl -D /run/log/journal -o json --no-pager > "$DIR/journal.json"
kill -TERM $jd; wait $jd || true
"#;

#[test]
fn journald_entries_carry_the_request_fields() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test runs the journal in a private mount namespace: it needs root (CI runs as root)"
    );
    assert!(
        Path::new(JOURNALD).is_file(),
        "{JOURNALD} is missing: install Debian's systemd package (make setup)"
    );
    let dir = scratch("journald");
    // A device certificate: the agent names itself by its CN (no hub needed for that).
    let pki = dir.join("pki");
    for args in [
        vec!["init", "--dir"],
        vec!["device", "add", "cam-01", "--dir"],
    ] {
        let out = Command::new(binary("tandem-hub"))
            .args(&args)
            .arg(&pki)
            .output()
            .expect("tandem-hub");
        assert!(out.status.success(), "tandem-hub {args:?}: {out:?}");
    }
    let (port, _) = tandem_tests::net::free_ports();
    let addr = format!("127.0.0.1:{port}");
    let config = format!(
        "[server]\nlisten = \"{addr}\"\n\
         [log]\nfilter = \"info,tandem_agent=debug,tandem_engine=debug,ort=warn\"\nformat = \"journald\"\n\
         [models]\ndir = \"{}\"\nenabled = [\"vision-fashion\"]\n\
         [hub]\ncert = \"{}\"\n\
         [queue]\ndir = \"{}\"\n",
        models_dir().display(),
        pki.join("devices/cam-01.pem").display(),
        dir.join("queue").display()
    );
    std::fs::write(dir.join("agent.toml"), config).expect("config");
    let image = models_dir().join("vision-fashion/samples/0_9.png");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", SCRIPT])
        .env("AGENT", binary("tandem-agent"))
        .env("JOURNALD", JOURNALD)
        .env("DIR", &dir)
        .env("ADDR", &addr)
        .env("IMAGE", &image)
        .output()
        .expect("unshare (util-linux)");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    assert!(
        out.status.success(),
        "the namespace's script: {out:?}\nfallback: {}\nagent: {}\njournald: {}",
        read("fallback.err"),
        read("agent.err"),
        read("journald.err")
    );

    // No journal: one error line naming the socket, then text lines on stderr.
    let fallback = read("fallback.err");
    assert!(
        fallback
            .lines()
            .next()
            .is_some_and(|l| l.contains("log.format = \"journald\"")
                && l.contains("/run/systemd/journal/socket")),
        "{fallback}"
    );
    assert!(fallback.contains("tandem-agent serving"), "{fallback}");
    // The text format shows the same keys, in the span's prefix.
    let first: Value = serde_json::from_str(&read("fallback-answer.json")).expect("an answer");
    let span = format!(
        "request{{device=\"cam-01\" model=\"vision-fashion\" request_id={}}}",
        first["request_id"].as_str().expect("request_id")
    );
    assert!(
        fallback
            .lines()
            .any(|l| l.contains(&span) && l.contains("engine answered")),
        "no text line with {span}:\n{fallback}"
    );

    // With the journal: nothing on stderr, the request's entries in the journal.
    let answer: Value = serde_json::from_str(&read("answer.json")).expect("the answer");
    let rid = answer["request_id"].as_str().expect("request_id");
    let entries: Vec<Value> = read("journal.json")
        .lines()
        .map(|l| serde_json::from_str(l).expect("journalctl -o json line"))
        .collect();
    let mine: Vec<&Value> = entries.iter().filter(|e| e["REQUEST_ID"] == rid).collect();
    let messages: Vec<&str> = mine.iter().filter_map(|e| e["MESSAGE"].as_str()).collect();
    assert!(
        messages.contains(&"engine answered") && messages.contains(&"answered"),
        "{messages:?} of {} entries",
        entries.len()
    );
    for e in &mine {
        assert_eq!(e["DEVICE"], "cam-01", "{e}");
        assert_eq!(e["MODEL"], "vision-fashion", "{e}");
        assert_eq!(e["SYSLOG_IDENTIFIER"], "tandem-agent", "{e}");
        assert_eq!(e["PRIORITY"], "6", "debug lines at priority 6: {e}");
    }
    assert!(
        entries
            .iter()
            .any(|e| e["MESSAGE"] == "tandem-agent serving" && e["PRIORITY"] == "5"),
        "the ready line at info (priority 5)"
    );
    let stderr = read("agent.err");
    assert!(
        stderr.trim().is_empty(),
        "the journal run wrote to stderr: {stderr}"
    );
}
