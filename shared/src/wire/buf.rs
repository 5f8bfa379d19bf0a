//! Little-endian primitives over a payload: a bounds-checked [`Reader`] that never allocates
//! before the bytes are there, and [`Writer`] helpers that check the same limits.

use super::WireError;

/// A cursor over one frame's payload. Every read checks the remaining length first.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(payload: &'a [u8]) -> Self {
        Self { rest: payload }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes `n` bytes, or fails with `Truncated` before anything is copied.
    pub(crate) fn take(&mut self, field: &'static str, n: u64) -> Result<&'a [u8], WireError> {
        let remaining = self.rest.len();
        let err = WireError::Truncated {
            field,
            needed: n,
            remaining,
        };
        let n = usize::try_from(n).map_err(|_| err.clone())?;
        if n > remaining {
            return Err(err);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N as u64)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    /// `u32` length then that many bytes.
    pub(crate) fn bytes32(&mut self, field: &'static str) -> Result<Vec<u8>, WireError> {
        let len = self.u32(field)?;
        Ok(self.take(field, u64::from(len))?.to_vec())
    }

    /// `u16` length (checked against `max` before reading) then that many UTF-8 bytes.
    pub(crate) fn str16(&mut self, field: &'static str, max: usize) -> Result<String, WireError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(WireError::StringTooLong { field, len, max });
        }
        let raw = self.take(field, len as u64)?;
        utf8(field, raw)
    }

    /// `u32` length then that many UTF-8 bytes.
    pub(crate) fn str32(&mut self, field: &'static str) -> Result<String, WireError> {
        let len = self.u32(field)?;
        let raw = self.take(field, u64::from(len))?;
        utf8(field, raw)
    }

    /// Tag 0 (absent) or 1 then a [`Reader::str16`].
    pub(crate) fn opt_str16(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<Option<String>, WireError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => self.str16(field, max).map(Some),
            got => Err(WireError::InvalidTag { field, got }),
        }
    }

    /// Fails with `TrailingBytes` unless the payload is used up.
    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes {
                count: self.rest.len(),
            })
        }
    }
}

fn utf8(field: &'static str, raw: &[u8]) -> Result<String, WireError> {
    std::str::from_utf8(raw)
        .map(str::to_owned)
        .map_err(|_| WireError::InvalidUtf8 { field })
}

/// Appends little-endian fields to a payload.
pub(crate) struct Writer<'a> {
    pub(crate) out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    /// `u32` length then the bytes; fails when the length does not fit a `u32`.
    pub(crate) fn bytes32(&mut self, v: &[u8]) -> Result<(), WireError> {
        let len = u32::try_from(v.len()).map_err(|_| WireError::FrameTooLarge {
            len: v.len() as u64,
            max: u64::from(u32::MAX),
        })?;
        self.u32(len);
        self.out.extend_from_slice(v);
        Ok(())
    }

    /// `u16` length then the UTF-8 bytes; fails over `max` (which is below `u16::MAX`).
    pub(crate) fn str16(
        &mut self,
        field: &'static str,
        v: &str,
        max: usize,
    ) -> Result<(), WireError> {
        let len = v.len();
        let short = u16::try_from(len).ok().filter(|_| len <= max);
        let Some(short) = short else {
            return Err(WireError::StringTooLong { field, len, max });
        };
        self.u16(short);
        self.out.extend_from_slice(v.as_bytes());
        Ok(())
    }

    /// Tag 0, or tag 1 then a [`Writer::str16`].
    pub(crate) fn opt_str16(
        &mut self,
        field: &'static str,
        v: Option<&str>,
        max: usize,
    ) -> Result<(), WireError> {
        match v {
            None => {
                self.u8(0);
                Ok(())
            }
            Some(s) => {
                self.u8(1);
                self.str16(field, s, max)
            }
        }
    }
}
