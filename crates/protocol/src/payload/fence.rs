//! The target of a fenced write: where a WRITE or WRITE_FULL with
//! [`Flags::FENCED`](crate::Flags::FENCED) carries its fence.
//!
//! The fence travels in the request's target field, not in its data
//! buffer, so the buffer holds exactly the data and a whole-object write
//! fits the segment's largest buffer:
//!
//! ```text
//! <object> NUL <lock> NUL <token: 16 lowercase hex digits>
//! ```
//!
//! The object is the one written, the lock the volume's (its name), the
//! token the one the writer was granted the lock with. An empty lock
//! part means the lock named like the object: a volume's header, which
//! the mapper writes fenced by the volume's own lock. Locks are volume
//! names (at most [`MAX_VOLUME_NAME`](crate::names::MAX_VOLUME_NAME) =
//! 166 bytes), so every fenced write Archipelago makes fits the
//! [`FencedTarget::MAX_LEN`] = 256 bytes of a target:
//!
//! | write | object | target at most |
//! |---|---|---|
//! | data (composer) | `<16 hex id>_<16 hex epoch>_<16 hex index>`, 50 bytes | 50 + 1 + 166 + 1 + 16 = 234 |
//! | map chunk (mapper) | `<16 hex id>_<16 hex serial>`, 33 bytes | 217 |
//! | volume header (mapper) | the volume's name, the lock part empty | 166 + 2 + 16 = 184 |
//!
//! Names are not checked against the name grammar here: the store checks
//! them as for any write.
//!
//! ```
//! use archipelago_protocol::payload::FencedTarget;
//!
//! let t = FencedTarget { object: "obj", lock: "vm1", token: 42 };
//! let bytes = t.encode().unwrap();
//! assert_eq!(bytes, [&b"obj\0vm1\0"[..], b"000000000000002a"].concat());
//! assert_eq!(FencedTarget::decode(&bytes).unwrap(), t);
//! ```

/// Why a fenced target cannot be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FencedTargetError {
    /// Object, lock and token do not fit the target field.
    #[error(
        "a fenced write's target (object {object:?}, lock {lock:?}, token) is {len} bytes, \
         more than the {max} of a request's target"
    )]
    TooLong {
        /// The object (lossy).
        object: String,
        /// The lock (lossy).
        lock: String,
        /// The bytes needed.
        len: usize,
        /// The target field's size.
        max: usize,
    },
    /// The target is not three NUL-separated parts.
    #[error(
        "a fenced write's target has {parts} NUL-separated parts, \
         3 expected (object, lock, token)"
    )]
    Parts {
        /// How many it has.
        parts: usize,
    },
    /// The object, or the lock when encoding, is empty (an empty lock
    /// part means "the lock named like the object").
    #[error("the {part} of a fenced write's target is empty")]
    Empty {
        /// "object" or "lock".
        part: &'static str,
    },
    /// The object or the lock holds a NUL byte (encoding only: it would
    /// end the part early).
    #[error("the {part} of a fenced write's target contains a NUL byte")]
    Nul {
        /// "object" or "lock".
        part: &'static str,
    },
    /// The object or the lock is not UTF-8.
    #[error("the {part} of a fenced write's target is not UTF-8")]
    NotUtf8 {
        /// "object" or "lock".
        part: &'static str,
    },
    /// The token is not 16 lowercase hex digits.
    #[error("the token of a fenced write's target is {found:?}, not 16 lowercase hex digits")]
    BadToken {
        /// What was there (lossy).
        found: String,
    },
}

impl From<FencedTargetError> for crate::Error {
    fn from(e: FencedTargetError) -> crate::Error {
        crate::Error::with(crate::ErrorCode::InvalidArgument, e.to_string())
    }
}

/// A fenced write's target, decoded: the object written and the fence it
/// claims (see the module doc for the bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FencedTarget<'a> {
    /// The object written.
    pub object: &'a str,
    /// The lock the write was computed under (the volume's name).
    pub lock: &'a str,
    /// The writer's fencing token.
    pub token: u64,
}

impl<'a> FencedTarget<'a> {
    /// The most bytes a target holds (`xseg_shm::layout::MAX_TARGET_LEN`;
    /// `archipelago-wire` tests that they agree).
    pub const MAX_LEN: usize = 256;
    /// Hex digits of the token.
    pub const TOKEN_DIGITS: usize = 16;

    /// Bytes this target takes.
    pub fn len(&self) -> usize {
        self.object.len() + 1 + self.lock_part().len() + 1 + Self::TOKEN_DIGITS
    }

    /// The lock as encoded: empty when named like the object.
    fn lock_part(&self) -> &'a str {
        if self.lock == self.object {
            ""
        } else {
            self.lock
        }
    }

    /// Never: the token alone takes 16 bytes (for clippy's `len`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The target's bytes; refuses empty or NUL-holding names and a
    /// target longer than [`MAX_LEN`](Self::MAX_LEN).
    pub fn encode(&self) -> Result<Vec<u8>, FencedTargetError> {
        let mut buf = [0u8; Self::MAX_LEN];
        let n = self.encode_into(&mut buf)?;
        Ok(buf[..n].to_vec())
    }

    /// [`encode`](Self::encode) into `out` (at least [`MAX_LEN`](Self::MAX_LEN)
    /// bytes, or the target must fit), without allocating: the composer
    /// does it for every data write. Returns the length.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<usize, FencedTargetError> {
        for (part, name) in [("object", self.object), ("lock", self.lock)] {
            if name.is_empty() {
                return Err(FencedTargetError::Empty { part });
            }
            if name.as_bytes().contains(&0) {
                return Err(FencedTargetError::Nul { part });
            }
        }
        let len = self.len();
        let max = Self::MAX_LEN.min(out.len());
        if len > max {
            return Err(FencedTargetError::TooLong {
                object: self.object.to_owned(),
                lock: self.lock.to_owned(),
                len,
                max,
            });
        }
        let (object, lock) = (self.object.as_bytes(), self.lock_part().as_bytes());
        let mut at = 0;
        for part in [object, &[0], lock, &[0]] {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        for (i, d) in out[at..at + Self::TOKEN_DIGITS].iter_mut().enumerate() {
            let nibble = (self.token >> (4 * (Self::TOKEN_DIGITS - 1 - i))) & 0xf;
            *d = b"0123456789abcdef"[nibble as usize];
        }
        at += Self::TOKEN_DIGITS;
        debug_assert_eq!(at, len);
        Ok(at)
    }

    /// Reads a target another process wrote: exactly three parts, the
    /// object non-empty UTF-8, the lock UTF-8 (empty: named like the
    /// object), the token exactly 16 lowercase hex digits.
    pub fn decode(target: &'a [u8]) -> Result<FencedTarget<'a>, FencedTargetError> {
        if target.len() > Self::MAX_LEN {
            return Err(FencedTargetError::TooLong {
                object: String::from_utf8_lossy(target.split(|&b| b == 0).next().unwrap_or(&[]))
                    .into_owned(),
                lock: String::new(),
                len: target.len(),
                max: Self::MAX_LEN,
            });
        }
        let mut parts = target.split(|&b| b == 0);
        let (Some(object), Some(lock), Some(token), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(FencedTargetError::Parts {
                parts: target.iter().filter(|&&b| b == 0).count() + 1,
            });
        };
        let name = |part, bytes: &'a [u8]| {
            std::str::from_utf8(bytes).map_err(|_| FencedTargetError::NotUtf8 { part })
        };
        let (object, lock) = (name("object", object)?, name("lock", lock)?);
        if object.is_empty() {
            return Err(FencedTargetError::Empty { part: "object" });
        }
        let lock = if lock.is_empty() { object } else { lock };
        let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if token.len() != Self::TOKEN_DIGITS || !token.iter().all(hex) {
            return Err(FencedTargetError::BadToken {
                found: String::from_utf8_lossy(token).into_owned(),
            });
        }
        let token = token
            .iter()
            .fold(0, |t, &b| t << 4 | u64::from(hex_value(b)));
        Ok(FencedTarget {
            object,
            lock,
            token,
        })
    }
}

/// The value of a lowercase hex digit (checked by the caller).
fn hex_value(b: u8) -> u8 {
    if b.is_ascii_digit() {
        b - b'0'
    } else {
        b - b'a' + 10
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{data_object_name, MAX_VOLUME_NAME};

    /// `bytes` with each `|` a NUL.
    fn nul(bytes: &[u8]) -> Vec<u8> {
        bytes
            .iter()
            .map(|&b| if b == b'|' { 0 } else { b })
            .collect()
    }

    fn t<'a>(object: &'a str, lock: &'a str, token: u64) -> FencedTarget<'a> {
        FencedTarget {
            object,
            lock,
            token,
        }
    }

    #[test]
    fn a_fenced_target_round_trips_with_any_token() {
        for token in [0, 1, 42, 0xdead_beef, u64::MAX] {
            let target = t(
                "0123456789abcdef_0000000000000001_0000000000000007",
                "vm1",
                token,
            );
            let bytes = target.encode().unwrap();
            assert_eq!(bytes.len(), target.len());
            assert_eq!(FencedTarget::decode(&bytes).unwrap(), target);
        }
        assert_eq!(
            t("o", "l", u64::MAX).encode().unwrap(),
            b"o\0l\0ffffffffffffffff"
        );
    }

    #[test]
    fn a_composer_s_longest_fenced_target_fits() {
        let volume = "v".repeat(MAX_VOLUME_NAME);
        let object = data_object_name("0123456789abcdef", u64::MAX, u64::MAX);
        assert_eq!(object.len(), 50);
        let target = t(&object, &volume, u64::MAX);
        let bytes = target.encode().unwrap();
        assert_eq!(bytes.len(), 50 + 1 + 166 + 1 + 16);
        assert_eq!(FencedTarget::decode(&bytes).unwrap(), target);
    }

    #[test]
    fn a_volume_header_s_fenced_target_names_its_lock_once() {
        let volume = "v".repeat(MAX_VOLUME_NAME);
        let header = t(&volume, &volume, 9);
        let bytes = header.encode().unwrap();
        assert_eq!(
            bytes,
            [volume.as_bytes(), b"\0\0", b"0000000000000009"].concat()
        );
        assert_eq!(bytes.len(), header.len());
        assert_eq!(FencedTarget::decode(&bytes).unwrap(), header);
        let named_twice = [&b"obj\0obj\0"[..], b"000000000000002a"].concat();
        let once = [&b"obj\0\0"[..], b"000000000000002a"].concat();
        assert_eq!(
            FencedTarget::decode(&named_twice).unwrap(),
            t("obj", "obj", 42)
        );
        assert_eq!(FencedTarget::decode(&once).unwrap(), t("obj", "obj", 42));
        let chunk = "0123456789abcdef_0000000000000001";
        let chunk_write = t(chunk, &volume, 9);
        assert_eq!(chunk_write.encode().unwrap().len(), 33 + 1 + 166 + 1 + 16);
        assert_eq!(
            FencedTarget::decode(&chunk_write.encode().unwrap()).unwrap(),
            chunk_write
        );
    }

    #[test]
    fn a_target_of_exactly_the_field_s_size_fits_and_one_byte_more_does_not() {
        let lock = "l".repeat(FencedTarget::MAX_LEN - 2 - 16 - 1);
        let fits = t("o", &lock, 3);
        assert_eq!(fits.encode().unwrap().len(), FencedTarget::MAX_LEN);
        let object = "o".repeat(2);
        let long = t(&object, &lock, 3);
        assert_eq!(
            long.encode(),
            Err(FencedTargetError::TooLong {
                object: object.clone(),
                lock: lock.clone(),
                len: FencedTarget::MAX_LEN + 1,
                max: FencedTarget::MAX_LEN,
            })
        );
        let mut bytes = fits.encode().unwrap();
        bytes.insert(0, b'o');
        assert!(matches!(
            FencedTarget::decode(&bytes),
            Err(FencedTargetError::TooLong { len: 257, .. })
        ));
    }

    #[test]
    fn empty_or_nul_holding_names_are_not_encoded() {
        use FencedTargetError::*;
        assert_eq!(t("", "l", 1).encode(), Err(Empty { part: "object" }));
        assert_eq!(t("o", "", 1).encode(), Err(Empty { part: "lock" }));
        assert_eq!(t("o\0x", "l", 1).encode(), Err(Nul { part: "object" }));
        assert_eq!(t("o", "l\0", 1).encode(), Err(Nul { part: "lock" }));
    }

    #[test]
    fn malformed_targets_are_refused_with_what_is_wrong() {
        use FencedTargetError::*;
        // `|` stands for NUL.
        let cases: &[(Vec<u8>, FencedTargetError)] = &[
            (nul(b""), Parts { parts: 1 }),
            (nul(b"obj"), Parts { parts: 1 }),
            (nul(b"obj|vm1"), Parts { parts: 2 }),
            (nul(b"obj|vm1|000000000000002a|"), Parts { parts: 4 }),
            (nul(b"obj|vm1|000000000000002a|x"), Parts { parts: 4 }),
            (nul(b"|vm1|000000000000002a"), Empty { part: "object" }),
            (
                nul(b"o\xffj|vm1|000000000000002a"),
                NotUtf8 { part: "object" },
            ),
            (nul(b"obj|v\xc3|000000000000002a"), NotUtf8 { part: "lock" }),
            (
                nul(b"obj|vm1|"),
                BadToken {
                    found: String::new(),
                },
            ),
            (nul(b"obj|vm1|2a"), BadToken { found: "2a".into() }),
            (
                nul(b"obj|vm1|00000000000000002a"),
                BadToken {
                    found: "00000000000000002a".into(),
                },
            ),
            (
                nul(b"obj|vm1|000000000000002A"),
                BadToken {
                    found: "000000000000002A".into(),
                },
            ),
            (
                nul(b"obj|vm1|+00000000000002a"),
                BadToken {
                    found: "+00000000000002a".into(),
                },
            ),
            (
                nul(b"obj|vm1|00000000000000g1"),
                BadToken {
                    found: "00000000000000g1".into(),
                },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                FencedTarget::decode(bytes).as_ref(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn hostile_targets_are_errors_not_panics() {
        let good = t("obj", "vm1", 0x2a).encode().unwrap();
        for end in 0..good.len() {
            assert!(FencedTarget::decode(&good[..end]).is_err(), "prefix {end}");
        }
        for at in 0..good.len() {
            for byte in [0, b'0', b'a', b'F', 0x7f, 0x80, 0xff] {
                let mut bytes = good.clone();
                bytes[at] = byte;
                if let Ok(d) = FencedTarget::decode(&bytes) {
                    assert_eq!(d.encode().unwrap(), bytes);
                }
            }
        }
        assert!(FencedTarget::decode(&[0; 300]).is_err());
    }

    #[test]
    fn a_bad_fenced_target_is_an_invalid_argument_saying_why() {
        let e = crate::Error::from(FencedTarget::decode(b"obj").unwrap_err());
        assert_eq!(e.code, crate::ErrorCode::InvalidArgument);
        assert!(e.detail.contains("3 expected"), "{e}");
    }
}
