//! Fuzzes the wire `FrameDecoder` and payload decoders: arbitrary bytes, fed in pieces whose
//! sizes come from the input, must never panic; every message that decodes must re-encode to
//! the same frame bytes and decode again to an equal message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_shared::wire::{FrameDecoder, encode_to_vec};

/// Small enough that the length check is exercised, large enough for real messages.
const MAX_FRAME_BYTES: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut dec = FrameDecoder::new(MAX_FRAME_BYTES);
    for chunk in stream.chunks(step) {
        dec.feed(chunk);
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    if let Ok(msg) = frame.decode() {
                        let bytes = encode_to_vec(&msg, MAX_FRAME_BYTES)
                            .expect("a decoded message re-encodes");
                        assert_eq!(bytes[3], frame.kind);
                        assert_eq!(&bytes[8..], &frame.payload[..], "re-encoding is exact");
                        let mut again = FrameDecoder::new(MAX_FRAME_BYTES);
                        again.feed(&bytes);
                        let back = again.next_message().expect("decodes again");
                        assert_eq!(back, Some(msg));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(e.is_framing(), "next_frame returns framing errors only");
                    return;
                }
            }
        }
    }
    let _ = dec.finish();
});
