//! The reading side's byte source: a buffered reader that counts its
//! position and turns a short read into a [`DecodeErrorKind::Truncated`]
//! naming the part being read. Never allocates beyond its buffer.

use std::io::{self, BufRead, BufReader, Read};

use crate::error::{DecodeError, DecodeErrorKind, Part};

/// Read-side buffer: headers are a few bytes each, data is copied
/// through into the caller's buffer.
const BUFFER: usize = 64 * 1024;

pub(crate) struct Input<R> {
    inner: BufReader<R>,
    pos: u64,
}

impl<R: Read> Input<R> {
    pub(crate) fn new(r: R) -> Self {
        Input {
            inner: BufReader::with_capacity(BUFFER, r),
            pos: 0,
        }
    }

    /// Bytes consumed so far.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Reads up to `buf.len()` bytes; 0 only at the end of the stream.
    pub(crate) fn read_some(
        &mut self,
        buf: &mut [u8],
        part: Part,
        at: u64,
    ) -> Result<usize, DecodeError> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DecodeError::new(part, at, DecodeErrorKind::Io(e))),
            }
        }
    }

    /// Fills `buf`, or fails as truncated inside `part` (which starts at `at`).
    pub(crate) fn read_exact(
        &mut self,
        buf: &mut [u8],
        part: Part,
        at: u64,
    ) -> Result<(), DecodeError> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_some(&mut buf[done..], part, at)?;
            if n == 0 {
                return Err(self.truncated(part, at));
            }
            done += n;
        }
        Ok(())
    }

    /// As many bytes as `buf` holds, or fewer if the stream ends: for
    /// banners, whose error shows what was found.
    pub(crate) fn read_up_to(
        &mut self,
        buf: &mut [u8],
        part: Part,
        at: u64,
    ) -> Result<usize, DecodeError> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_some(&mut buf[done..], part, at)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    /// The next byte, or `None` at the end of the stream.
    pub(crate) fn read_tag(&mut self, part: Part) -> Result<Option<u8>, DecodeError> {
        let at = self.pos;
        let mut b = [0u8; 1];
        match self.read_some(&mut b, part, at)? {
            0 => Ok(None),
            _ => Ok(Some(b[0])),
        }
    }

    pub(crate) fn read_u8(&mut self, part: Part, at: u64) -> Result<u8, DecodeError> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b, part, at)?;
        Ok(b[0])
    }

    pub(crate) fn read_u32(&mut self, part: Part, at: u64) -> Result<u32, DecodeError> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b, part, at)?;
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn read_u64(&mut self, part: Part, at: u64) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b, part, at)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads `len` bytes (the caller has bounded `len`).
    pub(crate) fn read_vec(
        &mut self,
        len: usize,
        part: Part,
        at: u64,
    ) -> Result<Vec<u8>, DecodeError> {
        let mut v = vec![0u8; len];
        self.read_exact(&mut v, part, at)?;
        Ok(v)
    }

    /// Discards `len` bytes without allocating.
    pub(crate) fn skip(&mut self, mut len: u64, part: Part, at: u64) -> Result<(), DecodeError> {
        while len > 0 {
            let avail = match self.inner.fill_buf() {
                Ok(b) => b.len(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DecodeError::new(part, at, DecodeErrorKind::Io(e))),
            };
            if avail == 0 {
                return Err(self.truncated(part, at));
            }
            let n = avail.min(usize::try_from(len).unwrap_or(usize::MAX));
            self.inner.consume(n);
            self.pos += n as u64;
            len -= n as u64;
        }
        Ok(())
    }

    pub(crate) fn truncated(&self, part: Part, at: u64) -> DecodeError {
        DecodeError::new(part, at, DecodeErrorKind::Truncated { eof: self.pos })
    }
}
