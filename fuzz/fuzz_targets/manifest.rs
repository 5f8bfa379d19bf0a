//! Fuzzes `tandem_shared::manifest::Manifest::from_json`: arbitrary text must never panic,
//! and a manifest that parses must serialise to JSON that parses again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_shared::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Manifest::from_json(text) {
        let json = serde_json::to_string(&m).expect("a parsed manifest serialises");
        let again = Manifest::from_json(&json);
        assert!(again.is_ok(), "{json} does not parse again: {again:?}");
    }
});
