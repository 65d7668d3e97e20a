//! The mapper's volume logic, in process: plain synchronous Rust over two
//! [`ObjectStore`]s, the **map store** (headers, chunks, locks) and the
//! **data store** (volume objects). The `mapperd` peer wraps a [`Mapper`]
//! and gives it stores that speak xseg to the blockers.
//!
//! Maps are [`archipelago_mapfmt`] version 3 (chunks of version 4, with
//! partial entries: sub-object copy-on-write): a header `<volume>` refers
//! to immutable chunks; every change writes new chunks first and then
//! replaces the header with one atomic `write_full`, the single commit
//! point, except the commits of writes (first writes, copy-ups), which
//! are appends to the volume's journal until a checkpoint stores them
//! (the `journal` module). Old maps (v1, v2, and v0 when asked) are read
//! in place and converted by [`Mapper::update`].
//!
//! # Operations
//!
//! | operation | lock (storage lock `<volume>` for this host) | writes (in order) | errors |
//! |---|---|---|---|
//! | [`create`](Mapper::create) | target, for the operation | (a REMOVED header there: its tombstone `archip_removed_{id}_{epoch}`, then delete it), header | `Exists` (a live header), `Locked`, `InvalidArgument` |
//! | [`info`](Mapper::info) | none | nothing | `NotFound` |
//! | [`open`](Mapper::open) writable | taken, kept until the last [`close`](Mapper::close) (opens on one host are counted) | nothing | `Locked` (detail: owner), `ReadOnly` (snapshot, old format: "run vlmc upgrade NAME"), `NotFound` |
//! | [`open`](Mapper::open) read-only | none | nothing | `NotFound` |
//! | [`info_assume_v0`](Mapper::info_assume_v0), [`map_read_assume_v0`](Mapper::map_read_assume_v0) | none | nothing | `NotFound`; a Pithos hashmap's 64-hex name is accepted here (read-only), never for writing |
//! | [`snapshot`](Mapper::snapshot) | volume: held or taken for the operation; snapshot name: taken for the operation | volume header, then snapshot header | `Exists`, `Locked`, `ReadOnly`, `Busy` (uncommitted writes) |
//! | [`clone_volume`](Mapper::clone_volume) | source snapshot and new name, for the operation (excludes a remove of the source on any host) | clone header | `InvalidArgument` (not a snapshot, smaller), `Exists`, `Locked` (the source is being hashed, cloned or removed elsewhere) |
//! | [`remove`](Mapper::remove) | held or taken | header (REMOVED; the name can be used again at once: snapshot, clone, rename and create onto it move the removed header to its tombstone first) | `InUse` (a snapshot with clones), `Locked` |
//! | [`rename`](Mapper::rename) | both names, for the operation | marker, new header, delete old header, delete marker | `Busy` (open here), `Exists`, `Locked` |
//! | [`resize`](Mapper::resize) | held or taken | shrink mid-object: zeros over the cut bytes of the new last object (copied up first if shared); chunks, header | `InvalidArgument` (shrink without force), `Busy` (uncommitted writes) |
//! | [`map_read`](Mapper::map_read) | none | nothing | `OutOfRange`, `NotFound` |
//! | [`map_write`](Mapper::map_write) | held, or taken by an implicit open | copy-ups (data; with the volume's state unlocked, the objects pending) | `OutOfRange`, `ReadOnly`, `Locked`, `Fenced` |
//! | [`discard`](Mapper::discard) | as map_write | deletes of private whole objects, chunks, header; copy-ups as map_write | as map_write |
//! | [`commit_writes`](Mapper::commit_writes) | held | one journal record (a checkpoint past 1 MiB: chunks, header, journal deleted) | `InvalidArgument` (not pending), `Fenced` |
//! | [`hash`](Mapper::hash) | snapshot, for the operation; then each other map naming a replaced object: held here, or taken for its move | gc pin `archip_gcpin_{owner}` (waits while a collection runs), content objects (data), rebase record `archip_rebase_{owner}` and its name on the list `archip_rebaselist`, snapshot's chunks, header; then per other map (origin, clones, their snapshots) its chunks, header (entries still naming a replaced object only); record taken off the list and deleted once no map names one; pin deleted | `InvalidArgument` (not a snapshot), `Busy` (a collection ran past `with_gc_wait`); maps held elsewhere past `with_rebase_wait` are listed in [`HashReport::maps_left`], not an error |
//! | [`apply_rebases`](Mapper::apply_rebases) | held (volumes open here) | nothing unless `archip_rebaselist` names records; per volume naming a replaced object: gc pin (waits while a collection runs), chunks, header; pin deleted | store errors (a volume that fails is logged and skipped) |
//! | [`update`](Mapper::update) | taken for the operation | chunks, header over the old name | `Locked`, `InvalidArgument` (a Pithos hashmap: see `upgrade_v0`) |
//! | [`upgrade_v0`](Mapper::upgrade_v0) | new name, for the operation | chunks, header under the new name; the Pithos hashmap (64 hex) is left as it is | `Exists`, `InvalidArgument` (not v0) |
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
//! (`docs/design.md`, section 6, joins these to the peers: who dies at
//! which step of a request, and what the next run does.)
//!
//! | crash after | state | consequence |
//! |---|---|---|
//! | copy-up copy (and maybe the data written), before the commit | orphan data object | the write was not acknowledged; the next write copies again into the same name (idempotent) |
//! | chunk written, header not | orphan chunk | the old view is intact; the next change rewrites the same serial |
//! | first write to a **zero** entry: data written, `commit_writes` never called | orphan owned object, the entry still zero | reads as zeros; the next first write to it deletes the orphan before writing (a partial write must not expose its bytes) |
//! | full overwrite of a **shared** object: data written, `commit_writes` never called | orphan data object | the entry still names the shared object: old data, never zeros |
//! | partial write of a shared object | copy-up happened before the data and the commit | the new object holds the old data before any new byte |
//! | snapshot: volume header written, snapshot header not | the volume moved to the next epoch; no snapshot | nothing corrupted (mapfmt) |
//! | rename: marker written, new header not | the old name is live; marker stale | harmless; overwritten by the next rename of this volume |
//! | name reuse: tombstone written, removed header not deleted | the removed header under both names (one identity) | the operation is retried; the collector deletes both once nothing needs them |
//! | rename: new header written, old not deleted | both headers exist; the marker says old → new | loads of the old name answer `NotFound` (the rename counts as done): never two live volumes sharing writable objects |
//! | shrink: cut bytes zeroed, header not | the volume keeps its size; the bytes being cut read as zeros | only bytes the caller was dropping (with `force`) |
//! | discard: a private whole object deleted, header not | the owned entry names a missing object | reads as zeros, which the discard was making it |
//! | update: chunks written, header not | old map intact, orphan chunks | the update did not happen |
//! | hash: chunks written, header not | old snapshot map intact; maybe a rebase record | the hash did not happen; a holder may still move its map by the record (same bytes: content of the snapshot's immutable objects), harmless; the next hash rewrites and resumes |
//! | hash: snapshot header written, other maps not (all or some) moved | those maps name the old objects | nothing lost: the objects stay referenced; the record lets holders move their maps, and `hash` again (nothing re-read) resumes and deletes it |
//! | a map's move: chunks written, header not | that map intact | as any change: an orphan chunk; the next walk or check moves it again |
//!
//! # Dedup that saves space: moving the other maps (rebase)
//!
//! [`hash`](Mapper::hash) replaces each object of a snapshot by the
//! content object of the same bytes; the other maps naming those objects
//! (the snapshot's volume, clones made from it, their snapshots) are then
//! moved onto the content objects too, so that the old objects become
//! garbage. The design (in full in `rebase.rs`):
//!
//! - **Record.** Before the snapshot's commit the hash writes a rebase
//!   record `archip_rebase_{owner}` (each replaced object: index, old
//!   name, content digest or zero) and names it on the rebase list
//!   `archip_rebaselist`. It survives a crash; `hash` again (the snapshot
//!   is not read again) resumes from every record of its snapshot.
//! - **A move** is a map change like any other: under the map's lock,
//!   chunks then header, the same crash rules. An entry moves only if it
//!   still names the replaced object (compare-and-swap per entry, against
//!   the map as it is under the lock), so an object overwritten meanwhile
//!   stays the map's own.
//! - **Who moves.** A map open on this mapper: the hash, at once, under
//!   the volume's mutex between two writes (no drain, no pause). A closed
//!   map: the hash, under the map's lock taken for the move. A map locked
//!   elsewhere (another host's mapperd, or another mapperd process): its
//!   holder, at its periodic check ([`apply_rebases`](Mapper::apply_rebases),
//!   every [`REBASE_CHECK`] in mapperd: one read of the rebase list). The
//!   hash waits for holders at most [`with_rebase_wait`](Mapper::with_rebase_wait)
//!   (or the request's wait), polling those maps' headers, and reports
//!   the maps still naming replaced objects ([`HashReport::maps_left`]);
//!   the record is deleted only when none is left.
//! - **Garbage collection.** Moves run under a gc pin: the hash's own
//!   (content stored after it), or for a holder its own pin, a wait while
//!   a collection runs, and a check that each content object exists
//!   before an entry moves onto it (`archipelago-gc` docs, "Rebase").
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
//!   takes the lock (read from storage then, its journal replayed) and
//!   replaced by each commit or journal append through the open; it is
//!   dropped with the lock: on the last
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
//!   cached. Chunks of journal appends exist only in memory until a
//!   checkpoint writes them: the writer keeps them apart (never evicted),
//!   and a reader replaying a journal keeps its own in the loaded map
//!   only (two replays may number different chunks alike).
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
//!   one runs; moving other maps onto content objects pins itself the
//!   same way (see `rebase.rs` and the `archipelago-gc` docs).
//! - A read whose extents were mapped before a map was moved onto content
//!   objects reads the old object after: if a whole collection ran in
//!   between and deleted it, an owned object reads as zeros. The window
//!   is one read's flight against one collection's list, mark and sweep;
//!   it is not closed (a composer would have to re-map on a missing
//!   object).
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
//!
//! # Layout
//!
//! One `impl Mapper` block per concern:
//!
//! | module | what it owns |
//! |---|---|
//! | [`load`] (public) | reading maps: headers and chunks of every format, from any store, with a bounded retry of reads an object's replacement cut (the garbage collector uses it too); for the mapper, the rename marker and the chunk cache |
//! | `locks` | per-volume state on this host, storage locks, fencing |
//! | `commit` | the commit point (chunks, then the header), pending writes, group commit |
//! | `journal` | the map journal: commits of pending writes as appends, checkpoints, replay, and why garbage collection never reads journals |
//! | `lifecycle` | create, info, open/close, snapshot, clone, remove, rename, update |
//! | `resize` | resize, with the data changes a shrink needs |
//! | `io` | [`map_read`](Mapper::map_read), [`map_write`](Mapper::map_write), [`discard`](Mapper::discard): [`Extent`]s and copy-up |
//! | `hash` | [`hash`](Mapper::hash) and its garbage-collection pin |
//! | `rebase` | moving the other maps that name a hashed snapshot's objects onto its content objects: the design (records, who moves what, compare-and-swap per entry), [`apply_rebases`](Mapper::apply_rebases) for lock holders |
//! | `lineage` | lineage, flatten, rollback |
//! | `cache` | the LRU behind the chunk cache |

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod cache;
mod commit;
mod hash;
mod io;
mod journal;
mod lifecycle;
mod lineage;
pub mod load;
mod locks;
mod rebase;
mod resize;

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use archipelago_mapfmt::{Chunk, ChunkRef, MapError};
use archipelago_protocol::names::check_volume_name;
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::{ObjectStore, StoreError};
use cache::Lru;
pub use hash::HashReport;
pub use io::{read_extent, Extent};
pub use lifecycle::VolumeInfo;
pub use lineage::{FlattenStep, LineageRecord};
use locks::VolState;
pub use rebase::{DEFAULT_REBASE_WAIT, REBASE_CHECK};

/// How long [`Mapper::hash`] waits for a running garbage collection
/// before failing `Busy` (see [`Mapper::with_gc_wait`]).
pub const DEFAULT_GC_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The default budget of the decoded-chunk cache: 64 MiB (estimated).
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// The mapper: volume operations over a map store and a data store.
pub struct Mapper {
    maps: Arc<dyn ObjectStore>,
    data: Arc<dyn ObjectStore>,
    host_id: String,
    volumes: Mutex<HashMap<String, Arc<Mutex<VolState>>>>,
    chunks: Mutex<Lru<ChunkRef, Arc<Chunk>>>,
    /// Chunks that exist only in memory: made by journaled commits of
    /// volumes held here, or by replaying a journal (`journal.rs`).
    /// Found before the cache; written by the next commit of a header
    /// naming them (a checkpoint), then moved to the cache.
    dirty: Mutex<HashMap<ChunkRef, Arc<Chunk>>>,
    /// Volume ids whose journal object may exist: deleted by their next
    /// header commit.
    journals: Mutex<std::collections::HashSet<u64>>,
    /// Volumes this mapper created (or cloned), by name: their id and the
    /// token of the lock the creation held. Consumed by the volume's
    /// first open here: if that open's token is the next one, nobody held
    /// the lock in between, so no object of the volume exists that no
    /// entry names (`VolState::orphan_free`).
    created: Mutex<HashMap<String, (u64, u64)>>,
    /// Write-back mode: the store of the write-back journals (records
    /// acknowledged but not yet durable; `journal.rs`).
    write_back: Option<Arc<dyn ObjectStore>>,
    /// Worker threads of [`Mapper::hash`]; `None`: every core.
    hash_threads: Option<usize>,
    /// How long a hash waits for a running garbage collection.
    gc_wait: std::time::Duration,
    /// How long a hash waits for the holders of open maps to move them.
    rebase_wait: std::time::Duration,
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
            dirty: Mutex::new(HashMap::new()),
            journals: Mutex::new(std::collections::HashSet::new()),
            created: Mutex::new(HashMap::new()),
            write_back: None,
            hash_threads: None,
            gc_wait: DEFAULT_GC_WAIT,
            rebase_wait: DEFAULT_REBASE_WAIT,
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

    /// This mapper in write-back mode, for a data store that acknowledges
    /// writes before they are durable (a files blocker with `sync =
    /// false`): the records of commits go to the write-back journal in
    /// `journals`, a store on memory that outlives this process but not
    /// the host (`/dev/shm`), and become durable in the map store at the
    /// composer's FLUSH ([`sync_maps`](Self::sync_maps)), after the data
    /// they name; copy-ups are not synced either. qcow2 under
    /// `cache=writeback` defers its metadata the same way, but loses it
    /// when its process dies; here only a crash of the host does.
    /// Without it, commits are durable when acknowledged, and the data
    /// store must be durable too.
    pub fn with_write_back(self, journals: Arc<dyn ObjectStore>) -> Self {
        Self {
            write_back: Some(journals),
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

    /// How many chunks exist only in memory (journaled changes not yet
    /// checkpointed): at most one per chunk slot of each volume open here.
    pub fn memory_chunks(&self) -> usize {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The owner string of this mapper's locks.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }
}

/// A store failure while working on volume `name`: the store's
/// conversion, with the volume named first (a `Locked` detail stays the
/// owner: it prints as "locked by OWNER").
fn store_err(name: &str, e: StoreError) -> Error {
    let mut error = Error::from(e);
    if error.code != ErrorCode::Locked {
        error.detail = format!("{name}: {}", error.detail);
    }
    error
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_nonzero() {
        assert_ne!(random_id(), 0);
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn the_mapper_is_send_and_sync() {
        assert_send_sync::<Mapper>();
    }
}
