//! Blocking calls to Archipelago peers over xseg.
//!
//! A [`Client`] binds a dynamic port and sends one request at a time,
//! waiting for its reply. Every wait is bounded: past the timeout, or as
//! soon as the destination's owner is found dead, the client recovers the
//! dead port (which fails the request back) and returns
//! [`ErrorCode::PeerDied`]; a peer that is merely slow gives
//! [`ErrorCode::Busy`] after the timeout.
//!
//! ```no_run
//! use archipelago_client::Client;
//! let client = Client::connect("archipelago").unwrap();
//! client.ping(1).unwrap();
//! client.write(1, "obj1", 0, b"hello", false).unwrap();
//! assert_eq!(client.read(1, "obj1", 0, 5).unwrap(), b"hello");
//! ```

#![warn(missing_docs)]

use std::time::{Duration, Instant};

mod lineage;
mod queue;
mod remote;
mod volume;

pub use lineage::{FlattenProgress, LineageNode};
pub use queue::{
    CompletedData, CompletedRef, Completion, IoQueue, DEFAULT_DEPTH, HEALTH_CHECK_INTERVAL,
};
pub use remote::RemoteStore;
pub use volume::{VolumeExtent, VolumeInfo};

use archipelago_protocol::payload::{
    CopyRequest, InfoReply, LockOwner, NameField, Payload, StatsReply,
};
use archipelago_protocol::{Error, ErrorCode, Flags, Op, Route};
use archipelago_wire::attach;
pub use archipelago_wire::Call;
use xseg_shm::{status, Port};

/// A reply: bytes serviced and the data buffer's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Bytes the peer reports done.
    pub serviced: u64,
    /// The data buffer after the call.
    pub data: Vec<u8>,
}

/// A client port.
pub struct Client {
    port: Port,
    timeout: Duration,
    next_tag: std::cell::Cell<u64>,
    drained: bool,
}

/// How often a waiting call checks that its peer is alive (about the
/// doorbell's sleep timeout, which bounds how late the check can come).
const LIVENESS_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

impl Client {
    /// Attaches to `segment` (name or path) and binds a dynamic port.
    pub fn connect(segment: &str) -> Result<Client, Error> {
        let port = attach(segment)?
            .bind_dynamic()
            .map_err(|e| Error::with(ErrorCode::Busy, e.to_string()))?;
        Ok(Client {
            port,
            timeout: Duration::from_secs(30),
            next_tag: std::cell::Cell::new(1),
            drained: false,
        })
    }

    /// The largest request buffer of the segment: the most one request
    /// carries.
    pub fn max_buffer(&self) -> u64 {
        self.port.segment().max_buffer()
    }

    /// Sets how long a call may wait for its reply.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Marks every barrier this client sends (SNAPSHOT, RESIZE, RENAME,
    /// DELETE, CLOSE, ROLLBACK) as having passed a drain, as vlmcd does:
    /// mapperd refuses unmarked ones. Only for a caller that talks to
    /// mapperd directly and knows no I/O of the volume is in flight (the
    /// end-to-end tests of mapperd); tools send volume operations to
    /// vlmcd, which drains the volume and marks them itself.
    pub fn drained(mut self) -> Client {
        self.drained = true;
        self
    }

    /// The client's port.
    pub fn port(&self) -> &Port {
        &self.port
    }

    /// Sends `call` and waits for its reply.
    pub fn call(&self, call: &Call<'_>) -> Result<Reply, Error> {
        let p = &self.port;
        let tag = self.next_tag.get();
        self.next_tag.set(tag.wrapping_add(1));
        let index = if self.drained && call.op.spec().composer == Route::Barrier {
            let marked = Call {
                flags: call.flags | Flags::DRAINED,
                ..call.clone()
            };
            archipelago_wire::submit(p, &marked, tag)?
        } else {
            archipelago_wire::submit(p, call, tag)?
        };
        let reply = self.wait(call.dst, index, tag)?;
        let d = p.desc(&reply);
        let result = if d.status() == status::SERVED {
            Ok(Reply {
                serviced: d.serviced(),
                data: p.data(&reply).to_vec(),
            })
        } else {
            // The peer's detail if it gave one, else the name we asked about.
            Err(archipelago_wire::reply::error_of(d, || {
                String::from_utf8_lossy(call.target).into_owned()
            }))
        };
        p.put(reply);
        result
    }

    fn wait(&self, dst: u32, index: u32, tag: u64) -> Result<xseg_shm::Request, Error> {
        let start = Instant::now();
        let mut checked = start;
        let seg = self.port.segment();
        let died = || Error::with(ErrorCode::PeerDied, format!("the peer on port {dst} died"));
        loop {
            if let Some(r) = self.receive(tag) {
                return Ok(r);
            }
            // Every LIVENESS_CHECK at most, not at every wake-up (a look
            // at the owner's /proc entry costs more than most calls): is
            // the peer still there? If its owner died, recovering its port
            // fails our request back to us if it had accepted it; if it
            // had not, we take it back from the queue.
            if checked.elapsed() < LIVENESS_CHECK {
                self.port.sleep();
                continue;
            }
            checked = Instant::now();
            if let Some(pid) = seg.dead_owner(dst) {
                match seg.recover(dst) {
                    Ok(report) => {
                        log::warn!("port {dst}: its peer (pid {pid}) died; recovered: {report:?}")
                    }
                    Err(e) => log::debug!("port {dst}: {e}"),
                }
                if let Some(r) = self.receive(tag) {
                    return Ok(r);
                }
                if let Some(r) = self.port.cancel(index) {
                    self.port.put(r);
                    return Err(died());
                }
            }
            if start.elapsed() > self.timeout {
                return Err(Error::with(
                    ErrorCode::Busy,
                    format!("no reply from port {dst} within {:?}", self.timeout),
                ));
            }
            self.port.sleep();
        }
    }

    /// The reply tagged `tag`, if it arrived; replies to calls that gave
    /// up earlier are put back.
    fn receive(&self, tag: u64) -> Option<xseg_shm::Request> {
        while let Some(r) = self.port.receive() {
            if self.port.desc(&r).tag() == tag {
                return Some(r);
            }
            self.port.put(r);
        }
        None
    }

    /// PING.
    pub fn ping(&self, dst: u32) -> Result<(), Error> {
        self.call(&Call::new(dst, Op::Ping, b"")).map(|_| ())
    }

    /// STATS.
    pub fn stats(&self, dst: u32) -> Result<StatsReply, Error> {
        let r = self.call(&Call {
            reply_room: StatsReply::SIZE as u64,
            ..Call::new(dst, Op::Stats, b"")
        })?;
        StatsReply::decode(&r.data)
    }

    /// READ `len` bytes of `name` at `offset`.
    pub fn read(&self, dst: u32, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        let call = Call {
            offset,
            size: len,
            reply_room: len,
            ..Call::new(dst, Op::Read, name.as_bytes())
        };
        let mut r = self.call(&call)?;
        r.data.truncate(len as usize);
        Ok(r.data)
    }

    /// WRITE `data` into `name` at `offset`; `fua` makes it durable before
    /// the reply.
    pub fn write(
        &self,
        dst: u32,
        name: &str,
        offset: u64,
        data: &[u8],
        fua: bool,
    ) -> Result<(), Error> {
        let flags = if fua { Flags::FUA } else { Flags::NONE };
        let call = Call {
            offset,
            size: data.len() as u64,
            flags,
            data,
            ..Call::new(dst, Op::Write, name.as_bytes())
        };
        self.call(&call).map(|_| ())
    }

    /// WRITE with [`Flags::FENCED`]: as [`write`](Self::write), refused
    /// (`Fenced`) by the blocker if the store's token for `lock` is newer
    /// than `token`. The fence travels in the target
    /// ([`FencedTarget`](archipelago_protocol::payload::FencedTarget)):
    /// `InvalidArgument` if `name` and `lock` do not fit it.
    #[allow(clippy::too_many_arguments)]
    pub fn write_fenced(
        &self,
        dst: u32,
        name: &str,
        offset: u64,
        data: &[u8],
        fua: bool,
        lock: &str,
        token: u64,
    ) -> Result<(), Error> {
        let flags = if fua { Flags::FUA } else { Flags::NONE } | Flags::FENCED;
        let target = fenced_target(name, lock, token)?;
        let call = Call {
            offset,
            size: data.len() as u64,
            flags,
            data,
            ..Call::new(dst, Op::Write, &target)
        };
        self.call(&call).map(|_| ())
    }

    /// WRITE_FULL with [`Flags::FENCED`] (see [`write_fenced`](Self::write_fenced)).
    pub fn write_full_fenced(
        &self,
        dst: u32,
        name: &str,
        data: &[u8],
        lock: &str,
        token: u64,
    ) -> Result<(), Error> {
        let target = fenced_target(name, lock, token)?;
        let call = Call {
            size: data.len() as u64,
            flags: Flags::FENCED,
            data,
            ..Call::new(dst, Op::WriteFull, &target)
        };
        self.call(&call).map(|_| ())
    }

    /// ACQUIRE with [`Flags::FENCED`]: raises the fence of the lock
    /// `name` in the blocker's store to at least `token` (the lock itself
    /// is untouched); returns the fence now recorded.
    pub fn raise_fence(&self, dst: u32, name: &str, token: u64) -> Result<u64, Error> {
        let payload = LockOwner {
            token,
            owner: NameField::new(b"")?,
        }
        .to_vec();
        let call = Call {
            data: &payload,
            flags: Flags::FENCED,
            ..Call::new(dst, Op::Acquire, name.as_bytes())
        };
        let r = self.call(&call)?;
        Ok(LockOwner::decode(&r.data)?.token)
    }

    /// WRITE_FULL: replace `name` with `data` atomically.
    pub fn write_full(&self, dst: u32, name: &str, data: &[u8]) -> Result<(), Error> {
        let call = Call {
            size: data.len() as u64,
            data,
            ..Call::new(dst, Op::WriteFull, name.as_bytes())
        };
        self.call(&call).map(|_| ())
    }

    /// DELETE.
    pub fn delete(&self, dst: u32, name: &str) -> Result<(), Error> {
        self.call(&Call::new(dst, Op::Delete, name.as_bytes()))
            .map(|_| ())
    }

    /// DELETE with [`Flags::FENCED`]: refused once the lock `lock` held
    /// with `token` was broken (see [`write_fenced`](Self::write_fenced)).
    pub fn delete_fenced(&self, dst: u32, name: &str, lock: &str, token: u64) -> Result<(), Error> {
        let target = fenced_target(name, lock, token)?;
        self.call(&Call {
            flags: Flags::FENCED,
            ..Call::new(dst, Op::Delete, &target)
        })
        .map(|_| ())
    }

    /// INFO: the object's size.
    pub fn info(&self, dst: u32, name: &str) -> Result<InfoReply, Error> {
        let r = self.call(&Call {
            reply_room: InfoReply::SIZE as u64,
            ..Call::new(dst, Op::Info, name.as_bytes())
        })?;
        InfoReply::decode(&r.data)
    }

    /// COPY `len` bytes from `src` at `src_offset` to `dst_name` at `offset`.
    pub fn copy(
        &self,
        dst: u32,
        src: &str,
        src_offset: u64,
        dst_name: &str,
        offset: u64,
        len: u64,
    ) -> Result<(), Error> {
        self.copy_call(
            dst,
            src,
            src_offset,
            dst_name.as_bytes(),
            offset,
            len,
            Flags::NONE,
        )
    }

    /// COPY, durable when acknowledged if `fua`.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_fua(
        &self,
        dst: u32,
        src: &str,
        src_offset: u64,
        dst_name: &str,
        offset: u64,
        len: u64,
        fua: bool,
    ) -> Result<(), Error> {
        let flags = if fua { Flags::FUA } else { Flags::NONE };
        self.copy_call(
            dst,
            src,
            src_offset,
            dst_name.as_bytes(),
            offset,
            len,
            flags,
        )
    }

    /// COPY with [`Flags::FENCED`]: a copy-up into `dst_name` under the
    /// lock `lock` held with `token` (see
    /// [`ObjectStore::copy_up`](archipelago_store::ObjectStore::copy_up)).
    #[allow(clippy::too_many_arguments)]
    pub fn copy_up(
        &self,
        dst: u32,
        src: &str,
        src_offset: u64,
        dst_name: &str,
        offset: u64,
        len: u64,
        lock: &str,
        token: u64,
    ) -> Result<(), Error> {
        let target = fenced_target(dst_name, lock, token)?;
        self.copy_call(dst, src, src_offset, &target, offset, len, Flags::FENCED)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_call(
        &self,
        dst: u32,
        src: &str,
        src_offset: u64,
        target: &[u8],
        offset: u64,
        len: u64,
        flags: Flags,
    ) -> Result<(), Error> {
        let payload = CopyRequest {
            src_offset,
            src: NameField::new(src.as_bytes())?,
        }
        .to_vec();
        let call = Call {
            offset,
            size: len,
            data: &payload,
            flags,
            ..Call::new(dst, Op::Copy, target)
        };
        self.call(&call).map(|_| ())
    }

    /// HASH: store `len` bytes of `name` from `offset` under their content
    /// name; returns it.
    pub fn hash(&self, dst: u32, name: &str, offset: u64, len: u64) -> Result<String, Error> {
        let call = Call {
            offset,
            size: len,
            reply_room: NameField::SIZE as u64,
            ..Call::new(dst, Op::Hash, name.as_bytes())
        };
        let r = self.call(&call)?;
        Ok(NameField::decode(&r.data)?.to_string_lossy())
    }

    /// SYNC: everything acknowledged so far is durable.
    pub fn sync(&self, dst: u32) -> Result<(), Error> {
        self.call(&Call::new(dst, Op::Sync, b"")).map(|_| ())
    }

    /// ACQUIRE the lock `name` for `owner`; returns its fencing token.
    pub fn acquire(&self, dst: u32, name: &str, owner: &str) -> Result<u64, Error> {
        let payload = LockOwner {
            token: 0,
            owner: NameField::new(owner.as_bytes())?,
        }
        .to_vec();
        let call = Call {
            data: &payload,
            flags: Flags::NO_WAIT,
            ..Call::new(dst, Op::Acquire, name.as_bytes())
        };
        let r = self.call(&call)?;
        Ok(LockOwner::decode(&r.data)?.token)
    }

    /// RELEASE the lock `name` held by `owner` (`force`: whoever holds it).
    pub fn release(&self, dst: u32, name: &str, owner: &str, force: bool) -> Result<(), Error> {
        let payload = LockOwner {
            token: 0,
            owner: NameField::new(owner.as_bytes())?,
        }
        .to_vec();
        let flags = if force { Flags::FORCE } else { Flags::NONE };
        let call = Call {
            data: &payload,
            flags,
            ..Call::new(dst, Op::Release, name.as_bytes())
        };
        self.call(&call).map(|_| ())
    }

    /// HASH with an empty target: stores `data` by content (trailing zeros
    /// stripped) and returns its content name.
    pub fn store_content(&self, dst: u32, data: &[u8], fua: bool) -> Result<String, Error> {
        let call = Call {
            size: data.len() as u64,
            data,
            flags: if fua { Flags::FUA } else { Flags::NONE },
            reply_room: NameField::SIZE as u64,
            ..Call::new(dst, Op::Hash, b"")
        };
        let r = self.call(&call)?;
        Ok(NameField::decode(&r.data)?.to_string_lossy())
    }

    /// RELEASE with FORCE: breaks the lock `name` whoever holds it; returns
    /// the previous owner (`None` if it was free).
    pub fn break_lock(&self, dst: u32, name: &str) -> Result<Option<String>, Error> {
        let payload = LockOwner {
            token: 0,
            owner: NameField::new(b"")?,
        }
        .to_vec();
        let call = Call {
            data: &payload,
            flags: Flags::FORCE,
            ..Call::new(dst, Op::Release, name.as_bytes())
        };
        let r = self.call(&call)?;
        let owner = LockOwner::decode(&r.data)?.owner.to_string_lossy();
        Ok((!owner.is_empty()).then_some(owner))
    }

    /// LOCK_INFO: the owner and token of the lock `name`, `None` if free.
    pub fn lock_owner(&self, dst: u32, name: &str) -> Result<Option<(String, u64)>, Error> {
        let call = Call {
            reply_room: LockOwner::SIZE as u64,
            ..Call::new(dst, Op::LockInfo, name.as_bytes())
        };
        match self.call(&call) {
            Ok(r) => {
                let l = LockOwner::decode(&r.data)?;
                Ok(Some((l.owner.to_string_lossy(), l.token)))
            }
            Err(e) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// OPEN_LIST to a mapper: the volumes open for writing on its host.
    pub fn open_volumes(&self, mapperd: u32) -> Result<Vec<String>, Error> {
        let mut room = 64 << 10;
        loop {
            match self.call(&Call {
                reply_room: room,
                ..Call::new(mapperd, Op::OpenList, b"")
            }) {
                Ok(r) => return Ok(nul_separated(&r)),
                // Many open volumes: once more with room for thousands.
                Err(e) if e.code == ErrorCode::NoSpace && room < 4 << 20 => room = 4 << 20,
                Err(e) => return Err(e),
            }
        }
    }

    /// LIST object names starting with `prefix` (at most `room` bytes of
    /// names).
    pub fn list(&self, dst: u32, prefix: &str, room: u64) -> Result<Vec<String>, Error> {
        let r = self.call(&Call {
            reply_room: room,
            ..Call::new(dst, Op::List, prefix.as_bytes())
        })?;
        Ok(nul_separated(&r))
    }
}

impl Client {
    /// One page of LIST (flag PAGED): at most `limit` names starting with
    /// `prefix` from the opaque `cursor` (at most `room` bytes of reply),
    /// and the next page's cursor (`None` after the last page).
    pub fn list_page(
        &self,
        dst: u32,
        prefix: &str,
        cursor: Option<&str>,
        limit: u64,
        room: u64,
    ) -> Result<(Vec<String>, Option<String>), Error> {
        let cursor = cursor.unwrap_or("").as_bytes();
        let r = self.call(&Call {
            reply_room: room,
            offset: limit,
            size: cursor.len() as u64,
            data: cursor,
            flags: Flags::PAGED,
            ..Call::new(dst, Op::List, prefix.as_bytes())
        })?;
        let used = &r.data[..(r.serviced as usize).min(r.data.len())];
        let Some(end) = used.iter().position(|&b| b == 0) else {
            return Err(Error::with(
                ErrorCode::Io,
                "a paged LIST reply without its cursor",
            ));
        };
        let next = (end > 0).then(|| String::from_utf8_lossy(&used[..end]).into_owned());
        let names = used[end + 1..]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        Ok((names, next))
    }
}

/// The names of a LIST-style reply: `serviced` bytes of NUL-terminated
/// names.
fn nul_separated(r: &Reply) -> Vec<String> {
    let used = &r.data[..(r.serviced as usize).min(r.data.len())];
    used.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The target of a fenced write of `object` under `lock` at `token`.
fn fenced_target(object: &str, lock: &str, token: u64) -> Result<Vec<u8>, Error> {
    use archipelago_protocol::payload::FencedTarget;
    let target = FencedTarget {
        object,
        lock,
        token,
    };
    Ok(target.encode()?)
}
