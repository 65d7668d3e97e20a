//! Bounds-checked field access for decoders, and field writers for
//! encoders.
//!
//! Decoders read from bytes another process (or a disk) wrote, so every
//! read is checked and returns [`MapError::Truncated`] instead of
//! panicking. Encoders write into buffers they sized themselves from the
//! same layout constants, so their slicing is our own arithmetic.

use crate::MapError;

/// A byte slice being decoded as the structure `what`.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) what: &'static str,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    pub(crate) fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Fails unless at least `need` bytes are present.
    pub(crate) fn need(&self, need: u64) -> Result<(), MapError> {
        if self.len() < need {
            return Err(self.truncated(need));
        }
        Ok(())
    }

    pub(crate) fn truncated(&self, need: u64) -> MapError {
        MapError::Truncated {
            what: self.what,
            need,
            have: self.len(),
        }
    }

    pub(crate) fn slice(&self, off: usize, len: usize) -> Result<&'a [u8], MapError> {
        let end = off
            .checked_add(len)
            .ok_or_else(|| self.truncated(u64::MAX))?;
        self.bytes
            .get(off..end)
            .ok_or_else(|| self.truncated(end as u64))
    }

    pub(crate) fn array<const N: usize>(&self, off: usize) -> Result<[u8; N], MapError> {
        let s = self.slice(off, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&self, off: usize) -> Result<u8, MapError> {
        Ok(self.array::<1>(off)?[0])
    }

    pub(crate) fn u16_le(&self, off: usize) -> Result<u16, MapError> {
        Ok(u16::from_le_bytes(self.array(off)?))
    }

    pub(crate) fn u32_le(&self, off: usize) -> Result<u32, MapError> {
        Ok(u32::from_le_bytes(self.array(off)?))
    }

    pub(crate) fn u64_le(&self, off: usize) -> Result<u64, MapError> {
        Ok(u64::from_le_bytes(self.array(off)?))
    }

    pub(crate) fn u32_be(&self, off: usize) -> Result<u32, MapError> {
        Ok(u32::from_be_bytes(self.array(off)?))
    }

    pub(crate) fn u64_be(&self, off: usize) -> Result<u64, MapError> {
        Ok(u64::from_be_bytes(self.array(off)?))
    }

    /// Fails with [`MapError::BadReserved`] unless `len` bytes at `off`
    /// are zero; `base` is added to the reported offset.
    pub(crate) fn zeros(&self, off: usize, len: usize, base: u64) -> Result<(), MapError> {
        let s = self.slice(off, len)?;
        match s.iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(MapError::BadReserved {
                what: self.what,
                offset: base + (off + i) as u64,
            }),
        }
    }
}

/// Writes `src` at `off` of `buf` (a buffer the encoder sized).
pub(crate) fn put(buf: &mut [u8], off: usize, src: &[u8]) {
    buf[off..off + src.len()].copy_from_slice(src);
}

/// `u64` to `usize` for lengths that must fit in memory; a value that
/// does not fit is reported as a truncation (no buffer can hold it).
pub(crate) fn to_usize(v: u64, what: &'static str, have: usize) -> Result<usize, MapError> {
    usize::try_from(v).map_err(|_| MapError::Truncated {
        what,
        need: v,
        have: have as u64,
    })
}
