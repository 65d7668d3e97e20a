//! Rebasing: moving every map that names a hashed snapshot's objects onto
//! the content objects that replace them, so that the old objects become
//! garbage (dedup that saves space).
//!
//! # Design
//!
//! [`hash`](Mapper::hash) replaces each object `X` of a snapshot by the
//! content object `C(X)` of the same bytes (or by a zero entry if `X` is
//! all zeros). The same `X` is named by other maps: the snapshot's origin
//! (its later epochs share the snapshot's objects until they overwrite
//! them), clones made from the snapshot, and snapshots of those. Until
//! each of them names `C(X)` instead, `X` stays referenced and the hash
//! stores the image a second time. So, after the snapshot's own commit,
//! the hash **moves** those maps:
//!
//! 1. **The record.** Before the snapshot's hashed header commits, the
//!    hash writes a *rebase record* `archip_rebase_{owner}`
//!    ([`RebaseRecord`]: the snapshot's id and epoch, and every replaced
//!    object with its index and replacement), durably, then adds its name
//!    to the rebase list. It outlives a
//!    crash of the hash: `vlmc hash SNAP` again (the snapshot is already
//!    hashed; nothing is read) picks up every record of that snapshot and
//!    resumes.
//! 2. **Moving a map** is one map change like any other: under the map's
//!    lock, its chunks then its header (the crash rules of every commit:
//!    a crash before the header leaves the old map intact and an orphan
//!    chunk). Each entry moves only if it **still names the replaced
//!    object** (compare-and-swap per entry, against the map as it is
//!    under the lock): an object the map's owner overwrote (copied up,
//!    written fully, discarded) meanwhile is its own and stays. A volume
//!    writes the new chunks under its own id and serials (as a write
//!    does); a snapshot, whose id and serials belong to its volume, under
//!    a fresh random id (as the hash does). `X` and `C(X)` hold the same
//!    bytes (objects a snapshot names are never written again: they
//!    belong to an older epoch, or to another volume), so a map reads the
//!    same before and after, whenever the move lands.
//! 3. **Who moves what.** The hash walks every live header (the snapshot
//!    excepted) and, for each that names a replaced object:
//!    - open for writing **by this mapper** (the usual case: one mapperd
//!      per host serves the hash and the volumes vlmcd opened): moved at
//!      once, under the volume's mutex, between two writes: the cached
//!      header is the map, the commit checks the lock (fencing) as every
//!      commit does. I/O is not paused or drained: a write waits for the
//!      mutex at most one map commit. A write in flight to a moved index
//!      is unaffected (a copy-up runs with the mutex released, and if
//!      the entry moved meanwhile it copies again from `C(X)`, since a
//!      collection may delete `X` once no map names it; a pending write
//!      commits the volume's own entry over whatever the entry is);
//!    - **not locked**: its lock is taken for the move, as for any
//!      operation on a closed map;
//!    - **locked elsewhere** (a mapperd of another host or another
//!      mapperd process): its **holder** moves it. Every mapper checks
//!      for rebase records periodically ([`Mapper::apply_rebases`];
//!      mapperd every [`REBASE_CHECK`]): one read of the **rebase
//!      list** `archip_rebaselist`, which names the records in force
//!      (a prefix listing would walk the whole store on the files
//!      backend), nothing more when it is missing or empty. For each
//!      volume it holds that names a replaced object, the holder pins
//!      itself against collections (below), checks that each content
//!      object it is about to name exists, and commits the move as a map
//!      change between writes, like the hash does for its own volumes.
//!
//!    The hash repeats the walk (maps still locked elsewhere, snapshots
//!    taken meanwhile of maps not moved yet) until a walk finds nothing
//!    to move, or for at most its wait ([`Mapper::with_rebase_wait`], or
//!    the request's); the waits between walks are bounded polls of the
//!    map store. Its report ([`HashReport::maps_left`]) lists every map
//!    still naming a replaced object; the record is deleted only when
//!    none is left (else the holders still apply it, and the next `vlmc
//!    hash SNAP` looks again and deletes it). The list is changed by a
//!    read and a replacement: two hashes changing it at once may lose
//!    one's entry; a hash still waiting puts its records back at its next
//!    poll, one that stopped has reported its maps left anyway (never a
//!    loss of data: a map not moved keeps its old objects referenced).
//! 4. **Garbage collection.** Moves make maps name content objects they
//!    did not create, which the collector's argument must cover
//!    (`archipelago-gc` crate docs, "Rebase"): the hash moves maps while
//!    its pin exists and its snapshot is locked (the content objects
//!    were stored after the pin); a holder writes a pin of its own (named
//!    by the volume it holds locked), waits out a running collection as
//!    a hash does, and moves an entry only if its content object exists
//!    after that. Records are never deleted by the collector.
//!
//! Removed maps are not moved (they keep nothing alive). Old-format maps
//! (v1, v2) are not moved either: the collector refuses to run while one
//! exists.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archipelago_mapfmt::gcmeta::{
    decode_rebase_list, encode_rebase_list, RebaseRecord, REBASE_LIST,
};
use archipelago_mapfmt::{Chunk, ChunkRef, Entry, Header, ENTRIES_PER_CHUNK};
use archipelago_protocol::names::content_name;
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::StoreError;

use crate::commit::Updates;
use crate::load::Vol;
use crate::locks::{Held, VolState};
use crate::{map_err, random_id, store_err, Mapper};

/// How often `mapperd` looks for rebase records to apply to the volumes
/// it holds ([`Mapper::apply_rebases`]).
pub const REBASE_CHECK: Duration = Duration::from_secs(1);

/// How long [`Mapper::hash`] waits by default for the holders of open
/// maps to move them (see [`Mapper::with_rebase_wait`]).
pub const DEFAULT_REBASE_WAIT: Duration = Duration::from_secs(10);

/// What entry `e` of object `index` becomes when the objects `olds`
/// (old name, replacing entry) move: the replacing entry if `e` names an
/// old object; a partial entry whose backing names one keeps its own
/// granules over the replacing entry; `None` if nothing moves.
fn moved_entry(e: &Entry, index: u64, olds: &[(String, Entry)]) -> Option<Entry> {
    let find = |x: &Entry| {
        let name = x.object_name(index)?;
        olds.iter()
            .find(|(o, _)| *o == name)
            .map(|(_, n)| n.clone())
    };
    if let Some(new) = find(e) {
        return Some(new);
    }
    match e {
        Entry::Partial {
            owner,
            epoch,
            granules,
            backing,
        } => find(backing).map(|new| Entry::Partial {
            owner: *owner,
            epoch: *epoch,
            granules: *granules,
            backing: Box::new(new),
        }),
        _ => None,
    }
}

/// Between two walks of the headers while maps are left to holders.
const REBASE_POLL: Duration = Duration::from_millis(100);

/// The replaced objects of one or more rebase records: by index, each
/// old object name with the entry that replaces it.
#[derive(Debug, Default)]
pub(crate) struct Moves {
    by_index: BTreeMap<u64, Vec<(String, Entry)>>,
}

impl Moves {
    pub(crate) fn from_records<'a>(records: impl IntoIterator<Item = &'a RebaseRecord>) -> Moves {
        let mut m = Moves::default();
        for r in records {
            for mv in &r.moves {
                let new = match mv.digest {
                    Some(d) => Entry::content(d),
                    None => Entry::Zero,
                };
                let at = m.by_index.entry(mv.index).or_default();
                if !at.iter().any(|(o, _)| *o == mv.old) {
                    at.push((mv.old.clone(), new));
                }
            }
        }
        m
    }

    /// Adds the moves of `other`.
    pub(crate) fn extend(&mut self, other: Moves) {
        for (i, v) in other.by_index {
            let at = self.by_index.entry(i).or_default();
            for (old, new) in v {
                if !at.iter().any(|(o, _)| *o == old) {
                    at.push((old, new));
                }
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    /// The content objects the moves lead to.
    fn targets(&self) -> BTreeSet<[u8; 32]> {
        self.by_index
            .values()
            .flatten()
            .filter_map(|(_, e)| match e {
                Entry::Content(d) => Some(*d),
                _ => None,
            })
            .collect()
    }

    /// These moves without those leading to a content object in `gone`.
    fn without(&self, gone: &HashSet<[u8; 32]>) -> Moves {
        let mut m = Moves::default();
        for (i, v) in &self.by_index {
            let keep: Vec<_> = v
                .iter()
                .filter(|(_, e)| !matches!(e, Entry::Content(d) if gone.contains(d)))
                .cloned()
                .collect();
            if !keep.is_empty() {
                m.by_index.insert(*i, keep);
            }
        }
        m
    }
}

/// What [`Mapper::rebase_one`] did.
enum Moved {
    /// The map was moved.
    Yes,
    /// Nothing of it names a replaced object (any more), or it is gone.
    Nothing,
    /// Locked elsewhere (its holder moves it), or busy here: look again.
    Later,
}

impl Mapper {
    /// This mapper with [`hash`](Self::hash) waiting at most `wait` (by
    /// default [`DEFAULT_REBASE_WAIT`]) for the holders of open maps to
    /// move them onto the content objects.
    pub fn with_rebase_wait(mut self, wait: Duration) -> Self {
        self.rebase_wait = wait;
        self
    }

    /// The entries of `h` that name a replaced object, with their
    /// replacements, by chunk slot (the chunks as `h` refers to them).
    pub(crate) fn rebase_updates(&self, h: &Header, moves: &Moves) -> Result<Updates, Error> {
        let vol = Vol {
            version: 3,
            header: h.clone(),
            legacy_chunks: None,
            overlay: None,
        };
        let per = ENTRIES_PER_CHUNK as u64;
        let mut out: Updates = BTreeMap::new();
        for (slot, r) in h.chunks.iter().enumerate() {
            if r.is_zero() {
                continue;
            }
            let first = slot as u64 * per;
            let mut chunk: Option<Arc<Chunk>> = None;
            for (&index, olds) in moves.by_index.range(first..first + per) {
                let c = match &chunk {
                    Some(c) => c.clone(),
                    None => {
                        let c = self.chunk(&vol, *r)?;
                        chunk = Some(c.clone());
                        c
                    }
                };
                let at = (index - first) as usize;
                let Some(e) = c.get(at) else { continue };
                let Some(moved) = moved_entry(e, index, olds) else {
                    continue;
                };
                out.entry(slot)
                    .or_insert_with(|| (c.clone(), Vec::new()))
                    .1
                    .push((index, moved));
            }
        }
        Ok(out)
    }

    /// Commits `updates` to `h` (held by `held`): a volume's chunks under
    /// its own id and serials, a snapshot's under a fresh random id.
    fn commit_rebase(
        &self,
        name: &str,
        st: &mut VolState,
        held: &Held,
        h: Header,
        updates: Updates,
    ) -> Result<(), Error> {
        let mut chunks = Vec::new();
        let mut nh = h.clone();
        if h.flags.readonly {
            let owner = loop {
                let id = random_id();
                if id != h.volume_id && !h.chunks.iter().any(|r| r.owner == id) {
                    break id;
                }
            };
            for (serial, (slot, (chunk, ups))) in updates.into_iter().enumerate() {
                let mut c = chunk.as_ref().clone();
                for (index, e) in ups {
                    let (_, at) = h.chunk_for(index).map_err(|e| map_err(name, e))?;
                    c.set(at, e).map_err(|e| map_err(name, e))?;
                }
                let id = ChunkRef {
                    owner,
                    serial: serial as u64 + 1,
                };
                if c.entries().is_empty() {
                    nh.chunks[slot] = ChunkRef::ZERO;
                } else {
                    nh.chunks[slot] = id;
                    chunks.push(c.with_id(id));
                }
            }
            nh.commit_seq += 1;
            nh.validate().map_err(|e| map_err(name, e))?;
        } else {
            for (_, (chunk, ups)) in updates {
                let (c, next) = archipelago_mapfmt::set_entries(&nh, &chunk, ups)
                    .map_err(|e| map_err(name, e))?;
                chunks.push(c);
                nh = next;
            }
        }
        self.commit(name, Some(st), Some(held), chunks, &nh)
    }

    /// Moves the map `name` (see the module docs): at once if this
    /// mapper holds it open, under its lock taken for the move if nobody
    /// holds it; `Later` if another holder has it (or its state is busy
    /// and waiting for it could deadlock with `holding`'s).
    fn rebase_one(&self, name: &str, holding: &str, moves: &Moves) -> Result<Moved, Error> {
        let s = self.state(name);
        // Operations on two volumes lock their states in name order: one
        // ordered before the state we hold is only tried.
        let mut st = if name > holding {
            Self::lock_state(&s)
        } else {
            match s.try_lock() {
                Ok(st) => st,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(Moved::Later),
            }
        };
        if st.opens > 0 {
            let h = st.header.clone().expect("a held volume is cached");
            let ups = self.rebase_updates(&h, moves)?;
            if ups.is_empty() {
                // Journaled writes may have replaced what the stored map
                // still names: a checkpoint stores the map as it is.
                if st.journaled() {
                    self.checkpoint(name, &mut st)?;
                    return Ok(Moved::Yes);
                }
                return Ok(Moved::Nothing);
            }
            let held = Held {
                name: name.to_owned(),
                token: st.token,
                took: false,
            };
            self.commit_rebase(name, &mut st, &held, h, ups)?;
            return Ok(Moved::Yes);
        }
        let held = match self.acquire(name, &st) {
            Ok(held) => held,
            Err(e) if e.code == ErrorCode::Locked => return Ok(Moved::Later),
            Err(e) => return Err(e),
        };
        let r = (|| {
            self.settle_if_closed(name, &mut st, &held)?;
            let h = match self.load_v3(name) {
                Ok(h) => h,
                // Renamed or removed meanwhile: a later walk sees it again
                // under its new name, if any.
                Err(e) if e.code == ErrorCode::NotFound => return Ok(Moved::Nothing),
                Err(e) => return Err(e),
            };
            if h.flags.removed {
                return Ok(Moved::Nothing);
            }
            let ups = self.rebase_updates(&h, moves)?;
            if ups.is_empty() {
                return Ok(Moved::Nothing);
            }
            self.commit_rebase(name, &mut st, &held, h, ups)?;
            Ok(Moved::Yes)
        })();
        self.release(held);
        r
    }

    /// Moves every live map but `snap` that names a replaced object, until
    /// a walk of every header finds nothing left to move, or `wait`
    /// passed. While only maps held elsewhere are left, the rounds look
    /// at those alone (a bounded poll of their headers, not a listing of
    /// the store); a full walk follows whenever they are done, something
    /// moved, or time is up, so that maps created meanwhile (a snapshot
    /// of a map not moved yet) are seen. Returns the names of the maps
    /// moved (by this walk or by their holders) and of those still naming
    /// replaced objects.
    pub(crate) fn rebase_all(
        &self,
        snap: &str,
        records: &[String],
        moves: &Moves,
        wait: Duration,
    ) -> Result<(BTreeSet<String>, Vec<String>), Error> {
        let deadline = Instant::now() + wait;
        let mut named = BTreeSet::new();
        let mut left: Vec<String> = Vec::new();
        let mut full = true;
        loop {
            let headers = if full {
                self.lineage_headers()?
            } else {
                let mut hs = Vec::new();
                for n in &left {
                    // As stored, like the full walk: a holder's move is a
                    // header commit.
                    match self.stored_header(n) {
                        Ok(h) => hs.push((n.clone(), h)),
                        // Renamed or removed: the next full walk sees it.
                        Err(e) if e.code == ErrorCode::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                hs
            };
            let mut still = Vec::new();
            let mut changed = false;
            for (name, h) in headers {
                if name == snap || h.flags.removed {
                    continue;
                }
                if self.rebase_updates(&h, moves)?.is_empty() {
                    continue;
                }
                named.insert(name.clone());
                match self.rebase_one(&name, snap, moves) {
                    Ok(Moved::Yes) => changed = true,
                    Ok(Moved::Nothing) => {}
                    Ok(Moved::Later) => still.push(name),
                    Err(e) if e.code == ErrorCode::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            left = still;
            let expired = Instant::now() >= deadline;
            if full && !changed && (left.is_empty() || expired) {
                if !left.is_empty() {
                    log::warn!(
                        "{snap}: after {wait:?}, maps still name objects the hash replaced: {}",
                        left.join(", ")
                    );
                }
                for l in &left {
                    named.remove(l);
                }
                return Ok((named, left));
            }
            full = left.is_empty() || changed || expired;
            if !full {
                // The holders find the records through the list: put
                // them back if a concurrent change of the list lost one.
                let list = self.rebase_list()?;
                if records.iter().any(|r| !list.contains(r)) {
                    self.edit_rebase_list(records, &[])?;
                }
                // A bounded poll of the map store for the holders' commits.
                let rest = deadline.saturating_duration_since(Instant::now());
                std::thread::sleep(REBASE_POLL.min(rest));
            }
        }
    }

    /// The rebase records in force (named by the rebase list), with their
    /// names. One read when there are none.
    pub(crate) fn rebase_records(&self) -> Result<Vec<(String, RebaseRecord)>, Error> {
        let mut out = Vec::new();
        for n in self.rebase_list()? {
            let Some(bytes) = self.read_whole(&n)? else {
                continue; // deleted since the list was read
            };
            match RebaseRecord::decode(&bytes) {
                Some(r) => out.push((n, r)),
                None => log::warn!("{n}: not a rebase record; ignored"),
            }
        }
        Ok(out)
    }

    /// The names on the rebase list.
    fn rebase_list(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .read_whole(REBASE_LIST)?
            .map(|b| decode_rebase_list(&b))
            .unwrap_or_default())
    }

    /// Puts `add` on the rebase list and takes `remove` off it (a read,
    /// then a replacement: two hashes changing it at once may lose one's
    /// change, which that hash puts back on its next poll
    /// ([`Mapper::rebase_all`]); one that had stopped waiting reports its
    /// maps left, and hashing again puts it back).
    pub(crate) fn edit_rebase_list(&self, add: &[String], remove: &[String]) -> Result<(), Error> {
        let mut list = self.rebase_list()?;
        list.retain(|n| !remove.contains(n));
        for a in add {
            if !list.contains(a) {
                list.push(a.clone());
            }
        }
        let r = if list.is_empty() {
            match self.maps.delete(REBASE_LIST) {
                Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        } else {
            self.maps
                .write_full(REBASE_LIST, &encode_rebase_list(&list), true)
        };
        r.map_err(|e| store_err(REBASE_LIST, e))
    }

    /// The content objects among `targets` that do not exist.
    fn missing_targets(
        &self,
        what: &str,
        targets: &BTreeSet<[u8; 32]>,
    ) -> Result<HashSet<[u8; 32]>, Error> {
        let mut gone = HashSet::new();
        for d in targets {
            let c = content_name(d);
            match self.data.stat(&c) {
                Ok(_) => {}
                Err(StoreError::NotFound { .. }) => {
                    log::warn!(
                        "{what}: content object {c} is missing: entries naming its source stay"
                    );
                    gone.insert(*d);
                }
                Err(e) => return Err(store_err(&c, e)),
            }
        }
        Ok(gone)
    }

    /// `moves` without those leading to a content object that does not
    /// exist (checked after a pin: see the module docs).
    pub(crate) fn existing_moves(&self, what: &str, moves: &Moves) -> Result<Moves, Error> {
        let gone = self.missing_targets(what, &moves.targets())?;
        Ok(moves.without(&gone))
    }

    /// The lock holder's side of rebasing (see the module docs): applies
    /// every rebase record on the map store to the volumes this mapper
    /// holds open, each as one map change between writes. Cheap when
    /// there is nothing to do (one listing). Returns how many volumes
    /// were moved; a volume that fails is logged and skipped (the next
    /// check tries again).
    pub fn apply_rebases(&self) -> Result<u64, Error> {
        let open = self.open_volumes();
        if open.is_empty() {
            return Ok(0);
        }
        let records = self.rebase_records()?;
        if records.is_empty() {
            return Ok(0);
        }
        let moves = Moves::from_records(records.iter().map(|(_, r)| r));
        let mut moved = 0;
        for v in open {
            match self.apply_rebase(&v, &moves) {
                Ok(true) => moved += 1,
                Ok(false) => {}
                Err(e) => log::warn!("rebase of {v}: {e}"),
            }
        }
        Ok(moved)
    }

    /// Moves the volume `name`, open here, by `moves`.
    fn apply_rebase(&self, name: &str, moves: &Moves) -> Result<bool, Error> {
        let s = self.state(name);
        {
            let st = Self::lock_state(&s);
            let Some(h) = st.header.clone().filter(|_| st.opens > 0) else {
                return Ok(false);
            };
            let journaled = st.journaled();
            // Under the state's lock: a journaled commit may drop the
            // in-memory chunks `h` names.
            if self.rebase_updates(&h, moves)?.is_empty() && !journaled {
                return Ok(false);
            }
            drop(st);
        }
        // Pinned against collections (named by the volume, which we hold
        // locked: the pin is not taken for a crashed hash's), then only
        // moves to content objects that exist now.
        let _pin = self.pin_hash(name, random_id())?;
        let moves = self.existing_moves(name, moves)?;
        let mut st = Self::lock_state(&s);
        let Some(h) = st.header.clone().filter(|_| st.opens > 0) else {
            return Ok(false);
        };
        let ups = self.rebase_updates(&h, &moves)?;
        if ups.is_empty() {
            // Nothing to move in the map as it is, but the stored map
            // (what the hash looks at) may name replaced objects that
            // journaled writes replaced since: a checkpoint stores it.
            if st.journaled() {
                let stored = self.stored_header(name)?;
                if !self.rebase_updates(&stored, &moves)?.is_empty() {
                    self.checkpoint(name, &mut st)?;
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        let held = Held {
            name: name.to_owned(),
            token: st.token,
            took: false,
        };
        self.commit_rebase(name, &mut st, &held, h, ups)?;
        log::info!("{name}: moved onto content objects (rebase)");
        Ok(true)
    }
}
