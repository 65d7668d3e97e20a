//! Ceph RBD's stream formats, as pure code over [`Read`](std::io::Read)
//! and [`Write`](std::io::Write): the incremental diffs of
//! `rbd export-diff` / `rbd import-diff` and the full-image stream of
//! `rbd export --export-format 2` / `rbd import --export-format 2`. This
//! crate reads and writes the bytes; finding what changed and applying it
//! to a volume is the caller's business.
//!
//! - [`DiffReader`] and [`DiffWriter`]: one diff, [`DiffVersion::V1`]
//!   (what `rbd export-diff` writes) or [`DiffVersion::V2`], as
//!   [`DiffRecord`]s.
//! - [`ImageReader`] and [`ImageWriter`]: a full-image stream, as
//!   [`ImageRecord`]s: the image's metadata, then one v2 diff per
//!   snapshot and one for HEAD.
//! - Readers stream: a data record's bytes go straight into the caller's
//!   buffer ([`DiffReader::read_data`]), so memory stays bounded (a
//!   64 KiB buffer, names up to [`MAX_NAME_LEN`], metadata records up to
//!   [`MAX_META_LEN`]) whatever the lengths in the stream say. They never
//!   panic on any input, and accept only what the writers can write
//!   (property-tested; [`fuzz_readers`] checks both), and fail with a
//!   [`DecodeError`] naming the record ([`Part`]) and its byte offset.
//! - Writers enforce the record order and fail with an [`EncodeError`]
//!   before writing a record that would make the stream invalid.
//!
//! ```
//! use archipelago_rbd_stream::{DiffReader, DiffRecord, DiffVersion, DiffWriter};
//!
//! // A diff from snapshot s1 to s2 of a 8 MiB image: 4 KiB of data, 1 MiB discarded.
//! let mut w = DiffWriter::new(Vec::new(), DiffVersion::V1)?;
//! w.from_snap("s1")?;
//! w.to_snap("s2")?;
//! w.size(8 << 20)?;
//! w.write(4096, &[0xab; 4096])?;
//! w.zero(1 << 20, 1 << 20)?;
//! let bytes = w.finish()?;
//! assert!(bytes.starts_with(b"rbd diff v1\n"));
//!
//! let mut r = DiffReader::new(&bytes[..])?;
//! assert_eq!(r.next_record()?, Some(DiffRecord::FromSnap("s1".into())));
//! assert_eq!(r.next_record()?, Some(DiffRecord::ToSnap("s2".into())));
//! assert_eq!(r.next_record()?, Some(DiffRecord::Size(8 << 20)));
//! assert_eq!(r.next_record()?, Some(DiffRecord::Write { offset: 4096, len: 4096 }));
//! let mut buf = [0u8; 1000];
//! let mut data = 0;
//! while let n @ 1.. = r.read_data(&mut buf)? {
//!     assert!(buf[..n].iter().all(|&b| b == 0xab));
//!     data += n;
//! }
//! assert_eq!(data, 4096);
//! assert_eq!(r.next_record()?, Some(DiffRecord::Zero { offset: 1 << 20, len: 1 << 20 }));
//! assert_eq!(r.next_record()?, Some(DiffRecord::End));
//! assert_eq!(r.next_record()?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The formats
//!
//! Specified by Ceph's `doc/dev/rbd-diff.rst` (diffs) and
//! `doc/dev/rbd-export.rst` (full images), and by what `rbd` 16.2
//! (pacific) writes and reads, against which the tests in
//! `tests/rbd_interop.rs` run. All integers are little-endian; a name is
//! a le32 length and that many bytes.
//!
//! **Diff v1**: the banner `"rbd diff v1\n"`, then records, each a tag
//! byte and its contents:
//!
//! | tag | contents | meaning |
//! |-----|----------|---------|
//! | `f` | name | the snapshot the diff starts from (absent: an empty image) |
//! | `t` | name | the snapshot the diff ends at (absent: HEAD) |
//! | `s` | le64 | the image size at the end |
//! | `w` | le64 offset, le64 length, data | data |
//! | `z` | le64 offset, le64 length | zeroes (discarded, or all-zero data) |
//! | `e` | — | the end |
//!
//! The metadata records (`f`, `t`, `s`) come first, in any order; then
//! the data records (`w`, `z`); then `e`.
//!
//! **Diff v2**: the banner `"rbd diff v2\n"`, the same records, but
//! every tag except `e` is followed by a le64 length of its contents (so
//! that a reader can skip a tag it does not know), and one more record,
//! `p` (one byte, 0 or 1: the to-snapshot is protected). rbd 16.2 writes
//! `p`'s length as 8 although one byte follows (later releases write 1;
//! `rbd import` ignores the lengths of the records it knows): this
//! reader accepts both, the writer writes 1.
//!
//! **Full image** (`--export-format 2`): the banner `"rbd image v2\n"`;
//! metadata records, each a tag, a le64 length and contents: `O` order,
//! `F` format, `T` features, `U` stripe unit, `C` stripe count (a le64
//! each), `M` one `rbd image-meta` pair (key name, value name); `E`
//! (no length) ends them. Then `"rbd image diffs v2\n"`, a le64 count,
//! and that many whole diff v2 streams (banner to `e`): the first from
//! nothing to the oldest snapshot, each next one from the previous one's
//! to-snapshot, the last from the newest snapshot to HEAD.
//!
//! # What this crate requires beyond the documents
//!
//! Ceph's documents do not say it, but every `rbd` producer writes it and
//! importers rely on it, so readers reject and writers refuse:
//! metadata records after data records or twice; extents out of order,
//! overlapping, or beyond the `s` size; lengths that overflow 64 bits; a
//! v2 length field that disagrees with its record's contents; bytes
//! after the end; in a full image, diffs that do not chain as above.
//! Snapshot names and metadata keys must be UTF-8.

#![warn(missing_docs)]

mod diff;
mod error;
mod fuzz;
mod image;
mod input;

pub use diff::{DiffReader, DiffRecord, DiffVersion, DiffWriter};
pub use error::{DecodeError, DecodeErrorKind, EncodeError, EncodeErrorKind, Part};
pub use fuzz::fuzz_readers;
pub use image::{ImageReader, ImageRecord, ImageWriter};

/// The banner of a diff v1 stream.
pub const DIFF_BANNER_V1: &str = "rbd diff v1\n";
/// The banner of a diff v2 stream.
pub const DIFF_BANNER_V2: &str = "rbd diff v2\n";
/// The banner of a full-image stream (`rbd export --export-format 2`).
pub const IMAGE_BANNER_V2: &str = "rbd image v2\n";
/// The banner between a full-image stream's metadata and its diffs.
pub const IMAGE_DIFFS_BANNER_V2: &str = "rbd image diffs v2\n";

/// The longest snapshot name accepted, in bytes: `rbd import-diff`'s
/// own limit.
pub const MAX_NAME_LEN: u64 = 4096;

/// The longest `M` (image metadata) record accepted: the key's and the
/// value's bytes plus their two 4-byte lengths.
pub const MAX_META_LEN: u64 = 1 << 20;
