//! Content naming: what [`ObjectStore::store_content`](crate::ObjectStore::store_content)
//! stores and under which name.
//!
//! Volume blocks are mostly zero past some point (a 4 MiB object holding a
//! 1 KiB file), and two blocks that differ only in how many zeros trail
//! them read the same through a volume (reads past an object's end return
//! zeros). So content is stored without its trailing zero bytes and named
//! by the lowercase hex SHA-256 of what remains: the all-zero block of any
//! length is the empty object `e3b0c442...b855`.

use sha2::{Digest, Sha256};

/// `data` without its trailing zero bytes.
pub fn strip_trailing_zeros(data: &[u8]) -> &[u8] {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &data[..end]
}

/// The content name of `data`: the lowercase hex SHA-256 of
/// [`strip_trailing_zeros`]`(data)` (64 characters, accepted by
/// [`is_content_name`](archipelago_protocol::names::is_content_name)).
pub fn content_name_of(data: &[u8]) -> String {
    let digest: [u8; 32] = Sha256::digest(strip_trailing_zeros(data)).into();
    archipelago_protocol::names::content_name(&digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipelago_protocol::names::is_content_name;

    #[test]
    fn trailing_zeros_do_not_change_the_name() {
        let a = content_name_of(b"abc");
        assert_eq!(a, content_name_of(b"abc\0\0\0"));
        assert_ne!(a, content_name_of(b"\0abc"));
        assert!(is_content_name(a.as_bytes()));
        assert_eq!(
            content_name_of(&[0; 4096]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(strip_trailing_zeros(b"a\0b\0\0"), b"a\0b");
        assert_eq!(strip_trailing_zeros(b""), b"");
    }
}
