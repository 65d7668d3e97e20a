//! The diff streams of `rbd export-diff` (v1) and of the diffs inside
//! `rbd export --export-format 2` (v2): [`DiffReader`], [`DiffWriter`],
//! and the state machines they share with the full-image stream.

use std::io::{Read, Write};

use crate::error::{DecodeError, DecodeErrorKind, EncodeError, EncodeErrorKind, Part};
use crate::input::Input;
use crate::{DIFF_BANNER_V1, DIFF_BANNER_V2, MAX_NAME_LEN};

/// Which diff format: the tags are the same, v2 adds a length after each
/// tag but `e` (so that readers can skip unknown records) and the `p`
/// record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiffVersion {
    /// `"rbd diff v1\n"`: what `rbd export-diff` writes and
    /// `rbd import-diff` reads.
    V1,
    /// `"rbd diff v2\n"`: the diffs inside a full-image stream.
    V2,
}

impl DiffVersion {
    /// The banner that opens a diff of this version.
    pub fn banner(self) -> &'static str {
        match self {
            DiffVersion::V1 => DIFF_BANNER_V1,
            DiffVersion::V2 => DIFF_BANNER_V2,
        }
    }
}

/// One record of a diff stream, as decoded.
///
/// The metadata records (`FromSnap`, `ToSnap`, `Protected`, `Size`) come
/// first, each at most once; then the extents (`Write`, `Zero`) in
/// ascending order without overlaps; then `End`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffRecord {
    /// `f`: the snapshot the diff starts from (absent: from nothing, an
    /// empty image).
    FromSnap(String),
    /// `t`: the snapshot the diff ends at (absent: HEAD).
    ToSnap(String),
    /// `p` (v2 only): whether the to-snapshot is protected.
    Protected(bool),
    /// `s`: the image size at the end of the diff.
    Size(u64),
    /// `w`: `len` bytes of data at `offset`. The data follows: read it
    /// with [`DiffReader::read_data`] (or let the next record skip it).
    Write {
        /// Byte offset in the image.
        offset: u64,
        /// Bytes of data.
        len: u64,
    },
    /// `z`: `len` bytes at `offset` read as zeroes (discarded, or zero
    /// data).
    Zero {
        /// Byte offset in the image.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// A v2 record with a tag this crate does not know, skipped as the
    /// format allows (`rbd import` does the same, with a warning).
    Skipped {
        /// Its tag.
        tag: u8,
        /// The length of its contents, skipped.
        len: u64,
    },
    /// `e`: the end of the diff. For a [`DiffReader`], nothing follows.
    End,
}

/// Reading state of one diff, shared by [`DiffReader`] and the
/// full-image reader.
#[derive(Debug)]
pub(crate) struct DiffDecoder {
    pub(crate) version: DiffVersion,
    /// Check that the stream ends after `e` (a standalone diff).
    standalone: bool,
    data_started: bool,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) protected: Option<bool>,
    pub(crate) size: Option<u64>,
    /// End of the previous extent: the next may not start before it.
    next_offset: u64,
    /// Data of the current `w` record not yet consumed.
    data_left: u64,
    /// Where the current `w` record starts.
    data_at: u64,
    pub(crate) done: bool,
}

impl DiffDecoder {
    /// Reads and checks the banner (either version).
    pub(crate) fn start<R: Read>(
        input: &mut Input<R>,
        standalone: bool,
    ) -> Result<Self, DecodeError> {
        let at = input.pos();
        let mut b = [0u8; 12];
        debug_assert_eq!(DIFF_BANNER_V1.len(), b.len());
        debug_assert_eq!(DIFF_BANNER_V2.len(), b.len());
        let n = input.read_up_to(&mut b, Part::Banner, at)?;
        let version = if &b[..n] == DIFF_BANNER_V1.as_bytes() {
            DiffVersion::V1
        } else if &b[..n] == DIFF_BANNER_V2.as_bytes() {
            DiffVersion::V2
        } else {
            return Err(DecodeError::new(
                Part::Banner,
                at,
                DecodeErrorKind::BadMagic {
                    // Name the banner a cut-off one is the start of.
                    expected: if DIFF_BANNER_V2.as_bytes().starts_with(&b[..n])
                        && !DIFF_BANNER_V1.as_bytes().starts_with(&b[..n])
                    {
                        DIFF_BANNER_V2
                    } else {
                        DIFF_BANNER_V1
                    },
                    found: b[..n].to_vec(),
                },
            ));
        };
        Ok(Self::new(version, standalone))
    }

    pub(crate) fn new(version: DiffVersion, standalone: bool) -> Self {
        DiffDecoder {
            version,
            standalone,
            data_started: false,
            from: None,
            to: None,
            protected: None,
            size: None,
            next_offset: 0,
            data_left: 0,
            data_at: 0,
            done: false,
        }
    }

    pub(crate) fn data_remaining(&self) -> u64 {
        self.data_left
    }

    /// The next record, or `None` once `End` was returned.
    pub(crate) fn next<R: Read>(
        &mut self,
        input: &mut Input<R>,
    ) -> Result<Option<DiffRecord>, DecodeError> {
        if self.done {
            return Ok(None);
        }
        if self.data_left > 0 {
            input.skip(self.data_left, Part::Write, self.data_at)?;
            self.data_left = 0;
        }
        let at = input.pos();
        let Some(tag) = input.read_tag(Part::End)? else {
            return Err(DecodeError::new(Part::End, at, DecodeErrorKind::MissingEnd));
        };
        let part = Part::of_diff_tag(tag);
        let err = |kind| DecodeError::new(part, at, kind);
        let v2 = self.version == DiffVersion::V2;
        if !v2 && matches!(part, Part::Unknown(_) | Part::Protection) {
            return Err(err(DecodeErrorKind::UnknownTag(tag)));
        }
        let declared = if v2 && tag != b'e' {
            Some(input.read_u64(part, at)?)
        } else {
            None
        };
        let check_len = |expected: u64| match declared {
            Some(d) if d != expected => Err(err(DecodeErrorKind::LengthMismatch {
                declared: d,
                expected,
            })),
            _ => Ok(()),
        };
        let metadata = |data_started: bool, seen: bool| {
            if data_started {
                Err(err(DecodeErrorKind::MetadataAfterData))
            } else if seen {
                Err(err(DecodeErrorKind::Duplicate))
            } else {
                Ok(())
            }
        };
        let record = match part {
            Part::FromSnap | Part::ToSnap => {
                let seen = if part == Part::FromSnap {
                    &self.from
                } else {
                    &self.to
                };
                metadata(self.data_started, seen.is_some())?;
                let n = input.read_u32(part, at)?;
                if u64::from(n) > MAX_NAME_LEN {
                    return Err(err(DecodeErrorKind::TooLong {
                        len: n.into(),
                        max: MAX_NAME_LEN,
                    }));
                }
                check_len(4 + u64::from(n))?;
                let bytes = input.read_vec(n as usize, part, at)?;
                let name = String::from_utf8(bytes)
                    .map_err(|e| err(DecodeErrorKind::NotUtf8(e.into_bytes())))?;
                if part == Part::FromSnap {
                    self.from = Some(name.clone());
                    DiffRecord::FromSnap(name)
                } else {
                    self.to = Some(name.clone());
                    DiffRecord::ToSnap(name)
                }
            }
            Part::Protection => {
                metadata(self.data_started, self.protected.is_some())?;
                // One byte of contents. Ceph up to 16 (pacific) declares
                // 8 for it; later releases declare 1. `rbd import`
                // ignores the length of the records it knows.
                if declared != Some(1) && declared != Some(8) {
                    check_len(1)?;
                }
                let flag = match input.read_u8(part, at)? {
                    0 => false,
                    1 => true,
                    b => return Err(err(DecodeErrorKind::BadFlag(b))),
                };
                self.protected = Some(flag);
                DiffRecord::Protected(flag)
            }
            Part::Size => {
                metadata(self.data_started, self.size.is_some())?;
                check_len(8)?;
                let size = input.read_u64(part, at)?;
                self.size = Some(size);
                DiffRecord::Size(size)
            }
            Part::Write | Part::Zero => {
                let offset = input.read_u64(part, at)?;
                let len = input.read_u64(part, at)?;
                if part == Part::Write && v2 {
                    let expected = len
                        .checked_add(16)
                        .ok_or(err(DecodeErrorKind::LengthOverflow(len)))?;
                    check_len(expected)?;
                } else if part == Part::Zero {
                    check_len(16)?;
                }
                let size = self.metadata_complete().map_err(err)?;
                let end = offset
                    .checked_add(len)
                    .ok_or(err(DecodeErrorKind::ExtentOverflow { offset, len }))?;
                if offset < self.next_offset {
                    return Err(err(DecodeErrorKind::Unordered {
                        offset,
                        prev_end: self.next_offset,
                    }));
                }
                if end > size {
                    return Err(err(DecodeErrorKind::BeyondSize { offset, end, size }));
                }
                self.data_started = true;
                self.next_offset = end;
                if part == Part::Write {
                    self.data_left = len;
                    self.data_at = at;
                    DiffRecord::Write { offset, len }
                } else {
                    DiffRecord::Zero { offset, len }
                }
            }
            Part::End => {
                self.metadata_complete().map_err(err)?;
                self.done = true;
                if self.standalone {
                    let after = input.pos();
                    if let Some(t) = input.read_tag(Part::End)? {
                        return Err(DecodeError::new(
                            Part::of_diff_tag(t),
                            after,
                            DecodeErrorKind::AfterEnd,
                        ));
                    }
                }
                DiffRecord::End
            }
            Part::Unknown(_) => {
                // v2 only (v1 was refused above): skip its contents.
                let len = declared.unwrap_or(0);
                input.skip(len, part, at)?;
                DiffRecord::Skipped { tag, len }
            }
            _ => unreachable!("of_diff_tag returns diff parts only"),
        };
        Ok(Some(record))
    }

    /// At the first extent or the end: the size was given, and a
    /// protection flag only with a to-snapshot. Returns the size.
    fn metadata_complete(&self) -> Result<u64, DecodeErrorKind> {
        if self.protected.is_some() && self.to.is_none() {
            return Err(DecodeErrorKind::MissingToSnap);
        }
        self.size.ok_or(DecodeErrorKind::MissingSize)
    }

    /// Data of the current `w` record into `buf`; 0 once it is all read.
    pub(crate) fn read_data<R: Read>(
        &mut self,
        input: &mut Input<R>,
        buf: &mut [u8],
    ) -> Result<usize, DecodeError> {
        if self.data_left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
        let n = input.read_some(&mut buf[..want], Part::Write, self.data_at)?;
        if n == 0 {
            return Err(input.truncated(Part::Write, self.data_at));
        }
        self.data_left -= n as u64;
        Ok(n)
    }
}

/// A streaming reader of one diff (`rbd export-diff` output, v1 or v2).
///
/// [`next_record`](Self::next_record) returns the records in stream
/// order and `None` after [`DiffRecord::End`]; after a
/// [`DiffRecord::Write`], [`read_data`](Self::read_data) reads its data
/// into the caller's buffer (data not read is skipped by the next
/// record). Nothing is buffered beyond a fixed 64 KiB, whatever the
/// lengths in the stream. The first error ends the stream: every later
/// call fails with [`DecodeErrorKind::Failed`].
///
/// `End` is returned only once the underlying reader is at its end: a
/// stream with bytes after `e` fails with [`DecodeErrorKind::AfterEnd`].
pub struct DiffReader<R> {
    input: Input<R>,
    state: DiffDecoder,
    failed: Option<(Part, u64)>,
}

impl<R: Read> DiffReader<R> {
    /// Reads the banner: either version.
    pub fn new(r: R) -> Result<Self, DecodeError> {
        let mut input = Input::new(r);
        let state = DiffDecoder::start(&mut input, true)?;
        Ok(DiffReader {
            input,
            state,
            failed: None,
        })
    }

    /// The version named by the banner.
    pub fn version(&self) -> DiffVersion {
        self.state.version
    }

    /// The next record; `None` after [`DiffRecord::End`].
    pub fn next_record(&mut self) -> Result<Option<DiffRecord>, DecodeError> {
        self.guard()?;
        let r = self.state.next(&mut self.input);
        self.note(r)
    }

    /// Reads data of the last [`DiffRecord::Write`] into `buf`; returns
    /// 0 once all of it was read (or if `buf` is empty).
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, DecodeError> {
        self.guard()?;
        let r = self.state.read_data(&mut self.input, buf);
        self.note(r)
    }

    /// Bytes of the last `w` record's data not read yet.
    pub fn data_remaining(&self) -> u64 {
        self.state.data_remaining()
    }

    /// The from-snapshot, once its record was read.
    pub fn from_snap(&self) -> Option<&str> {
        self.state.from.as_deref()
    }

    /// The to-snapshot, once its record was read.
    pub fn to_snap(&self) -> Option<&str> {
        self.state.to.as_deref()
    }

    /// The protection flag (v2), once its record was read.
    pub fn protected(&self) -> Option<bool> {
        self.state.protected
    }

    /// The image size, once its record was read.
    pub fn size(&self) -> Option<u64> {
        self.state.size
    }

    /// Bytes consumed from the stream so far.
    pub fn position(&self) -> u64 {
        self.input.pos()
    }

    fn guard(&self) -> Result<(), DecodeError> {
        match self.failed {
            Some((part, at)) => Err(DecodeError::new(part, at, DecodeErrorKind::Failed)),
            None => Ok(()),
        }
    }

    fn note<T>(&mut self, r: Result<T, DecodeError>) -> Result<T, DecodeError> {
        if let Err(e) = &r {
            self.failed = Some((e.part, e.offset));
        }
        r
    }
}

/// Writing state of one diff, shared by [`DiffWriter`] and the
/// full-image writer.
#[derive(Debug)]
pub(crate) struct DiffEncoder {
    pub(crate) version: DiffVersion,
    data_started: bool,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    protected: bool,
    size: Option<u64>,
    next_offset: u64,
    data_left: u64,
}

impl DiffEncoder {
    pub(crate) fn start<W: Write>(out: &mut W, version: DiffVersion) -> Result<Self, EncodeError> {
        out.write_all(version.banner().as_bytes())
            .map_err(|e| EncodeError::new(Part::Banner, EncodeErrorKind::Io(e)))?;
        Ok(DiffEncoder {
            version,
            data_started: false,
            from: None,
            to: None,
            protected: false,
            size: None,
            next_offset: 0,
            data_left: 0,
        })
    }

    fn metadata(&self, part: Part, seen: bool) -> Result<(), EncodeError> {
        let kind = if self.data_left > 0 {
            EncodeErrorKind::DataPending(self.data_left)
        } else if self.data_started {
            EncodeErrorKind::MetadataAfterData
        } else if seen {
            EncodeErrorKind::Duplicate
        } else {
            return Ok(());
        };
        Err(EncodeError::new(part, kind))
    }

    /// Tag, then (v2) the length of the contents.
    fn header(&self, tag: u8, len: u64, buf: &mut Vec<u8>) {
        buf.push(tag);
        if self.version == DiffVersion::V2 {
            buf.extend_from_slice(&len.to_le_bytes());
        }
    }

    fn emit<W: Write>(out: &mut W, part: Part, bytes: &[u8]) -> Result<(), EncodeError> {
        out.write_all(bytes)
            .map_err(|e| EncodeError::new(part, EncodeErrorKind::Io(e)))
    }

    pub(crate) fn snap<W: Write>(
        &mut self,
        out: &mut W,
        part: Part,
        name: &str,
    ) -> Result<(), EncodeError> {
        let seen = if part == Part::FromSnap {
            &self.from
        } else {
            &self.to
        };
        self.metadata(part, seen.is_some())?;
        let n = name.len() as u64;
        if n > MAX_NAME_LEN {
            return Err(EncodeError::new(
                part,
                EncodeErrorKind::TooLong {
                    len: n,
                    max: MAX_NAME_LEN,
                },
            ));
        }
        let mut buf = Vec::with_capacity(13 + name.len());
        let tag = if part == Part::FromSnap { b'f' } else { b't' };
        self.header(tag, 4 + n, &mut buf);
        buf.extend_from_slice(&(n as u32).to_le_bytes());
        buf.extend_from_slice(name.as_bytes());
        Self::emit(out, part, &buf)?;
        if part == Part::FromSnap {
            self.from = Some(name.to_owned());
        } else {
            self.to = Some(name.to_owned());
        }
        Ok(())
    }

    pub(crate) fn protected<W: Write>(
        &mut self,
        out: &mut W,
        flag: bool,
    ) -> Result<(), EncodeError> {
        let part = Part::Protection;
        if self.version == DiffVersion::V1 {
            return Err(EncodeError::new(part, EncodeErrorKind::NotInV1));
        }
        self.metadata(part, self.protected)?;
        let mut buf = Vec::with_capacity(10);
        self.header(b'p', 1, &mut buf);
        buf.push(u8::from(flag));
        Self::emit(out, part, &buf)?;
        self.protected = true;
        Ok(())
    }

    pub(crate) fn size<W: Write>(&mut self, out: &mut W, size: u64) -> Result<(), EncodeError> {
        self.metadata(Part::Size, self.size.is_some())?;
        let mut buf = Vec::with_capacity(17);
        self.header(b's', 8, &mut buf);
        buf.extend_from_slice(&size.to_le_bytes());
        Self::emit(out, Part::Size, &buf)?;
        self.size = Some(size);
        Ok(())
    }

    /// Checks an extent against the order and the size.
    fn extent(&self, part: Part, offset: u64, len: u64) -> Result<u64, EncodeError> {
        let e = |kind| EncodeError::new(part, kind);
        if self.data_left > 0 {
            return Err(e(EncodeErrorKind::DataPending(self.data_left)));
        }
        let size = self.metadata_complete(part)?;
        let end = offset
            .checked_add(len)
            // v2 writes `16 + len` as the record's length.
            .filter(|_| {
                part != Part::Write
                    || self.version == DiffVersion::V1
                    || len.checked_add(16).is_some()
            })
            .ok_or(e(EncodeErrorKind::ExtentOverflow { offset, len }))?;
        if offset < self.next_offset {
            return Err(e(EncodeErrorKind::Unordered {
                offset,
                prev_end: self.next_offset,
            }));
        }
        if end > size {
            return Err(e(EncodeErrorKind::BeyondSize { offset, end, size }));
        }
        Ok(end)
    }

    pub(crate) fn begin_write<W: Write>(
        &mut self,
        out: &mut W,
        offset: u64,
        len: u64,
    ) -> Result<(), EncodeError> {
        let end = self.extent(Part::Write, offset, len)?;
        let mut buf = Vec::with_capacity(25);
        self.header(b'w', len + 16, &mut buf);
        buf.extend_from_slice(&offset.to_le_bytes());
        buf.extend_from_slice(&len.to_le_bytes());
        Self::emit(out, Part::Write, &buf)?;
        self.data_started = true;
        self.next_offset = end;
        self.data_left = len;
        Ok(())
    }

    pub(crate) fn write_data<W: Write>(
        &mut self,
        out: &mut W,
        data: &[u8],
    ) -> Result<(), EncodeError> {
        let given = data.len() as u64;
        if given > self.data_left {
            return Err(EncodeError::new(
                Part::Write,
                EncodeErrorKind::DataOverrun {
                    given,
                    expected: self.data_left,
                },
            ));
        }
        Self::emit(out, Part::Write, data)?;
        self.data_left -= given;
        Ok(())
    }

    pub(crate) fn zero<W: Write>(
        &mut self,
        out: &mut W,
        offset: u64,
        len: u64,
    ) -> Result<(), EncodeError> {
        let end = self.extent(Part::Zero, offset, len)?;
        let mut buf = Vec::with_capacity(25);
        self.header(b'z', 16, &mut buf);
        buf.extend_from_slice(&offset.to_le_bytes());
        buf.extend_from_slice(&len.to_le_bytes());
        Self::emit(out, Part::Zero, &buf)?;
        self.data_started = true;
        self.next_offset = end;
        Ok(())
    }

    pub(crate) fn end<W: Write>(&mut self, out: &mut W) -> Result<(), EncodeError> {
        let part = Part::End;
        if self.data_left > 0 {
            return Err(EncodeError::new(
                part,
                EncodeErrorKind::DataPending(self.data_left),
            ));
        }
        self.metadata_complete(part)?;
        Self::emit(out, part, b"e")
    }

    /// At the first extent or the end: the metadata must be whole. The
    /// size, which importers resize to; a protection flag only with the
    /// to-snapshot it is about. Returns the size.
    fn metadata_complete(&self, part: Part) -> Result<u64, EncodeError> {
        if self.protected && self.to.is_none() {
            return Err(EncodeError::new(part, EncodeErrorKind::MissingToSnap));
        }
        self.size
            .ok_or(EncodeError::new(part, EncodeErrorKind::MissingSize))
    }
}

/// A writer of one diff that enforces RBD's record order.
///
/// Write the metadata first, in any order, each record at most once:
/// the from-snapshot ([`from_snap`](Self::from_snap), absent for a diff
/// from an empty image), the to-snapshot ([`to_snap`](Self::to_snap),
/// absent for HEAD), in v2 its [`protected`](Self::protected) flag (only
/// with a to-snapshot), and the [`size`](Self::size) (required); `rbd`
/// writes them in that order. Then the extents in ascending order
/// without overlaps, within the size: [`write`](Self::write) or
/// [`begin_write`](Self::begin_write) + [`write_data`](Self::write_data)
/// to stream data, and [`zero`](Self::zero). [`finish`](Self::finish)
/// writes `e`. A refused record writes nothing and the stream can go
/// on; after an I/O error every call fails with
/// [`EncodeErrorKind::Failed`].
///
/// Records are written to `W` as they come, in small pieces: give it a
/// `BufWriter` for a file or a pipe.
pub struct DiffWriter<W: Write> {
    out: W,
    state: DiffEncoder,
    failed: Option<Part>,
}

impl<W: Write> DiffWriter<W> {
    /// Writes the banner of `version`.
    pub fn new(mut out: W, version: DiffVersion) -> Result<Self, EncodeError> {
        let state = DiffEncoder::start(&mut out, version)?;
        Ok(DiffWriter {
            out,
            state,
            failed: None,
        })
    }

    /// The version being written.
    pub fn version(&self) -> DiffVersion {
        self.state.version
    }

    /// `f`: the snapshot the diff starts from.
    pub fn from_snap(&mut self, name: &str) -> Result<(), EncodeError> {
        self.guard(Part::FromSnap)?;
        let r = self.state.snap(&mut self.out, Part::FromSnap, name);
        self.note(r)
    }

    /// `t`: the snapshot the diff ends at.
    pub fn to_snap(&mut self, name: &str) -> Result<(), EncodeError> {
        self.guard(Part::ToSnap)?;
        let r = self.state.snap(&mut self.out, Part::ToSnap, name);
        self.note(r)
    }

    /// `p` (v2 only, with a `t`): whether the to-snapshot is protected.
    pub fn protected(&mut self, flag: bool) -> Result<(), EncodeError> {
        self.guard(Part::Protection)?;
        let r = self.state.protected(&mut self.out, flag);
        self.note(r)
    }

    /// `s`: the image size at the end of the diff.
    pub fn size(&mut self, size: u64) -> Result<(), EncodeError> {
        self.guard(Part::Size)?;
        let r = self.state.size(&mut self.out, size);
        self.note(r)
    }

    /// `w`: one whole data extent.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), EncodeError> {
        self.begin_write(offset, data.len() as u64)?;
        self.write_data(data)
    }

    /// `w`: the header of a data extent of `len` bytes, whose data
    /// follows through [`write_data`](Self::write_data).
    pub fn begin_write(&mut self, offset: u64, len: u64) -> Result<(), EncodeError> {
        self.guard(Part::Write)?;
        let r = self.state.begin_write(&mut self.out, offset, len);
        self.note(r)
    }

    /// Data of the extent begun by [`begin_write`](Self::begin_write);
    /// no more than it declared.
    pub fn write_data(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        self.guard(Part::Write)?;
        let r = self.state.write_data(&mut self.out, data);
        self.note(r)
    }

    /// `z`: an extent that reads as zeroes.
    pub fn zero(&mut self, offset: u64, len: u64) -> Result<(), EncodeError> {
        self.guard(Part::Zero)?;
        let r = self.state.zero(&mut self.out, offset, len);
        self.note(r)
    }

    /// `e`, then flushes; returns the writer.
    pub fn finish(mut self) -> Result<W, EncodeError> {
        self.guard(Part::End)?;
        self.state.end(&mut self.out)?;
        self.out
            .flush()
            .map_err(|e| EncodeError::new(Part::End, EncodeErrorKind::Io(e)))?;
        Ok(self.out)
    }

    fn guard(&self, part: Part) -> Result<(), EncodeError> {
        match self.failed {
            Some(_) => Err(EncodeError::new(part, EncodeErrorKind::Failed)),
            None => Ok(()),
        }
    }

    /// An I/O error may have left part of a record: nothing can follow.
    /// A refused record wrote nothing, so the stream can go on.
    fn note<T>(&mut self, r: Result<T, EncodeError>) -> Result<T, EncodeError> {
        if let Err(e) = &r {
            if matches!(e.kind, EncodeErrorKind::Io(_)) {
                self.failed = Some(e.part);
            }
        }
        r
    }
}

#[cfg(test)]
mod tests;
