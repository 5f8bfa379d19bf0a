//! The face blur's counters in Prometheus text (the agent's `/metrics`) and in MQTT telemetry,
//! from the same [`PrivacyStats`].

use super::{Leaving, Privacy, PrivacyStats};
use std::sync::atomic::Ordering::Relaxed;
use tandem_engine::metrics::{write_family as family, write_one as one};
use tandem_shared::mqtt::payload::PrivacyCounters;

/// Appends the blur's metrics to `out`.
pub fn render(out: &mut String, p: &Privacy) {
    let s = p.stats();
    one(
        out,
        "tandem_privacy_images_checked_total",
        "counter",
        "Images leaving the device that the face detector checked first.",
        s.images_checked.load(Relaxed) as f64,
    );
    one(
        out,
        "tandem_privacy_images_blurred_total",
        "counter",
        "Images that left the device with at least one face blurred.",
        s.images_blurred.load(Relaxed) as f64,
    );
    one(
        out,
        "tandem_privacy_faces_blurred_total",
        "counter",
        "Face boxes blurred in images leaving the device.",
        s.faces_blurred.load(Relaxed) as f64,
    );
    let refused: Vec<(String, f64)> = Leaving::ALL
        .iter()
        .map(|l| {
            (
                tandem_engine::exposition::labels(&[("path", l.as_str())]),
                s.refused(*l) as f64,
            )
        })
        .collect();
    family(
        out,
        "tandem_privacy_refused_total",
        "counter",
        "Images kept on the device because their faces could not be blurred, by path.",
        &refused,
    );
}

/// The counters for MQTT telemetry.
pub fn telemetry(s: &PrivacyStats) -> PrivacyCounters {
    PrivacyCounters {
        images_checked: s.images_checked.load(Relaxed),
        images_blurred: s.images_blurred.load(Relaxed),
        faces_blurred: s.faces_blurred.load(Relaxed),
        refused: Leaving::ALL
            .iter()
            .map(|l| (l.as_str().to_string(), s.refused(*l)))
            .filter(|(_, n)| *n > 0)
            .collect(),
    }
}
