//! The mapper's payloads: a volume's state (INFO, OPEN), map replies
//! (MAP_READ, MAP_WRITE, DISCARD) and their room, MAP_COMMIT lists, and
//! the HASH reply with its rebase tail.

use super::{short, LockOwner, NameField, Payload, Reader, Writer};
use crate::{Error, ErrorCode};

/// A volume's state: what the mapper's INFO and OPEN return, as the
/// mapper, the peers and the tools all use it, with its codec (304 bytes:
/// size, object size, flags (`READONLY` 1, `REMOVED` 2, `HASHED` 4),
/// format version, epoch, volume id, parent name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Size in bytes.
    pub size: u64,
    /// Object size in bytes.
    pub object_size: u64,
    /// A snapshot (or an old read-only map).
    pub readonly: bool,
    /// Removed, waiting for garbage collection.
    pub removed: bool,
    /// Every entry is zero or content.
    pub hashed: bool,
    /// The epoch.
    pub epoch: u64,
    /// The volume id (0 for an old-format map, which has none).
    pub volume_id: u64,
    /// The parent's name: the link of the epoch chain (the latest
    /// snapshot, or the clone source).
    pub parent: Option<String>,
    /// The map format: 0, 1, 2 or 3.
    pub format_version: u32,
}

impl VolumeInfo {
    const READONLY: u32 = 1;
    const REMOVED: u32 = 2;
    const HASHED: u32 = 4;
}

impl Payload for VolumeInfo {
    const SIZE: usize = 304;
    fn encode(&self, out: &mut [u8]) -> Result<(), Error> {
        if out.len() < Self::SIZE {
            return Err(short("volume info", out.len(), Self::SIZE));
        }
        let parent = NameField::new(self.parent.as_deref().unwrap_or("").as_bytes())?;
        let flags = [
            (self.readonly, Self::READONLY),
            (self.removed, Self::REMOVED),
            (self.hashed, Self::HASHED),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .fold(0, |f, (_, bit)| f | bit);
        let mut w = Writer(out, 0);
        w.u64(self.size);
        w.u64(self.object_size);
        w.u32(flags);
        w.u32(self.format_version);
        w.u64(self.epoch);
        w.u64(self.volume_id);
        parent.write(&mut w);
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < Self::SIZE {
            return Err(short("volume info", bytes.len(), Self::SIZE));
        }
        let mut r = Reader(bytes, 0);
        let (size, object_size, flags) = (r.u64(), r.u64(), r.u32());
        let (format_version, epoch, volume_id) = (r.u32(), r.u64(), r.u64());
        let parent = NameField::read(&mut r)?.to_string_lossy();
        Ok(VolumeInfo {
            size,
            object_size,
            readonly: flags & Self::READONLY != 0,
            removed: flags & Self::REMOVED != 0,
            hashed: flags & Self::HASHED != 0,
            epoch,
            volume_id,
            parent: (!parent.is_empty()).then_some(parent),
            format_version,
        })
    }
}

/// A piece of a volume I/O request inside one object, as the mapper
/// answers MAP_READ, MAP_WRITE and DISCARD (the value type: the mapper
/// returns it, the client and the tools use it; [`MapExtent`] is its
/// wire form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Object index in the volume.
    pub index: u64,
    /// The data object; `None` reads as zeros (never in a write reply).
    pub object: Option<String>,
    /// Offset inside the object.
    pub offset_in_object: u64,
    /// Bytes.
    pub len: u64,
    /// Write replies only: the index is committed (MAP_COMMIT) once the
    /// data write succeeded.
    pub pending: bool,
    /// The object is owned by a volume: if it does not exist, it reads as
    /// zeros (a first write to a zero entry commits the entry before the
    /// data lands).
    pub missing_reads_zero: bool,
}

impl TryFrom<&Extent> for MapExtent {
    type Error = Error;
    fn try_from(e: &Extent) -> Result<MapExtent, Error> {
        let mut flags = 0;
        if e.object.is_none() {
            flags |= MapExtent::ZERO;
        }
        if e.pending {
            flags |= MapExtent::PENDING;
        }
        if e.missing_reads_zero {
            flags |= MapExtent::MISSING_READS_ZERO;
        }
        Ok(MapExtent {
            index: e.index,
            offset_in_object: e.offset_in_object,
            len: e.len,
            flags,
            reserved: 0,
            object: NameField::new(e.object.as_deref().unwrap_or("").as_bytes())?,
        })
    }
}

impl From<MapExtent> for Extent {
    fn from(e: MapExtent) -> Extent {
        Extent {
            index: e.index,
            object: (e.flags & MapExtent::ZERO == 0).then(|| e.object.to_string_lossy()),
            offset_in_object: e.offset_in_object,
            len: e.len,
            pending: e.flags & MapExtent::PENDING != 0,
            missing_reads_zero: e.flags & MapExtent::MISSING_READS_ZERO != 0,
        }
    }
}

/// One extent of a MAP_READ or MAP_WRITE reply: a piece of the request
/// inside one object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(C)]
pub struct MapExtent {
    /// Object index in the volume.
    pub index: u64,
    /// Offset inside the object.
    pub offset_in_object: u64,
    /// Bytes.
    pub len: u64,
    /// [`MapExtent::ZERO`], [`MapExtent::PENDING`],
    /// [`MapExtent::MISSING_READS_ZERO`].
    pub flags: u32,
    /// Zero.
    pub reserved: u32,
    /// The data object (empty with `ZERO`).
    pub object: NameField,
}
sized!(MapExtent, 296);

impl MapExtent {
    /// No object: reads as zeros.
    pub const ZERO: u32 = 1;
    /// Write replies: commit the index with MAP_COMMIT once written.
    pub const PENDING: u32 = 2;
    /// The object is owned by the volume: missing, it reads as zeros.
    pub const MISSING_READS_ZERO: u32 = 4;
    /// Every defined extent flag.
    pub const ALL_FLAGS: u32 = 7;
}

impl Payload for MapExtent {
    const SIZE: usize = 296;
    fn encode(&self, out: &mut [u8]) -> Result<(), Error> {
        if out.len() < Self::SIZE {
            return Err(short("map extent", out.len(), Self::SIZE));
        }
        let mut w = Writer(out, 0);
        w.u64(self.index);
        w.u64(self.offset_in_object);
        w.u64(self.len);
        w.u32(self.flags);
        w.u32(0);
        self.object.write(&mut w);
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < Self::SIZE {
            return Err(short("map extent", bytes.len(), Self::SIZE));
        }
        let mut r = Reader(bytes, 0);
        let (index, offset_in_object, len, flags) = (r.u64(), r.u64(), r.u64(), r.u32());
        let _reserved = r.u32();
        let object = NameField::read(&mut r)?;
        if flags & !MapExtent::ALL_FLAGS != 0 {
            return Err(Error::with(
                ErrorCode::InvalidArgument,
                format!("unknown map extent flags {flags:#x}"),
            ));
        }
        Ok(MapExtent {
            index,
            offset_in_object,
            len,
            flags,
            reserved: 0,
            object,
        })
    }
}

/// Bytes of the header of a list payload (map reply, commit list).
pub const LIST_HEADER: usize = 8;

/// Bytes a MAP_READ / MAP_WRITE reply of `count` extents takes.
pub fn extents_size(count: usize) -> usize {
    LIST_HEADER + count * MapExtent::SIZE
}

/// Bytes of the trailer a MAP_WRITE or DISCARD reply carries after its
/// extents since protocol version 2: the fencing token (u64, little
/// endian) of the volume's lock the extents were mapped under, which the
/// composer puts in each data write ([`FencedTarget`](super::FencedTarget)).
pub const MAP_TOKEN_SIZE: usize = 8;

/// Appends the lock's `token` after the `extents_len` bytes of an encoded
/// map reply in `out`; returns the reply's new length.
pub fn encode_map_token(out: &mut [u8], extents_len: usize, token: u64) -> Result<usize, Error> {
    let need = extents_len + MAP_TOKEN_SIZE;
    if out.len() < need {
        return Err(short("map reply token", out.len(), need));
    }
    out[extents_len..need].copy_from_slice(&token.to_le_bytes());
    Ok(need)
}

/// The lock's token after the extents of a map reply of `reply_len`
/// bytes, `None` if it carries none (MAP_READ, or a mapper without locks).
pub fn decode_map_token(reply: &[u8]) -> Result<Option<u64>, Error> {
    let count = list_count(reply, "map reply", MapExtent::SIZE)?;
    let at = extents_size(count);
    Ok(reply
        .get(at..at + MAP_TOKEN_SIZE)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))))
}

/// Room for a map reply (MAP_READ, MAP_WRITE, DISCARD) covering `bytes`
/// of a volume: the most extents that many bytes can touch (the smallest
/// objects, unaligned at both ends) and the token, at least a [`LockOwner`] (a `Locked`
/// failure names the holder there), at most `max_buffer` (the segment's
/// largest buffer).
pub fn map_reply_room(bytes: u64, max_buffer: u64) -> u64 {
    let most = (bytes / crate::sizes::MIN_OBJECT_SIZE).saturating_add(2);
    let room = ((extents_size(0) + MAP_TOKEN_SIZE) as u64)
        .saturating_add(most.saturating_mul(MapExtent::SIZE as u64));
    room.max(LockOwner::SIZE as u64).min(max_buffer)
}

pub(super) fn list_count(bytes: &[u8], what: &str, item: usize) -> Result<usize, Error> {
    if bytes.len() < LIST_HEADER {
        return Err(short(what, bytes.len(), LIST_HEADER));
    }
    let count = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let need = count
        .checked_mul(item)
        .and_then(|n| n.checked_add(LIST_HEADER))
        .ok_or_else(|| Error::with(ErrorCode::InvalidArgument, format!("{what}: count {count}")))?;
    if bytes.len() < need {
        return Err(short(what, bytes.len(), need));
    }
    Ok(count)
}

/// Encodes a map reply into `out`; returns the bytes used.
pub fn encode_extents(extents: &[MapExtent], out: &mut [u8]) -> Result<usize, Error> {
    let need = extents_size(extents.len());
    if out.len() < need {
        return Err(short("map reply", out.len(), need));
    }
    let count = u32::try_from(extents.len())
        .map_err(|_| Error::with(ErrorCode::InvalidArgument, "too many extents"))?;
    out[..4].copy_from_slice(&count.to_le_bytes());
    out[4..8].fill(0);
    for (i, e) in extents.iter().enumerate() {
        e.encode(&mut out[LIST_HEADER + i * MapExtent::SIZE..])?;
    }
    Ok(need)
}

/// Decodes a map reply.
pub fn decode_extents(bytes: &[u8]) -> Result<Vec<MapExtent>, Error> {
    let count = list_count(bytes, "map reply", MapExtent::SIZE)?;
    (0..count)
        .map(|i| MapExtent::decode(&bytes[LIST_HEADER + i * MapExtent::SIZE..]))
        .collect()
}

/// Encodes a MAP_COMMIT list of object indexes.
pub fn encode_commit(indexes: &[u64]) -> Result<Vec<u8>, Error> {
    let count = u32::try_from(indexes.len())
        .map_err(|_| Error::with(ErrorCode::InvalidArgument, "too many indexes"))?;
    let mut v = Vec::with_capacity(LIST_HEADER + 8 * indexes.len());
    v.extend_from_slice(&count.to_le_bytes());
    v.extend_from_slice(&[0; 4]);
    for i in indexes {
        v.extend_from_slice(&i.to_le_bytes());
    }
    Ok(v)
}

/// Decodes a MAP_COMMIT list of object indexes.
pub fn decode_commit(bytes: &[u8]) -> Result<Vec<u64>, Error> {
    let count = list_count(bytes, "commit list", 8)?;
    Ok(bytes[LIST_HEADER..LIST_HEADER + 8 * count]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Mapper HASH reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct HashReply {
    /// Non-zero entries before hashing.
    pub objects: u64,
    /// Distinct content objects afterwards.
    pub distinct: u64,
    /// Storage no longer needed once old objects are collected.
    pub bytes_saved: u64,
    /// Objects found to be all zeros.
    pub zero_objects: u64,
}
sized!(HashReply, 32);

impl Payload for HashReply {
    const SIZE: usize = 32;
    fn encode(&self, out: &mut [u8]) -> Result<(), Error> {
        if out.len() < Self::SIZE {
            return Err(short("hash", out.len(), Self::SIZE));
        }
        let mut w = Writer(out, 0);
        for v in [
            self.objects,
            self.distinct,
            self.bytes_saved,
            self.zero_objects,
        ] {
            w.u64(v);
        }
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < Self::SIZE {
            return Err(short("hash", bytes.len(), Self::SIZE));
        }
        let mut r = Reader(bytes, 0);
        Ok(HashReply {
            objects: r.u64(),
            distinct: r.u64(),
            bytes_saved: r.u64(),
            zero_objects: r.u64(),
        })
    }
}

/// What a HASH did to the other maps naming the snapshot's objects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HashRebase {
    /// Maps moved onto the content objects.
    pub maps_moved: u64,
    /// Maps still naming replaced objects (all of them, even those whose
    /// names did not fit).
    pub maps_left: u64,
    /// The names of those maps that fit in the reply.
    pub names: Vec<String>,
}

/// Writes `reply` and `rebase` into `out` (see the module docs); returns
/// the bytes used. Names that do not fit are left out (`maps_left` still
/// counts them); with no room for the counts, only the [`HashReply`].
pub fn encode_hash_rebase(
    reply: &HashReply,
    rebase: &HashRebase,
    out: &mut [u8],
) -> Result<usize, Error> {
    reply.encode(out)?;
    let mut at = HashReply::SIZE;
    if out.len() < at + 16 {
        return Ok(at);
    }
    out[at..at + 8].copy_from_slice(&rebase.maps_moved.to_le_bytes());
    out[at + 8..at + 16].copy_from_slice(&rebase.maps_left.to_le_bytes());
    at += 16;
    for n in &rebase.names {
        let b = n.as_bytes();
        if b.contains(&0) || out.len() < at + b.len() + 1 {
            break;
        }
        out[at..at + b.len()].copy_from_slice(b);
        out[at + b.len()] = 0;
        at += b.len() + 1;
    }
    Ok(at)
}

/// Reads a HASH reply: the [`HashReply`] and, from a mapper that sent
/// them, the counts and names (`None` from an older mapper).
pub fn decode_hash_rebase(bytes: &[u8]) -> Result<(HashReply, Option<HashRebase>), Error> {
    let reply = HashReply::decode(bytes)?;
    let rest = &bytes[HashReply::SIZE..];
    if rest.len() < 16 {
        return Ok((reply, None));
    }
    let maps_moved = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
    let maps_left = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
    let mut names = Vec::new();
    for n in rest[16..].split(|&b| b == 0) {
        if n.is_empty() {
            continue;
        }
        names.push(
            String::from_utf8(n.to_vec())
                .map_err(|_| Error::with(ErrorCode::Io, "hash reply: a map name is not UTF-8"))?,
        );
    }
    Ok((
        reply,
        Some(HashRebase {
            maps_moved,
            maps_left,
            names,
        }),
    ))
}
