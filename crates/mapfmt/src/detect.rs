//! Which format a map object is in, from its first bytes (volumes.md §2.5).

use crate::{v1, v2, MapError, MAGIC, VERSION};

/// Bytes [`detect`] needs to tell every format apart: the magic and the
/// version word.
pub const DETECT_LEN: usize = 8;

/// A map format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detected {
    /// Pithos hashmap ([`v0`](crate::v0)).
    V0,
    /// [`v1`](crate::v1).
    V1,
    /// [`v2`](crate::v2).
    V2,
    /// Our format ([`Header`](crate::Header)).
    V3,
}

impl Detected {
    /// The version number.
    pub fn version(self) -> u32 {
        match self {
            Self::V0 => 0,
            Self::V1 => 1,
            Self::V2 => 2,
            Self::V3 => VERSION,
        }
    }

    /// Whether this is an original format (read-only for us).
    pub fn is_legacy(self) -> bool {
        self != Self::V3
    }
}

/// Detects the format of the map whose object starts with `first_bytes`,
/// as the original's `load_map_metadata` does:
///
/// 1. the first 4 bytes are "AMF." → the version is the big-endian u32 at
///    byte 4: 2 is [`Detected::V2`], 3 is [`Detected::V3`], anything else
///    is [`MapError::UnsupportedVersion`];
/// 2. else, if the caller assumes v0 (`XF_ASSUMEV0`) → [`Detected::V0`];
/// 3. else, if the first 4 bytes are the little-endian u32 1 →
///    [`Detected::V1`];
/// 4. else [`MapError::UnknownFormat`].
///
/// Whether the object exists at all (the original's step 0, a short read)
/// is the caller's business. Fewer than 4 bytes (8 after "AMF.") are
/// [`MapError::Truncated`] unless v0 is assumed.
pub fn detect(first_bytes: &[u8], assume_v0: bool) -> Result<Detected, MapError> {
    let what = "map object";
    if first_bytes.starts_with(&MAGIC) {
        let Some(word) = first_bytes.get(4..DETECT_LEN) else {
            return Err(MapError::Truncated {
                what,
                need: DETECT_LEN as u64,
                have: first_bytes.len() as u64,
            });
        };
        let version = u32::from_be_bytes(word.try_into().expect("4 bytes"));
        return match version {
            v2::VERSION => Ok(Detected::V2),
            VERSION => Ok(Detected::V3),
            _ => Err(MapError::UnsupportedVersion { what, version }),
        };
    }
    if assume_v0 {
        return Ok(Detected::V0);
    }
    match first_bytes.get(..4) {
        None => Err(MapError::Truncated {
            what,
            need: 4,
            have: first_bytes.len() as u64,
        }),
        Some(w) if w == v1::VERSION.to_le_bytes() => Ok(Detected::V1),
        Some(_) => Err(MapError::UnknownFormat(
            first_bytes[..first_bytes.len().min(DETECT_LEN)].to_vec(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_follows_the_original_rules_in_order() {
        let v2 = v2::encode_header(&v2::V2Header {
            size: 4096,
            blocksize: 4096,
            readonly: false,
            deleted: false,
            epoch: 1,
        });
        assert_eq!(detect(&v2, false), Ok(Detected::V2));
        assert_eq!(detect(&v2, true), Ok(Detected::V2), "AMF. wins over v0");
        let v3 = [b'A', b'M', b'F', b'.', 0, 0, 0, 3];
        assert_eq!(detect(&v3, false), Ok(Detected::V3));
        assert_eq!(detect(&v3, true).unwrap().version(), 3);
        assert!(matches!(
            detect(&[b'A', b'M', b'F', b'.', 0, 0, 0, 4], false),
            Err(MapError::UnsupportedVersion { version: 4, .. })
        ));
        // A little-endian version word after AMF. is not ours either.
        assert!(matches!(
            detect(&[b'A', b'M', b'F', b'.', 3, 0, 0, 0], false),
            Err(MapError::UnsupportedVersion {
                version: 0x0300_0000,
                ..
            })
        ));
        let v1 = v1::encode(4096, &[(0, [1; 32])]);
        assert_eq!(detect(&v1, false), Ok(Detected::V1));
        assert_eq!(detect(&v1, true), Ok(Detected::V0), "v0 assumed before v1");
        assert_eq!(detect(&[9; 64], true), Ok(Detected::V0));
        assert!(matches!(detect(&[9; 64], false), Err(MapError::UnknownFormat(b)) if b == [9; 8]));
        assert!(matches!(
            detect(b"AMF.", false),
            Err(MapError::Truncated { need: 8, .. })
        ));
        assert!(matches!(
            detect(&[1, 0], false),
            Err(MapError::Truncated { need: 4, .. })
        ));
        assert_eq!(detect(&[], true), Ok(Detected::V0));
        assert!(Detected::V2.is_legacy() && !Detected::V3.is_legacy());
    }
}
