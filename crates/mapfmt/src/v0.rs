//! Version 0: a Pithos hashmap (volumes.md §2.2). Read-only.
//!
//! The object `<name>` holds consecutive 32-byte binary SHA-256 digests,
//! one per 4 MiB block, and nothing else. The map ends at the first
//! all-zero digest or at the end of the data. A v0 map is recognised only
//! when the caller assumes it ([`detect`](crate::detect) with
//! `assume_v0`). It is READONLY, epoch 0, and every entry is a read-only
//! content object (the zero-block digest reads as zeros).

use crate::legacy::{LegacyEntry, LegacyMap, LEGACY_OBJECT_SIZE};
use crate::MapError;

/// Bytes per entry: one binary SHA-256 digest.
pub const ENTRY_LEN: usize = 32;

/// Decodes a v0 map.
///
/// Without `size_hint` the size is `entries × 4 MiB`. With one,
/// `ceil(hint / 4 MiB)` must equal the number of entries and the size is
/// the hint. A trailing partial entry is read as if zero-padded, as the
/// original did (blockers return zeros past an object's end).
pub fn decode(bytes: &[u8], size_hint: Option<u64>) -> Result<LegacyMap, MapError> {
    let mut entries = Vec::with_capacity(bytes.len() / ENTRY_LEN);
    for raw in bytes.chunks(ENTRY_LEN) {
        let mut digest = [0u8; ENTRY_LEN];
        digest[..raw.len()].copy_from_slice(raw);
        if digest == [0; ENTRY_LEN] {
            break;
        }
        entries.push(LegacyEntry::content(&digest));
    }
    let count = entries.len() as u64;
    let size = match size_hint {
        None => count
            .checked_mul(LEGACY_OBJECT_SIZE)
            .ok_or(MapError::SizeHintMismatch {
                hint: 0,
                entries: count,
            })?,
        Some(hint) => {
            if hint.div_ceil(LEGACY_OBJECT_SIZE) != count {
                return Err(MapError::SizeHintMismatch {
                    hint,
                    entries: count,
                });
            }
            hint
        }
    };
    Ok(LegacyMap {
        version: 0,
        size,
        object_size: LEGACY_OBJECT_SIZE,
        readonly: true,
        deleted: false,
        epoch: 0,
        entries,
    })
}

/// Encodes a v0 map from digests, terminated by an all-zero entry (for
/// tests).
#[doc(hidden)]
pub fn encode(digests: &[[u8; 32]]) -> Vec<u8> {
    let mut out: Vec<u8> = digests.iter().flatten().copied().collect();
    out.extend_from_slice(&[0; ENTRY_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::ZERO_BLOCK_DIGEST;

    fn d(b: u8) -> [u8; 32] {
        [b; 32]
    }

    #[test]
    fn entries_end_at_the_first_zero_digest() {
        let mut bytes = encode(&[d(1), ZERO_BLOCK_DIGEST, d(2)]);
        bytes.extend_from_slice(&d(3)); // after the terminator: ignored
        let m = decode(&bytes, None).unwrap();
        assert_eq!(m.version, 0);
        assert_eq!(m.size, 3 * LEGACY_OBJECT_SIZE);
        assert!(m.readonly);
        assert_eq!(m.epoch, 0);
        assert_eq!(m.entries.len(), 3);
        assert_eq!(m.entries[0].name.as_deref(), Some(&*"01".repeat(32)));
        assert_eq!(
            m.entries[1],
            LegacyEntry::zero(),
            "the zero block reads as zeros"
        );
        assert!(!m.entries[2].writable && !m.entries[2].archip);
    }

    #[test]
    fn the_end_of_data_also_ends_the_map() {
        let bytes: Vec<u8> = [d(7), d(8)].concat();
        assert_eq!(decode(&bytes, None).unwrap().entries.len(), 2);
        assert_eq!(decode(&[], None).unwrap().size, 0);
        // A partial last entry is zero-padded, as a blocker's read would be.
        let m = decode(&bytes[..40], None).unwrap();
        let mut padded = [0u8; 32];
        padded[..8].copy_from_slice(&[8; 8]);
        assert_eq!(m.entries[1], LegacyEntry::content(&padded));
    }

    #[test]
    fn a_size_hint_must_match_the_entry_count() {
        let bytes = encode(&[d(1), d(2)]);
        let m = decode(&bytes, Some(LEGACY_OBJECT_SIZE + 512)).unwrap();
        assert_eq!(m.size, LEGACY_OBJECT_SIZE + 512);
        assert_eq!(m.nr_objects(), 2);
        assert_eq!(
            decode(&bytes, Some(2 * LEGACY_OBJECT_SIZE)).unwrap().size,
            2 << 22
        );
        for bad in [LEGACY_OBJECT_SIZE, 2 * LEGACY_OBJECT_SIZE + 1, 0] {
            assert!(matches!(
                decode(&bytes, Some(bad)),
                Err(MapError::SizeHintMismatch { entries: 2, .. })
            ));
        }
    }
}
