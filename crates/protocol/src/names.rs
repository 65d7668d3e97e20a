//! The grammar of names, checked by every peer that receives one.
//!
//! Names are bytes from `[A-Za-z0-9._-]`, starting with a letter or digit
//! (so no name is `.`, `..`, or looks like an option). Lengths are derived
//! from the longest name built from another:
//!
//! | name | built as | at most |
//! |---|---|---|
//! | volume or snapshot | chosen by the user | [`MAX_VOLUME_NAME`] = 166 |
//! | data object of a volume | `<volume>_<16 hex epoch>_<16 hex index>` | [`MAX_OBJECT_NAME`] = 200 |
//! | side object (lock, cached hash) | `<object>_lock`, `<object>_hash` | [`MAX_STORE_NAME`] = 208 |
//! | a store's temporary file | `<store name>` + up to 47 bytes | 255, a file name's limit |
//!
//! Volume names must also not collide with derived names: they may not
//! start with `archip_` (the original's legacy prefix), end with `_lock` or
//! `_hash`, contain `_` followed by 16 hex digits at a word end (data
//! objects, map chunks), or be 64 hex digits (content names) or 16 hex
//! digits (volume ids, which start chunk and data object names).

/// Longest volume or snapshot name.
pub const MAX_VOLUME_NAME: usize = MAX_OBJECT_NAME - DATA_SUFFIX_LEN;
/// Longest object name.
pub const MAX_OBJECT_NAME: usize = 200;
/// Longest name a store accepts (objects plus side suffixes).
pub const MAX_STORE_NAME: usize = MAX_OBJECT_NAME + 8;
/// Room a store may add to a name for its own temporary files.
pub const STORE_TEMP_ROOM: usize = 255 - MAX_STORE_NAME;
/// `_<16 hex>_<16 hex>`.
const DATA_SUFFIX_LEN: usize = 34;
/// Suffix of a lock's object.
pub const LOCK_SUFFIX: &str = "_lock";
/// Suffix of an object's cached content hash.
pub const HASH_SUFFIX: &str = "_hash";
/// Prefixes a volume name may not start with.
pub const RESERVED_PREFIXES: &[&str] = &["archip_"];
/// Suffixes a volume name may not end with.
pub const RESERVED_SUFFIXES: &[&str] = &[LOCK_SUFFIX, HASH_SUFFIX];

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Zero bytes.
    #[error("the name is empty")]
    Empty,
    /// Too many bytes.
    #[error("name {name:?} is {len} bytes, more than {max}")]
    TooLong {
        /// The name (lossy).
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character outside the alphabet.
    #[error("name {name:?} contains {found:?}; allowed are letters, digits, '.', '_' and '-'")]
    BadChar {
        /// The name (lossy).
        name: String,
        /// The first character refused (U+FFFD where the bytes are not
        /// UTF-8).
        found: char,
    },
    /// Does not start with a letter or digit.
    #[error("name {name:?} must start with a letter or a digit")]
    BadStart {
        /// The name.
        name: String,
    },
    /// Collides with a derived name.
    #[error("name {name:?} is reserved: {why}")]
    Reserved {
        /// The name.
        name: String,
        /// Which rule.
        why: &'static str,
    },
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

fn check(name: &[u8], max: usize) -> Result<&str, NameError> {
    let lossy = || String::from_utf8_lossy(name).into_owned();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            name: lossy(),
            len: name.len(),
            max,
        });
    }
    if let Some(at) = name.iter().position(|&b| !allowed(b)) {
        // The character that starts there: a non-ASCII one spans several
        // bytes, none of which is a character of its own.
        let found = String::from_utf8_lossy(&name[at..])
            .chars()
            .next()
            .unwrap_or(char::REPLACEMENT_CHARACTER);
        return Err(NameError::BadChar {
            name: lossy(),
            found,
        });
    }
    if !name[0].is_ascii_alphanumeric() {
        return Err(NameError::BadStart { name: lossy() });
    }
    // Every byte is ASCII by now.
    Ok(std::str::from_utf8(name).expect("ASCII"))
}

/// Checks a name a store is asked to handle (objects and side objects).
pub fn check_store_name(name: &[u8]) -> Result<&str, NameError> {
    check(name, MAX_STORE_NAME)
}

/// Checks an object name.
pub fn check_object_name(name: &[u8]) -> Result<&str, NameError> {
    check(name, MAX_OBJECT_NAME)
}

fn is_hex(s: &[u8]) -> bool {
    s.iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Whether `name` is a content name: 64 lowercase hex digits.
pub fn is_content_name(name: &[u8]) -> bool {
    name.len() == 64 && is_hex(name)
}

/// Checks a volume or snapshot name.
pub fn check_volume_name(name: &[u8]) -> Result<&str, NameError> {
    let s = check(name, MAX_VOLUME_NAME)?;
    let reserved = |why| {
        Err(NameError::Reserved {
            name: s.to_owned(),
            why,
        })
    };
    if RESERVED_PREFIXES.iter().any(|p| s.starts_with(p)) {
        return reserved("it starts with the legacy prefix archip_");
    }
    if RESERVED_SUFFIXES.iter().any(|x| s.ends_with(x)) {
        return reserved("it ends with _lock or _hash, the suffixes of side objects");
    }
    if is_content_name(name) {
        return reserved("64 hex digits is the form of a content name");
    }
    if name.len() == 16 && is_hex(name) {
        return reserved(
            "16 hex digits is the form of a volume id in map chunk and data object names",
        );
    }
    // `_` + 16 hex digits ending the name or followed by `_`: a data
    // object's or map chunk's suffix.
    for (i, _) in s.match_indices('_') {
        let rest = &name[i + 1..];
        if rest.len() >= 16 && is_hex(&rest[..16]) && (rest.len() == 16 || rest[16] == b'_') {
            return reserved("'_' and 16 hex digits form the suffix of derived object names");
        }
    }
    Ok(s)
}

/// Name of the data object holding object `index` of `volume`, written in
/// `epoch` (fixed-width lowercase hex, so names sort numerically).
pub fn data_object_name(volume: &str, epoch: u64, index: u64) -> String {
    format!("{volume}_{epoch:016x}_{index:016x}")
}

/// Name of the lock object of `name`.
pub fn lock_name(name: &str) -> String {
    format!("{name}{LOCK_SUFFIX}")
}

/// Name of the object caching `name`'s content hash.
pub fn hash_side_name(name: &str) -> String {
    format!("{name}{HASH_SUFFIX}")
}

/// The content name of a SHA-256 digest.
pub fn content_name(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_the_store_and_file_name_limits() {
        let vol = "v".repeat(MAX_VOLUME_NAME);
        let data = data_object_name(&vol, u64::MAX, u64::MAX);
        assert_eq!(data.len(), MAX_OBJECT_NAME);
        assert!(check_object_name(data.as_bytes()).is_ok());
        assert!(check_store_name(lock_name(&data).as_bytes()).is_ok());
        assert!(check_store_name(hash_side_name(&data).as_bytes()).is_ok());
        const { assert!(MAX_STORE_NAME + STORE_TEMP_ROOM == 255) };
        const { assert!(STORE_TEMP_ROOM >= 40) };
    }

    #[test]
    fn the_alphabet_and_first_byte_are_enforced() {
        assert_eq!(check_volume_name(b"vm-disk.0_a").unwrap(), "vm-disk.0_a");
        for bad in [
            &b"a/b"[..],
            b"a b",
            b"a\0",
            b"..",
            b".hidden",
            b"-rf",
            b"caf\xc3\xa9",
        ] {
            assert!(
                check_volume_name(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(check_object_name(bad).is_err());
        }
        assert_eq!(check_volume_name(b""), Err(NameError::Empty));
        assert!(matches!(
            check_volume_name("x".repeat(167).as_bytes()),
            Err(NameError::TooLong {
                len: 167,
                max: 166,
                ..
            })
        ));
    }

    /// Issue 19: a non-ASCII name was reported with its first byte as a
    /// character ("contains 'Ã'" for "völ").
    #[test]
    fn a_refused_character_is_reported_as_written() {
        let e = check_volume_name("völ".as_bytes()).unwrap_err();
        assert_eq!(
            e,
            NameError::BadChar {
                name: "völ".into(),
                found: 'ö'
            }
        );
        assert!(e.to_string().contains("contains 'ö'"), "{e}");
        let e = check_volume_name("a€b".as_bytes()).unwrap_err();
        assert!(e.to_string().contains("contains '€'"), "{e}");
        // Bytes that are not UTF-8: the replacement character.
        let e = check_volume_name(b"a\xffb").unwrap_err();
        assert!(
            matches!(
                e,
                NameError::BadChar {
                    found: '\u{fffd}',
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn volume_names_cannot_collide_with_derived_names() {
        for bad in [
            "archip_vol",
            "vol_lock",
            "vol_hash",
            "vol_0000000000000002",
            "vol_0000000000000002_000000000000001f",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "0123456789abcdef",
        ] {
            assert!(
                matches!(
                    check_volume_name(bad.as_bytes()),
                    Err(NameError::Reserved { .. })
                ),
                "{bad}"
            );
        }
        // Near misses are fine.
        for good in [
            "vol_000000000000000",
            "vol_00000000000000021",
            "vol_locked",
            "archip",
            "hash_vol",
        ] {
            assert!(check_volume_name(good.as_bytes()).is_ok(), "{good}");
        }
    }

    #[test]
    fn content_names_are_lowercase_hex_sha256() {
        let zero = [0u8; 32];
        let name = content_name(&zero);
        assert_eq!(name.len(), 64);
        assert!(is_content_name(name.as_bytes()));
        assert!(
            !is_content_name(name.to_uppercase().as_bytes())
                || name.chars().all(|c| c.is_ascii_digit())
        );
        assert!(!is_content_name(&[b'A'; 64]));
        assert!(check_object_name(name.as_bytes()).is_ok());
        assert_eq!(
            data_object_name("vol", 2, 31),
            "vol_0000000000000002_000000000000001f"
        );
    }
}
