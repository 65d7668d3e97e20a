//! Chunks: [`ENTRIES_PER_CHUNK`] entries in one immutable object. Written
//! as version 4 ([`CHUNK_VERSION`]: 64-byte entries, which may be
//! partial); version 3 (40-byte entries, the first format) is still read.
//!
//! A chunk object is named `{owner:016x}_{serial:016x}` ([`ChunkRef`]) in
//! the map store and is never modified once written: a change writes a
//! new chunk under a fresh serial, then commits a header that refers to
//! it. The byte layout is the **Chunk** table of the
//! [crate docs](crate#layouts), derived by the offset constants below.
//!
//! Entries past the stored count are [`Entry::Zero`]: encoders store
//! entries only up to the last non-zero one, so a small volume's chunk is
//! small. The name table holds each distinct legacy name once, in order
//! of first use.

use crate::bytes::{put, to_usize, Fields};
use crate::entry::{self, check_legacy_name, Entry, ENTRY_LEN, ENTRY_LEN_V3};
use crate::MapError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Entries per chunk: 16 GiB of volume at 4 MiB objects.
pub const ENTRIES_PER_CHUNK: usize = 4096;
/// Chunk magic.
pub const CHUNK_MAGIC: [u8; 4] = *b"AMC.";
/// The version chunks are written in: 4, whose entries are 64 bytes and
/// may be partial. Chunks of version 3 (the header's version, 40-byte
/// entries) are read too.
pub const CHUNK_VERSION: u32 = 4;
/// The first chunk version, 40-byte entries.
pub const CHUNK_VERSION_V3: u32 = 3;

/// Offset of the magic.
pub const MAGIC_OFF: usize = 0;
/// Offset of the format version (u32).
pub const VERSION_OFF: usize = MAGIC_OFF + CHUNK_MAGIC.len();
/// Offset of the owner id (u64).
pub const OWNER_OFF: usize = VERSION_OFF + size_of::<u32>();
/// Offset of the serial (u64).
pub const SERIAL_OFF: usize = OWNER_OFF + size_of::<u64>();
/// Offset of the stored entry count (u32).
pub const COUNT_OFF: usize = SERIAL_OFF + size_of::<u64>();
/// Offset of the name table length (u32).
pub const NAMES_LEN_OFF: usize = COUNT_OFF + size_of::<u32>();
/// Offset of the checksum.
pub const CHECKSUM_OFF: usize = NAMES_LEN_OFF + size_of::<u32>();
/// Checksum length.
pub const CHECKSUM_LEN: usize = 16;
/// Offset of the reserved bytes.
pub const RESERVED_OFF: usize = CHECKSUM_OFF + CHECKSUM_LEN;
/// Reserved length.
pub const RESERVED_LEN: usize = 16;
/// Header length; entries start here.
pub const CHUNK_HEADER_LEN: usize = RESERVED_OFF + RESERVED_LEN;
/// Bytes of a name's length prefix in the name table (u16).
pub const NAME_LEN_LEN: usize = size_of::<u16>();

const WHAT: &str = "chunk";

/// A reference to a chunk object in a header's chunk table: 16 bytes,
/// `u64 owner, u64 serial`, little-endian. Serial 0 (with owner 0) is the
/// all-zero chunk, which has no object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChunkRef {
    /// Volume id of the volume that wrote the chunk.
    pub owner: u64,
    /// Its serial, from that volume's `next_serial`.
    pub serial: u64,
}

impl ChunkRef {
    /// The all-zero chunk (no object).
    pub const ZERO: Self = Self {
        owner: 0,
        serial: 0,
    };

    /// Whether this is the all-zero chunk.
    pub fn is_zero(&self) -> bool {
        self.serial == 0
    }

    /// The chunk object's name, `{owner:016x}_{serial:016x}`, or `None`
    /// for the all-zero chunk.
    pub fn object_name(&self) -> Option<String> {
        (!self.is_zero()).then(|| format!("{:016x}_{:016x}", self.owner, self.serial))
    }
}

/// The entries of one chunk, as loaded from or about to be written to its
/// object.
///
/// Entries past [`entries`](Self::entries) are zero; every entry held is
/// valid ([`Entry::validate`]) and canonical (the zero block's content is
/// [`Entry::Zero`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    id: ChunkRef,
    /// Stored entries; never ends with `Entry::Zero`.
    entries: Vec<Entry>,
}

impl Chunk {
    /// A chunk of zeros (what a [`ChunkRef::ZERO`] slot holds, or the
    /// start of a new chunk).
    pub fn empty(id: ChunkRef) -> Self {
        Self {
            id,
            entries: Vec::new(),
        }
    }

    /// A chunk holding `entries` (at most [`ENTRIES_PER_CHUNK`]), each
    /// validated.
    pub fn from_entries(id: ChunkRef, entries: Vec<Entry>) -> Result<Self, MapError> {
        if entries.len() > ENTRIES_PER_CHUNK {
            return Err(MapError::TooManyEntries {
                count: entries.len() as u64,
                max: ENTRIES_PER_CHUNK as u64,
            });
        }
        for e in &entries {
            e.validate()?;
        }
        let mut c = Self {
            id,
            entries: entries.into_iter().map(Entry::canonical).collect(),
        };
        c.trim();
        Ok(c)
    }

    fn trim(&mut self) {
        while self.entries.last() == Some(&Entry::Zero) {
            self.entries.pop();
        }
    }

    /// Which chunk object this is.
    pub fn id(&self) -> ChunkRef {
        self.id
    }

    /// The same entries under another identity (a copy about to be
    /// written under a fresh serial).
    pub fn with_id(mut self, id: ChunkRef) -> Self {
        self.id = id;
        self
    }

    /// The stored entries: those up to the last non-zero one.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry at `offset` (zero past the stored ones), or `None` if
    /// `offset` is not below [`ENTRIES_PER_CHUNK`].
    pub fn get(&self, offset: usize) -> Option<&Entry> {
        static ZERO: Entry = Entry::Zero;
        match self.entries.get(offset) {
            Some(e) => Some(e),
            None => (offset < ENTRIES_PER_CHUNK).then_some(&ZERO),
        }
    }

    /// Sets the entry at `offset`, after validating it.
    pub fn set(&mut self, offset: usize, entry: Entry) -> Result<(), MapError> {
        if offset >= ENTRIES_PER_CHUNK {
            return Err(MapError::OutOfRange {
                index: offset as u64,
                objects: ENTRIES_PER_CHUNK as u64,
            });
        }
        entry.validate()?;
        let entry = entry.canonical();
        if offset >= self.entries.len() {
            if entry == Entry::Zero {
                return Ok(());
            }
            self.entries.resize(offset + 1, Entry::Zero);
        }
        self.entries[offset] = entry;
        self.trim();
        Ok(())
    }

    /// Sets every entry from `offset` on to zero.
    pub fn truncate(&mut self, offset: usize) {
        self.entries.truncate(offset);
        self.trim();
    }

    /// Encodes the chunk object. Fails only for the all-zero ref, which
    /// has no object.
    pub fn encode(&self) -> Result<Vec<u8>, MapError> {
        if self.id.owner == 0 || self.id.serial == 0 {
            return Err(MapError::BadChunkId {
                owner: self.id.owner,
                serial: self.id.serial,
            });
        }
        // Name table: each distinct legacy name once, in order of first use.
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut table = Vec::new();
        let mut raw_entries = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            let name_index = match e.legacy_name() {
                Some(name) => {
                    let next = index.len() as u32;
                    *index.entry(name).or_insert_with(|| {
                        // Validated names are at most 123 bytes.
                        table.extend_from_slice(&(name.len() as u16).to_le_bytes());
                        table.extend_from_slice(name.as_bytes());
                        next
                    })
                }
                _ => 0,
            };
            raw_entries.extend_from_slice(&e.encode(name_index));
        }
        let mut out = vec![0u8; CHUNK_HEADER_LEN];
        put(&mut out, MAGIC_OFF, &CHUNK_MAGIC);
        put(&mut out, VERSION_OFF, &CHUNK_VERSION.to_le_bytes());
        put(&mut out, OWNER_OFF, &self.id.owner.to_le_bytes());
        put(&mut out, SERIAL_OFF, &self.id.serial.to_le_bytes());
        put(
            &mut out,
            COUNT_OFF,
            &(self.entries.len() as u32).to_le_bytes(),
        );
        put(&mut out, NAMES_LEN_OFF, &(table.len() as u32).to_le_bytes());
        out.extend_from_slice(&raw_entries);
        out.extend_from_slice(&table);
        let sum = checksum(&out);
        put(&mut out, CHECKSUM_OFF, &sum);
        Ok(out)
    }

    /// Decodes a chunk object, checking every field, the checksum, every
    /// entry and the name table. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, MapError> {
        let f = Fields::new(bytes, WHAT);
        f.need(CHUNK_HEADER_LEN as u64)?;
        let magic: [u8; 4] = f.array(MAGIC_OFF)?;
        if magic != CHUNK_MAGIC {
            return Err(MapError::BadMagic {
                what: WHAT,
                found: magic,
                expected: CHUNK_MAGIC,
            });
        }
        let version = f.u32_le(VERSION_OFF)?;
        let entry_len = match version {
            CHUNK_VERSION => ENTRY_LEN,
            CHUNK_VERSION_V3 => ENTRY_LEN_V3,
            _ => {
                return Err(MapError::UnsupportedVersion {
                    what: WHAT,
                    version,
                })
            }
        };
        let count = f.u32_le(COUNT_OFF)?;
        if count as usize > ENTRIES_PER_CHUNK {
            return Err(MapError::TooManyEntries {
                count: count.into(),
                max: ENTRIES_PER_CHUNK as u64,
            });
        }
        let names_len = f.u32_le(NAMES_LEN_OFF)?;
        let entries_end = CHUNK_HEADER_LEN + count as usize * entry_len;
        let total = entries_end as u64 + u64::from(names_len);
        f.need(total)?;
        if f.len() > total {
            return Err(MapError::TrailingBytes {
                what: WHAT,
                expected: total,
                have: f.len(),
            });
        }
        let stored: [u8; CHECKSUM_LEN] = f.array(CHECKSUM_OFF)?;
        if checksum(bytes) != stored {
            return Err(MapError::ChecksumMismatch { what: WHAT });
        }
        f.zeros(RESERVED_OFF, RESERVED_LEN, 0)?;
        let id = ChunkRef {
            owner: f.u64_le(OWNER_OFF)?,
            serial: f.u64_le(SERIAL_OFF)?,
        };
        if id.owner == 0 || id.serial == 0 {
            return Err(MapError::BadChunkId {
                owner: id.owner,
                serial: id.serial,
            });
        }
        let table_len = to_usize(names_len.into(), WHAT, bytes.len())?;
        let names = decode_names(f.slice(entries_end, table_len)?)?;
        let mut entries = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let at = CHUNK_HEADER_LEN + i * entry_len;
            let raw = f.slice(at, entry_len)?;
            let e = entry::decode_at(raw, &names, i as u64, at as u64, entry_len)?;
            entries.push(e.canonical());
        }
        let mut c = Self { id, entries };
        c.trim();
        Ok(c)
    }

    /// [`decode`](Self::decode), then checks the chunk is the one `expected`
    /// refers to ([`MapError::ChunkMismatch`] otherwise).
    pub fn decode_as(bytes: &[u8], expected: ChunkRef) -> Result<Self, MapError> {
        let c = Self::decode(bytes)?;
        if c.id != expected {
            return Err(chunk_mismatch(expected, c.id));
        }
        Ok(c)
    }
}

pub(crate) fn chunk_mismatch(expected: ChunkRef, found: ChunkRef) -> MapError {
    MapError::ChunkMismatch {
        expected_owner: expected.owner,
        expected_serial: expected.serial,
        found_owner: found.owner,
        found_serial: found.serial,
    }
}

/// The first 16 bytes of the SHA-256 of `object` with its checksum field
/// read as zeros.
fn checksum(object: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = Sha256::new();
    h.update(&object[..CHECKSUM_OFF]);
    h.update([0u8; CHECKSUM_LEN]);
    h.update(&object[CHECKSUM_OFF + CHECKSUM_LEN..]);
    let d = h.finalize();
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&d[..CHECKSUM_LEN]);
    out
}

pub(crate) fn decode_names(mut table: &[u8]) -> Result<Vec<String>, MapError> {
    let mut names = Vec::new();
    while !table.is_empty() {
        let Some((len, rest)) = table.split_first_chunk::<NAME_LEN_LEN>() else {
            return Err(MapError::BadNameTable {
                why: "a length prefix is cut off",
            });
        };
        let len = u16::from_le_bytes(*len) as usize;
        let Some(name) = rest.get(..len) else {
            return Err(MapError::BadNameTable {
                why: "a name runs past the end of the table",
            });
        };
        names.push(check_legacy_name(name)?.to_owned());
        table = &rest[len..];
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::ZERO_BLOCK_DIGEST;

    const ID: ChunkRef = ChunkRef {
        owner: 0x0102_0304_0506_0708,
        serial: 2,
    };

    #[test]
    fn offsets_are_the_documented_ones() {
        assert_eq!(
            (VERSION_OFF, OWNER_OFF, SERIAL_OFF, COUNT_OFF, NAMES_LEN_OFF),
            (4, 8, 16, 24, 28)
        );
        assert_eq!((CHECKSUM_OFF, RESERVED_OFF, CHUNK_HEADER_LEN), (32, 48, 64));
    }

    #[test]
    fn golden_bytes_of_a_chunk() {
        let c = Chunk::from_entries(
            ID,
            vec![
                Entry::Owned { owner: 9, epoch: 1 },
                Entry::Legacy("ab".into()),
                Entry::Zero,
                Entry::Legacy("ab".into()),
                Entry::Zero,
            ],
        )
        .unwrap();
        let b = c.encode().unwrap();
        let mut header = vec![b'A', b'M', b'C', b'.', 4, 0, 0, 0];
        header.extend_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        header.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        header.extend_from_slice(&[4, 0, 0, 0]); // trailing zero entry not stored
        header.extend_from_slice(&[4, 0, 0, 0]); // one name: 2 + 2 bytes
        assert_eq!(b[..32], header[..]);
        assert_eq!(b[48..64], [0; 16]);
        assert_eq!(b.len(), 64 + 4 * 64 + 4);
        let e = &b[64..];
        assert_eq!(
            e[..24],
            [1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(e[64..76], [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "name 0");
        assert_eq!(e[128..192], [0; 64]);
        assert_eq!(
            e[192..204],
            [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "name 0 again"
        );
        assert_eq!(b[320..], [2, 0, b'a', b'b']);
        // The checksum covers everything, its own field read as zeros.
        let mut z = b.clone();
        z[32..48].fill(0);
        assert_eq!(b[32..48], Sha256::digest(&z)[..16]);
        assert_eq!(Chunk::decode(&b).unwrap(), c);
        assert_eq!(Chunk::decode_as(&b, ID).unwrap(), c);
    }

    /// The version 3 encoding of a chunk without partial entries: 40-byte
    /// entries (the first 40 bytes of each version 4 one).
    fn encode_v3(c: &Chunk) -> Vec<u8> {
        let v4 = c.encode().unwrap();
        let n = c.entries().len();
        let mut out = v4[..CHUNK_HEADER_LEN].to_vec();
        out[VERSION_OFF..VERSION_OFF + 4].copy_from_slice(&3u32.to_le_bytes());
        for i in 0..n {
            let at = CHUNK_HEADER_LEN + i * ENTRY_LEN;
            out.extend_from_slice(&v4[at..at + ENTRY_LEN_V3]);
        }
        out.extend_from_slice(&v4[CHUNK_HEADER_LEN + n * ENTRY_LEN..]);
        out[CHECKSUM_OFF..CHECKSUM_OFF + CHECKSUM_LEN].fill(0);
        let sum = checksum(&out);
        out[CHECKSUM_OFF..CHECKSUM_OFF + CHECKSUM_LEN].copy_from_slice(&sum);
        out
    }

    #[test]
    fn version_3_chunks_are_still_read() {
        let c = Chunk::from_entries(
            ID,
            vec![
                Entry::Owned { owner: 9, epoch: 1 },
                Entry::Legacy("ab".into()),
                Entry::Zero,
                Entry::Content([5; 32]),
            ],
        )
        .unwrap();
        let v3 = encode_v3(&c);
        assert_eq!(v3.len(), 64 + 4 * 40 + 4);
        assert_eq!(Chunk::decode(&v3).unwrap(), c);
        let mut v5 = v3.clone();
        v5[VERSION_OFF] = 5;
        assert!(matches!(
            Chunk::decode(&v5),
            Err(MapError::UnsupportedVersion { version: 5, .. })
        ));
    }

    #[test]
    fn partial_entries_round_trip_with_their_legacy_backing_named() {
        let c = Chunk::from_entries(
            ID,
            vec![
                Entry::partial(9, 2, 0b11, Entry::Legacy("ab".into()), u64::MAX),
                Entry::Legacy("cd".into()),
                Entry::partial(9, 2, 1 << 63, Entry::Owned { owner: 4, epoch: 1 }, u64::MAX),
            ],
        )
        .unwrap();
        let b = c.encode().unwrap();
        assert_eq!(
            b[CHUNK_HEADER_LEN + 3 * ENTRY_LEN..],
            [2, 0, b'a', b'b', 2, 0, b'c', b'd']
        );
        assert_eq!(Chunk::decode(&b).unwrap(), c);
    }

    #[test]
    fn an_empty_chunk_is_only_a_header() {
        let b = Chunk::empty(ID).encode().unwrap();
        assert_eq!(b.len(), CHUNK_HEADER_LEN);
        assert_eq!(Chunk::decode(&b).unwrap(), Chunk::empty(ID));
        assert!(Chunk::empty(ChunkRef::ZERO).encode().is_err());
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let c = Chunk::from_entries(ID, vec![Entry::Content([7; 32]), Entry::Legacy("x".into())])
            .unwrap();
        let b = c.encode().unwrap();
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x10;
            assert!(Chunk::decode(&bad).is_err(), "byte {i}");
        }
        assert!(matches!(
            Chunk::decode_as(
                &b,
                ChunkRef {
                    owner: ID.owner,
                    serial: 3
                }
            ),
            Err(MapError::ChunkMismatch {
                found_serial: 2,
                ..
            })
        ));
        assert!(matches!(
            Chunk::decode(&b[..b.len() - 1]),
            Err(MapError::Truncated { .. })
        ));
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(
            Chunk::decode(&long),
            Err(MapError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn get_and_set_keep_trailing_zeros_implicit() {
        let mut c = Chunk::empty(ID);
        assert_eq!(c.get(4095), Some(&Entry::Zero));
        assert_eq!(c.get(4096), None);
        c.set(10, Entry::Zero).unwrap();
        assert!(c.entries().is_empty());
        c.set(10, Entry::Content([1; 32])).unwrap();
        assert_eq!(c.entries().len(), 11);
        c.set(3, Entry::Content(ZERO_BLOCK_DIGEST)).unwrap();
        assert_eq!(
            c.get(3),
            Some(&Entry::Zero),
            "the zero block is stored as zero"
        );
        c.set(10, Entry::Zero).unwrap();
        assert!(c.entries().is_empty());
        assert!(c.set(4096, Entry::Zero).is_err());
        assert!(c.set(0, Entry::Owned { owner: 0, epoch: 0 }).is_err());
        assert!(Chunk::from_entries(ID, vec![Entry::Zero; 4097]).is_err());
        c.set(100, Entry::Content([1; 32])).unwrap();
        c.set(5, Entry::Content([1; 32])).unwrap();
        c.truncate(50);
        assert_eq!(c.entries().len(), 6);
    }

    #[test]
    fn chunk_refs_name_their_objects() {
        assert_eq!(ChunkRef::ZERO.object_name(), None);
        assert_eq!(
            ID.object_name().unwrap(),
            "0102030405060708_0000000000000002"
        );
    }
}
