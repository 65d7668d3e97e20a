//! Volume operations: management calls served by the mapper (`mapperd`),
//! which the composer (`vlmcd`) also accepts and passes on, and volume I/O
//! through the composer. Every call takes the port to send to.

use archipelago_protocol::payload::{
    decode_extents, decode_hash_rebase, encode_commit, map_reply_room, CloneRequest, CreateRequest,
    HashRebase, HashReply, LockOwner, NameField, Payload,
};
use archipelago_protocol::{Error, Flags, Op};

use crate::{Call, Client, Reply};

pub use archipelago_protocol::payload::VolumeInfo;

/// A piece of a volume range inside one object (MAP_READ, MAP_WRITE):
/// the protocol's [`Extent`](archipelago_protocol::payload::Extent).
pub use archipelago_protocol::payload::Extent as VolumeExtent;

/// Largest map reply a client asks room for.
const MAX_MAP_REPLY: u64 = 4 << 20;

/// Room for any mapper reply: at least a [`LockOwner`], which carries the
/// owner of a `Locked` refusal.
fn room(n: usize) -> u64 {
    n.max(LockOwner::SIZE) as u64
}

impl Client {
    fn volume_call(
        &self,
        dst: u32,
        op: Op,
        name: &str,
        data: &[u8],
        reply: usize,
    ) -> Result<Reply, Error> {
        self.call(&Call {
            data,
            reply_room: room(reply),
            ..Call::new(dst, op, name.as_bytes())
        })
    }

    /// CREATE a volume of `size` bytes (`object_size` `None`: the default).
    pub fn create_volume(
        &self,
        dst: u32,
        name: &str,
        size: u64,
        object_size: Option<u64>,
    ) -> Result<(), Error> {
        let payload = CreateRequest {
            size,
            object_size: object_size.unwrap_or(0),
            flags: 0,
            reserved: 0,
        }
        .to_vec();
        self.volume_call(dst, Op::Create, name, &payload, 0)
            .map(|_| ())
    }

    /// INFO of a volume.
    pub fn volume_info(&self, dst: u32, name: &str) -> Result<VolumeInfo, Error> {
        let r = self.volume_call(dst, Op::Info, name, &[], VolumeInfo::SIZE)?;
        VolumeInfo::decode(&r.data)
    }

    /// OPEN a volume (`writable`: take its lock for this mapper's host).
    pub fn open_volume(&self, dst: u32, name: &str, writable: bool) -> Result<VolumeInfo, Error> {
        let r = self.call(&Call {
            flags: if writable {
                Flags::WRITABLE
            } else {
                Flags::NONE
            },
            reply_room: room(VolumeInfo::SIZE),
            ..Call::new(dst, Op::Open, name.as_bytes())
        })?;
        VolumeInfo::decode(&r.data)
    }

    /// OPEN a volume writable and hold it unchanged (`EXCLUSIVE`, for an
    /// export): `Busy` if it is open for writing on this host. CLOSE
    /// releases it.
    pub fn open_volume_exclusive(&self, dst: u32, name: &str) -> Result<VolumeInfo, Error> {
        let r = self.call(&Call {
            flags: Flags::WRITABLE | Flags::EXCLUSIVE,
            reply_room: room(VolumeInfo::SIZE),
            ..Call::new(dst, Op::Open, name.as_bytes())
        })?;
        VolumeInfo::decode(&r.data)
    }

    /// CLOSE a volume.
    pub fn close_volume(&self, dst: u32, name: &str) -> Result<(), Error> {
        self.volume_call(dst, Op::Close, name, &[], 0).map(|_| ())
    }

    /// SNAPSHOT `volume` as `snap`.
    pub fn snapshot(&self, dst: u32, volume: &str, snap: &str) -> Result<(), Error> {
        let payload = NameField::new(snap.as_bytes())?.to_vec();
        self.volume_call(dst, Op::Snapshot, volume, &payload, 0)
            .map(|_| ())
    }

    /// CLONE snapshot `snap` as `new_name` (`size` `None`: the snapshot's).
    pub fn clone_volume(
        &self,
        dst: u32,
        snap: &str,
        new_name: &str,
        size: Option<u64>,
    ) -> Result<(), Error> {
        let payload = CloneRequest {
            size: size.unwrap_or(0),
            src: NameField::new(snap.as_bytes())?,
        }
        .to_vec();
        self.volume_call(dst, Op::Clone, new_name, &payload, 0)
            .map(|_| ())
    }

    /// DELETE (remove) a volume or snapshot.
    pub fn remove_volume(&self, dst: u32, name: &str) -> Result<(), Error> {
        self.volume_call(dst, Op::Delete, name, &[], 0).map(|_| ())
    }

    /// DELETE with FORCE: removes a volume whose map cannot be read (a
    /// corrupt header; refused for a readable one).
    pub fn remove_corrupt_volume(&self, dst: u32, name: &str) -> Result<(), Error> {
        self.call(&Call {
            flags: Flags::FORCE,
            reply_room: room(0),
            ..Call::new(dst, Op::Delete, name.as_bytes())
        })
        .map(|_| ())
    }

    /// RENAME a volume.
    pub fn rename_volume(&self, dst: u32, old: &str, new: &str) -> Result<(), Error> {
        let payload = NameField::new(new.as_bytes())?.to_vec();
        self.volume_call(dst, Op::Rename, old, &payload, 0)
            .map(|_| ())
    }

    /// RESIZE a volume (`force`: allow shrinking).
    pub fn resize_volume(&self, dst: u32, name: &str, size: u64, force: bool) -> Result<(), Error> {
        self.call(&Call {
            size,
            flags: if force { Flags::FORCE } else { Flags::NONE },
            reply_room: room(0),
            ..Call::new(dst, Op::Resize, name.as_bytes())
        })
        .map(|_| ())
    }

    fn map(
        &self,
        dst: u32,
        op: Op,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<VolumeExtent>, Error> {
        self.map_sized(dst, op, name, offset, len, len)
    }

    /// A map request with room for the extents `cover` bytes can touch.
    fn map_sized(
        &self,
        dst: u32,
        op: Op,
        name: &str,
        offset: u64,
        len: u64,
        cover: u64,
    ) -> Result<Vec<VolumeExtent>, Error> {
        let reply = map_reply_room(cover, MAX_MAP_REPLY);
        let r = self.call(&Call {
            offset,
            size: len,
            reply_room: room(reply as usize),
            ..Call::new(dst, op, name.as_bytes())
        })?;
        Ok(decode_extents(&r.data)?
            .into_iter()
            .map(VolumeExtent::from)
            .collect())
    }

    /// MAP_READ: the objects holding `len` bytes of `name` at `offset`.
    pub fn map_read(
        &self,
        dst: u32,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<VolumeExtent>, Error> {
        self.map(dst, Op::MapRead, name, offset, len)
    }

    /// MAP_WRITE: the objects to write `len` bytes of `name` at `offset`
    /// into (copying up shared ones); commit pending extents with
    /// [`map_commit`](Client::map_commit) once written.
    pub fn map_write(
        &self,
        dst: u32,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<VolumeExtent>, Error> {
        self.map(dst, Op::MapWrite, name, offset, len)
    }

    /// DISCARD `len` bytes of `name` at `offset` at the mapper itself:
    /// objects covered whole get zero entries; returns the write extents
    /// of the partly covered objects, which the caller must fill with
    /// zeros (and commit, if pending). The composer does all of it: see
    /// [`volume_discard`](Client::volume_discard).
    pub fn map_discard(
        &self,
        dst: u32,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<VolumeExtent>, Error> {
        // At most two partly covered objects come back.
        self.map_sized(dst, Op::Discard, name, offset, len, 0)
    }

    /// MAP_COMMIT the pending writes to these object indexes.
    pub fn map_commit(&self, dst: u32, name: &str, indexes: &[u64]) -> Result<(), Error> {
        let payload = encode_commit(indexes)?;
        self.volume_call(dst, Op::MapCommit, name, &payload, 0)
            .map(|_| ())
    }

    /// HASH a snapshot: convert its objects to content objects.
    pub fn hash_snapshot(&self, dst: u32, snap: &str) -> Result<HashReply, Error> {
        let r = self.volume_call(dst, Op::Hash, snap, &[], HashReply::SIZE)?;
        HashReply::decode(&r.data)
    }

    /// HASH a snapshot, waiting at most `wait` (`None`: the mapper's
    /// default; rounded to milliseconds) for the holders of open maps to
    /// move them onto the content objects: the reply, and what happened
    /// to the other maps (`None` from an older mapper). The call's own
    /// timeout must cover the wait.
    pub fn hash_snapshot_wait(
        &self,
        dst: u32,
        snap: &str,
        wait: Option<std::time::Duration>,
    ) -> Result<(HashReply, Option<HashRebase>), Error> {
        let ms = wait.map_or(0, |w| (w.as_millis() as u64).max(1));
        let r = self.call(&Call {
            size: ms,
            reply_room: room(HashReply::SIZE + 16 + (64 << 10)),
            ..Call::new(dst, Op::Hash, snap.as_bytes())
        })?;
        // Only the bytes the mapper wrote: the rest of the buffer is not
        // the reply's (the composer copies back the serviced bytes).
        decode_hash_rebase(&r.data[..(r.serviced as usize).min(r.data.len())])
    }

    /// UPDATE an old-format map to the current format.
    pub fn update_volume(&self, dst: u32, name: &str) -> Result<(), Error> {
        self.volume_call(dst, Op::Update, name, &[], 0).map(|_| ())
    }
}

/// Volume I/O through the composer (`vlmcd`).
impl Client {
    /// READ `len` bytes of volume `name` at `offset` (unwritten space reads
    /// as zeros; past the end is `OutOfRange`).
    pub fn volume_read(
        &self,
        dst: u32,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, Error> {
        self.read(dst, name, offset, len)
    }

    /// WRITE `data` into volume `name` at `offset`; `fua` makes it durable
    /// before the reply.
    pub fn volume_write(
        &self,
        dst: u32,
        name: &str,
        offset: u64,
        data: &[u8],
        fua: bool,
    ) -> Result<(), Error> {
        self.write(dst, name, offset, data, fua)
    }

    /// DISCARD `len` bytes of volume `name` at `offset`: they read as
    /// zeros afterwards; objects covered whole stop referring to storage.
    pub fn volume_discard(&self, dst: u32, name: &str, offset: u64, len: u64) -> Result<(), Error> {
        self.zero_range(dst, Op::Discard, name, offset, len)
    }

    /// WRITE_ZEROES over `len` bytes of volume `name` at `offset` (as
    /// [`volume_discard`](Client::volume_discard): the zeros are
    /// guaranteed either way).
    pub fn volume_write_zeroes(
        &self,
        dst: u32,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<(), Error> {
        self.zero_range(dst, Op::WriteZeroes, name, offset, len)
    }

    fn zero_range(&self, dst: u32, op: Op, name: &str, offset: u64, len: u64) -> Result<(), Error> {
        self.call(&Call {
            offset,
            size: len,
            reply_room: room(0),
            ..Call::new(dst, op, name.as_bytes())
        })
        .map(|_| ())
    }

    /// FLUSH volume `name`: once its writes in flight have finished, makes
    /// everything written durable.
    pub fn volume_flush(&self, dst: u32, name: &str) -> Result<(), Error> {
        self.call(&Call::new(dst, Op::Flush, name.as_bytes()))
            .map(|_| ())
    }
}
