//! What the broker cannot take goes to the durable queue instead: sampled events and object
//! events (class `event`) and telemetry snapshots (class `telemetry`), kept as shared `record`s and delivered
//! to the hub over QUIC by the delivery loop when it is reachable.
//!
//! Producers never wait: [`Outbox::offer`] is a `try_send` into a bounded channel
//! (`mqtt.max_pending` messages); one task moves what arrives into the queue on the blocking
//! pool, a batch at a time. A message that finds the channel full is dropped, and the caller
//! counts it (`tandem_mqtt_dropped_total`). Once in the queue, its classes' priority and
//! eviction apply (corrections > hard examples > events > telemetry; `queue.max_bytes`), and
//! what is evicted is counted there (`tandem_outbox_evicted_total`).

use super::Class;
use crate::queue::{Class as QueueClass, Queue};
use std::sync::Arc;
use tandem_shared::record::{self, Record};
use tokio::sync::mpsc;

/// Messages moved into the queue per trip to the blocking pool.
const BATCH: usize = 64;

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<(Class, Vec<u8>)>,
}

impl Outbox {
    /// Starts the task that moves offered messages into `queue`; it ends when every [`Outbox`]
    /// is dropped, after moving what was offered. Needs a tokio runtime.
    pub fn start(queue: Arc<dyn Queue>, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(forward(rx, queue));
        Self { tx }
    }

    /// Offers an MQTT payload (telemetry or an event: the JSON it would have published) without
    /// waiting; `false` when the channel is full or the class has no place in the queue
    /// (command results answer a live request: they are not kept).
    pub fn offer(&self, class: Class, payload: Vec<u8>) -> bool {
        class != Class::Results && self.tx.try_send((class, payload)).is_ok()
    }
}

/// The queue record for an MQTT payload; `None` for a class the queue does not keep or a
/// payload that is not JSON.
fn to_record(class: Class, payload: &[u8]) -> Option<(QueueClass, Vec<u8>)> {
    let v = serde_json::from_slice::<serde_json::Value>(payload).ok()?;
    match class {
        Class::Events | Class::Objects => {
            Some((QueueClass::Event, record::encode(&Record::Event(v))))
        }
        Class::Telemetry => Some((QueueClass::Telemetry, record::encode(&Record::Telemetry(v)))),
        Class::Results => None,
    }
}

async fn forward(mut rx: mpsc::Receiver<(Class, Vec<u8>)>, queue: Arc<dyn Queue>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let (q, items) = (queue.clone(), std::mem::take(&mut batch));
        let moved = tokio::task::spawn_blocking(move || {
            for (class, payload) in items {
                let Some((qc, rec)) = to_record(class, &payload) else {
                    tracing::debug!(class = class.as_str(), "not kept offline: not JSON");
                    continue;
                };
                // Accepted once flushed; a refusal or an eviction is counted by the queue.
                if let Err(e) = q.submit(qc, rec) {
                    tracing::debug!(class = class.as_str(), error = %e, "not kept offline");
                }
            }
        })
        .await;
        if moved.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_telemetry_become_their_records() {
        let (qc, rec) = to_record(Class::Events, br#"{"v":1,"label":"cat"}"#).expect("event");
        assert_eq!(qc, QueueClass::Event);
        match record::decode(&rec).expect("record") {
            Record::Event(v) => assert_eq!(v["label"], "cat"),
            other => panic!("{other:?}"),
        }
        let (qc, _) = to_record(Class::Telemetry, br#"{"v":1}"#).expect("telemetry");
        assert_eq!(qc, QueueClass::Telemetry);
        assert!(to_record(Class::Results, br#"{"v":1}"#).is_none());
        assert!(to_record(Class::Events, b"not json").is_none());
    }
}
