//! Unit tests of the link: what happens to queued events when a connection drops.

use super::link::{Handler, Outgoing, salvage_events};
use crate::telemetry::Class;
use rumqttc::{EventLoop, MqttOptions, Publish, QoS, Request};
use std::sync::Mutex;
use tandem_shared::mqtt::Topic;

/// Records what it is handed.
#[derive(Default)]
struct Keeper(Mutex<Vec<Outgoing>>);

impl Handler for Keeper {
    fn online(&self) -> Vec<u8> {
        Vec::new()
    }

    fn command(&self, _name: &str, _payload: &[u8]) -> Vec<Outgoing> {
        Vec::new()
    }

    fn undelivered(&self, event: Outgoing) {
        self.0.lock().expect("not poisoned").push(event);
    }
}

#[test]
fn a_dropped_connection_hands_its_waiting_events_over() {
    let mut el = EventLoop::new(MqttOptions::new("cam-01", "localhost", 8883), 8);
    let publish = |topic: String, body: &[u8]| {
        Request::Publish(Publish::new(topic, QoS::AtMostOnce, body.to_vec()))
    };
    el.pending.extend([
        publish(Topic::telemetry("cam-01"), b"t"),
        publish(Topic::events("cam-01"), b"e1"),
        publish(Topic::status("cam-01"), b"s"),
        publish(Topic::events("cam-01"), b"e2"),
    ]);
    let keeper = Keeper::default();
    salvage_events(&mut el, &keeper);
    let kept = keeper.0.into_inner().expect("not poisoned");
    let bodies: Vec<&[u8]> = kept.iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(bodies, [&b"e1"[..], &b"e2"[..]]);
    assert!(kept.iter().all(|m| m.class == Class::Events));
    let left: Vec<String> = el
        .pending
        .iter()
        .filter_map(|r| match r {
            Request::Publish(p) => Some(p.topic.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(left, [Topic::telemetry("cam-01"), Topic::status("cam-01")]);
}
