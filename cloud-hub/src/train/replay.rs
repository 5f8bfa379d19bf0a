//! Replay: a share of the model's original training data (the replay set it ships, see
//! [`crate::eval::dataset::replay`]) mixed into a fit on the fleet's feedback, so that a head
//! adapted to a shift keeps what it knew on the data it was built for. Pure: no IO.

use crate::eval::dataset::LabelledSet;

/// How many replay items go with `feedback` items: `share` of the mixed set (`share` in
/// `[0, 1)`), at most `available`, and the whole at most `max` (then the feedback shrinks so
/// that the share holds). Returns `(feedback, replay)` counts.
pub fn counts(feedback: usize, available: usize, share: f64, max: usize) -> (usize, usize) {
    if !(share > 0.0 && share < 1.0) || available == 0 {
        return (feedback.min(max), 0);
    }
    let want = (feedback as f64 * share / (1.0 - share)).round() as usize;
    let replay = want.min(available);
    if feedback + replay <= max {
        return (feedback, replay);
    }
    let replay = ((max as f64 * share).round() as usize).min(replay);
    (max - replay, replay)
}

/// `train` with `share` of replay items from `replay` added after its own (the first ones of
/// the replay set, which ships in a seeded random, class-balanced order), the whole at most
/// `max`; `train` unchanged when there is no replay set or the share is 0.
pub fn mix(
    train: &LabelledSet,
    replay: Option<&LabelledSet>,
    share: f64,
    max: usize,
) -> LabelledSet {
    let available = replay.map_or(0, |r| r.items.len());
    let (nf, nr) = counts(train.items.len(), available, share, max);
    let mut out = LabelledSet {
        name: train.name.clone(),
        labels: train.labels.clone(),
        items: train.items.iter().take(nf).cloned().collect(),
    };
    if let Some(r) = replay.filter(|_| nr > 0) {
        out.name = format!("{}+{}", train.name, r.name);
        out.items.extend(r.items.iter().take(nr).cloned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_holds_within_the_limits() {
        assert_eq!(counts(600, 2000, 0.5, 20_000), (600, 600));
        assert_eq!(counts(600, 2000, 0.25, 20_000), (600, 200));
        assert_eq!(
            counts(600, 300, 0.5, 20_000),
            (600, 300),
            "all the replay set"
        );
        assert_eq!(counts(600, 2000, 0.0, 20_000), (600, 0), "off");
        assert_eq!(counts(600, 0, 0.5, 20_000), (600, 0), "none shipped");
        assert_eq!(
            counts(1000, 2000, 0.5, 1000),
            (500, 500),
            "the share within max"
        );
        assert_eq!(counts(1000, 100, 0.5, 1000), (900, 100));
        assert_eq!(counts(2000, 0, 0.5, 1000), (1000, 0));
    }
}
