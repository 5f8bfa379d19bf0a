//! The tracker on hand-made box sequences.

use super::*;

fn det(class: usize, bbox: [f32; 4], score: f32) -> Detection {
    Detection {
        bbox,
        class,
        label: ["person", "car"][class].into(),
        score,
    }
}

fn cfg() -> TrackerConfig {
    TrackerConfig {
        min_hits: 2,
        max_missed_frames: 3,
        max_unseen_ms: 10_000,
        update_interval_ms: 1000,
        ..Default::default()
    }
}

/// The kinds of a step's events with their track ids.
fn kinds(s: &Step) -> Vec<(ObjectEventType, String)> {
    s.changes
        .iter()
        .map(|c| (c.kind, c.track.id.clone()))
        .collect()
}

const A: [f32; 4] = [10.0, 10.0, 50.0, 90.0];

#[test]
fn appeared_updated_gone_in_order() {
    let mut t = Tracker::new(cfg());
    let s = t.observe(0, &[det(0, A, 0.5)]);
    assert!(s.changes.is_empty(), "one frame is not enough: {s:?}");
    assert_eq!(s.best, vec!["0-1".to_string()]);
    let s = t.observe(100, &[det(0, [12.0, 10.0, 52.0, 90.0], 0.6)]);
    assert_eq!(kinds(&s), vec![(ObjectEventType::Appeared, "0-1".into())]);
    assert_eq!(s.changes[0].track.best_score, 0.6);
    assert_eq!(s.changes[0].track.frames, 2);
    // A better score inside the interval waits for the next frame after it.
    let s = t.observe(500, &[det(0, A, 0.9)]);
    assert!(s.changes.is_empty(), "{s:?}");
    assert_eq!(s.best, vec!["0-1".to_string()]);
    let s = t.observe(1200, &[det(0, A, 0.7)]);
    assert_eq!(kinds(&s), vec![(ObjectEventType::Updated, "0-1".into())]);
    assert_eq!(
        (s.changes[0].track.best_score, s.changes[0].track.score),
        (0.9, 0.7)
    );
    assert!(s.best.is_empty());
    // Nothing new: no event.
    let s = t.observe(2500, &[det(0, A, 0.8)]);
    assert!(s.changes.is_empty(), "{s:?}");
    // Three frames without it: gone.
    for ms in [2600, 2700] {
        assert!(t.observe(ms, &[]).changes.is_empty());
    }
    let s = t.observe(2800, &[]);
    assert_eq!(kinds(&s), vec![(ObjectEventType::Gone, "0-1".into())]);
    assert_eq!(s.changes[0].reason, Some(GoneReason::Unseen));
    assert_eq!(s.changes[0].track.last_seen_ms, 2500);
    assert_eq!(t.live(), 0);
}

#[test]
fn a_moving_box_is_updated_and_a_still_one_is_not() {
    let mut t = Tracker::new(cfg());
    t.observe(0, &[det(0, A, 0.5)]);
    t.observe(100, &[det(0, A, 0.5)]);
    // Moves a little each frame (IoU with the previous frame stays high), so the track
    // follows it; once the box is far enough from the one published, `updated`.
    let mut updates = 0;
    for i in 1..=10u16 {
        let dx = f32::from(i) * 6.0;
        let s = t.observe(
            100 + 1100 * u64::from(i),
            &[det(0, [10.0 + dx, 10.0, 50.0 + dx, 90.0], 0.5)],
        );
        updates += s.changes.len();
        assert!(s.best.is_empty());
    }
    assert!((2..=4).contains(&updates), "{updates} updates");
    assert_eq!(t.live(), 1);
}

#[test]
fn one_frame_flicker_never_appears() {
    let mut t = Tracker::new(cfg());
    let s = t.observe(0, &[det(0, A, 0.9)]);
    assert!(s.changes.is_empty());
    let s = t.observe(100, &[]);
    assert!(s.changes.is_empty());
    assert_eq!(s.dropped, vec!["0-1".to_string()]);
    assert_eq!(t.live(), 0);
}

#[test]
fn classes_and_overlaps_match_separately() {
    let mut t = Tracker::new(cfg());
    let b = [200.0, 10.0, 260.0, 90.0];
    t.observe(0, &[det(0, A, 0.5), det(1, A, 0.5), det(0, b, 0.5)]);
    let s = t.observe(100, &[det(0, b, 0.6), det(1, A, 0.6), det(0, A, 0.6)]);
    let ids: Vec<String> = s.changes.iter().map(|c| c.track.id.clone()).collect();
    assert_eq!(
        ids,
        vec!["0-1", "0-2", "0-3"],
        "each box kept its own track"
    );
    let labels: Vec<&str> = s.changes.iter().map(|c| c.track.label.as_str()).collect();
    assert_eq!(labels, vec!["person", "car", "person"]);
    assert_eq!(s.changes[2].track.bbox, b);
    // A box of another class at the same place starts a new track.
    let s = t.observe(200, &[det(1, b, 0.9)]);
    assert!(s.changes.is_empty());
    assert_eq!(t.live(), 4);
}

#[test]
fn greedy_matching_gives_each_box_its_best_track() {
    let mut t = Tracker::new(TrackerConfig {
        min_hits: 1,
        ..cfg()
    });
    let left = [0.0, 0.0, 100.0, 100.0];
    let right = [60.0, 0.0, 160.0, 100.0];
    t.observe(0, &[det(0, left, 0.5), det(0, right, 0.5)]);
    // Both boxes moved right a bit: the left one now overlaps both tracks, but the best
    // pairs keep the ids in place.
    let s = t.observe(
        100,
        &[
            det(0, [70.0, 0.0, 170.0, 100.0], 0.6),
            det(0, [10.0, 0.0, 110.0, 100.0], 0.6),
        ],
    );
    assert!(s.dropped.is_empty());
    assert_eq!(s.best, vec!["0-1".to_string(), "0-2".to_string()]);
    assert_eq!(t.live(), 2);
}

#[test]
fn time_ends_tracks_between_frames() {
    let mut t = Tracker::new(TrackerConfig {
        max_unseen_ms: 1000,
        ..cfg()
    });
    t.observe(0, &[det(0, A, 0.5)]);
    t.observe(100, &[det(0, A, 0.5)]);
    t.observe(150, &[det(1, A, 0.5)]);
    assert_eq!(t.next_deadline_ms(), Some(1100));
    assert!(t.expire(1099).changes.is_empty());
    let s = t.expire(1100);
    assert_eq!(kinds(&s), vec![(ObjectEventType::Gone, "0-1".into())]);
    assert!(s.dropped.is_empty());
    let s = t.expire(1150);
    assert!(s.changes.is_empty());
    assert_eq!(s.dropped, vec!["150-2".to_string()]);
    assert_eq!(t.next_deadline_ms(), None);
    // A long gap between frames also ends a track, on the next frame.
    t.observe(5000, &[det(0, A, 0.5)]);
    t.observe(5100, &[det(0, A, 0.5)]);
    let s = t.observe(9000, &[det(1, A, 0.5)]);
    assert_eq!(kinds(&s), vec![(ObjectEventType::Gone, "5000-3".into())]);
}

#[test]
fn shutdown_ends_every_confirmed_track_and_the_cap_holds() {
    let mut t = Tracker::new(TrackerConfig {
        max_tracks: 2,
        ..cfg()
    });
    let boxes: Vec<Detection> = (0..4u8)
        .map(|i| {
            let x = f32::from(i) * 100.0;
            det(0, [x, 0.0, x + 50.0, 50.0], 0.5)
        })
        .collect();
    t.observe(0, &boxes);
    assert_eq!((t.live(), t.refused()), (2, 2));
    let s = t.observe(100, &boxes[..1]);
    assert_eq!(kinds(&s), vec![(ObjectEventType::Appeared, "0-1".into())]);
    assert_eq!(s.dropped, vec!["0-2".to_string()]);
    let s = t.end_all(GoneReason::Shutdown);
    assert_eq!(kinds(&s), vec![(ObjectEventType::Gone, "0-1".into())]);
    assert_eq!(s.changes[0].reason, Some(GoneReason::Shutdown));
    assert_eq!(t.live(), 0);
}

#[test]
fn boxes_under_min_score_are_never_tracked() {
    let mut t = Tracker::new(TrackerConfig {
        min_score: 0.35,
        ..cfg()
    });
    // An object the detector answers at 0.2-0.34 (the cloud's answer threshold) makes no track.
    for (i, score) in [0.2, 0.3, 0.34].into_iter().enumerate() {
        let s = t.observe(i as u64 * 100, &[det(0, A, score)]);
        assert_eq!(s, Step::default(), "score {score}");
        assert_eq!(t.live(), 0);
    }
    // At the bar it is tracked, and appears after min_hits frames as before.
    t.observe(300, &[det(0, A, 0.35)]);
    let s = t.observe(400, &[det(0, A, 0.5)]);
    assert_eq!(kinds(&s), vec![(ObjectEventType::Appeared, "300-1".into())]);
    // A confirmed track's box under the bar counts as a miss, not a sighting.
    let s = t.observe(500, &[det(0, A, 0.3)]);
    assert!(s.changes.is_empty() && s.best.is_empty(), "{s:?}");
    assert_eq!(t.track("300-1").map(|x| x.frames), Some(2));
}
