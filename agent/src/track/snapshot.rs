//! The snapshot store of one camera: the best-score frame of each track as a JPEG, for
//! `GET /v1/cameras/{camera}/events/{id}/snapshot.jpg`.
//!
//! Bounds (`[cameras.snapshots]`): at most one JPEG per track (a better frame replaces it), at
//! most `max_per_camera` JPEGs and `max_bytes_per_camera` bytes; past either, the least
//! recently stored goes first (the tracks that ended long ago, then the live ones whose best
//! frame is oldest). A frame that came as a JPEG is kept as it came (no decode, no copy: the
//! bytes are shared with the request body); a PNG or raw frame is encoded once, when it
//! becomes a track's best.
//!
//! Every snapshot leaves the device through [`leaving`]: the face blur of `[privacy]`
//! (`crate::privacy`), failing closed.

use bytes::Bytes;
use std::collections::VecDeque;
use tandem_engine::preprocess::image::{Limits, decode};
use tandem_shared::manifest::Color;
use tandem_shared::mqtt::SnapshotRef;

/// Why a frame cannot become a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The frame does not decode (it did for inference, so this is rare: a size limit).
    #[error("snapshot frame does not decode: {0}")]
    Decode(String),
    /// JPEG encoding failed.
    #[error("snapshot JPEG encoding failed: {0}")]
    Encode(String),
}

/// One kept frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The JPEG.
    pub jpeg: Bytes,
    /// When the frame was received, ms since the Unix epoch.
    pub ts_ms: u64,
    /// The object's score in it.
    pub score: f32,
    /// The object's box in it.
    pub bbox: [f32; 4],
}

/// A kept snapshot as a request finds it: the track it is the best frame of, and the model
/// that tracked it (whose `[privacy]` applies).
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// Track id.
    pub track: String,
    /// Detection model.
    pub model: String,
    /// The frame.
    pub snap: Snapshot,
}

/// The JPEGs of one camera's tracks, bounded in count and bytes.
#[derive(Debug)]
pub struct SnapshotStore {
    max_count: usize,
    max_bytes: usize,
    bytes: usize,
    entries: VecDeque<(String, Snapshot)>,
    evicted: u64,
}

impl SnapshotStore {
    /// An empty store; `max_count` 0 keeps nothing.
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Self {
            max_count,
            max_bytes,
            bytes: 0,
            entries: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Keeps `snap` as track `id`'s, replacing its earlier one; evicts the least recently
    /// stored while over a bound. A JPEG larger than the whole byte budget is not kept.
    pub fn put(&mut self, id: &str, snap: Snapshot) {
        self.remove(id);
        if self.max_count == 0 || snap.jpeg.len() > self.max_bytes {
            return;
        }
        self.bytes += snap.jpeg.len();
        self.entries.push_back((id.to_string(), snap));
        while self.entries.len() > self.max_count || self.bytes > self.max_bytes {
            let Some((_, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.jpeg.len();
            self.evicted += 1;
        }
    }

    /// Track `id`'s snapshot.
    pub fn get(&self, id: &str) -> Option<&Snapshot> {
        self.entries.iter().find(|(k, _)| k == id).map(|(_, s)| s)
    }

    /// The snapshot stored last (a better frame of a track makes its snapshot the newest).
    pub fn newest(&self) -> Option<(&str, &Snapshot)> {
        self.entries.back().map(|(k, s)| (k.as_str(), s))
    }

    /// Forgets track `id`'s snapshot (a tentative track dropped).
    pub fn remove(&mut self, id: &str) {
        if let Some(i) = self.entries.iter().position(|(k, _)| k == id)
            && let Some((_, s)) = self.entries.remove(i)
        {
            self.bytes -= s.jpeg.len();
        }
    }

    /// The reference an event carries, when track `id` has a snapshot.
    pub fn reference(&self, camera: &str, id: &str) -> Option<SnapshotRef> {
        self.get(id).map(|s| SnapshotRef {
            path: tandem_shared::mqtt::objects::snapshot_path(camera, id),
            ts_ms: s.ts_ms,
            score: s.score,
            bbox: s.bbox,
        })
    }

    /// JPEGs and bytes kept, and how many were evicted since the start.
    pub fn usage(&self) -> (usize, usize, u64) {
        (self.entries.len(), self.bytes, self.evicted)
    }
}

/// A frame as a JPEG: a JPEG as it is, a PNG or raw frame decoded and encoded at `quality`.
pub fn to_jpeg(frame: &Bytes, limits: &Limits, quality: u8) -> Result<Bytes, SnapshotError> {
    if frame.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(frame.clone());
    }
    let px = decode(frame, Color::Rgb, limits).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode(
            &px.data,
            px.width,
            px.height,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    Ok(Bytes::from(out))
}

/// Every snapshot passes through here on its way off the device (`GET .../snapshot.jpg`):
/// faces blurred where `[privacy]` applies to `model` (detection models by default; the JPEG
/// as kept where it does not, or where no face is found). Fail closed: an error means the
/// snapshot must not leave (no face detector here, or the blur failed; counted by privacy).
pub async fn leaving(
    router: &crate::hybrid::Router,
    model: &str,
    jpeg: Bytes,
) -> Result<Bytes, crate::privacy::PrivacyError> {
    let Some(p) = router.privacy() else {
        return Err(crate::privacy::PrivacyError::NoFaceModel(
            "(no [privacy] on this router)".into(),
        ));
    };
    p.scrub(crate::privacy::Leaving::Snapshot, model, jpeg)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(n: usize) -> Snapshot {
        Snapshot {
            jpeg: Bytes::from(vec![0u8; n]),
            ts_ms: n as u64,
            score: 0.5,
            bbox: [0.0; 4],
        }
    }

    #[test]
    fn bounded_by_count_and_bytes_oldest_first() {
        let mut s = SnapshotStore::new(3, 1000);
        for id in ["a", "b", "c", "d"] {
            s.put(id, snap(100));
        }
        assert!(s.get("a").is_none());
        assert_eq!(s.usage(), (3, 300, 1));
        assert_eq!(s.newest().map(|(k, _)| k), Some("d"));
        // Replacing keeps one per track and makes it the newest.
        s.put("b", snap(200));
        s.put("e", snap(100));
        assert!(s.get("c").is_none() && s.get("b").is_some());
        assert_eq!(s.usage(), (3, 400, 2));
        s.put("f", snap(900));
        assert_eq!(s.usage(), (2, 1000, 4), "d by count, b by bytes");
        s.put("g", snap(1001));
        assert!(s.get("g").is_none(), "larger than the budget: not kept");
        s.remove("f");
        assert_eq!(s.usage(), (1, 100, 4));
        let r = {
            s.put("1-2", snap(10));
            s.reference("porch", "1-2").expect("kept")
        };
        assert_eq!(r.path, "/v1/cameras/porch/events/1-2/snapshot.jpg");
        let mut off = SnapshotStore::new(0, 1000);
        off.put("a", snap(1));
        assert!(off.get("a").is_none());
    }

    #[test]
    fn raw_frames_become_jpegs_and_jpegs_stay_as_they_are() {
        let spec = tandem_shared::frame::FrameSpec {
            format: tandem_shared::frame::FrameFormat::Rgb24,
            width: 8,
            height: 4,
            stride: 24,
        };
        let raw = Bytes::from(spec.encode(&[200u8; 96]).expect("frame"));
        let limits = Limits {
            max_width: 100,
            max_height: 100,
            max_alloc_bytes: 1 << 20,
        };
        let jpeg = to_jpeg(&raw, &limits, 85).expect("encodes");
        assert!(jpeg.starts_with(&[0xFF, 0xD8, 0xFF]));
        let again = to_jpeg(&jpeg, &limits, 85).expect("as is");
        assert_eq!(again.as_ptr(), jpeg.as_ptr(), "not copied");
        assert!(to_jpeg(&Bytes::from_static(b"nope"), &limits, 85).is_err());
    }
}
