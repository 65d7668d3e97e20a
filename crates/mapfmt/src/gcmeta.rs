//! The map-store objects garbage collection and the mapper agree on (pure
//! code; the protocol is argued in the `archipelago-gc` crate's docs).
//!
//! - [`GC_STATE_OBJECT`] (`archip_gc`) holds the **gc generation**, a
//!   counter a collector makes odd when it starts and even when it ends:
//!   16 bytes, magic `AGC1`, a flag byte, 3 reserved zero bytes, u64 LE
//!   generation. The flag is 1 when a run started over an unfinished
//!   (odd) generation, after a crash or `gc --break-lock`: the run
//!   before it may still be deleting ([`GcState::forced`]). A missing
//!   object is generation 0. The lock of the same name (the
//!   lock namespace is separate) is the collectors' mutual exclusion and
//!   fencing token.
//! - A **hash pin** `archip_gcpin_{owner:016x}` (content: the snapshot's
//!   name) exists while a hash that may newly refer to existing content
//!   objects is in flight; `owner` is the id of the chunks it writes.
//!
//! Both names start with the reserved `archip_` prefix, so no volume,
//! chunk or data object is ever called that.

/// Prefix of a **tombstone**: the header of a removed volume or snapshot
/// whose name was used again, moved out of the way under
/// `archip_removed_{volume_id:016x}_{epoch:016x}` (an id and an epoch name
/// one header). Kept for its lineage and for the collector, which
/// deletes it once nothing needs it.
pub const TOMBSTONE_PREFIX: &str = "archip_removed_";

/// The tombstone of the header of `volume_id` at `epoch`.
pub fn tombstone_name(volume_id: u64, epoch: u64) -> String {
    format!("{TOMBSTONE_PREFIX}{volume_id:016x}_{epoch:016x}")
}

/// The gc generation object, and the name of the collectors' lock.
pub const GC_STATE_OBJECT: &str = "archip_gc";

/// Prefix of hash pins.
pub const GC_PIN_PREFIX: &str = "archip_gcpin_";

const MAGIC: &[u8; 4] = b"AGC1";

/// The pin of a hash writing chunks owned by `owner`.
pub fn pin_name(owner: u64) -> String {
    format!("{GC_PIN_PREFIX}{owner:016x}")
}

/// What the generation object says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcState {
    /// The generation (odd: a run started and has not finished).
    pub generation: u64,
    /// The run of this (odd) generation started over an unfinished one,
    /// whose collector may still be deleting: a hash waiting for the
    /// older run waits for this one to finish too.
    pub forced: bool,
}

/// The bytes of the generation object (not forced).
pub fn encode_generation(generation: u64) -> Vec<u8> {
    encode_state(GcState {
        generation,
        forced: false,
    })
}

/// The bytes of the generation object.
pub fn encode_state(state: GcState) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&[u8::from(state.forced), 0, 0, 0]);
    b.extend_from_slice(&state.generation.to_le_bytes());
    b
}

/// The generation in `bytes`, `None` if they are not a generation object.
pub fn decode_generation(bytes: &[u8]) -> Option<u64> {
    decode_state(bytes).map(|s| s.generation)
}

/// The state in `bytes`, `None` if they are not a generation object.
pub fn decode_state(bytes: &[u8]) -> Option<GcState> {
    if bytes.len() != 16 || &bytes[..4] != MAGIC || bytes[4] > 1 || bytes[5..8] != [0; 3] {
        return None;
    }
    Some(GcState {
        generation: u64::from_le_bytes(bytes[8..].try_into().ok()?),
        forced: bytes[4] == 1,
    })
}

/// Whether a hash that read the odd generation `first` may go on, now
/// that the state is `now`: the run of `first` has finished, which is
/// known once the generation is even, or odd and later than `first` and
/// started normally (over a finished generation). A later run started
/// over an unfinished one (forced, after a crash or `gc --break-lock`)
/// says nothing of the run before it, which may still be deleting.
pub fn finished_since(first: u64, now: GcState) -> bool {
    !collecting(now.generation) || (now.generation > first && !now.forced)
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
        let forced = GcState {
            generation: 5,
            forced: true,
        };
        assert_eq!(decode_state(&encode_state(forced)), Some(forced));
        let mut b = encode_generation(3);
        b[4] = 2;
        assert_eq!(decode_generation(&b), None);
        assert!(finished_since(3, GcState::default()));
        assert!(finished_since(
            3,
            decode_state(&encode_generation(5)).unwrap()
        ));
        assert!(!finished_since(3, forced));
        assert!(!finished_since(
            3,
            decode_state(&encode_generation(3)).unwrap()
        ));
        assert_eq!(pin_name(0xab), "archip_gcpin_00000000000000ab");
        assert_eq!(
            tombstone_name(0xab, 2),
            "archip_removed_00000000000000ab_0000000000000002"
        );
        assert!(
            archipelago_protocol::names::check_store_name(tombstone_name(1, 2).as_bytes()).is_ok()
        );
        assert!(
            archipelago_protocol::names::check_store_name(pin_name(u64::MAX).as_bytes()).is_ok()
        );
        assert!(
            archipelago_protocol::names::check_volume_name(GC_STATE_OBJECT.as_bytes()).is_err()
        );
    }
}
