//! [`RadosStore`]: an [`ObjectStore`] on a Ceph RADOS pool, through
//! librados (a small hand-written FFI layer in `ffi.rs`, safe wrappers in
//! `client.rs`).
//!
//! # Layout in the pool
//!
//! | what | namespace | name |
//! |---|---|---|
//! | objects (volume data, maps, content objects) | `namespace` (default: the default one, as the original radosd) | the object name, verbatim |
//! | locks | `<namespace>.locks` (`archipelago.locks` for the default) | the lock name |
//! | the per-host registry of client addresses | as locks | `.host.<host id>` (no lock name starts with `.`) |
//!
//! Locks live in their own namespace, so the lock `x` and the object
//! `x_lock` never meet and `list` never shows a lock.
//!
//! # Operations
//!
//! Object operations follow the table in the `archipelago-store` docs: one
//! librados asynchronous operation each (`rados_aio_*` or an atomic
//! compound read/write op), completed through `rados_aio_create_completion2`
//! with a callback that wakes the submitting thread. READ and WRITE also
//! have an asynchronous path ([`AsyncIo`]): the blocker starts them from
//! its loop thread and the callback completes the request, so a blocker
//! keeps as many operations in flight as it is sent, whatever its worker
//! count, and each costs two thread hand-offs fewer. Writes complete on
//! commit, so every acknowledged write is durable (`durable` and `sync`
//! cost nothing more). Content objects are created with one write op
//! `create(EXCLUSIVE) + write_full`: two hosts storing the same block race
//! safely, and the loser's `EEXIST` means "already there".
//!
//! # Locks and fencing
//!
//! A lock is a RADOS exclusive lock (`archipelago`) on the lock object,
//! whose cookie is the owner's bytes in hex (so `list_lockers` names the
//! owner exactly). The lock object's xattrs keep the fencing state:
//!
//! - `token`: the largest token ever granted (never decreases);
//! - `grant`: the cookie the current token was granted to (empty after a
//!   release or break, so the next grant raises the token);
//! - `clients`: the addresses of every librados client of the holder's
//!   Archipelago instance at grant time (its blockerm and blockerb, read
//!   from the host registry), one a line.
//!
//! Granting takes the RADOS lock first (the arbiter between hosts), then
//! raises `token` with a write op guarded by `cmpxattr(token == old)`.
//! Breaking a lock (or taking over a lock the same owner holds through
//! another, older client) first adds every recorded address to the
//! cluster's blocklist, then breaks the RADOS lock: a host that still
//! believes it holds the volume can write neither maps nor data, since
//! every operation of a blocklisted client fails (`EBLOCKLISTED`).
//!
//! A client that sees `EBLOCKLISTED` is **fenced**: every later operation
//! of this store fails with [`StoreError::Fenced`] without reaching the
//! cluster, until it reconnects as a new client (a new address, not
//! blocklisted): at once for a `try_lock` (the caller, the mapper, drops
//! its cached state on `Fenced` before it locks again), otherwise only
//! after [`RadosOptions::fence_quarantine`], so that data requests computed
//! under the broken lock and still in flight fail instead of landing.
//!
//! The quarantine alone bounds nothing: a request held longer goes out
//! through the new client. Fenced writes
//! ([`ObjectStore::write_fenced`]) close that: the `token` xattr of the
//! lock object is the lock's fence; a break raises it past the holder's
//! token and empties `grant` in one write op *before* blocklisting; each
//! client caches the token it read per lock (a map lookup per write) and
//! checks and writes through the same client, so a client that read the
//! old token is blocklisted before the lock is free, and a reconnected
//! client starts with no cache and reads the raised token. A store holding
//! data but not the lock keeps the token on an object of the same name in
//! its own locks namespace (created by the first fenced write or
//! `raise_fence`).
//!
//! # Modules
//!
//! | module | what it owns |
//! |---|---|
//! | `lib.rs` | options, the store, its synchronous `ObjectStore` operations |
//! | `conn` | one librados client (`Conn`), errno conversion, choosing or reopening the client after a fence |
//! | `locks` | lock object names, owners and tokens; fences: raising, checking, breaking |
//! | `aio` | `AsyncIo`: completions, fenced asynchronous writes |
//! | `client`, `ffi` | the safe wrapper over librados and its C declarations |

#![warn(missing_docs)]

mod aio;
mod client;
mod conn;
mod ffi;
mod locks;
pub mod testenv;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use archipelago_protocol::names::check_store_name;
use archipelago_store::{
    check_copy, check_owner, check_range, content_name_of, strip_trailing_zeros, AsyncIo, Fence,
    IoDone, ObjectStat, ObjectStore, StoreError,
};
use client::{Cluster, Errno, IoCtx, Locker, WriteOp};
use conn::{errno_error, split_addrs, Conn};
use locks::{hex, locks_namespace, owner_of, parse_token, registry_object};

/// The name of the RADOS lock taken on lock objects.
const LOCK_NAME: &str = "archipelago";
/// `EBLOCKLISTED` in Ceph: this client's address is on the blocklist.
const EBLOCKLISTED: Errno = libc::ESHUTDOWN;
/// Attempts of a lock operation that keeps losing races before it gives up.
const LOCK_ATTEMPTS: usize = 50;

/// Who this store's client belongs to: an Archipelago instance (a host)
/// and its role in it. Each member registers its address under the host,
/// so that a lock taken by one member records all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The host id (the lock owner the mapper uses).
    pub host: String,
    /// This client's role, e.g. `blockerb` or `blockerm`.
    pub member: String,
}

/// How to reach the pool.
#[derive(Debug, Clone)]
pub struct RadosOptions {
    /// The pool (it must exist).
    pub pool: String,
    /// The Ceph configuration file; `None`: librados' default search
    /// (`$CEPH_CONF`, `/etc/ceph/ceph.conf`, ...).
    pub ceph_conf: Option<PathBuf>,
    /// The cephx user without `client.` (`None`: `admin`).
    pub client_id: Option<String>,
    /// The RADOS namespace of the objects ("" the default one).
    pub namespace: String,
    /// `rados_osd_op_timeout`, `rados_mon_op_timeout` and
    /// `client_mount_timeout`: a stuck or full cluster fails an operation
    /// after this long instead of hanging. Applied where the configuration
    /// file leaves librados' defaults (so the file may tune them).
    pub op_timeout: Duration,
    /// The instance this client belongs to (registered for fencing).
    pub instance: Option<Instance>,
    /// How long broken owners stay blocklisted. A fenced client that
    /// notices reconnects with a new address at once; this bounds how long
    /// one that never noticed (a host cut off from the cluster) stays
    /// unable to write, so it is long: a day by default (Ceph's is an hour).
    pub blocklist_expiry: Duration,
    /// How long a fenced store refuses everything but `try_lock` before it
    /// reconnects on its next operation.
    pub fence_quarantine: Duration,
}

impl RadosOptions {
    /// Options for `pool` with the defaults: librados' configuration
    /// search, `client.admin`, the default namespace, 30 s timeouts, no
    /// instance, a one-day blocklisting, a 10 s fence quarantine.
    pub fn new(pool: impl Into<String>) -> RadosOptions {
        RadosOptions {
            pool: pool.into(),
            ceph_conf: None,
            client_id: None,
            namespace: String::new(),
            op_timeout: Duration::from_secs(30),
            instance: None,
            blocklist_expiry: Duration::from_secs(24 * 3600),
            fence_quarantine: Duration::from_secs(10),
        }
    }
}

/// An object store on a RADOS pool. See the crate docs.
pub struct RadosStore {
    opts: RadosOptions,
    conn: RwLock<Arc<Conn>>,
    /// Serialises reconnections.
    reconnecting: Mutex<()>,
    reconnects: AtomicU64,
}

impl RadosStore {
    /// Connects to the cluster and opens the pool. Fails (naming the pool,
    /// the configuration and the cause) if the cluster cannot be reached
    /// within the timeout or the pool does not exist.
    pub fn connect(opts: RadosOptions) -> Result<RadosStore, StoreError> {
        let conn = Conn::open(&opts)?;
        Ok(RadosStore {
            opts,
            conn: RwLock::new(Arc::new(conn)),
            reconnecting: Mutex::new(()),
            reconnects: AtomicU64::new(0),
        })
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &RadosOptions {
        &self.opts
    }

    /// The current client's address (changes when a fenced store
    /// reconnects).
    pub fn client_addr(&self) -> String {
        self.current().addr.clone()
    }

    /// How many times this store reconnected after being fenced.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Whether the current client is fenced (blocklisted).
    pub fn is_fenced(&self) -> bool {
        self.current().fenced_since().is_some()
    }
}

impl RadosStore {
    /// WRITE, checking `fence` first (through the client the write goes
    /// through) if there is one.
    fn write_checked(
        &self,
        name: &str,
        offset: u64,
        data: &[u8],
        fence: Option<Fence<'_>>,
    ) -> Result<(), StoreError> {
        check_store_name(name.as_bytes())?;
        check_range(name, offset, data.len() as u64)?;
        let c = self.live(name, false)?;
        if let Some(f) = fence {
            self.check_fence(&c, name, f)?;
        }
        let r = if data.is_empty() {
            // Creates a missing object, changes nothing otherwise.
            let mut op = WriteOp::new();
            op.create(false);
            op.operate(&c.data, name)
        } else {
            c.data.write(name, data, offset)
        };
        r.map_err(|e| self.err(&c, name, "write", e))
    }

    /// WRITE_FULL, checking `fence` first if there is one.
    fn write_full_checked(
        &self,
        name: &str,
        data: &[u8],
        fence: Option<Fence<'_>>,
    ) -> Result<(), StoreError> {
        check_store_name(name.as_bytes())?;
        let c = self.live(name, false)?;
        if let Some(f) = fence {
            self.check_fence(&c, name, f)?;
        }
        c.data
            .write_full(name, data)
            .map_err(|e| self.err(&c, name, "write_full", e))
    }
}

impl ObjectStore for RadosStore {
    fn async_io(&self) -> Option<&dyn AsyncIo> {
        Some(self)
    }

    fn read(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<u64, StoreError> {
        check_store_name(name.as_bytes())?;
        check_range(name, offset, buf.len() as u64)?;
        let c = self.live(name, false)?;
        let (size, got) = c
            .data
            .stat_and_read(name, offset, buf)
            .map_err(|e| self.err_nf(&c, name, "read", e))?;
        buf[got..].fill(0);
        Ok(size)
    }

    fn write(
        &self,
        name: &str,
        offset: u64,
        data: &[u8],
        _durable: bool,
    ) -> Result<(), StoreError> {
        self.write_checked(name, offset, data, None)
    }

    /// The check costs nothing but a map lookup once this client has
    /// read the lock's token (see `check_fence`); the first fenced write
    /// of a lock through a client, and the first after a refusal, reads
    /// (and may raise) the lock object's `token` first.
    fn write_fenced(
        &self,
        name: &str,
        offset: u64,
        data: &[u8],
        _durable: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        self.write_checked(name, offset, data, Some(fence))
    }

    fn write_full_fenced(
        &self,
        name: &str,
        data: &[u8],
        _durable: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        self.write_full_checked(name, data, Some(fence))
    }

    fn raise_fence(&self, lock: &str, token: u64) -> Result<u64, StoreError> {
        check_store_name(lock.as_bytes())?;
        let c = self.live(lock, false)?;
        let now = self.raise_on(&c, lock, token)?;
        c.fences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lock.to_owned(), now);
        Ok(now)
    }

    fn write_full(&self, name: &str, data: &[u8], _durable: bool) -> Result<(), StoreError> {
        self.write_full_checked(name, data, None)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_store_name(name.as_bytes())?;
        let c = self.live(name, false)?;
        c.data
            .remove(name)
            .map_err(|e| self.err_nf(&c, name, "delete", e))
    }

    /// The fence check as a fenced write's, then the remove.
    fn delete_fenced(&self, name: &str, fence: Fence<'_>) -> Result<(), StoreError> {
        check_store_name(name.as_bytes())?;
        let c = self.live(name, false)?;
        self.check_fence(&c, name, fence)?;
        c.data
            .remove(name)
            .map_err(|e| self.err_nf(&c, name, "delete", e))
    }

    fn stat(&self, name: &str) -> Result<ObjectStat, StoreError> {
        check_store_name(name.as_bytes())?;
        let c = self.live(name, false)?;
        let size = c
            .data
            .stat(name)
            .map_err(|e| self.err_nf(&c, name, "stat", e))?;
        Ok(ObjectStat { size })
    }

    fn copy(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        _durable: bool,
    ) -> Result<(), StoreError> {
        check_copy(src, src_offset, dst, dst_offset, len)?;
        let c = self.live(dst, false)?;
        let len = usize::try_from(len).map_err(|_| StoreError::InvalidArgument {
            name: src.to_owned(),
            why: "a copy larger than the address space",
        })?;
        // librados' copy_from copies whole objects only: read the range,
        // then write it in one (atomic) operation, so a failed copy into a
        // missing destination leaves it missing.
        let mut buf = vec![0u8; len];
        let (_, got) = c
            .data
            .stat_and_read(src, src_offset, &mut buf)
            .map_err(|e| self.err_nf(&c, src, "copy", e))?;
        buf[got..].fill(0);
        let r = if buf.is_empty() {
            let mut op = WriteOp::new();
            op.create(false);
            op.operate(&c.data, dst)
        } else {
            c.data.write(dst, &buf, dst_offset)
        };
        r.map_err(|e| self.err(&c, dst, "copy", e))
    }

    fn store_content(&self, data: &[u8], _durable: bool) -> Result<String, StoreError> {
        let stripped = strip_trailing_zeros(data);
        let name = content_name_of(stripped);
        let c = self.live(&name, false)?;
        let mut op = WriteOp::new();
        op.create(true);
        if !stripped.is_empty() {
            // SAFETY: `stripped` outlives `operate`, which waits.
            unsafe { op.write_full(stripped) };
        }
        match op.operate(&c.data, &name) {
            // Created, or someone (another host) stored it first.
            Ok(()) | Err(libc::EEXIST) => Ok(name),
            Err(e) => Err(self.err(&c, &name, "store_content", e)),
        }
    }

    fn sync(&self) -> Result<(), StoreError> {
        let c = self.live(&self.opts.pool, false)?;
        // Writes are acknowledged on commit: this only waits for
        // operations still in flight.
        c.data
            .flush()
            .map_err(|e| self.err(&c, &self.opts.pool, "sync", e))?;
        c.locks
            .flush()
            .map_err(|e| self.err(&c, &self.opts.pool, "sync", e))
    }

    fn try_lock(&self, name: &str, owner: &str) -> Result<u64, StoreError> {
        check_store_name(name.as_bytes())?;
        check_owner(name, owner)?;
        match self.try_lock_once(name, owner) {
            // This client learnt only now that it is blocklisted (another
            // host broke one of our locks while it sat idle): a lock is
            // taken through a new client at once, so once more.
            Err(StoreError::Fenced { .. }) => self.try_lock_once(name, owner),
            r => r,
        }
    }

    fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        check_store_name(name.as_bytes())?;
        check_owner(name, owner)?;
        let c = self.live(name, false)?;
        let cookie = hex(owner.as_bytes());
        let lockers = self.lockers(&c, name)?;
        let Some(holder) = lockers.first() else {
            return Err(StoreError::not_found(name));
        };
        if holder.cookie != cookie {
            return Err(StoreError::Locked {
                name: name.to_owned(),
                owner: owner_of(&holder.cookie),
            });
        }
        // Forget the grant first (we still hold the lock, so nobody else
        // can be granted): the next grant raises the token.
        let mut op = WriteOp::new();
        op.cmpxattr("grant", cookie.as_bytes())
            .setxattr("grant", b"");
        match op.operate(&c.locks, name) {
            Ok(()) | Err(libc::ECANCELED) => {}
            Err(e) => return Err(self.err(&c, name, "unlock", e)),
        }
        let r = if holder.client == c.client {
            c.locks.unlock(name, LOCK_NAME, &cookie)
        } else {
            // The same owner through another client of ours (this host's
            // previous connection): a release, not a break.
            c.locks.break_lock(name, LOCK_NAME, &holder.client, &cookie)
        };
        match r {
            Ok(()) => Ok(()),
            Err(libc::ENOENT) => Err(StoreError::not_found(name)),
            Err(e) => Err(self.err(&c, name, "unlock", e)),
        }
    }

    fn break_lock(&self, name: &str) -> Result<Option<String>, StoreError> {
        check_store_name(name.as_bytes())?;
        let c = self.live(name, false)?;
        let lockers = self.lockers(&c, name)?;
        let Some(holder) = lockers.first() else {
            return Ok(None);
        };
        self.fence_and_break(&c, name, holder, true)?;
        Ok(Some(owner_of(&holder.cookie)))
    }

    fn lock_owner(&self, name: &str) -> Result<Option<(String, u64)>, StoreError> {
        check_store_name(name.as_bytes())?;
        let c = self.live(name, false)?;
        let lockers = self.lockers(&c, name)?;
        let Some(holder) = lockers.first() else {
            return Ok(None);
        };
        let token = c
            .locks
            .getxattr(name, "token")
            .map_err(|e| self.err(&c, name, "lock_owner", e))?;
        Ok(Some((owner_of(&holder.cookie), parse_token(token))))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let c = self.live(&self.opts.pool, false)?;
        let mut names: Vec<String> = c
            .data
            .list()
            .map_err(|e| self.err(&c, &self.opts.pool, "list", e))?
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }
}

impl RadosStore {
    /// One attempt of [`ObjectStore::try_lock`].
    fn try_lock_once(&self, name: &str, owner: &str) -> Result<u64, StoreError> {
        let c = self.live(name, true)?;
        let cookie = hex(owner.as_bytes());
        for _ in 0..LOCK_ATTEMPTS {
            match c.locks.lock_exclusive(
                name,
                LOCK_NAME,
                &cookie,
                &format!("archipelago lock of {owner}"),
            ) {
                // EEXIST: this client already holds it for this owner.
                Ok(()) | Err(libc::EEXIST) => {}
                Err(libc::EBUSY) => {
                    let lockers = self.lockers(&c, name)?;
                    let Some(holder) = lockers.first() else {
                        continue; // released meanwhile
                    };
                    if holder.cookie != cookie {
                        return Err(StoreError::Locked {
                            name: name.to_owned(),
                            owner: owner_of(&holder.cookie),
                        });
                    }
                    // The same owner through another (older) client, e.g.
                    // before a restart: fence that client, take over.
                    self.fence_and_break(&c, name, holder, false)?;
                    continue;
                }
                Err(e) => return Err(self.err(&c, name, "try_lock", e)),
            }
            // We hold the RADOS lock: give it a token.
            let grant = c
                .locks
                .getxattr(name, "grant")
                .map_err(|e| self.err(&c, name, "try_lock", e))?;
            let old = c
                .locks
                .getxattr(name, "token")
                .map_err(|e| self.err(&c, name, "try_lock", e))?;
            let token = parse_token(old.clone());
            if grant.as_deref() == Some(cookie.as_bytes()) {
                return Ok(token); // idempotent
            }
            let next = token + 1;
            let clients = self.own_addrs(&c)?.join("\n");
            let mut op = WriteOp::new();
            op.cmpxattr("token", old.as_deref().unwrap_or(b""))
                .setxattr("token", next.to_string().as_bytes())
                .setxattr("grant", cookie.as_bytes())
                .setxattr("clients", clients.as_bytes());
            match op.operate(&c.locks, name) {
                Ok(()) => {
                    c.fences
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.to_owned(), next);
                    return Ok(next);
                }
                // Our lock was broken and re-granted meanwhile: decide again.
                Err(libc::ECANCELED) => continue,
                Err(e) => return Err(self.err(&c, name, "try_lock", e)),
            }
        }
        Err(StoreError::Io {
            name: name.to_owned(),
            op: "try_lock",
            source: io::Error::other("lost the race for the lock too many times"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_name_their_owner_exactly() {
        for owner in ["host_1", "host 1\n(pid 7) \u{e9}", "a"] {
            assert_eq!(owner_of(&hex(owner.as_bytes())), owner);
        }
        assert_eq!(owner_of("foo"), "foo");
    }

    #[test]
    fn addresses_are_split_and_normalised() {
        assert_eq!(
            split_addrs("[v2:127.0.0.1:0/123,v1:127.0.0.1:0/123]"),
            ["127.0.0.1:0/123"]
        );
        assert_eq!(split_addrs("127.0.0.1:0/9"), ["127.0.0.1:0/9"]);
        assert!(split_addrs("").is_empty());
    }
}
