//! Fuzzes `tandem_shared::oip::decode_request`: arbitrary bodies, with and without an
//! `Inference-Header-Content-Length`, must never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    // mode 0: plain JSON; otherwise a header length taken from the next two bytes.
    if mode == 0 {
        let _ = tandem_shared::oip::decode_request(body, None);
    } else if let [a, b, rest @ ..] = body {
        let header = usize::from(u16::from_le_bytes([*a, *b]));
        let _ = tandem_shared::oip::decode_request(rest, Some(header));
    }
});
