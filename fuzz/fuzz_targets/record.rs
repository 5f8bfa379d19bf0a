//! Fuzzes `tandem_shared::record::decode`: arbitrary `Deliver` payloads must never panic, and
//! whatever decodes must encode back to bytes that decode again.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = tandem_shared::record::decode(data) {
        let again = tandem_shared::record::decode(&tandem_shared::record::encode(&r));
        assert!(again.is_ok(), "{r:?} did not survive a round trip: {again:?}");
    }
});
