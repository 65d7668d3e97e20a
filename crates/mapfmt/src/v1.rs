//! Version 1 (volumes.md §2.3). Read-only.
//!
//! One object `<name>`: a 12-byte little-endian header, then one 33-byte
//! entry per 4 MiB object.
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | u32 LE | version = 1 |
//! | 4 | u64 LE | size in bytes |
//! | 12 + 33·i | u8 | flag: ≠ 0 writable archip object, 0 content object |
//! | 13 + 33·i | 32 bytes | binary SHA-256 digest |
//!
//! Flag ≠ 0 names `archip_` + 64 hex (writable, archip); flag 0 names the
//! 64 hex digits (read-only), and the zero-block digest reads as zeros.
//! Epoch 0, flags 0, object size 4 MiB. Bytes after the last entry are
//! ignored.

use crate::bytes::{put, to_usize, Fields};
use crate::legacy::{nr_objects, LegacyEntry, LegacyMap, LEGACY_OBJECT_SIZE, LEGACY_PREFIX};
use crate::MapError;
use archipelago_protocol::names;

/// The version word.
pub const VERSION: u32 = 1;
/// Offset of the version (u32 LE).
pub const VERSION_OFF: usize = 0;
/// Offset of the size (u64 LE).
pub const SIZE_OFF: usize = VERSION_OFF + size_of::<u32>();
/// Header length; entries start here.
pub const HEADER_LEN: usize = SIZE_OFF + size_of::<u64>();
/// Offset of the flag inside an entry.
pub const ENTRY_FLAG_OFF: usize = 0;
/// Offset of the digest inside an entry.
pub const ENTRY_DIGEST_OFF: usize = ENTRY_FLAG_OFF + size_of::<u8>();
/// Bytes per entry.
pub const ENTRY_LEN: usize = ENTRY_DIGEST_OFF + 32;

const WHAT: &str = "v1 map";

/// Decodes a v1 map.
///
/// The entry array must be complete: the original read it in one request
/// and would have taken a short object's zero fill for entries; here a
/// short object is [`MapError::Truncated`].
pub fn decode(bytes: &[u8]) -> Result<LegacyMap, MapError> {
    let f = Fields::new(bytes, WHAT);
    f.need(HEADER_LEN as u64)?;
    let version = f.u32_le(VERSION_OFF)?;
    if version != VERSION {
        return Err(MapError::UnsupportedVersion {
            what: WHAT,
            version,
        });
    }
    let size = f.u64_le(SIZE_OFF)?;
    let count = nr_objects(size, LEGACY_OBJECT_SIZE);
    let need = count
        .checked_mul(ENTRY_LEN as u64)
        .and_then(|n| n.checked_add(HEADER_LEN as u64))
        .unwrap_or(u64::MAX);
    f.need(need)?;
    let count = to_usize(count, WHAT, bytes.len())?;
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let at = HEADER_LEN + i * ENTRY_LEN;
        let flag = f.u8(at + ENTRY_FLAG_OFF)?;
        let digest: [u8; 32] = f.array(at + ENTRY_DIGEST_OFF)?;
        entries.push(if flag != 0 {
            LegacyEntry {
                name: Some(format!("{LEGACY_PREFIX}{}", names::content_name(&digest))),
                writable: true,
                archip: true,
                deleted: false,
            }
        } else {
            LegacyEntry::content(&digest)
        });
    }
    Ok(LegacyMap {
        version: 1,
        size,
        object_size: LEGACY_OBJECT_SIZE,
        readonly: false,
        deleted: false,
        epoch: 0,
        entries,
    })
}

/// Encodes a v1 map from raw `(flag, digest)` entries, byte for byte as
/// documented (for tests; any entry count is accepted).
#[doc(hidden)]
pub fn encode(size: u64, entries: &[(u8, [u8; 32])]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + entries.len() * ENTRY_LEN];
    put(&mut out, VERSION_OFF, &VERSION.to_le_bytes());
    put(&mut out, SIZE_OFF, &size.to_le_bytes());
    for (i, (flag, digest)) in entries.iter().enumerate() {
        let at = HEADER_LEN + i * ENTRY_LEN;
        put(&mut out, at + ENTRY_FLAG_OFF, &[*flag]);
        put(&mut out, at + ENTRY_DIGEST_OFF, digest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::ZERO_BLOCK_DIGEST;

    #[test]
    fn the_layout_is_the_documented_one() {
        assert_eq!((SIZE_OFF, HEADER_LEN, ENTRY_LEN), (4, 12, 33));
        let bytes = encode(0x0102, &[(1, [0xab; 32])]);
        let mut golden = vec![1, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 1];
        golden.extend_from_slice(&[0xab; 32]);
        assert_eq!(bytes, golden);
    }

    #[test]
    fn flags_choose_archip_or_content_names() {
        let size = 2 * LEGACY_OBJECT_SIZE + 4096;
        let mut bytes = encode(
            size,
            &[(1, [0x11; 32]), (0, [0x22; 32]), (0, ZERO_BLOCK_DIGEST)],
        );
        bytes.extend_from_slice(b"old tail"); // ignored
        let m = decode(&bytes).unwrap();
        assert_eq!(
            (m.version, m.size, m.epoch, m.readonly),
            (1, size, 0, false)
        );
        assert_eq!(m.object_size, 4 << 20);
        assert_eq!(
            m.entries[0],
            LegacyEntry {
                name: Some(format!("archip_{}", "11".repeat(32))),
                writable: true,
                archip: true,
                deleted: false,
            }
        );
        assert_eq!(m.entries[1].name.as_deref(), Some(&*"22".repeat(32)));
        assert!(!m.entries[1].writable);
        assert_eq!(m.entries[2], LegacyEntry::zero());
    }

    #[test]
    fn short_maps_and_other_versions_are_refused() {
        let bytes = encode(3 * LEGACY_OBJECT_SIZE, &[(0, [1; 32]), (0, [2; 32])]);
        assert!(matches!(
            decode(&bytes),
            Err(MapError::Truncated {
                need: 111,
                have: 78,
                ..
            })
        ));
        assert!(matches!(
            decode(&bytes[..11]),
            Err(MapError::Truncated { .. })
        ));
        let mut v2 = encode(0, &[]);
        v2[0] = 2;
        assert!(matches!(
            decode(&v2),
            Err(MapError::UnsupportedVersion { version: 2, .. })
        ));
        // A huge size cannot make the decoder allocate.
        let huge = encode(u64::MAX, &[]);
        assert!(matches!(decode(&huge), Err(MapError::Truncated { .. })));
    }
}
