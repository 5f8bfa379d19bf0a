//! The hub link, the store-and-forward queue and the feedback side in Prometheus text (the
//! agent's `/metrics`), from the same counters the code keeps for itself.

use super::Uplink;
use crate::feedback::Feedback;
use crate::queue::Class;
use std::sync::atomic::Ordering::Relaxed;
use tandem_engine::metrics::{write_family as family, write_one as one};

/// Appends the link's, the queue's and the feedback side's metrics to `out`.
pub fn render(out: &mut String, uplink: Option<&Uplink>, feedback: Option<&Feedback>) {
    if let Some(u) = uplink {
        let s = u.status();
        one(
            out,
            "tandem_hub_connected",
            "gauge",
            "1 while the QUIC connection to the hub is up and trusted.",
            f64::from(u8::from(s.connected)),
        );
        one(
            out,
            "tandem_hub_connects_total",
            "counter",
            "QUIC connections to the hub established.",
            s.connects as f64,
        );
        one(
            out,
            "tandem_hub_disconnects_total",
            "counter",
            "QUIC connections to the hub lost (closed, refused, silent).",
            s.disconnects as f64,
        );
        let (sent, accepted) = u.zero_rtt();
        one(
            out,
            "tandem_hub_zero_rtt_attempts_total",
            "counter",
            "Reconnections that sent their first request as 0-RTT data.",
            sent as f64,
        );
        one(
            out,
            "tandem_hub_zero_rtt_accepted_total",
            "counter",
            "0-RTT attempts the hub accepted.",
            accepted as f64,
        );
        let d = u.delivery_stats();
        one(
            out,
            "tandem_outbox_delivered_total",
            "counter",
            "Queued records the hub acknowledged (then deleted here).",
            d.acked.load(Relaxed) as f64,
        );
        one(
            out,
            "tandem_outbox_delivery_failures_total",
            "counter",
            "Delivery rounds that failed (their records are kept and sent again).",
            d.failed_rounds.load(Relaxed) as f64,
        );
    }
    let Some(f) = feedback else { return };
    let q = f.queue().stats();
    let per = |get: fn(&crate::queue::ClassStats) -> u64| -> Vec<(String, f64)> {
        Class::ALL
            .iter()
            .map(|c| {
                (
                    tandem_engine::exposition::labels(&[("class", c.as_str())]),
                    get(&q.class(*c)) as f64,
                )
            })
            .collect()
    };
    family(
        out,
        "tandem_outbox_records",
        "gauge",
        "Records waiting in the durable queue, by class.",
        &per(|c| c.depth),
    );
    family(
        out,
        "tandem_outbox_bytes",
        "gauge",
        "Bytes of records in the durable queue (what queue.max_bytes counts), by class.",
        &per(|c| c.bytes),
    );
    family(
        out,
        "tandem_outbox_evicted_total",
        "counter",
        "Records evicted to stay within queue.max_bytes, by class.",
        &per(|c| c.evicted),
    );
    family(
        out,
        "tandem_outbox_refused_total",
        "counter",
        "Records refused because everything queued ranked higher, by class.",
        &per(|c| c.rejected),
    );
    one(
        out,
        "tandem_outbox_max_bytes",
        "gauge",
        "The queue's byte budget (queue.max_bytes).",
        q.max_bytes as f64,
    );
    one(
        out,
        "tandem_outbox_crc_failures_total",
        "counter",
        "Queued records dropped because they failed their CRC.",
        q.crc_failures as f64,
    );
    one(
        out,
        "tandem_outbox_lost_total",
        "counter",
        "Accepted records found missing when the queue opened (its files were damaged).",
        q.lost as f64,
    );
    one(
        out,
        "tandem_outbox_recovered",
        "gauge",
        "1 when the queue's database would not open and was replaced at start.",
        f64::from(u8::from(q.recovery.is_some())),
    );
    let s = f.stats();
    one(
        out,
        "tandem_feedback_examples_queued_total",
        "counter",
        "Hard examples queued for the hub.",
        s.queued.load(Relaxed) as f64,
    );
    one(
        out,
        "tandem_feedback_examples_dropped_total",
        "counter",
        "Hard examples dropped because feedback.max_pending were waiting.",
        s.dropped.load(Relaxed) as f64,
    );
    one(
        out,
        "tandem_feedback_examples_skipped_total",
        "counter",
        "Eligible answers not kept (sample rate or caps).",
        f.skipped() as f64,
    );
    one(
        out,
        "tandem_feedback_corrections_total",
        "counter",
        "Corrections accepted (on disk).",
        s.corrections.load(Relaxed) as f64,
    );
    one(
        out,
        "tandem_feedback_shadow_samples_total",
        "counter",
        "Confident answers sent to the hub as shadow samples (feedback.shadow_enabled).",
        s.shadow.load(Relaxed) as f64,
    );
    one(
        out,
        "tandem_feedback_shadow_skipped_total",
        "counter",
        "Confident answers not sent as shadow samples (shadow_rate, per-minute cap, byte budget).",
        f.shadow_skipped() as f64,
    );
}
