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
//! | [`StatsReply`] | STATS: a peer's counters and stage times | 80 |
//! | [`VolumeInfo`] | mapper INFO, OPEN: a volume's state and parent | 304 |
//! | [`MapExtent`] | MAP_READ, MAP_WRITE reply records (after an 8-byte header) | 296 |
//! | [`HashReply`] | mapper HASH: what hashing a snapshot did | 32 |
//! | [`LineageRecord`], [`FlattenStep`] | LINEAGE, FLATTEN (see `payload/lineage.rs`) | 576, 48 |
//!
//! Variable-length layouts (bounds-checked by their decoders):
//!
//! - A fenced WRITE / WRITE_FULL's *target* ([`FencedTarget`], see
//!   `payload/fence.rs`): `<object> NUL <lock> NUL <16 hex token>`; its
//!   data buffer holds the data only.
//! - MAP_READ / MAP_WRITE reply ([`encode_extents`], [`decode_extents`]):
//!   `u32 count, u32 reserved`, then `count` [`MapExtent`] records.
//! - MAP_COMMIT data ([`encode_commit`], [`decode_commit`]):
//!   `u32 count, u32 reserved`, then `count` little-endian `u64` object
//!   indexes.
//! - HASH reply ([`encode_hash_rebase`], [`decode_hash_rebase`]): a
//!   [`HashReply`], then (when the reply buffer has room; a reply of 32
//!   bytes is an older mapper's) `u64 maps_moved, u64 maps_left`, then
//!   the names of the maps left, each followed by NUL, as many as fit
//!   (`maps_left` counts them all). The request's `size` is how long the
//!   mapper waits for the holders of open maps, in milliseconds (0: its
//!   default).

use crate::{Error, ErrorCode};

mod fence;
pub use fence::{FencedTarget, FencedTargetError};
mod lineage;
pub use lineage::{decode_lineage, encode_lineage, lineage_size, FlattenStep, LineageRecord};
pub use mapper::{
    decode_commit, decode_extents, decode_hash_rebase, decode_map_token, encode_commit,
    encode_extents, encode_hash_rebase, encode_map_token, extents_size, map_reply_room, Extent,
    HashRebase, HashReply, MapExtent, VolumeInfo, LIST_HEADER, MAP_TOKEN_SIZE,
};

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
    /// Requests accepted since start (PING and STATS included).
    pub accepted: u64,
    /// Sum over accepted requests of the time each waited in this peer's
    /// queue (accept timestamp minus submit timestamp), in nanoseconds.
    pub queue_ns: u64,
    /// Sum over completed requests of the time from accept to reply, in
    /// nanoseconds (sub-request round trips included).
    pub service_ns: u64,
    /// Sub-requests whose reply came back.
    pub sub_requests: u64,
    /// Sum over those of the time from submit to the reply's arrival, in
    /// nanoseconds.
    pub sub_ns: u64,
}
sized!(StatsReply, 80);

impl Payload for StatsReply {
    const SIZE: usize = 80;
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
            self.accepted,
            self.queue_ns,
            self.service_ns,
            self.sub_requests,
            self.sub_ns,
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
            accepted: r.u64(),
            queue_ns: r.u64(),
            service_ns: r.u64(),
            sub_requests: r.u64(),
            sub_ns: r.u64(),
        })
    }
}

// After `sized!`, which it uses.
mod mapper;
use mapper::list_count;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_replies_carry_the_maps_left_as_far_as_they_fit() {
        let reply = HashReply {
            objects: 4,
            distinct: 2,
            bytes_saved: 8192,
            zero_objects: 1,
        };
        let rebase = HashRebase {
            maps_moved: 3,
            maps_left: 2,
            names: vec!["c1".into(), "c2-long".into()],
        };
        let mut buf = vec![0u8; 128];
        let n = encode_hash_rebase(&reply, &rebase, &mut buf).unwrap();
        assert_eq!(n, 32 + 16 + 3 + 8);
        assert_eq!(
            decode_hash_rebase(&buf[..n]).unwrap(),
            (reply, Some(rebase.clone()))
        );
        // Room for one name only; the count still says two.
        let mut small = vec![0u8; 32 + 16 + 4];
        let n = encode_hash_rebase(&reply, &rebase, &mut small).unwrap();
        let (_, r) = decode_hash_rebase(&small[..n]).unwrap();
        assert_eq!(r.unwrap().names, vec!["c1".to_string()]);
        // An older mapper's reply.
        assert_eq!(decode_hash_rebase(&buf[..32]).unwrap(), (reply, None));
    }

    #[test]
    fn map_reply_room_fits_the_worst_case_within_the_largest_buffer() {
        assert_eq!(
            map_reply_room(0, 1 << 22),
            LockOwner::SIZE.max(8 + 2 * 296 + MAP_TOKEN_SIZE) as u64
        );
        assert_eq!(
            map_reply_room(8192, 1 << 22),
            (8 + 4 * 296 + MAP_TOKEN_SIZE) as u64
        );
        assert_eq!(map_reply_room(1 << 30, 1 << 22), 1 << 22);
    }
    use core::mem::offset_of;

    #[test]
    fn a_write_map_reply_carries_the_token_after_its_extents() {
        let e = MapExtent {
            index: 3,
            offset_in_object: 0,
            len: 512,
            flags: 0,
            reserved: 0,
            object: NameField::new(b"obj").unwrap(),
        };
        let mut buf = vec![0u8; map_reply_room(512, 1 << 22) as usize];
        let n = encode_extents(std::slice::from_ref(&e), &mut buf).unwrap();
        assert_eq!(decode_map_token(&buf[..n]).unwrap(), None);
        let n = encode_map_token(&mut buf, n, 42).unwrap();
        assert_eq!(decode_extents(&buf[..n]).unwrap(), vec![e]);
        assert_eq!(decode_map_token(&buf[..n]).unwrap(), Some(42));
    }

    #[test]
    fn field_offsets_match_the_encoding() {
        assert_eq!(offset_of!(NameField, bytes), 8);
        assert_eq!(offset_of!(CopyRequest, src), 8);
        assert_eq!(offset_of!(CloneRequest, src), 8);
        assert_eq!(offset_of!(LockOwner, owner), 8);
        assert_eq!(offset_of!(CreateRequest, flags), 16);
        assert_eq!(offset_of!(StatsReply, pid), 32);
        assert_eq!(offset_of!(StatsReply, sub_ns), 72);
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
            accepted: 6,
            queue_ns: 7,
            service_ns: 8,
            sub_requests: 9,
            sub_ns: 10,
        }
        .to_vec();
        assert_eq!(
            s.chunks(8).map(|c| c[0]).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<u8>>()
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
        assert!(StatsReply::default().encode(&mut [0; 79]).is_err());
    }

    #[test]
    fn mapper_payloads_golden_bytes_and_round_trips() {
        let v = VolumeInfo {
            size: 1 << 20,
            object_size: 4096,
            readonly: true,
            removed: false,
            hashed: true,
            format_version: 3,
            epoch: 2,
            volume_id: 9,
            parent: Some("snap".into()),
        };
        let b = v.to_vec();
        assert_eq!(b.len(), 304);
        assert_eq!(&b[..8], &[0, 0, 16, 0, 0, 0, 0, 0]);
        assert_eq!(&b[8..16], &[0, 16, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[16..24], &[5, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!((b[24], b[32]), (2, 9));
        assert_eq!(&b[40..44], &[4, 0, 0, 0]);
        assert_eq!(&b[48..52], b"snap");
        assert_eq!(VolumeInfo::decode(&b).unwrap(), v);

        let e = MapExtent {
            index: 1,
            offset_in_object: 2,
            len: 3,
            flags: MapExtent::PENDING | MapExtent::MISSING_READS_ZERO,
            reserved: 0,
            object: NameField::new(b"obj").unwrap(),
        };
        let z = MapExtent {
            index: 7,
            offset_in_object: 0,
            len: 4096,
            flags: MapExtent::ZERO,
            reserved: 0,
            object: NameField::new(b"").unwrap(),
        };
        let mut out = vec![0xff; extents_size(2)];
        assert_eq!(
            encode_extents(&[e.clone(), z.clone()], &mut out).unwrap(),
            600
        );
        assert_eq!(&out[..8], &[2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!((out[8], out[16], out[24], out[32]), (1, 2, 3, 6));
        assert_eq!(&out[40..44], &[3, 0, 0, 0]);
        assert_eq!(&out[48..51], b"obj");
        assert_eq!(decode_extents(&out).unwrap(), vec![e, z]);
        assert!(encode_extents(&[], &mut [0; 7]).is_err());

        let c = encode_commit(&[5, 1 << 40]).unwrap();
        assert_eq!(
            c,
            [2, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(decode_commit(&c).unwrap(), vec![5, 1 << 40]);

        let h = HashReply {
            objects: 1,
            distinct: 2,
            bytes_saved: 3,
            zero_objects: 4,
        };
        let hb = h.to_vec();
        assert_eq!(hb.chunks(8).map(|c| c[0]).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(HashReply::decode(&hb).unwrap(), h);
    }

    #[test]
    fn hostile_mapper_payloads_are_errors_not_panics() {
        let bad = |r: Result<Vec<MapExtent>, Error>| {
            assert_eq!(r.unwrap_err().code, ErrorCode::InvalidArgument)
        };
        bad(decode_extents(&[]));
        bad(decode_extents(&[1, 0, 0, 0, 0, 0, 0, 0]));
        bad(decode_extents(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]));
        let mut one = vec![0; extents_size(1)];
        one[0] = 1;
        one[32] = 0x80; // unknown extent flag
        bad(decode_extents(&one));
        one[32] = 0;
        one[40] = 0xff;
        one[41] = 0xff; // name length past the field
        bad(decode_extents(&one));
        assert!(decode_commit(&[3, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        assert!(decode_commit(&[0xff; 8]).is_err());
        assert!(decode_commit(&[0; 4]).is_err());
        assert_eq!(decode_commit(&[0; 8]).unwrap(), Vec::<u64>::new());
        assert!(VolumeInfo::decode(&[0; 303]).is_err());
        assert!(HashReply::decode(&[0; 31]).is_err());
        let mut v = VolumeInfo::decode(&[0; 304]).unwrap().to_vec();
        v[40] = 0xff;
        v[41] = 0xff;
        assert!(VolumeInfo::decode(&v).is_err());
    }
}
