//! The queue's disk: its folder stays within the footprint bound under cycles of large and
//! small records (append, acknowledge, evict), also after reopening; files are private; damage
//! that makes sled lose flushed batches is detected, counted, and starts a new epoch.

use super::store::{FOOTPRINT_FACTOR, FOOTPRINT_SLACK_BYTES};
use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A linear congruential generator (Knuth's MMIX constants): record sizes and classes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }
}

fn open(dir: &Path, max_bytes: u64) -> SledQueue {
    SledQueue::open(&QueueConfig {
        dir: dir.to_path_buf(),
        max_bytes,
        ..QueueConfig::default()
    })
    .expect("queue opens")
}

fn bound(max_bytes: u64) -> u64 {
    FOOTPRINT_FACTOR * max_bytes + FOOTPRINT_SLACK_BYTES
}

/// Each round fills the queue to twice its budget (evicting) with records of `lo..hi` bytes,
/// then acknowledges what `keep` leaves; the folder is measured after every round.
fn cycles(q: &SledQueue, rng: &mut Rng, rounds: usize, lo: usize, hi: usize, keep: usize) -> u64 {
    let max = q.stats().max_bytes;
    let mut worst = 0;
    for round in 0..rounds {
        let mut added = 0u64;
        let mut pending = Vec::new();
        while added < 2 * max {
            let len = rng.between(lo, hi);
            let class = Class::ALL[(rng.next() % 4) as usize];
            added += len as u64;
            pending.push(q.submit(class, vec![round as u8; len]).expect("submit"));
        }
        for p in pending {
            // Evicted in their own batch or refused (a full budget of higher classes) is fine.
            let _ = p.wait();
        }
        let full = q.disk_bytes();
        worst = worst.max(full);
        assert!(
            full <= bound(max),
            "round {round}, full: the folder holds {full} bytes, over {} (max_bytes {max})",
            bound(max)
        );
        let held = q.lease(usize::MAX, usize::MAX).expect("lease");
        let acked: Vec<_> = held.iter().skip(keep).map(|d| d.seq).collect();
        q.ack(&acked).expect("ack");
        q.release(&held.iter().map(|d| d.seq).collect::<Vec<_>>());
        let bytes = q.disk_bytes();
        worst = worst.max(bytes);
        assert!(
            bytes <= bound(max),
            "round {round}: the folder holds {bytes} bytes, over {} (max_bytes {max})",
            bound(max)
        );
    }
    worst
}

#[test]
fn large_records_free_their_space_on_ack_and_eviction_and_after_reopen() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("q");
    let max = 8 << 20;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let q = open(&dir, max);
    let worst = cycles(&q, &mut rng, 6, 100_000, 1_000_000, 3);
    eprintln!("large records: worst footprint {worst} bytes for max_bytes {max}");
    // Everything acknowledged: the payload files are gone at once.
    let held: Vec<_> = q.lease(usize::MAX, usize::MAX).expect("lease");
    q.ack(&held.iter().map(|d| d.seq).collect::<Vec<_>>())
        .expect("ack");
    assert_eq!(q.stats().depth(), 0);
    let files = std::fs::read_dir(dir.join("payloads"))
        .expect("payloads")
        .count();
    assert_eq!(files, 0, "acknowledged records left payload files");
    let empty = q.disk_bytes();
    drop(q);
    let q = open(&dir, max);
    assert!(q.disk_bytes() <= empty.max(FOOTPRINT_SLACK_BYTES));
    let worst = cycles(&q, &mut rng, 2, 100_000, 1_000_000, 0);
    assert!(worst <= bound(max));
}

#[test]
fn a_flood_of_mixed_records_stays_within_the_bound() {
    // Corrections carrying images, hard examples and small telemetry in one budget: the
    // attack that grew sled's blob files to 1.8 GB against 64 MiB.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("q");
    let max = 4 << 20;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let q = open(&dir, max);
    let small = cycles(&q, &mut rng, 4, 64, 2_000, 10);
    let mixed = cycles(&q, &mut rng, 4, 64, 300_000, 10);
    eprintln!("small records: worst {small} bytes; mixed: worst {mixed}; max_bytes {max}");
    drop(q);
    let q = open(&dir, max);
    assert!(q.disk_bytes() <= bound(max));
    cycles(&q, &mut rng, 2, 20_000, 60_000, 0);
}

#[test]
fn files_and_folders_are_private_from_creation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("q");
    let q = open(&dir, 1 << 20);
    q.append(Class::Correction, vec![1; 10_000]).expect("large");
    q.append(Class::Event, vec![2; 10]).expect("small");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("payloads")), 0o700);
    assert_eq!(mode(&dir.join("blobs")), 0o700);
    for f in ["db", "conf", "watermark"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    for e in std::fs::read_dir(dir.join("payloads")).expect("list") {
        assert_eq!(mode(&e.expect("entry").path()), 0o600);
    }
}

/// Writes `n` corrections (one flush each), then 64 KiB of garbage into the middle of sled's
/// file, as the issue did.
fn damaged_queue(dir: &Path, n: u64) -> (u64, Seq) {
    let q = open(dir, 8 << 20);
    let epoch = q.epoch();
    let mut last = 0;
    for i in 0..n {
        last = q
            .append(Class::Correction, format!("label {i}").into_bytes())
            .expect("append");
    }
    drop(q);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let db = dir.join("db");
    let mut bytes = std::fs::read(&db).expect("read db");
    let at = bytes.len() / 3;
    let end = (at + 64 * 1024).min(bytes.len());
    for (i, b) in bytes[at..end].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151) ^ 0x5a;
    }
    std::fs::write(&db, &bytes).expect("damage db");
    (epoch, last)
}

#[test]
fn records_lost_to_damage_are_counted_and_a_new_epoch_starts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("q");
    let (epoch, last) = damaged_queue(&dir, 30);
    let q = open(&dir, 8 << 20);
    let s = q.stats();
    let held = q.lease(usize::MAX, usize::MAX).expect("lease").len() as u64;
    assert_ne!(q.epoch(), epoch, "a new epoch after a loss");
    assert!(s.lost > 0, "the loss is counted: {s:?}");
    assert_eq!(
        s.lost + held,
        30,
        "every accepted record is held or counted lost"
    );
    let next = q
        .append(Class::Correction, b"after".to_vec())
        .expect("append");
    assert!(
        next > last,
        "seq {next} reused (last before the damage {last})"
    );
    drop(q);
    // The count is kept, and a clean reopen changes nothing more.
    let q = open(&dir, 8 << 20);
    assert_eq!(q.stats().lost, s.lost);
    assert_eq!(q.epoch(), s.epoch);
}
