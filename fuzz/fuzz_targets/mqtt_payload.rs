//! Fuzzes the MQTT payload decoders (`tandem_shared::mqtt`): status, telemetry, events and
//! command results, and the topic parser. Arbitrary bytes must never panic, and whatever
//! decodes must encode to bytes that decode again (the hub stores and re-serves them).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_shared::mqtt::{CommandResult, Event, Status, Telemetry, Topic};

/// Decodes `bytes` as `T`; when it decodes, its encoding must decode too.
macro_rules! round_trip {
    ($t:ty, $bytes:expr) => {
        if let Ok(v) = <$t>::decode($bytes) {
            let again = <$t>::decode(&v.encode());
            assert!(again.is_ok(), "{v:?} re-encoded does not decode: {again:?}");
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => round_trip!(Status, bytes),
        1 => round_trip!(Telemetry, bytes),
        2 => round_trip!(Event, bytes),
        3 => round_trip!(CommandResult, bytes),
        _ => {
            if let Ok(text) = std::str::from_utf8(bytes) {
                let _ = Topic::parse(text);
            }
        }
    }
});
