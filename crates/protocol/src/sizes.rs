//! Size rules for volumes and objects.

/// Volume sizes are multiples of this.
pub const SECTOR: u64 = 512;
/// Largest volume: 8 PiB (2^53 bytes).
pub const MAX_VOLUME_SIZE: u64 = 1 << 53;
/// Default object size.
pub const DEFAULT_OBJECT_SIZE: u64 = 4 << 20;
/// Smallest object size.
pub const MIN_OBJECT_SIZE: u64 = 4096;

/// Why a size is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Zero, or not a multiple of 512.
    #[error("size {0} is not a positive multiple of 512 bytes")]
    NotSectors(u64),
    /// Above the largest volume.
    #[error("size {0} is more than the largest volume ({MAX_VOLUME_SIZE} bytes, 8 PiB)")]
    TooLarge(u64),
    /// Object size not a power of two in range.
    #[error("object size {size} must be a power of two from {MIN_OBJECT_SIZE} to {max} bytes")]
    BadObjectSize {
        /// The size.
        size: u64,
        /// The largest allowed (the segment's largest buffer).
        max: u64,
    },
    /// Not a size.
    #[error("{0:?} is not a size (a number with an optional K, M, G, T or P suffix)")]
    Unparsable(String),
}

/// Checks a volume size.
pub fn check_volume_size(size: u64) -> Result<u64, SizeError> {
    if size == 0 || !size.is_multiple_of(SECTOR) {
        return Err(SizeError::NotSectors(size));
    }
    if size > MAX_VOLUME_SIZE {
        return Err(SizeError::TooLarge(size));
    }
    Ok(size)
}

/// Checks an object size against the segment's largest buffer.
pub fn check_object_size(size: u64, max_buffer: u64) -> Result<u64, SizeError> {
    if !size.is_power_of_two() || size < MIN_OBJECT_SIZE || size > max_buffer {
        return Err(SizeError::BadObjectSize {
            size,
            max: max_buffer,
        });
    }
    Ok(size)
}

/// Parses `123`, `4K`, `10G`, `1.5T`-free binary sizes: an integer with an
/// optional K, M, G, T or P suffix (powers of 1024, case-insensitive,
/// optional trailing `B` or `iB`).
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let bad = || SizeError::Unparsable(s.to_owned());
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                'P' => 50,
                _ => return Err(bad()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_sizes_are_sectors_up_to_8_pib() {
        assert_eq!(check_volume_size(512), Ok(512));
        assert_eq!(check_volume_size(1 << 50), Ok(1 << 50), "1 PiB");
        assert_eq!(check_volume_size(0), Err(SizeError::NotSectors(0)));
        assert_eq!(check_volume_size(1000), Err(SizeError::NotSectors(1000)));
        assert_eq!(
            check_volume_size((1 << 53) + 512),
            Err(SizeError::TooLarge((1 << 53) + 512))
        );
    }

    #[test]
    fn object_sizes_are_powers_of_two_within_the_largest_buffer() {
        assert!(check_object_size(4 << 20, 4 << 20).is_ok());
        assert!(check_object_size(8 << 20, 4 << 20).is_err());
        assert!(check_object_size(3 << 20, 4 << 20).is_err());
        assert!(check_object_size(2048, 4 << 20).is_err());
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("10g"), Ok(10 << 30));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("2MB"), Ok(2 << 20));
        for bad in ["", "K", "1X", "-1", "1.5G", "99999999999P"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
