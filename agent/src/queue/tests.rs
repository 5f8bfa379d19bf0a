//! Behaviour of [`SledQueue`]: flush before acknowledgement, priority, eviction, CRC failures,
//! unopenable databases, epochs and seqs across reopen. The model-based proptest is in
//! `model_tests.rs`.

use super::writer::FlushStage;
use super::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn cfg(dir: &Path, max_bytes: u64) -> QueueConfig {
    QueueConfig {
        dir: dir.join("q"),
        max_bytes,
        ..QueueConfig::default()
    }
}

fn open(dir: &Path, max_bytes: u64) -> SledQueue {
    SledQueue::open(&cfg(dir, max_bytes)).expect("queue opens")
}

fn all(q: &SledQueue) -> Vec<Delivery> {
    q.lease(usize::MAX, usize::MAX).expect("lease")
}

#[test]
fn delivery_is_by_priority_then_age_and_ack_deletes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let q = open(tmp.path(), 1 << 20);
    let t1 = q.append(Class::Telemetry, b"t1".to_vec()).expect("t1");
    let e1 = q.append(Class::Event, b"e1".to_vec()).expect("e1");
    let c1 = q.append(Class::Correction, b"c1".to_vec()).expect("c1");
    let h1 = q.append(Class::HardExample, b"h1".to_vec()).expect("h1");
    let c2 = q.append(Class::Correction, b"c2".to_vec()).expect("c2");
    assert!(t1 < e1 && e1 < c1 && c1 < h1 && h1 < c2, "seqs increase");
    let got: Vec<_> = all(&q).into_iter().map(|d| d.seq).collect();
    assert_eq!(got, vec![c1, c2, h1, e1, t1]);
    // Leased records are not handed out twice until released.
    assert!(all(&q).is_empty());
    q.release(&[e1]);
    assert_eq!(all(&q)[0].payload, b"e1");
    assert_eq!(q.ack(&[c1, h1, 999_999]).expect("ack"), 2);
    let s = q.stats();
    assert_eq!((s.depth(), s.leased), (3, 3));
    assert_eq!(s.class(Class::Correction).depth, 1);
    assert_eq!(s.bytes(), 3 * 20);
    // The limits: at least one record, then stop before max_bytes of payload.
    q.release(&[c2, e1, t1]);
    assert_eq!(q.lease(10, 1).expect("lease").len(), 1);
    assert_eq!(q.lease(1, usize::MAX).expect("lease").len(), 1);
}

#[test]
fn no_acknowledgement_precedes_its_flush() {
    // The hook makes every flush slow and records how far flushes have completed. A producer
    // answered before its batch's flush returned would see `flushed_through <= seq`.
    let tmp = tempfile::tempdir().expect("tmp");
    let flushed_through = Arc::new(AtomicU64::new(0));
    let f = flushed_through.clone();
    let hook: writer::FlushHook = Arc::new(move |stage, next_seq| match stage {
        FlushStage::Before => std::thread::sleep(std::time::Duration::from_millis(15)),
        FlushStage::After => f.store(next_seq, Ordering::SeqCst),
    });
    let q = Arc::new(SledQueue::open_with(&cfg(tmp.path(), 1 << 20), Some(hook)).expect("open"));
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let q = q.clone();
            let f = flushed_through.clone();
            std::thread::spawn(move || {
                for n in 0..15u8 {
                    let seq = q.append(Class::Event, vec![p, n]).expect("append");
                    let done = f.load(Ordering::SeqCst);
                    assert!(
                        done > seq,
                        "seq {seq} acknowledged before its flush (flushed below {done})"
                    );
                }
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer");
    }
    let s = q.stats();
    assert_eq!(s.depth(), 60);
    assert!(
        s.flushes < 60,
        "producers shared flushes: {} flushes",
        s.flushes
    );
}

#[test]
fn records_are_not_leased_before_their_flush() {
    // Were a record delivered before its flush and then lost in a crash, its seq would be
    // given again to another record, which the hub would drop as a duplicate.
    let tmp = tempfile::tempdir().expect("tmp");
    let (in_flush, flushing) = std::sync::mpsc::sync_channel(8);
    let hook: writer::FlushHook = Arc::new(move |stage, _| {
        if stage == FlushStage::Before {
            let _ = in_flush.try_send(());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    let q = SledQueue::open_with(&cfg(tmp.path(), 1 << 20), Some(hook)).expect("open");
    let pending = q.submit(Class::Correction, b"c".to_vec()).expect("submit");
    flushing.recv().expect("the writer reached the flush");
    assert!(
        all(&q).is_empty(),
        "leased while its flush was still running"
    );
    let seq = pending.wait().expect("accepted");
    assert_eq!(
        all(&q).into_iter().map(|d| d.seq).collect::<Vec<_>>(),
        vec![seq]
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

#[test]
fn acknowledged_records_are_already_in_the_files() {
    // What a kill -9 leaves is what is in the files: copy them the moment append returns and
    // open the copy.
    let tmp = tempfile::tempdir().expect("tmp");
    let q = open(tmp.path(), 1 << 20);
    for i in 0..8u8 {
        let seq = q.append(Class::HardExample, vec![i; 100]).expect("append");
        let snap = tmp.path().join(format!("snap{i}"));
        copy_dir(&tmp.path().join("q"), &snap.join("q"));
        let copy = open(&snap, 1 << 20);
        assert!(copy.stats().recovery.is_none());
        let got = all(&copy);
        assert_eq!(
            got.last().map(|d| (d.seq, d.payload.clone())),
            Some((seq, vec![i; 100]))
        );
        assert_eq!(got.len(), usize::from(i) + 1);
    }
}

#[test]
fn eviction_takes_the_lowest_class_oldest_first_and_counts() {
    let tmp = tempfile::tempdir().expect("tmp");
    // 10 records of 100 payload bytes (118 encoded) fit in 1180 bytes.
    let q = open(tmp.path(), 1180);
    let rec = |c: Class, tag: u8| q.append(c, vec![tag; 100]).expect("append");
    let t = [rec(Class::Telemetry, 0), rec(Class::Telemetry, 1)];
    let e = [rec(Class::Event, 2), rec(Class::Event, 3)];
    let h: Vec<_> = (4..10).map(|i| rec(Class::HardExample, i)).collect();
    assert_eq!(q.stats().bytes(), 1180);
    // A correction evicts the oldest telemetry, then the next one.
    rec(Class::Correction, 10);
    rec(Class::Correction, 11);
    // An event evicts the oldest event (telemetry is gone), not a hard example.
    rec(Class::Event, 12);
    let held: Vec<_> = all(&q).into_iter().map(|d| d.seq).collect();
    assert!(!held.contains(&t[0]) && !held.contains(&t[1]) && !held.contains(&e[0]));
    assert!(held.contains(&e[1]) && h.iter().all(|s| held.contains(s)));
    // Telemetry cannot evict anything: it is refused and counted.
    assert_eq!(
        q.append(Class::Telemetry, vec![0; 100]),
        Err(QueueError::NoRoom {
            class: Class::Telemetry
        })
    );
    let s = q.stats();
    assert_eq!(s.class(Class::Telemetry).evicted, 2);
    assert_eq!(s.class(Class::Event).evicted, 1);
    assert_eq!(s.class(Class::Telemetry).rejected, 1);
    assert_eq!((s.depth(), s.bytes()), (10, 1180));
    // The counters persist.
    drop(q);
    let q = open(tmp.path(), 1180);
    assert_eq!(q.stats().classes, s.classes);
    assert_eq!(
        q.append(Class::Event, vec![0; 2000]),
        Err(QueueError::RecordTooLarge {
            len: 2000,
            limit: 1180 - record::HEADER_LEN
        })
    );
}

#[test]
fn records_evicted_in_their_own_batch_are_never_acknowledged() {
    // A flush interval groups the records in one batch; the budget holds two records.
    let tmp = tempfile::tempdir().expect("tmp");
    let mut c = cfg(tmp.path(), 2 * 118);
    c.flush_interval_ms = 200;
    let q = SledQueue::open(&c).expect("open");
    let pending: Vec<_> = (0..4u8)
        .map(|i| q.submit(Class::Event, vec![i; 100]).expect("submit"))
        .collect();
    let results: Vec<_> = pending.into_iter().map(Pending::wait).collect();
    assert_eq!(
        &results[..2],
        &[
            Err(QueueError::Evicted {
                class: Class::Event
            }),
            Err(QueueError::Evicted {
                class: Class::Event
            })
        ]
    );
    let kept: Vec<_> = results[2..]
        .iter()
        .map(|r| *r.as_ref().expect("kept"))
        .collect();
    assert_eq!(all(&q).into_iter().map(|d| d.seq).collect::<Vec<_>>(), kept);
    assert_eq!(q.stats().class(Class::Event).evicted, 2);
    assert_eq!(q.stats().flushes, 1);
}

#[test]
fn a_record_failing_its_crc_is_skipped_counted_and_removed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (bad, good) = {
        let q = open(tmp.path(), 1 << 20);
        let bad = q
            .append(Class::Event, b"to be corrupted".to_vec())
            .expect("a");
        let good = q.append(Class::Event, b"fine".to_vec()).expect("b");
        (bad, good)
    };
    {
        // Flip one payload bit behind the queue's back, through sled.
        let db = sled::open(tmp.path().join("q")).expect("sled");
        let k = record::key(Class::Event, bad);
        let mut v = db.get(k).expect("get").expect("present").to_vec();
        let last = v.len() - 1;
        v[last] ^= 0x10;
        db.insert(k, v).expect("insert");
        db.flush().expect("flush");
    }
    let q = open(tmp.path(), 1 << 20);
    let got = all(&q);
    assert_eq!(got.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![good]);
    let s = q.stats();
    assert_eq!(s.crc_failures, 1);
    assert_eq!(
        s.depth(),
        1,
        "the corrupt record is removed from the counts"
    );
    q.release(&[good]);
    assert_eq!(all(&q).len(), 1, "and is not found again");
    assert_eq!(q.stats().crc_failures, 1);
}

#[test]
fn a_database_that_will_not_open_is_moved_aside_and_a_fresh_queue_started() {
    let tmp = tempfile::tempdir().expect("tmp");
    let old_epoch = {
        let q = open(tmp.path(), 1 << 20);
        q.append(Class::Event, vec![1; 300]).expect("append");
        q.epoch()
    };
    let dir = tmp.path().join("q");
    for f in ["conf", "db"] {
        std::fs::write(
            dir.join(f),
            b"\x00garbage that is no sled file\xff".repeat(50),
        )
        .expect("w");
    }
    let q = open(tmp.path(), 1 << 20);
    let s = q.stats();
    let r = s.recovery.clone().expect("recovery reported");
    assert!(r.moved_to.starts_with(tmp.path()), "{r:?}");
    assert!(r.moved_to.to_string_lossy().contains("q.corrupt-"), "{r:?}");
    assert!(
        r.moved_to.join("db").is_file(),
        "the old files are kept for inspection"
    );
    assert!(r.lost_files >= 2 && r.lost_bytes > 0, "{r:?}");
    assert_ne!(q.epoch(), old_epoch, "a fresh queue has a new epoch");
    assert_eq!(s.depth(), 0);
    assert_eq!(s.lost, 1, "the old queue's watermark counts what it held");
    assert_eq!(
        q.append(Class::Event, b"x".to_vec()).expect("usable"),
        2,
        "seqs go on past the old queue's"
    );
}

#[test]
fn records_without_a_readable_state_are_moved_aside_with_their_count() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let q = open(tmp.path(), 1 << 20);
        for _ in 0..3 {
            q.append(Class::Event, b"r".to_vec()).expect("append");
        }
    }
    {
        let db = sled::open(tmp.path().join("q")).expect("sled");
        db.insert(record::STATE_KEY, &b"bad"[..]).expect("insert");
        db.flush().expect("flush");
    }
    let q = open(tmp.path(), 1 << 20);
    let r = q.stats().recovery.expect("recovery");
    assert_eq!(r.lost_records, Some(3));
}

#[test]
fn a_locked_database_is_an_error_and_nothing_is_moved() {
    let tmp = tempfile::tempdir().expect("tmp");
    let q = open(tmp.path(), 1 << 20);
    match SledQueue::open(&cfg(tmp.path(), 1 << 20)) {
        Err(QueueError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    let entries = std::fs::read_dir(tmp.path()).expect("ls").count();
    assert_eq!(entries, 1, "nothing moved aside");
    assert!(q.append(Class::Event, b"still fine".to_vec()).is_ok());
}

#[test]
fn epoch_and_seq_survive_reopen_and_seqs_never_repeat() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (epoch, last) = {
        let q = open(tmp.path(), 1 << 20);
        let seqs: Vec<_> = (0..5)
            .map(|_| q.append(Class::Telemetry, b"x".to_vec()).expect("append"))
            .collect();
        assert_eq!(q.ack(&seqs).expect("ack"), 5);
        (q.epoch(), seqs[4])
    };
    let q = open(tmp.path(), 1 << 20);
    assert_eq!(q.epoch(), epoch);
    assert_ne!(epoch, 0);
    assert_eq!(q.stats().depth(), 0);
    assert!(q.append(Class::Telemetry, b"y".to_vec()).expect("append") > last);
}

#[tokio::test]
async fn async_producers_await_acceptance() {
    let tmp = tempfile::tempdir().expect("tmp");
    let q = open(tmp.path(), 1 << 20);
    let p = q.submit(Class::Event, b"async".to_vec()).expect("submit");
    assert_eq!(p.accepted().await, Ok(1));
    drop(q);
}

#[test]
fn records_submitted_before_close_are_still_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let q = open(tmp.path(), 1 << 20);
    let p = q.submit(Class::Event, b"last".to_vec()).expect("submit");
    drop(q);
    assert_eq!(
        p.wait(),
        Ok(1),
        "what was submitted before close is still written"
    );
}
