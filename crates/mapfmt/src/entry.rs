//! Version 3 entries: what backs one object of a volume, in 40 bytes.
//!
//! The byte layout is the **Entry** table of the [crate docs](crate#layouts),
//! derived by the offset constants below. Decoders refuse unknown kinds
//! and nonzero reserved or padding bytes, so a future flag is noticed
//! rather than ignored.

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
/// Bytes per entry.
pub const ENTRY_LEN: usize = PAYLOAD_OFF + PAYLOAD_LEN;

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

const WHAT: &str = "v3 entry";

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

    /// Canonical form: the zero-block content becomes [`Entry::Zero`].
    pub(crate) fn canonical(self) -> Self {
        match self {
            Self::Content(d) => Self::content(d),
            e => e,
        }
    }

    /// The kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Zero => KIND_ZERO,
            Self::Owned { .. } => KIND_OWNED,
            Self::Content(_) => KIND_CONTENT,
            Self::Legacy(_) => KIND_LEGACY,
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
    /// `None` if it reads as zeros ([`is_zero`](Self::is_zero)).
    pub fn object_name(&self, index: u64) -> Option<String> {
        if self.is_zero() {
            return None;
        }
        match self {
            Self::Zero => None,
            Self::Owned { owner, epoch } => Some(owned_object_name(*owner, *epoch, index)),
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
            _ => Ok(()),
        }
    }

    /// Encodes the entry; `legacy_name_index` is written for a legacy
    /// entry and ignored otherwise. Does not [`validate`](Self::validate).
    pub fn encode(&self, legacy_name_index: u32) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        put(&mut out, KIND_OFF, &[self.kind()]);
        match self {
            Self::Zero => {}
            Self::Owned { owner, epoch } => {
                put(&mut out, OWNER_OFF, &owner.to_le_bytes());
                put(&mut out, EPOCH_OFF, &epoch.to_le_bytes());
            }
            Self::Content(d) => put(&mut out, PAYLOAD_OFF, d),
            Self::Legacy(_) => put(&mut out, NAME_INDEX_OFF, &legacy_name_index.to_le_bytes()),
        }
        out
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
        decode_at(bytes, names, 0, 0)
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

/// Decodes the entry at the start of `bytes` (at least [`ENTRY_LEN`]),
/// entry number `index`, `base` bytes into its structure (for errors).
pub(crate) fn decode_at(
    bytes: &[u8],
    names: &[String],
    index: u64,
    base: u64,
) -> Result<Entry, MapError> {
    let f = Fields::new(bytes, WHAT);
    f.need(ENTRY_LEN as u64)?;
    f.zeros(RESERVED8_OFF, PAYLOAD_OFF - RESERVED8_OFF, base)?;
    let kind = f.u8(KIND_OFF)?;
    let entry = match kind {
        KIND_ZERO => {
            f.zeros(PAYLOAD_OFF, PAYLOAD_LEN, base)?;
            Entry::Zero
        }
        KIND_OWNED => {
            f.zeros(OWNED_PAD_OFF, ENTRY_LEN - OWNED_PAD_OFF, base)?;
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
            f.zeros(LEGACY_PAD_OFF, ENTRY_LEN - LEGACY_PAD_OFF, base)?;
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
                ENTRY_LEN
            ),
            (1, 2, 4, 8, 40)
        );
        assert_eq!((EPOCH_OFF, OWNED_PAD_OFF, LEGACY_PAD_OFF), (16, 24, 12));
    }

    #[test]
    fn golden_bytes_of_each_kind() {
        assert_eq!(Entry::Zero.encode(7), [0u8; 40]);

        let owned = Entry::Owned {
            owner: 0x0102_0304_0506_0708,
            epoch: 0x1a1b,
        }
        .encode(0);
        let mut golden = [0u8; 40];
        golden[0] = 1;
        golden[8..16].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        golden[16..18].copy_from_slice(&[0x1b, 0x1a]);
        assert_eq!(owned, golden);

        let digest: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
        let content = Entry::Content(digest).encode(0);
        assert_eq!(content[..8], [2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(content[8..], digest);

        let legacy = Entry::Legacy("archip_x".into()).encode(0x0403_0201);
        let mut golden = [0u8; 40];
        golden[0] = 3;
        golden[8..12].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(legacy, golden);
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
        b[0] = 4;
        assert!(matches!(
            Entry::decode(&b, &names),
            Err(MapError::BadEntryKind { kind: 4, .. })
        ));
        let b = Entry::Owned { owner: 0, epoch: 3 }.encode(0);
        assert!(matches!(
            Entry::decode(&b, &names),
            Err(MapError::BadVolumeId { .. })
        ));
        assert!(matches!(
            Entry::decode(&[0; 39], &names),
            Err(MapError::Truncated { .. })
        ));
        assert!(matches!(
            Entry::decode(&[0; 41], &names),
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
