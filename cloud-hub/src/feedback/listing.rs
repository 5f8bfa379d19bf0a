//! Reading the feedback store while the hub runs: records in arrival order from a cursor
//! (incremental: a client that keeps the last cursor sees every record once, new ones after
//! it), or newest first (the latest few without reading the rest), each with its split and the records it is linked to (a correction → the answer of its
//! request; an answer → its corrections); and examples collapsed by input (one entry per
//! content digest: its copies, devices, split and its label, a correction's over the cloud
//! model's answer as teacher).

use super::index::trailing_arrival;
use super::split::Split;
use super::store::{FeedbackError, Store, StoredRecord};
use serde::Serialize;
use std::collections::BTreeSet;
use std::ops::Bound;
use tandem_shared::record::{ExampleKind, Outcome};

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T, C> {
    /// The items, in cursor order.
    pub items: Vec<T>,
    /// Pass it as `after` for the next page (the last item's, or the one given when empty).
    pub cursor: C,
    /// Whether more items were there when this page was read.
    pub more: bool,
}

/// A record as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// `device/epoch/seq`.
    pub id: String,
    /// The stored record.
    #[serde(flatten)]
    pub record: StoredRecord,
    /// An example's split (by its input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// How many stored records carry the same input (1: no duplicate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copies: Option<u64>,
    /// A correction: the id of the stored answer of the request it corrects (when that answer
    /// was delivered: hard and degraded examples are, confident answers are not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrects: Option<String>,
    /// An answer: the ids of the corrections of its request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub corrected_by: Vec<String>,
}

/// Where an example's label comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Labelled {
    /// A person's correction (the latest wins).
    Correction,
    /// The cloud model's answer (teacher).
    Teacher,
}

/// One input and everything known about it.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// sha256 of the input, hex (the cursor).
    pub digest: String,
    /// The input's file, relative to the store (`GET /v1/feedback/inputs/{digest}`).
    pub input: String,
    /// `image` or `text`.
    pub input_kind: String,
    /// The model.
    pub model: String,
    /// Its split.
    pub split: Split,
    /// Records carrying it.
    pub copies: u64,
    /// Their ids, oldest first.
    pub records: Vec<String>,
    /// The devices that sent it.
    pub devices: BTreeSet<String>,
    /// When it was first answered (device clock, ms since the Unix epoch).
    pub time_ms: u64,
    /// The label: the latest correction's, else the latest cloud answer's; none without both.
    pub label: Option<String>,
    /// Where `label` comes from.
    pub label_source: Option<Labelled>,
    /// The device's answer (the `via` record's, else the first record's).
    pub local: Option<Outcome>,
    /// How the input reached the hub: the first record's kind that is not a correction
    /// (`hard`, `degraded`, `shadow`), else `correction`.
    pub via: ExampleKind,
    /// Its routing reason then (`low_confidence`, `confident`, `hub_unreachable`, ...).
    pub reason: String,
    /// The cloud model's answer: a record's (hard examples), else the teacher's.
    pub cloud: Option<Outcome>,
}

/// Which examples to list.
#[derive(Debug, Clone, Default)]
pub struct ExampleFilter {
    /// Only this model's.
    pub model: Option<String>,
    /// Only this split.
    pub split: Option<Split>,
    /// Only those with a label.
    pub labelled: bool,
}

/// `device/epoch/seq`.
pub fn record_id(r: &StoredRecord) -> String {
    format!("{}/{}/{}", r.device, r.epoch, r.seq)
}

impl Store {
    pub(super) fn record_at(&self, key: &[u8]) -> Result<Option<StoredRecord>, FeedbackError> {
        self.records_tree()
            .get(key)
            .map_err(|e| self.db_err(e))?
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|e| self.db_err(format!("a stored record does not parse: {e}")))
            })
            .transpose()
    }

    /// The split of the input with this digest.
    pub fn split_of(&self, digest: &[u8; 32]) -> Split {
        Split::of(
            digest,
            self.cfg.split_train_pct,
            self.cfg.split_calibration_pct,
        )
    }

    pub(super) fn listed(&self, record: StoredRecord) -> Result<Listed, FeedbackError> {
        let digest: Option<[u8; 32]> = record
            .digest
            .as_deref()
            .and_then(|d| hex::decode(d).ok()?.try_into().ok());
        let (mut corrects, mut corrected_by) = (None, Vec::new());
        if let Some(ex) = &record.example {
            let me = record_id(&record);
            for (_, key) in self.index.request_records(&record.device, &ex.request_id) {
                let Some(other) = self.record_at(&key)? else {
                    continue;
                };
                let (id, kind) = (record_id(&other), other.example.as_ref().map(|e| e.kind));
                match (ex.kind, kind) {
                    _ if id == me => {}
                    (ExampleKind::Correction, Some(k)) if k != ExampleKind::Correction => {
                        corrects.get_or_insert(id);
                    }
                    (k, Some(ExampleKind::Correction)) if k != ExampleKind::Correction => {
                        corrected_by.push(id)
                    }
                    _ => {}
                }
            }
        }
        Ok(Listed {
            id: record_id(&record),
            split: digest.map(|d| self.split_of(&d)),
            copies: digest.map(|d| self.index.copies(&d)),
            record,
            corrects,
            corrected_by,
        })
    }

    /// Up to `limit` records that arrived after the arrival number `after` (0: from the first),
    /// oldest first; the cursor is the last one listed (pass it as `after`).
    pub fn records_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Page<Listed, u64>, FeedbackError> {
        let range = (Bound::Excluded(after.to_be_bytes()), Bound::Unbounded);
        self.records_page(self.index.arrivals.range(range), after, limit)
    }

    /// Up to `limit` records that arrived before the arrival number `before` (0: from the
    /// newest), newest first; the cursor is the oldest one listed (pass it as `before`). Reads
    /// only what it lists, however many records the store holds.
    pub fn records_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Page<Listed, u64>, FeedbackError> {
        let end = match before {
            0 => Bound::Unbounded,
            b => Bound::Excluded(b.to_be_bytes()),
        };
        let range = (Bound::Unbounded, end);
        self.records_page(self.index.arrivals.range(range).rev(), before, limit)
    }

    /// Up to `limit` records of `arrivals` (in the order given); `cursor` is returned when
    /// none is listed.
    fn records_page(
        &self,
        arrivals: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        mut cursor: u64,
        limit: usize,
    ) -> Result<Page<Listed, u64>, FeedbackError> {
        let mut items = Vec::new();
        let mut more = false;
        for kv in arrivals {
            let (k, v) = kv.map_err(|e| self.db_err(e))?;
            if items.len() >= limit {
                more = true;
                break;
            }
            let Some((_, key)) = super::index::parse_arrival(&v) else {
                continue;
            };
            cursor = k
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(cursor);
            if let Some(r) = self.record_at(key)? {
                items.push(self.listed(r)?);
            }
        }
        Ok(Page {
            items,
            cursor,
            more,
        })
    }

    /// One input's example from its records (oldest first), those of `model` only when given;
    /// `None` when none is an example of it.
    fn example(
        &self,
        digest: &[u8; 32],
        records: Vec<StoredRecord>,
        model: Option<&str>,
    ) -> Option<Example> {
        let records: Vec<StoredRecord> = records
            .into_iter()
            .filter(|r| {
                r.example
                    .as_ref()
                    .is_some_and(|e| model.is_none_or(|m| e.model == m))
            })
            .collect();
        let first = records.first()?;
        let ex = first.example.as_ref()?;
        let mut label = None;
        let mut cloud = None;
        for r in &records {
            let Some(e) = &r.example else { continue };
            if let (ExampleKind::Correction, Some(l)) = (e.kind, &e.label) {
                label = Some(l.clone());
            }
            if let Some(c) = &e.cloud {
                cloud = Some(c.clone());
            }
        }
        if cloud.is_none() {
            cloud = self.teacher_of(digest, &ex.model);
        }
        let teacher = cloud.as_ref().map(|o| o.label.clone());
        let via = records
            .iter()
            .filter_map(|r| r.example.as_ref())
            .find(|e| e.kind != ExampleKind::Correction)
            .unwrap_or(ex);
        let label_source = match (&label, &teacher) {
            (Some(_), _) => Some(Labelled::Correction),
            (None, Some(_)) => Some(Labelled::Teacher),
            (None, None) => None,
        };
        Some(Example {
            digest: hex::encode(digest),
            input: first.input.clone().unwrap_or_default(),
            input_kind: ex.input_kind.clone(),
            model: ex.model.clone(),
            split: self.split_of(digest),
            copies: records.len() as u64,
            records: records.iter().map(record_id).collect(),
            devices: records.iter().map(|r| r.device.clone()).collect(),
            time_ms: ex.time_ms,
            label: label.or(teacher),
            label_source,
            local: via.local.clone().or_else(|| ex.local.clone()),
            via: via.kind,
            reason: via.reason.clone(),
            cloud,
        })
    }

    /// Up to `limit` examples (one per input) whose digest sorts after `after`, matching
    /// `filter`.
    pub fn examples_after(
        &self,
        after: Option<[u8; 32]>,
        limit: usize,
        filter: &ExampleFilter,
    ) -> Result<Page<Example, Option<String>>, FeedbackError> {
        let start = match after {
            Some(d) => {
                let mut k = d.to_vec();
                k.extend_from_slice(&[0xFF; 8]);
                Bound::Excluded(k)
            }
            None => Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut cursor = after.map(hex::encode);
        let mut group: Option<([u8; 32], Vec<StoredRecord>)> = None;
        let mut more = false;
        let mut emit = |g: ([u8; 32], Vec<StoredRecord>), items: &mut Vec<Example>| {
            cursor = Some(hex::encode(g.0));
            let e = self.example(&g.0, g.1, filter.model.as_deref());
            if let Some(e) = e.filter(|e| {
                filter.split.is_none_or(|s| s == e.split) && (!filter.labelled || e.label.is_some())
            }) {
                items.push(e);
            }
        };
        for kv in self.index.inputs.range((start, Bound::Unbounded)) {
            let (k, key) = kv.map_err(|e| self.db_err(e))?;
            let Some(d) = k.get(..32).and_then(|d| <[u8; 32]>::try_from(d).ok()) else {
                continue;
            };
            if trailing_arrival(&k).is_none() {
                continue;
            }
            if group.as_ref().is_some_and(|g| g.0 != d) {
                if items.len() >= limit {
                    more = true;
                    group = None;
                    break;
                }
                emit(group.take().expect("checked just above"), &mut items);
            }
            let rec = self.record_at(&key)?;
            let g = group.get_or_insert_with(|| (d, Vec::new()));
            g.1.extend(rec);
        }
        if let Some(g) = group {
            if items.len() >= limit {
                more = true;
            } else {
                emit(g, &mut items);
            }
        }
        Ok(Page {
            items,
            cursor,
            more,
        })
    }

    /// Every example matching `filter`, in digest order, a page of at most `page` at a time:
    /// what a reader of all of them (calibration, evaluation) walks. It ends after the last
    /// page, or after the first error.
    pub fn example_pages<'a>(
        &'a self,
        filter: &'a ExampleFilter,
        page: usize,
    ) -> impl Iterator<Item = Result<Vec<Example>, FeedbackError>> + 'a {
        // `None`: done; `Some(None)`: from the first digest.
        let mut next: Option<Option<[u8; 32]>> = Some(None);
        std::iter::from_fn(move || {
            let after = next.take()?;
            Some(self.examples_after(after, page, filter).map(|p| {
                if p.more {
                    next = p
                        .cursor
                        .as_deref()
                        .and_then(|c| hex::decode(c).ok()?.try_into().ok())
                        .map(Some);
                }
                p.items
            }))
        })
    }

    /// The file of the input with this digest, when a stored record names it.
    pub fn input_path(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<std::path::PathBuf>, FeedbackError> {
        let Some(kv) = self.index.inputs.scan_prefix(digest).next() else {
            return Ok(None);
        };
        let (_, key) = kv.map_err(|e| self.db_err(e))?;
        Ok(self
            .record_at(&key)?
            .and_then(|r| r.input)
            .map(|rel| self.dir().join(rel)))
    }
}
