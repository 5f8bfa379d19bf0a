//! The durable queue under SIGKILL: `tandem-agent queue-stress` appends from four threads and
//! prints each record once `append` returned (accepted = flushed); it is killed with SIGKILL at
//! a random moment, then restarted on the same directory, at least 20 times. Afterwards every
//! printed record must be in the queue with its class and payload, the epoch must never have
//! changed (the database always reopened), and no seq may have been printed twice (seqs are
//! never reused after a crash). A second run does the same with 100 KB records, which live in
//! payload files: none may be missing or damaged, none may be left over (orphans swept at
//! open), and the watermark must never report a loss.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tandem_agent::queue::{Queue, stress};

/// xorshift64*: enough randomness for kill times, seeded from the clock (printed on failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn no_accepted_record_is_lost_when_the_agent_is_killed() {
    kill_cycles(24, 512);
}

#[test]
fn no_accepted_payload_file_is_lost_or_left_over_when_the_agent_is_killed() {
    kill_cycles(12, 100_000);
}

fn kill_cycles(cycles: usize, payload: usize) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("queue");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let mut printed: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut epochs = Vec::new();
    for cycle in 0..cycles {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-agent"))
            .args(["queue-stress", "--producers", "4", "--payload-bytes"])
            .arg(payload.to_string())
            .arg("--dir")
            .arg(&dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tandem-agent queue-stress");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            // Only whole lines count: a kill may cut the last one.
            while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                if line.ends_with(b"\n") {
                    let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_string());
                }
                line.clear();
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("cycle {cycle}: no output from queue-stress: {e}"));
        let epoch = first
            .strip_prefix("epoch ")
            .unwrap_or_else(|| panic!("cycle {cycle}: first line `{first}`"))
            .to_string();
        epochs.push(epoch);
        let delay = Duration::from_millis(20 + rng.next() % 280);
        let start = Instant::now();
        while start.elapsed() < delay {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
        let status = child.wait().expect("wait");
        assert!(!status.success(), "cycle {cycle}: it was killed");
        reader.join().expect("reader");
        for line in rx.try_iter() {
            let f: Vec<u64> = line
                .split(' ')
                .map(|x| x.parse().unwrap_or_else(|_| panic!("bad line `{line}`")))
                .collect();
            assert_eq!(f.len(), 3, "bad line `{line}`");
            let previous = printed.insert(f[0], (f[1], f[2]));
            assert!(
                previous.is_none(),
                "seq {} acknowledged twice (reused after a crash); seed {seed}",
                f[0]
            );
        }
    }
    assert!(
        epochs.windows(2).all(|w| w[0] == w[1]),
        "the queue was recreated during the test: epochs {epochs:?}; seed {seed}"
    );
    assert!(
        printed.len() >= 1_000_000 / payload.min(10_000),
        "only {} records accepted: too few to mean anything",
        printed.len()
    );

    let q = tandem_agent::queue::store::open_dir(&dir).expect("reopen after the last kill");
    let stats = q.stats();
    assert!(stats.recovery.is_none(), "{:?}", stats.recovery);
    assert_eq!(stats.crc_failures, 0);
    assert_eq!(
        stats.lost, 0,
        "the watermark reported a loss after plain SIGKILLs"
    );
    let held: HashMap<u64, _> = q
        .lease(usize::MAX, usize::MAX)
        .expect("lease")
        .into_iter()
        .map(|d| (d.seq, d))
        .collect();
    let mut lost = Vec::new();
    for (seq, (p, n)) in &printed {
        match held.get(seq) {
            None => lost.push(*seq),
            Some(d) => {
                assert_eq!(d.class, stress::class_of(*p, *n), "seq {seq}");
                assert_eq!(
                    d.payload,
                    stress::payload(*p, *n, payload),
                    "seq {seq} payload"
                );
            }
        }
    }
    lost.sort_unstable();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records lost after {cycles} SIGKILLs (seed {seed}): {:?}",
        lost.len(),
        printed.len(),
        &lost[..lost.len().min(20)]
    );
    let external = held.values().filter(|d| d.payload.len() > 2048).count();
    let files = std::fs::read_dir(dir.join("payloads"))
        .expect("payload folder")
        .count();
    assert_eq!(
        files, external,
        "payload files left over or missing (seed {seed})"
    );
    eprintln!(
        "{cycles} SIGKILL cycles, {payload}-byte records: {} acknowledged records all present ({} held in total, {files} payload files)",
        printed.len(),
        held.len()
    );
}
