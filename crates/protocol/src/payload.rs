//! Payloads: the fixed layouts carried in a request's data buffer.
//!
//! Each is a `#[repr(C)]` struct of integers and byte arrays whose size is
//! pinned at compile time; it is encoded field by field, little-endian, at
//! the struct's own offsets, and decoded from bytes that another process
//! wrote, so decoding checks every length and never trusts one.
//!
//! | payload | used by | size |
//! |---|---|---|
//! | [`NameField`] | a name: rename target, hash reply, error detail | 264 |
//! | [`CopyRequest`] | COPY: source object and offset | 272 |
//! | [`CloneRequest`] | CLONE: source snapshot and size | 272 |
//! | [`CreateRequest`] | CREATE: size, object size, flags | 24 |
//! | [`InfoReply`] | INFO: size, object size, flags | 24 |
//! | [`LockOwner`] | ACQUIRE/RELEASE: owner and fencing token | 272 |
//! | [`StatsReply`] | STATS: a peer's counters | 40 |

use crate::{Error, ErrorCode};

/// Longest name a payload carries.
pub const NAME_CAPACITY: usize = 256;

/// A fixed-size payload.
pub trait Payload: Sized {
    /// Encoded size in bytes (equals `size_of::<Self>()`).
    const SIZE: usize;
    /// Writes `self` into the first [`SIZE`](Self::SIZE) bytes of `out`.
    fn encode(&self, out: &mut [u8]) -> Result<(), Error>;
    /// Reads a payload from the first [`SIZE`](Self::SIZE) bytes of `bytes`.
    fn decode(bytes: &[u8]) -> Result<Self, Error>;

    /// Encodes into a new vector.
    fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; Self::SIZE];
        self.encode(&mut v).expect("sized buffer");
        v
    }
}

fn short(what: &str, have: usize, need: usize) -> Error {
    Error::with(
        ErrorCode::InvalidArgument,
        format!("{what} payload needs {need} bytes, the buffer has {have}"),
    )
}

struct Writer<'a>(&'a mut [u8], usize);

impl Writer<'_> {
    fn u32(&mut self, v: u32) {
        self.0[self.1..self.1 + 4].copy_from_slice(&v.to_le_bytes());
        self.1 += 4;
    }
    fn u64(&mut self, v: u64) {
        self.0[self.1..self.1 + 8].copy_from_slice(&v.to_le_bytes());
        self.1 += 8;
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0[self.1..self.1 + b.len()].copy_from_slice(b);
        self.1 += b.len();
    }
}

struct Reader<'a>(&'a [u8], usize);

impl Reader<'_> {
    fn u32(&mut self) -> u32 {
        let v = u32::from_le_bytes(self.0[self.1..self.1 + 4].try_into().expect("4 bytes"));
        self.1 += 4;
        v
    }
    fn u64(&mut self) -> u64 {
        let v = u64::from_le_bytes(self.0[self.1..self.1 + 8].try_into().expect("8 bytes"));
        self.1 += 8;
        v
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let v = self.0[self.1..self.1 + N].try_into().expect("N bytes");
        self.1 += N;
        v
    }
}

macro_rules! sized {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}

/// A name of up to 256 bytes (not NUL-terminated; `len` says how long).
#[derive(Clone, PartialEq, Eq)]
#[repr(C)]
pub struct NameField {
    /// Bytes used.
    pub len: u32,
    /// Zero.
    pub reserved: u32,
    /// The name, zero-padded.
    pub bytes: [u8; NAME_CAPACITY],
}
sized!(NameField, 264);

impl NameField {
    /// A name field holding `name` (at most 256 bytes).
    pub fn new(name: &[u8]) -> Result<NameField, Error> {
        if name.len() > NAME_CAPACITY {
            return Err(Error::with(
                ErrorCode::InvalidArgument,
                format!("a name of {} bytes does not fit in 256", name.len()),
            ));
        }
        let mut bytes = [0; NAME_CAPACITY];
        bytes[..name.len()].copy_from_slice(name);
        Ok(NameField {
            len: name.len() as u32,
            reserved: 0,
            bytes,
        })
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..(self.len as usize).min(NAME_CAPACITY)]
    }

    /// The name as text (lossy).
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.u32(self.len);
        w.u32(0);
        w.bytes(&self.bytes);
    }

    fn read(r: &mut Reader<'_>) -> Result<NameField, Error> {
        let len = r.u32();
        let _reserved = r.u32();
        let bytes = r.bytes::<NAME_CAPACITY>();
        if len as usize > NAME_CAPACITY {
            return Err(Error::with(
                ErrorCode::InvalidArgument,
                format!("name length {len} is more than 256"),
            ));
        }
        Ok(NameField {
            len,
            reserved: 0,
            bytes,
        })
    }
}

impl std::fmt::Debug for NameField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

impl Payload for NameField {
    const SIZE: usize = 264;
    fn encode(&self, out: &mut [u8]) -> Result<(), Error> {
        if out.len() < Self::SIZE {
            return Err(short("name", out.len(), Self::SIZE));
        }
        self.write(&mut Writer(out, 0));
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < Self::SIZE {
            return Err(short("name", bytes.len(), Self::SIZE));
        }
        NameField::read(&mut Reader(bytes, 0))
    }
}

/// COPY: copy `size` bytes from `src` at `src_offset` to the request's
/// target at the request's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(C)]
pub struct CopyRequest {
    /// Where to read in the source.
    pub src_offset: u64,
    /// The source object.
    pub src: NameField,
}
sized!(CopyRequest, 272);

/// CLONE: make the request's target a clone of snapshot `src`, `size`
/// bytes long (0: the snapshot's size).
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(C)]
pub struct CloneRequest {
    /// Size of the clone, or 0.
    pub size: u64,
    /// The snapshot.
    pub src: NameField,
}
sized!(CloneRequest, 272);

/// ACQUIRE, RELEASE: who takes or gives back the lock, and the fencing
/// token of its hold (in a reply: the token granted; with a `Locked`
/// error: the current owner).
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(C)]
pub struct LockOwner {
    /// Fencing token: grows with every grant of the lock.
    pub token: u64,
    /// Owner identity (host id, and more as the peer likes).
    pub owner: NameField,
}
sized!(LockOwner, 272);

macro_rules! name_payload {
    ($t:ident, $what:literal, $int:ident, $name:ident) => {
        impl Payload for $t {
            const SIZE: usize = 272;
            fn encode(&self, out: &mut [u8]) -> Result<(), Error> {
                if out.len() < Self::SIZE {
                    return Err(short($what, out.len(), Self::SIZE));
                }
                let mut w = Writer(out, 0);
                w.u64(self.$int);
                self.$name.write(&mut w);
                Ok(())
            }
            fn decode(bytes: &[u8]) -> Result<Self, Error> {
                if bytes.len() < Self::SIZE {
                    return Err(short($what, bytes.len(), Self::SIZE));
                }
                let mut r = Reader(bytes, 0);
                let $int = r.u64();
                let $name = NameField::read(&mut r)?;
                Ok($t { $int, $name })
            }
        }
    };
}
name_payload!(CopyRequest, "copy", src_offset, src);
name_payload!(CloneRequest, "clone", size, src);
name_payload!(LockOwner, "lock owner", token, owner);

/// CREATE: a new volume's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct CreateRequest {
    /// Size in bytes (a multiple of 512).
    pub size: u64,
    /// Object size (a power of two), 0 for the default.
    pub object_size: u64,
    /// Create flags (bit 0: read-only).
    pub flags: u32,
    /// Zero.
    pub reserved: u32,
}
sized!(CreateRequest, 24);

/// INFO reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct InfoReply {
    /// Size in bytes.
    pub size: u64,
    /// Object size (0 for a plain object).
    pub object_size: u64,
    /// Flags (bit 0: read-only).
    pub flags: u32,
    /// Zero.
    pub reserved: u32,
}
sized!(InfoReply, 24);

macro_rules! geometry_payload {
    ($t:ident, $what:literal) => {
        impl Payload for $t {
            const SIZE: usize = 24;
            fn encode(&self, out: &mut [u8]) -> Result<(), Error> {
                if out.len() < Self::SIZE {
                    return Err(short($what, out.len(), Self::SIZE));
                }
                let mut w = Writer(out, 0);
                w.u64(self.size);
                w.u64(self.object_size);
                w.u32(self.flags);
                w.u32(0);
                Ok(())
            }
            fn decode(bytes: &[u8]) -> Result<Self, Error> {
                if bytes.len() < Self::SIZE {
                    return Err(short($what, bytes.len(), Self::SIZE));
                }
                let mut r = Reader(bytes, 0);
                Ok($t {
                    size: r.u64(),
                    object_size: r.u64(),
                    flags: r.u32(),
                    reserved: 0,
                })
            }
        }
    };
}
geometry_payload!(CreateRequest, "create");
geometry_payload!(InfoReply, "info");

/// STATS reply: a peer's counters since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct StatsReply {
    /// Requests being served now.
    pub in_flight: u64,
    /// Requests completed successfully.
    pub served: u64,
    /// Requests failed.
    pub failed: u64,
    /// Milliseconds since the peer started.
    pub uptime_ms: u64,
    /// The peer's process id.
    pub pid: u64,
}
sized!(StatsReply, 40);

impl Payload for StatsReply {
    const SIZE: usize = 40;
    fn encode(&self, out: &mut [u8]) -> Result<(), Error> {
        if out.len() < Self::SIZE {
            return Err(short("stats", out.len(), Self::SIZE));
        }
        let mut w = Writer(out, 0);
        for v in [
            self.in_flight,
            self.served,
            self.failed,
            self.uptime_ms,
            self.pid,
        ] {
            w.u64(v);
        }
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < Self::SIZE {
            return Err(short("stats", bytes.len(), Self::SIZE));
        }
        let mut r = Reader(bytes, 0);
        Ok(StatsReply {
            in_flight: r.u64(),
            served: r.u64(),
            failed: r.u64(),
            uptime_ms: r.u64(),
            pid: r.u64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn field_offsets_match_the_encoding() {
        assert_eq!(offset_of!(NameField, bytes), 8);
        assert_eq!(offset_of!(CopyRequest, src), 8);
        assert_eq!(offset_of!(CloneRequest, src), 8);
        assert_eq!(offset_of!(LockOwner, owner), 8);
        assert_eq!(offset_of!(CreateRequest, flags), 16);
        assert_eq!(offset_of!(StatsReply, pid), 32);
    }

    #[test]
    fn golden_bytes() {
        let c = CopyRequest {
            src_offset: 0x0102_0304_0506_0708,
            src: NameField::new(b"obj").unwrap(),
        };
        let b = c.to_vec();
        assert_eq!(b.len(), 272);
        assert_eq!(&b[..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[8..16], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[16..19], b"obj");
        assert!(b[19..].iter().all(|&x| x == 0));
        let i = InfoReply {
            size: 4096,
            object_size: 4 << 20,
            flags: 1,
            reserved: 0,
        }
        .to_vec();
        assert_eq!(
            i,
            [0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        );
        let s = StatsReply {
            in_flight: 1,
            served: 2,
            failed: 3,
            uptime_ms: 4,
            pid: 5,
        }
        .to_vec();
        assert_eq!(
            s.chunks(8).map(|c| c[0]).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn round_trips() {
        let l = LockOwner {
            token: 7,
            owner: NameField::new(b"host-a pid 12").unwrap(),
        };
        assert_eq!(LockOwner::decode(&l.to_vec()).unwrap(), l);
        let c = CloneRequest {
            size: 1 << 30,
            src: NameField::new(&[b's'; 256]).unwrap(),
        };
        assert_eq!(CloneRequest::decode(&c.to_vec()).unwrap(), c);
        let r = CreateRequest {
            size: 1 << 40,
            object_size: 0,
            flags: 0,
            reserved: 0,
        };
        assert_eq!(CreateRequest::decode(&r.to_vec()).unwrap(), r);
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        assert_eq!(
            CopyRequest::decode(&[0; 100]).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let mut b = CopyRequest {
            src_offset: 0,
            src: NameField::new(b"x").unwrap(),
        }
        .to_vec();
        b[8..12].copy_from_slice(&1000u32.to_le_bytes());
        assert!(
            CopyRequest::decode(&b).is_err(),
            "a name length past the field"
        );
        assert!(NameField::new(&[0; 257]).is_err());
        assert!(StatsReply::default().encode(&mut [0; 39]).is_err());
    }
}
