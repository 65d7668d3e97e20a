//! Garbage collection and space accounting over the two object stores
//! (the **map store**: headers, chunks, locks; the **data store**: volume
//! objects), as a library: [`collect`] reclaims every object no live map
//! refers to, [`usage`] says what each volume refers to and what removing
//! it would free. `vlmc gc` and `vlmc du` run them through the blockers.
//!
//! # What is garbage
//!
//! A map is **live** when its header (format 3) is not REMOVED. An object
//! is **referenced** when a live header names it as a chunk, or an entry
//! of such a chunk names it (owned, content or legacy object). Garbage is
//! every object of the kinds below that is not referenced and that no
//! operation in flight may still be about to reference:
//!
//! | store | kind (name) | deleted when unreferenced and |
//! |---|---|---|
//! | data | owned `{V}_{e}_{i}` | V's writable header is REMOVED, or `e` < its epoch |
//! | data | content (64 hex) | no hash was in flight (no pin, below) and no Pithos hashmap is in the map store |
//! | data | legacy (`archip_…`) | as content |
//! | map | chunk `{O}_{s}` (s ≥ 1) | O is not a live volume's id or `s` < its `next_serial`; an unknown O only when no hash was in flight |
//!
//! Live headers, rename markers (`{id}_0000000000000000`), pins, rebase
//! records (`archip_rebase_…` and their list `archip_rebaselist`, deleted
//! by the hash that wrote them), map journals (`archip_journal_…`,
//! deleted by their volume's checkpoints), the gc object and any name of
//! another shape are never deleted. Journals are not read: a journal
//! record names only objects of its volume's current epoch and, in a
//! partial entry, a backing the stored map names at the same index (the
//! mapper's `journal` module), all of which the rules below keep. A **removed
//! header** (under its name, or under its tombstone
//! `archip_removed_{id}_{epoch}` once the name was used again) is
//! deleted last in a run, once no live header needs it: it is on no live
//! header's chain of parent links (its lineage) and no live header has
//! its volume id (its writer record is what lets the sweep free the
//! volume's objects; a live snapshot or a clone through one keeps it);
//! a volume's writable header goes only once no object or chunk of its
//! id is left (a prefix listing of each store: one made after the
//! run's listing is freed by the next run, which still has the record).
//! Under a volume name it is deleted holding that name's lock, after
//! checking it is still the same removed header (id and epoch): every
//! operation that creates a header under a name holds its lock, so a
//! name used again is never deleted. No new parent link can point at a
//! removed header (clone and rollback refuse removed snapshots), so what
//! the marks said is unneeded stays unneeded.
//!
//! **Map-store objects are classified by reading them, not by their
//! names.** Every map-store object but chunk-named ones
//! (`{hex16}_{hex16}`), the collector's own (`archip_gc`, pins) and side
//! objects (`…_lock`, `…_hash`) is read at each mark round
//! ([`names::read_in_map_store`]): a format 3 header is a header under
//! whatever name (legal volume name or not); a v1 or v2 map (a legacy
//! `archip_<volume>` one too) stops the run before any delete
//! ([`GcError::OldFormat`]: `vlmc upgrade` it); a Pithos (v0) hashmap,
//! named by 64 hex digits, makes the run keep every content object (a
//! pool shared with Pithos: its hashmaps name content objects, and Pithos
//! may name more at any time); anything else stops the run
//! ([`GcError::Unknown`]). Before the first delete, every chunk-named
//! object the run would delete is read: one without the chunk magic (a
//! v2 map's data object `{volume}_{block:016x}` of a volume named by 16
//! hex digits) stops the run. A live header naming a chunk that is
//! missing or corrupt stops it too: not knowing what a map refers to,
//! it cannot know what is garbage.
//!
//! # The run
//!
//! 1. Take the collectors' lock `archip_gc` in the map store (owner
//!    `gc@HOST`; a rerun on the same host takes it back after a crash,
//!    another host's collector gets "locked by …"). Its fencing token is
//!    checked before every batch of deletes, and before each delete of a
//!    content or legacy object or of a removed header: a collector whose
//!    lock was broken stops (`Fenced`) instead of deleting on stale
//!    marks.
//! 2. Make the **gc generation** odd (started), durably; *forced* if the
//!    previous one was odd too (a crashed or fenced run).
//! 3. **List** both stores a page at a time (pages in any order, an
//!    opaque cursor from one to the next) into sorted files on disk (the
//!    candidates, through the external sorter), and collect the names of
//!    the map-store objects to read (headers, old maps, anything unknown:
//!    see above).
//! 4. **List the hash pins**.
//! 5. **Mark**: read every header; for each live one whose **identity**
//!    (volume id, epoch, snapshot or not: see `Identity`) was not marked
//!    yet, load its chunks (each distinct chunk once) and push every
//!    chunk and object name into an external sorter. Then list the
//!    headers again and read *every* header again (not only new names: a
//!    name may now hold a header of another identity), until a whole
//!    round finds no identity not yet marked (a fixpoint; at most
//!    [`MARK_ROUNDS`] rounds, else `Unsettled`). Headers and chunks are
//!    read by the mapper's [`load`], as the mapper reads them.
//! 6. **Sweep**: merge the sorted map candidates with the sorted
//!    references and read every chunk-named object that would be deleted
//!    (it must be a chunk); then merge each sorted candidate file with
//!    the references and delete what the table above allows.
//!    Then delete the removed headers nothing needs (above).
//! 7. Make the generation even (finished) and release the lock.
//!
//! `dry_run` does 3 to 6 without the lock, the generation or deletes.
//!
//! # Why nothing referenced is deleted while the system runs
//!
//! The listing is not a snapshot and the marks are read after it, while
//! volumes change. The argument, case by case, for an object `X` listed
//! at step 3 and not marked at step 5:
//!
//! - **Referenced through a header that existed during the whole mark**:
//!   marked, since every header is read after the listing. Within one
//!   identity a header changes only by its lock holder's commits in that
//!   epoch, each of which writes chunks derived from the chunks it
//!   replaces plus objects it just created; so what a header of an
//!   identity we marked refers to at any time after we read it is what
//!   we marked, plus objects created after it, which are newer than our
//!   listing only if they are not candidates at all, or were created by
//!   an operation in flight (next cases).
//! - **A header of a new identity** (create, snapshot, clone, rollback,
//!   and a name reused: `rename gold gold-old; snapshot vm gold`) is
//!   read by the round after it appears: the settled round read every
//!   listed header and found only marked identities. An operation that
//!   makes a new identity after the settled round read its name derives
//!   it from headers that are covered: a snapshot from its volume
//!   (marked, with the current-epoch and unwritten-serial rules below),
//!   a clone from a live snapshot (held under the snapshot's lock, which
//!   a remove needs too), a rename from the same identity.
//! - **Rollback** `V` to `S` makes V name S's chunks and older-epoch
//!   objects, and bumps V's epoch (a new identity). If S was read live at
//!   any round, its references are marked. If every read of S found it
//!   removed, the rollback (which needs S live) came before the first
//!   of them, so before the end of round 1, and every later round reads
//!   V at its new identity: not settled until V is marked again. A
//!   rollback after the settled round's read of V happens while S is
//!   live and was read live in that round.
//! - **A copy-up, full overwrite or discard in flight** writes
//!   `{V}_{E}_{i}` with V's *current* epoch E, then commits. Only the
//!   holder of V's lock writes these, and only while V's epoch is E:
//!   the rule keeps every `{V}_{e}_*` with `e` ≥ the epoch we read
//!   (read after the listing, so at least the epoch at listing time).
//!   An object of an older epoch is never created again (a snapshot
//!   bumps the epoch and refuses to run with writes pending), and a
//!   REMOVED volume can't be opened, so neither is referenced anew.
//!   Orphans of a crashed copy-up in the current epoch are kept until the
//!   next snapshot or removal of V (the next copy-up rewrites them
//!   anyway).
//! - **Chunks in flight**: a volume writes chunk serials from its
//!   header's `next_serial` up, then commits the header that moves
//!   `next_serial` past them: serials below the committed `next_serial`
//!   are never written again, those at or above it are kept. Hash (and
//!   upgrade) write chunks under a fresh id no header has yet; they are
//!   covered by the pin below (and upgrade by refusing old maps).
//! - **Dedup (hash)**: `store_content` of existing content writes
//!   nothing, so a hash may start referring to a content object that is
//!   a candidate and unreferenced. The hasher, holding the snapshot's
//!   lock, first writes a **pin** `archip_gcpin_{owner}` (durably), then
//!   reads the generation; the collector writes the odd generation
//!   (step 2) before it lists the pins (step 4). Both are "write, then
//!   read" on one linearizable store, so at least one sees the other:
//!   - the collector sees the pin: the run is **conservative**: no
//!     content or legacy object and no chunk of an unknown owner is
//!     deleted this run (they are reported as kept);
//!   - or the hasher sees the odd generation: it waits until that run
//!     has *finished* (the generation is even, or a later run started
//!     normally over a finished one: [`finished_since`](archipelago_mapfmt::gcmeta::finished_since); a run
//!     started over an unfinished generation after a crash or
//!     `--break-lock` is marked *forced* and does not count, since the
//!     fenced run may still be deleting) before reading a single object,
//!     and fails `Busy` after a bound (a collector that crashed leaves
//!     the generation odd: the next `vlmc gc` finishes it);
//!   - or the pin is gone by the time the collector lists pins: the hash
//!     committed before step 4, so before any header is read at step 5.
//!
//!   Clones and snapshots of a hashed snapshot copy refs from a live
//!   header (first case).
//! - **Rebase (a hash moving the other maps)**: after its snapshot's
//!   commit, a hash moves every other map naming an object it replaced
//!   onto the content object (the mapper's `rebase` module): commits that
//!   make a header refer to content objects it did not create, which the
//!   first case does not cover. Each such commit is made under the map's
//!   lock (chunks then header, as any change; a snapshot's chunks under a
//!   fresh id, a volume's under its own serials: the chunk case holds),
//!   and under a pin:
//!   - by the hash itself, while its own pin exists and its snapshot is
//!     locked, to content objects it stored after writing the pin (or
//!     found existing after it, for records of an earlier run): exactly
//!     the hash's case above;
//!   - by the lock holder of an open map (another mapper, applying the
//!     hash's rebase record), which writes a pin of its own (content: the
//!     volume it holds locked, so the pin is not taken for a crashed
//!     hash's while it holds it), reads the generation and waits while it
//!     is odd, as a hash does, then checks that each content object it
//!     will refer to **exists** and moves only those entries. A collector
//!     that runs while the pin exists is conservative or was waited out;
//!     one that deleted the object before is seen by the check; the pin
//!     is deleted only after the commit (so the third case of the hash
//!     argument applies too).
//!
//!   The objects a move stops referring to become garbage by the usual
//!   rules (an owned object of an older epoch, or content). Rebase
//!   records and their list are never deleted by a collection and never
//!   read by one. A pin whose snapshot is not locked is left
//!   over by a crashed hash: the run stays conservative and deletes the
//!   pin, so the next run is not.
//! - **Removal** only makes a header REMOVED (the name can be used again:
//!   the removed header then moves to its tombstone, same identity); a snapshot with clones is
//!   not removable, and clones refer to chunks directly, so a removed
//!   header's objects are garbage unless a live header names them. A
//!   clone holds its source snapshot's lock from reading it to its
//!   commit, and a remove takes the lock of what it removes, so on any
//!   host a remove never marks a snapshot removed under a clone
//!   committing references to it.
//! - **A fenced mapper host** (its volume lock broken and taken by
//!   another host) checks its lock before every copy-up, delete and
//!   header commit, so it commits nothing after the break; a copy-up
//!   already past its check may still land an object after a collector
//!   deleted its name, but no header will ever name it: it is an orphan
//!   the next run frees, never a resurrection of referenced data. A hash
//!   commits under its snapshot's lock with the same check.
//! - **Two collectors** never delete at once: the lock; a fenced one
//!   notices before its next batch (at most [`DELETE_BATCH`] deletes of
//!   objects that were garbage on its marks), and before *each* delete
//!   of a content or legacy object. A stale collector's marks stay valid
//!   anyway, by the cases above, for everything except pins written
//!   after its step 4, which only matter for content and legacy objects;
//!   the generation closes that: a hasher that sees an odd generation
//!   waits for that run to finish, and a run forced over it does not
//!   count. What is left is one store call: a fenced collector past its
//!   check of the lock, whose delete lands after a hash that waited for
//!   the newer run chose that content object (the store has no
//!   conditional delete; on RADOS the break blocklists the old client).
//!
//! # Crashes and interruption
//!
//! A run deletes only what the rules above allow, one object at a time,
//! so stopping it anywhere (a crash, `kill -9`, [`GcOptions::stop`])
//! leaves nothing referenced deleted: the rest is still garbage and the
//! next run, which starts from a fresh listing, finds and frees it.
//! Deletes that find the object gone count nothing. A run that stops on
//! an error or an interruption ends its generation (no delete of it can
//! follow); after a crash the generation stays odd and hashes wait
//! (bounded) until the next run. A crashed collector's lock is taken back
//! by the next run on the same host; from another host, [`break_lock`]
//! (`vlmc gc --break-lock`) first.
//!
//! # Memory
//!
//! Bounded independently of the number of objects: one listing page
//! ([`GcOptions::page`] names), the sorter's budget
//! ([`GcOptions::sort_budget`]) plus one read buffer of 64 KiB per
//! spilled run when merging, and per map: its name, a few integers per
//! volume id and 16 bytes per distinct chunk (one chunk maps 4096
//! objects: 100 million objects are ~25 000 chunks). Listings and the
//! references live in a temporary directory ([`GcOptions::spill_dir`]),
//! about 60 bytes per object.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod extsort;
pub mod names;
mod sweep;
mod usage;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use archipelago_mapfmt::gcmeta::{
    collecting, decode_generation, encode_generation, encode_state, GcState, GC_PIN_PREFIX,
    GC_STATE_OBJECT, TOMBSTONE_PREFIX,
};
use archipelago_mapfmt::Detected;
use archipelago_mapfmt::{Chunk, ChunkRef, Header};
use archipelago_mapper::load::{self, LoadError, MapObject};
use archipelago_store::{ObjectStore, StoreError};

use extsort::{ExternalSorter, NameFile};
use names::Kind;
use sweep::Sweeper;
pub use usage::{usage, VolumeUsage};

/// Deletes between two checks of the collectors' lock.
pub const DELETE_BATCH: u64 = 256;

/// Why a collection (or an accounting) stopped.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// A store call failed (the error names the object).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Another collector holds the lock.
    #[error("another garbage collection is running (gc lock held by {owner})")]
    Busy {
        /// Its owner.
        owner: String,
    },
    /// A map the collector cannot read: nothing was deleted.
    #[error(
        "volume {name} is in an old map format: run vlmc upgrade {name} first (nothing deleted)"
    )]
    OldFormat {
        /// The volume.
        name: String,
    },
    /// A map-store object the collector does not understand (not a map
    /// of any format it knows, or a chunk-named object that is not a
    /// chunk): nothing was deleted.
    #[error("map store object {name}: {why}; nothing deleted (move it out of the pool, or vlmc upgrade it if it is a map)")]
    Unknown {
        /// The object.
        name: String,
        /// What it is not.
        why: String,
    },
    /// A live map names a content or legacy data object that does not
    /// exist (its reads fail).
    #[error("volume {volume} names data object {object}, which is missing")]
    MissingObject {
        /// The map.
        volume: String,
        /// The object.
        object: String,
    },
    /// A live map that is unreadable or refers to a missing chunk.
    #[error("{name}: {why} (nothing deleted)")]
    BadMap {
        /// The volume (or chunk).
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The collectors' lock was broken under us.
    #[error("the gc lock was broken (fenced) after {freed} objects were freed: stopped")]
    Fenced {
        /// Objects freed before.
        freed: u64,
    },
    /// [`GcOptions::stop`] was raised.
    #[error("interrupted after {freed} objects were freed; run it again to finish")]
    Interrupted {
        /// Objects freed before.
        freed: u64,
    },
    /// The spill directory failed.
    #[error("gc spill files: {0}")]
    Spill(#[from] std::io::Error),
    /// The listing of headers kept changing.
    #[error("the volume list kept changing during the mark (nothing deleted): try again")]
    Unsettled,
}

/// Breaks the collectors' lock whoever holds it (for a collector known
/// to be dead on another host: a live one notices before its next batch
/// of deletes and stops). Returns the previous owner.
pub fn break_lock(maps: &dyn ObjectStore) -> Result<Option<String>, GcError> {
    Ok(maps.break_lock(GC_STATE_OBJECT)?)
}

/// How to collect.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Report what would be freed, change nothing.
    pub dry_run: bool,
    /// Who collects (the lock owner is `gc@HOST`).
    pub host: String,
    /// Where the listings and references are spilled (a temporary
    /// directory is made inside; default: the system's).
    pub spill_dir: Option<PathBuf>,
    /// Bytes of names the sorter holds before spilling a run.
    pub sort_budget: usize,
    /// Names per listing page.
    pub page: usize,
    /// Raised to stop at the next object (the run reports `Interrupted`).
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            host: "localhost".into(),
            spill_dir: None,
            sort_budget: 64 << 20,
            page: 4096,
            stop: None,
        }
    }
}

/// The phases [`collect`] reports progress in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Listing the stores (total unknown: 0).
    List,
    /// Reading the maps (total: headers).
    Mark,
    /// Deciding and deleting (total: listed objects).
    Sweep,
}

/// What a collection found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// A dry run (nothing deleted).
    pub dry_run: bool,
    /// The generation this run collected at (0 for a dry run).
    pub generation: u64,
    /// Objects listed in the data store.
    pub data_objects: u64,
    /// Objects listed in the map store.
    pub map_objects: u64,
    /// Live maps read.
    pub live_maps: u64,
    /// Removed maps seen.
    pub removed_maps: u64,
    /// Distinct names the live maps refer to.
    pub referenced: u64,
    /// Objects freed (or, in a dry run, that would be).
    pub freed_objects: u64,
    /// Their bytes.
    pub freed_bytes: u64,
    /// Of which map chunks.
    pub freed_chunks: u64,
    /// Of which removed headers no live header needed.
    pub freed_headers: u64,
    /// Unreferenced objects kept because an operation in flight may
    /// still refer to them (current epoch, unwritten serial, a hash pin).
    pub kept_in_flight: u64,
    /// Hash pins seen (the run is conservative if any).
    pub pins: u64,
}

/// Per volume id, from its writable (non-snapshot) header.
#[derive(Debug, Clone, Copy)]
struct Writer {
    epoch: u64,
    next_serial: u64,
    removed: bool,
}

fn stopped(o: &GcOptions) -> bool {
    o.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed))
}

/// The collector's error for a failed load (through the mapper's
/// [`load`]) of the map `volume` or of an object it names: a map that is
/// old or of no known format is [`GcError::OldFormat`], a broken one
/// (undecodable header, missing or corrupt chunk) [`GcError::BadMap`];
/// either stops the run before anything is deleted.
pub(crate) fn load_error(volume: &str, e: LoadError) -> GcError {
    match e {
        LoadError::Store { error, .. } => GcError::Store(error),
        LoadError::Unrecognised { name, error } => GcError::Unknown {
            name,
            why: error.to_string(),
        },
        LoadError::OldFormat { .. } => GcError::OldFormat {
            name: volume.into(),
        },
        LoadError::Corrupt { error, .. } => GcError::BadMap {
            name: volume.into(),
            why: error.to_string(),
        },
        e @ (LoadError::MissingChunk { .. } | LoadError::CorruptChunk { .. }) => GcError::BadMap {
            name: volume.into(),
            why: e.to_string(),
        },
    }
}

/// The whole object `name` ([`load::read_object`]: read again while it
/// changes size under the read, a bounded number of times).
fn read_all(store: &dyn ObjectStore, name: &str) -> Result<Option<Vec<u8>>, GcError> {
    load::read_object(store, name).map_err(|e| load_error(name, e))
}

/// The current gc generation (0 if never collected).
pub fn generation(maps: &dyn ObjectStore) -> Result<u64, GcError> {
    match read_all(maps, GC_STATE_OBJECT)? {
        None => Ok(0),
        Some(b) => decode_generation(&b).ok_or_else(|| GcError::BadMap {
            name: GC_STATE_OBJECT.into(),
            why: "not a gc generation object".into(),
        }),
    }
}

/// Lists `store` page by page, calling `f` on each name (in the store's
/// order, which need not be sorted).
fn list_each(
    store: &dyn ObjectStore,
    prefix: &str,
    page: usize,
    mut f: impl FnMut(&str) -> Result<(), GcError>,
) -> Result<(), GcError> {
    let mut cursor: Option<String> = None;
    loop {
        let p = store.list_page(prefix, cursor.as_deref(), page.max(1))?;
        for n in &p.names {
            f(n)?;
        }
        match p.next {
            Some(c) => cursor = Some(c),
            None => return Ok(()),
        }
    }
}

/// Writes the sorted, deduplicated names of `sorter` to a list at `path`.
fn sorted_file(sorter: ExternalSorter, path: PathBuf) -> Result<(PathBuf, u64), GcError> {
    let mut f = NameFile::create(path)?;
    for n in sorter.finish()? {
        f.push(&n?)?;
    }
    let count = f.len();
    Ok((f.close()?, count))
}

/// The format 3 header `name`, live or removed (`None`: renamed or never
/// there). Rename markers are not looked at: both names of an
/// interrupted rename are marked.
pub(crate) fn read_header(maps: &dyn ObjectStore, name: &str) -> Result<Option<Header>, GcError> {
    load::read_header(maps, name).map_err(|e| load_error(name, e))
}

/// Chunk `r` of the map `volume`.
pub(crate) fn read_chunk(
    maps: &dyn ObjectStore,
    volume: &str,
    r: ChunkRef,
) -> Result<Chunk, GcError> {
    load::read_chunk(maps, r).map_err(|e| load_error(volume, e))
}

/// What a header is, whatever its name: a volume id, an epoch and
/// whether it is a snapshot. Every header of one identity names the same
/// objects, up to the changes its lock holder makes in that epoch (new
/// objects of the epoch, new chunks from `next_serial` up, content
/// objects under a hash pin); anything else (a rollback, a snapshot, a
/// clone, a name reused) makes a header of a new identity.
type Identity = (u64, u64, bool);

fn identity(h: &Header) -> Identity {
    (h.volume_id, h.epoch, h.flags.readonly)
}

/// A removed header's (volume id, epoch), and whether it is a volume's
/// writable header (not a snapshot).
type RemovedHeader = ((u64, u64), bool);

/// The mark phase's state.
struct Marker<'a> {
    maps: &'a dyn ObjectStore,
    refs: ExternalSorter,
    seen: HashSet<Identity>,
    seen_chunks: HashSet<ChunkRef>,
    writers: HashMap<u64, Writer>,
    /// Pithos (v0) hashmaps seen.
    pithos: HashSet<String>,
    /// Lineage: every header's parent link, by (volume id, epoch).
    links: HashMap<(u64, u64), (u64, u64)>,
    /// Parent links and ids of the live headers.
    live_parents: Vec<(u64, u64)>,
    live_ids: HashSet<u64>,
    /// Removed headers by object name (a name or a tombstone): (volume
    /// id, epoch), and whether it is a volume's writable header.
    removed: HashMap<String, RemovedHeader>,
    report: &'a mut GcReport,
}

impl Marker<'_> {
    /// Reads the header `name` and marks what it names, unless a header
    /// of its identity was marked already. Returns whether it was new.
    fn mark(&mut self, name: &str) -> Result<bool, GcError> {
        // Read as what its bytes say; a 64-hex name may be a Pithos (v0)
        // hashmap, which has no header to say so.
        let v0_name = archipelago_protocol::names::is_content_name(name.as_bytes());
        let h = match load::read_map(self.maps, name, v0_name).map_err(|e| load_error(name, e))? {
            None => return Ok(false),
            Some(MapObject::V3(h)) => h,
            Some(MapObject::Old {
                format: Detected::V0,
                ..
            }) => {
                // Pithos's: every content object may be named by it, or
                // by Pithos anew.
                if self.pithos.insert(name.to_owned()) {
                    log::info!("gc: {name} is a Pithos hashmap: no content object is deleted");
                }
                return Ok(false);
            }
            Some(MapObject::Old { .. }) => return Err(GcError::OldFormat { name: name.into() }),
        };
        let key = (h.volume_id, h.epoch);
        if h.flags.removed {
            self.removed
                .insert(name.to_owned(), (key, !h.flags.readonly));
        }
        if !self.seen.insert(identity(&h)) {
            return Ok(false);
        }
        if let Some(p) = &h.parent {
            self.links.insert(key, (p.volume_id, p.epoch));
        }
        if !h.flags.removed {
            self.live_ids.insert(h.volume_id);
            if let Some(p) = &h.parent {
                self.live_parents.push((p.volume_id, p.epoch));
            }
        }
        if !h.flags.readonly {
            let w = Writer {
                epoch: h.epoch,
                next_serial: h.next_serial,
                removed: h.flags.removed,
            };
            // A rename leaves two headers with one id for a moment, and a
            // volume's id may be read at two epochs: the newer (live,
            // further on) one decides.
            let e = self.writers.entry(h.volume_id).or_insert(w);
            if !w.removed && (e.removed || w.epoch > e.epoch || w.next_serial > e.next_serial) {
                *e = w;
            }
        }
        if h.flags.removed {
            self.report.removed_maps += 1;
            return Ok(true);
        }
        self.report.live_maps += 1;
        for (slot, r) in h.chunks.iter().enumerate() {
            if r.is_zero() {
                continue;
            }
            self.refs.push(r.object_name().expect("nonzero"))?;
            if !self.seen_chunks.insert(*r) {
                continue;
            }
            let c = read_chunk(self.maps, name, *r)?;
            // A partial entry keeps its own object and its backing's.
            for o in load::chunk_entries(&c, slot).flat_map(|(i, e)| e.object_names(i)) {
                self.refs.push(o)?;
            }
        }
        Ok(true)
    }
}

/// Rounds of the mark (each lists and reads every header) before a run
/// gives up as [`GcError::Unsettled`].
pub const MARK_ROUNDS: usize = 16;

/// Collects garbage (see the crate docs). `progress` is called with the
/// phase, units done and the phase's total.
pub fn collect(
    maps: &dyn ObjectStore,
    data: &dyn ObjectStore,
    opts: &GcOptions,
    progress: &mut dyn FnMut(Phase, u64, u64),
) -> Result<GcReport, GcError> {
    let owner = format!("gc@{}", opts.host);
    let token = if opts.dry_run {
        None
    } else {
        match maps.try_lock(GC_STATE_OBJECT, &owner) {
            Ok(t) => Some(t),
            Err(StoreError::Locked { owner, .. }) => return Err(GcError::Busy { owner }),
            Err(e) => return Err(e.into()),
        }
    };
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..GcReport::default()
    };
    if token.is_some() {
        let g = generation(maps)?;
        // Odd: running. An odd one left by a crashed run moves on too, so
        // that hashers waiting on it see a change.
        // A forced start (over an odd one) says so: hashes waiting on
        // the older run keep waiting until this one finishes.
        let forced = collecting(g);
        let started = if forced { g + 2 } else { g + 1 };
        let state = GcState {
            generation: started,
            forced,
        };
        maps.write_full(GC_STATE_OBJECT, &encode_state(state), true)?;
        report.generation = started;
        log::info!("gc: generation {started} started by {owner}");
    }
    let result = run(
        maps,
        data,
        opts,
        token.map(|t| (owner.as_str(), t)),
        &mut report,
        progress,
    );
    if let Some(t) = token {
        // Stopped, by success or error: no delete of this run can follow,
        // so the generation goes even (hashes need not wait), unless the
        // lock is no longer ours (fenced: the generation is the new
        // collector's). Only a crash leaves it odd, for the next run.
        if maps.lock_owner(GC_STATE_OBJECT)? == Some((owner.clone(), t)) {
            let end = maps.write_full(
                GC_STATE_OBJECT,
                &encode_generation(report.generation + 1),
                true,
            );
            let _ = maps.unlock(GC_STATE_OBJECT, &owner);
            end?;
        }
    }
    result.map(|()| report)
}

fn run(
    maps: &dyn ObjectStore,
    data: &dyn ObjectStore,
    opts: &GcOptions,
    lock: Option<(&str, u64)>,
    report: &mut GcReport,
    progress: &mut dyn FnMut(Phase, u64, u64),
) -> Result<(), GcError> {
    let tmp = match &opts.spill_dir {
        Some(d) => tempfile::Builder::new().prefix("gc-").tempdir_in(d)?,
        None => tempfile::Builder::new()
            .prefix("archipelago-gc-")
            .tempdir()?,
    };
    // 3. List, into sorted files (pages may come in any order).
    let mut listed = 0u64;
    let runs = |name: &str| -> std::io::Result<PathBuf> {
        let d = tmp.path().join(name);
        std::fs::create_dir(&d)?;
        Ok(d)
    };
    let mut data_sorter = ExternalSorter::new(&runs("data-runs")?, opts.sort_budget);
    list_each(data, "", opts.page, |n| {
        listed += 1;
        if listed % 4096 == 0 {
            progress(Phase::List, listed, 0);
        }
        Ok(data_sorter.push(n.to_owned())?)
    })?;
    // Merged before the next sorter fills: one budget at a time.
    let (data_list, data_count) = sorted_file(data_sorter, tmp.path().join("data.list"))?;
    let mut map_sorter = ExternalSorter::new(&runs("map-runs")?, opts.sort_budget);
    let mut headers = Vec::new();
    list_each(maps, "", opts.page, |n| {
        listed += 1;
        if listed % 4096 == 0 {
            progress(Phase::List, listed, 0);
        }
        if names::read_in_map_store(n) {
            headers.push(n.to_owned());
        }
        Ok(map_sorter.push(n.to_owned())?)
    })?;
    let (map_list, map_count) = sorted_file(map_sorter, tmp.path().join("maps.list"))?;
    progress(Phase::List, listed, listed);
    report.data_objects = data_count;
    report.map_objects = map_count;
    // 4. Pins, after the odd generation is durable.
    let pins = maps.list(GC_PIN_PREFIX)?;
    report.pins = pins.len() as u64;
    let conservative = !pins.is_empty();
    // 5. Mark, to a fixpoint of the header listing.
    let refs_dir = tmp.path().join("refs");
    std::fs::create_dir(&refs_dir)?;
    let mut m = Marker {
        maps,
        refs: ExternalSorter::new(&refs_dir, opts.sort_budget),
        seen: HashSet::new(),
        seen_chunks: HashSet::new(),
        writers: HashMap::new(),
        pithos: HashSet::new(),
        links: HashMap::new(),
        live_parents: Vec::new(),
        live_ids: HashSet::new(),
        removed: HashMap::new(),
        report,
    };
    // Round 1 reads the headers of the first listing; each further round
    // lists again and reads every header again, by identity (not name: a
    // name may now hold another header), until a whole round finds no
    // identity not marked yet.
    let total = headers.len() as u64;
    for (i, h) in headers.iter().enumerate() {
        m.mark(h)?;
        progress(Phase::Mark, i as u64 + 1, total);
    }
    drop(headers);
    let mut settled = false;
    for _ in 1..MARK_ROUNDS {
        let mut names = Vec::new();
        list_each(maps, "", opts.page, |n| {
            if names::read_in_map_store(n) {
                names.push(n.to_owned());
            }
            Ok(())
        })?;
        let mut fresh = false;
        for h in &names {
            fresh |= m.mark(h)?;
        }
        if !fresh {
            settled = true;
            break;
        }
    }
    if !settled {
        return Err(GcError::Unsettled);
    }
    let Marker {
        refs,
        writers,
        pithos,
        links,
        live_parents,
        live_ids,
        removed,
        ..
    } = m;
    // Removed headers no live header needs: not on a live header's chain
    // of parent links, and no live header of their volume id (whose
    // objects their writer record lets the sweep free).
    let mut needed = HashSet::new();
    for mut at in live_parents {
        while needed.insert(at) {
            match links.get(&at) {
                Some(p) => at = *p,
                None => break,
            }
        }
    }
    let unneeded: Vec<(String, RemovedHeader)> = removed
        .into_iter()
        .filter(|(_, (key, _))| !needed.contains(key) && !live_ids.contains(&key.0))
        .collect();
    let conservative = conservative || !pithos.is_empty();
    let (refs_path, referenced) = sorted_file(refs, tmp.path().join("refs.sorted"))?;
    report.referenced = referenced;
    // 6. Sweep.
    let mut sweeper = Sweeper {
        opts,
        lock,
        maps,
        writers: &writers,
        conservative,
        verifying: false,
        since_check: 0,
        done: 0,
        total: report.data_objects + report.map_objects,
        report,
        progress,
    };
    // Chunk-named objects this run would delete are read first: one that
    // is not a chunk (an old map's data, say) stops the run before any
    // delete.
    sweeper.verifying = true;
    sweeper.sweep(maps, false, &map_list, &refs_path)?;
    sweeper.verifying = false;
    sweeper.sweep(data, true, &data_list, &refs_path)?;
    sweeper.sweep(maps, false, &map_list, &refs_path)?;
    // Last, once their objects are gone: removed headers nothing needs.
    for (name, (key, writable)) in unneeded {
        sweeper.delete_removed_header(data, &name, key, writable)?;
    }
    // Pins of hashes that are no longer running (their snapshot is not
    // locked) are leftovers of a crash: the next run need not be
    // conservative because of them.
    if lock.is_some() {
        for p in pins {
            if let Some(bytes) = read_all(maps, &p)? {
                let snap = String::from_utf8_lossy(&bytes).into_owned();
                let free = archipelago_protocol::names::check_store_name(snap.as_bytes()).is_ok()
                    && maps.lock_owner(&snap)?.is_none();
                if free {
                    log::warn!("gc: removing the stale hash pin {p} of {snap}");
                    let _ = maps.delete(&p);
                }
            }
        }
    }
    Ok(())
}
