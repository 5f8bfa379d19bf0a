//! The feedback store's data hygiene on real sled files (issue 13 item 6): cursor paging sees
//! every record once, also across new arrivals and a reopen, and newest first backwards; retention evicts the oldest by
//! count and by age, counts each eviction and deletes an input file only when no record names
//! it; splits by input digest never share an input and cover every input once.

use std::collections::{BTreeMap, BTreeSet};
use tandem_hub::feedback::{ExampleFilter, FeedbackConfig, Split, Store};
use tandem_shared::record::{self, ExampleKind, ExampleMeta, Record};

fn text_example(text: &str, request: &str) -> Vec<u8> {
    record::encode(&Record::Example {
        meta: Box::new(ExampleMeta {
            kind: ExampleKind::Hard,
            request_id: request.into(),
            model: "text-sentiment".into(),
            time_ms: 1,
            input_kind: "text".into(),
            reason: "low_confidence".into(),
            local: None,
            cloud: None,
            label: None,
            boxes: None,
        }),
        input: text.as_bytes().to_vec(),
    })
}

fn all_ids(store: &Store, mut cursor: u64, page: usize) -> (Vec<String>, u64) {
    let mut ids = Vec::new();
    loop {
        let p = store.records_after(cursor, page).expect("page");
        ids.extend(p.items.iter().map(|l| l.id.clone()));
        cursor = p.cursor;
        if !p.more {
            return (ids, cursor);
        }
    }
}

#[test]
fn cursor_pages_see_every_record_once_across_arrivals_and_reopen() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    for s in 1..=10u64 {
        let p = text_example(&format!("text {s}"), &format!("r{s}"));
        // Devices interleaved: key order (device, epoch, seq) is not arrival order.
        let device = if s % 2 == 0 { "a-cam" } else { "z-cam" };
        store.ingest(device, &[(1, s, &p)]).expect("ingest");
    }
    let (ids, cursor) = all_ids(&store, 0, 3);
    assert_eq!(ids.len(), 10);
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        10,
        "no record twice"
    );
    assert_eq!(ids[0], "z-cam/1/1", "arrival order");
    assert_eq!(ids[1], "a-cam/1/2");
    drop(store);
    // Reopened: the cursor still means the same place; only new records follow it.
    let store = Store::open(dir.path()).expect("reopen");
    let p = text_example("text 11", "r11");
    store.ingest("a-cam", &[(1, 11, &p)]).expect("ingest");
    let (new, _) = all_ids(&store, cursor, 3);
    assert_eq!(new, vec!["a-cam/1/11".to_string()]);
    let (again, _) = all_ids(&store, 0, 4);
    assert_eq!(again.len(), 11);

    // Newest first: the same records backwards, page by page from the cursor `before`.
    let (mut back, mut before) = (Vec::new(), 0);
    loop {
        let p = store.records_before(before, 3).expect("page");
        assert!(p.items.len() <= 3);
        back.extend(p.items.iter().map(|l| l.id.clone()));
        before = p.cursor;
        if !p.more {
            break;
        }
    }
    assert_eq!(back, again.iter().rev().cloned().collect::<Vec<_>>());
    assert_eq!(before, 1, "the last page ends at the first arrival");
    assert!(store.records_before(1, 3).expect("page").items.is_empty());
    let newest = store.records_before(0, 1).expect("page");
    assert_eq!(newest.items[0].id, "a-cam/1/11");
    assert!(newest.more);
}

#[test]
fn retention_evicts_oldest_first_counts_and_keeps_shared_inputs() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = FeedbackConfig {
        max_records: 3,
        max_age_ms: 0,
        ..FeedbackConfig::default()
    };
    let store = Store::open(dir.path()).expect("open").with_config(cfg);
    // Records 1 and 4 carry the same input; 2 and 3 their own.
    let inputs = ["same", "two", "three", "same", "five"];
    for (i, t) in inputs.iter().enumerate() {
        let p = text_example(t, &format!("r{i}"));
        store
            .ingest("cam", &[(1, i as u64 + 1, &p)])
            .expect("ingest");
    }
    assert_eq!(store.held(), 3);
    assert_eq!(
        store
            .stats()
            .evicted
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let (ids, _) = all_ids(&store, 0, 10);
    assert_eq!(ids, vec!["cam/1/3", "cam/1/4", "cam/1/5"]);
    let files: BTreeSet<String> = std::fs::read_dir(dir.path().join("inputs"))
        .expect("inputs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.len(),
        3,
        "`two` deleted; `same` kept for record 4: {files:?}"
    );
    let digest = |t: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(t.as_bytes()))
    };
    assert!(files.contains(&format!("{}.txt", digest("same"))));
    assert!(!files.contains(&format!("{}.txt", digest("two"))));
    // The surviving copy of `same` is alone now.
    let listed = store.records_after(0, 10).expect("page");
    assert_eq!(listed.items[1].copies, Some(1));

    // By age: everything stored is older than the limit a day later.
    drop(store);
    let cfg = FeedbackConfig {
        max_records: 0,
        max_age_ms: 1000,
        ..FeedbackConfig::default()
    };
    let store = Store::open(dir.path()).expect("reopen").with_config(cfg);
    let now = tandem_hub::fleet::link::now_ms();
    assert_eq!(store.enforce_retention(now).expect("retention"), 0, "young");
    assert_eq!(
        store
            .enforce_retention(now + 86_400_000)
            .expect("retention"),
        3
    );
    assert_eq!(store.held(), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("inputs"))
            .expect("inputs")
            .count(),
        0
    );
}

#[test]
fn splits_never_share_an_input_and_cover_every_input_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path())
        .expect("open")
        .with_config(FeedbackConfig::default());
    // 200 inputs, each delivered by two devices.
    for i in 0..200u64 {
        let p = text_example(&format!("sentence {i}"), &format!("r{i}"));
        store.ingest("cam-1", &[(1, i + 1, &p)]).expect("ingest");
        store.ingest("cam-2", &[(1, i + 1, &p)]).expect("ingest");
    }
    let mut by_split: BTreeMap<Split, BTreeSet<String>> = BTreeMap::new();
    for split in [Split::Train, Split::Calibration, Split::Test] {
        let filter = ExampleFilter {
            split: Some(split),
            ..ExampleFilter::default()
        };
        // Walked in pages of 7 (`Store::example_pages`, what calibration and evaluation read).
        for page in store.example_pages(&filter, 7) {
            let page = page.expect("page");
            assert!(page.len() <= 7);
            for e in &page {
                assert_eq!(e.split, split);
                assert_eq!(
                    e.copies, 2,
                    "both devices' records collapse into one example"
                );
                assert!(
                    by_split.entry(split).or_default().insert(e.digest.clone()),
                    "once"
                );
            }
        }
    }
    let (train, cal, test) = (
        &by_split[&Split::Train],
        &by_split[&Split::Calibration],
        &by_split[&Split::Test],
    );
    assert!(train.is_disjoint(cal) && train.is_disjoint(test) && cal.is_disjoint(test));
    assert_eq!(train.len() + cal.len() + test.len(), 200);
    assert!(
        train.len() > 110 && !cal.is_empty() && !test.is_empty(),
        "70/15/15: {} {} {}",
        train.len(),
        cal.len(),
        test.len()
    );
    // Every record of an input names the same split.
    let (ids, _) = all_ids(&store, 0, 1000);
    assert_eq!(ids.len(), 400);
    let page = store.records_after(0, 1000).expect("page");
    let mut seen: BTreeMap<String, Split> = BTreeMap::new();
    for l in &page.items {
        let (d, s) = (
            l.record.digest.clone().expect("digest"),
            l.split.expect("split"),
        );
        assert_eq!(*seen.entry(d).or_insert(s), s);
    }
}
