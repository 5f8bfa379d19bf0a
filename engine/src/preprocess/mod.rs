//! Pre-processing: raw inputs (image files, texts) to the tensors a manifest declares.

pub mod image;
pub mod text;

/// Why an input cannot be turned into a tensor. All are the caller's mistake (HTTP 4xx).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreprocessError {
    /// Neither JPEG nor PNG.
    #[error("input is not a JPEG or PNG image ({0})")]
    UnsupportedFormat(String),
    /// The decoder refused the bytes (truncated, corrupt).
    #[error("image could not be decoded: {0}")]
    Decode(String),
    /// Declared dimensions over the configured limits (decompression-bomb guard).
    #[error("image is {width}x{height}, over the limit of {max_width}x{max_height} pixels")]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Limit.
        max_width: u32,
        /// Limit.
        max_height: u32,
    },
    /// Empty or whitespace-only text.
    #[error("text is empty")]
    EmptyText,
    /// The tokenizer failed.
    #[error("text could not be tokenised: {0}")]
    Tokenize(String),
}
