//! Reading a device's stream frame by frame within the memory limits ([`super::limits`]): a
//! frame's header is checked against its kind's limit, and its declared length reserved from
//! the connection's and the hub's byte budgets, before its payload is read; the reservation
//! lasts until the next frame is asked for (the caller has handled this one) or the reader is
//! dropped.

use super::limits::QuicLimits;
use std::sync::Arc;
use std::time::Duration;
use tandem_shared::wire::{
    FrameDecoder, Kind, MAX_ERROR_MESSAGE_BYTES, MAX_NAME_BYTES, MAX_PATH_BYTES, Message, WireError,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Largest payload of a frame of `kind` a device may send: the layout's own maximum for the
/// small kinds, `max_frame` for `InferRequest`, `PredictRequest` and `Deliver`, 64 KiB for any other kind (the
/// hub's own kinds and kinds it does not know: read only to be answered `UnsupportedKind`).
pub fn kind_limit(kind: u8, max_frame: usize) -> usize {
    let name = 2 + MAX_NAME_BYTES;
    match Kind::from_u8(kind) {
        Some(Kind::InferRequest | Kind::PredictRequest | Kind::Deliver) => max_frame,
        Some(Kind::Ping | Kind::Pong) => 8,
        Some(Kind::Ack) => 16,
        Some(Kind::Error) => 8 + 2 + 2 + MAX_ERROR_MESSAGE_BYTES,
        Some(Kind::BundleRequest) => 2 * name,
        Some(Kind::ChunkRequest) => 2 * name + 2 + MAX_PATH_BYTES + 16,
        _ => (64 << 10).min(max_frame),
    }
}

/// The byte budgets frames are reserved from: one per connection, one for the hub.
#[derive(Debug, Clone)]
pub(super) struct Budget {
    connection: Arc<Semaphore>,
    hub: Arc<Semaphore>,
    /// The smaller of the two capacities (no reservation may exceed it).
    most: usize,
}

impl Budget {
    /// The hub's budget (shared by every connection).
    pub(super) fn hub(limits: &QuicLimits) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(clamp(limits.max_buffered_bytes)))
    }

    /// A new connection's budget, drawing on `hub` too.
    pub(super) fn connection(limits: &QuicLimits, hub: Arc<Semaphore>) -> Self {
        let own = clamp(limits.max_buffered_bytes_per_connection);
        Self {
            connection: Arc::new(Semaphore::new(own)),
            most: own.min(clamp(limits.max_buffered_bytes)),
            hub,
        }
    }
}

fn clamp(bytes: u64) -> usize {
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize)
}

/// Why no frame came.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// The bytes are not a valid frame (framing or payload error), or a frame is over its
    /// kind's limit (`FrameTooLarge`).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A frame did not complete within the frame timeout.
    #[error("a frame of {len} bytes did not arrive within {ms} ms")]
    Slow {
        /// Declared payload length.
        len: usize,
        /// The timeout.
        ms: u64,
    },
    /// The stream or connection failed.
    #[error("stream read: {0}")]
    Link(String),
}

/// Frames from one stream, within the budgets.
#[derive(Debug)]
pub(super) struct FrameReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    budget: Budget,
    held: Vec<OwnedSemaphorePermit>,
    max_frame: usize,
    timeout: Duration,
}

impl FrameReader {
    pub(super) fn new(recv: quinn::RecvStream, budget: Budget, limits: &QuicLimits) -> Self {
        let max_frame = limits.max_frame_bytes as usize;
        Self {
            recv,
            decoder: FrameDecoder::new(max_frame),
            buf: vec![0u8; READ_CHUNK],
            budget,
            held: Vec::new(),
            max_frame,
            timeout: Duration::from_millis(limits.frame_timeout_ms),
        }
    }

    /// The stream, to stop it.
    pub(super) fn recv(&mut self) -> &mut quinn::RecvStream {
        &mut self.recv
    }

    /// The next message; `Ok(None)` at the end of the stream. The previous message's
    /// reservation is given back first: call this only once that message is handled.
    pub(super) async fn next(&mut self) -> Result<Option<Message>, ReadError> {
        self.held.clear();
        let mut deadline = None;
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame.decode()?));
            }
            if deadline.is_none()
                && let Some((kind, len)) = self.decoder.pending_header()
            {
                let max = kind_limit(kind, self.max_frame);
                if len > max {
                    return Err(WireError::FrameTooLarge {
                        len: len as u64,
                        max: max as u64,
                    }
                    .into());
                }
                deadline = Some((tokio::time::Instant::now() + self.timeout, len));
                self.reserve(len).await?;
            }
            let read = self.recv.read(&mut self.buf);
            let read = match deadline {
                Some((at, len)) => {
                    tokio::time::timeout_at(at, read)
                        .await
                        .map_err(|_| ReadError::Slow {
                            len,
                            ms: self.timeout.as_millis() as u64,
                        })?
                }
                None => read.await,
            };
            match read {
                Ok(Some(n)) => self.decoder.feed(&self.buf[..n]),
                Ok(None) => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
                Err(e) => return Err(ReadError::Link(e.to_string())),
            }
        }
    }

    /// Reserves `len` bytes from the connection's budget, then the hub's (waiting while they
    /// are spent: the peer is flow-controlled meanwhile).
    async fn reserve(&mut self, len: usize) -> Result<(), ReadError> {
        let n = len.min(self.budget.most) as u32; // most <= u32::MAX (clamp)
        if n == 0 {
            return Ok(());
        }
        let closed = |_| ReadError::Link("the hub is stopping".into());
        let own = self
            .budget
            .connection
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(closed)?;
        let hub = self
            .budget
            .hub
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(closed)?;
        self.held.push(own);
        self.held.push(hub);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_kinds_get_their_layouts_limits() {
        let max = 16 << 20;
        assert_eq!(kind_limit(Kind::Ping as u8, max), 8);
        assert_eq!(kind_limit(Kind::Deliver as u8, max), max);
        assert_eq!(kind_limit(Kind::InferRequest as u8, max), max);
        assert_eq!(kind_limit(Kind::PredictRequest as u8, max), max);
        assert!(kind_limit(Kind::ChunkRequest as u8, max) < 2048);
        assert_eq!(kind_limit(0x7f, max), 64 << 10, "unknown kinds");
        assert_eq!(
            kind_limit(Kind::Chunk as u8, max),
            64 << 10,
            "the hub's own kinds"
        );
    }
}
