//! The map-store objects garbage collection and the mapper agree on (pure
//! code; the protocol is argued in the `archipelago-gc` crate's docs).
//!
//! - [`GC_STATE_OBJECT`] (`archip_gc`) holds the **gc generation**, a
//!   counter a collector makes odd when it starts and even when it ends:
//!   16 bytes, magic `AGC1`, 4 reserved zero bytes, u64 LE generation. A
//!   missing object is generation 0. The lock of the same name (the
//!   lock namespace is separate) is the collectors' mutual exclusion and
//!   fencing token.
//! - A **hash pin** `archip_gcpin_{owner:016x}` (content: the snapshot's
//!   name) exists while a hash that may newly refer to existing content
//!   objects is in flight; `owner` is the id of the chunks it writes.
//!
//! Both names start with the reserved `archip_` prefix, so no volume,
//! chunk or data object is ever called that.

/// The gc generation object, and the name of the collectors' lock.
pub const GC_STATE_OBJECT: &str = "archip_gc";

/// Prefix of hash pins.
pub const GC_PIN_PREFIX: &str = "archip_gcpin_";

const MAGIC: &[u8; 4] = b"AGC1";

/// The pin of a hash writing chunks owned by `owner`.
pub fn pin_name(owner: u64) -> String {
    format!("{GC_PIN_PREFIX}{owner:016x}")
}

/// The bytes of the generation object.
pub fn encode_generation(generation: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&generation.to_le_bytes());
    b
}

/// The generation in `bytes`, `None` if they are not a generation object.
pub fn decode_generation(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != 16 || &bytes[..4] != MAGIC || bytes[4..8] != [0; 4] {
        return None;
    }
    Some(u64::from_le_bytes(bytes[8..].try_into().ok()?))
}

/// Whether a collection is running (or was interrupted) at `generation`.
pub fn collecting(generation: u64) -> bool {
    generation % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_round_trip_and_garbage_is_refused() {
        for g in [0, 1, 2, u64::MAX] {
            assert_eq!(decode_generation(&encode_generation(g)), Some(g));
        }
        assert_eq!(decode_generation(b"AGC1"), None);
        let mut b = encode_generation(3);
        b[0] = b'X';
        assert_eq!(decode_generation(&b), None);
        assert!(collecting(3) && !collecting(4));
        assert_eq!(pin_name(0xab), "archip_gcpin_00000000000000ab");
        assert!(
            archipelago_protocol::names::check_store_name(pin_name(u64::MAX).as_bytes()).is_ok()
        );
        assert!(
            archipelago_protocol::names::check_volume_name(GC_STATE_OBJECT.as_bytes()).is_err()
        );
    }
}
