//! [`MapError`]: why a map could not be decoded, encoded or changed.

use archipelago_protocol::names::NameError;
use archipelago_protocol::sizes::SizeError;

/// Why a map structure was refused.
///
/// Decoders return it for anything that is not exactly what the format
/// allows (they never panic); the pure operations ([`snapshot`],
/// [`set_entry`], ...) return it for requests the map cannot honour. Each
/// variant names what is wrong; `what` fields name the structure
/// ("v3 header", "v3 chunk", "v2 entry", ...).
///
/// [`snapshot`]: crate::snapshot
/// [`set_entry`]: crate::set_entry
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// Fewer bytes than the structure needs.
    #[error("{what} is truncated: it needs {need} bytes, only {have} were given")]
    Truncated {
        /// The structure.
        what: &'static str,
        /// Bytes it needs.
        need: u64,
        /// Bytes given.
        have: u64,
    },
    /// More bytes than the structure's encoded length.
    #[error("{what} is {have} bytes, but its fields say it ends after {expected}")]
    TrailingBytes {
        /// The structure.
        what: &'static str,
        /// Its encoded length.
        expected: u64,
        /// Bytes given.
        have: u64,
    },
    /// The magic bytes are not the structure's.
    #[error("{what} has magic {found:02x?}, expected {expected:02x?}")]
    BadMagic {
        /// The structure.
        what: &'static str,
        /// The bytes found.
        found: [u8; 4],
        /// The magic expected.
        expected: [u8; 4],
    },
    /// [`detect`](crate::detect): the first bytes match no known format.
    #[error("no map format starts with {0:02x?} (and v0 was not assumed)")]
    UnknownFormat(Vec<u8>),
    /// A version this crate does not read.
    #[error("{what} has version {version}, which is not supported")]
    UnsupportedVersion {
        /// The structure.
        what: &'static str,
        /// The version found.
        version: u32,
    },
    /// The stored checksum does not match the content.
    #[error("{what} fails its checksum: the object is corrupt or was torn")]
    ChecksumMismatch {
        /// The structure.
        what: &'static str,
    },
    /// A partial entry whose granules are none or all, or whose backing
    /// is partial (not canonical: such an entry is never written).
    #[error(
        "a partial entry with granules {granules:#018x} or a partial backing is not canonical"
    )]
    BadPartial {
        /// The granule bitmap.
        granules: u64,
    },
    /// An entry kind outside 0..=4 (0..=3 in a version 3 chunk).
    #[error("entry {index} has unknown kind {kind}")]
    BadEntryKind {
        /// Entry index (in its chunk).
        index: u64,
        /// The kind byte.
        kind: u8,
    },
    /// A reserved or padding byte is not zero (a newer writer, or
    /// corruption).
    #[error("{what}: reserved byte at offset {offset} is not zero")]
    BadReserved {
        /// The structure.
        what: &'static str,
        /// Byte offset inside the encoded structure.
        offset: u64,
    },
    /// Flag bits this version does not define.
    #[error("{what} has unknown flag bits in {flags:#x}")]
    BadFlags {
        /// The structure.
        what: &'static str,
        /// The whole flags word.
        flags: u32,
    },
    /// A volume size outside the rules.
    #[error("invalid volume size: {0}")]
    InvalidSize(#[from] SizeError),
    /// An object size (or its log2) outside the format's range.
    #[error("{what} {value} is not a valid object size")]
    InvalidObjectSize {
        /// Which field ("v2 blocksize", "object size log2", ...).
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A name longer than its field allows.
    #[error("{what} is {len} bytes, more than {max}")]
    NameTooLong {
        /// Which name.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A name outside the protocol's grammar.
    #[error("{what}: {source}")]
    BadName {
        /// Which name.
        what: &'static str,
        /// The grammar rule it breaks.
        source: NameError,
    },
    /// A legacy (v1/v2) entry's name is unusable.
    #[error("legacy entry {index}: {why}")]
    BadLegacyName {
        /// Entry index.
        index: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The chunk table does not have `ceil(objects / ENTRIES_PER_CHUNK)`
    /// refs.
    #[error("chunk count {found} does not match the volume size, which needs {expected}")]
    ChunkCountMismatch {
        /// Count implied by the size.
        expected: u64,
        /// Count stored.
        found: u64,
    },
    /// A legacy map has a different number of entries than its size needs.
    #[error("the map has {found} entries, its size needs {expected}")]
    EntryCountMismatch {
        /// Entries implied by the size.
        expected: u64,
        /// Entries given.
        found: u64,
    },
    /// v0: `ceil(size hint / 4 MiB)` differs from the number of entries.
    #[error("v0 size hint {hint} needs {} entries, the map has {entries}", hint.div_ceil(crate::LEGACY_OBJECT_SIZE))]
    SizeHintMismatch {
        /// The hint.
        hint: u64,
        /// Entries found before the terminator.
        entries: u64,
    },
    /// A volume id of 0 (reserved for "none"), or a clone reusing an
    /// ancestor's id.
    #[error("{what}: volume id {id:#018x} is not allowed here")]
    BadVolumeId {
        /// Which id.
        what: &'static str,
        /// Its value.
        id: u64,
    },
    /// Parent fields that contradict each other.
    #[error("parent fields are inconsistent: {why}")]
    BadParent {
        /// The contradiction.
        why: &'static str,
    },
    /// Chunk serials out of order (`1 <= first_private <= next` is required).
    #[error("chunk serials are inconsistent: next {next}, first private {first_private}")]
    BadSerials {
        /// Next serial.
        next: u64,
        /// First private serial.
        first_private: u64,
    },
    /// A chunk ref that cannot exist.
    #[error("chunk ref in slot {slot} (owner {owner:#018x}, serial {serial}) is invalid")]
    BadChunkRef {
        /// Slot in the chunk table.
        slot: u64,
        /// Owner id.
        owner: u64,
        /// Serial.
        serial: u64,
    },
    /// A chunk object names an identity no chunk can have (owner or
    /// serial 0).
    #[error("chunk object claims owner {owner:#018x}, serial {serial}: neither may be 0")]
    BadChunkId {
        /// Owner id found.
        owner: u64,
        /// Serial found.
        serial: u64,
    },
    /// [`set_entries`](crate::set_entries) was given indexes in more than
    /// one chunk.
    #[error("object {index} is in chunk slot {slot}, not in slot {expected} like the others")]
    EntriesSpanChunks {
        /// The index.
        index: u64,
        /// Its slot.
        slot: u64,
        /// The slot of the first index.
        expected: u64,
    },
    /// A legacy entry's name index past the chunk's name table.
    #[error("entry {entry} refers to name {name_index}, the table has {names}")]
    BadNameIndex {
        /// Entry index.
        entry: u64,
        /// The index.
        name_index: u32,
        /// Names in the table.
        names: u64,
    },
    /// The chunk's name table is malformed.
    #[error("chunk name table: {why}")]
    BadNameTable {
        /// What is wrong.
        why: &'static str,
    },
    /// A chunk is not the one the header refers to.
    #[error(
        "expected chunk {expected_owner:016x}_{expected_serial:016x}, \
         got {found_owner:016x}_{found_serial:016x}"
    )]
    ChunkMismatch {
        /// Owner expected.
        expected_owner: u64,
        /// Serial expected.
        expected_serial: u64,
        /// Owner found.
        found_owner: u64,
        /// Serial found.
        found_serial: u64,
    },
    /// More entries than a chunk holds.
    #[error("{count} entries, a chunk holds at most {max}")]
    TooManyEntries {
        /// Entries given.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// An object index past the volume's end.
    #[error("object {index} is past the volume's end ({objects} objects)")]
    OutOfRange {
        /// The index.
        index: u64,
        /// Objects in the volume.
        objects: u64,
    },
    /// The volume is a snapshot (READONLY).
    #[error("the volume is read-only (a snapshot)")]
    ReadOnly,
    /// The volume is flagged REMOVED.
    #[error("the volume has been removed")]
    Removed,
    /// Clones are made from snapshots only.
    #[error("the clone source is not a snapshot (READONLY)")]
    NotASnapshot,
    /// A clone smaller than its source.
    #[error("a clone of {source_size} bytes cannot be {size} bytes")]
    CloneShrinks {
        /// Requested size.
        size: u64,
        /// Source size.
        source_size: u64,
    },
    /// Shrinking cuts a stored chunk: it must be given.
    #[error("shrinking cuts chunk slot {slot}: pass that chunk")]
    TailChunkRequired {
        /// Its slot.
        slot: u64,
    },
    /// A counter would overflow.
    #[error("the {what} counter is exhausted")]
    Exhausted {
        /// Which counter ("epoch", "chunk serial", "commit sequence").
        what: &'static str,
    },
}
