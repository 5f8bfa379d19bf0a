//! Hostile input against the agent's durable queue (issue 11, Found 4 and 9), on the built
//! binary: a flood of corrections, each carrying a large input (a sample PNG with 400 KB of
//! bytes after its end, which the decoder ignores and the correction keeps), against a 1 MiB
//! `queue.max_bytes`. Before, sled 0.34 kept every such record's pages as blob files it never
//! removed (1.8 GB against 64 MiB); now the queue's folder, walked file by file, stays within
//! the stated bound (8 × `max_bytes` + 16 MiB), also after a restart, and no file in it is
//! readable by anyone but the agent's user.

use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tandem_tests::process::Logged;
use tandem_tests::{binary, models_dir, scratch};

/// The queue's budget in the attack.
const MAX_BYTES: u64 = 1024 * 1024;
/// The footprint bound the agent states for it (`queue::store::FOOTPRINT_*`).
const BOUND: u64 = 8 * MAX_BYTES + 16 * 1024 * 1024;
/// Corrections in the flood: 160 × ~400 KB, 64 MB offered.
const FLOOD: usize = 160;

struct Agent {
    proc: Logged,
    base: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }
}

fn start(dir: &Path) -> Agent {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[models]\ndir = \"{}\"\nenabled = [\"vision-fashion\"]\nvariant = \"edge\"\n[queue]\ndir = \"{}\"\nmax_bytes = {MAX_BYTES}\n",
            models_dir().display(),
            dir.join("queue").display()
        ),
    )
    .expect("config");
    let (proc, addr) = Logged::spawn(
        Command::new(binary("tandem-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,ort=warn"),
        Duration::from_secs(60),
        |line| {
            let i = line.find("listen=")?;
            line[i + 7..].split_whitespace().next().map(str::to_string)
        },
    );
    let addr = addr.unwrap_or_else(|| panic!("agent did not start:\n{}", proc.log_text()));
    Agent {
        proc,
        base: format!("http://{addr}"),
    }
}

/// A file's path, apparent size and mode bits.
type FileEntry = (PathBuf, u64, u32);

/// Every file under `dir`; and the folders with their modes.
fn walk(dir: &Path) -> (Vec<FileEntry>, Vec<(PathBuf, u32)>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = std::fs::metadata(&d).expect("stat");
        dirs.push((d.clone(), m.permissions().mode() & 0o777));
        for e in std::fs::read_dir(&d).expect("list").flatten() {
            let m = e.metadata().expect("stat");
            if m.is_dir() {
                stack.push(e.path());
            } else {
                files.push((e.path(), m.len(), m.permissions().mode() & 0o777));
            }
        }
    }
    (files, dirs)
}

fn folder_bytes(dir: &Path) -> u64 {
    walk(dir).0.iter().map(|f| f.1).sum()
}

/// A valid sample PNG followed by `extra` bytes of noise.
fn padded_png(extra: usize, n: usize) -> Vec<u8> {
    let mut body = std::fs::read(models_dir().join("vision-fashion/samples/0_9.png")).expect("png");
    let mut x = 0x9e37_79b9_u32 ^ n as u32;
    body.extend((0..extra).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    body
}

async fn flood(c: &reqwest::Client, a: &Agent, count: usize, from: usize) {
    for n in from..from + count {
        let r = c
            .post(format!("{}/v1/classify/vision-fashion", a.base))
            .body(padded_png(400_000, n))
            .send()
            .await
            .expect("classify");
        assert_eq!(r.status().as_u16(), 200, "classify {n}");
        let v: Value = r.json().await.expect("json");
        let id = v["request_id"].as_str().expect("request id").to_string();
        let r = c
            .post(format!("{}/v1/feedback", a.base))
            .json(&json!({"request_id": id, "label": "Bag"}))
            .send()
            .await
            .expect("feedback");
        // A correction evicts the oldest correction when the budget is full: always accepted.
        assert_eq!(r.status().as_u16(), 202, "correction {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_flood_stays_within_the_queue_bound_and_is_private() {
    let dir = scratch("hostile-queue-flood");
    let queue = dir.join("queue");
    let c = reqwest::Client::new();
    let a = start(&dir);
    let mut worst = 0;
    for round in 0..4 {
        flood(&c, &a, FLOOD / 4, round * FLOOD / 4).await;
        let bytes = folder_bytes(&queue);
        worst = worst.max(bytes);
        assert!(
            bytes <= BOUND,
            "after {} corrections the queue folder holds {bytes} bytes (bound {BOUND})",
            (round + 1) * FLOOD / 4
        );
    }
    drop(a);
    // After a restart (and more of the flood) the bound still holds.
    let a = start(&dir);
    flood(&c, &a, 20, FLOOD).await;
    let after = folder_bytes(&queue);
    assert!(
        after <= BOUND,
        "after a restart: {after} bytes (bound {BOUND})"
    );
    let (files, dirs) = walk(&queue);
    for (path, _, mode) in &files {
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
    }
    for (path, mode) in &dirs {
        assert_eq!(*mode, 0o700, "{} is mode {mode:o}", path.display());
    }
    eprintln!(
        "{} corrections of ~400 KB against {MAX_BYTES} bytes: worst folder {worst} bytes, after restart {after}; {} files",
        FLOOD + 20,
        files.len()
    );
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}
