//! The agent↔hub wire protocol (QUIC, ALPN `tandem/1`): constants, limits and re-exports of
//! the sans-IO framing ([`FrameDecoder`], [`encode_frame`]) and messages ([`Message`]).
//!
//! Each frame is an 8-byte header (magic `"TD"`, version, kind, payload length `u32` LE) and a
//! payload of hand-written little-endian fields. `docs/wire.md` is the byte-by-byte reference,
//! with the limits, the receiver's reaction to each error, and the versioning and idempotency
//! rules. Frames carry no device id: the hub takes identity from the TLS client certificate.
//!
//! Invariants: decoding never panics and never allocates more than the bytes received justify
//! (every declared length is checked against what remains first); encoding checks the same
//! limits as decoding, so every frame that encodes decodes back to an equal message, and every
//! frame that decodes re-encodes to the same bytes.

mod buf;
mod codec;
mod error;
mod frame;
mod message;
mod predict;

pub use codec::decode_payload;
pub use error::WireError;
pub use frame::{Frame, FrameDecoder, encode_frame, encode_to_vec};
pub use message::{BundleFile, DType, ErrorCode, Input, Kind, Message, Tensor, Timing};

/// QUIC ALPN protocol id; a new id (`tandem/2`) comes with a new [`PROTOCOL_VERSION`].
pub const ALPN: &[u8] = b"tandem/1";

/// QUIC ALPN of the hub's enrolment endpoint (server authentication only; `Enrol` → `Issued`
/// or `Error`, docs/wire.md "Certificates"). Frames as on `tandem/1`.
pub const ENROL_ALPN: &[u8] = b"tandem-enrol/1";

/// Largest frame payload on the enrolment endpoint (an `Enrol` with a request is about 1 KiB).
pub const MAX_ENROL_FRAME_BYTES: usize = 64 * 1024;

/// The header's version byte for this layout.
pub const PROTOCOL_VERSION: u8 = 1;

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"TD";

/// Bytes in a frame header: magic (2), version (1), kind (1), payload length (4).
pub const HEADER_LEN: usize = 8;

/// Default payload limit (16 MiB) for [`FrameDecoder::new`] and [`encode_frame`].
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// Longest model name, model version or tensor name, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Longest [`Message::Error`] message, in UTF-8 bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// Most tensors in one request or response.
pub const MAX_TENSORS: usize = 64;

/// Highest tensor rank.
pub const MAX_RANK: usize = 8;

/// Longest file path in a bundle offer or chunk request, in UTF-8 bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Most files in a bundle offer.
pub const MAX_BUNDLE_FILES: usize = 4096;

/// Largest `Chunk` a hub sends (a download streams a file in pieces of this size).
pub const MAX_CHUNK_BYTES: usize = 1 << 20;
