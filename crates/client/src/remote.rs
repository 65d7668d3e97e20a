//! [`RemoteStore`]: an [`ObjectStore`] served by a blocker over xseg.

use std::sync::Mutex;

use archipelago_protocol::names::check_store_name;
use archipelago_protocol::names::MAX_STORE_NAME;
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::{
    check_copy, check_owner, check_range, Fence, ListPage, ObjectStat, ObjectStore, StoreError,
};

use crate::Client;

/// An [`ObjectStore`] whose objects live behind a blocker port.
///
/// Each call takes a [`Client`] from a small pool (a client owns a dynamic
/// port and serves one call at a time), creating one on demand, and gives
/// it back afterwards; concurrent callers each use their own client.
///
/// Names, lock owners and byte ranges are checked here first, as every
/// driver does, so bad arguments fail with the exact [`StoreError`] variant
/// without a round trip. Remote failures map back by protocol code:
/// `NotFound`, `Locked` (owner from the reply), `NoSpace`,
/// `InvalidArgument`; anything else (including a dead blocker) is
/// [`StoreError::Io`] carrying the protocol error.
///
/// [`read`](ObjectStore::read) costs two calls, a READ then an INFO (for
/// the size it must return): the size is not atomic with the data, which
/// only matters to a caller racing writers of the same object.
pub struct RemoteStore {
    segment: String,
    port: u32,
    pool: Mutex<Vec<Client>>,
}

impl RemoteStore {
    /// A store served by the blocker on `port` of `segment` (clients are
    /// connected lazily, on the first calls).
    pub fn new(segment: &str, port: u32) -> RemoteStore {
        RemoteStore {
            segment: segment.to_owned(),
            port,
            pool: Mutex::new(Vec::new()),
        }
    }

    /// The blocker port.
    pub fn port(&self) -> u32 {
        self.port
    }

    fn with<T>(
        &self,
        name: &str,
        op: &'static str,
        f: impl FnOnce(&Client, u32) -> Result<T, Error>,
    ) -> Result<T, StoreError> {
        let client = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let client = match client {
            Some(c) => c,
            None => Client::connect(&self.segment).map_err(|e| to_store(name, op, e))?,
        };
        let r = f(&client, self.port);
        // A client whose call failed in transport (its peer died, or it
        // timed out) may have replies in flight: drop it, binding a fresh
        // one next time.
        let keep = !matches!(
            &r,
            Err(e) if matches!(e.code, ErrorCode::PeerDied | ErrorCode::Busy)
        );
        if keep {
            self.pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(client);
        }
        r.map_err(|e| to_store(name, op, e))
    }
}

/// Maps a protocol error of a call about `name` onto a [`StoreError`].
fn to_store(name: &str, op: &'static str, e: Error) -> StoreError {
    let name = name.to_owned();
    match e.code {
        ErrorCode::NotFound => StoreError::NotFound { name },
        ErrorCode::Exists => StoreError::Exists { name },
        ErrorCode::Locked => StoreError::Locked {
            name,
            owner: e.detail,
        },
        ErrorCode::NoSpace => StoreError::NoSpace { name },
        ErrorCode::InvalidArgument => StoreError::InvalidArgument {
            name,
            why: "refused by the blocker",
        },
        ErrorCode::Unsupported => StoreError::Unsupported,
        // The blocker's client was blocklisted: our lock was broken.
        ErrorCode::Fenced => StoreError::Fenced { name },
        _ => StoreError::Io {
            name,
            op,
            source: std::io::Error::other(e.to_string()),
        },
    }
}

fn check_name(name: &str) -> Result<(), StoreError> {
    check_store_name(name.as_bytes())?;
    Ok(())
}

/// Checks the names of a fenced write of `name`, and that they fit the
/// request's target with the token
/// ([`FencedTarget`](archipelago_protocol::payload::FencedTarget)).
fn check_fenced(name: &str, fence: Fence<'_>) -> Result<(), StoreError> {
    use archipelago_protocol::payload::FencedTarget;
    check_name(name)?;
    check_name(fence.lock)?;
    let target = FencedTarget {
        object: name,
        lock: fence.lock,
        token: fence.token,
    };
    if target.len() > FencedTarget::MAX_LEN {
        return Err(StoreError::InvalidArgument {
            name: name.to_owned(),
            why: "object and lock names too long for a fenced write's target (256 bytes)",
        });
    }
    Ok(())
}

impl ObjectStore for RemoteStore {
    /// The segment's largest buffer (`None` if the segment cannot be
    /// reached now).
    fn max_object_bytes(&self) -> Option<u64> {
        self.with("segment", "max_object_bytes", |c, _| Ok(c.max_buffer()))
            .ok()
    }

    fn read(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<u64, StoreError> {
        check_name(name)?;
        check_range(name, offset, buf.len() as u64)?;
        self.with(name, "read", |c, port| {
            let data = c.read(port, name, offset, buf.len() as u64)?;
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            buf[n..].fill(0);
            Ok(c.info(port, name)?.size)
        })
    }

    fn write(&self, name: &str, offset: u64, data: &[u8], durable: bool) -> Result<(), StoreError> {
        check_name(name)?;
        check_range(name, offset, data.len() as u64)?;
        self.with(name, "write", |c, port| {
            c.write(port, name, offset, data, durable)
        })
    }

    fn write_full(&self, name: &str, data: &[u8], durable: bool) -> Result<(), StoreError> {
        check_name(name)?;
        self.with(name, "write_full", |c, port| {
            c.write_full(port, name, data)?;
            if durable {
                // WRITE_FULL carries no FUA: make it durable with a SYNC.
                c.sync(port)?;
            }
            Ok(())
        })
    }

    fn write_fenced(
        &self,
        name: &str,
        offset: u64,
        data: &[u8],
        durable: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        check_fenced(name, fence)?;
        check_range(name, offset, data.len() as u64)?;
        self.with(name, "write", |c, port| {
            c.write_fenced(port, name, offset, data, durable, fence.lock, fence.token)
        })
    }

    fn write_full_fenced(
        &self,
        name: &str,
        data: &[u8],
        durable: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        check_fenced(name, fence)?;
        self.with(name, "write_full", |c, port| {
            c.write_full_fenced(port, name, data, fence.lock, fence.token)?;
            if durable {
                c.sync(port)?;
            }
            Ok(())
        })
    }

    fn raise_fence(&self, lock: &str, token: u64) -> Result<u64, StoreError> {
        check_name(lock)?;
        self.with(lock, "raise_fence", |c, port| {
            c.raise_fence(port, lock, token)
        })
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name(name)?;
        self.with(name, "delete", |c, port| c.delete(port, name))
    }

    fn delete_fenced(&self, name: &str, fence: Fence<'_>) -> Result<(), StoreError> {
        check_name(name)?;
        check_store_name(fence.lock.as_bytes())?;
        self.with(name, "delete", |c, port| {
            c.delete_fenced(port, name, fence.lock, fence.token)
        })
    }

    fn stat(&self, name: &str) -> Result<ObjectStat, StoreError> {
        check_name(name)?;
        self.with(name, "stat", |c, port| {
            Ok(ObjectStat {
                size: c.info(port, name)?.size,
            })
        })
    }

    fn copy(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        durable: bool,
    ) -> Result<(), StoreError> {
        check_copy(src, src_offset, dst, dst_offset, len)?;
        // The destination is created if missing: NotFound is the source's.
        self.with(src, "copy", |c, port| {
            c.copy_fua(port, src, src_offset, dst, dst_offset, len, durable)
        })
    }

    fn copy_up(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        check_copy(src, src_offset, dst, dst_offset, len)?;
        check_store_name(fence.lock.as_bytes())?;
        self.with(src, "copy", |c, port| {
            c.copy_up(
                port,
                src,
                src_offset,
                dst,
                dst_offset,
                len,
                fence.lock,
                fence.token,
            )
        })
    }

    fn store_content(&self, data: &[u8], durable: bool) -> Result<String, StoreError> {
        self.with("(content)", "store_content", |c, port| {
            c.store_content(port, data, durable)
        })
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.with("(store)", "sync", |c, port| c.sync(port))
    }

    fn try_lock(&self, name: &str, owner: &str) -> Result<u64, StoreError> {
        check_name(name)?;
        check_owner(name, owner)?;
        self.with(name, "try_lock", |c, port| c.acquire(port, name, owner))
    }

    fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        check_name(name)?;
        check_owner(name, owner)?;
        self.with(name, "unlock", |c, port| {
            c.release(port, name, owner, false)
        })
    }

    fn break_lock(&self, name: &str) -> Result<Option<String>, StoreError> {
        check_name(name)?;
        self.with(name, "break_lock", |c, port| c.break_lock(port, name))
    }

    fn lock_owner(&self, name: &str) -> Result<Option<(String, u64)>, StoreError> {
        check_name(name)?;
        self.with(name, "lock_owner", |c, port| c.lock_owner(port, name))
    }

    fn list_page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        // At most PAGE_NAMES names a call, so that a reply always fits its
        // buffer (a name is at most MAX_STORE_NAME bytes + NUL, plus room
        // for the cursor); a larger `limit` gets a shorter page, which
        // the contract allows.
        const PAGE_NAMES: usize = 8192;
        const CURSOR_ROOM: usize = 4096;
        let want = limit.clamp(1, PAGE_NAMES);
        let room = (want * (MAX_STORE_NAME + 1) + CURSOR_ROOM) as u64;
        let (names, next) = self.with(prefix, "list", |c, port| {
            c.list_page(port, prefix, cursor, want as u64, room)
        })?;
        Ok(ListPage { names, next })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Page by page: one LIST reply is bounded by the segment's largest
        // buffer, a store is not. Pages may come in any order: sorted here,
        // as the trait promises.
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.list_page(prefix, cursor.as_deref(), usize::MAX)?;
            names.extend(page.names);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }
}
