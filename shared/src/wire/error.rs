//! Why bytes cannot be framed, decoded or encoded: one error enum for the whole wire module.

/// Why a frame or message cannot be decoded (or, for the limit variants, encoded).
///
/// [`WireError::is_framing`] splits the variants in two: framing errors lose the stream's frame
/// boundaries (close the stream), payload errors reject one frame whose boundaries are intact
/// (answer [`crate::wire::ErrorCode::BadRequest`]; the stream may go on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The first two header bytes are not [`crate::wire::MAGIC`].
    #[error("bad frame magic {got:02x?} (expected \"TD\")")]
    BadMagic {
        /// The two bytes received.
        got: [u8; 2],
    },
    /// The header's version byte is not one this build speaks.
    #[error("unsupported protocol version {got} (this side speaks {supported})")]
    UnsupportedVersion {
        /// Version byte received.
        got: u8,
        /// [`crate::wire::PROTOCOL_VERSION`].
        supported: u8,
    },
    /// The header declares a payload over the receiver's (or sender's) maximum.
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Declared (or encoded) payload length.
        len: u64,
        /// The maximum in force.
        max: u64,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {buffered} bytes buffered, {needed} needed")]
    IncompleteFrame {
        /// Bytes of the unfinished frame received.
        buffered: usize,
        /// Bytes the frame needs (header alone when the header is not complete).
        needed: usize,
    },
    /// A frame kind this build does not know (the frame itself was skipped intact).
    #[error("unknown message kind 0x{0:02x}")]
    UnknownKind(u8),
    /// A field needs more bytes than the payload has left.
    #[error("`{field}` needs {needed} bytes but only {remaining} remain in the payload")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Bytes the field needs (a declared length counts in full).
        needed: u64,
        /// Bytes left in the payload.
        remaining: usize,
    },
    /// Bytes left in the payload after the message's last field.
    #[error("{count} trailing bytes after the message")]
    TrailingBytes {
        /// Leftover bytes.
        count: usize,
    },
    /// A string field is not UTF-8.
    #[error("`{field}` is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A string field is longer than its limit.
    #[error("`{field}` is {len} bytes, over the limit of {max}")]
    StringTooLong {
        /// The field.
        field: &'static str,
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A tag byte (option, input form, dtype) has no meaning.
    #[error("`{field}` tag {got} is not defined")]
    InvalidTag {
        /// The field.
        field: &'static str,
        /// Tag received.
        got: u8,
    },
    /// More tensors than [`crate::wire::MAX_TENSORS`].
    #[error("{count} tensors exceed the limit of {max}")]
    TooManyTensors {
        /// Declared count.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A bundle offer with more than [`crate::wire::MAX_BUNDLE_FILES`] files.
    #[error("{count} files in a bundle offer, more than {max}")]
    TooManyFiles {
        /// Declared count.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A tensor of rank over [`crate::wire::MAX_RANK`].
    #[error("tensor `{tensor}` has rank {rank}, over the limit of {max}")]
    RankTooLarge {
        /// Tensor name.
        tensor: String,
        /// Declared rank.
        rank: usize,
        /// The limit.
        max: usize,
    },
    /// A negative dimension, or a shape whose byte size overflows `u64`.
    #[error("tensor `{tensor}` has an invalid shape {shape:?}")]
    InvalidShape {
        /// Tensor name.
        tensor: String,
        /// Shape received.
        shape: Vec<i64>,
    },
    /// Element count times dtype size differs from the data length.
    #[error(
        "tensor `{tensor}`: shape {shape:?} needs {expected} data bytes but {got} were declared"
    )]
    ShapeMismatch {
        /// Tensor name.
        tensor: String,
        /// Shape received.
        shape: Vec<i64>,
        /// Bytes the shape and dtype need.
        expected: u64,
        /// Bytes declared.
        got: u64,
    },
    /// A field's value is outside what it may hold (a score that is not finite, a top-k of 0,
    /// an index over `u32`, more classes or boxes than [`crate::answer::MAX_PREDICTIONS`]).
    #[error("`{field}`: {reason}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl WireError {
    /// The [`crate::wire::ErrorCode`] a receiver answers a payload error with (docs/wire.md,
    /// "Error handling"): `UnsupportedKind` for a kind it does not know, so a sender can probe
    /// a new kind safely; `BadRequest` for every other error.
    pub fn answer_code(&self) -> crate::wire::ErrorCode {
        match self {
            Self::UnknownKind(_) => crate::wire::ErrorCode::UnsupportedKind,
            _ => crate::wire::ErrorCode::BadRequest,
        }
    }

    /// True when the stream's frame boundaries are lost (or the peer speaks another protocol):
    /// the receiver must stop reading the stream. False when only one frame's payload is bad.
    pub fn is_framing(&self) -> bool {
        matches!(
            self,
            Self::BadMagic { .. }
                | Self::UnsupportedVersion { .. }
                | Self::FrameTooLarge { .. }
                | Self::IncompleteFrame { .. }
        )
    }
}
