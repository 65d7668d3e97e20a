//! Converting an original map (v0, v1, v2) into version 3.

use crate::chunk::{Chunk, ChunkRef, ENTRIES_PER_CHUNK};
use crate::entry::Entry;
use crate::header::{Header, HeaderFlags};
use crate::legacy::{nr_objects, LegacyEntry, LegacyMap};
use crate::MapError;
use archipelago_protocol::{names, sizes};

/// Converts a decoded original map into a version 3 header and the chunks
/// to write before it, for a volume with the fresh id `volume_id`.
///
/// - Each entry: the zero block → [`Entry::Zero`]; a 64-hex name (a
///   content object) → [`Entry::Content`]; any other name (`archip_…`,
///   `<volume>_<epoch>_<index>`, ...) → [`Entry::Legacy`]. Every upgraded
///   entry is copy-on-write, including the original's WRITABLE ones.
/// - DELETED entries become zero in a map flagged DELETED, and are
///   refused otherwise (a destroy was interrupted: finish it first).
/// - The size is rounded up to a multiple of 512 (a v0 size hint may be
///   any byte count; the object count does not change). The epoch is
///   kept; READONLY and DELETED become READONLY and REMOVED; HASHED is
///   set when no legacy name is left.
/// - Chunks that would hold only zeros get [`ChunkRef::ZERO`]; the others
///   get serials 1, 2, ... in slot order.
pub fn upgrade(map: &LegacyMap, volume_id: u64) -> Result<(Header, Vec<Chunk>), MapError> {
    if volume_id == 0 {
        return Err(MapError::BadVolumeId {
            what: "volume id",
            id: 0,
        });
    }
    if !map.object_size.is_power_of_two() {
        return Err(MapError::InvalidObjectSize {
            what: "legacy object size",
            value: map.object_size,
        });
    }
    let log2 = map.object_size.trailing_zeros();
    let size = map
        .size
        .checked_next_multiple_of(sizes::SECTOR)
        .ok_or(sizes::SizeError::TooLarge(map.size))?;
    let mut h = Header::new(volume_id, size, log2)?;
    let expected = nr_objects(map.size, map.object_size);
    if map.entries.len() as u64 != expected {
        return Err(MapError::EntryCountMismatch {
            expected,
            found: map.entries.len() as u64,
        });
    }
    // Rounding to a sector never crosses an object boundary.
    debug_assert_eq!(h.nr_objects(), expected);
    h.epoch = map.epoch;
    let mut chunks = Vec::new();
    let mut hashed = true;
    for (slot, group) in map.entries.chunks(ENTRIES_PER_CHUNK).enumerate() {
        let mut entries = Vec::with_capacity(group.len());
        for (i, e) in group.iter().enumerate() {
            let index = (slot * ENTRIES_PER_CHUNK + i) as u64;
            let entry = convert(e, map.deleted, index)?;
            hashed &= !matches!(entry, Entry::Legacy(_));
            entries.push(entry);
        }
        let id = ChunkRef {
            owner: volume_id,
            serial: h.next_serial,
        };
        let chunk = Chunk::from_entries(id, entries)?;
        if chunk.entries().is_empty() {
            continue;
        }
        h.next_serial += 1;
        h.chunks[slot] = id;
        chunks.push(chunk);
    }
    h.flags = HeaderFlags {
        readonly: map.readonly,
        removed: map.deleted,
        hashed,
    };
    if map.readonly {
        // A snapshot owns nothing privately (see `snapshot`).
        h.first_private_serial = h.next_serial;
    }
    h.validate()?;
    Ok((h, chunks))
}

fn convert(e: &LegacyEntry, map_deleted: bool, index: u64) -> Result<Entry, MapError> {
    if e.deleted {
        if map_deleted {
            return Ok(Entry::Zero);
        }
        return Err(MapError::BadLegacyName {
            index,
            why: "the entry was deleted by an unfinished destroy",
        });
    }
    let Some(name) = &e.name else {
        return Ok(Entry::Zero);
    };
    if names::is_content_name(name.as_bytes()) {
        let mut digest = [0u8; 32];
        for (d, pair) in digest.iter_mut().zip(name.as_bytes().chunks_exact(2)) {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            *d = (hex(pair[0]) << 4) | hex(pair[1]);
        }
        return Ok(Entry::content(digest));
    }
    let entry = Entry::Legacy(name.clone());
    entry.validate()?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::{LEGACY_OBJECT_SIZE, ZERO_BLOCK_DIGEST};
    use crate::{v1, v2};

    #[test]
    fn a_v1_map_upgrades_to_content_and_legacy_entries() {
        let mut raw = vec![(0u8, [0u8; 32]); 4097];
        raw[0] = (1, [0x11; 32]);
        raw[1] = (0, [0x22; 32]);
        raw[2] = (0, ZERO_BLOCK_DIGEST);
        for r in &mut raw[3..] {
            r.1 = ZERO_BLOCK_DIGEST;
        }
        let m = v1::decode(&v1::encode(4097 * LEGACY_OBJECT_SIZE - 100, &raw)).unwrap();
        let (h, chunks) = upgrade(&m, 0x77).unwrap();
        assert_eq!(h.size, 4097 * LEGACY_OBJECT_SIZE, "rounded up to a sector");
        assert_eq!((h.object_size_log2, h.epoch, h.next_serial), (22, 0, 2));
        assert!(!h.flags.hashed && !h.flags.readonly);
        assert_eq!(
            h.chunks,
            vec![
                ChunkRef {
                    owner: 0x77,
                    serial: 1
                },
                ChunkRef::ZERO
            ]
        );
        assert_eq!(chunks.len(), 1);
        let c = &chunks[0];
        assert_eq!(
            c.get(0),
            Some(&Entry::Legacy(format!("archip_{}", "11".repeat(32))))
        );
        assert_eq!(c.get(1), Some(&Entry::Content([0x22; 32])));
        assert_eq!(c.get(2), Some(&Entry::Zero));
        assert_eq!(c.entries().len(), 2);
        assert!(
            !h.is_writable(c.get(0).unwrap()),
            "upgraded entries are copy-on-write"
        );
    }

    #[test]
    fn a_v2_snapshot_upgrades_read_only_and_hashed() {
        let hdr = v2::V2Header {
            size: 3 * 4096,
            blocksize: 4096,
            readonly: true,
            deleted: false,
            epoch: 5,
        };
        let entries = vec![
            LegacyEntry::content(&[0xab; 32]),
            LegacyEntry::zero(),
            LegacyEntry::content(&[0xcd; 32]),
        ];
        let m = v2::assemble(&hdr, entries).unwrap();
        let (h, chunks) = upgrade(&m, 9).unwrap();
        assert!(h.flags.readonly && h.flags.hashed);
        assert_eq!((h.epoch, h.object_size_log2), (5, 12));
        assert_eq!(h.first_private_serial, h.next_serial);
        assert_eq!(chunks[0].get(2), Some(&Entry::Content([0xcd; 32])));
    }

    #[test]
    fn deleted_entries_and_bad_maps_are_handled() {
        let deleted = LegacyEntry {
            name: Some("vol_0000000000000001_0000000000000000".into()),
            writable: true,
            archip: true,
            deleted: true,
        };
        let mut m = LegacyMap {
            version: 2,
            size: 4096,
            object_size: 4096,
            readonly: false,
            deleted: false,
            epoch: 1,
            entries: vec![deleted],
        };
        assert!(matches!(
            upgrade(&m, 1),
            Err(MapError::BadLegacyName { index: 0, .. })
        ));
        m.deleted = true;
        let (h, chunks) = upgrade(&m, 1).unwrap();
        assert!(h.flags.removed && chunks.is_empty());
        assert!(upgrade(&m, 0).is_err());
        m.entries.push(LegacyEntry::zero());
        assert!(matches!(
            upgrade(&m, 1),
            Err(MapError::EntryCountMismatch { .. })
        ));
        m.entries.pop();
        m.object_size = 256;
        assert!(matches!(
            upgrade(&m, 1),
            Err(MapError::InvalidObjectSize { .. })
        ));
        m.object_size = 4096;
        m.size = 0;
        m.entries.clear();
        assert!(matches!(upgrade(&m, 1), Err(MapError::InvalidSize(_))));
        m.size = 4096;
        m.deleted = false;
        m.entries = vec![LegacyEntry {
            name: Some("bad name".into()),
            ..LegacyEntry::zero()
        }];
        assert!(matches!(upgrade(&m, 1), Err(MapError::BadName { .. })));
    }
}
