//! The queue's on-disk record: priority [`Class`], the sled key, and the value's byte layout
//! with its CRC. Pure code, no IO.
//!
//! # Layout
//! Key (9 bytes): `class rank u8`, `seq u64 big-endian`, so sled's key order is delivery
//! order: highest priority first, then oldest. The queue's own state lives under
//! [`STATE_KEY`], which sorts after every record.
//!
//! Value (version 1), all integers little-endian:
//! ```text
//! offset size field
//! 0      1    version       1
//! 1      1    class rank    must equal the key's
//! 2      8    seq           must equal the key's
//! 10     4    payload_len   must equal the bytes that follow
//! 14     4    crc32 (IEEE)  over bytes 0..14, then the payload
//! 18     n    payload
//! ```
//!
//! A payload above [`INLINE_MAX_BYTES`] is kept in a payload file of its own (`payload.rs`):
//! the file holds the whole version-1 value above, and sled holds only its 18-byte header with
//! the version byte set to [`VERSION_EXTERNAL`] (same class, seq, length and CRC), so the file
//! is checked against both its own header and the index on every read.
//!
//! # Invariants
//! - A value decodes only if every header field agrees with its key and with its length, and
//!   the CRC matches; anything else is [`RecordError`], never a panic.
//! - A record's size in the byte budget is its encoded value length ([`encoded_len`]).

/// Value format version written by this build.
pub const VERSION: u8 = 1;
/// Version byte of an index value whose record lives in a payload file.
pub const VERSION_EXTERNAL: u8 = 2;
/// Largest payload kept inside sled; larger ones go to payload files. sled 0.34 stores any
/// page over `segment_size / 4` (128 KiB) as a blob file that it does not reliably remove,
/// and a tree node of many mid-sized values crosses that too; small records stay inline
/// (one fsync per batch instead of one per record).
pub const INLINE_MAX_BYTES: usize = 2048;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 18;
/// Largest payload one record may carry (a hard example is an encoded image: tens of KiB).
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;
/// Key length: class rank + big-endian seq.
pub const KEY_LEN: usize = 9;
/// Key of the queue's state (epoch, next seq, counters); sorts after every record key.
pub const STATE_KEY: &[u8] = b"\xffstate";

/// Sequence number of a record within its queue's epoch; strictly increasing, never reused.
pub type Seq = u64;

/// What a record is, which sets its priority. Delivered highest first; evicted lowest first.
///
/// The issue groups corrections with hard examples above events above telemetry; within that
/// group corrections (a person's label, small and rare) rank above hard examples (large).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// A label a person gave: the most valuable, delivered first, evicted last.
    Correction = 0,
    /// An input the edge model was unsure of (or the hub could not answer): training data.
    HardExample = 1,
    /// A sampled per-inference event.
    Event = 2,
    /// Periodic counters; the first to go when the budget is full.
    Telemetry = 3,
}

impl Class {
    /// Every class, highest priority first.
    pub const ALL: [Class; 4] = [
        Class::Correction,
        Class::HardExample,
        Class::Event,
        Class::Telemetry,
    ];

    /// 0 for the highest priority; the first byte of the key.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The class for a rank byte.
    pub fn from_rank(r: u8) -> Option<Self> {
        Self::ALL.get(usize::from(r)).copied()
    }

    /// Index into per-class arrays.
    pub fn index(self) -> usize {
        usize::from(self.rank())
    }

    /// Lower-case name, as in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Correction => "correction",
            Self::HardExample => "hard_example",
            Self::Event => "event",
            Self::Telemetry => "telemetry",
        }
    }
}

/// Why a stored value is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The key is not 9 bytes with a known class rank.
    #[error("bad record key ({len} bytes)")]
    BadKey {
        /// Key length.
        len: usize,
    },
    /// Fewer bytes than a header.
    #[error("record of {len} bytes is shorter than its header")]
    Short {
        /// Value length.
        len: usize,
    },
    /// A format version this build does not read.
    #[error("record version {0} is not supported")]
    Version(u8),
    /// A header field disagrees with the key or the value's length.
    #[error("record header disagrees with its key or length: {0}")]
    Header(&'static str),
    /// The CRC does not match the bytes.
    #[error("record crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
}

/// The sled key of `(class, seq)`.
pub fn key(class: Class, seq: Seq) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[0] = class.rank();
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The class and seq a key names.
pub fn parse_key(k: &[u8]) -> Result<(Class, Seq), RecordError> {
    let bad = || RecordError::BadKey { len: k.len() };
    let (&r, rest) = k.split_first().ok_or_else(bad)?;
    let class = Class::from_rank(r).ok_or_else(bad)?;
    let seq: [u8; 8] = rest.try_into().map_err(|_| bad())?;
    Ok((class, u64::from_be_bytes(seq)))
}

/// Bytes a record with this payload occupies in the budget.
pub fn encoded_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len
}

/// Encodes a record value. The caller has checked `payload.len() <= MAX_PAYLOAD_BYTES`.
pub fn encode(class: Class, seq: Seq, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(encoded_len(payload.len()));
    v.push(VERSION);
    v.push(class.rank());
    v.extend_from_slice(&seq.to_le_bytes());
    // MAX_PAYLOAD_BYTES fits a u32; saturating keeps a wrong caller detectable by decode.
    v.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    let crc = crc(&v, payload);
    v.extend_from_slice(&crc.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// Whether a payload of this length is kept in a payload file.
pub fn is_external_len(payload_len: usize) -> bool {
    payload_len > INLINE_MAX_BYTES
}

/// The index value for a record kept in a payload file: the header of its encoded value
/// (`encode`'s first [`HEADER_LEN`] bytes) with the version byte set to [`VERSION_EXTERNAL`].
pub fn external_index(encoded: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&encoded[..HEADER_LEN]);
    h[0] = VERSION_EXTERNAL;
    h
}

/// Whether an index value names a payload file.
pub fn is_external(value: &[u8]) -> bool {
    value.first() == Some(&VERSION_EXTERNAL)
}

/// Bytes the record behind a stored value occupies in the budget: its encoded length, also
/// for a record kept in a payload file (whose index value is only the header).
pub fn held_len(value: &[u8]) -> usize {
    if is_external(value) && value.len() >= HEADER_LEN {
        encoded_len(le_u32(&value[10..14]) as usize)
    } else {
        value.len()
    }
}

/// Checks an external index value against its key and returns it for [`decode_external`].
pub fn check_index(key: &[u8], value: &[u8]) -> Result<(), RecordError> {
    let (class, seq) = parse_key(key)?;
    if value.len() != HEADER_LEN {
        return Err(RecordError::Header("index length"));
    }
    if value[1] != class.rank() || le_u64(&value[2..10]) != seq {
        return Err(RecordError::Header("index key"));
    }
    Ok(())
}

/// Decodes a payload file's bytes for the record whose index value is `index`: the file must
/// decode on its own and carry the very header the index holds (length and CRC included).
pub fn decode_external<'a>(
    key: &[u8],
    index: &[u8],
    file: &'a [u8],
) -> Result<RecordRef<'a>, RecordError> {
    check_index(key, index)?;
    let r = decode(key, file)?;
    if file[1..HEADER_LEN] != index[1..] {
        return Err(RecordError::Header("payload file disagrees with its index"));
    }
    Ok(r)
}

/// A decoded record, borrowing the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Its class.
    pub class: Class,
    /// Its sequence number.
    pub seq: Seq,
    /// The producer's bytes.
    pub payload: &'a [u8],
}

/// Decodes and checks the value stored under `key`.
pub fn decode<'a>(key: &[u8], value: &'a [u8]) -> Result<RecordRef<'a>, RecordError> {
    let (class, seq) = parse_key(key)?;
    if value.len() < HEADER_LEN {
        return Err(RecordError::Short { len: value.len() });
    }
    let (head, payload) = value.split_at(HEADER_LEN);
    if head[0] != VERSION {
        return Err(RecordError::Version(head[0]));
    }
    if head[1] != class.rank() {
        return Err(RecordError::Header("class"));
    }
    if le_u64(&head[2..10]) != seq {
        return Err(RecordError::Header("seq"));
    }
    if le_u32(&head[10..14]) as usize != payload.len() {
        return Err(RecordError::Header("payload_len"));
    }
    let stored = le_u32(&head[14..18]);
    let computed = crc(&head[..14], payload);
    if stored != computed {
        return Err(RecordError::Crc { stored, computed });
    }
    Ok(RecordRef {
        class,
        seq,
        payload,
    })
}

fn crc(head: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(payload);
    h.finalize()
}

pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

pub(crate) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_key_order() {
        let v = encode(Class::Event, 42, b"hello");
        assert_eq!(v.len(), encoded_len(5));
        let r = decode(&key(Class::Event, 42), &v).expect("valid");
        assert_eq!(
            (r.class, r.seq, r.payload),
            (Class::Event, 42, &b"hello"[..])
        );
        // Delivery order is key order: class first, then seq.
        assert!(key(Class::Correction, 900) < key(Class::HardExample, 1));
        assert!(key(Class::Telemetry, 1) < key(Class::Telemetry, 256));
        assert!(key(Class::Telemetry, u64::MAX).as_slice() < STATE_KEY);
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let k = key(Class::HardExample, 7);
        let v = encode(Class::HardExample, 7, b"payload bytes");
        for i in 0..v.len() {
            for bit in 0..8 {
                let mut bad = v.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    decode(&k, &bad).is_err(),
                    "flip at byte {i} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn external_records_check_file_against_index() {
        let k = key(Class::Correction, 9);
        let file = encode(Class::Correction, 9, &[7u8; 5000]);
        let idx = external_index(&file);
        assert!(is_external(&idx) && !is_external(&file));
        assert_eq!(held_len(&idx), file.len());
        assert_eq!(held_len(&file), file.len());
        let r = decode_external(&k, &idx, &file).expect("valid");
        assert_eq!(r.payload.len(), 5000);
        // A file of another record (or a stale one) is refused even though it is valid itself.
        let other = encode(Class::Correction, 9, &[8u8; 5000]);
        assert!(decode_external(&k, &idx, &other).is_err());
        assert!(decode_external(&key(Class::Correction, 10), &idx, &file).is_err());
        assert!(decode_external(&k, &idx, &file[..100]).is_err());
    }

    #[test]
    fn mismatched_key_short_and_truncated_values_are_errors() {
        let v = encode(Class::Event, 3, b"abc");
        assert_eq!(
            decode(&key(Class::Event, 4), &v),
            Err(RecordError::Header("seq"))
        );
        assert_eq!(
            decode(&key(Class::Telemetry, 3), &v),
            Err(RecordError::Header("class"))
        );
        assert_eq!(
            decode(&key(Class::Event, 3), &v[..5]),
            Err(RecordError::Short { len: 5 })
        );
        assert_eq!(
            decode(&key(Class::Event, 3), &v[..v.len() - 1]),
            Err(RecordError::Header("payload_len"))
        );
        assert!(matches!(
            decode(b"\x09xxxxxxxx", &v),
            Err(RecordError::BadKey { .. })
        ));
    }
}
