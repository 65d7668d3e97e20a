//! The full-image stream of `rbd export --export-format 2`:
//! [`ImageReader`] and [`ImageWriter`].
//!
//! ```text
//! "rbd image v2\n"
//! metadata records: tag u8, le64 length, contents   (O F T U C M; others skipped)
//! 'E'
//! "rbd image diffs v2\n"
//! le64 number of diffs (snapshots + 1)
//! diffs: each a whole diff v2 stream, banner to 'e': none→snap1, snap1→snap2, ..., snapN→HEAD
//! ```

use std::io::{Read, Write};

use crate::diff::{DiffDecoder, DiffEncoder, DiffRecord, DiffVersion};
use crate::error::{DecodeError, DecodeErrorKind, EncodeError, EncodeErrorKind, Part};
use crate::input::Input;
use crate::{IMAGE_BANNER_V2, IMAGE_DIFFS_BANNER_V2, MAX_META_LEN};

/// One record of a full-image stream, as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRecord {
    /// `O`: the image order: objects of `1 << order` bytes.
    Order(u64),
    /// `F`: the image format (documented; `rbd export` does not write it).
    Format(u64),
    /// `T`: the image features (RBD's feature bits).
    Features(u64),
    /// `U`: the stripe unit in bytes.
    StripeUnit(u64),
    /// `C`: the stripe count.
    StripeCount(u64),
    /// `M`: one image metadata pair (`rbd image-meta`).
    Meta {
        /// The key.
        key: String,
        /// The value (bytes, as RBD stores them).
        value: Vec<u8>,
    },
    /// A metadata record with a tag this crate does not know, skipped.
    Skipped {
        /// Its tag.
        tag: u8,
        /// The length of its contents, skipped.
        len: u64,
    },
    /// `E` and the diffs header: the metadata ended, `count` diffs follow
    /// (the image's snapshots, oldest first, then HEAD).
    Diffs {
        /// How many diffs follow.
        count: u64,
    },
    /// A diff begins (its banner was read); its records follow as
    /// [`ImageRecord::Diff`], up to [`DiffRecord::End`].
    DiffStart {
        /// Its index, from 0.
        index: u64,
    },
    /// A record of the current diff.
    Diff(DiffRecord),
    /// The last diff ended and nothing follows.
    End,
}

#[derive(Debug)]
enum ReadPhase {
    Metadata,
    /// Between diffs: `next` is the index of the next one.
    Between {
        next: u64,
        count: u64,
        prev_to: Option<String>,
    },
    InDiff {
        dec: DiffDecoder,
        index: u64,
        count: u64,
        prev_to: Option<String>,
        chain_checked: bool,
    },
    Done,
}

/// Bits for the metadata records that may appear once.
fn once_bit(part: Part) -> u8 {
    match part {
        Part::Order => 1,
        Part::Format => 2,
        Part::Features => 4,
        Part::StripeUnit => 8,
        Part::StripeCount => 16,
        _ => 0,
    }
}

/// A streaming reader of a full-image stream.
///
/// [`next_record`](Self::next_record) returns the metadata records, then
/// [`ImageRecord::Diffs`], then for each diff [`ImageRecord::DiffStart`]
/// and its records as [`ImageRecord::Diff`], then [`ImageRecord::End`]
/// once the stream is at its end, then `None`. After a data record,
/// [`read_data`](Self::read_data) reads its data. The diffs must chain:
/// the first starts from nothing, each next one from the previous one's
/// to-snapshot, and only the last (HEAD) has no to-snapshot. Errors
/// name the diff they are in; the first error ends the stream.
pub struct ImageReader<R> {
    input: Input<R>,
    phase: ReadPhase,
    seen: u8,
    failed: Option<(Part, u64)>,
}

impl<R: Read> ImageReader<R> {
    /// Reads the banner.
    pub fn new(r: R) -> Result<Self, DecodeError> {
        let mut input = Input::new(r);
        expect_banner(&mut input, IMAGE_BANNER_V2)?;
        Ok(ImageReader {
            input,
            phase: ReadPhase::Metadata,
            seen: 0,
            failed: None,
        })
    }

    /// The next record; `None` after [`ImageRecord::End`].
    pub fn next_record(&mut self) -> Result<Option<ImageRecord>, DecodeError> {
        if let Some((part, at)) = self.failed {
            return Err(DecodeError::new(part, at, DecodeErrorKind::Failed));
        }
        let r = self.step();
        if let Err(e) = &r {
            self.failed = Some((e.part, e.offset));
        }
        r
    }

    /// Reads data of the last `w` record into `buf`; 0 once all of it
    /// was read.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, DecodeError> {
        if let Some((part, at)) = self.failed {
            return Err(DecodeError::new(part, at, DecodeErrorKind::Failed));
        }
        let r = match &mut self.phase {
            ReadPhase::InDiff { dec, index, .. } => {
                let index = *index;
                dec.read_data(&mut self.input, buf).map_err(|mut e| {
                    e.diff = Some(index);
                    e
                })
            }
            _ => Ok(0),
        };
        if let Err(e) = &r {
            self.failed = Some((e.part, e.offset));
        }
        r
    }

    /// Bytes of the last `w` record's data not read yet.
    pub fn data_remaining(&self) -> u64 {
        match &self.phase {
            ReadPhase::InDiff { dec, .. } => dec.data_remaining(),
            _ => 0,
        }
    }

    /// Bytes consumed from the stream so far.
    pub fn position(&self) -> u64 {
        self.input.pos()
    }

    fn step(&mut self) -> Result<Option<ImageRecord>, DecodeError> {
        let input = &mut self.input;
        match &mut self.phase {
            ReadPhase::Done => Ok(None),
            ReadPhase::Metadata => {
                let at = input.pos();
                let Some(tag) = input.read_tag(Part::MetadataEnd)? else {
                    return Err(DecodeError::new(
                        Part::MetadataEnd,
                        at,
                        DecodeErrorKind::MissingEnd,
                    ));
                };
                let part = Part::of_image_tag(tag);
                let err = |kind| DecodeError::new(part, at, kind);
                if part == Part::MetadataEnd {
                    expect_banner(input, IMAGE_DIFFS_BANNER_V2)?;
                    let count = input.read_u64(Part::DiffCount, input.pos())?;
                    if count == 0 {
                        return Err(DecodeError::new(
                            Part::DiffCount,
                            input.pos() - 8,
                            DecodeErrorKind::NoDiffs,
                        ));
                    }
                    self.phase = ReadPhase::Between {
                        next: 0,
                        count,
                        prev_to: None,
                    };
                    return Ok(Some(ImageRecord::Diffs { count }));
                }
                let len = input.read_u64(part, at)?;
                let bit = once_bit(part);
                if bit != 0 {
                    if self.seen & bit != 0 {
                        return Err(err(DecodeErrorKind::Duplicate));
                    }
                    if len != 8 {
                        return Err(err(DecodeErrorKind::LengthMismatch {
                            declared: len,
                            expected: 8,
                        }));
                    }
                    self.seen |= bit;
                    let v = input.read_u64(part, at)?;
                    return Ok(Some(match part {
                        Part::Order => ImageRecord::Order(v),
                        Part::Format => ImageRecord::Format(v),
                        Part::Features => ImageRecord::Features(v),
                        Part::StripeUnit => ImageRecord::StripeUnit(v),
                        _ => ImageRecord::StripeCount(v),
                    }));
                }
                if part == Part::Meta {
                    if len > MAX_META_LEN {
                        return Err(err(DecodeErrorKind::TooLong {
                            len,
                            max: MAX_META_LEN,
                        }));
                    }
                    // Both lengths are bounded by `len`, itself bounded.
                    let klen = u64::from(input.read_u32(part, at)?);
                    if klen + 8 > len {
                        return Err(err(DecodeErrorKind::LengthMismatch {
                            declared: len,
                            expected: klen + 8,
                        }));
                    }
                    let key = input.read_vec(klen as usize, part, at)?;
                    let vlen = u64::from(input.read_u32(part, at)?);
                    if klen + vlen + 8 != len {
                        return Err(err(DecodeErrorKind::LengthMismatch {
                            declared: len,
                            expected: klen + vlen + 8,
                        }));
                    }
                    let value = input.read_vec(vlen as usize, part, at)?;
                    let key = String::from_utf8(key)
                        .map_err(|e| err(DecodeErrorKind::NotUtf8(e.into_bytes())))?;
                    return Ok(Some(ImageRecord::Meta { key, value }));
                }
                input.skip(len, part, at)?;
                Ok(Some(ImageRecord::Skipped { tag, len }))
            }
            ReadPhase::Between {
                next,
                count,
                prev_to,
            } => {
                if *next == *count {
                    let at = input.pos();
                    if let Some(t) = input.read_tag(Part::End)? {
                        let mut e =
                            DecodeError::new(Part::of_diff_tag(t), at, DecodeErrorKind::AfterEnd);
                        e.diff = Some(*next - 1);
                        return Err(e);
                    }
                    self.phase = ReadPhase::Done;
                    return Ok(Some(ImageRecord::End));
                }
                let index = *next;
                let at = input.pos();
                let with_diff = |mut e: DecodeError| {
                    e.diff = Some(index);
                    e
                };
                let dec = DiffDecoder::start(input, false).map_err(with_diff)?;
                if dec.version != DiffVersion::V2 {
                    return Err(with_diff(DecodeError::new(
                        Part::Banner,
                        at,
                        DecodeErrorKind::BadMagic {
                            expected: crate::DIFF_BANNER_V2,
                            found: crate::DIFF_BANNER_V1.as_bytes().to_vec(),
                        },
                    )));
                }
                self.phase = ReadPhase::InDiff {
                    dec,
                    index,
                    count: *count,
                    prev_to: prev_to.take(),
                    chain_checked: false,
                };
                Ok(Some(ImageRecord::DiffStart { index }))
            }
            ReadPhase::InDiff {
                dec,
                index,
                count,
                prev_to,
                chain_checked,
            } => {
                let index = *index;
                let with_diff = |mut e: DecodeError| {
                    e.diff = Some(index);
                    e
                };
                let at = input.pos();
                let rec = dec.next(input).map_err(with_diff)?;
                let Some(rec) = rec else {
                    unreachable!("the phase moves on at the diff's end")
                };
                let data_or_end = matches!(
                    rec,
                    DiffRecord::Write { .. } | DiffRecord::Zero { .. } | DiffRecord::End
                );
                if data_or_end && !*chain_checked {
                    *chain_checked = true;
                    let last = index + 1 == *count;
                    if let Some(why) = chain_fault(
                        prev_to.as_deref(),
                        dec.from.as_deref(),
                        dec.to.as_deref(),
                        last,
                    ) {
                        let part = Part::of_diff_tag(match rec {
                            DiffRecord::Write { .. } => b'w',
                            DiffRecord::Zero { .. } => b'z',
                            _ => b'e',
                        });
                        return Err(with_diff(DecodeError::new(
                            part,
                            at,
                            DecodeErrorKind::Chain(why),
                        )));
                    }
                }
                if rec == DiffRecord::End {
                    self.phase = ReadPhase::Between {
                        next: index + 1,
                        count: *count,
                        prev_to: dec.to.take(),
                    };
                }
                Ok(Some(ImageRecord::Diff(rec)))
            }
        }
    }
}

/// Why a diff with these snapshot names cannot follow one that ended at
/// `prev_to` (`None`: this is the first diff), if it cannot.
fn chain_fault(
    prev_to: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    last: bool,
) -> Option<String> {
    if from != prev_to {
        return Some(match (prev_to, from) {
            (None, Some(f)) => {
                format!("the first diff starts from snapshot {f:?}, not from nothing")
            }
            (Some(p), None) => {
                format!("it starts from nothing, the previous diff ended at snapshot {p:?}")
            }
            (Some(p), Some(f)) => {
                format!("it starts from snapshot {f:?}, the previous diff ended at {p:?}")
            }
            (None, None) => unreachable!(),
        });
    }
    match (to, last) {
        (Some(t), true) => Some(format!(
            "the last diff must bring HEAD, it ends at snapshot {t:?}"
        )),
        (None, false) => Some("only the last diff may end at HEAD (no to-snapshot)".to_owned()),
        _ => None,
    }
}

fn expect_banner<R: Read>(input: &mut Input<R>, banner: &'static str) -> Result<(), DecodeError> {
    let at = input.pos();
    let mut b = [0u8; 32];
    let b = &mut b[..banner.len()];
    let n = input.read_up_to(b, Part::Banner, at)?;
    if &b[..n] != banner.as_bytes() {
        return Err(DecodeError::new(
            Part::Banner,
            at,
            DecodeErrorKind::BadMagic {
                expected: banner,
                found: b[..n].to_vec(),
            },
        ));
    }
    Ok(())
}

#[derive(Debug)]
enum WritePhase {
    Metadata,
    Between {
        next: u64,
        count: u64,
        prev_to: Option<String>,
    },
    InDiff {
        enc: DiffEncoder,
        index: u64,
        count: u64,
    },
}

/// A writer of a full-image stream that enforces its structure.
///
/// Write the image metadata ([`order`](Self::order),
/// [`features`](Self::features), [`stripe_unit`](Self::stripe_unit),
/// [`stripe_count`](Self::stripe_count), each at most once, and any
/// number of [`meta`](Self::meta) pairs), then
/// [`begin_diffs`](Self::begin_diffs) with the number of diffs (the
/// snapshots + 1), then each diff: [`begin_diff`](Self::begin_diff) with
/// its snapshot names (the chain is checked before anything is written),
/// [`protected`](Self::protected) (a snapshot's only), [`size`](Self::size),
/// the extents as for a [`DiffWriter`](crate::DiffWriter), and
/// [`end_diff`](Self::end_diff). [`finish`](Self::finish) checks that
/// every diff was written. A refused record writes nothing; after an I/O
/// error every call fails.
pub struct ImageWriter<W: Write> {
    out: W,
    phase: WritePhase,
    seen: u8,
    failed: bool,
}

impl<W: Write> ImageWriter<W> {
    /// Writes the banner.
    pub fn new(mut out: W) -> Result<Self, EncodeError> {
        out.write_all(IMAGE_BANNER_V2.as_bytes())
            .map_err(|e| EncodeError::new(Part::Banner, EncodeErrorKind::Io(e)))?;
        Ok(ImageWriter {
            out,
            phase: WritePhase::Metadata,
            seen: 0,
            failed: false,
        })
    }

    /// `O`: the image order.
    pub fn order(&mut self, order: u64) -> Result<(), EncodeError> {
        self.u64_record(Part::Order, b'O', order)
    }

    /// `F`: the image format (`rbd import` skips it; `rbd export` does
    /// not write it).
    pub fn format(&mut self, format: u64) -> Result<(), EncodeError> {
        self.u64_record(Part::Format, b'F', format)
    }

    /// `T`: the image features.
    pub fn features(&mut self, features: u64) -> Result<(), EncodeError> {
        self.u64_record(Part::Features, b'T', features)
    }

    /// `U`: the stripe unit.
    pub fn stripe_unit(&mut self, unit: u64) -> Result<(), EncodeError> {
        self.u64_record(Part::StripeUnit, b'U', unit)
    }

    /// `C`: the stripe count.
    pub fn stripe_count(&mut self, count: u64) -> Result<(), EncodeError> {
        self.u64_record(Part::StripeCount, b'C', count)
    }

    /// `M`: one image metadata pair.
    pub fn meta(&mut self, key: &str, value: &[u8]) -> Result<(), EncodeError> {
        let part = Part::Meta;
        self.guard(part)?;
        self.in_metadata(part)?;
        let len = 8 + key.len() as u64 + value.len() as u64;
        if len > MAX_META_LEN {
            return Err(EncodeError::new(
                part,
                EncodeErrorKind::TooLong {
                    len,
                    max: MAX_META_LEN,
                },
            ));
        }
        let mut buf = Vec::with_capacity(9 + len as usize);
        buf.push(b'M');
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        buf.extend_from_slice(value);
        self.emit(part, &buf)
    }

    /// `E`, the diffs banner and the number of diffs that follow (at
    /// least 1: HEAD's).
    pub fn begin_diffs(&mut self, count: u64) -> Result<(), EncodeError> {
        let part = Part::MetadataEnd;
        self.guard(part)?;
        self.in_metadata(part)?;
        if count == 0 {
            return Err(EncodeError::new(
                Part::DiffCount,
                EncodeErrorKind::DiffCount(
                    "a full-image stream needs at least one diff (HEAD)".into(),
                ),
            ));
        }
        let mut buf = Vec::with_capacity(28);
        buf.push(b'E');
        buf.extend_from_slice(IMAGE_DIFFS_BANNER_V2.as_bytes());
        buf.extend_from_slice(&count.to_le_bytes());
        self.emit(part, &buf)?;
        self.phase = WritePhase::Between {
            next: 0,
            count,
            prev_to: None,
        };
        Ok(())
    }

    /// Begins the next diff: from the previous diff's to-snapshot
    /// (`None` for the first), to `to` (`None` for the last, HEAD).
    pub fn begin_diff(&mut self, from: Option<&str>, to: Option<&str>) -> Result<(), EncodeError> {
        let part = Part::Banner;
        self.guard(part)?;
        let WritePhase::Between {
            next,
            count,
            prev_to,
        } = &self.phase
        else {
            return Err(EncodeError::new(
                part,
                EncodeErrorKind::OutOfPlace("a diff begins after begin_diffs or end_diff"),
            ));
        };
        let (index, count) = (*next, *count);
        let fail = |part, kind| EncodeError {
            part,
            diff: Some(index),
            kind,
        };
        if index == count {
            return Err(fail(
                part,
                EncodeErrorKind::DiffCount(format!("all {count} diffs were written already")),
            ));
        }
        if let Some(why) = chain_fault(prev_to.as_deref(), from, to, index + 1 == count) {
            let part = if from != prev_to.as_deref() {
                Part::FromSnap
            } else {
                Part::ToSnap
            };
            return Err(fail(part, EncodeErrorKind::Chain(why)));
        }
        for name in [from, to].into_iter().flatten() {
            if name.len() as u64 > crate::MAX_NAME_LEN {
                return Err(fail(
                    part,
                    EncodeErrorKind::TooLong {
                        len: name.len() as u64,
                        max: crate::MAX_NAME_LEN,
                    },
                ));
            }
        }
        let r = (|| {
            let mut enc = DiffEncoder::start(&mut self.out, DiffVersion::V2)?;
            if let Some(f) = from {
                enc.snap(&mut self.out, Part::FromSnap, f)?;
            }
            if let Some(t) = to {
                enc.snap(&mut self.out, Part::ToSnap, t)?;
            }
            Ok(enc)
        })();
        let enc = self.note(r, index)?;
        self.phase = WritePhase::InDiff { enc, index, count };
        Ok(())
    }

    /// `p`: whether the current diff's to-snapshot is protected.
    pub fn protected(&mut self, flag: bool) -> Result<(), EncodeError> {
        // The names were given to begin_diff: refuse now rather than at
        // the end, with the record written.
        self.in_diff(Part::Protection, |enc, out| {
            if enc.to.is_none() {
                return Err(EncodeError::new(
                    Part::Protection,
                    EncodeErrorKind::MissingToSnap,
                ));
            }
            enc.protected(out, flag)
        })
    }

    /// `s`: the image size at the end of the current diff.
    pub fn size(&mut self, size: u64) -> Result<(), EncodeError> {
        self.in_diff(Part::Size, |enc, out| enc.size(out, size))
    }

    /// `w`: one whole data extent.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), EncodeError> {
        self.begin_write(offset, data.len() as u64)?;
        self.write_data(data)
    }

    /// `w`: the header of a data extent whose data follows through
    /// [`write_data`](Self::write_data).
    pub fn begin_write(&mut self, offset: u64, len: u64) -> Result<(), EncodeError> {
        self.in_diff(Part::Write, |enc, out| enc.begin_write(out, offset, len))
    }

    /// Data of the extent begun by [`begin_write`](Self::begin_write).
    pub fn write_data(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        self.in_diff(Part::Write, |enc, out| enc.write_data(out, data))
    }

    /// `z`: an extent that reads as zeroes.
    pub fn zero(&mut self, offset: u64, len: u64) -> Result<(), EncodeError> {
        self.in_diff(Part::Zero, |enc, out| enc.zero(out, offset, len))
    }

    /// `e`: the end of the current diff.
    pub fn end_diff(&mut self) -> Result<(), EncodeError> {
        self.in_diff(Part::End, |enc, out| enc.end(out))?;
        let WritePhase::InDiff { enc, index, count } = &mut self.phase else {
            unreachable!("in_diff checked the phase")
        };
        self.phase = WritePhase::Between {
            next: *index + 1,
            count: *count,
            prev_to: enc.to.take(),
        };
        Ok(())
    }

    /// Checks that every diff was written, flushes, returns the writer.
    pub fn finish(mut self) -> Result<W, EncodeError> {
        let part = Part::End;
        self.guard(part)?;
        match &self.phase {
            WritePhase::Between { next, count, .. } if next == count => {}
            WritePhase::Between { next, count, .. } => {
                return Err(EncodeError::new(
                    part,
                    EncodeErrorKind::DiffCount(format!("{next} of {count} diffs were written")),
                ))
            }
            _ => {
                return Err(EncodeError::new(
                    part,
                    EncodeErrorKind::OutOfPlace("the stream ends after its last diff's end_diff"),
                ))
            }
        }
        self.out
            .flush()
            .map_err(|e| EncodeError::new(part, EncodeErrorKind::Io(e)))?;
        Ok(self.out)
    }

    fn u64_record(&mut self, part: Part, tag: u8, v: u64) -> Result<(), EncodeError> {
        self.guard(part)?;
        self.in_metadata(part)?;
        let bit = once_bit(part);
        if self.seen & bit != 0 {
            return Err(EncodeError::new(part, EncodeErrorKind::Duplicate));
        }
        let mut buf = [0u8; 17];
        buf[0] = tag;
        buf[1..9].copy_from_slice(&8u64.to_le_bytes());
        buf[9..].copy_from_slice(&v.to_le_bytes());
        self.emit(part, &buf)?;
        self.seen |= bit;
        Ok(())
    }

    fn in_metadata(&self, part: Part) -> Result<(), EncodeError> {
        match self.phase {
            WritePhase::Metadata => Ok(()),
            _ => Err(EncodeError::new(
                part,
                EncodeErrorKind::OutOfPlace("image metadata comes before the diffs"),
            )),
        }
    }

    fn in_diff(
        &mut self,
        part: Part,
        f: impl FnOnce(&mut DiffEncoder, &mut W) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        self.guard(part)?;
        let WritePhase::InDiff { enc, index, .. } = &mut self.phase else {
            return Err(EncodeError::new(
                part,
                EncodeErrorKind::OutOfPlace("diff records go between begin_diff and end_diff"),
            ));
        };
        let index = *index;
        let r = f(enc, &mut self.out);
        self.note(r, index)
    }

    fn emit(&mut self, part: Part, bytes: &[u8]) -> Result<(), EncodeError> {
        let r = self.out.write_all(bytes);
        if r.is_err() {
            self.failed = true;
        }
        r.map_err(|e| EncodeError::new(part, EncodeErrorKind::Io(e)))
    }

    fn note<T>(&mut self, r: Result<T, EncodeError>, index: u64) -> Result<T, EncodeError> {
        r.map_err(|mut e| {
            if matches!(e.kind, EncodeErrorKind::Io(_)) {
                self.failed = true;
            }
            e.diff = Some(index);
            e
        })
    }

    fn guard(&self, part: Part) -> Result<(), EncodeError> {
        if self.failed {
            Err(EncodeError::new(part, EncodeErrorKind::Failed))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
