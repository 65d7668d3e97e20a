//! Entries: what backs one object of a volume, in 64 bytes (chunk
//! version 4; version 3 chunks hold 40-byte entries, the same fields
//! without the partial part, and are still read).
//!
//! The byte layout is the **Entry** table of the [crate docs](crate#layouts),
//! derived by the offset constants below. Decoders refuse unknown kinds
//! and nonzero reserved or padding bytes, so a future flag is noticed
//! rather than ignored.
//!
//! A **partial** entry (kind 4, version 4) is sub-object copy-on-write: the
//! volume's own object holds only some of the object's [`GRANULES`]
//! granules (those a write touched), and the rest read from the entry it
//! replaced, its *backing*, which is stored in the payload as the entry
//! itself would be (its kind in byte 1).

use crate::bytes::{put, Fields};
use crate::legacy::{MAX_LEGACY_NAME, ZERO_BLOCK_DIGEST};
use crate::MapError;
use archipelago_protocol::names;

/// Offset of the kind byte.
pub const KIND_OFF: usize = 0;
/// Offset of the reserved u8.
pub const RESERVED8_OFF: usize = KIND_OFF + size_of::<u8>();
/// Offset of the reserved u16.
pub const RESERVED16_OFF: usize = RESERVED8_OFF + size_of::<u8>();
/// Offset of the reserved u32.
pub const RESERVED32_OFF: usize = RESERVED16_OFF + size_of::<u16>();
/// Offset of the payload.
pub const PAYLOAD_OFF: usize = RESERVED32_OFF + size_of::<u32>();
/// Payload length.
pub const PAYLOAD_LEN: usize = 32;
/// Bytes per entry in a version 3 chunk.
pub const ENTRY_LEN_V3: usize = PAYLOAD_OFF + PAYLOAD_LEN;
/// Partial: offset of the own object's owner id (u64).
pub const PARTIAL_OWNER_OFF: usize = ENTRY_LEN_V3;
/// Partial: offset of the own object's epoch (u64).
pub const PARTIAL_EPOCH_OFF: usize = PARTIAL_OWNER_OFF + size_of::<u64>();
/// Partial: offset of the granule bitmap (u64).
pub const GRANULES_OFF: usize = PARTIAL_EPOCH_OFF + size_of::<u64>();
/// Bytes per entry (version 4).
pub const ENTRY_LEN: usize = GRANULES_OFF + size_of::<u64>();
/// Partial: offset of the backing's kind (the reserved u8 of version 3).
pub const BACKING_KIND_OFF: usize = RESERVED8_OFF;

/// Most granules per object: a partial entry's bitmap has a bit for
/// each. A granule is `object size / GRANULES` bytes (64 KiB of a 4 MiB
/// object), but at least [`MIN_GRANULE`]: objects under 256 KiB have
/// fewer granules.
pub const GRANULES: u32 = 64;
/// The smallest granule: 4 KiB, so that a granule boundary is never
/// closer than the smallest object's and a map reply needs no more
/// extents than without partial entries.
pub const MIN_GRANULE: u64 = 4096;
/// The bitmap of 64 granules, every one held (never stored: that is an
/// owned entry).
pub const ALL_GRANULES: u64 = u64::MAX;

/// Bytes per granule of an object of `object_size` bytes (a power of two
/// of at least 4 KiB).
pub fn granule_size(object_size: u64) -> u64 {
    (object_size / u64::from(GRANULES))
        .max(MIN_GRANULE)
        .min(object_size)
}

/// The bitmap with a bit for every granule of an object of `object_size`
/// bytes: what a partial entry holding them all would have (it is an
/// owned entry instead).
pub fn granule_mask(object_size: u64) -> u64 {
    let n = object_size / granule_size(object_size);
    if n >= 64 {
        ALL_GRANULES
    } else {
        (1u64 << n) - 1
    }
}

/// The bitmap of the granules that `[offset, offset + len)` of an object
/// of `object_size` bytes touches (`len` > 0).
pub fn granules_touched(object_size: u64, offset: u64, len: u64) -> u64 {
    let g = granule_size(object_size);
    let (first, last) = (offset / g, (offset + len - 1) / g);
    bits(first, last)
}

/// The bitmap of the granules that `[offset, offset + len)` covers whole.
pub fn granules_covered(object_size: u64, offset: u64, len: u64) -> u64 {
    let g = granule_size(object_size);
    let first = offset.div_ceil(g);
    let end = (offset + len) / g;
    if end <= first {
        0
    } else {
        bits(first, end - 1)
    }
}

/// Bits `first..=last` set (both below 64).
fn bits(first: u64, last: u64) -> u64 {
    let upto = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    upto & !((1u64 << first) - 1)
}

/// Owned: offset of the owner id (u64).
pub const OWNER_OFF: usize = PAYLOAD_OFF;
/// Owned: offset of the epoch (u64).
pub const EPOCH_OFF: usize = OWNER_OFF + size_of::<u64>();
/// Owned: offset of the zero padding.
pub const OWNED_PAD_OFF: usize = EPOCH_OFF + size_of::<u64>();
/// Legacy: offset of the name index (u32).
pub const NAME_INDEX_OFF: usize = PAYLOAD_OFF;
/// Legacy: offset of the zero padding.
pub const LEGACY_PAD_OFF: usize = NAME_INDEX_OFF + size_of::<u32>();

/// Kind 0: the object reads as zeros and is never stored.
pub const KIND_ZERO: u8 = 0;
/// Kind 1: a data object written by a volume (see [`Entry::Owned`]).
pub const KIND_OWNED: u8 = 1;
/// Kind 2: a content-addressed object.
pub const KIND_CONTENT: u8 = 2;
/// Kind 3: an object of an upgraded v1/v2 map, by name.
pub const KIND_LEGACY: u8 = 3;
/// Kind 4: some granules in the volume's own object, the rest in the
/// backing entry (see [`Entry::Partial`]; version 4 chunks only).
pub const KIND_PARTIAL: u8 = 4;

const WHAT: &str = "entry";

/// What backs one object of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Entry {
    /// Unallocated: reads as zeros, never stored.
    Zero,
    /// A data object written by the volume `owner` in its epoch `epoch`,
    /// named `{owner:016x}_{epoch:016x}_{index:016x}`. Writable in place
    /// only by that volume while it is still in that epoch
    /// ([`Header::is_writable`](crate::Header::is_writable)).
    Owned {
        /// Volume id of the writer (never 0).
        owner: u64,
        /// The writer's epoch when it wrote.
        epoch: u64,
    },
    /// A content object, named by the lowercase hex of its SHA-256.
    /// Always copy-on-write.
    Content([u8; 32]),
    /// An object of an upgraded v1/v2 map, by its name (at most 123
    /// bytes, in the protocol's object-name grammar). Always copy-on-write.
    Legacy(String),
    /// Sub-object copy-on-write: the granules set in `granules` are in
    /// the object `owner` wrote in `epoch` (named as for
    /// [`Entry::Owned`]); the others read as `backing` (never itself
    /// partial). Never every granule (that is [`Entry::Owned`]) nor none
    /// (that is the backing): [`Entry::partial`] builds the canonical
    /// form.
    Partial {
        /// Volume id of the writer of the own object (never 0).
        owner: u64,
        /// The writer's epoch when it wrote.
        epoch: u64,
        /// Bit `i`: granule `i` is in the own object.
        granules: u64,
        /// What the other granules read as.
        backing: Box<Entry>,
    },
}

impl Entry {
    /// A content entry; the zero block's digest gives [`Entry::Zero`]
    /// (that content is all zeros and is not stored).
    pub fn content(digest: [u8; 32]) -> Self {
        if digest == ZERO_BLOCK_DIGEST {
            Self::Zero
        } else {
            Self::Content(digest)
        }
    }

    /// The entry of an object whose granules `granules` are in the
    /// object `owner` wrote in `epoch` and the rest read as `backing`
    /// (if that is partial itself, as its backing, the granules it holds
    /// staying in its own object: the caller merges them first): owned
    /// with every granule of `all` (the object's [`granule_mask`]), the
    /// backing with none, else partial.
    pub fn partial(owner: u64, epoch: u64, granules: u64, backing: Entry, all: u64) -> Self {
        let backing = match backing {
            Self::Partial { backing, .. } => *backing,
            b => b,
        };
        let granules = granules & all;
        match granules {
            0 => backing,
            g if g == all => Self::Owned { owner, epoch },
            _ => Self::Partial {
                owner,
                epoch,
                granules,
                backing: Box::new(backing.canonical()),
            },
        }
    }

    /// Canonical form: the zero-block content becomes [`Entry::Zero`];
    /// a partial entry with every granule or none is owned or its
    /// backing.
    pub(crate) fn canonical(self) -> Self {
        match self {
            Self::Content(d) => Self::content(d),
            Self::Partial {
                owner,
                epoch,
                granules,
                backing,
            } => Self::partial(owner, epoch, granules, *backing, ALL_GRANULES),
            e => e,
        }
    }

    /// What the object's granules not in its own object read as: the
    /// backing of a partial entry, `None` for every other kind.
    pub fn backing(&self) -> Option<&Entry> {
        match self {
            Self::Partial { backing, .. } => Some(backing),
            _ => None,
        }
    }

    /// The data objects the entry reads from for object `index`: its
    /// own (owned, content, legacy; a partial entry's own object) and a
    /// partial entry's backing object, if any.
    pub fn object_names(&self, index: u64) -> Vec<String> {
        let mut out: Vec<String> = self.object_name(index).into_iter().collect();
        if let Some(b) = self.backing() {
            out.extend(b.object_name(index));
        }
        out
    }

    /// The kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Zero => KIND_ZERO,
            Self::Owned { .. } => KIND_OWNED,
            Self::Content(_) => KIND_CONTENT,
            Self::Legacy(_) => KIND_LEGACY,
            Self::Partial { .. } => KIND_PARTIAL,
        }
    }

    /// Whether the object reads as zeros without being fetched: `Zero`, or
    /// the zero block's content.
    pub fn is_zero(&self) -> bool {
        match self {
            Self::Zero => true,
            Self::Content(d) => *d == ZERO_BLOCK_DIGEST,
            _ => false,
        }
    }

    /// Name of the data object backing object `index` of the volume, or
    /// `None` if it reads as zeros ([`is_zero`](Self::is_zero)). For a
    /// partial entry, its own object (holding only some granules: see
    /// [`backing`](Self::backing) and [`object_names`](Self::object_names)).
    pub fn object_name(&self, index: u64) -> Option<String> {
        if self.is_zero() {
            return None;
        }
        match self {
            Self::Zero => None,
            Self::Owned { owner, epoch } | Self::Partial { owner, epoch, .. } => {
                Some(owned_object_name(*owner, *epoch, index))
            }
            Self::Content(d) => Some(names::content_name(d)),
            Self::Legacy(name) => Some(name.clone()),
        }
    }

    /// Checks what the type cannot: an owner is not 0; a legacy name is
    /// 1..=123 bytes of the object-name grammar.
    pub fn validate(&self) -> Result<(), MapError> {
        match self {
            Self::Owned { owner: 0, .. } => Err(MapError::BadVolumeId {
                what: "owned entry's owner",
                id: 0,
            }),
            Self::Legacy(name) => check_legacy_name(name.as_bytes()).map(|_| ()),
            Self::Partial {
                owner,
                granules,
                backing,
                ..
            } => {
                if *owner == 0 {
                    return Err(MapError::BadVolumeId {
                        what: "partial entry's owner",
                        id: 0,
                    });
                }
                if matches!(**backing, Self::Partial { .. })
                    || *granules == 0
                    || *granules == ALL_GRANULES
                {
                    return Err(MapError::BadPartial {
                        granules: *granules,
                    });
                }
                backing.validate()
            }
            _ => Ok(()),
        }
    }

    /// Encodes the entry; `legacy_name_index` is written for a legacy
    /// entry (or a partial entry's legacy backing) and ignored otherwise.
    /// Does not [`validate`](Self::validate).
    pub fn encode(&self, legacy_name_index: u32) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        put(&mut out, KIND_OFF, &[self.kind()]);
        self.encode_payload(&mut out, legacy_name_index);
        if let Self::Partial {
            owner,
            epoch,
            granules,
            backing,
        } = self
        {
            put(&mut out, BACKING_KIND_OFF, &[backing.kind()]);
            backing.encode_payload(&mut out, legacy_name_index);
            put(&mut out, PARTIAL_OWNER_OFF, &owner.to_le_bytes());
            put(&mut out, PARTIAL_EPOCH_OFF, &epoch.to_le_bytes());
            put(&mut out, GRANULES_OFF, &granules.to_le_bytes());
        }
        out
    }

    /// The payload bytes (8..40) of the kinds that have one.
    fn encode_payload(&self, out: &mut [u8; ENTRY_LEN], legacy_name_index: u32) {
        match self {
            Self::Zero | Self::Partial { .. } => {}
            Self::Owned { owner, epoch } => {
                put(out, OWNER_OFF, &owner.to_le_bytes());
                put(out, EPOCH_OFF, &epoch.to_le_bytes());
            }
            Self::Content(d) => put(out, PAYLOAD_OFF, d),
            Self::Legacy(_) => put(out, NAME_INDEX_OFF, &legacy_name_index.to_le_bytes()),
        }
    }

    /// The legacy name this entry's encoding refers to by index: its own
    /// or its backing's.
    pub(crate) fn legacy_name(&self) -> Option<&str> {
        match self {
            Self::Legacy(name) => Some(name),
            Self::Partial { backing, .. } => backing.legacy_name(),
            _ => None,
        }
    }

    /// Decodes one entry (exactly [`ENTRY_LEN`] bytes), resolving a legacy
    /// entry's name through `names`, the chunk's name table.
    pub fn decode(bytes: &[u8], names: &[String]) -> Result<Self, MapError> {
        if bytes.len() != ENTRY_LEN {
            return Err(if bytes.len() < ENTRY_LEN {
                MapError::Truncated {
                    what: WHAT,
                    need: ENTRY_LEN as u64,
                    have: bytes.len() as u64,
                }
            } else {
                MapError::TrailingBytes {
                    what: WHAT,
                    expected: ENTRY_LEN as u64,
                    have: bytes.len() as u64,
                }
            });
        }
        decode_at(bytes, names, 0, 0, ENTRY_LEN)
    }
}

/// Name of the data object a volume `owner` wrote for object `index` in
/// epoch `epoch`: `{owner:016x}_{epoch:016x}_{index:016x}` (50 bytes).
pub fn owned_object_name(owner: u64, epoch: u64, index: u64) -> String {
    names::data_object_name(&format!("{owner:016x}"), epoch, index)
}

/// Checks a legacy object name (length and grammar) and returns it as a
/// `&str`.
pub(crate) fn check_legacy_name(name: &[u8]) -> Result<&str, MapError> {
    if name.len() > MAX_LEGACY_NAME {
        return Err(MapError::NameTooLong {
            what: "legacy object name",
            len: name.len() as u64,
            max: MAX_LEGACY_NAME as u64,
        });
    }
    names::check_object_name(name).map_err(|source| MapError::BadName {
        what: "legacy object name",
        source,
    })
}

/// Decodes the entry at the start of `bytes`, entry number `index`, `base`
/// bytes into its structure (for errors); `len` is the entry size of the
/// chunk's version ([`ENTRY_LEN_V3`] or [`ENTRY_LEN`]), and only version
/// 4 entries may be partial.
pub(crate) fn decode_at(
    bytes: &[u8],
    names: &[String],
    index: u64,
    base: u64,
    len: usize,
) -> Result<Entry, MapError> {
    let f = Fields::new(bytes, WHAT);
    f.need(len as u64)?;
    let kind = f.u8(KIND_OFF)?;
    if kind != KIND_PARTIAL || len == ENTRY_LEN_V3 {
        if len > ENTRY_LEN_V3 {
            f.zeros(ENTRY_LEN_V3, len - ENTRY_LEN_V3, base)?;
        }
        return decode_kind(&f, kind, names, index, base);
    }
    let backing_kind = f.u8(BACKING_KIND_OFF)?;
    if backing_kind == KIND_PARTIAL {
        return Err(MapError::BadEntryKind {
            index,
            kind: backing_kind,
        });
    }
    let backing = decode_kind(&f, backing_kind, names, index, base)?;
    let entry = Entry::Partial {
        owner: f.u64_le(PARTIAL_OWNER_OFF)?,
        epoch: f.u64_le(PARTIAL_EPOCH_OFF)?,
        granules: f.u64_le(GRANULES_OFF)?,
        backing: Box::new(backing),
    };
    entry.validate()?;
    Ok(entry)
}

/// Decodes bytes 0..40 as an entry of `kind` (the kind byte itself, or a
/// partial entry's backing kind): reserved bytes 2..8 zero, and byte 1
/// too for every kind but partial.
fn decode_kind(
    f: &Fields<'_>,
    kind: u8,
    names: &[String],
    index: u64,
    base: u64,
) -> Result<Entry, MapError> {
    let reserved_from = if f.u8(KIND_OFF)? == KIND_PARTIAL {
        RESERVED16_OFF
    } else {
        RESERVED8_OFF
    };
    f.zeros(reserved_from, PAYLOAD_OFF - reserved_from, base)?;
    let entry = match kind {
        KIND_ZERO => {
            f.zeros(PAYLOAD_OFF, PAYLOAD_LEN, base)?;
            Entry::Zero
        }
        KIND_OWNED => {
            f.zeros(OWNED_PAD_OFF, ENTRY_LEN_V3 - OWNED_PAD_OFF, base)?;
            let owner = f.u64_le(OWNER_OFF)?;
            if owner == 0 {
                return Err(MapError::BadVolumeId {
                    what: "owned entry's owner",
                    id: 0,
                });
            }
            Entry::Owned {
                owner,
                epoch: f.u64_le(EPOCH_OFF)?,
            }
        }
        KIND_CONTENT => Entry::Content(f.array(PAYLOAD_OFF)?),
        KIND_LEGACY => {
            f.zeros(LEGACY_PAD_OFF, ENTRY_LEN_V3 - LEGACY_PAD_OFF, base)?;
            let name_index = f.u32_le(NAME_INDEX_OFF)?;
            let name = names
                .get(name_index as usize)
                .ok_or(MapError::BadNameIndex {
                    entry: index,
                    name_index,
                    names: names.len() as u64,
                })?;
            Entry::Legacy(name.clone())
        }
        kind => return Err(MapError::BadEntryKind { index, kind }),
    };
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_the_documented_ones() {
        assert_eq!(
            (
                RESERVED8_OFF,
                RESERVED16_OFF,
                RESERVED32_OFF,
                PAYLOAD_OFF,
                ENTRY_LEN_V3
            ),
            (1, 2, 4, 8, 40)
        );
        assert_eq!((EPOCH_OFF, OWNED_PAD_OFF, LEGACY_PAD_OFF), (16, 24, 12));
        assert_eq!(
            (
                BACKING_KIND_OFF,
                PARTIAL_OWNER_OFF,
                PARTIAL_EPOCH_OFF,
                GRANULES_OFF,
                ENTRY_LEN
            ),
            (1, 40, 48, 56, 64)
        );
    }

    #[test]
    fn granule_bitmaps() {
        let os = 4 << 20; // 64 KiB granules
        assert_eq!(granule_size(os), 64 << 10);
        assert_eq!(granule_mask(os), ALL_GRANULES);
        // Granules are at least 4 KiB: fewer of them in small objects.
        assert_eq!((granule_size(4096), granule_mask(4096)), (4096, 1));
        assert_eq!(
            (granule_size(64 << 10), granule_mask(64 << 10)),
            (4096, 0xffff)
        );
        assert_eq!(granule_size(1 << 30), 16 << 20);
        assert_eq!(granules_touched(os, 0, 1), 1);
        assert_eq!(granules_touched(os, 65535, 2), 0b11);
        assert_eq!(granules_touched(os, 0, os), ALL_GRANULES);
        assert_eq!(granules_touched(os, os - 1, 1), 1 << 63);
        assert_eq!(granules_covered(os, 0, 4096), 0);
        assert_eq!(granules_covered(os, 0, 64 << 10), 1);
        assert_eq!(granules_covered(os, 1, 128 << 10), 0b10 & 0b10);
        assert_eq!(granules_covered(os, 0, os), ALL_GRANULES);
        assert_eq!(granules_covered(os, 4096, os - 4096), ALL_GRANULES & !1);
    }

    #[test]
    fn a_partial_entry_is_canonical_or_refused() {
        let backing = Entry::Content([7; 32]);
        assert_eq!(
            Entry::partial(5, 2, 0, backing.clone(), ALL_GRANULES),
            backing
        );
        assert_eq!(
            Entry::partial(5, 2, ALL_GRANULES, backing.clone(), ALL_GRANULES),
            Entry::Owned { owner: 5, epoch: 2 }
        );
        let p = Entry::partial(5, 2, 0b101, backing.clone(), ALL_GRANULES);
        assert_eq!(
            Entry::partial(5, 2, 0b11, backing.clone(), 0b11),
            Entry::Owned { owner: 5, epoch: 2 }
        );
        assert_eq!(p.backing(), Some(&backing));
        assert_eq!(
            p.object_names(3),
            vec![owned_object_name(5, 2, 3), names::content_name(&[7; 32])]
        );
        // A partial backing is replaced by its own backing.
        let again = Entry::partial(6, 1, 0b1, p.clone(), ALL_GRANULES);
        assert_eq!(again.backing(), Some(&backing));
        for bad in [0, ALL_GRANULES] {
            let e = Entry::Partial {
                owner: 5,
                epoch: 2,
                granules: bad,
                backing: Box::new(backing.clone()),
            };
            assert!(matches!(e.validate(), Err(MapError::BadPartial { .. })));
            assert!(Entry::decode(&e.encode(0), &[]).is_err());
        }
    }

    #[test]
    fn golden_bytes_of_each_kind() {
        assert_eq!(Entry::Zero.encode(7), [0u8; 64]);

        let owned = Entry::Owned {
            owner: 0x0102_0304_0506_0708,
            epoch: 0x1a1b,
        }
        .encode(0);
        let mut golden = [0u8; 64];
        golden[0] = 1;
        golden[8..16].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        golden[16..18].copy_from_slice(&[0x1b, 0x1a]);
        assert_eq!(owned, golden);

        let digest: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
        let content = Entry::Content(digest).encode(0);
        assert_eq!(content[..8], [2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(content[8..40], digest);
        assert_eq!(content[40..], [0; 24]);

        let legacy = Entry::Legacy("archip_x".into()).encode(0x0403_0201);
        let mut golden = [0u8; 64];
        golden[0] = 3;
        golden[8..12].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(legacy, golden);

        // Partial: the backing as its own encoding (kind in byte 1), then
        // the own object's owner and epoch and the granule bitmap.
        let partial = Entry::partial(
            0x0102_0304_0506_0708,
            3,
            0b1001,
            Entry::Legacy("archip_x".into()),
            ALL_GRANULES,
        )
        .encode(0x0403_0201);
        let mut golden = [0u8; 64];
        golden[0] = 4;
        golden[1] = 3;
        golden[8..12].copy_from_slice(&[1, 2, 3, 4]);
        golden[40..48].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        golden[48] = 3;
        golden[56] = 0b1001;
        assert_eq!(partial, golden);
    }

    #[test]
    fn partial_entries_round_trip_and_only_in_version_4() {
        let names = vec!["archip_x".to_string()];
        for backing in [
            Entry::Zero,
            Entry::Owned { owner: 9, epoch: 1 },
            Entry::Content([3; 32]),
            Entry::Legacy("archip_x".into()),
        ] {
            let p = Entry::partial(5, 2, 0xf0, backing, ALL_GRANULES);
            assert_eq!(Entry::decode(&p.encode(0), &names).unwrap(), p);
            // A version 3 chunk knows no kind 4.
            let raw = p.encode(0);
            assert!(matches!(
                decode_at(&raw[..ENTRY_LEN_V3], &names, 0, 0, ENTRY_LEN_V3),
                Err(MapError::BadEntryKind { kind: 4, .. })
            ));
        }
        // Byte 1 is the backing kind of a partial entry only; the partial
        // fields are zero for the other kinds.
        let mut b = Entry::Content([3; 32]).encode(0);
        b[1] = 2;
        assert!(Entry::decode(&b, &names).is_err());
        let mut b = Entry::Content([3; 32]).encode(0);
        b[GRANULES_OFF] = 1;
        assert!(Entry::decode(&b, &names).is_err());
        let mut b = Entry::partial(5, 2, 1, Entry::Zero, ALL_GRANULES).encode(0);
        b[BACKING_KIND_OFF] = KIND_PARTIAL;
        assert!(Entry::decode(&b, &names).is_err());
        let mut b = Entry::partial(5, 2, 1, Entry::Zero, ALL_GRANULES).encode(0);
        b[PARTIAL_OWNER_OFF..PARTIAL_OWNER_OFF + 8].fill(0);
        assert!(Entry::decode(&b, &names).is_err());
    }

    #[test]
    fn decoding_resolves_names_and_refuses_what_it_does_not_know() {
        let names = vec!["a".to_string(), "b".to_string()];
        for e in [
            Entry::Zero,
            Entry::Owned { owner: 5, epoch: 0 },
            Entry::Content([9; 32]),
        ] {
            assert_eq!(Entry::decode(&e.encode(0), &names).unwrap(), e);
        }
        let legacy = Entry::Legacy("b".into()).encode(1);
        assert_eq!(
            Entry::decode(&legacy, &names).unwrap(),
            Entry::Legacy("b".into())
        );
        assert!(matches!(
            Entry::decode(&legacy, &names[..1]),
            Err(MapError::BadNameIndex {
                name_index: 1,
                names: 1,
                ..
            })
        ));
        for off in 1..8 {
            let mut b = Entry::Zero.encode(0);
            b[off] = 1;
            assert_eq!(
                Entry::decode(&b, &names),
                Err(MapError::BadReserved {
                    what: WHAT,
                    offset: off as u64
                })
            );
        }
        let mut b = Entry::Owned { owner: 5, epoch: 0 }.encode(0);
        b[39] = 1;
        assert!(matches!(
            Entry::decode(&b, &names),
            Err(MapError::BadReserved { offset: 39, .. })
        ));
        let mut b = Entry::Zero.encode(0);
        b[8] = 1;
        assert!(matches!(
            Entry::decode(&b, &names),
            Err(MapError::BadReserved { offset: 8, .. })
        ));
        let mut b = legacy;
        b[12] = 1;
        assert!(matches!(
            Entry::decode(&b, &names),
            Err(MapError::BadReserved { offset: 12, .. })
        ));
        let mut b = Entry::Zero.encode(0);
        b[0] = 5;
        assert!(matches!(
            Entry::decode(&b, &names),
            Err(MapError::BadEntryKind { kind: 5, .. })
        ));
        let b = Entry::Owned { owner: 0, epoch: 3 }.encode(0);
        assert!(matches!(
            Entry::decode(&b, &names),
            Err(MapError::BadVolumeId { .. })
        ));
        assert!(matches!(
            Entry::decode(&[0; 63], &names),
            Err(MapError::Truncated { .. })
        ));
        assert!(matches!(
            Entry::decode(&[0; 65], &names),
            Err(MapError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn object_names_follow_the_kind() {
        assert_eq!(Entry::Zero.object_name(3), None);
        assert_eq!(
            Entry::Owned {
                owner: 0xab,
                epoch: 2
            }
            .object_name(31)
            .unwrap(),
            "00000000000000ab_0000000000000002_000000000000001f"
        );
        assert_eq!(
            Entry::Content([0x5a; 32]).object_name(0).unwrap(),
            "5a".repeat(32)
        );
        assert_eq!(
            Entry::Legacy("old_obj".into()).object_name(9).unwrap(),
            "old_obj"
        );
        let zero_block = Entry::Content(ZERO_BLOCK_DIGEST);
        assert!(zero_block.is_zero());
        assert_eq!(zero_block.object_name(0), None);
        assert_eq!(Entry::content(ZERO_BLOCK_DIGEST), Entry::Zero);
        assert_eq!(Entry::content([1; 32]), Entry::Content([1; 32]));
    }

    #[test]
    fn validation_checks_owner_and_legacy_names() {
        assert!(Entry::Owned { owner: 0, epoch: 1 }.validate().is_err());
        assert!(Entry::Legacy(String::new()).validate().is_err());
        assert!(Entry::Legacy("a/b".into()).validate().is_err());
        assert!(Entry::Legacy("n".repeat(124)).validate().is_err());
        assert!(Entry::Legacy("n".repeat(123)).validate().is_ok());
        assert!(Entry::Legacy(format!("archip_{}", "0".repeat(64)))
            .validate()
            .is_ok());
    }
}
