//! Raw camera frames on the local API: `?format=rgb24|nv12|yuyv&width=W&height=H[&stride=S]`
//! with the pixels as the body (stride defaults to the row's bytes). The frame is checked
//! (precise 400 on bad dimensions, stride or length) and wrapped in the `TFRM` header the
//! engine decodes (`tandem_shared::frame`).

use super::error::ApiError;
use axum::body::Bytes;
use serde::Deserialize;
use tandem_shared::frame::{FrameFormat, FrameSpec};

/// Query parameters of a raw frame; all absent for a JPEG/PNG body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameQuery {
    /// `rgb24`, `nv12` or `yuyv`.
    pub format: Option<String>,
    /// Width, pixels.
    pub width: Option<u32>,
    /// Height, pixels.
    pub height: Option<u32>,
    /// Bytes between rows of the first plane (default: width's bytes, no padding).
    pub stride: Option<u32>,
}

/// The body as the engine takes it: as it is for an encoded image, or a checked raw frame.
pub fn body(q: &FrameQuery, body: Bytes) -> Result<Bytes, ApiError> {
    let Some(format) = &q.format else {
        if q.width.is_some() || q.height.is_some() || q.stride.is_some() {
            return Err(ApiError::BadRequest(
                "width, height and stride describe a raw frame: give `format` too".into(),
            ));
        }
        return Ok(body);
    };
    let format: FrameFormat = format
        .parse()
        .map_err(|e: tandem_shared::frame::FrameError| ApiError::BadRequest(e.to_string()))?;
    let (Some(width), Some(height)) = (q.width, q.height) else {
        return Err(ApiError::BadRequest(format!(
            "a {format} frame needs `width` and `height`"
        )));
    };
    let stride = match q.stride {
        Some(s) => s,
        None => u32::try_from(format.row_bytes(width))
            .map_err(|_| ApiError::BadRequest(format!("width {width} is too large")))?,
    };
    let spec = FrameSpec {
        format,
        width,
        height,
        stride,
    };
    spec.encode(&body)
        .map(Bytes::from)
        .map_err(|e| ApiError::BadRequest(format!("raw frame: {e}")))
}
