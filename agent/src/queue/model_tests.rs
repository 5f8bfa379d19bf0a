//! Model-based test: random sequences of appends (one at a time and in bursts that share
//! write batches), acks, leases, releases and reopens run against [`SledQueue`] and a plain
//! in-memory model of the policy; contents, order, seqs and every counter must agree.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const MAX_BYTES: u64 = 2048;

#[derive(Debug, Clone)]
enum Op {
    Append(Class, usize),
    Burst(Vec<(Class, usize)>),
    AckHeld(usize),
    AckUnknown,
    Lease(usize),
    ReleaseAll,
    Reopen,
}

fn class() -> impl Strategy<Value = Class> {
    prop::sample::select(Class::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (class(), 0usize..400).prop_map(|(c, l)| Op::Append(c, l)),
        2 => prop::collection::vec((class(), 0usize..400), 1..6).prop_map(Op::Burst),
        1 => (class(), 2100usize..2200).prop_map(|(c, l)| Op::Append(c, l)),
        3 => any::<usize>().prop_map(Op::AckHeld),
        1 => Just(Op::AckUnknown),
        2 => (1usize..6).prop_map(Op::Lease),
        1 => Just(Op::ReleaseAll),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Default)]
struct Model {
    held: BTreeMap<(Class, Seq), Vec<u8>>,
    leased: BTreeSet<Seq>,
    next_seq: Seq,
    evicted: [u64; 4],
    rejected: [u64; 4],
}

impl Model {
    fn bytes(&self) -> u64 {
        self.held
            .values()
            .map(|p| record::encoded_len(p.len()) as u64)
            .sum()
    }

    /// The policy, stated directly: evict the lowest class (not above the new record's), oldest
    /// first; when nothing of that rank or lower is held, refuse the new record.
    fn append(&mut self, class: Class, payload: Vec<u8>) -> Result<Seq, QueueError> {
        let limit = record::MAX_PAYLOAD_BYTES.min(MAX_BYTES as usize - record::HEADER_LEN);
        if payload.len() > limit {
            return Err(QueueError::RecordTooLarge {
                len: payload.len(),
                limit,
            });
        }
        let len = record::encoded_len(payload.len()) as u64;
        while self.bytes() + len > MAX_BYTES {
            let victim = self
                .held
                .keys()
                .filter(|(c, _)| *c >= class)
                .max_by_key(|(c, s)| (*c, std::cmp::Reverse(*s)))
                .copied();
            match victim {
                None => {
                    self.rejected[class.index()] += 1;
                    return Err(QueueError::NoRoom { class });
                }
                Some(k) => {
                    self.held.remove(&k);
                    self.evicted[k.0.index()] += 1;
                }
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.held.insert((class, seq), payload);
        Ok(seq)
    }

    fn lease(&mut self, n: usize) -> Vec<(Seq, Class, Vec<u8>)> {
        let out: Vec<_> = self
            .held
            .iter()
            .filter(|((_, s), _)| !self.leased.contains(s))
            .take(n)
            .map(|((c, s), p)| (*s, *c, p.clone()))
            .collect();
        self.leased.extend(out.iter().map(|(s, _, _)| *s));
        out
    }
}

fn check(q: &SledQueue, m: &Model) -> Result<(), TestCaseError> {
    let s = q.stats();
    for c in Class::ALL {
        let held: Vec<_> = m.held.iter().filter(|((k, _), _)| *k == c).collect();
        let cs = s.class(c);
        prop_assert_eq!(cs.depth, held.len() as u64, "depth of {:?}", c);
        let bytes: u64 = held
            .iter()
            .map(|(_, p)| record::encoded_len(p.len()) as u64)
            .sum();
        prop_assert_eq!(cs.bytes, bytes, "bytes of {:?}", c);
        prop_assert_eq!(cs.evicted, m.evicted[c.index()], "evicted {:?}", c);
        prop_assert_eq!(cs.rejected, m.rejected[c.index()], "rejected {:?}", c);
    }
    prop_assert!(s.bytes() <= MAX_BYTES);
    prop_assert_eq!(s.next_seq, m.next_seq);
    prop_assert_eq!(s.leased, m.leased.len() as u64);
    prop_assert_eq!(s.crc_failures, 0);
    Ok(())
}

fn reopen(dir: &std::path::Path, interval: u64) -> SledQueue {
    let c = QueueConfig {
        dir: dir.join("q"),
        max_bytes: MAX_BYTES,
        flush_interval_ms: interval,
        ..QueueConfig::default()
    };
    SledQueue::open(&c).expect("open")
}

fn run(ops: Vec<Op>, interval: u64) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut q = reopen(tmp.path(), interval);
    let epoch = q.epoch();
    let mut m = Model {
        next_seq: 1,
        ..Model::default()
    };
    let mut tag = 0u8;
    let mut payload = |len: usize| {
        tag = tag.wrapping_add(1);
        (0..len)
            .map(|i| tag.wrapping_add(i as u8))
            .collect::<Vec<u8>>()
    };
    for op in ops {
        match op {
            Op::Append(c, len) => {
                let p = payload(len);
                prop_assert_eq!(q.append(c, p.clone()), m.append(c, p));
            }
            Op::Burst(items) => {
                let mut waits = Vec::new();
                for (c, len) in items {
                    let p = payload(len);
                    waits.push((q.submit(c, p.clone()).expect("submit"), m.append(c, p)));
                }
                for (pending, expected) in waits {
                    match (pending.wait(), expected) {
                        (Err(QueueError::Evicted { class }), Ok(seq)) => {
                            // Evicted by a later record of the same batch: the model must
                            // have evicted it too.
                            prop_assert!(!m.held.contains_key(&(class, seq)));
                        }
                        (got, want) => prop_assert_eq!(got, want),
                    }
                }
            }
            Op::AckHeld(i) => {
                if m.held.is_empty() {
                    continue;
                }
                let (c, s) = *m.held.keys().nth(i % m.held.len()).expect("in range");
                prop_assert_eq!(q.ack(&[s]).expect("ack"), 1);
                m.held.remove(&(c, s));
                m.leased.remove(&s);
            }
            Op::AckUnknown => {
                prop_assert_eq!(q.ack(&[m.next_seq + 1000]).expect("ack"), 0);
            }
            Op::Lease(n) => {
                let got: Vec<_> = q
                    .lease(n, usize::MAX)
                    .expect("lease")
                    .into_iter()
                    .map(|d| (d.seq, d.class, d.payload))
                    .collect();
                prop_assert_eq!(got, m.lease(n));
            }
            Op::ReleaseAll => {
                let all: Vec<_> = m.leased.iter().copied().collect();
                q.release(&all);
                m.leased.clear();
            }
            Op::Reopen => {
                drop(q);
                q = reopen(tmp.path(), interval);
                prop_assert_eq!(q.epoch(), epoch);
                m.leased.clear();
            }
        }
        check(&q, &m)?;
    }
    // Finally everything held, in delivery order, with its payload.
    let all: Vec<_> = m.leased.iter().copied().collect();
    q.release(&all);
    m.leased.clear();
    let got: Vec<_> = q
        .lease(usize::MAX, usize::MAX)
        .expect("lease")
        .into_iter()
        .map(|d| (d.seq, d.class, d.payload))
        .collect();
    prop_assert_eq!(got, m.lease(usize::MAX));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sled_queue_matches_the_model(
        ops in prop::collection::vec(op(), 1..40),
        interval in prop_oneof![Just(0u64), Just(3u64)],
    ) {
        run(ops, interval)?;
    }
}
