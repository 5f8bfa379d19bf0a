//! Pre-processing: raw inputs (image files, camera frames, texts) to the tensors a manifest
//! declares.
//!
//! # Layout
//! - [`image`]: decoding (JPEG, PNG, raw frames) with limits, and the per-image pipeline.
//! - [`geometry`]: stretch, centre crop and letterbox as a source rectangle and an offset.
//! - [`jpeg_scaled`]: JPEG at a reduced DCT scale when the model input is much smaller.
//! - [`frame`]: RGB24, NV12, YUYV to packed RGB/gray.
//! - [`resize`]: SIMD antialiased bilinear resize (`fast_image_resize`).
//! - [`tensor`]: normalise and lay out in one pass.
//! - [`scratch`]: per-thread reusable buffers for the per-request arrays.
//! - [`reference`](mod@reference): the earlier path, the reference the fast one is tested against.
//! - `gpu` (feature `gpu`): the wgpu compute path and the start-up measurement; [`choose`].
//! - [`text`]: texts to token ids.

pub mod frame;
pub mod geometry;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod image;
pub mod jpeg_scaled;
pub mod reference;
pub mod resize;
pub mod scratch;
pub mod tensor;
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
    /// Raw frame parameters or bytes that do not fit together.
    #[error("raw frame: {0}")]
    Frame(#[from] tandem_shared::frame::FrameError),
    /// The tokenizer failed.
    #[error("text could not be tokenised: {0}")]
    Tokenize(String),
}

/// The pre-processing path for models taking `p`, and why (logged at model load).
pub fn choose(
    p: &tandem_shared::manifest::ImagePreprocess,
    device: crate::settings::PreprocessDevice,
) -> (image::Backend, String) {
    #[cfg(feature = "gpu")]
    {
        let c = gpu::measure(p, device);
        (c.backend, c.reason)
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (p, device);
        (
            image::Backend::Cpu,
            "built without the `gpu` feature".into(),
        )
    }
}
