//! The IoU tracker of one camera, sans IO (no clock, no frames: the caller hands in each
//! frame's boxes and its time in milliseconds).
//!
//! Each frame, boxes scoring under `min_score` are set aside (never tracked), and the others
//! are matched to the live tracks of their class greedily by IoU, best pair
//! first, a pair counting only at `iou_threshold` or more. Then:
//! - a matched track takes the box and score; a new best score is reported in
//!   [`Step::best`] (the caller keeps this frame as the track's snapshot); a tentative track
//!   seen in `min_hits` frames in a row is confirmed: `appeared`; a confirmed track whose best
//!   score rose or whose box moved (IoU with the box last published under `move_iou`) is
//!   `updated`, at most once per `update_interval_ms` (a change inside the interval waits for
//!   the next frame after it);
//! - an unmatched tentative track is dropped without an event ([`Step::dropped`]): one-frame
//!   flicker never reaches subscribers; an unmatched confirmed track is `gone` after
//!   `max_missed_frames` frames without it, or `max_unseen_ms` without it
//!   ([`Tracker::expire`] checks the time between frames);
//! - an unmatched box starts a tentative track, unless `max_tracks` are live (counted in
//!   [`Tracker::refused`]).
//!
//! Invariants: at most `max_tracks` tracks; every confirmed track gets exactly one `appeared`
//! and one `gone` ([`Tracker::end_all`] on shutdown); ids are unique per tracker.

use super::config::TrackerConfig;
use tandem_shared::detect::Detection;
use tandem_shared::detect::nms::iou;
use tandem_shared::mqtt::{GoneReason, ObjectEventType};

/// One tracked object.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// `{first_seen_ms}-{n}`.
    pub id: String,
    /// Class index.
    pub class: usize,
    /// Class label.
    pub label: String,
    /// Score in the latest frame it was seen in.
    pub score: f32,
    /// Box in that frame.
    pub bbox: [f32; 4],
    /// Best score so far.
    pub best_score: f32,
    /// First frame seen, ms.
    pub first_seen_ms: u64,
    /// Latest frame seen, ms.
    pub last_seen_ms: u64,
    /// Frames seen in.
    pub frames: u64,
    confirmed: bool,
    missed: u32,
    published_bbox: [f32; 4],
    published_ms: u64,
    pending: bool,
}

/// An event to publish: what happened, and the track as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `appeared`, `updated` or `gone`.
    pub kind: ObjectEventType,
    /// Why, for `gone`.
    pub reason: Option<GoneReason>,
    /// The track after this frame.
    pub track: Track,
}

/// What one frame (or one [`Tracker::expire`]) did.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Events, in order.
    pub changes: Vec<Change>,
    /// Ids of tracks (tentative ones included) whose best score is this frame's.
    pub best: Vec<String>,
    /// Ids of tentative tracks dropped without an event.
    pub dropped: Vec<String>,
}

/// The tracks of one camera.
#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    started: u64,
    refused: u64,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(cfg: TrackerConfig) -> Self {
        Self {
            cfg,
            tracks: Vec::new(),
            started: 0,
            refused: 0,
        }
    }

    /// Live tracks, tentative ones included.
    pub fn live(&self) -> usize {
        self.tracks.len()
    }

    /// New objects not tracked because `max_tracks` were live.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The live track `id`.
    pub fn track(&self, id: &str) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// When the next track runs out of `max_unseen_ms` (for a timer between frames).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.tracks
            .iter()
            .map(|t| t.last_seen_ms.saturating_add(self.cfg.max_unseen_ms))
            .min()
    }

    /// One frame's boxes at `now_ms`.
    pub fn observe(&mut self, now_ms: u64, boxes: &[Detection]) -> Step {
        let min = self.cfg.min_score;
        let kept: Vec<Detection> = boxes.iter().filter(|d| d.score >= min).cloned().collect();
        let boxes = kept.as_slice();
        let mut step = Step::default();
        let matched = self.matches(boxes);
        let mut seen = vec![false; self.tracks.len()];
        for &(ti, di) in &matched {
            seen[ti] = true;
            self.hit(ti, &boxes[di], now_ms, &mut step);
        }
        // Tracks not seen in this frame: a tentative one is dropped, a confirmed one missed.
        let cfg = &self.cfg;
        let (mut i, mut gone) = (0, Vec::new());
        self.tracks.retain_mut(|t| {
            i += 1;
            if seen[i - 1] {
                return true;
            }
            if !t.confirmed {
                step.dropped.push(t.id.clone());
                return false;
            }
            t.missed += 1;
            let out = t.missed >= cfg.max_missed_frames
                || now_ms.saturating_sub(t.last_seen_ms) >= cfg.max_unseen_ms;
            if out {
                gone.push(t.clone());
            }
            !out
        });
        step.changes.extend(gone.into_iter().map(|track| Change {
            kind: ObjectEventType::Gone,
            reason: Some(GoneReason::Unseen),
            track,
        }));
        let taken: Vec<usize> = matched.iter().map(|&(_, d)| d).collect();
        for (di, d) in boxes.iter().enumerate() {
            if !taken.contains(&di) {
                self.start(d, now_ms, &mut step);
            }
        }
        step
    }

    /// Ends the tracks unseen for `max_unseen_ms` at `now_ms`, between frames.
    pub fn expire(&mut self, now_ms: u64) -> Step {
        let mut step = Step::default();
        let limit = self.cfg.max_unseen_ms;
        self.tracks.retain(|t| {
            if now_ms.saturating_sub(t.last_seen_ms) < limit {
                return true;
            }
            if t.confirmed {
                step.changes.push(Change {
                    kind: ObjectEventType::Gone,
                    reason: Some(GoneReason::Unseen),
                    track: t.clone(),
                });
            } else {
                step.dropped.push(t.id.clone());
            }
            false
        });
        step
    }

    /// Ends every track (`gone` for the confirmed ones, with `reason`).
    pub fn end_all(&mut self, reason: GoneReason) -> Step {
        let mut step = Step::default();
        for t in self.tracks.drain(..) {
            if t.confirmed {
                step.changes.push(Change {
                    kind: ObjectEventType::Gone,
                    reason: Some(reason),
                    track: t,
                });
            } else {
                step.dropped.push(t.id);
            }
        }
        step
    }

    /// Greedy per-class matching: (track, box) pairs, best IoU first.
    fn matches(&self, boxes: &[Detection]) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            for (di, d) in boxes.iter().enumerate() {
                if t.class == d.class {
                    let o = iou(&t.bbox, &d.bbox);
                    if o >= self.cfg.iou_threshold {
                        pairs.push((o, ti, di));
                    }
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let (mut t_used, mut d_used) = (vec![false; self.tracks.len()], vec![false; boxes.len()]);
        let mut out = Vec::new();
        for (_, ti, di) in pairs {
            if !t_used[ti] && !d_used[di] {
                t_used[ti] = true;
                d_used[di] = true;
                out.push((ti, di));
            }
        }
        out
    }

    fn hit(&mut self, ti: usize, d: &Detection, now_ms: u64, step: &mut Step) {
        let cfg = &self.cfg;
        let t = &mut self.tracks[ti];
        t.frames += 1;
        t.missed = 0;
        t.last_seen_ms = now_ms;
        t.score = d.score;
        t.bbox = d.bbox;
        if d.score > t.best_score {
            t.best_score = d.score;
            step.best.push(t.id.clone());
            t.pending |= t.confirmed;
        }
        if !t.confirmed {
            if t.frames >= u64::from(cfg.min_hits) {
                Self::publish(t, now_ms, ObjectEventType::Appeared, step);
            }
            return;
        }
        t.pending |= iou(&t.bbox, &t.published_bbox) < cfg.move_iou;
        if t.pending && now_ms.saturating_sub(t.published_ms) >= cfg.update_interval_ms {
            Self::publish(t, now_ms, ObjectEventType::Updated, step);
        }
    }

    fn publish(t: &mut Track, now_ms: u64, kind: ObjectEventType, step: &mut Step) {
        t.confirmed = true;
        t.pending = false;
        t.published_bbox = t.bbox;
        t.published_ms = now_ms;
        step.changes.push(Change {
            kind,
            reason: None,
            track: t.clone(),
        });
    }

    fn start(&mut self, d: &Detection, now_ms: u64, step: &mut Step) {
        if self.tracks.len() >= self.cfg.max_tracks {
            self.refused += 1;
            return;
        }
        self.started += 1;
        let mut t = Track {
            id: format!("{now_ms}-{}", self.started),
            class: d.class,
            label: d.label.clone(),
            score: d.score,
            bbox: d.bbox,
            best_score: d.score,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            frames: 1,
            confirmed: false,
            missed: 0,
            published_bbox: d.bbox,
            published_ms: now_ms,
            pending: false,
        };
        step.best.push(t.id.clone());
        if self.cfg.min_hits <= 1 {
            Self::publish(&mut t, now_ms, ObjectEventType::Appeared, step);
        }
        self.tracks.push(t);
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
