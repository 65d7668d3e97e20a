//! Parsing and printing of byte sizes, buffer-count lists and file modes.
//!
//! Sizes use binary units: `4096`, `4K`, `4KiB`, `1M`, `2G` (case does not
//! matter; `K` is 1024 bytes).

/// Parses a byte size: a number with an optional `K`, `M`, `G` or `T`
/// suffix (binary units), optionally followed by `B` or `iB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "{s:?} is not a size (expected a number with an optional K, M or G suffix, e.g. 4M)"
        ));
    }
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use K, M or G, e.g. 4M)"
            ))
        }
    };
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is too large"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Prints a size the short way when it is a whole number of a binary unit
/// (`4K`, `128M`, `1G`), else in bytes.
pub fn short_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Prints a size in MiB with one decimal (`262.1 MiB`).
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// One `SIZE=COUNT` item of a `--buffers` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferCount {
    /// Buffer size in bytes.
    pub size: u64,
    /// How many buffers of that size.
    pub count: u32,
}

/// Parses one `SIZE=COUNT` item of a `--buffers` list (syntax only; which
/// sizes exist is checked against the segment's largest buffer later).
pub fn parse_buffer_count(item: &str) -> Result<BufferCount, String> {
    let item = item.trim();
    let Some((size, count)) = item.split_once('=') else {
        return Err(format!(
            "{item:?} is not SIZE=COUNT (expected e.g. 4K=1024,8K=512)"
        ));
    };
    let size = parse_size(size)?;
    let count = count
        .trim()
        .parse()
        .map_err(|_| format!("{item:?}: {count:?} is not a buffer count"))?;
    Ok(BufferCount { size, count })
}

/// Parses an octal file mode (`0660`, `660` or `0o660`).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{s:?} is not an octal mode (expected e.g. 0660)"))?;
    if mode > 0o777 {
        return Err(format!(
            "{s:?}: only permission bits (at most 0777) can be given"
        ));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("3M"), Ok(3 << 20));
        assert_eq!(parse_size("128MB"), Ok(128 << 20));
        assert_eq!(parse_size(" 1G "), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
    }

    #[test]
    fn bad_sizes_are_refused_with_the_input_named() {
        for bad in ["", "M", "4X", "4.5M", "-4K", "4 M M"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("20000000T").unwrap_err().contains("too large"));
    }

    #[test]
    fn short_sizes_round_trip() {
        for s in ["4K", "64K", "1M", "128M", "1G", "3M", "100"] {
            assert_eq!(short_size(parse_size(s).unwrap()), s);
        }
        assert_eq!(short_size(4097), "4097");
        assert_eq!(short_size(0), "0");
        assert_eq!(short_size(1536), "1536");
    }

    #[test]
    fn mib_has_one_decimal() {
        assert_eq!(mib(1 << 20), "1.0 MiB");
        assert_eq!(mib(3 << 19), "1.5 MiB");
        assert_eq!(mib(0), "0.0 MiB");
    }

    #[test]
    fn buffer_counts() {
        assert_eq!(
            parse_buffer_count("4K=1024"),
            Ok(BufferCount {
                size: 4096,
                count: 1024
            })
        );
        assert_eq!(
            parse_buffer_count(" 1M = 0"),
            Ok(BufferCount {
                size: 1 << 20,
                count: 0
            })
        );
        assert!(parse_buffer_count("4K").unwrap_err().contains("SIZE=COUNT"));
        assert!(parse_buffer_count("").unwrap_err().contains("SIZE=COUNT"));
        assert!(parse_buffer_count("4K=many").unwrap_err().contains("many"));
        assert!(parse_buffer_count("4X=1")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_buffer_count("4K=-1").is_err());
        assert!(parse_buffer_count("4K=99999999999").is_err());
    }

    #[test]
    fn modes_are_octal_permission_bits() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o640"), Ok(0o640));
        assert!(parse_mode("0869").is_err());
        assert!(parse_mode("rw").is_err());
        assert!(parse_mode("4755").unwrap_err().contains("0777"));
    }
}
