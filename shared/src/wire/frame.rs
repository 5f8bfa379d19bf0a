//! Framing: the 8-byte header, [`encode_frame`], and the streaming [`FrameDecoder`] that cuts
//! frames out of bytes as a QUIC stream delivers them.
//!
//! Invariants: the decoder never buffers more than one frame's header and payload plus the
//! last chunk fed; it checks magic, version and declared length as soon as the 8 header bytes
//! are in, before waiting for (or reserving room for) the payload; after a framing error it
//! returns that error forever.

use super::codec::{decode_payload, encode_payload};
use super::message::Message;
use super::{HEADER_LEN, MAGIC, PROTOCOL_VERSION, WireError};

/// One frame cut out of a stream: the kind byte and its payload, not yet decoded. The kind
/// may be one this build does not know; [`Frame::decode`] then says so while the stream stays
/// in sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header's kind byte.
    pub kind: u8,
    /// The payload, exactly the header's declared length.
    pub payload: Vec<u8>,
}

impl Frame {
    /// Decodes the payload into a [`Message`].
    pub fn decode(&self) -> Result<Message, WireError> {
        decode_payload(self.kind, &self.payload)
    }
}

/// Appends one frame (header + payload) carrying `msg` to `out` and returns its length.
///
/// Fails, leaving `out` as it was, when a field breaks a limit (string length, tensor count,
/// rank, shape/data agreement) or the payload exceeds `max_frame_bytes`.
pub fn encode_frame(
    msg: &Message,
    max_frame_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<usize, WireError> {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(msg.kind() as u8);
    out.extend_from_slice(&[0; 4]);
    let result = encode_payload(msg, out).and_then(|()| {
        let len = out.len() - start - HEADER_LEN;
        let max = max_frame_bytes.min(u32::MAX as usize);
        if len > max {
            return Err(WireError::FrameTooLarge {
                len: len as u64,
                max: max as u64,
            });
        }
        Ok(len as u32) // len <= u32::MAX, checked above
    });
    match result {
        Ok(len) => {
            out[start + 4..start + HEADER_LEN].copy_from_slice(&len.to_le_bytes());
            Ok(out.len() - start)
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Encodes `msg` as one frame in a fresh buffer.
pub fn encode_to_vec(msg: &Message, max_frame_bytes: usize) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    encode_frame(msg, max_frame_bytes, &mut out)?;
    Ok(out)
}

/// Cuts frames out of a byte stream fed in arbitrary pieces (sans-IO: the caller reads the
/// QUIC stream and calls [`FrameDecoder::feed`]).
///
/// ```
/// use tandem_shared::wire::{FrameDecoder, Message, encode_to_vec, DEFAULT_MAX_FRAME_BYTES};
/// let bytes = encode_to_vec(&Message::Ping { nonce: 7 }, DEFAULT_MAX_FRAME_BYTES).unwrap();
/// let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
/// dec.feed(&bytes[..3]);
/// assert_eq!(dec.next_message().unwrap(), None);
/// dec.feed(&bytes[3..]);
/// assert_eq!(dec.next_message().unwrap(), Some(Message::Ping { nonce: 7 }));
/// dec.finish().unwrap();
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    pos: usize,
    max_frame_bytes: usize,
    failed: Option<WireError>,
}

impl FrameDecoder {
    /// A decoder that rejects payloads over `max_frame_bytes`
    /// (usually [`super::DEFAULT_MAX_FRAME_BYTES`]).
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            max_frame_bytes,
            failed: None,
        }
    }

    /// Appends bytes read from the stream. Call [`FrameDecoder::next_frame`] until it returns
    /// `Ok(None)` before feeding more, so the buffer stays within one frame plus one chunk.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes fed but not yet returned in a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The kind byte and declared payload length of the frame being assembled, once its 8
    /// header bytes are in and checked (magic, version, the decoder's maximum) but before its
    /// payload is complete: lets a receiver apply a tighter limit per kind, or reserve memory,
    /// before it reads (and buffers) the payload. `None` while no header is complete.
    pub fn pending_header(&self) -> Option<(u8, usize)> {
        if self.failed.is_some() {
            return None;
        }
        parse_header(&self.buf[self.pos..], self.max_frame_bytes)
            .ok()
            .flatten()
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or a framing error
    /// (bad magic, unsupported version, frame too large): the stream is then unusable and
    /// every later call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let rest = &self.buf[self.pos..];
        let (kind, len) = match parse_header(rest, self.max_frame_bytes) {
            Ok(Some(header)) => header,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.failed = Some(e.clone());
                return Err(e);
            }
        };
        let total = HEADER_LEN + len;
        if rest.len() < total {
            return Ok(None);
        }
        let payload = rest[HEADER_LEN..total].to_vec();
        self.pos += total;
        Ok(Some(Frame { kind, payload }))
    }

    /// The next complete frame decoded into a [`Message`]. A payload error (unknown kind,
    /// bad field) consumes that frame only: the caller may answer it and keep reading.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        match self.next_frame()? {
            Some(frame) => frame.decode().map(Some),
            None => Ok(None),
        }
    }

    /// Call at the end of the stream: fails when it ended inside a frame.
    pub fn finish(&self) -> Result<(), WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let rest = &self.buf[self.pos..];
        if rest.is_empty() {
            return Ok(());
        }
        let needed = match rest.first_chunk::<HEADER_LEN>() {
            Some(h) => HEADER_LEN + u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize,
            None => HEADER_LEN,
        };
        Err(WireError::IncompleteFrame {
            buffered: rest.len(),
            needed,
        })
    }
}

/// Checks the header's bytes as far as they have arrived: `Ok(None)` while fewer than
/// [`HEADER_LEN`] are in, else the kind byte and the payload length (at most `max`).
fn parse_header(rest: &[u8], max: usize) -> Result<Option<(u8, usize)>, WireError> {
    match rest {
        [a, ..] if *a != MAGIC[0] => {
            return Err(WireError::BadMagic {
                got: [*a, rest.get(1).copied().unwrap_or(0)],
            });
        }
        [a, b, ..] if *b != MAGIC[1] => return Err(WireError::BadMagic { got: [*a, *b] }),
        [_, _, v, ..] if *v != PROTOCOL_VERSION => {
            return Err(WireError::UnsupportedVersion {
                got: *v,
                supported: PROTOCOL_VERSION,
            });
        }
        _ => {}
    }
    let Some(h) = rest.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    match usize::try_from(len) {
        Ok(n) if n <= max => Ok(Some((h[3], n))),
        _ => Err(WireError::FrameTooLarge {
            len: u64::from(len),
            max: max as u64,
        }),
    }
}
