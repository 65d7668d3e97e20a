//! Version 2, the original's current format (volumes.md §2.4). Read-only.
//!
//! **Header**, at offset 0 of the object `<volume>`, 32 bytes,
//! **big-endian** (the original reads 512 bytes, [`HEADER_READ_LEN`]):
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | u32 BE | signature `0x414D462E` = "AMF." |
//! | 4 | u32 BE | version = 2 |
//! | 8 | u64 BE | size in bytes |
//! | 16 | u32 BE | blocksize (a power of two > 128) |
//! | 20 | u32 BE | flags: bit 0 READONLY, bit 1 DELETED |
//! | 24 | u64 BE | epoch |
//!
//! **Entries**, 128 bytes each, packed into map-data objects of
//! `blocksize` bytes named `<volume>_<16 hex of the BE block id>`
//! ([`map_object_name`]); entry `i` is in block `i / E` at byte
//! `(i mod E) · 128`, `E = blocksize / 128` ([`entries_per_object`]):
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | u8 | flags: bit 0 WRITABLE, 1 ARCHIP, 2 ZERO, 3 DELETED |
//! | 1 | u32 **LE** (host order on x86, never converted) | name length, ≤ 123 |
//! | 5 | 123 bytes | name, unterminated, zero padded |
//!
//! An entry with ZERO set is the zero block whatever its name (the
//! original's delete also sets that bit, bug 7.3.4, so deleted entries
//! carry it too); otherwise it names its object.

use crate::bytes::{put, Fields};
use crate::legacy::{nr_objects, LegacyEntry, LegacyMap, MAX_LEGACY_NAME, ZERO_BLOCK_NAME};
use crate::MapError;

/// The signature: "AMF." read as a big-endian u32.
pub const SIGNATURE: u32 = 0x414D_462E;
/// The version word.
pub const VERSION: u32 = 2;
/// Bytes the original reads to detect and decode a header.
pub const HEADER_READ_LEN: usize = 512;

/// Offset of the signature (u32 BE).
pub const SIGNATURE_OFF: usize = 0;
/// Offset of the version (u32 BE).
pub const VERSION_OFF: usize = SIGNATURE_OFF + size_of::<u32>();
/// Offset of the size (u64 BE).
pub const SIZE_OFF: usize = VERSION_OFF + size_of::<u32>();
/// Offset of the blocksize (u32 BE).
pub const BLOCKSIZE_OFF: usize = SIZE_OFF + size_of::<u64>();
/// Offset of the map flags (u32 BE).
pub const FLAGS_OFF: usize = BLOCKSIZE_OFF + size_of::<u32>();
/// Offset of the epoch (u64 BE).
pub const EPOCH_OFF: usize = FLAGS_OFF + size_of::<u32>();
/// Header length.
pub const HEADER_LEN: usize = EPOCH_OFF + size_of::<u64>();

/// Map flag: the map is a snapshot.
pub const MAP_READONLY: u32 = 1 << 0;
/// Map flag: the volume was deleted.
pub const MAP_DELETED: u32 = 1 << 1;

/// Offset of an entry's flags (u8).
pub const ENTRY_FLAGS_OFF: usize = 0;
/// Offset of an entry's name length (u32 LE).
pub const ENTRY_NAME_LEN_OFF: usize = ENTRY_FLAGS_OFF + size_of::<u8>();
/// Offset of an entry's name.
pub const ENTRY_NAME_OFF: usize = ENTRY_NAME_LEN_OFF + size_of::<u32>();
/// Bytes per entry.
pub const ENTRY_LEN: usize = ENTRY_NAME_OFF + MAX_LEGACY_NAME;

/// Entry flag: private to the volume, writable in place.
pub const ENTRY_WRITABLE: u8 = 1 << 0;
/// Entry flag: created by a mapper's copy-up.
pub const ENTRY_ARCHIP: u8 = 1 << 1;
/// Entry flag: the zero block.
pub const ENTRY_ZERO: u8 = 1 << 2;
/// Entry flag: removed by a destroy.
pub const ENTRY_DELETED: u8 = 1 << 3;
const ENTRY_KNOWN: u8 = ENTRY_WRITABLE | ENTRY_ARCHIP | ENTRY_ZERO | ENTRY_DELETED;

const HEADER: &str = "v2 header";
const ENTRY: &str = "v2 entry";

/// A decoded v2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2Header {
    /// Volume size in bytes.
    pub size: u64,
    /// Object size and map-data object size, a power of two > 128.
    pub blocksize: u32,
    /// Map flag READONLY.
    pub readonly: bool,
    /// Map flag DELETED.
    pub deleted: bool,
    /// Copy-up epoch.
    pub epoch: u64,
}

impl V2Header {
    /// Objects in the volume: `ceil(size / blocksize)`.
    pub fn nr_objects(&self) -> u64 {
        nr_objects(self.size, u64::from(self.blocksize))
    }

    /// Map-data objects holding the entries: `ceil(nr_objects / E)`.
    pub fn nr_map_objects(&self) -> u64 {
        nr_objects(self.nr_objects(), entries_per_object(self.blocksize))
    }
}

/// Decodes a v2 header from the first bytes of `<volume>` (at least
/// [`HEADER_LEN`]; the rest of a 512-byte read is ignored).
pub fn decode_header(bytes: &[u8]) -> Result<V2Header, MapError> {
    let f = Fields::new(bytes, HEADER);
    f.need(HEADER_LEN as u64)?;
    let sig = f.u32_be(SIGNATURE_OFF)?;
    if sig != SIGNATURE {
        return Err(MapError::BadMagic {
            what: HEADER,
            found: sig.to_be_bytes(),
            expected: SIGNATURE.to_be_bytes(),
        });
    }
    let version = f.u32_be(VERSION_OFF)?;
    if version != VERSION {
        return Err(MapError::UnsupportedVersion {
            what: HEADER,
            version,
        });
    }
    let blocksize = f.u32_be(BLOCKSIZE_OFF)?;
    if !blocksize.is_power_of_two() || (blocksize as usize) <= ENTRY_LEN {
        return Err(MapError::InvalidObjectSize {
            what: "v2 blocksize",
            value: blocksize.into(),
        });
    }
    let flags = f.u32_be(FLAGS_OFF)?;
    if flags & !(MAP_READONLY | MAP_DELETED) != 0 {
        return Err(MapError::BadFlags {
            what: HEADER,
            flags,
        });
    }
    Ok(V2Header {
        size: f.u64_be(SIZE_OFF)?,
        blocksize,
        readonly: flags & MAP_READONLY != 0,
        deleted: flags & MAP_DELETED != 0,
        epoch: f.u64_be(EPOCH_OFF)?,
    })
}

/// Encodes a v2 header byte for byte (for tests).
#[doc(hidden)]
pub fn encode_header(h: &V2Header) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    let flags = if h.readonly { MAP_READONLY } else { 0 } | if h.deleted { MAP_DELETED } else { 0 };
    put(&mut out, SIGNATURE_OFF, &SIGNATURE.to_be_bytes());
    put(&mut out, VERSION_OFF, &VERSION.to_be_bytes());
    put(&mut out, SIZE_OFF, &h.size.to_be_bytes());
    put(&mut out, BLOCKSIZE_OFF, &h.blocksize.to_be_bytes());
    put(&mut out, FLAGS_OFF, &flags.to_be_bytes());
    put(&mut out, EPOCH_OFF, &h.epoch.to_be_bytes());
    out
}

/// Name of the map-data object `block_id` of `volume`:
/// `<volume>_<16 lowercase hex of the big-endian block id>`.
pub fn map_object_name(volume: &str, block_id: u64) -> String {
    format!("{volume}_{block_id:016x}")
}

/// Entries per map-data object: `blocksize / 128`.
pub fn entries_per_object(blocksize: u32) -> u64 {
    u64::from(blocksize) / ENTRY_LEN as u64
}

/// Where entry `index` lives: `(block id, byte offset in that map-data
/// object)`. `blocksize` must be valid (as [`decode_header`] checks);
/// an invalid one gives block 0.
pub fn entry_location(blocksize: u32, index: u64) -> (u64, u64) {
    let per = entries_per_object(blocksize).max(1);
    (index / per, (index % per) * ENTRY_LEN as u64)
}

/// Decodes consecutive 128-byte entries (a whole number of them), e.g. the
/// used part of one map-data object. Entry indexes in errors count from
/// the start of `bytes`.
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<LegacyEntry>, MapError> {
    if bytes.len() % ENTRY_LEN != 0 {
        return Err(MapError::Truncated {
            what: ENTRY,
            need: bytes.len().next_multiple_of(ENTRY_LEN) as u64,
            have: bytes.len() as u64,
        });
    }
    bytes
        .chunks_exact(ENTRY_LEN)
        .enumerate()
        .map(|(i, raw)| decode_entry(raw, i as u64))
        .collect()
}

fn decode_entry(raw: &[u8], index: u64) -> Result<LegacyEntry, MapError> {
    let f = Fields::new(raw, ENTRY);
    let flags = f.u8(ENTRY_FLAGS_OFF)?;
    if flags & !ENTRY_KNOWN != 0 {
        return Err(MapError::BadFlags {
            what: ENTRY,
            flags: flags.into(),
        });
    }
    let len = f.u32_le(ENTRY_NAME_LEN_OFF)?;
    if len as usize > MAX_LEGACY_NAME {
        return Err(MapError::NameTooLong {
            what: "v2 entry name",
            len: len.into(),
            max: MAX_LEGACY_NAME as u64,
        });
    }
    let name = if flags & ENTRY_ZERO != 0 {
        None
    } else {
        let bytes = f.slice(ENTRY_NAME_OFF, len as usize)?;
        if bytes.is_empty() {
            return Err(MapError::BadLegacyName {
                index,
                why: "a non-zero entry has an empty name",
            });
        }
        let s = std::str::from_utf8(bytes).map_err(|_| MapError::BadLegacyName {
            index,
            why: "the name is not UTF-8",
        })?;
        Some(s.to_owned())
    };
    Ok(LegacyEntry {
        name,
        writable: flags & ENTRY_WRITABLE != 0,
        archip: flags & ENTRY_ARCHIP != 0,
        deleted: flags & ENTRY_DELETED != 0,
    })
}

/// Encodes one entry from raw flags and name bytes, byte for byte as
/// documented (for tests). Fails if the name is longer than 123 bytes.
#[doc(hidden)]
pub fn encode_entry(flags: u8, name: &[u8]) -> Result<[u8; ENTRY_LEN], MapError> {
    if name.len() > MAX_LEGACY_NAME {
        return Err(MapError::NameTooLong {
            what: "v2 entry name",
            len: name.len() as u64,
            max: MAX_LEGACY_NAME as u64,
        });
    }
    let mut out = [0u8; ENTRY_LEN];
    put(&mut out, ENTRY_FLAGS_OFF, &[flags]);
    put(
        &mut out,
        ENTRY_NAME_LEN_OFF,
        &(name.len() as u32).to_le_bytes(),
    );
    put(&mut out, ENTRY_NAME_OFF, name);
    Ok(out)
}

/// Encodes a [`LegacyEntry`] as the original did (the zero block is
/// written with its name and ZERO set). For tests.
#[doc(hidden)]
pub fn encode_legacy_entry(e: &LegacyEntry) -> Result<[u8; ENTRY_LEN], MapError> {
    let mut flags = 0;
    if e.writable {
        flags |= ENTRY_WRITABLE;
    }
    if e.archip {
        flags |= ENTRY_ARCHIP;
    }
    if e.deleted {
        flags |= ENTRY_DELETED;
    }
    let name = match &e.name {
        None => {
            flags |= ENTRY_ZERO;
            ZERO_BLOCK_NAME
        }
        Some(n) => n,
    };
    encode_entry(flags, name.as_bytes())
}

/// Puts a decoded header and all its entries together, checking there is
/// exactly one entry per object.
pub fn assemble(header: &V2Header, entries: Vec<LegacyEntry>) -> Result<LegacyMap, MapError> {
    let expected = header.nr_objects();
    if entries.len() as u64 != expected {
        return Err(MapError::EntryCountMismatch {
            expected,
            found: entries.len() as u64,
        });
    }
    Ok(LegacyMap {
        version: VERSION,
        size: header.size,
        object_size: header.blocksize.into(),
        readonly: header.readonly,
        deleted: header.deleted,
        epoch: header.epoch,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_big_endian_as_documented() {
        assert_eq!(
            (
                VERSION_OFF,
                SIZE_OFF,
                BLOCKSIZE_OFF,
                FLAGS_OFF,
                EPOCH_OFF,
                HEADER_LEN
            ),
            (4, 8, 16, 20, 24, 32)
        );
        let h = V2Header {
            size: 0x0102_0304_0506_0708,
            blocksize: 4 << 20,
            readonly: true,
            deleted: false,
            epoch: 0x1122,
        };
        let bytes = encode_header(&h);
        assert_eq!(
            bytes,
            [
                b'A', b'M', b'F', b'.', 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0x40, 0, 0, 0, 0, 0,
                1, 0, 0, 0, 0, 0, 0, 0x11, 0x22
            ]
        );
        let mut read = bytes.to_vec();
        read.resize(HEADER_READ_LEN, 0xee); // the rest of a 512-byte read
        assert_eq!(decode_header(&read).unwrap(), h);
    }

    #[test]
    fn bad_headers_are_refused() {
        let good = encode_header(&V2Header {
            size: 4096,
            blocksize: 256,
            readonly: false,
            deleted: true,
            epoch: 1,
        });
        assert!(decode_header(&good).unwrap().deleted);
        assert!(matches!(
            decode_header(&good[..31]),
            Err(MapError::Truncated { .. })
        ));
        let with = |off: usize, v: &[u8]| {
            let mut b = good;
            b[off..off + v.len()].copy_from_slice(v);
            decode_header(&b)
        };
        assert!(matches!(with(0, b"AMG."), Err(MapError::BadMagic { .. })));
        assert!(matches!(
            with(VERSION_OFF, &3u32.to_be_bytes()),
            Err(MapError::UnsupportedVersion { version: 3, .. })
        ));
        for bs in [0u32, 128, 100, 3 << 20] {
            assert!(matches!(
                with(BLOCKSIZE_OFF, &bs.to_be_bytes()),
                Err(MapError::InvalidObjectSize { .. })
            ));
        }
        assert!(matches!(
            with(FLAGS_OFF, &4u32.to_be_bytes()),
            Err(MapError::BadFlags { flags: 4, .. })
        ));
    }

    #[test]
    fn entries_carry_a_little_endian_name_length_capped_at_123() {
        assert_eq!((ENTRY_NAME_LEN_OFF, ENTRY_NAME_OFF, ENTRY_LEN), (1, 5, 128));
        let raw = encode_entry(
            ENTRY_WRITABLE | ENTRY_ARCHIP,
            b"vol_0000000000000001_0000000000000000",
        )
        .unwrap();
        assert_eq!(&raw[..5], &[3, 37, 0, 0, 0], "length 37 little-endian");
        assert_eq!(&raw[5..42], b"vol_0000000000000001_0000000000000000");
        assert!(raw[42..].iter().all(|&b| b == 0));

        let longest = "n".repeat(123);
        let mut bytes = raw.to_vec();
        bytes.extend_from_slice(&encode_entry(0, longest.as_bytes()).unwrap());
        bytes.extend_from_slice(&encode_entry(ENTRY_ZERO, ZERO_BLOCK_NAME.as_bytes()).unwrap());
        bytes.extend_from_slice(&encode_entry(ENTRY_ZERO | ENTRY_DELETED, b"x").unwrap());
        let e = decode_entries(&bytes).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(
            e[0].object_name(),
            Some("vol_0000000000000001_0000000000000000")
        );
        assert!(e[0].writable && e[0].archip && !e[0].deleted);
        assert_eq!(e[1].object_name(), Some(&*longest));
        assert!(!e[1].writable && !e[1].archip);
        assert_eq!(e[2], LegacyEntry::zero());
        assert!(
            e[3].name.is_none() && e[3].deleted,
            "ZERO wins whatever the name"
        );

        // 124 is past the field, whichever way it is written.
        assert!(encode_entry(0, "n".repeat(124).as_bytes()).is_err());
        let mut over = encode_entry(0, longest.as_bytes()).unwrap();
        over[1] = 124;
        assert!(matches!(
            decode_entries(&over),
            Err(MapError::NameTooLong {
                len: 124,
                max: 123,
                ..
            })
        ));
        // A big-endian writer's 37 reads as 0x25000000 here: refused.
        let mut be = raw;
        be[1..5].copy_from_slice(&37u32.to_be_bytes());
        assert!(matches!(
            decode_entries(&be),
            Err(MapError::NameTooLong { .. })
        ));
    }

    #[test]
    fn malformed_entries_are_refused() {
        assert!(matches!(
            decode_entries(&[0; 127]),
            Err(MapError::Truncated { .. })
        ));
        assert!(matches!(
            decode_entries(&[0; 128]),
            Err(MapError::BadLegacyName { index: 0, .. })
        ));
        let bad_utf8 = encode_entry(0, b"\xff\xfe").unwrap();
        assert!(matches!(
            decode_entries(&bad_utf8),
            Err(MapError::BadLegacyName { .. })
        ));
        let unknown = encode_entry(0x10, b"a").unwrap();
        assert!(matches!(
            decode_entries(&unknown),
            Err(MapError::BadFlags { flags: 0x10, .. })
        ));
        assert!(decode_entries(&[]).unwrap().is_empty());
    }

    #[test]
    fn map_data_objects_are_named_and_filled_as_documented() {
        assert_eq!(map_object_name("vol", 0x1f), "vol_000000000000001f");
        assert_eq!(entries_per_object(4 << 20), 32_768);
        assert_eq!(entries_per_object(256), 2);
        assert_eq!(entry_location(4 << 20, 32_769), (1, 128));
        assert_eq!(entry_location(256, 5), (2, 128));
        let h = V2Header {
            size: 32_768 * (4 << 20) + 1,
            blocksize: 4 << 20,
            readonly: false,
            deleted: false,
            epoch: 1,
        };
        assert_eq!((h.nr_objects(), h.nr_map_objects()), (32_769, 2));
    }

    #[test]
    fn assemble_wants_one_entry_per_object() {
        let h = V2Header {
            size: 4096 * 3,
            blocksize: 4096,
            readonly: true,
            deleted: false,
            epoch: 9,
        };
        let m = assemble(&h, vec![LegacyEntry::zero(); 3]).unwrap();
        assert_eq!(
            (m.version, m.object_size, m.epoch, m.readonly),
            (2, 4096, 9, true)
        );
        assert!(matches!(
            assemble(&h, vec![LegacyEntry::zero(); 2]),
            Err(MapError::EntryCountMismatch {
                expected: 3,
                found: 2
            })
        ));
    }
}
