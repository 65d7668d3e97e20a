//! Volume map formats, as pure code: bytes in, structures out, and the map
//! side of volume operations. No I/O.
//!
//! A volume is cut into objects (4 MiB by default); its *map* says which
//! backend object holds each one. This crate reads the original
//! Archipelago formats and defines ours:
//!
//! - [`detect`] tells the formats apart from a map object's first bytes.
//! - [`v0`], [`v1`], [`v2`] decode the original formats (read-only for
//!   us) into a [`LegacyMap`] of [`LegacyEntry`]s; [`upgrade`] converts one
//!   into version 3.
//! - Version 3 is a [`Header`] (the object `<volume>`) referring through
//!   [`ChunkRef`]s to immutable [`Chunk`]s of [`ENTRIES_PER_CHUNK`]
//!   [`Entry`]s. [`snapshot`], [`clone_from`], [`resize`], [`set_entry`]
//!   compute what an operation writes: new chunks first, then the header.
//! - Every decoder returns a [`MapError`] for anything it does not accept
//!   and never panics (property-tested; [`fuzz_decoders`] runs them all).
//!
//! The mapper peer does the I/O: it reads `<volume>`, [`detect`]s, decodes,
//! and for a version 3 map loads chunks on demand from the map store.
//!
//! ```
//! use archipelago_mapfmt::{set_entry, snapshot, Chunk, ChunkRef, Entry, Header};
//!
//! // A new 40 GiB volume with 4 MiB objects: three zero chunk refs.
//! let vol = Header::new(0x5eed, 40 << 30, 22)?;
//! // First write to object 7: copy-up into an object the volume owns.
//! let (slot, _) = vol.chunk_for(7)?;
//! assert!(vol.chunks[slot].is_zero());
//! let (chunk, vol) = set_entry(&vol, &Chunk::empty(ChunkRef::ZERO), 7, vol.own_entry())?;
//! // (write `chunk.encode()?` as `chunk.id().object_name()`, then the header)
//! let entry = chunk.get(7).unwrap();
//! assert_eq!(
//!     entry.object_name(7).unwrap(),
//!     "0000000000005eed_0000000000000001_0000000000000007"
//! );
//! assert!(vol.is_writable(entry));
//! // A snapshot rewrites no entry: the volume moves to the next epoch.
//! let (snap, vol) = snapshot(&vol, "before-upgrade")?;
//! assert!(!vol.is_writable(entry) && snap.flags.readonly);
//! assert_eq!(Header::decode(&vol.encode()?)?, vol);
//! # Ok::<(), archipelago_mapfmt::MapError>(())
//! ```
//!
//! # Version 3
//!
//! The original rewrites the whole map (128 bytes per object, 32 MiB per
//! TiB) on every snapshot, clone, create and resize, and has no checksum
//! or atomic commit (volumes.md §2.8, §7.1, §8.1). Version 3 fixes both:
//! a snapshot or clone copies a small table of refs to immutable chunks,
//! and every change commits by one atomic replacement of the header.
//!
//! ## Identities and names
//!
//! - Each volume has a random **volume id** (u64, nonzero) fixed at
//!   creation, and an **epoch** (u64) bumped by each snapshot of it.
//! - The data object a volume writes for object `index` is
//!   `{id:016x}_{epoch:016x}_{index:016x}` in the data store
//!   ([`owned_object_name`]). Renaming a volume touches no data.
//! - A chunk is `{owner id:016x}_{serial:016x}` in the map store
//!   ([`ChunkRef::object_name`]). The protocol's name grammar reserves
//!   `_` + 16 hex digits at a word end, so neither collides with a volume
//!   name.
//! - A content object is the lowercase hex SHA-256 of its content; the
//!   zero block's digest is [`ZERO_BLOCK_DIGEST`] and reads as zeros.
//!
//! ## Writability: by owner and epoch, not by flag
//!
//! An entry is writable in place by volume V iff it is
//! `Entry::Owned { owner: V.id, epoch: V.epoch }` and V is neither
//! READONLY nor REMOVED ([`Header::is_writable`]). Everything else —
//! inherited through a clone (another owner), written before V's last
//! snapshot (an older epoch), content, legacy, zero — is copy-on-write:
//! the first write copies it into V's own object and sets the entry to
//! [`Header::own_entry`]. So a snapshot needs no entry rewrite, only an
//! epoch bump.
//!
//! ## Chunks: shared until changed
//!
//! A chunk is never modified once written. Changing an entry
//! ([`set_entry`]) writes a copy of its chunk under the volume's next
//! serial and commits a header pointing at it. The old chunk is either
//! *shared* — another owner's (the volume is a clone), or the volume's
//! own with a serial below `first_private_serial` (a snapshot also refers
//! to it) — and stays, or *private* ([`Header::is_chunk_private`]) and
//! becomes garbage for a collector. Either way the header write is the
//! only commit point. Serials are never reused: `next_serial` only grows,
//! and a snapshot, which shares the volume's id, never writes chunks.
//!
//! ## Operations
//!
//! | operation | writes | header changes |
//! |---|---|---|
//! | create ([`Header::new`]) | header | all chunk refs zero, epoch 1 |
//! | first write to object i | data object, chunk, header (the mapper appends the entry to its [`journal`] instead, and writes chunk and header at a checkpoint) | `chunks[i / 4096]` → fresh serial |
//! | [`snapshot`] | volume header, then snapshot header | volume: epoch + 1, first private = next serial, parent = the snapshot; snapshot: READONLY copy |
//! | [`clone_from`] a snapshot | clone header | new id, epoch 1, the source's chunk refs (+ zero refs if larger), parent = the source |
//! | [`resize`] | (trimmed tail chunk), header | chunk refs appended (zero) or dropped |
//! | [`upgrade`] from v0/v1/v2 | chunks, header | fresh id; all entries copy-on-write |
//! | [`rollback`] to an own snapshot | header | the snapshot's size, chunk refs and HASHED; epoch + 1; first private = next serial; parent = the snapshot |
//! | end of a flatten ([`detach`]) | (chunks of other owners, copied under own serials), header | parent dropped |
//!
//! Who depends on which snapshot (and so keeps it from removal) is
//! [`lineage::dependents`].
//!
//! Lineage: a volume's parent is its latest snapshot (or, before any, what
//! it was cloned from); a snapshot's parent is the volume's previous
//! parent. `(parent id, parent epoch)` names a frozen view; the name is
//! for people. Reads never follow parents: chunks list final objects.
//!
//! ## Crash cases (the store's `write_full` is atomic)
//!
//! | crash after | state | consequence |
//! |---|---|---|
//! | data object written, not the chunk | orphan data object | garbage; the next copy-up rewrites the same name (same id, epoch, index) |
//! | chunk written, not the header | orphan chunk | garbage; the next change rewrites the same serial (the header's `next_serial` did not move) |
//! | snapshot: volume header written, not the snapshot's | no snapshot; the volume's parent names a missing one | nothing corrupted: the old epoch is frozen |
//! | clone, create, resize, upgrade: before the header | orphan chunks at most | the operation did not happen |
//!
//! Torn or corrupted objects fail their checksum: the whole SHA-256 for a
//! header, the first 16 bytes of one for a chunk (covering the whole
//! chunk object, with the checksum field read as zeros).
//!
//! ## Layouts
//!
//! Integers are little-endian except the header's version word (big-endian
//! so that the original's detection rule, §2.5, reads it). Offsets are
//! derived constants in each module; golden-byte tests pin them to these
//! tables. Nothing on storage is a `usize`. `docs/design.md` (section 3)
//! draws a header and a chunk byte by byte, and
//! `tests/design_doc.rs` checks those diagrams against the encoders; it
//! also joins these crash cases to the peers' request flows.
//!
//! **Header** ([`header`]), object `<volume>`:
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | 4 bytes | magic "AMF." |
//! | 4 | u32 BE | version = 3 |
//! | 8 | u64 | size in bytes (positive multiple of 512, ≤ 8 PiB) |
//! | 16 | u32 | object size log2 (12..=30) |
//! | 20 | u32 | flags: bit 0 READONLY, 1 REMOVED, 2 HASHED; others refused |
//! | 24 | u64 | volume id (≠ 0) |
//! | 32 | u64 | epoch |
//! | 40 | u64 | commit sequence (1 for a header's first write, + 1 per rewrite) |
//! | 48 | u64 | next chunk serial (≥ 1) |
//! | 56 | u64 | first private chunk serial (1..=next) |
//! | 64 | u64 | parent volume id (0: none) |
//! | 72 | u64 | parent epoch (0 without a parent) |
//! | 80 | u32 | chunk count `C` = ceil(ceil(size / object size) / 4096) |
//! | 84 | u16 | parent name length `P` (≤ 166) |
//! | 86 | u16 | reserved, 0 |
//! | 88 | `P` bytes | parent name |
//! | 88 + P | `C` × 16 | chunk refs: u64 owner, u64 serial (0/0: zero chunk, no object) |
//! | 88 + P + 16C | 32 bytes | SHA-256 of all bytes before it |
//!
//! **Chunk** ([`chunk`]), object `{owner:016x}_{serial:016x}`:
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | 4 bytes | magic "AMC." |
//! | 4 | u32 | version = 4 (3: the first format, 40-byte entries, still read) |
//! | 8 | u64 | owner id (≠ 0) |
//! | 16 | u64 | serial (≠ 0) |
//! | 24 | u32 | stored entries `n` ≤ 4096 (the rest are zero) |
//! | 28 | u32 | name table bytes `t` |
//! | 32 | 16 bytes | SHA-256 (first 16 bytes) of the object, this field zero |
//! | 48 | 16 bytes | reserved, 0 |
//! | 64 | `n` × 64 (40 in version 3) | entries |
//! | 64 + 64n | `t` bytes | name table: u16 length (1..=123) + name, per name (a partial entry's legacy backing included) |
//!
//! **Entry** ([`entry`]), 64 bytes (the first 40 in a version 3 chunk):
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | u8 | kind: 0 zero, 1 owned, 2 content, 3 legacy, 4 partial (version 4 only); others refused |
//! | 1 | u8 | partial: the backing's kind (0..=3); otherwise reserved, 0 |
//! | 2 | u16, u32 | reserved, 0 |
//! | 8 | 32 bytes | zero: 0 · owned: u64 owner (≠ 0), u64 epoch, 16 × 0 · content: SHA-256 · legacy: u32 name index, 28 × 0 · partial: the backing's, as those |
//! | 40 | u64 | partial: owner of the own object (≠ 0); otherwise 0 |
//! | 48 | u64 | partial: epoch of the own object; otherwise 0 |
//! | 56 | u64 | partial: granule bitmap, bit `i` = granule `i` (of 64, each `object size / 64` bytes) in the own object; never 0 or all ones; otherwise 0 |
//!
//! The original formats' tables are in [`v0`], [`v1`] and [`v2`].
//!
//! ## Change log
//!
//! | version | change |
//! |---|---|
//! | 0 | Pithos hashmap: 32-byte digests, no header (original). |
//! | 1 | 12-byte LE header, 33-byte entries (original). |
//! | 2 | 32-byte BE header "AMF.", 128-byte entries in map-data objects, LE name length (original). |
//! | 3 | This crate: volume ids and epochs name data; chunk table of immutable, checksummed 4096-entry chunks; header checksum and commit sequence; lineage. Replaces the original's unimplemented v3 design (volumes.md §2.7). |
//! | chunk 4 | Sub-object copy-on-write: 64-byte entries with a partial kind (own object, granule bitmap, backing entry). Chunks only: the header keeps version 3 (its layout did not change), and version 3 chunks are still read, so maps of version 3 keep working read-write. |

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod bytes;
pub mod chunk;
mod detect;
pub mod entry;
mod error;
pub mod gcmeta;
pub mod header;
pub mod journal;
mod legacy;
pub mod lineage;
mod ops;
mod upgrade;
pub mod v0;
pub mod v1;
pub mod v2;

pub use chunk::{Chunk, ChunkRef, ENTRIES_PER_CHUNK};
pub use detect::{detect, Detected, DETECT_LEN};
pub use entry::{
    granule_mask, granule_size, granules_covered, granules_touched, owned_object_name, Entry,
    ALL_GRANULES, ENTRY_LEN, GRANULES,
};
pub use error::MapError;
pub use header::{
    chunk_count, Header, HeaderFlags, Parent, DEFAULT_OBJECT_SIZE_LOG2, INITIAL_EPOCH, MAGIC,
    MAX_OBJECT_SIZE_LOG2, MIN_OBJECT_SIZE_LOG2, VERSION,
};
pub use legacy::{
    LegacyEntry, LegacyMap, LEGACY_OBJECT_SIZE, LEGACY_PREFIX, MAX_LEGACY_NAME, ZERO_BLOCK_DIGEST,
    ZERO_BLOCK_NAME,
};
pub use lineage::{detach, rollback};
pub use ops::{clone_from, resize, set_entries, set_entry, snapshot};
pub use upgrade::upgrade;

/// Feeds `bytes` to every decoder and checks what must hold of any input:
/// no panic, and whatever decodes re-encodes to something that decodes
/// the same. For fuzzers and property tests.
#[doc(hidden)]
pub fn fuzz_decoders(bytes: &[u8]) {
    let _ = detect(bytes, false);
    let _ = detect(bytes, true);
    let hint = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let _ = v0::decode(bytes, None);
    let _ = v0::decode(bytes, hint);
    let _ = v1::decode(bytes);
    let _ = v2::decode_header(bytes);
    let _ = v2::decode_entries(bytes);
    let _ = Header::encoded_len_from(bytes);
    if let Ok(h) = Header::decode(bytes) {
        let again = h.encode().expect("a decoded header encodes");
        assert_eq!(again, bytes, "header decoding is exact");
    }
    if let Ok(c) = Chunk::decode(bytes) {
        let again = c.encode().expect("a decoded chunk encodes");
        assert_eq!(Chunk::decode(&again).as_ref(), Ok(&c));
    }
    let names = ["a".to_owned(), "b".to_owned()];
    for e in bytes.chunks(ENTRY_LEN) {
        if let Ok(entry) = Entry::decode(e, &names) {
            let index = names
                .iter()
                .position(|n| entry.legacy_name() == Some(n.as_str()));
            assert_eq!(entry.encode(index.unwrap_or(0) as u32), e);
        }
    }
    if let Ok(m) = v1::decode(bytes) {
        let _ = upgrade(&m, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_zero_block_is_the_sha256_of_nothing() {
        assert_eq!(ZERO_BLOCK_DIGEST, <[u8; 32]>::from(Sha256::digest(b"")));
        assert_eq!(
            ZERO_BLOCK_NAME,
            archipelago_protocol::names::content_name(&ZERO_BLOCK_DIGEST)
        );
    }
}
