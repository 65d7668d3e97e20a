//! What the original formats (v0, v1, v2) decode to: [`LegacyMap`] and
//! [`LegacyEntry`].
//!
//! Old maps are read-only for us: [`v0`](crate::v0), [`v1`](crate::v1)
//! and [`v2`](crate::v2) decode them into these types, a mapper serves
//! them as they are, and [`upgrade`](crate::upgrade) converts them into
//! version 3.

use archipelago_protocol::names;

/// Object size of v0 and v1 maps (fixed; they store none).
pub const LEGACY_OBJECT_SIZE: u64 = 4 << 20;

/// SHA-256 of the empty string: the content name of the all-zero block
/// (content objects are stored without trailing zeros). An entry naming
/// it reads as zeros and is never fetched.
pub const ZERO_BLOCK_DIGEST: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// [`ZERO_BLOCK_DIGEST`] as a name.
pub const ZERO_BLOCK_NAME: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Prefix of v1 writable objects: `archip_` + 64 hex.
pub const LEGACY_PREFIX: &str = "archip_";

/// Longest object name a legacy entry can hold (the v2 entry's name field).
pub const MAX_LEGACY_NAME: usize = 123;

/// One entry of an original map, resolved to what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyEntry {
    /// The data object, or `None` for the zero block (read as zeros, never
    /// fetched).
    pub name: Option<String>,
    /// v2 WRITABLE (v1: flag ≠ 0): the object was private to the volume.
    pub writable: bool,
    /// v2 ARCHIP (v1: flag ≠ 0): the object was created by a mapper
    /// (copy-up), not content-addressed.
    pub archip: bool,
    /// v2 DELETED: the object was removed by a volume destroy.
    pub deleted: bool,
}

impl LegacyEntry {
    /// The zero block.
    pub fn zero() -> Self {
        Self {
            name: None,
            writable: false,
            archip: false,
            deleted: false,
        }
    }

    /// A read-only content (CAS) object, or the zero block if `digest` is
    /// [`ZERO_BLOCK_DIGEST`] (v0/v1 infer ZERO from the name).
    pub fn content(digest: &[u8; 32]) -> Self {
        if *digest == ZERO_BLOCK_DIGEST {
            return Self::zero();
        }
        Self {
            name: Some(names::content_name(digest)),
            ..Self::zero()
        }
    }

    /// The object this entry resolves to (`None` for the zero block).
    pub fn object_name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// An original map, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyMap {
    /// 0, 1 or 2.
    pub version: u32,
    /// Volume size in bytes.
    pub size: u64,
    /// Object size in bytes ([`LEGACY_OBJECT_SIZE`] for v0 and v1).
    pub object_size: u64,
    /// Map flag READONLY (always set for v0, a Pithos image).
    pub readonly: bool,
    /// Map flag DELETED (v2 only).
    pub deleted: bool,
    /// Copy-up epoch (0 for v0 and v1).
    pub epoch: u64,
    /// One entry per object: `ceil(size / object_size)` of them.
    pub entries: Vec<LegacyEntry>,
}

impl LegacyMap {
    /// `ceil(size / object_size)`.
    pub fn nr_objects(&self) -> u64 {
        nr_objects(self.size, self.object_size)
    }
}

/// `ceil(size / object_size)`; `object_size` is never 0 where this is used
/// (decoders validate it), but a 0 gives 0 rather than a panic.
pub(crate) fn nr_objects(size: u64, object_size: u64) -> u64 {
    size.checked_div(object_size)
        .map_or(0, |q| if size % object_size == 0 { q } else { q + 1 })
}
