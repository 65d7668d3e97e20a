//! Version 3 header: the object `<volume name>`, the commit point of every
//! change.
//!
//! The byte layout is the **Header** table of the [crate docs](crate#layouts);
//! the offset constants below derive it field by field and the golden-byte
//! test pins both. The header is `120 + P + 16C` bytes (`P` the parent
//! name's length, `C` the chunk count): [`Header::encoded_len_from`]
//! computes it from the first [`FIXED_LEN`] bytes, so a reader knows how
//! much to fetch.

use crate::bytes::{put, to_usize, Fields};
use crate::chunk::{ChunkRef, ENTRIES_PER_CHUNK};
use crate::entry::Entry;
use crate::legacy::nr_objects;
use crate::MapError;
use archipelago_protocol::{names, sizes};
use sha2::{Digest, Sha256};

/// Header magic, shared with v2.
pub const MAGIC: [u8; 4] = *b"AMF.";
/// This format's version (header and chunks).
pub const VERSION: u32 = 3;

/// Smallest object size log2 (4 KiB, [`sizes::MIN_OBJECT_SIZE`]).
pub const MIN_OBJECT_SIZE_LOG2: u32 = sizes::MIN_OBJECT_SIZE.trailing_zeros();
/// Largest object size log2 (1 GiB); peers also bound it by their
/// segment's buffers.
pub const MAX_OBJECT_SIZE_LOG2: u32 = 30;
/// Default object size log2 (4 MiB, [`sizes::DEFAULT_OBJECT_SIZE`]).
pub const DEFAULT_OBJECT_SIZE_LOG2: u32 = sizes::DEFAULT_OBJECT_SIZE.trailing_zeros();
/// Epoch of a new volume (created or cloned; an upgrade keeps the old epoch).
pub const INITIAL_EPOCH: u64 = 1;

/// Flag bit: the volume is a snapshot.
pub const FLAG_READONLY: u32 = 1 << 0;
/// Flag bit: the volume was removed.
pub const FLAG_REMOVED: u32 = 1 << 1;
/// Flag bit: every entry is zero or content.
pub const FLAG_HASHED: u32 = 1 << 2;
const FLAGS_KNOWN: u32 = FLAG_READONLY | FLAG_REMOVED | FLAG_HASHED;

/// Offset of the magic.
pub const MAGIC_OFF: usize = 0;
/// Offset of the version (u32 BE).
pub const VERSION_OFF: usize = MAGIC_OFF + MAGIC.len();
/// Offset of the size (u64).
pub const SIZE_OFF: usize = VERSION_OFF + size_of::<u32>();
/// Offset of the object size log2 (u32).
pub const OBJECT_SIZE_LOG2_OFF: usize = SIZE_OFF + size_of::<u64>();
/// Offset of the flags (u32).
pub const FLAGS_OFF: usize = OBJECT_SIZE_LOG2_OFF + size_of::<u32>();
/// Offset of the volume id (u64).
pub const VOLUME_ID_OFF: usize = FLAGS_OFF + size_of::<u32>();
/// Offset of the epoch (u64).
pub const EPOCH_OFF: usize = VOLUME_ID_OFF + size_of::<u64>();
/// Offset of the commit sequence (u64).
pub const COMMIT_SEQ_OFF: usize = EPOCH_OFF + size_of::<u64>();
/// Offset of the next chunk serial (u64).
pub const NEXT_SERIAL_OFF: usize = COMMIT_SEQ_OFF + size_of::<u64>();
/// Offset of the first private chunk serial (u64).
pub const FIRST_PRIVATE_OFF: usize = NEXT_SERIAL_OFF + size_of::<u64>();
/// Offset of the parent volume id (u64).
pub const PARENT_ID_OFF: usize = FIRST_PRIVATE_OFF + size_of::<u64>();
/// Offset of the parent epoch (u64).
pub const PARENT_EPOCH_OFF: usize = PARENT_ID_OFF + size_of::<u64>();
/// Offset of the chunk count (u32).
pub const CHUNK_COUNT_OFF: usize = PARENT_EPOCH_OFF + size_of::<u64>();
/// Offset of the parent name length (u16).
pub const PARENT_NAME_LEN_OFF: usize = CHUNK_COUNT_OFF + size_of::<u32>();
/// Offset of the reserved u16.
pub const RESERVED_OFF: usize = PARENT_NAME_LEN_OFF + size_of::<u16>();
/// Length of the fixed part; the parent name starts here.
pub const FIXED_LEN: usize = RESERVED_OFF + size_of::<u16>();
/// Bytes per chunk ref.
pub const CHUNK_REF_LEN: usize = 2 * size_of::<u64>();
/// Checksum length (a whole SHA-256).
pub const CHECKSUM_LEN: usize = 32;

const WHAT: &str = "v3 header";

/// The header's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HeaderFlags {
    /// A snapshot: never written, never changes.
    pub readonly: bool,
    /// Removed: kept so its name's history is known; not served.
    pub removed: bool,
    /// Every entry is [`Entry::Zero`] or [`Entry::Content`] (a hashed
    /// snapshot, or a clone of one not written since).
    pub hashed: bool,
}

impl HeaderFlags {
    /// The flags word.
    pub fn to_bits(self) -> u32 {
        let bit = |on: bool, b: u32| if on { b } else { 0 };
        bit(self.readonly, FLAG_READONLY)
            | bit(self.removed, FLAG_REMOVED)
            | bit(self.hashed, FLAG_HASHED)
    }

    /// Parses a flags word; `None` if it has bits this version does not
    /// define.
    pub fn from_bits(bits: u32) -> Option<Self> {
        (bits & !FLAGS_KNOWN == 0).then_some(Self {
            readonly: bits & FLAG_READONLY != 0,
            removed: bits & FLAG_REMOVED != 0,
            hashed: bits & FLAG_HASHED != 0,
        })
    }
}

/// Where a volume comes from (lineage only: reads never consult it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Parent {
    /// The parent's volume id (never 0).
    pub volume_id: u64,
    /// The parent's epoch: with the id, it names one frozen view.
    pub epoch: u64,
    /// The parent's volume name when this header was made.
    pub name: String,
}

/// A version 3 volume header.
///
/// Fields are public; [`encode`](Self::encode) and
/// [`validate`](Self::validate) check that they agree with each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Volume size in bytes.
    pub size: u64,
    /// Object size log2.
    pub object_size_log2: u32,
    /// Flags.
    pub flags: HeaderFlags,
    /// This volume's id: random, nonzero, fixed at creation. Its data
    /// objects and chunks are named from it.
    pub volume_id: u64,
    /// Bumped by each snapshot; owned entries of older epochs are
    /// copy-on-write.
    pub epoch: u64,
    /// Bumped by every header write (1 for a header's first write).
    pub commit_seq: u64,
    /// Serial of the next chunk this volume writes.
    pub next_serial: u64,
    /// Own chunks with a lower serial are shared with a snapshot.
    pub first_private_serial: u64,
    /// Lineage.
    pub parent: Option<Parent>,
    /// One ref per [`ENTRIES_PER_CHUNK`] objects.
    pub chunks: Vec<ChunkRef>,
}

/// `ceil(objects(size) / ENTRIES_PER_CHUNK)`.
pub fn chunk_count(size: u64, object_size_log2: u32) -> u64 {
    nr_objects(
        nr_objects(size, 1u64.checked_shl(object_size_log2).unwrap_or(0)),
        ENTRIES_PER_CHUNK as u64,
    )
}

fn check_object_size_log2(log2: u32) -> Result<(), MapError> {
    if !(MIN_OBJECT_SIZE_LOG2..=MAX_OBJECT_SIZE_LOG2).contains(&log2) {
        return Err(MapError::InvalidObjectSize {
            what: "object size log2",
            value: log2.into(),
        });
    }
    Ok(())
}

fn check_name<'a>(what: &'static str, name: &'a [u8]) -> Result<&'a str, MapError> {
    if name.len() > names::MAX_VOLUME_NAME {
        return Err(MapError::NameTooLong {
            what,
            len: name.len() as u64,
            max: names::MAX_VOLUME_NAME as u64,
        });
    }
    names::check_volume_name(name).map_err(|source| MapError::BadName { what, source })
}

pub(crate) fn check_volume_name(what: &'static str, name: &str) -> Result<(), MapError> {
    check_name(what, name.as_bytes()).map(|_| ())
}

impl Header {
    /// A new, empty volume: epoch [`INITIAL_EPOCH`], every chunk zero, no
    /// parent.
    pub fn new(volume_id: u64, size: u64, object_size_log2: u32) -> Result<Self, MapError> {
        if volume_id == 0 {
            return Err(MapError::BadVolumeId {
                what: "volume id",
                id: 0,
            });
        }
        check_object_size_log2(object_size_log2)?;
        sizes::check_volume_size(size)?;
        let h = Self {
            size,
            object_size_log2,
            flags: HeaderFlags::default(),
            volume_id,
            epoch: INITIAL_EPOCH,
            commit_seq: 1,
            next_serial: 1,
            first_private_serial: 1,
            parent: None,
            chunks: vec![ChunkRef::ZERO; chunk_count(size, object_size_log2) as usize],
        };
        h.validate()?;
        Ok(h)
    }

    /// Object size in bytes.
    pub fn object_size(&self) -> u64 {
        1u64.checked_shl(self.object_size_log2).unwrap_or(0)
    }

    /// Objects in the volume: `ceil(size / object size)`.
    pub fn nr_objects(&self) -> u64 {
        nr_objects(self.size, self.object_size())
    }

    /// `(chunk slot, offset in the chunk)` of object `index`.
    pub fn chunk_for(&self, index: u64) -> Result<(usize, usize), MapError> {
        let objects = self.nr_objects();
        if index >= objects {
            return Err(MapError::OutOfRange { index, objects });
        }
        let per = ENTRIES_PER_CHUNK as u64;
        Ok(((index / per) as usize, (index % per) as usize))
    }

    /// Whether `chunk` belongs to this volume alone: written by it after
    /// its last snapshot. Such a chunk becomes garbage when replaced;
    /// any other may be referenced by a snapshot or a clone.
    pub fn is_chunk_private(&self, chunk: &ChunkRef) -> bool {
        !chunk.is_zero()
            && chunk.owner == self.volume_id
            && chunk.serial >= self.first_private_serial
    }

    /// The entry a copy-up of this volume writes: owned by it, in its
    /// current epoch.
    pub fn own_entry(&self) -> Entry {
        Entry::Owned {
            owner: self.volume_id,
            epoch: self.epoch,
        }
    }

    /// Whether the object behind `entry` may be written in place: only an
    /// owned entry of this volume's id and current epoch, in a volume
    /// that is neither read-only nor removed. Everything else is
    /// copy-on-write.
    pub fn is_writable(&self, entry: &Entry) -> bool {
        !self.flags.readonly && !self.flags.removed && *entry == self.own_entry()
    }

    /// Checks that the fields agree: id, sizes, serials, parent, chunk
    /// count and refs.
    pub fn validate(&self) -> Result<(), MapError> {
        if self.volume_id == 0 {
            return Err(MapError::BadVolumeId {
                what: "volume id",
                id: 0,
            });
        }
        check_object_size_log2(self.object_size_log2)?;
        sizes::check_volume_size(self.size)?;
        if self.next_serial == 0
            || self.first_private_serial == 0
            || self.first_private_serial > self.next_serial
        {
            return Err(MapError::BadSerials {
                next: self.next_serial,
                first_private: self.first_private_serial,
            });
        }
        if let Some(p) = &self.parent {
            if p.volume_id == 0 {
                return Err(MapError::BadParent {
                    why: "a parent has volume id 0",
                });
            }
            check_volume_name("parent name", &p.name)?;
        }
        let expected = chunk_count(self.size, self.object_size_log2);
        if self.chunks.len() as u64 != expected {
            return Err(MapError::ChunkCountMismatch {
                expected,
                found: self.chunks.len() as u64,
            });
        }
        for (slot, r) in self.chunks.iter().enumerate() {
            let zero_owner = r.owner == 0;
            let from_future = r.owner == self.volume_id && r.serial >= self.next_serial;
            if r.is_zero() != zero_owner || from_future {
                return Err(MapError::BadChunkRef {
                    slot: slot as u64,
                    owner: r.owner,
                    serial: r.serial,
                });
            }
        }
        Ok(())
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> u64 {
        let p = self.parent.as_ref().map_or(0, |p| p.name.len());
        (FIXED_LEN + p + CHECKSUM_LEN) as u64 + (self.chunks.len() * CHUNK_REF_LEN) as u64
    }

    /// Encodes the header object, after [`validate`](Self::validate).
    pub fn encode(&self) -> Result<Vec<u8>, MapError> {
        self.validate()?;
        let (pid, pepoch, pname) = match &self.parent {
            Some(p) => (p.volume_id, p.epoch, p.name.as_bytes()),
            None => (0, 0, &[][..]),
        };
        let mut out = vec![0u8; FIXED_LEN];
        put(&mut out, MAGIC_OFF, &MAGIC);
        put(&mut out, VERSION_OFF, &VERSION.to_be_bytes());
        put(&mut out, SIZE_OFF, &self.size.to_le_bytes());
        put(
            &mut out,
            OBJECT_SIZE_LOG2_OFF,
            &self.object_size_log2.to_le_bytes(),
        );
        put(&mut out, FLAGS_OFF, &self.flags.to_bits().to_le_bytes());
        put(&mut out, VOLUME_ID_OFF, &self.volume_id.to_le_bytes());
        put(&mut out, EPOCH_OFF, &self.epoch.to_le_bytes());
        put(&mut out, COMMIT_SEQ_OFF, &self.commit_seq.to_le_bytes());
        put(&mut out, NEXT_SERIAL_OFF, &self.next_serial.to_le_bytes());
        put(
            &mut out,
            FIRST_PRIVATE_OFF,
            &self.first_private_serial.to_le_bytes(),
        );
        put(&mut out, PARENT_ID_OFF, &pid.to_le_bytes());
        put(&mut out, PARENT_EPOCH_OFF, &pepoch.to_le_bytes());
        // validate() bounded both: chunk count by the size, the name by
        // MAX_VOLUME_NAME.
        put(
            &mut out,
            CHUNK_COUNT_OFF,
            &(self.chunks.len() as u32).to_le_bytes(),
        );
        put(
            &mut out,
            PARENT_NAME_LEN_OFF,
            &(pname.len() as u16).to_le_bytes(),
        );
        out.extend_from_slice(pname);
        for r in &self.chunks {
            out.extend_from_slice(&r.owner.to_le_bytes());
            out.extend_from_slice(&r.serial.to_le_bytes());
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        debug_assert_eq!(out.len() as u64, self.encoded_len());
        Ok(out)
    }

    /// The whole header's length, from its first [`FIXED_LEN`] bytes
    /// (checks the magic and version only).
    pub fn encoded_len_from(prefix: &[u8]) -> Result<u64, MapError> {
        let f = Fields::new(prefix, WHAT);
        f.need(FIXED_LEN as u64)?;
        let magic: [u8; 4] = f.array(MAGIC_OFF)?;
        if magic != MAGIC {
            return Err(MapError::BadMagic {
                what: WHAT,
                found: magic,
                expected: MAGIC,
            });
        }
        let version = f.u32_be(VERSION_OFF)?;
        if version != VERSION {
            return Err(MapError::UnsupportedVersion {
                what: WHAT,
                version,
            });
        }
        let p = u64::from(f.u16_le(PARENT_NAME_LEN_OFF)?);
        let c = u64::from(f.u32_le(CHUNK_COUNT_OFF)?);
        Ok((FIXED_LEN + CHECKSUM_LEN) as u64 + p + c * CHUNK_REF_LEN as u64)
    }

    /// Decodes a header object (exactly its bytes), checking the checksum
    /// and every field. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, MapError> {
        let total = Self::encoded_len_from(bytes)?;
        let f = Fields::new(bytes, WHAT);
        f.need(total)?;
        if f.len() > total {
            return Err(MapError::TrailingBytes {
                what: WHAT,
                expected: total,
                have: f.len(),
            });
        }
        let body_len = bytes.len() - CHECKSUM_LEN;
        let stored: [u8; CHECKSUM_LEN] = f.array(body_len)?;
        if Sha256::digest(&bytes[..body_len])[..] != stored {
            return Err(MapError::ChecksumMismatch { what: WHAT });
        }
        f.zeros(RESERVED_OFF, size_of::<u16>(), 0)?;
        let flags_bits = f.u32_le(FLAGS_OFF)?;
        let flags = HeaderFlags::from_bits(flags_bits).ok_or(MapError::BadFlags {
            what: WHAT,
            flags: flags_bits,
        })?;
        let name_len = f.u16_le(PARENT_NAME_LEN_OFF)? as usize;
        let pid = f.u64_le(PARENT_ID_OFF)?;
        let pepoch = f.u64_le(PARENT_EPOCH_OFF)?;
        let pname = f.slice(FIXED_LEN, name_len)?;
        let parent = if pid == 0 {
            if pepoch != 0 || name_len != 0 {
                return Err(MapError::BadParent {
                    why: "no parent id, but a parent epoch or name",
                });
            }
            None
        } else {
            if name_len == 0 {
                return Err(MapError::BadParent {
                    why: "a parent id without a name",
                });
            }
            Some(Parent {
                volume_id: pid,
                epoch: pepoch,
                name: check_name("parent name", pname)?.to_owned(),
            })
        };
        let count = f.u32_le(CHUNK_COUNT_OFF)?;
        let count = to_usize(count.into(), WHAT, bytes.len())?;
        let table = FIXED_LEN + name_len;
        let mut chunks = Vec::with_capacity(count);
        for i in 0..count {
            let at = table + i * CHUNK_REF_LEN;
            chunks.push(ChunkRef {
                owner: f.u64_le(at)?,
                serial: f.u64_le(at + size_of::<u64>())?,
            });
        }
        let h = Self {
            size: f.u64_le(SIZE_OFF)?,
            object_size_log2: f.u32_le(OBJECT_SIZE_LOG2_OFF)?,
            flags,
            volume_id: f.u64_le(VOLUME_ID_OFF)?,
            epoch: f.u64_le(EPOCH_OFF)?,
            commit_seq: f.u64_le(COMMIT_SEQ_OFF)?,
            next_serial: f.u64_le(NEXT_SERIAL_OFF)?,
            first_private_serial: f.u64_le(FIRST_PRIVATE_OFF)?,
            parent,
            chunks,
        };
        h.validate()?;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_the_documented_ones() {
        assert_eq!(
            [
                VERSION_OFF,
                SIZE_OFF,
                OBJECT_SIZE_LOG2_OFF,
                FLAGS_OFF,
                VOLUME_ID_OFF,
                EPOCH_OFF,
                COMMIT_SEQ_OFF,
                NEXT_SERIAL_OFF,
                FIRST_PRIVATE_OFF,
                PARENT_ID_OFF,
                PARENT_EPOCH_OFF,
                CHUNK_COUNT_OFF,
                PARENT_NAME_LEN_OFF,
                RESERVED_OFF,
                FIXED_LEN
            ],
            [4, 8, 16, 20, 24, 32, 40, 48, 56, 64, 72, 80, 84, 86, 88]
        );
        assert_eq!((MIN_OBJECT_SIZE_LOG2, DEFAULT_OBJECT_SIZE_LOG2), (12, 22));
    }

    fn sample() -> Header {
        Header {
            size: (4096 + 1) * 4096,
            object_size_log2: 12,
            flags: HeaderFlags {
                readonly: false,
                removed: false,
                hashed: true,
            },
            volume_id: 0x0102_0304_0506_0708,
            epoch: 3,
            commit_seq: 7,
            next_serial: 5,
            first_private_serial: 4,
            parent: Some(Parent {
                volume_id: 0xaa,
                epoch: 2,
                name: "base".into(),
            }),
            chunks: vec![
                ChunkRef {
                    owner: 0x0102_0304_0506_0708,
                    serial: 4,
                },
                ChunkRef::ZERO,
            ],
        }
    }

    #[test]
    fn golden_bytes_of_a_header() {
        let b = sample().encode().unwrap();
        #[rustfmt::skip]
        let mut golden: Vec<u8> = vec![
            b'A', b'M', b'F', b'.', 0, 0, 0, 3,  // magic, version (BE)
            0, 0x10, 0, 1, 0, 0, 0, 0,           // size 4097 * 4096 = 0x0100_1000
            12, 0, 0, 0,                         // object size log2
            4, 0, 0, 0,                          // flags: HASHED
            8, 7, 6, 5, 4, 3, 2, 1,              // volume id
            3, 0, 0, 0, 0, 0, 0, 0,              // epoch
            7, 0, 0, 0, 0, 0, 0, 0,              // commit sequence
            5, 0, 0, 0, 0, 0, 0, 0,              // next serial
            4, 0, 0, 0, 0, 0, 0, 0,              // first private serial
            0xaa, 0, 0, 0, 0, 0, 0, 0,           // parent id
            2, 0, 0, 0, 0, 0, 0, 0,              // parent epoch
            2, 0, 0, 0,                          // chunk count
            4, 0,                                // parent name length
            0, 0,                                // reserved
            b'b', b'a', b's', b'e',              // parent name
            8, 7, 6, 5, 4, 3, 2, 1, 4, 0, 0, 0, 0, 0, 0, 0, // chunk 0
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // chunk 1: zero
        ];
        let sum = Sha256::digest(&golden);
        golden.extend_from_slice(&sum);
        assert_eq!(b, golden);
        assert_eq!(b.len(), 120 + 4 + 2 * 16);
        assert_eq!(
            Header::encoded_len_from(&b[..FIXED_LEN]).unwrap(),
            b.len() as u64
        );
        assert_eq!(Header::decode(&b).unwrap(), sample());
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let b = sample().encode().unwrap();
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x01;
            assert!(Header::decode(&bad).is_err(), "byte {i}");
        }
        assert!(matches!(
            Header::decode(&b[..b.len() - 1]),
            Err(MapError::Truncated { .. })
        ));
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(
            Header::decode(&long),
            Err(MapError::TrailingBytes { .. })
        ));
    }

    /// Re-encodes a header with a field changed by hand (fixing the
    /// checksum), to reach the field checks behind it.
    fn patched(off: usize, v: &[u8]) -> Result<Header, MapError> {
        let mut b = sample().encode().unwrap();
        b[off..off + v.len()].copy_from_slice(v);
        let n = b.len() - CHECKSUM_LEN;
        let sum = Sha256::digest(&b[..n]);
        b[n..].copy_from_slice(&sum);
        Header::decode(&b)
    }

    #[test]
    fn inconsistent_fields_are_refused() {
        assert!(patched(SIZE_OFF, &0u64.to_le_bytes()).is_err());
        assert!(matches!(
            patched(SIZE_OFF, &1000u64.to_le_bytes()),
            Err(MapError::InvalidSize(_))
        ));
        assert!(matches!(
            patched(SIZE_OFF, &(4096u64 * 4096).to_le_bytes()),
            Err(MapError::ChunkCountMismatch {
                expected: 1,
                found: 2
            })
        ));
        for log2 in [11u32, 31] {
            assert!(matches!(
                patched(OBJECT_SIZE_LOG2_OFF, &log2.to_le_bytes()),
                Err(MapError::InvalidObjectSize { .. })
            ));
        }
        assert!(matches!(
            patched(FLAGS_OFF, &[8]),
            Err(MapError::BadFlags { flags: 8, .. })
        ));
        assert!(matches!(
            patched(VOLUME_ID_OFF, &[0; 8]),
            Err(MapError::BadVolumeId { .. })
        ));
        assert!(matches!(
            patched(FIRST_PRIVATE_OFF, &[6]),
            Err(MapError::BadSerials { .. })
        ));
        assert!(matches!(
            patched(NEXT_SERIAL_OFF, &[0]),
            Err(MapError::BadSerials { .. })
        ));
        // Own chunk 4 is from the future once next_serial is 4.
        assert!(matches!(
            patched(NEXT_SERIAL_OFF, &[4]),
            Err(MapError::BadChunkRef { slot: 0, .. })
        ));
        assert!(matches!(
            patched(RESERVED_OFF, &[1]),
            Err(MapError::BadReserved { offset: 86, .. })
        ));
        assert!(matches!(
            patched(PARENT_ID_OFF, &[0]),
            Err(MapError::BadParent { .. })
        ));
        assert!(matches!(
            patched(FIXED_LEN, b"b/se"),
            Err(MapError::BadName { .. })
        ));
        // A zero serial with an owner.
        let at = FIXED_LEN + 4 + CHUNK_REF_LEN;
        assert!(matches!(
            patched(at, &[1]),
            Err(MapError::BadChunkRef { slot: 1, .. })
        ));
        assert!(matches!(
            patched(VERSION_OFF, &[3, 0, 0, 0]),
            Err(MapError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn encode_refuses_what_decode_would() {
        let mut h = sample();
        h.chunks.pop();
        assert!(matches!(
            h.encode(),
            Err(MapError::ChunkCountMismatch { .. })
        ));
        let mut h = sample();
        h.parent.as_mut().unwrap().name = "x".repeat(167);
        assert!(matches!(
            h.encode(),
            Err(MapError::NameTooLong { max: 166, .. })
        ));
        let mut h = sample();
        h.parent.as_mut().unwrap().volume_id = 0;
        assert!(h.encode().is_err());
    }

    #[test]
    fn objects_map_to_chunk_slots() {
        let h = sample();
        assert_eq!(h.nr_objects(), 4097);
        assert_eq!(h.chunk_for(0).unwrap(), (0, 0));
        assert_eq!(h.chunk_for(4095).unwrap(), (0, 4095));
        assert_eq!(h.chunk_for(4096).unwrap(), (1, 0));
        assert!(matches!(
            h.chunk_for(4097),
            Err(MapError::OutOfRange { objects: 4097, .. })
        ));
        assert!(h.is_chunk_private(&h.chunks[0]));
        assert!(!h.is_chunk_private(&ChunkRef {
            owner: h.volume_id,
            serial: 3
        }));
        assert!(!h.is_chunk_private(&ChunkRef {
            owner: 9,
            serial: 4
        }));
        assert!(!h.is_chunk_private(&ChunkRef::ZERO));
    }

    #[test]
    fn new_volumes_are_all_zero() {
        let h = Header::new(7, 10 << 30, DEFAULT_OBJECT_SIZE_LOG2).unwrap();
        assert_eq!(h.chunks, vec![ChunkRef::ZERO]);
        assert_eq!((h.epoch, h.next_serial, h.commit_seq), (1, 1, 1));
        assert_eq!(Header::decode(&h.encode().unwrap()).unwrap(), h);
        assert_eq!(h.encode().unwrap().len(), 120 + 16);
        assert!(Header::new(0, 4096, 22).is_err());
        assert!(Header::new(7, 0, 22).is_err());
        assert!(Header::new(7, 4096, 40).is_err());
        let max = Header::new(7, sizes::MAX_VOLUME_SIZE, 22).unwrap();
        assert_eq!(max.chunks.len(), 1 << 19);
    }
}
