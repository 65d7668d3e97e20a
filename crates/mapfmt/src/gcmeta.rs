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
//! - A **rebase record** `archip_rebase_{owner:016x}` ([`RebaseRecord`])
//!   lists, for a hash that wrote chunks of `owner`, each object the hash
//!   replaced and what replaces it (a content object, or zeros), so that
//!   the other maps naming those objects are moved too, by the hash or by
//!   their lock holders (the mapper's `rebase` module). Written before
//!   the snapshot's hashed header commits, deleted once no live map names
//!   a replaced object.
//! - The **rebase list** [`REBASE_LIST`] (`archip_rebaselist`) names the
//!   rebase records in force, one a line ([`encode_rebase_list`]): what
//!   a lock holder reads on its periodic check (one small read; a prefix
//!   listing costs a walk of the whole store on the files backend).
//!
//! All names start with the reserved `archip_` prefix, so no volume,
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

/// Prefix of rebase records.
pub const REBASE_PREFIX: &str = "archip_rebase_";

/// The rebase record of a hash writing chunks owned by `owner`.
pub fn rebase_name(owner: u64) -> String {
    format!("{REBASE_PREFIX}{owner:016x}")
}

/// The list of rebase records in force (not itself a record: it does not
/// start with [`REBASE_PREFIX`]).
pub const REBASE_LIST: &str = "archip_rebaselist";

/// The bytes of the rebase list naming `records`.
pub fn encode_rebase_list(records: &[String]) -> Vec<u8> {
    let mut b = Vec::new();
    for r in records {
        b.extend_from_slice(r.as_bytes());
        b.push(b'\n');
    }
    b
}

/// The record names in the rebase list `bytes` (lines that are not
/// record names are skipped).
pub fn decode_rebase_list(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| l.starts_with(REBASE_PREFIX) && l.len() == REBASE_PREFIX.len() + 16)
        .map(str::to_owned)
        .collect()
}

const REBASE_MAGIC: &[u8; 4] = b"ARB1";

/// One replaced object of a [`RebaseRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebaseMove {
    /// The object index (the same in every map naming the object).
    pub index: u64,
    /// The replaced object's name.
    pub old: String,
    /// Its content object's digest; `None`: it was all zeros.
    pub digest: Option<[u8; 32]>,
}

/// A rebase record: the snapshot a hash replaced objects of (its volume
/// id and epoch, and its name when hashed, for messages) and the moves.
///
/// Layout: magic `ARB1`, u64 volume id, u64 epoch, u16 name length, the
/// name, u64 move count, then per move: u64 index, u8 kind (0 zero, 2
/// content), 32 digest bytes (zeros for a zero move), u16 length and the
/// old object's name. Integers little-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebaseRecord {
    /// The hashed snapshot's volume id.
    pub volume_id: u64,
    /// The hashed snapshot's epoch.
    pub epoch: u64,
    /// The snapshot's name when it was hashed.
    pub snapshot: String,
    /// The replaced objects.
    pub moves: Vec<RebaseMove>,
}

impl RebaseRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + self.moves.len() * 100);
        b.extend_from_slice(REBASE_MAGIC);
        b.extend_from_slice(&self.volume_id.to_le_bytes());
        b.extend_from_slice(&self.epoch.to_le_bytes());
        let name = &self.snapshot.as_bytes()[..self.snapshot.len().min(u16::MAX as usize)];
        b.extend_from_slice(&(name.len() as u16).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&(self.moves.len() as u64).to_le_bytes());
        for m in &self.moves {
            b.extend_from_slice(&m.index.to_le_bytes());
            b.push(if m.digest.is_some() { 2 } else { 0 });
            b.extend_from_slice(&m.digest.unwrap_or([0; 32]));
            let old = &m.old.as_bytes()[..m.old.len().min(u16::MAX as usize)];
            b.extend_from_slice(&(old.len() as u16).to_le_bytes());
            b.extend_from_slice(old);
        }
        b
    }

    /// The record in `bytes`, `None` if they are not one.
    pub fn decode(bytes: &[u8]) -> Option<RebaseRecord> {
        struct R<'a>(&'a [u8]);
        impl<'a> R<'a> {
            fn take(&mut self, n: usize) -> Option<&'a [u8]> {
                if self.0.len() < n {
                    return None;
                }
                let (a, b) = self.0.split_at(n);
                self.0 = b;
                Some(a)
            }
            fn u64(&mut self) -> Option<u64> {
                Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
            }
            fn u16(&mut self) -> Option<u16> {
                Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
            }
            fn text(&mut self) -> Option<String> {
                let n = self.u16()? as usize;
                String::from_utf8(self.take(n)?.to_vec()).ok()
            }
        }
        let mut r = R(bytes);
        if r.take(4)? != REBASE_MAGIC {
            return None;
        }
        let volume_id = r.u64()?;
        let epoch = r.u64()?;
        let snapshot = r.text()?;
        let count = r.u64()?;
        // Each move takes at least 43 bytes: a count past that is garbage.
        if count > (r.0.len() / 43) as u64 {
            return None;
        }
        let mut moves = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let index = r.u64()?;
            let kind = r.take(1)?[0];
            let d: [u8; 32] = r.take(32)?.try_into().ok()?;
            let digest = match kind {
                0 => None,
                2 => Some(d),
                _ => return None,
            };
            let old = r.text()?;
            moves.push(RebaseMove { index, old, digest });
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(RebaseRecord {
            volume_id,
            epoch,
            snapshot,
            moves,
        })
    }
}

/// Whether a collection is running (or was interrupted) at `generation`.
pub fn collecting(generation: u64) -> bool {
    generation % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebase_records_round_trip_and_garbage_is_refused() {
        let r = RebaseRecord {
            volume_id: 7,
            epoch: 3,
            snapshot: "gold-s".into(),
            moves: vec![
                RebaseMove {
                    index: 4,
                    old: "0000000000000007_0000000000000003_0000000000000004".into(),
                    digest: Some([0xab; 32]),
                },
                RebaseMove {
                    index: 9,
                    old: "archip_x".into(),
                    digest: None,
                },
            ],
        };
        let b = r.encode();
        assert_eq!(RebaseRecord::decode(&b), Some(r));
        assert_eq!(RebaseRecord::decode(&b[..b.len() - 1]), None);
        assert_eq!(RebaseRecord::decode(b"AGC1"), None);
        assert_eq!(rebase_name(0xab), "archip_rebase_00000000000000ab");
        let list = vec![rebase_name(1), rebase_name(2)];
        assert_eq!(decode_rebase_list(&encode_rebase_list(&list)), list);
        assert_eq!(
            decode_rebase_list(b"junk\narchip_rebase_x\n"),
            Vec::<String>::new()
        );
        assert!(!REBASE_LIST.starts_with(REBASE_PREFIX));
    }

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
