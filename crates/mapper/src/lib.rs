//! The mapper's volume logic, in process: plain synchronous Rust over two
//! [`ObjectStore`]s, the **map store** (headers, chunks, locks) and the
//! **data store** (volume objects). The `mapperd` peer wraps a [`Mapper`]
//! and gives it stores that speak xseg to the blockers.
//!
//! Maps are [`archipelago_mapfmt`] version 3: a header `<volume>` refers to
//! immutable chunks; every change writes new chunks first and then
//! replaces the header with one atomic `write_full`, the single commit
//! point. Old maps (v1, v2, and v0 when asked) are read in place and
//! converted by [`Mapper::update`].
//!
//! # Operations
//!
//! | operation | lock (storage lock `<volume>` for this host) | writes (in order) | errors |
//! |---|---|---|---|
//! | [`create`](Mapper::create) | target, for the operation | header | `Exists`, `Locked`, `InvalidArgument` |
//! | [`info`](Mapper::info) | none | nothing | `NotFound` |
//! | [`open`](Mapper::open) writable | taken, kept until the last [`close`](Mapper::close) (opens on one host are counted) | nothing | `Locked` (detail: owner), `ReadOnly` (snapshot, old format: "run vlmc upgrade NAME"), `NotFound` |
//! | [`open`](Mapper::open) read-only | none | nothing | `NotFound` |
//! | [`snapshot`](Mapper::snapshot) | volume: held or taken for the operation; snapshot name: taken for the operation | volume header, then snapshot header | `Exists`, `Locked`, `ReadOnly`, `Busy` (uncommitted writes) |
//! | [`clone_volume`](Mapper::clone_volume) | new name, for the operation | clone header | `InvalidArgument` (not a snapshot, smaller), `Exists` |
//! | [`remove`](Mapper::remove) | held or taken | header (REMOVED) | `Exists` (a snapshot with clones), `Locked` |
//! | [`rename`](Mapper::rename) | both names, for the operation | marker, new header, delete old header, delete marker | `Busy` (open here), `Exists`, `Locked` |
//! | [`resize`](Mapper::resize) | held or taken | shrink mid-object: zeros over the cut bytes of the new last object (copied up first if shared); chunks, header | `InvalidArgument` (shrink without force), `Busy` (uncommitted writes) |
//! | [`map_read`](Mapper::map_read) | none | nothing | `OutOfRange`, `NotFound` |
//! | [`map_write`](Mapper::map_write) | held, or taken by an implicit open | copy-ups (data), chunks, header | `OutOfRange`, `ReadOnly`, `Locked`, `Fenced` |
//! | [`discard`](Mapper::discard) | as map_write | deletes of private whole objects, copy-ups (data), chunks, header | as map_write |
//! | [`commit_writes`](Mapper::commit_writes) | held | chunks, header | `InvalidArgument` (not pending) |
//! | [`hash`](Mapper::hash) | snapshot, for the operation | gc pin `archip_gcpin_{owner}` (waits while a collection runs), content objects (data), chunks, header; pin deleted | `InvalidArgument` (not a snapshot), `Busy` (a collection ran past `with_gc_wait`) |
//! | [`update`](Mapper::update) | taken for the operation | chunks, header over the old name | `Locked` |
//! | [`lineage`](Mapper::lineage), [`flatten_step`](Mapper::flatten_step), [`rollback`](Mapper::rollback) | see `lineage.rs` | | |
//!
//! Every error is an [`archipelago_protocol::Error`] whose detail names the
//! volume (for `Locked`, the detail is the lock's owner).
//!
//! # The composer's contract (what vlmcd does with extents)
//!
//! - **Read**: for each [`Extent`] of [`map_read`](Mapper::map_read), an
//!   extent without an object reads as zeros; an extent with
//!   [`Extent::missing_reads_zero`] (an object the volume owns) reads as
//!   zeros if the object does not exist; [`read_extent`] does both.
//!   A missing content or legacy object is an error.
//! - **Write**: write each extent of [`map_write`](Mapper::map_write)
//!   into its object; once every write to an extent marked
//!   [`Extent::pending`] has succeeded, call
//!   [`commit_writes`](Mapper::commit_writes) with their indexes. If a
//!   write failed, do not commit that index: the map still shows the old
//!   data.
//!
//! # Crash outcomes
//!
//! | crash after | state | consequence |
//! |---|---|---|
//! | copy-up copy, before the chunk/header | orphan data object | the next write copies again into the same name (idempotent) |
//! | chunk written, header not | orphan chunk | the old view is intact; the next change rewrites the same serial |
//! | first write to a **zero** entry: data written, `commit_writes` never called | orphan owned object, the entry still zero | reads as zeros; the next first write to it deletes the orphan before writing (a partial write must not expose its bytes) |
//! | full overwrite of a **shared** object: data written, `commit_writes` never called | orphan data object | the entry still names the shared object: old data, never zeros |
//! | partial write of a shared object | copy-up happened before the commit | the new object holds the old data before any new byte |
//! | snapshot: volume header written, snapshot header not | the volume moved to the next epoch; no snapshot | nothing corrupted (mapfmt) |
//! | rename: marker written, new header not | the old name is live; marker stale | harmless; overwritten by the next rename of this volume |
//! | rename: new header written, old not deleted | both headers exist; the marker says old → new | loads of the old name answer `NotFound` (the rename counts as done): never two live volumes sharing writable objects |
//! | shrink: cut bytes zeroed, header not | the volume keeps its size; the bytes being cut read as zeros | only bytes the caller was dropping (with `force`) |
//! | discard: a private whole object deleted, header not | the owned entry names a missing object | reads as zeros, which the discard was making it |
//! | update: chunks written, header not | old map intact, orphan chunks | the update did not happen |
//! | hash: chunks written, header not | old snapshot map intact | the hash did not happen |
//!
//! # Concurrency and caching
//!
//! Operations on one volume are serialised by a per-volume mutex (two
//! volumes are locked in name order).
//!
//! **A cached map never outlives the lock that justifies it.** The rule:
//!
//! - A decoded header is cached only while this host holds the volume's
//!   storage lock through a writable open. It is set when the first open
//!   takes the lock (read from storage then) and replaced by each commit
//!   through the open; it is dropped with the lock: on the last
//!   [`close`](Mapper::close), on a `Fenced` commit (the lock was broken)
//!   and when [`remove`](Mapper::remove) finishes. [`rename`](Mapper::rename)
//!   refuses a volume open here, so neither name has a cached header.
//!   Every other operation (and every operation of a volume not open here)
//!   reads the header from storage: a volume another host changed under
//!   its own lock is never served stale after we reopen it.
//! - Before each header commit of a held volume the lock's owner and
//!   fencing token are checked; a broken lock fails the write with
//!   `Fenced` and drops the open and its cached header. Between commits,
//!   [`map_read`](Mapper::map_read) of a held volume trusts the lock (it
//!   does not ask the store), as the lock's owner is the only writer.
//! - Committed chunks are immutable, so decoded chunks are kept whatever
//!   the lock, in an LRU bounded by bytes ([`DEFAULT_CACHE_BYTES`],
//!   [`Mapper::with_cache_bytes`]; a chunk counts 40 bytes an entry plus
//!   its legacy names). A chunk is cached only after the header naming it
//!   committed, so an orphan chunk that a later change rewrites is never
//!   cached.
//! - Per-volume state (opens, fencing token, cached header, pending
//!   writes) is dropped when the last operation using it ends with no
//!   open and no pending write: names never touched again cost nothing.
//!
//! # Simplifications
//!
//! - Removing, flattening and rolling back free nothing by themselves:
//!   `archipelago-gc` collects what no live map refers to. The one
//!   operation that takes part is [`hash`](Mapper::hash), which pins
//!   itself against collections (it may start referring to content
//!   objects a collector found unreferenced) and waits, bounded, while
//!   one runs.
//! - Hashing reads whole objects, on every core by default
//!   ([`Mapper::with_hash_threads`]); the commit is single-threaded.
//! - Clones of old-format maps need an [`update`](Mapper::update) first;
//!   removing or renaming one too.
//! - Read-only opens are not counted ([`close`](Mapper::close) closes
//!   writable opens only).
//! - A write to an object that is still pending is pending too; the
//!   composer commits an index only when every write to it succeeded.
//! - Snapshot and resize refuse a volume with pending writes (`Busy`): the
//!   composer drains writes first, as vlmcd freezes I/O.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod cache;
mod lineage;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};

use archipelago_mapfmt::gcmeta;
use archipelago_mapfmt::{
    clone_from, detect, owned_object_name, resize, set_entries, snapshot, upgrade, v0, v1, v2,
    Chunk, ChunkRef, Detected, Entry, Header, LegacyMap, MapError, DEFAULT_OBJECT_SIZE_LOG2,
    ENTRIES_PER_CHUNK, MAX_OBJECT_SIZE_LOG2, MIN_OBJECT_SIZE_LOG2,
};
use archipelago_protocol::names::check_volume_name;
use archipelago_protocol::sizes::check_volume_size;
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::{ObjectStore, StoreError};
use cache::Lru;
pub use lineage::{FlattenStep, LineageRecord};

/// How long [`Mapper::hash`] waits for a running garbage collection
/// before failing `Busy` (see [`Mapper::with_gc_wait`]).
pub const DEFAULT_GC_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The default budget of the decoded-chunk cache: 64 MiB (estimated).
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Estimated in-memory bytes of one decoded entry.
const ENTRY_BYTES: usize = 40;

/// Estimated in-memory bytes of a decoded chunk: its entries, the names of
/// its legacy entries, and a little for the chunk itself.
fn chunk_bytes(c: &Chunk) -> usize {
    let names: usize = c
        .entries()
        .iter()
        .map(|e| match e {
            Entry::Legacy(n) => n.len(),
            _ => 0,
        })
        .sum();
    c.entries().len() * ENTRY_BYTES + names + 64
}

/// The internal volume id given to an old-format map decoded for reading
/// (its entries name legacy or content objects, never owned ones).
const LEGACY_READ_ID: u64 = 1;

/// What [`Mapper::info`] reports.
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
    /// The parent's name (latest snapshot, or the clone source).
    pub parent: Option<String>,
    /// The map format: 0, 1, 2 or 3.
    pub format_version: u32,
}

/// A piece of an I/O request inside one object.
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
    /// Write replies only: the entry is committed by
    /// [`Mapper::commit_writes`] after the data write succeeded.
    pub pending: bool,
    /// The object is owned by a volume: if it does not exist, it reads as
    /// zeros (a first write to a zero entry commits the entry before the
    /// data lands).
    pub missing_reads_zero: bool,
}

impl Extent {
    /// The extent reading `len` bytes at `offset_in_object` of object
    /// `index`, backed by `entry`.
    fn of_entry(entry: &Entry, index: u64, offset_in_object: u64, len: u64) -> Extent {
        Extent {
            index,
            object: entry.object_name(index),
            offset_in_object,
            len,
            pending: false,
            missing_reads_zero: matches!(entry, Entry::Owned { .. }),
        }
    }
}

/// What [`Mapper::hash`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashReport {
    /// Non-zero entries before hashing (objects read or already content).
    pub objects: u64,
    /// Distinct content objects the snapshot refers to afterwards.
    pub distinct: u64,
    /// Objects found to be all zeros (their entries became zero).
    pub zero_objects: u64,
    /// `(objects - distinct) × object size`: storage the snapshot no
    /// longer needs once its old objects are collected.
    pub bytes_saved: u64,
}

/// Reads `buf.len()` bytes of an extent (of [`Mapper::map_read`]) from the
/// data store, following the composer's contract: no object, or a missing
/// owned object, reads as zeros.
pub fn read_extent(data: &dyn ObjectStore, extent: &Extent, buf: &mut [u8]) -> Result<(), Error> {
    let Some(name) = &extent.object else {
        buf.fill(0);
        return Ok(());
    };
    match data.read(name, extent.offset_in_object, buf) {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound { .. }) if extent.missing_reads_zero => {
            buf.fill(0);
            Ok(())
        }
        Err(e) => Err(store_err(name, e)),
    }
}

/// Entry changes by chunk slot: the chunk now referenced, and the
/// `(index, entry)` updates to apply to it.
type Updates = BTreeMap<usize, (Arc<Chunk>, Vec<(u64, Entry)>)>;

/// `(job, digest)` pairs of one hash worker (`None`: all zeros).
type JobDigests = Vec<(usize, Option<[u8; 32]>)>;

/// Per-volume state on this host.
#[derive(Default)]
struct VolState {
    /// Writable opens on this host; the storage lock is held iff > 0.
    opens: u32,
    /// The fencing token of the held lock.
    token: u64,
    /// The header, cached while the lock is held.
    header: Option<Header>,
    /// Indexes returned as pending by `map_write`, not yet committed.
    pending: HashSet<u64>,
    /// When the lock was last found still ours (see `check_fence`).
    fence_checked: Option<std::time::Instant>,
    /// The object a flatten step is copying with this state unlocked
    /// (see `lineage.rs`): writes to it wait.
    flattening: Option<u64>,
}

/// A loaded map: a version 3 header, or an old map converted in memory.
struct Vol {
    version: u32,
    header: Header,
    legacy_chunks: Option<HashMap<ChunkRef, Arc<Chunk>>>,
}

/// How long a writer trusts its lock without asking the map store again,
/// for writes to objects the volume already owns: a host whose lock was
/// broken stops writing within this time (before any copy-up, delete or
/// map change it checks at once).
const FENCE_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The mapper: volume operations over a map store and a data store.
pub struct Mapper {
    maps: Arc<dyn ObjectStore>,
    data: Arc<dyn ObjectStore>,
    host_id: String,
    volumes: Mutex<HashMap<String, Arc<Mutex<VolState>>>>,
    chunks: Mutex<Lru<ChunkRef, Arc<Chunk>>>,
    /// Worker threads of [`Mapper::hash`]; `None`: every core.
    hash_threads: Option<usize>,
    /// How long a hash waits for a running garbage collection.
    gc_wait: std::time::Duration,
}

/// A use of a volume's state. Dropping the last use of an idle state
/// (no writable open, no pending write) removes it from the mapper, so
/// names never touched again cost nothing.
struct StateRef<'a> {
    volumes: &'a Mutex<HashMap<String, Arc<Mutex<VolState>>>>,
    name: String,
    state: Option<Arc<Mutex<VolState>>>,
}

impl std::ops::Deref for StateRef<'_> {
    type Target = Arc<Mutex<VolState>>;
    fn deref(&self) -> &Self::Target {
        self.state.as_ref().expect("taken only on drop")
    }
}

impl Drop for StateRef<'_> {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        // New uses are only handed out under this lock, and ours is dropped
        // under it too: a count of 2 (the map's and ours) is exact.
        let mut v = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&state) == 2 {
            let idle = match state.try_lock() {
                Ok(st) => st.opens == 0 && st.pending.is_empty(),
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    let st = p.into_inner();
                    st.opens == 0 && st.pending.is_empty()
                }
                Err(std::sync::TryLockError::WouldBlock) => false,
            };
            if idle {
                v.remove(&self.name);
            }
        }
        drop(state);
    }
}

fn store_err(name: &str, e: StoreError) -> Error {
    match e {
        StoreError::Locked { owner, .. } => Error::with(ErrorCode::Locked, owner),
        e => Error::with(e.code(), format!("{name}: {e}")),
    }
}

fn map_err(name: &str, e: MapError) -> Error {
    let code = match &e {
        MapError::ReadOnly => ErrorCode::ReadOnly,
        MapError::Removed => ErrorCode::NotFound,
        MapError::OutOfRange { .. } => ErrorCode::OutOfRange,
        MapError::NotASnapshot
        | MapError::CloneShrinks { .. }
        | MapError::InvalidSize(_)
        | MapError::InvalidObjectSize { .. }
        | MapError::BadName { .. }
        | MapError::NameTooLong { .. } => ErrorCode::InvalidArgument,
        MapError::Exhausted { .. } => ErrorCode::NoSpace,
        _ => ErrorCode::Io,
    };
    Error::with(code, format!("{name}: {e}"))
}

fn err(code: ErrorCode, detail: impl Into<String>) -> Error {
    Error::with(code, detail)
}

fn check_name(name: &str) -> Result<(), Error> {
    check_volume_name(name.as_bytes())
        .map(|_| ())
        .map_err(|e| err(ErrorCode::InvalidArgument, format!("{name}: {e}")))
}

fn upgrade_hint(name: &str) -> Error {
    err(
        ErrorCode::ReadOnly,
        format!("{name} is in an old map format: run vlmc upgrade {name}"),
    )
}

/// A random nonzero u64: /dev/urandom, or SHA-256 of the time, pid and a
/// counter if that fails.
fn random_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut b = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    let mut id = u64::from_le_bytes(b);
    if !ok || id == 0 {
        use sha2::{Digest, Sha256};
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut h = Sha256::new();
        h.update(t.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        h.update(b);
        let d = h.finalize();
        id = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
    }
    id.max(1)
}

/// The rename intent marker of a volume id, in the map store:
/// `{id:016x}_0000000000000000`, the chunk name of serial 0, which no
/// chunk uses.
fn marker_name(volume_id: u64) -> String {
    format!("{volume_id:016x}_{:016x}", 0)
}

fn hex_digest(name: &str) -> Option<[u8; 32]> {
    if name.len() != 64 {
        return None;
    }
    let mut d = [0u8; 32];
    for (i, pair) in name.as_bytes().chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        d[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(d)
}

/// Splits `[offset, offset + len)` at object boundaries:
/// `(index, offset in object, len)`.
fn split(offset: u64, len: u64, object_size: u64) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let index = pos / object_size;
        let off = pos % object_size;
        let n = (object_size - off).min(end - pos);
        out.push((index, off, n));
        pos += n;
    }
    out
}

/// A storage lock this call took (released by `release`), or one an open
/// holds.
struct Held {
    name: String,
    token: u64,
    took: bool,
}

impl Mapper {
    /// A mapper for `host_id` (the owner string of its storage locks).
    /// Its chunk cache holds [`DEFAULT_CACHE_BYTES`]; hashing uses every
    /// core.
    pub fn new(maps: Arc<dyn ObjectStore>, data: Arc<dyn ObjectStore>, host_id: String) -> Self {
        Self {
            maps,
            data,
            host_id,
            volumes: Mutex::new(HashMap::new()),
            chunks: Mutex::new(Lru::new(DEFAULT_CACHE_BYTES)),
            hash_threads: None,
            gc_wait: DEFAULT_GC_WAIT,
        }
    }

    /// This mapper with a decoded-chunk cache of at most `bytes`
    /// (estimated: 40 bytes an entry plus legacy names; 0 disables it).
    pub fn with_cache_bytes(self, bytes: usize) -> Self {
        Self {
            chunks: Mutex::new(Lru::new(bytes)),
            ..self
        }
    }

    /// This mapper with [`hash`](Self::hash) reading and storing objects
    /// on `threads` worker threads (at least 1; default: every core, from
    /// [`std::thread::available_parallelism`]).
    pub fn with_hash_threads(self, threads: usize) -> Self {
        Self {
            hash_threads: Some(threads.max(1)),
            ..self
        }
    }

    /// This mapper with [`hash`](Self::hash) waiting at most `wait` for a
    /// running garbage collection (default [`DEFAULT_GC_WAIT`]) before
    /// failing `Busy`.
    pub fn with_gc_wait(mut self, wait: std::time::Duration) -> Self {
        self.gc_wait = wait;
        self
    }

    /// The estimated bytes of the decoded-chunk cache (never more than
    /// its budget).
    pub fn cache_bytes(&self) -> usize {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner()).used()
    }

    /// How many volumes this mapper keeps state for: those open for
    /// writing, and those an operation is using right now.
    pub fn tracked_volumes(&self) -> usize {
        self.volumes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The owner string of this mapper's locks.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    // ---- state, locks, loading ----

    fn state(&self, name: &str) -> StateRef<'_> {
        let mut v = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        let state = v.entry(name.to_owned()).or_default().clone();
        StateRef {
            volumes: &self.volumes,
            name: name.to_owned(),
            state: Some(state),
        }
    }

    fn lock_state(s: &Arc<Mutex<VolState>>) -> MutexGuard<'_, VolState> {
        s.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `name`'s storage lock unless this host's opens hold it.
    fn acquire(&self, name: &str, st: &VolState) -> Result<Held, Error> {
        if st.opens > 0 {
            return Ok(Held {
                name: name.to_owned(),
                token: st.token,
                took: false,
            });
        }
        let token = self
            .maps
            .try_lock(name, &self.host_id)
            .map_err(|e| store_err(name, e))?;
        Ok(Held {
            name: name.to_owned(),
            token,
            took: true,
        })
    }

    fn release(&self, held: Held) {
        if held.took {
            let _ = self.maps.unlock(&held.name, &self.host_id);
        }
    }

    /// Runs `f` holding `name`'s lock (taken for the call if no open holds
    /// it).
    fn locked<T>(
        &self,
        name: &str,
        st: &mut VolState,
        f: impl FnOnce(&mut VolState, &Held) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let held = self.acquire(name, st)?;
        let r = f(st, &held);
        self.release(held);
        r
    }

    fn read_whole(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let size = match self.maps.stat(name) {
            Ok(s) => s.size,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_err(name, e)),
        };
        let mut buf = vec![0u8; size as usize];
        match self.maps.read(name, 0, &mut buf) {
            Ok(_) => Ok(Some(buf)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(name, e)),
        }
    }

    fn not_found(name: &str) -> Error {
        err(ErrorCode::NotFound, format!("volume {name} not found"))
    }

    /// Reads and decodes `name`'s map, resolving an interrupted rename.
    fn load(&self, name: &str, assume_v0: bool, v0_size: Option<u64>) -> Result<Vol, Error> {
        check_name(name)?;
        let bytes = self
            .read_whole(name)?
            .ok_or_else(|| Self::not_found(name))?;
        let first = &bytes[..bytes.len().min(archipelago_mapfmt::DETECT_LEN)];
        let detected = detect(first, assume_v0).map_err(|e| map_err(name, e))?;
        if detected == Detected::V3 {
            let header = Header::decode(&bytes).map_err(|e| map_err(name, e))?;
            if self.renamed_away(name, &header)? {
                return Err(Self::not_found(name));
            }
            return Ok(Vol {
                version: 3,
                header,
                legacy_chunks: None,
            });
        }
        let map = self.load_legacy(name, detected, &bytes, v0_size)?;
        let (header, chunks) = upgrade(&map, LEGACY_READ_ID).map_err(|e| map_err(name, e))?;
        Ok(Vol {
            version: detected.version(),
            header,
            legacy_chunks: Some(chunks.into_iter().map(|c| (c.id(), Arc::new(c))).collect()),
        })
    }

    fn load_legacy(
        &self,
        name: &str,
        detected: Detected,
        bytes: &[u8],
        v0_size: Option<u64>,
    ) -> Result<LegacyMap, Error> {
        let me = |e| map_err(name, e);
        match detected {
            Detected::V0 => v0::decode(bytes, v0_size).map_err(me),
            Detected::V1 => v1::decode(bytes).map_err(me),
            Detected::V2 => {
                let h = v2::decode_header(bytes).map_err(me)?;
                let per = v2::entries_per_object(h.blocksize);
                let total = h.nr_objects();
                let mut entries = Vec::with_capacity(total as usize);
                let mut block = 0;
                while (entries.len() as u64) < total {
                    let n = per.min(total - entries.len() as u64);
                    let obj = v2::map_object_name(name, block);
                    let mut buf = vec![0u8; (n as usize) * v2::ENTRY_LEN];
                    self.maps
                        .read(&obj, 0, &mut buf)
                        .map_err(|e| store_err(&obj, e))?;
                    entries.extend(v2::decode_entries(&buf).map_err(me)?);
                    block += 1;
                }
                v2::assemble(&h, entries).map_err(me)
            }
            Detected::V3 => unreachable!("handled by load"),
        }
    }

    /// Whether a rename marker says `name` was renamed away (the new
    /// header exists with the same id).
    fn renamed_away(&self, name: &str, header: &Header) -> Result<bool, Error> {
        let marker = marker_name(header.volume_id);
        let Some(bytes) = self.read_whole(&marker)? else {
            return Ok(false);
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut parts = text.split('\n');
        let (Some(old), Some(new)) = (parts.next(), parts.next()) else {
            return Ok(false);
        };
        if old != name {
            return Ok(false);
        }
        Ok(match self.read_whole(new)? {
            Some(b) => Header::decode(&b).is_ok_and(|h| h.volume_id == header.volume_id),
            None => false,
        })
    }

    fn load_v3(&self, name: &str) -> Result<Header, Error> {
        let vol = self.load(name, false, None)?;
        if vol.version != 3 {
            return Err(upgrade_hint(name));
        }
        Ok(vol.header)
    }

    /// The current header of a volume this call may change: the cached
    /// one while held, else from storage.
    fn current(&self, name: &str, st: &VolState) -> Result<Header, Error> {
        match &st.header {
            Some(h) if st.opens > 0 => Ok(h.clone()),
            _ => self.load_v3(name),
        }
    }

    /// Whether `name` exists (a readable header, removed or not); errors
    /// other than "not found" are errors, never "absent" (bug 7.3.14).
    fn exists(&self, name: &str) -> Result<bool, Error> {
        match self.load(name, false, None) {
            Ok(_) => Ok(true),
            Err(e) if e.code == ErrorCode::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn chunk(&self, vol: &Vol, r: ChunkRef) -> Result<Arc<Chunk>, Error> {
        if r.is_zero() {
            return Ok(Arc::new(Chunk::empty(ChunkRef::ZERO)));
        }
        if let Some(l) = &vol.legacy_chunks {
            return l
                .get(&r)
                .cloned()
                .ok_or_else(|| err(ErrorCode::Io, "legacy chunk missing"));
        }
        if let Some(c) = self
            .chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&r)
        {
            return Ok(c);
        }
        let name = r.object_name().expect("nonzero");
        let bytes = self
            .read_whole(&name)?
            .ok_or_else(|| err(ErrorCode::Io, format!("map chunk {name} is missing")))?;
        let c = Arc::new(Chunk::decode_as(&bytes, r).map_err(|e| map_err(&name, e))?);
        self.cache_chunk(c.clone());
        Ok(c)
    }

    fn cache_chunk(&self, c: Arc<Chunk>) {
        let size = chunk_bytes(&c);
        self.chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(c.id(), c, size);
    }

    /// Checks that the volume's lock is still ours with our token, before a
    /// change to the data store: a host whose lock was broken must not
    /// delete or overwrite objects the new owner may be using. On a broken
    /// lock, forgets the volume's state and fails with `Fenced`.
    fn check_fence(&self, name: &str, st: &mut VolState) -> Result<(), Error> {
        let owner = self.lock_owner_or_forget(name, st)?;
        if owner != Some((self.host_id.clone(), st.token)) {
            *st = VolState::default();
            return Err(err(
                ErrorCode::Fenced,
                format!("{name}: our lock was broken"),
            ));
        }
        st.fence_checked = Some(std::time::Instant::now());
        Ok(())
    }

    /// The volume lock's owner and token. If the map store says this host
    /// was fenced (its client blocklisted after another host broke one of
    /// our locks), the volume's state is forgotten before failing: it is
    /// reopened, and so relocked through a new client, or not at all.
    fn lock_owner_or_forget(
        &self,
        name: &str,
        st: &mut VolState,
    ) -> Result<Option<(String, u64)>, Error> {
        match self.maps.lock_owner(name) {
            Ok(owner) => Ok(owner),
            Err(e) => {
                if e.code() == ErrorCode::Fenced {
                    *st = VolState::default();
                }
                Err(store_err(name, e))
            }
        }
    }

    /// Writes `chunks`, then `header` under `name`: the commit point. With
    /// `held`, checks first that the lock is still ours (fencing).
    fn commit(
        &self,
        name: &str,
        mut st: Option<&mut VolState>,
        held: Option<&Held>,
        chunks: Vec<Chunk>,
        header: &Header,
    ) -> Result<(), Error> {
        let r = self.commit_inner(name, st.as_deref_mut(), held, chunks, header);
        if let (Err(e), Some(st)) = (&r, st) {
            // The map store refused us as fenced (a broken lock): forget
            // the volume, as for a lock found broken.
            if e.code == ErrorCode::Fenced {
                *st = VolState::default();
            }
        }
        r
    }

    fn commit_inner(
        &self,
        name: &str,
        mut st: Option<&mut VolState>,
        held: Option<&Held>,
        chunks: Vec<Chunk>,
        header: &Header,
    ) -> Result<(), Error> {
        for c in &chunks {
            let cname = c.id().object_name().expect("a written chunk is nonzero");
            let bytes = c.encode().map_err(|e| map_err(name, e))?;
            self.maps
                .write_full(&cname, &bytes, true)
                .map_err(|e| store_err(&cname, e))?;
        }
        if let Some(held) = held {
            let owner = match st.as_deref_mut() {
                Some(st) => self.lock_owner_or_forget(name, st)?,
                None => self.maps.lock_owner(name).map_err(|e| store_err(name, e))?,
            };
            if owner != Some((self.host_id.clone(), held.token)) {
                if let Some(st) = st {
                    *st = VolState::default();
                }
                return Err(err(
                    ErrorCode::Fenced,
                    format!("{name}: our lock was broken"),
                ));
            }
        }
        let bytes = header.encode().map_err(|e| map_err(name, e))?;
        self.maps
            .write_full(name, &bytes, true)
            .map_err(|e| store_err(name, e))?;
        for c in chunks {
            self.cache_chunk(Arc::new(c));
        }
        if let Some(st) = st {
            if st.opens > 0 {
                st.header = Some(header.clone());
            }
        }
        Ok(())
    }

    fn info_of(vol: &Vol) -> VolumeInfo {
        let h = &vol.header;
        VolumeInfo {
            size: h.size,
            object_size: h.object_size(),
            readonly: h.flags.readonly,
            removed: h.flags.removed,
            hashed: h.flags.hashed,
            epoch: h.epoch,
            volume_id: if vol.version == 3 { h.volume_id } else { 0 },
            parent: h.parent.as_ref().map(|p| p.name.clone()),
            format_version: vol.version,
        }
    }

    // ---- operations ----

    /// Creates the volume `name` of `size` bytes with objects of
    /// `object_size` bytes (default 4 MiB).
    pub fn create(&self, name: &str, size: u64, object_size: Option<u64>) -> Result<(), Error> {
        check_name(name)?;
        check_volume_size(size)
            .map_err(|e| err(ErrorCode::InvalidArgument, format!("{name}: {e}")))?;
        let log2 = match object_size {
            None => DEFAULT_OBJECT_SIZE_LOG2,
            Some(os)
                if os.is_power_of_two()
                    && (MIN_OBJECT_SIZE_LOG2..=MAX_OBJECT_SIZE_LOG2)
                        .contains(&os.trailing_zeros()) =>
            {
                os.trailing_zeros()
            }
            Some(os) => {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!("{name}: object size {os} is not a power of two from 4 KiB to 1 GiB"),
                ))
            }
        };
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        if st.opens > 0 {
            return Err(err(ErrorCode::Exists, format!("volume {name} exists")));
        }
        self.locked(name, &mut st, |st, held| {
            if self.exists(name)? {
                return Err(err(ErrorCode::Exists, format!("volume {name} exists")));
            }
            let h = Header::new(random_id(), size, log2).map_err(|e| map_err(name, e))?;
            self.commit(name, Some(st), Some(held), vec![], &h)
        })
    }

    /// What `name` is (any format but v0).
    pub fn info(&self, name: &str) -> Result<VolumeInfo, Error> {
        Ok(Self::info_of(&self.load(name, false, None)?))
    }

    /// [`info`](Self::info), reading a map without a header as v0 (a
    /// Pithos hashmap) of `size_hint` bytes if given.
    pub fn info_assume_v0(&self, name: &str, size_hint: Option<u64>) -> Result<VolumeInfo, Error> {
        Ok(Self::info_of(&self.load(name, true, size_hint)?))
    }

    /// Opens `name`. Writable: takes its storage lock (shared by every
    /// writable open on this host, released by the last
    /// [`close`](Self::close)). Read-only: checks it can be read and takes
    /// nothing (there is nothing to close).
    pub fn open(&self, name: &str, writable: bool) -> Result<VolumeInfo, Error> {
        if !writable {
            let vol = self.load(name, false, None)?;
            if vol.header.flags.removed {
                return Err(err(
                    ErrorCode::NotFound,
                    format!("volume {name} was removed"),
                ));
            }
            return Ok(Self::info_of(&vol));
        }
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        self.open_locked(name, &mut st)
    }

    fn open_locked(&self, name: &str, st: &mut VolState) -> Result<VolumeInfo, Error> {
        if st.opens > 0 {
            let h = st.header.clone().expect("a held volume is cached");
            st.opens += 1;
            return Ok(Self::info_of(&Vol {
                version: 3,
                header: h,
                legacy_chunks: None,
            }));
        }
        check_name(name)?;
        let held = self.acquire(name, st)?;
        let r = (|| {
            let vol = self.load(name, false, None)?;
            if vol.version != 3 {
                return Err(upgrade_hint(name));
            }
            if vol.header.flags.removed {
                return Err(err(
                    ErrorCode::NotFound,
                    format!("volume {name} was removed"),
                ));
            }
            if vol.header.flags.readonly {
                return Err(err(
                    ErrorCode::ReadOnly,
                    format!("{name} is a snapshot: clone it to write"),
                ));
            }
            Ok(vol)
        })();
        match r {
            Ok(vol) => {
                st.opens = 1;
                st.token = held.token;
                st.header = Some(vol.header.clone());
                st.pending.clear();
                Ok(Self::info_of(&vol))
            }
            Err(e) => {
                self.release(held);
                Err(e)
            }
        }
    }

    /// Closes one writable open of `name`; the last one releases the lock
    /// (the close completes even if the release fails, which is then
    /// reported).
    pub fn close(&self, name: &str) -> Result<(), Error> {
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        if st.opens == 0 {
            return Err(err(
                ErrorCode::NotFound,
                format!("{name} is not open for writing on this host"),
            ));
        }
        st.opens -= 1;
        if st.opens > 0 {
            return Ok(());
        }
        *st = VolState::default();
        match self.maps.unlock(name, &self.host_id) {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(name, e)),
        }
    }

    /// Whether this host holds `name` open for writing (test and peer
    /// introspection).
    pub fn is_open(&self, name: &str) -> bool {
        let s = self.state(name);
        let st = Self::lock_state(&s);
        st.opens > 0
    }

    /// The volumes this host holds open for writing (explicitly or by an
    /// implicit open of a write), sorted.
    pub fn open_volumes(&self) -> Vec<String> {
        // Names first, then each through a use of its state (never a state
        // lock under the map's lock, and idle states still go away).
        let mut names: Vec<String> = self
            .volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names.retain(|n| self.is_open(n));
        names
    }

    fn two<'a>(
        a: &'a Arc<Mutex<VolState>>,
        b: &'a Arc<Mutex<VolState>>,
        a_first: bool,
    ) -> (MutexGuard<'a, VolState>, MutexGuard<'a, VolState>) {
        if a_first {
            let ga = Self::lock_state(a);
            let gb = Self::lock_state(b);
            (ga, gb)
        } else {
            let gb = Self::lock_state(b);
            let ga = Self::lock_state(a);
            (ga, gb)
        }
    }

    /// Snapshots `volume` as `snap_name` (the volume must be open for
    /// writing here, or unlocked).
    pub fn snapshot(&self, volume: &str, snap_name: &str) -> Result<(), Error> {
        check_name(volume)?;
        check_name(snap_name)?;
        if volume == snap_name {
            return Err(err(ErrorCode::Exists, format!("volume {snap_name} exists")));
        }
        let (sv, ss) = (self.state(volume), self.state(snap_name));
        let (mut vst, mut sst) = Self::two(&sv, &ss, volume < snap_name);
        if sst.opens > 0 {
            return Err(err(ErrorCode::Exists, format!("volume {snap_name} exists")));
        }
        if !vst.pending.is_empty() {
            return Err(err(
                ErrorCode::Busy,
                format!("{volume} has uncommitted writes"),
            ));
        }
        self.locked(volume, &mut vst, |vst, vheld| {
            let h = self.current(volume, vst)?;
            self.locked(snap_name, &mut sst, |_, sheld| {
                if self.exists(snap_name)? {
                    return Err(err(ErrorCode::Exists, format!("volume {snap_name} exists")));
                }
                let (snap, going_on) = snapshot(&h, snap_name).map_err(|e| map_err(volume, e))?;
                // The volume first: it freezes the old epoch.
                self.commit(volume, Some(vst), Some(vheld), vec![], &going_on)?;
                self.commit(snap_name, None, Some(sheld), vec![], &snap)
            })
        })
    }

    /// Clones the snapshot `snap` as `new_name`, `size` bytes (default:
    /// the snapshot's; never smaller).
    pub fn clone_volume(&self, snap: &str, new_name: &str, size: Option<u64>) -> Result<(), Error> {
        check_name(snap)?;
        check_name(new_name)?;
        if snap == new_name {
            return Err(err(ErrorCode::Exists, format!("volume {new_name} exists")));
        }
        let (sa, sb) = (self.state(snap), self.state(new_name));
        let (_src_st, mut nst) = Self::two(&sa, &sb, snap < new_name);
        if nst.opens > 0 {
            return Err(err(ErrorCode::Exists, format!("volume {new_name} exists")));
        }
        let src = self.load_v3(snap)?;
        if src.flags.removed {
            return Err(err(ErrorCode::NotFound, format!("{snap} was removed")));
        }
        if !src.flags.readonly {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("{snap} is not a snapshot"),
            ));
        }
        let size = size.unwrap_or(src.size);
        if size < src.size {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!(
                    "{new_name}: a clone cannot be smaller than {snap} ({size} < {})",
                    src.size
                ),
            ));
        }
        self.locked(new_name, &mut nst, |nst, held| {
            if self.exists(new_name)? {
                return Err(err(ErrorCode::Exists, format!("volume {new_name} exists")));
            }
            let mut tries = 0;
            let h = loop {
                match clone_from(&src, snap, random_id(), size) {
                    Err(MapError::BadVolumeId { .. }) if tries < 8 => tries += 1,
                    r => break r.map_err(|e| map_err(new_name, e))?,
                }
            };
            self.commit(new_name, Some(nst), Some(held), vec![], &h)
        })
    }

    /// Names of the live volumes and snapshots that depend on the
    /// snapshot `snap` (header `h`) through a clone: the exact rule is
    /// [`archipelago_mapfmt::lineage::dependents`], which `vlmc children`
    /// shows too.
    fn clones_of(&self, _snap: &str, h: &Header) -> Result<Vec<String>, Error> {
        self.dependents_of(h)
    }

    /// Marks `name` REMOVED (frees nothing; garbage collection is later
    /// work). Refused for a snapshot with clones and for a volume locked
    /// by another host. An open on this host is closed.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        check_name(name)?;
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        let was_open = st.opens > 0;
        self.locked(name, &mut st, |st, held| {
            let mut h = self.current(name, st)?;
            if h.flags.removed {
                return Err(err(ErrorCode::NotFound, format!("{name} was removed")));
            }
            if h.flags.readonly {
                let clones = self.clones_of(name, &h)?;
                if !clones.is_empty() {
                    return Err(err(
                        ErrorCode::Exists,
                        format!("snapshot {name} still has clones: {}", clones.join(", ")),
                    ));
                }
            }
            h.flags.removed = true;
            h.commit_seq += 1;
            self.commit(name, Some(st), Some(held), vec![], &h)
        })?;
        if was_open {
            *st = VolState::default();
            let _ = self.maps.unlock(name, &self.host_id);
        }
        Ok(())
    }

    /// Renames `old` to `new` (not while open on this host).
    ///
    /// Order: a marker `{id}_0000000000000000` recording `old\nnew`, the
    /// header under `new`, delete `old`, delete the marker. While the
    /// marker names both and `new` holds the same volume id, `old` loads as
    /// not found: a crash anywhere leaves exactly one live name.
    pub fn rename(&self, old: &str, new: &str) -> Result<(), Error> {
        check_name(old)?;
        check_name(new)?;
        if old == new {
            return Err(err(ErrorCode::Exists, format!("volume {new} exists")));
        }
        let (sa, sb) = (self.state(old), self.state(new));
        let (mut ost, mut nst) = Self::two(&sa, &sb, old < new);
        if ost.opens > 0 {
            return Err(err(
                ErrorCode::Busy,
                format!("{old} is open on this host: close it first"),
            ));
        }
        if nst.opens > 0 {
            return Err(err(ErrorCode::Exists, format!("volume {new} exists")));
        }
        self.locked(old, &mut ost, |_, _| {
            self.locked(new, &mut nst, |_, nheld| {
                let mut h = self.load_v3(old)?;
                if h.flags.removed {
                    return Err(err(ErrorCode::NotFound, format!("{old} was removed")));
                }
                if self.exists(new)? {
                    return Err(err(ErrorCode::Exists, format!("volume {new} exists")));
                }
                let marker = marker_name(h.volume_id);
                self.maps
                    .write_full(&marker, format!("{old}\n{new}").as_bytes(), true)
                    .map_err(|e| store_err(old, e))?;
                h.commit_seq += 1;
                self.commit(new, None, Some(nheld), vec![], &h)?;
                match self.maps.delete(old) {
                    Ok(()) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(store_err(old, e)),
                }
                let _ = self.maps.delete(&marker);
                Ok(())
            })
        })
    }

    /// Resizes `name` to `new_size`: growing adds zeros; shrinking needs
    /// `force` (the tail's data is dropped from the map).
    pub fn resize(&self, name: &str, new_size: u64, force: bool) -> Result<(), Error> {
        check_name(name)?;
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        // A shrink deletes objects a flatten may be copying into.
        while st.flattening.is_some() {
            st = Self::wait_for_flatten(&s, st);
        }
        if !st.pending.is_empty() {
            return Err(err(
                ErrorCode::Busy,
                format!("{name} has uncommitted writes"),
            ));
        }
        self.locked(name, &mut st, |st, held| {
            let h = self.current(name, st)?;
            if h.flags.readonly {
                return Err(err(ErrorCode::ReadOnly, format!("{name} is a snapshot")));
            }
            check_volume_size(new_size)
                .map_err(|e| err(ErrorCode::InvalidArgument, format!("{name}: {e}")))?;
            if new_size < h.size && !force {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!(
                        "{name}: shrinking from {} to {new_size} needs force",
                        h.size
                    ),
                ));
            }
            let vol = Vol {
                version: 3,
                header: h.clone(),
                legacy_chunks: None,
            };
            // Data changes below: the lock must still be ours.
            if new_size < h.size && st.opens > 0 {
                self.check_fence(name, st)?;
            }
            // Shrinking mid-object: zero the cut bytes of the new last
            // object, so a later grow or a larger clone reads zeros there.
            let (h, mut chunks) = if new_size < h.size {
                self.zero_tail(name, &vol, new_size, h.size)?
            } else {
                (h, Vec::new())
            };
            let tail = if new_size < h.size {
                let objects = new_size.div_ceil(h.object_size());
                let slot = ((objects - 1) / ENTRIES_PER_CHUNK as u64) as usize;
                match chunks.iter().find(|c| c.id() == h.chunks[slot]) {
                    Some(c) => Some(Arc::new(c.clone())),
                    None => Some(self.chunk(&vol, h.chunks[slot])?),
                }
            } else {
                None
            };
            if new_size < h.size {
                self.delete_cut_objects(name, &vol, new_size)?;
            }
            let (nh, chunk) =
                resize(&h, new_size, tail.as_deref()).map_err(|e| map_err(name, e))?;
            chunks.extend(chunk);
            // A chunk zero_tail wrote and resize trimmed again is not needed.
            chunks.retain(|c| nh.chunks.contains(&c.id()));
            self.commit(name, Some(st), Some(held), chunks, &nh)
        })
    }

    /// Before shrinking to `new_size`: deletes the data objects this
    /// volume owns at its current epoch for the objects cut off entirely.
    /// Their names would come back should the volume grow again (a zero
    /// entry re-owns the same name without copying), with stale bytes
    /// where zeros are due. Deleted before the commit: a crash between
    /// leaves missing owned objects, which read as zeros, in a range the
    /// caller asked to destroy anyway. Shared objects are only dropped
    /// from the map (garbage collection is later work).
    fn delete_cut_objects(&self, name: &str, vol: &Vol, new_size: u64) -> Result<(), Error> {
        let h = &vol.header;
        let os = h.object_size();
        let first = new_size.div_ceil(os);
        let end = h.size.div_ceil(os);
        let mut index = first;
        while index < end {
            let (slot, _) = h.chunk_for(index).map_err(|e| map_err(name, e))?;
            let chunk = self.chunk(vol, h.chunks[slot])?;
            let chunk_start = slot as u64 * ENTRIES_PER_CHUNK as u64;
            let chunk_end = (chunk_start + ENTRIES_PER_CHUNK as u64).min(end);
            for i in index..chunk_end {
                let entry = chunk
                    .get((i - chunk_start) as usize)
                    .cloned()
                    .unwrap_or(Entry::Zero);
                if h.is_writable(&entry) {
                    let obj = entry
                        .object_name(i)
                        .expect("a writable entry names an object");
                    match self.data.delete(&obj) {
                        Ok(()) | Err(StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(store_err(&obj, e)),
                    }
                }
            }
            index = chunk_end;
        }
        Ok(())
    }

    /// Before shrinking to `from` (old size `to`): the bytes of the new
    /// last object past `from` must read as zeros should they come back
    /// inside the volume (grow, larger clone). Zeroes them in the volume's
    /// own object (copying a shared one up first) and returns the header
    /// and chunk to commit with the resize.
    fn zero_tail(
        &self,
        name: &str,
        vol: &Vol,
        from: u64,
        to: u64,
    ) -> Result<(Header, Vec<Chunk>), Error> {
        let h = &vol.header;
        let os = h.object_size();
        let off = from % os;
        if off == 0 {
            return Ok((h.clone(), Vec::new()));
        }
        let index = from / os;
        let (slot, at) = h.chunk_for(index).map_err(|e| map_err(name, e))?;
        let chunk = self.chunk(vol, h.chunks[slot])?;
        let entry = chunk.get(at).cloned().unwrap_or(Entry::Zero);
        if entry.is_zero() {
            return Ok((h.clone(), Vec::new()));
        }
        let own = owned_object_name(h.volume_id, h.epoch, index);
        let zeros = vec![0u8; (os.min(to - index * os) - off) as usize];
        if h.is_writable(&entry) {
            self.data
                .write(&own, off, &zeros, true)
                .map_err(|e| store_err(&own, e))?;
            return Ok((h.clone(), Vec::new()));
        }
        let old = entry.object_name(index).expect("nonzero entry");
        match self.data.copy(&old, 0, &own, 0, os, true) {
            Ok(()) => {}
            Err(StoreError::NotFound { .. }) if matches!(entry, Entry::Owned { .. }) => {}
            Err(e) => return Err(store_err(&old, e)),
        }
        self.data
            .write(&own, off, &zeros, true)
            .map_err(|e| store_err(&own, e))?;
        let (c, nh) =
            set_entries(h, &chunk, vec![(index, h.own_entry())]).map_err(|e| map_err(name, e))?;
        Ok((nh, vec![c]))
    }

    fn check_range(name: &str, h: &Header, offset: u64, len: u64) -> Result<(), Error> {
        match offset.checked_add(len) {
            Some(end) if end <= h.size => Ok(()),
            _ => Err(err(
                ErrorCode::OutOfRange,
                format!("{name}: {len} bytes at {offset} pass the end ({})", h.size),
            )),
        }
    }

    /// Where `len` bytes at `offset` of `name` are, split at object
    /// boundaries. Takes no lock. See the composer's contract.
    pub fn map_read(&self, name: &str, offset: u64, len: u64) -> Result<Vec<Extent>, Error> {
        check_name(name)?;
        let s = self.state(name);
        let st = Self::lock_state(&s);
        let vol = match &st.header {
            Some(h) if st.opens > 0 => Vol {
                version: 3,
                header: h.clone(),
                legacy_chunks: None,
            },
            _ => self.load(name, false, None)?,
        };
        drop(st);
        self.extents_of(name, &vol, offset, len)
    }

    /// [`map_read`](Self::map_read) (`write` false) or
    /// [`map_write`](Self::map_write) (`write` true) when it needs no I/O,
    /// no change and no wait, else `None` (the caller then runs the full
    /// call, on a worker). Answered from the cached header and chunks of a
    /// volume open for writing on this host; `None` if a lock is
    /// contended, a chunk is not cached, a write needs copy-on-write or
    /// allocation, or the lock is due for its fence check. A peer calls it
    /// on its loop thread: for the common I/O it saves a hand-off to a
    /// worker, which costs more than the lookup.
    pub fn map_cached(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        write: bool,
    ) -> Option<Result<Vec<Extent>, Error>> {
        let s = self.volumes.try_lock().ok()?.get(name)?.clone();
        let st = s.try_lock().ok()?;
        let h = st.header.as_ref().filter(|_| st.opens > 0)?;
        if write
            && st
                .fence_checked
                .map_or(true, |t| t.elapsed() > FENCE_RECHECK)
        {
            return None;
        }
        if let Err(e) = Self::check_range(name, h, offset, len) {
            return Some(Err(e));
        }
        let mut out = Vec::new();
        let mut cur: Option<(usize, Arc<Chunk>)> = None;
        for (index, off, n) in split(offset, len, h.object_size()) {
            let (slot, at) = h.chunk_for(index).ok()?;
            let r = h.chunks[slot];
            let entry = if r.is_zero() {
                Entry::Zero
            } else {
                let chunk = match &cur {
                    Some((s, c)) if *s == slot => c.clone(),
                    _ => {
                        let c = self.chunks.try_lock().ok()?.get(&r)?;
                        cur = Some((slot, c.clone()));
                        c
                    }
                };
                chunk.get(at).cloned().unwrap_or(Entry::Zero)
            };
            if write && !h.is_writable(&entry) {
                return None;
            }
            out.push(Extent::of_entry(&entry, index, off, n));
        }
        Some(Ok(out))
    }

    /// [`map_read`](Self::map_read) of a v0 map (a Pithos hashmap).
    pub fn map_read_assume_v0(
        &self,
        name: &str,
        size_hint: Option<u64>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<Extent>, Error> {
        let vol = self.load(name, true, size_hint)?;
        self.extents_of(name, &vol, offset, len)
    }

    fn extents_of(
        &self,
        name: &str,
        vol: &Vol,
        offset: u64,
        len: u64,
    ) -> Result<Vec<Extent>, Error> {
        let h = &vol.header;
        if h.flags.removed {
            return Err(err(ErrorCode::NotFound, format!("{name} was removed")));
        }
        Self::check_range(name, h, offset, len)?;
        let mut out = Vec::new();
        let mut cur: Option<(usize, Arc<Chunk>)> = None;
        for (index, off, n) in split(offset, len, h.object_size()) {
            let (slot, at) = h.chunk_for(index).map_err(|e| map_err(name, e))?;
            let chunk = match &cur {
                Some((s, c)) if *s == slot => c.clone(),
                _ => {
                    let c = self.chunk(vol, h.chunks[slot])?;
                    cur = Some((slot, c.clone()));
                    c
                }
            };
            let entry = chunk.get(at).cloned().unwrap_or(Entry::Zero);
            out.push(Extent::of_entry(&entry, index, off, n));
        }
        Ok(out)
    }

    /// Prepares a write of `len` bytes at `offset` of `name`: returns the
    /// objects to write, copying up shared objects first and committing
    /// their entries (see the composer's contract for `pending` extents).
    /// Opens the volume implicitly if this host does not hold it (the
    /// implicit open is released by one [`close`](Self::close)).
    pub fn map_write(&self, name: &str, offset: u64, len: u64) -> Result<Vec<Extent>, Error> {
        self.change(name, offset, len, false)
    }

    /// Discards `len` bytes at `offset` of `name` (DISCARD and
    /// WRITE_ZEROES alike): every object the range covers whole gets a
    /// zero entry (committed as any map change: chunks, then the header),
    /// so it reads as zeros without touching storage. Returns the write
    /// extents (as [`map_write`](Self::map_write) would, copy-on-write
    /// included) of the partly covered objects, which the composer must
    /// fill with zeros; a partly covered object whose entry is already
    /// zero needs nothing and is left out.
    ///
    /// For a whole object with a non-zero entry, the object of this
    /// volume's id and *current* epoch at that index (which no snapshot or
    /// clone can refer to: a snapshot moves the volume to a new epoch) is
    /// deleted from the data store *before* the zero entry commits: were
    /// it kept, a later partial write (which re-owns a zero entry without
    /// copying) would expose its stale bytes. A crash in between leaves an
    /// owned entry naming a missing object, which reads as zeros. Objects
    /// shared with a snapshot (older epochs, a parent's, content or legacy
    /// objects) are only dereferenced, left for garbage collection. Locks, read-only snapshots and ranges are checked as
    /// for [`map_write`](Self::map_write).
    pub fn discard(&self, name: &str, offset: u64, len: u64) -> Result<Vec<Extent>, Error> {
        self.change(name, offset, len, true)
    }

    /// [`map_write`](Self::map_write) (`discard` false) or
    /// [`discard`](Self::discard).
    fn change(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        discard: bool,
    ) -> Result<Vec<Extent>, Error> {
        check_name(name)?;
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        loop {
            if st.opens == 0 {
                self.open_locked(name, &mut st)?;
            }
            if !Self::flatten_copying(&st, offset, len) {
                break;
            }
            st = Self::wait_for_flatten(&s, st);
        }
        let h = st.header.clone().expect("a held volume is cached");
        Self::check_range(name, &h, offset, len)?;
        // Fencing: before any change to the data store below, and at least
        // every FENCE_RECHECK for writes to objects the volume already
        // owns (which change nothing here).
        let mut verified = false;
        if st
            .fence_checked
            .map_or(true, |t| t.elapsed() > FENCE_RECHECK)
        {
            self.check_fence(name, &mut st)?;
            verified = true;
        }
        let os = h.object_size();
        let vol = Vol {
            version: 3,
            header: h.clone(),
            legacy_chunks: None,
        };
        let mut out = Vec::new();
        // slot -> (chunk, updates)
        let mut updates: Updates = BTreeMap::new();
        let mut new_pending = Vec::new();
        for (index, off, n) in split(offset, len, os) {
            let (slot, at) = h.chunk_for(index).map_err(|e| map_err(name, e))?;
            let chunk = match updates.get(&slot) {
                Some((c, _)) => c.clone(),
                None => {
                    let c = self.chunk(&vol, h.chunks[slot])?;
                    updates.insert(slot, (c.clone(), Vec::new()));
                    c
                }
            };
            let entry = chunk.get(at).cloned().unwrap_or(Entry::Zero);
            let own = owned_object_name(h.volume_id, h.epoch, index);
            if discard {
                let in_volume = os.min(h.size - index * os);
                let whole = off == 0 && n >= in_volume;
                if whole {
                    if !entry.is_zero() {
                        // `own` (this id, current epoch) is private: the
                        // entry's object, or an orphan of a full overwrite
                        // that never committed. Either way it must go
                        // before the zero entry commits (see `discard`).
                        if !verified {
                            self.check_fence(name, &mut st)?;
                            verified = true;
                        }
                        match self.data.delete(&own) {
                            Ok(()) | Err(StoreError::NotFound { .. }) => {}
                            Err(e) => return Err(store_err(&own, e)),
                        }
                        updates
                            .get_mut(&slot)
                            .expect("inserted")
                            .1
                            .push((index, Entry::Zero));
                    }
                    continue;
                }
                if entry.is_zero() && !st.pending.contains(&index) {
                    continue; // already reads as zeros
                }
            }
            let mut ext = Extent {
                index,
                object: Some(own.clone()),
                offset_in_object: off,
                len: n,
                pending: false,
                missing_reads_zero: true,
            };
            if h.is_writable(&entry) {
                ext.object = entry.object_name(index);
            } else if st.pending.contains(&index) {
                ext.pending = true;
            } else {
                let in_volume = os.min(h.size - index * os);
                let full = off == 0 && n >= in_volume;
                if entry.is_zero() {
                    // First write to an unallocated object: pending, like
                    // a full overwrite, so the entry commits after the
                    // data and many first writes share one commit
                    // (`commit_batch`). An orphan of an earlier round that
                    // never committed may sit under `own` with stale bytes
                    // that a partial write would expose: it goes first.
                    if !full {
                        if !verified {
                            self.check_fence(name, &mut st)?;
                            verified = true;
                        }
                        match self.data.delete(&own) {
                            Ok(()) | Err(StoreError::NotFound { .. }) => {}
                            Err(e) => return Err(store_err(&own, e)),
                        }
                    }
                    ext.pending = true;
                    new_pending.push(index);
                } else if full {
                    ext.pending = true;
                    new_pending.push(index);
                } else {
                    let old = entry.object_name(index).expect("nonzero entry");
                    if !verified {
                        self.check_fence(name, &mut st)?;
                        verified = true;
                    }
                    match self.data.copy(&old, 0, &own, 0, os, true) {
                        Ok(()) => {}
                        // A missing owned object reads as zeros: nothing to copy.
                        Err(StoreError::NotFound { .. })
                            if matches!(entry, Entry::Owned { .. }) => {}
                        Err(e) => return Err(store_err(&old, e)),
                    }
                    updates
                        .get_mut(&slot)
                        .expect("inserted")
                        .1
                        .push((index, h.own_entry()));
                }
            }
            out.push(ext);
        }
        self.apply_updates(name, &mut st, h, updates)?;
        st.pending.extend(new_pending);
        Ok(out)
    }

    /// Sets entries chunk by chunk, then commits all chunks and one header.
    fn apply_updates(
        &self,
        name: &str,
        st: &mut VolState,
        mut h: Header,
        updates: Updates,
    ) -> Result<(), Error> {
        let mut chunks = Vec::new();
        for (_, (chunk, ups)) in updates {
            if ups.is_empty() {
                continue;
            }
            let (c, nh) = set_entries(&h, &chunk, ups).map_err(|e| map_err(name, e))?;
            chunks.push(c);
            h = nh;
        }
        if chunks.is_empty() {
            return Ok(());
        }
        let held = Held {
            name: name.to_owned(),
            token: st.token,
            took: false,
        };
        self.commit(name, Some(st), Some(&held), chunks, &h)
    }

    /// Commits the entries of `indexes`, returned `pending` by
    /// [`map_write`](Self::map_write), once their data writes succeeded.
    pub fn commit_writes(&self, name: &str, indexes: &[u64]) -> Result<(), Error> {
        self.commit_batch(name, &[indexes])
            .pop()
            .expect("one result per request")
    }

    /// Forgets the writes of `name` still pending, and returns their
    /// indexes. For the composer's barriers: once a volume's I/O has
    /// drained, an index still pending belongs to a round whose data
    /// failed (the composer commits only rounds that succeeded) and will
    /// never be committed; left pending, it would make snapshot and resize
    /// refuse the volume until it is closed. Its data object (this
    /// volume's, current epoch) is an orphan: the next first write deletes
    /// or overwrites it, a snapshot leaves it to the garbage collector.
    pub fn forget_pending(&self, name: &str) -> Vec<u64> {
        let Ok(()) = check_name(name) else {
            return Vec::new();
        };
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        let mut gone: Vec<u64> = st.pending.drain().collect();
        gone.sort_unstable();
        if !gone.is_empty() {
            log::warn!("{name}: writes to objects {gone:?} were abandoned; forgotten");
        }
        gone
    }

    /// [`commit_writes`](Self::commit_writes) of several requests with one
    /// commit (group commit): a commit writes chunks and a header durably,
    /// which costs the same for one index as for hundreds, so the
    /// composer's concurrent commits of a volume share it. Each request is
    /// checked on its own (one naming an index that is not pending fails
    /// alone); the others succeed or fail together with the commit.
    /// Returns one result per request, in order.
    pub fn commit_batch(&self, name: &str, requests: &[&[u64]]) -> Vec<Result<(), Error>> {
        if let Err(e) = check_name(name) {
            return requests.iter().map(|_| Err(e.clone())).collect();
        }
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        if st.opens == 0 {
            let e = err(
                ErrorCode::NotFound,
                format!("{name} is not open for writing on this host"),
            );
            return requests.iter().map(|_| Err(e.clone())).collect();
        }
        let mut results: Vec<Result<(), Error>> = requests
            .iter()
            .map(|r| match r.iter().find(|i| !st.pending.contains(i)) {
                Some(index) => Err(err(
                    ErrorCode::InvalidArgument,
                    format!("{name}: object {index} has no pending write"),
                )),
                None => Ok(()),
            })
            .collect();
        let indexes: Vec<u64> = requests
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .flat_map(|(r, _)| r.iter().copied())
            .collect();
        if let Err(e) = self.commit_pending(name, &mut st, &indexes) {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone());
            }
        }
        results
    }

    /// Commits own entries for `indexes` (all pending) and forgets them.
    fn commit_pending(&self, name: &str, st: &mut VolState, indexes: &[u64]) -> Result<(), Error> {
        if indexes.is_empty() {
            return Ok(());
        }
        let h = st.header.clone().expect("a held volume is cached");
        let vol = Vol {
            version: 3,
            header: h.clone(),
            legacy_chunks: None,
        };
        let mut updates: Updates = BTreeMap::new();
        for &index in indexes {
            let (slot, _) = h.chunk_for(index).map_err(|e| map_err(name, e))?;
            let ups = match updates.entry(slot) {
                std::collections::btree_map::Entry::Occupied(o) => &mut o.into_mut().1,
                std::collections::btree_map::Entry::Vacant(v) => {
                    &mut v.insert((self.chunk(&vol, h.chunks[slot])?, Vec::new())).1
                }
            };
            if !ups.iter().any(|(i, _)| *i == index) {
                ups.push((index, h.own_entry()));
            }
        }
        self.apply_updates(name, st, h, updates)?;
        for i in indexes {
            st.pending.remove(i);
        }
        Ok(())
    }

    /// Replaces every entry of the snapshot `snap` by its content object
    /// (all-zero objects by zero entries). Objects are read and stored on
    /// the hash threads ([`with_hash_threads`](Self::with_hash_threads));
    /// the chunks and then the header are committed as for any change.
    /// The old data objects are left for garbage collection.
    ///
    /// The new chunks are owned by a fresh random id, not the snapshot's:
    /// a snapshot shares its id and serials with its volume, which keeps
    /// writing chunks.
    pub fn hash(&self, snap: &str) -> Result<HashReport, Error> {
        check_name(snap)?;
        let s = self.state(snap);
        let mut st = Self::lock_state(&s);
        self.locked(snap, &mut st, |_, held| {
            let mut h = self.load_v3(snap)?;
            if h.flags.removed {
                return Err(err(ErrorCode::NotFound, format!("{snap} was removed")));
            }
            if !h.flags.readonly {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!("{snap} is not a snapshot"),
                ));
            }
            let vol = Vol {
                version: 3,
                header: h.clone(),
                legacy_chunks: None,
            };
            let os = h.object_size();
            let owner = loop {
                let id = random_id();
                if id != h.volume_id && !h.chunks.iter().any(|r| r.owner == id) {
                    break id;
                }
            };
            // Garbage collection: announce the hash before it may find
            // (and so refer to) existing content objects.
            let _pin = self.pin_hash(snap, owner)?;
            // Load every chunk, and list the entries to read and store.
            let mut loaded = Vec::new();
            let mut jobs = Vec::new();
            for (slot, r) in h.chunks.iter().enumerate() {
                if r.is_zero() {
                    continue;
                }
                let chunk = self.chunk(&vol, *r)?;
                for (at, e) in chunk.entries().iter().enumerate() {
                    if matches!(e, Entry::Owned { .. } | Entry::Legacy(_)) {
                        jobs.push((loaded.len(), at));
                    }
                }
                loaded.push((slot, chunk));
            }
            // Read and store them on the workers: a digest each, or `None`
            // for an all-zero object.
            let digests = self.hash_objects(snap, &loaded, &jobs, os)?;
            let mut report = HashReport::default();
            let mut distinct = HashSet::new();
            let mut chunks = Vec::new();
            let mut new_refs = h.chunks.clone();
            let mut serial = 0;
            let mut next = digests.into_iter();
            for (slot, chunk) in &loaded {
                let mut entries = Vec::with_capacity(chunk.entries().len());
                let mut changed = false;
                for e in chunk.entries() {
                    let new = match e {
                        Entry::Zero => Entry::Zero,
                        Entry::Content(d) => {
                            report.objects += 1;
                            distinct.insert(*d);
                            e.clone()
                        }
                        Entry::Owned { .. } | Entry::Legacy(_) => {
                            report.objects += 1;
                            changed = true;
                            match next.next().expect("one digest a job") {
                                None => {
                                    report.zero_objects += 1;
                                    Entry::Zero
                                }
                                Some(d) => {
                                    distinct.insert(d);
                                    Entry::content(d)
                                }
                            }
                        }
                    };
                    entries.push(new);
                }
                if changed {
                    serial += 1;
                    let id = ChunkRef { owner, serial };
                    let c = Chunk::from_entries(id, entries).map_err(|e| map_err(snap, e))?;
                    new_refs[*slot] = if c.entries().is_empty() {
                        ChunkRef::ZERO
                    } else {
                        chunks.push(c);
                        id
                    };
                }
            }
            report.distinct = distinct.len() as u64;
            report.bytes_saved = (report.objects - report.distinct) * os;
            h.chunks = new_refs;
            h.flags.hashed = true;
            h.commit_seq += 1;
            h.validate().map_err(|e| map_err(snap, e))?;
            self.commit(snap, None, Some(held), chunks, &h)?;
            Ok(report)
        })
    }

    /// Reads the objects of `jobs` (`(index in loaded, entry index)`) and
    /// stores their content, on the hash threads (each with its own buffer,
    /// taking the next job as it goes). Returns, in job order, each
    /// object's digest, `None` for an all-zero object.
    fn hash_objects(
        &self,
        snap: &str,
        loaded: &[(usize, Arc<Chunk>)],
        jobs: &[(usize, usize)],
        os: u64,
    ) -> Result<Vec<Option<[u8; 32]>>, Error> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let threads = self
            .hash_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, jobs.len().max(1));
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let work = || -> Result<JobDigests, Error> {
            let mut out = Vec::new();
            let mut buf = vec![0u8; os as usize];
            while !failed.load(Ordering::Relaxed) {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(c, at)) = jobs.get(j) else {
                    break;
                };
                let (slot, chunk) = &loaded[c];
                let e = &chunk.entries()[at];
                let index = (slot * ENTRIES_PER_CHUNK + at) as u64;
                let r = self.hash_object(snap, e, index, &mut buf);
                match r {
                    Ok(d) => out.push((j, d)),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok(out)
        };
        let results: Vec<_> = if threads == 1 {
            vec![work()]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(err(
                                ErrorCode::Io,
                                format!("{snap}: a hash worker panicked"),
                            ))
                        })
                    })
                    .collect()
            })
        };
        let mut digests = vec![None; jobs.len()];
        let mut done = 0;
        for r in results {
            for (j, d) in r? {
                digests[j] = d;
                done += 1;
            }
        }
        if done != jobs.len() {
            return Err(err(ErrorCode::Io, format!("{snap}: hashing stopped early")));
        }
        Ok(digests)
    }

    /// Reads the object of entry `e` (at `index`) into `buf` and stores
    /// its content: its digest, `None` if it is all zeros.
    fn hash_object(
        &self,
        snap: &str,
        e: &Entry,
        index: u64,
        buf: &mut [u8],
    ) -> Result<Option<[u8; 32]>, Error> {
        let name = e.object_name(index).expect("nonzero");
        match self.data.read(&name, 0, buf) {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) if matches!(e, Entry::Owned { .. }) => buf.fill(0),
            Err(e) => return Err(store_err(&name, e)),
        }
        if buf.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let cname = self
            .data
            .store_content(buf, true)
            .map_err(|e| store_err(snap, e))?;
        let d = hex_digest(&cname)
            .ok_or_else(|| err(ErrorCode::Io, format!("bad content name {cname}")))?;
        Ok(Some(d))
    }

    /// Converts an old-format map (v1, v2) to format 3 in place.
    /// Already format 3: nothing to do.
    pub fn update(&self, name: &str) -> Result<(), Error> {
        self.update_impl(name, false, None)
    }

    /// [`update`](Self::update), reading a map without a header as v0 of
    /// `size_hint` bytes if given.
    pub fn update_assume_v0(&self, name: &str, size_hint: Option<u64>) -> Result<(), Error> {
        self.update_impl(name, true, size_hint)
    }

    fn update_impl(&self, name: &str, assume_v0: bool, hint: Option<u64>) -> Result<(), Error> {
        check_name(name)?;
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        if st.opens > 0 {
            return Ok(()); // only format 3 volumes open for writing
        }
        self.locked(name, &mut st, |st, held| {
            let bytes = self
                .read_whole(name)?
                .ok_or_else(|| Self::not_found(name))?;
            let first = &bytes[..bytes.len().min(archipelago_mapfmt::DETECT_LEN)];
            let detected = detect(first, assume_v0).map_err(|e| map_err(name, e))?;
            if detected == Detected::V3 {
                return Ok(());
            }
            let map = self.load_legacy(name, detected, &bytes, hint)?;
            let (h, chunks) = upgrade(&map, random_id()).map_err(|e| map_err(name, e))?;
            self.commit(name, Some(st), Some(held), chunks, &h)?;
            if detected == Detected::V2 {
                // Best effort: the old map-data objects are garbage now.
                let per = v2::entries_per_object(map.object_size as u32).max(1);
                for block in 0..map.nr_objects().div_ceil(per) {
                    let _ = self.maps.delete(&v2::map_object_name(name, block));
                }
            }
            Ok(())
        })
    }
}

/// A hash pin (`archip_gcpin_{owner}`), deleted when dropped: while it
/// exists a collection keeps every content object and every chunk of an
/// unknown owner (the `archipelago-gc` crate docs argue why).
struct HashPin<'a> {
    maps: &'a dyn ObjectStore,
    name: String,
}

impl Drop for HashPin<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.maps.delete(&self.name) {
            log::warn!("hash pin {}: {e}", self.name);
        }
    }
}

// Garbage-collection safety of hash, kept apart from the operations.
impl Mapper {
    /// The gc generation (odd while a collection runs).
    fn gc_generation(&self) -> Result<u64, Error> {
        let name = gcmeta::GC_STATE_OBJECT;
        match self.read_whole(name)? {
            None => Ok(0),
            Some(b) => gcmeta::decode_generation(&b)
                .ok_or_else(|| err(ErrorCode::Io, format!("{name}: not a gc generation"))),
        }
    }

    /// Writes the pin of a hash of `snap` writing chunks of `owner`, then
    /// reads the gc generation; while it is odd (a collection that may
    /// have listed the pins before ours was written is running), waits
    /// for it to change, at most `gc_wait`.
    fn pin_hash(&self, snap: &str, owner: u64) -> Result<HashPin<'_>, Error> {
        let name = gcmeta::pin_name(owner);
        self.maps
            .write_full(&name, snap.as_bytes(), true)
            .map_err(|e| store_err(&name, e))?;
        let pin = HashPin {
            maps: &*self.maps,
            name,
        };
        let first = self.gc_generation()?;
        if gcmeta::collecting(first) {
            let start = std::time::Instant::now();
            log::info!("{snap}: hash waits for garbage collection {first} to finish");
            while self.gc_generation()? == first {
                if start.elapsed() > self.gc_wait {
                    return Err(err(
                        ErrorCode::Busy,
                        format!(
                            "{snap}: a garbage collection is running (or was interrupted: run vlmc gc); try again"
                        ),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Ok(pin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_split_at_object_boundaries() {
        assert_eq!(split(0, 0, 4096), vec![]);
        assert_eq!(
            split(4000, 5000, 4096),
            vec![(0, 4000, 96), (1, 0, 4096), (2, 0, 808)]
        );
    }

    #[test]
    fn markers_and_digests() {
        assert_eq!(marker_name(0xab), "00000000000000ab_0000000000000000");
        let d = [0x5au8; 32];
        let name = archipelago_protocol::names::content_name(&d);
        assert_eq!(hex_digest(&name), Some(d));
        assert_eq!(hex_digest("xyz"), None);
        assert_ne!(random_id(), 0);
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn the_mapper_is_send_and_sync() {
        assert_send_sync::<Mapper>();
    }
}
