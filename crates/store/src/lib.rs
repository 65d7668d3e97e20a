//! Object stores: where volume data lives.
//!
//! A volume is cut into objects (4 MiB by default) kept in a flat namespace
//! of an object store. This crate defines what every store promises, the
//! [`ObjectStore`] trait, and its drivers:
//!
//! - [`FileStore`]: one file per object under a directory (local disk or a
//!   shared filesystem), the rebuild of the original `archip-filed`.
//! - [`MemoryStore`]: in memory, for tests and benchmarks.
//! - [`FaultyStore`]: wraps another store and injects failures (I/O errors,
//!   a full disk, torn writes, delays) into chosen operations, for crash and
//!   error-path tests.
//!
//! Names are checked against the protocol's store-name grammar
//! ([`check_store_name`](archipelago_protocol::names::check_store_name)) by
//! every method of every driver before anything else happens, so a name
//! can never be a path (`a/b`, `..`). Errors are [`StoreError`], each
//! naming its object and mapping onto a protocol
//! [`ErrorCode`](archipelago_protocol::ErrorCode) with [`StoreError::code`].
//!
//! Besides objects, a store keeps **locks**, in a namespace of their own
//! (the lock `x` and the object `x` are unrelated). A lock records its
//! owner (an opaque string compared byte for byte) and a **fencing token**
//! that strictly increases with every grant of that lock, breaks included,
//! so that whoever receives requests from lock holders can refuse those
//! carrying an older token.
//!
//! # What fencing guarantees
//!
//! A lock's token is also the store's **fence** for that lock: the
//! largest token the store has seen for it, raised by every grant, by
//! [`ObjectStore::raise_fence`], by a fenced write carrying a newer token,
//! and past the holder's token by [`ObjectStore::break_lock`]. A fenced
//! write ([`ObjectStore::write_fenced`], [`ObjectStore::write_full_fenced`])
//! carries a [`Fence`] (the lock's name, the writer's token) and is
//! refused with [`StoreError::StaleToken`], writing nothing, when its
//! token is below the store's fence. The check is made by the store that
//! writes, against what the *store* records (durably, shared by every
//! host), not against anything the writer's process keeps, so it fences
//! the old owner's own delayed requests.
//!
//! - Once `break_lock` (or a grant to another owner, or `raise_fence`)
//!   has returned, no fenced write with an older token starts writing.
//! - A write that passed its check just before may still land: on RADOS
//!   the break blocklists the holder's clients first and a store checks
//!   and writes through one client, so after the break none lands; on
//!   files (no blocklist) one write already inside the filesystem call
//!   when the fence was raised may complete.
//! - The check costs no I/O on the hot path: each driver caches the fence
//!   it last read per lock (see each driver for when it reads again).
//!
//! A store holding data but not the lock (the data blocker, when maps and
//! data are separate stores) learns the fence from the writes themselves
//! and from `raise_fence`, which the lock breaker calls on it.
//!
//! [`conformance`] is the test suite every driver passes; a new driver
//! runs it with [`conformance_tests!`].
//!
//! # Example
//!
//! ```
//! use archipelago_store::{FileStore, FileStoreOptions, MemoryStore, ObjectStore, StoreError};
//!
//! fn demo(store: &dyn ObjectStore) -> Result<(), StoreError> {
//!     // Objects are sparse: writing at 8 reads back zeros before it.
//!     store.write("vol_0000000000000001_0000000000000000", 8, b"data", false)?;
//!     let mut buf = [0xff; 16];
//!     let size = store.read("vol_0000000000000001_0000000000000000", 0, &mut buf)?;
//!     assert_eq!(size, 12);
//!     assert_eq!(&buf[..12], b"\0\0\0\0\0\0\0\0data");
//!     assert_eq!(&buf[12..], &[0; 4]); // past the end: zeros
//!
//!     // Content-addressed blocks: trailing zeros do not count.
//!     let name = store.store_content(b"block\0\0\0", true)?;
//!     assert_eq!(name, store.store_content(b"block", true)?);
//!     assert_eq!(store.stat(&name)?.size, 5);
//!
//!     // Locks hand out fencing tokens.
//!     let token = store.try_lock("vol", "host_1")?;
//!     assert!(matches!(store.try_lock("vol", "host_10"), Err(StoreError::Locked { .. })));
//!     assert_eq!(store.try_lock("vol", "host_1")?, token); // idempotent
//!     assert_eq!(store.break_lock("vol")?.as_deref(), Some("host_1"));
//!     assert!(store.try_lock("vol", "host_10")? > token);
//!     Ok(())
//! }
//!
//! demo(&MemoryStore::new()).unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! let files = FileStore::open(dir.path(), FileStoreOptions { sync: true, fd_cache: 64 }).unwrap();
//! demo(&files).unwrap();
//! ```
//!
//! # Threads and asynchrony
//!
//! The methods are synchronous: callers (peers) run them on worker threads,
//! and a store is `Send + Sync` so one instance serves every worker.
//! Operations on different objects are independent. Operations on the same
//! object from several threads are each atomic with respect to the others
//! only where a method says so (`write_full`, `store_content`, the lock
//! methods); concurrent `write`s or `copy`s to overlapping ranges of one
//! object leave an unspecified mix, and callers (the volume layer)
//! serialise them.
//!
//! # How the RADOS driver maps onto librados
//!
//! The method set is kept one-to-one with operations librados can do, so
//! the RADOS driver (`archipelago-rados`) needs no emulation beyond
//! `copy`. Each call below is submitted asynchronously (`rados_aio_*`, or
//! an atomic compound op) and completed through a callback; the
//! synchronous methods submit and wait, so a caller with N worker threads
//! keeps N operations in flight.
//!
//! | method | librados |
//! |---|---|
//! | `read` | one read op: `rados_read_op_stat` + `rados_read_op_read` (size and data read atomically); `ENOENT` → `NotFound`; the buffer past the returned length is zeroed client-side |
//! | `write` | `rados_aio_write`, completed on commit (RADOS acknowledges only durable writes, so `durable` costs nothing more); an empty write is `rados_write_op_create` (not exclusive) |
//! | `write_full` | `rados_aio_write_full`: atomic replace on the OSD |
//! | `delete` | `rados_aio_remove` |
//! | `stat` | `rados_aio_stat` |
//! | `copy` | client-side: one read op of the source range, then one write of it to the destination (librados' `copy_from` copies whole objects only); a write op is atomic, so a failed copy into a missing destination leaves it missing |
//! | `store_content` | one write op: `rados_write_op_create(LIBRADOS_CREATE_EXCLUSIVE)` + `rados_write_op_write_full`; `EEXIST` means the content is already there: success, nothing written |
//! | `sync` | `rados_aio_flush` (nothing is acknowledged before commit, so it only waits for in-flight operations) |
//! | `try_lock`, `unlock`, `break_lock` | a RADOS exclusive lock on the lock object (in a namespace of its own, cookie = the owner), plus a fencing token in the object's xattrs raised by a write op guarded with `rados_write_op_cmpxattr`; `break_lock` first blocklists the holder's clients (`rados_blocklist_add`) |
//! | `lock_owner` | `rados_list_lockers` and the token xattr |
//! | `list` | `rados_nobjects_list_open` / `_next` over the objects' namespace, filtered by prefix and sorted client-side |
//! | `list_page` | `rados_nobjects_list_seek_cursor` to the page's cursor, `_next` up to `limit`, `rados_nobjects_list_get_cursor` as the next cursor (pages in the pool's hash order) |
//!
//! A client whose lock was broken is blocklisted by the breaker: all its
//! operations fail with [`StoreError::Fenced`] (see the driver's docs for
//! when it reconnects).

#![warn(missing_docs)]

pub mod conformance;
mod content;
mod error;
mod faulty;
mod file;
mod memory;
mod volatile;

pub use content::{content_name_of, strip_trailing_zeros};
pub use error::StoreError;
pub use faulty::{Fault, FaultyStore, Gate, OpKind, Rule};
pub use file::{FileStore, FileStoreOptions};
pub use memory::MemoryStore;
pub use volatile::VolatileStore;

use archipelago_protocol::payload::NAME_CAPACITY;

/// What a fenced write claims: the lock it was computed under (the
/// volume's lock) and the token the writer was granted it with. See
/// "What fencing guarantees" in the crate docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence<'a> {
    /// The lock's name.
    pub lock: &'a str,
    /// The writer's token.
    pub token: u64,
}

/// What [`ObjectStore::stat`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectStat {
    /// Bytes from offset 0 to the end of the last byte ever written
    /// (holes included).
    pub size: u64,
}

/// One page of [`ObjectStore::list_page`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The names.
    pub names: Vec<String>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<String>,
}

impl ListPage {
    /// A page of a sorted listing whose cursor is its last name: more may
    /// follow only if the page is full (`limit` names).
    pub fn after_last(names: Vec<String>, limit: usize) -> ListPage {
        let next = if names.len() >= limit.max(1) {
            names.last().cloned()
        } else {
            None
        };
        ListPage { names, next }
    }
}

/// A flat namespace of objects plus a namespace of locks.
///
/// Common to every method:
///
/// - Every name (object or lock) is checked with
///   [`check_store_name`](archipelago_protocol::names::check_store_name)
///   first; a bad one fails with [`StoreError::InvalidName`] and touches
///   nothing.
/// - Offsets and lengths are bytes; `offset + len` must not pass
///   `i64::MAX` ([`StoreError::InvalidArgument`]). The store enforces no
///   maximum object size; the volume layer does.
/// - A full backend fails with [`StoreError::NoSpace`], any other backend
///   failure with [`StoreError::Io`]; both name the object.
/// - "Durable" means on stable storage: it survives a crash of the host.
///   Whether an acknowledged operation is durable without asking depends
///   on the store's sync mode (see each driver); `sync()` makes everything
///   acknowledged so far durable.
pub trait ObjectStore: Send + Sync {
    /// Reads `buf.len()` bytes of `name` from `offset` into `buf`.
    ///
    /// On success every byte of `buf` is written: object bytes where the
    /// object has them, zeros past its end (and in holes). Returns the
    /// object's size, so the caller knows how much was real.
    ///
    /// Errors: [`StoreError::NotFound`] if the object does not exist (a
    /// missing object is not read as zeros); on any error the content of
    /// `buf` is unspecified. Reads change nothing.
    fn read(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<u64, StoreError>;

    /// Writes `data` into `name` at `offset`, creating the object if it
    /// does not exist (bytes before `offset` read as zeros). The object's
    /// size becomes at least `offset + data.len()`; an empty `data`
    /// creates a missing object (size 0) and otherwise changes nothing.
    ///
    /// Success means every byte was written: a short write is an error,
    /// never a success. With `durable` the data (and the object's
    /// existence) is on stable storage before this returns, whatever the
    /// sync mode (FUA).
    ///
    /// On error (and on a crash before a durable acknowledgement) the
    /// range may hold any mix of old and new bytes, and the object may
    /// have been created or extended: an in-place write is not atomic.
    fn write(&self, name: &str, offset: u64, data: &[u8], durable: bool) -> Result<(), StoreError>;

    /// [`write`](ObjectStore::write), refused with
    /// [`StoreError::StaleToken`] (nothing written) if `fence.token` is
    /// below this store's fence for `fence.lock`; a larger token first
    /// raises the fence (durably) to it. The lock's name is checked like
    /// an object name. See "What fencing guarantees" in the crate docs.
    fn write_fenced(
        &self,
        name: &str,
        offset: u64,
        data: &[u8],
        durable: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError>;

    /// [`write_full`](ObjectStore::write_full) under a fence, as
    /// [`write_fenced`](ObjectStore::write_fenced).
    fn write_full_fenced(
        &self,
        name: &str,
        data: &[u8],
        durable: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError>;

    /// Durably raises the fence of the lock `lock` to at least `token`
    /// (never lowers it) and returns the fence now recorded. The lock
    /// itself is untouched: a holder keeps it, and the next grant gets a
    /// token above the fence. What a lock breaker calls on a store that
    /// holds data but not the lock.
    fn raise_fence(&self, lock: &str, token: u64) -> Result<u64, StoreError>;

    /// Replaces the whole content of `name` with `data`, creating it if
    /// missing. Atomic: concurrent readers, and the object after a crash,
    /// see the old content or the new one, never a mix; on error the
    /// object is as it was. With `durable` the replacement is on stable
    /// storage before this returns.
    fn write_full(&self, name: &str, data: &[u8], durable: bool) -> Result<(), StoreError>;

    /// Deletes the object `name`. [`StoreError::NotFound`] if it does not
    /// exist. The object's lock, if any, is untouched (another namespace).
    fn delete(&self, name: &str) -> Result<(), StoreError>;

    /// The object's size. [`StoreError::NotFound`] if it does not exist.
    fn stat(&self, name: &str) -> Result<ObjectStat, StoreError>;

    /// Copies `len` bytes of `src` from `src_offset` into `dst` at
    /// `dst_offset`, inside the store. Source bytes past the source's end
    /// (at the start of the copy) are copied as zeros. `dst` is created
    /// if missing; otherwise the range is overwritten (never appended),
    /// exactly like [`write`](ObjectStore::write) of the source bytes at
    /// `dst_offset`, including for `len == 0`. `src == dst` is allowed:
    /// the result is as if the source range had been read first.
    ///
    /// Errors: [`StoreError::NotFound`] naming `src` if the source does
    /// not exist. If `dst` did not exist, an error leaves it missing;
    /// if it did, an error may leave the range partly written, as for
    /// `write`. `durable` as for `write`.
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        durable: bool,
    ) -> Result<(), StoreError>;

    /// [`delete`](ObjectStore::delete) under `fence`: refused with
    /// [`StoreError::StaleToken`] (nothing deleted) as
    /// [`write_fenced`](ObjectStore::write_fenced) would be. The default
    /// checks the fence with an empty fenced write (which creates a
    /// missing object: it is deleted again, and `NotFound` returned).
    fn delete_fenced(&self, name: &str, fence: Fence<'_>) -> Result<(), StoreError> {
        let existed = self.stat(name).is_ok();
        self.write_fenced(name, 0, &[], false, fence)?;
        self.delete(name)?;
        if existed {
            Ok(())
        } else {
            Err(StoreError::not_found(name))
        }
    }

    /// A copy-up: [`copy`](ObjectStore::copy) ahead of a write to `dst`
    /// under `fence` (refused with [`StoreError::StaleToken`], nothing
    /// copied, as [`write_fenced`](ObjectStore::write_fenced) would be),
    /// which need not be durable when it returns, whatever the sync mode:
    /// the caller makes it durable by its durable write to `dst` or by
    /// `sync()` (one flush then covers the copied bytes and the written
    /// ones, as qcow2 writes a cluster's copy-on-write with its data).
    /// The default reads the range and writes it fenced.
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
        let len = usize::try_from(len).map_err(|_| StoreError::InvalidArgument {
            name: src.to_owned(),
            why: "a copy larger than the address space",
        })?;
        let mut buf = vec![0; len];
        self.read(src, src_offset, &mut buf)?;
        self.write_fenced(dst, dst_offset, &buf, false, fence)
    }

    /// Stores `data` by content: strips its trailing zero bytes, names it
    /// by the lowercase hex SHA-256 of what remains
    /// ([`content_name_of`]), creates the object under that name unless
    /// it exists, and returns the name.
    ///
    /// If the object exists nothing is written (content objects are
    /// immutable; the existing one is trusted). Creation is atomic: the
    /// name never refers to partial content, even after a crash, and on
    /// error nothing is left behind. With `durable` a newly created object
    /// is on stable storage before this returns.
    fn store_content(&self, data: &[u8], durable: bool) -> Result<String, StoreError>;

    /// Makes every operation acknowledged so far durable. On error some of
    /// them may not be (and, after a failed `fsync`, data acknowledged
    /// since the previous successful `sync` may be lost).
    fn sync(&self) -> Result<(), StoreError>;

    /// Takes the lock `name` for `owner` without blocking and returns its
    /// fencing token.
    ///
    /// - Free: granted with a token larger than any token this lock was
    ///   ever granted with (breaks included, and across restarts of the
    ///   store); the grant is durable before this returns.
    /// - Held by `owner` (exact byte comparison): returns the token it
    ///   holds, changing nothing (idempotent).
    /// - Held by another owner: [`StoreError::Locked`] naming it.
    ///
    /// `owner` must be 1 to 256 bytes ([`StoreError::InvalidArgument`]).
    fn try_lock(&self, name: &str, owner: &str) -> Result<u64, StoreError>;

    /// Releases the lock `name` held by `owner`.
    /// [`StoreError::NotFound`] if it is not held,
    /// [`StoreError::Locked`] (naming the holder) if another owner holds
    /// it; owners are compared exactly (`host_1` is not `host_10`).
    fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError>;

    /// Releases the lock `name` whoever holds it, returning the previous
    /// owner (`None` if it was free). The fence is first raised past the
    /// holder's token, so fenced writes carrying it are refused from now
    /// on; the next grant gets a larger token still.
    fn break_lock(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// The owner and token of the lock `name`, `None` if it is free.
    fn lock_owner(&self, name: &str) -> Result<Option<(String, u64)>, StoreError>;

    /// Names of the objects starting with `prefix` (which is not checked
    /// against the grammar: any string, including empty, filters), sorted.
    /// Not a snapshot: objects created or deleted meanwhile may or may not
    /// appear. Cost is driver-specific and may be the whole store (see
    /// each driver); it is meant for tools, not the I/O path.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Whether every method returns without waiting on a device, the
    /// network or another thread for long (an in-memory store). A peer may
    /// then call it on its latency-critical loop thread instead of handing
    /// the call to a worker: the hand-off (waking a sleeping thread) costs
    /// more than the call. Defaults to `false`.
    fn never_blocks(&self) -> bool {
        false
    }

    /// The largest object the store takes in one write, if it has a limit
    /// (a blocker behind a segment: the segment's largest buffer), so that
    /// a caller can refuse what would not fit with a clear error before
    /// trying. Defaults to `None` (no limit known).
    fn max_object_bytes(&self) -> Option<u64> {
        None
    }

    /// [`read`](ObjectStore::read) if it can be done without waiting on a
    /// device or the network (the bytes are in memory), else `None`: the
    /// caller then calls `read`, typically on a worker thread. `None` is
    /// also fine for anything unusual (a bad name, an error): `read`
    /// reports it. The default is always `None`.
    fn try_read_now(
        &self,
        name: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Option<Result<u64, StoreError>> {
        let _ = (name, offset, buf);
        None
    }

    /// One page of [`list`](ObjectStore::list): at most `limit` (≥ 1)
    /// names starting with `prefix`, from the position `cursor` (`None`:
    /// the start), and the cursor of the next page (`None`: this was the
    /// last). The cursor is opaque: pass back what the previous page
    /// returned, verbatim. Paging from `None` until no cursor is returned
    /// yields every object that existed throughout, once; objects created
    /// or deleted meanwhile may or may not appear (not a snapshot, as
    /// `list`). Pages may come in any order (callers that need order sort
    /// them); a page may hold fewer than `limit` names without being the
    /// last. Callers that page hold one page at a time: the default builds
    /// on `list` (which holds the whole listing; its cursor is the last
    /// name returned) and drivers override it where they can do better.
    fn list_page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let names: Vec<String> = self
            .list(prefix)?
            .into_iter()
            .filter(|n| cursor.map_or(true, |a| n.as_str() > a))
            .take(limit.max(1))
            .collect();
        Ok(ListPage::after_last(names, limit))
    }

    /// The store's asynchronous READ and WRITE path, if it has one (a
    /// networked store): a peer then starts each operation from its loop
    /// thread and completes it from the store's callback, instead of
    /// parking a worker thread on every operation in flight. `None` by
    /// default.
    fn async_io(&self) -> Option<&dyn AsyncIo> {
        None
    }
}

/// Called once, from any thread, when an asynchronous operation is over:
/// with the object's size for a read (as [`ObjectStore::read`] returns it),
/// with the bytes written for a write.
pub type IoDone = Box<dyn FnOnce(Result<u64, StoreError>) + Send>;

/// READ and WRITE started now and completed later through a callback, with
/// the semantics (and errors) of [`ObjectStore::read`] and
/// [`ObjectStore::write`]. A write is acknowledged as `write` with
/// `durable` acknowledges it.
pub trait AsyncIo: Send + Sync {
    /// Starts reading `len` bytes of `name` from `offset` into `buf`;
    /// calls `done` once (possibly before returning, on an error found at
    /// once).
    ///
    /// # Safety
    /// `buf` must be valid for writes of `len` bytes, and not otherwise
    /// accessed, until `done` is called.
    unsafe fn start_read(&self, name: &str, offset: u64, buf: *mut u8, len: usize, done: IoDone);

    /// Starts writing `len` bytes from `data` to `name` at `offset`;
    /// calls `done` once (possibly before returning).
    ///
    /// # Safety
    /// `data` must be valid for reads of `len` bytes, and not written,
    /// until `done` is called.
    unsafe fn start_write(
        &self,
        name: &str,
        offset: u64,
        data: *const u8,
        len: usize,
        done: IoDone,
    );

    /// [`start_write`](AsyncIo::start_write) with the check of
    /// [`ObjectStore::write_fenced`].
    ///
    /// # Safety
    /// As for `start_write`.
    unsafe fn start_write_fenced(
        &self,
        name: &str,
        offset: u64,
        data: *const u8,
        len: usize,
        fence: Fence<'_>,
        done: IoDone,
    );
}

macro_rules! forward {
    ($($t:tt)*) => {
        $($t)* {
            fn read(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<u64, StoreError> {
                (**self).read(name, offset, buf)
            }
            fn write(&self, name: &str, offset: u64, data: &[u8], durable: bool) -> Result<(), StoreError> {
                (**self).write(name, offset, data, durable)
            }
            fn write_full(&self, name: &str, data: &[u8], durable: bool) -> Result<(), StoreError> {
                (**self).write_full(name, data, durable)
            }
            fn write_fenced(&self, name: &str, offset: u64, data: &[u8], durable: bool, fence: $crate::Fence<'_>) -> Result<(), StoreError> {
                (**self).write_fenced(name, offset, data, durable, fence)
            }
            fn write_full_fenced(&self, name: &str, data: &[u8], durable: bool, fence: $crate::Fence<'_>) -> Result<(), StoreError> {
                (**self).write_full_fenced(name, data, durable, fence)
            }
            fn raise_fence(&self, lock: &str, token: u64) -> Result<u64, StoreError> {
                (**self).raise_fence(lock, token)
            }
            fn delete(&self, name: &str) -> Result<(), StoreError> {
                (**self).delete(name)
            }
            fn stat(&self, name: &str) -> Result<ObjectStat, StoreError> {
                (**self).stat(name)
            }
            fn copy(&self, src: &str, src_offset: u64, dst: &str, dst_offset: u64, len: u64, durable: bool) -> Result<(), StoreError> {
                (**self).copy(src, src_offset, dst, dst_offset, len, durable)
            }
            fn delete_fenced(&self, name: &str, fence: $crate::Fence<'_>) -> Result<(), StoreError> {
                (**self).delete_fenced(name, fence)
            }
            fn copy_up(&self, src: &str, src_offset: u64, dst: &str, dst_offset: u64, len: u64, fence: $crate::Fence<'_>) -> Result<(), StoreError> {
                (**self).copy_up(src, src_offset, dst, dst_offset, len, fence)
            }
            fn store_content(&self, data: &[u8], durable: bool) -> Result<String, StoreError> {
                (**self).store_content(data, durable)
            }
            fn sync(&self) -> Result<(), StoreError> {
                (**self).sync()
            }
            fn try_lock(&self, name: &str, owner: &str) -> Result<u64, StoreError> {
                (**self).try_lock(name, owner)
            }
            fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
                (**self).unlock(name, owner)
            }
            fn break_lock(&self, name: &str) -> Result<Option<String>, StoreError> {
                (**self).break_lock(name)
            }
            fn lock_owner(&self, name: &str) -> Result<Option<(String, u64)>, StoreError> {
                (**self).lock_owner(name)
            }
            fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
                (**self).list(prefix)
            }
            fn never_blocks(&self) -> bool {
                (**self).never_blocks()
            }
            fn max_object_bytes(&self) -> Option<u64> {
                (**self).max_object_bytes()
            }
            fn try_read_now(&self, name: &str, offset: u64, buf: &mut [u8]) -> Option<Result<u64, StoreError>> {
                (**self).try_read_now(name, offset, buf)
            }
            fn list_page(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> Result<ListPage, StoreError> {
                (**self).list_page(prefix, cursor, limit)
            }
            fn async_io(&self) -> Option<&dyn $crate::AsyncIo> {
                (**self).async_io()
            }
        }
    };
}

forward!(impl<S: ObjectStore + ?Sized> ObjectStore for std::sync::Arc<S>);
forward!(impl<S: ObjectStore + ?Sized> ObjectStore for Box<S>);
forward!(impl<S: ObjectStore + ?Sized> ObjectStore for &S);

/// Checks an object or lock name.
pub(crate) fn check_name(name: &str) -> Result<&str, StoreError> {
    Ok(archipelago_protocol::names::check_store_name(
        name.as_bytes(),
    )?)
}

/// Checks the arguments of [`ObjectStore::copy`]: both names, and both
/// ranges addressable. What every driver checks first.
pub fn check_copy(
    src: &str,
    src_offset: u64,
    dst: &str,
    dst_offset: u64,
    len: u64,
) -> Result<(), StoreError> {
    check_name(src)?;
    check_name(dst)?;
    check_range(src, src_offset, len)?;
    check_range(dst, dst_offset, len)
}

/// Checks that `[offset, offset + len)` is addressable (ends at or before
/// `i64::MAX`, the largest file offset): the range check every driver
/// makes first.
pub fn check_range(name: &str, offset: u64, len: u64) -> Result<(), StoreError> {
    match offset.checked_add(len) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(StoreError::InvalidArgument {
            name: name.to_owned(),
            why: "the byte range ends past the largest offset (i64::MAX)",
        }),
    }
}

/// Checks a lock owner: 1 to [`NAME_CAPACITY`] bytes (it travels in a
/// [`LockOwner`](archipelago_protocol::payload::LockOwner) payload): the
/// owner check every driver makes first.
pub fn check_owner(name: &str, owner: &str) -> Result<(), StoreError> {
    if owner.is_empty() || owner.len() > NAME_CAPACITY {
        return Err(StoreError::InvalidArgument {
            name: name.to_owned(),
            why: "a lock owner must be 1 to 256 bytes",
        });
    }
    Ok(())
}
