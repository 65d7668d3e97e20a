//! The errors of decoding and encoding: one enum per direction, each
//! carrying the part of the stream it concerns and, when decoding, the
//! byte offset where that part starts.

use std::fmt;
use std::io;

/// A part of a stream: a record (named by its tag) or a fixed field.
///
/// Errors name it so that an operator can find the bad bytes with `xxd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A banner (`"rbd diff v1\n"`, `"rbd image v2\n"`, ...).
    Banner,
    /// `f`: the from-snapshot's name.
    FromSnap,
    /// `t`: the to-snapshot's name.
    ToSnap,
    /// `p`: whether the to-snapshot is protected (diff v2 only).
    Protection,
    /// `s`: the image size at the end of the diff.
    Size,
    /// `w`: data.
    Write,
    /// `z`: zeroes.
    Zero,
    /// `e`: the end of a diff.
    End,
    /// `O`: the image order (object size is `1 << order`).
    Order,
    /// `F`: the image format.
    Format,
    /// `T`: the image features.
    Features,
    /// `U`: the stripe unit.
    StripeUnit,
    /// `C`: the stripe count.
    StripeCount,
    /// `M`: one image metadata key and value.
    Meta,
    /// `E`: the end of the image metadata.
    MetadataEnd,
    /// The number of diffs after `"rbd image diffs v2\n"`.
    DiffCount,
    /// A record whose tag this crate does not know.
    Unknown(u8),
}

impl Part {
    /// The part a diff record's tag introduces.
    pub(crate) fn of_diff_tag(tag: u8) -> Part {
        match tag {
            b'f' => Part::FromSnap,
            b't' => Part::ToSnap,
            b'p' => Part::Protection,
            b's' => Part::Size,
            b'w' => Part::Write,
            b'z' => Part::Zero,
            b'e' => Part::End,
            t => Part::Unknown(t),
        }
    }

    /// The part an image metadata record's tag introduces.
    pub(crate) fn of_image_tag(tag: u8) -> Part {
        match tag {
            b'O' => Part::Order,
            b'F' => Part::Format,
            b'T' => Part::Features,
            b'U' => Part::StripeUnit,
            b'C' => Part::StripeCount,
            b'M' => Part::Meta,
            b'E' => Part::MetadataEnd,
            t => Part::Unknown(t),
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tag, what) = match self {
            Part::Banner => return f.write_str("banner"),
            Part::DiffCount => return f.write_str("diff count"),
            Part::Unknown(t) if t.is_ascii_graphic() => {
                return write!(f, "unknown record `{}` ({t:#04x})", *t as char)
            }
            Part::Unknown(t) => return write!(f, "unknown record {t:#04x}"),
            Part::FromSnap => ('f', "from-snapshot"),
            Part::ToSnap => ('t', "to-snapshot"),
            Part::Protection => ('p', "protection"),
            Part::Size => ('s', "size"),
            Part::Write => ('w', "data"),
            Part::Zero => ('z', "zero"),
            Part::End => ('e', "end"),
            Part::Order => ('O', "order"),
            Part::Format => ('F', "format"),
            Part::Features => ('T', "features"),
            Part::StripeUnit => ('U', "stripe unit"),
            Part::StripeCount => ('C', "stripe count"),
            Part::Meta => ('M', "metadata"),
            Part::MetadataEnd => ('E', "metadata end"),
        };
        write!(f, "`{tag}` ({what}) record")
    }
}

/// A stream could not be decoded: what is wrong ([`kind`](Self::kind)),
/// in which part ([`part`](Self::part)), at which byte
/// ([`offset`](Self::offset), from the start of the stream), and in a
/// full-image stream which diff ([`diff`](Self::diff), counted from 0).
#[derive(Debug, thiserror::Error)]
#[error("{}{part} at byte {offset}: {kind}", diff.map(|d| format!("diff {d}: ")).unwrap_or_default())]
pub struct DecodeError {
    /// The part of the stream at fault.
    pub part: Part,
    /// Where that part starts, in bytes from the start of the stream.
    pub offset: u64,
    /// In a full-image stream, the index of the diff the part is in.
    pub diff: Option<u64>,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    pub(crate) fn new(part: Part, offset: u64, kind: DecodeErrorKind) -> Self {
        DecodeError {
            part,
            offset,
            diff: None,
            kind,
        }
    }

    /// True if the stream ended early (a cut-off transfer rather than
    /// corrupt bytes).
    pub fn is_truncated(&self) -> bool {
        match &self.kind {
            DecodeErrorKind::Truncated { .. } | DecodeErrorKind::MissingEnd => true,
            DecodeErrorKind::BadMagic { expected, found } => expected.as_bytes().starts_with(found),
            _ => false,
        }
    }
}

/// What is wrong with a stream being decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The stream does not start with the expected banner.
    #[error("expected the banner {expected:?}, found {}", show_bytes(found))]
    BadMagic {
        /// The banner expected here.
        expected: &'static str,
        /// The bytes found instead (as many as the banner's length, or
        /// fewer if the stream ended).
        found: Vec<u8>,
    },
    /// A tag diff v1 does not define (only v2 can skip unknown records).
    #[error("diff v1 has no record {0:#04x} (only v2 can skip unknown records)")]
    UnknownTag(u8),
    /// The stream ends inside this part.
    #[error("the stream ends at byte {eof}, inside it")]
    Truncated {
        /// The stream's length.
        eof: u64,
    },
    /// The stream ends where a record should start: the end record
    /// (`e`) is missing.
    #[error("the stream ends without an end record")]
    MissingEnd,
    /// A v2 record's length field disagrees with its contents.
    #[error("its length field says {declared} bytes, its contents take {expected}")]
    LengthMismatch {
        /// The length field.
        declared: u64,
        /// The length its contents need.
        expected: u64,
    },
    /// A length plus the fixed fields of its record overflows 64 bits.
    #[error("length {0} overflows the record's 64-bit length field")]
    LengthOverflow(u64),
    /// An extent's end (`offset + length`) overflows 64 bits.
    #[error("extent at {offset} of {len} bytes ends beyond 2^64")]
    ExtentOverflow {
        /// The extent's offset.
        offset: u64,
        /// The extent's length.
        len: u64,
    },
    /// A name or metadata record is longer than this crate accepts.
    #[error("{len} bytes, more than the limit of {max}")]
    TooLong {
        /// Its declared length.
        len: u64,
        /// The limit ([`MAX_NAME_LEN`](crate::MAX_NAME_LEN) or
        /// [`MAX_META_LEN`](crate::MAX_META_LEN)).
        max: u64,
    },
    /// A snapshot name or metadata key is not UTF-8.
    #[error("the name is not UTF-8: {}", show_bytes(.0))]
    NotUtf8(Vec<u8>),
    /// A protection flag other than 0 or 1.
    #[error("protection flag {0}, expected 0 or 1")]
    BadFlag(u8),
    /// A record follows the end record (or a full-image stream's last diff).
    #[error("it follows the end of the stream")]
    AfterEnd,
    /// A metadata record follows a data record.
    #[error("metadata records must come before the first data record")]
    MetadataAfterData,
    /// The metadata ended (at the first extent or the end) without the
    /// image size (`s`), which RBD always writes and importers resize to.
    #[error("the metadata records lack the size (`s`)")]
    MissingSize,
    /// The metadata ended with a protection flag (`p`) but no
    /// to-snapshot (`t`) for it to apply to.
    #[error("a protection flag (`p`) without a to-snapshot (`t`)")]
    MissingToSnap,
    /// A record that may appear once appears again.
    #[error("it appears twice")]
    Duplicate,
    /// An extent starts before the previous one ends: RBD writes
    /// extents in ascending order without overlaps.
    #[error("extent at {offset} starts before the previous extent's end at {prev_end}")]
    Unordered {
        /// The extent's offset.
        offset: u64,
        /// Where the previous extent ends.
        prev_end: u64,
    },
    /// An extent ends beyond the size given by the `s` record.
    #[error("extent {offset}..{end} ends beyond the image size {size}")]
    BeyondSize {
        /// The extent's offset.
        offset: u64,
        /// The extent's end.
        end: u64,
        /// The size from the `s` record.
        size: u64,
    },
    /// In a full-image stream, a diff does not continue from the
    /// previous one's to-snapshot, or a to-snapshot is missing (every
    /// diff but the last, which brings HEAD) or present (the last).
    #[error("the snapshot chain breaks: {0}")]
    Chain(String),
    /// A full-image stream declares zero diffs (RBD always writes at
    /// least HEAD's).
    #[error("a full-image stream needs at least one diff (HEAD)")]
    NoDiffs,
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(#[source] io::Error),
    /// The reader returned an error before and cannot go on.
    #[error("the stream already failed to decode")]
    Failed,
}

/// A stream could not be encoded: what is wrong ([`kind`](Self::kind))
/// with which record ([`part`](Self::part)). Nothing is written for a
/// record that is refused; an I/O error may leave a partial record.
#[derive(Debug, thiserror::Error)]
#[error("{}{part}: {kind}", diff.map(|d| format!("diff {d}: ")).unwrap_or_default())]
pub struct EncodeError {
    /// The record being written.
    pub part: Part,
    /// In a full-image stream, the index of the diff being written.
    pub diff: Option<u64>,
    /// What is wrong.
    pub kind: EncodeErrorKind,
}

impl EncodeError {
    pub(crate) fn new(part: Part, kind: EncodeErrorKind) -> Self {
        EncodeError {
            part,
            diff: None,
            kind,
        }
    }
}

/// What is wrong with a record being encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeErrorKind {
    /// The record does not exist in diff v1 (`p`).
    #[error("diff v1 has no such record")]
    NotInV1,
    /// A record that may appear once was already written.
    #[error("it was already written")]
    Duplicate,
    /// A metadata record after the first data record.
    #[error("metadata records must come before the first data record")]
    MetadataAfterData,
    /// A data record, or the end, before the `s` record.
    #[error("the size (`s` record) must be written first")]
    MissingSize,
    /// A `p` record but no `t` record, when the metadata ends.
    #[error("the protection flag belongs to a to-snapshot, and there is no `t` record")]
    MissingToSnap,
    /// A name longer than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) or a
    /// metadata record longer than [`MAX_META_LEN`](crate::MAX_META_LEN).
    #[error("{len} bytes, more than the limit of {max}")]
    TooLong {
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An extent's end overflows 64 bits, or a `w` record's length
    /// plus its fixed fields does.
    #[error("extent at {offset} of {len} bytes ends beyond 2^64")]
    ExtentOverflow {
        /// The extent's offset.
        offset: u64,
        /// The extent's length.
        len: u64,
    },
    /// An extent starts before the previous one ends.
    #[error("extent at {offset} starts before the previous extent's end at {prev_end}")]
    Unordered {
        /// The extent's offset.
        offset: u64,
        /// Where the previous extent ends.
        prev_end: u64,
    },
    /// An extent ends beyond the size of the `s` record.
    #[error("extent {offset}..{end} ends beyond the image size {size}")]
    BeyondSize {
        /// The extent's offset.
        offset: u64,
        /// The extent's end.
        end: u64,
        /// The size.
        size: u64,
    },
    /// A record (or the end) while a `w` record still expects data.
    #[error("the previous `w` record still expects {0} bytes of data")]
    DataPending(u64),
    /// More data than the `w` record declared, or data without one.
    #[error("{given} bytes of data given, the `w` record expects {expected} more")]
    DataOverrun {
        /// Bytes given.
        given: u64,
        /// Bytes still expected.
        expected: u64,
    },
    /// The chain of snapshots of a full-image stream would break.
    #[error("the snapshot chain breaks: {0}")]
    Chain(String),
    /// A full-image stream with zero diffs, or a diff beyond the count,
    /// or fewer diffs than the count.
    #[error("{0}")]
    DiffCount(String),
    /// The record does not belong at this point of a full-image stream
    /// (metadata after the diffs began, an extent outside a diff, ...).
    #[error("out of place: {0}")]
    OutOfPlace(&'static str),
    /// Writing failed.
    #[error("write failed: {0}")]
    Io(#[source] io::Error),
    /// The writer returned an error before and cannot go on.
    #[error("the stream already failed to encode")]
    Failed,
}

/// Bytes for an error message: text when printable, escaped otherwise.
fn show_bytes(b: &[u8]) -> String {
    format!("\"{}\"", b.escape_ascii())
}
