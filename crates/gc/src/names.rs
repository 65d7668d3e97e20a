//! What a store name is, for the collector.

use archipelago_mapfmt::gcmeta::{GC_PIN_PREFIX, GC_STATE_OBJECT, REBASE_LIST, REBASE_PREFIX};
use archipelago_mapfmt::journal::JOURNAL_PREFIX;
use archipelago_mapfmt::LEGACY_PREFIX;
use archipelago_protocol::names::{check_volume_name, is_content_name, HASH_SUFFIX, LOCK_SUFFIX};

/// The kind of an object name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `{id}_{epoch}_{index}`: a volume's data object.
    Owned {
        /// Volume id.
        id: u64,
        /// Epoch.
        epoch: u64,
    },
    /// `{owner}_{serial}` with serial ≥ 1: a map chunk.
    Chunk {
        /// Owner id.
        owner: u64,
        /// Serial.
        serial: u64,
    },
    /// 64 hex digits: a content object.
    Content,
    /// `archip_…`: an object of an original map (data store only).
    Legacy,
    /// A volume name: a header (map store only).
    Header,
    /// Anything else: never touched.
    Other,
}

fn hex16(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Classifies `name`.
pub fn kind(name: &str) -> Kind {
    let parts: Vec<&str> = name.split('_').collect();
    match parts.as_slice() {
        [a, b, c] => {
            if let (Some(id), Some(epoch), Some(_)) = (hex16(a), hex16(b), hex16(c)) {
                return Kind::Owned { id, epoch };
            }
        }
        [a, b] => {
            if let (Some(owner), Some(serial)) = (hex16(a), hex16(b)) {
                // Serial 0 is a rename marker, not a chunk.
                return if serial == 0 {
                    Kind::Other
                } else {
                    Kind::Chunk { owner, serial }
                };
            }
        }
        _ => {}
    }
    if is_content_name(name.as_bytes()) {
        Kind::Content
    } else if name.starts_with(LEGACY_PREFIX) && !name.ends_with(LOCK_SUFFIX) {
        Kind::Legacy
    } else if check_volume_name(name.as_bytes()).is_ok() {
        Kind::Header
    } else {
        Kind::Other
    }
}

/// Whether the map-store object `name` must be read to be classified:
/// everything but chunks (`{owner}_{serial}`, checked before deletion),
/// rename markers, the collector's own objects (generation, pins), a
/// hash's rebase records and their list, and
/// side objects (`…_lock`, `…_hash`). What it holds (a format 3 header
/// under any name, an old map, or something unknown) is decided by its
/// bytes, never by its name.
pub fn read_in_map_store(name: &str) -> bool {
    let side = name == GC_STATE_OBJECT
        || name.starts_with(GC_PIN_PREFIX)
        // A hash's rebase records and their list: the hash's own, pinned
        // against collections like the hash itself.
        || name == REBASE_LIST
        || name.starts_with(REBASE_PREFIX)
        // A volume's map journal: it names only objects the collector
        // keeps anyway (see the mapper's journal module).
        || name.starts_with(JOURNAL_PREFIX)
        || name.ends_with(LOCK_SUFFIX)
        || name.ends_with(HASH_SUFFIX);
    let chunk_shaped = {
        let parts: Vec<&str> = name.split('_').collect();
        parts.len() == 2 && parts.iter().all(|p| hex16(p).is_some())
    };
    !side && !chunk_shaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_told_apart() {
        assert_eq!(
            kind("00000000000000ab_0000000000000002_0000000000000007"),
            Kind::Owned { id: 0xab, epoch: 2 }
        );
        assert_eq!(
            kind("00000000000000ab_0000000000000003"),
            Kind::Chunk {
                owner: 0xab,
                serial: 3
            }
        );
        assert_eq!(kind("00000000000000ab_0000000000000000"), Kind::Other);
        assert_eq!(kind(&"a".repeat(64)), Kind::Content);
        assert_eq!(kind("archip_vol_0000000000000001"), Kind::Legacy);
        assert_eq!(kind("archip_gc"), Kind::Legacy);
        assert_eq!(kind("vm1"), Kind::Header);
        assert_eq!(kind("bench-obj-1_lock"), Kind::Other);
        for read in [
            "vm1",
            "archip_vm1",
            &"a".repeat(64),
            "x_00000000000000ab_0000000000000001",
        ] {
            assert!(read_in_map_store(read), "{read}");
        }
        for not in [
            "archip_gc",
            "archip_gcpin_00000000000000ab",
            "archip_rebase_00000000000000ab",
            "archip_rebaselist",
            "vm1_lock",
            "00000000000000ab_0000000000000003",
            "00000000000000ab_0000000000000000",
        ] {
            assert!(!read_in_map_store(not), "{not}");
        }
    }
}
