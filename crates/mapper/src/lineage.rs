//! Lineage, flatten and rollback: the mapper operations over the parent
//! links of format 3 headers ([`archipelago_mapfmt::lineage`]).
//!
//! | operation | lock | writes (in order) | errors |
//! |---|---|---|---|
//! | [`lineage`](Mapper::lineage) | none | nothing | store errors |
//! | [`flatten_step`](Mapper::flatten_step) | held, or taken for the step | copied data objects, chunks, header | `InvalidArgument` (a snapshot), `NotFound`, `Locked` (open on another host), `Fenced`, store errors |
//! | [`rollback`](Mapper::rollback) | volume and snapshot, taken for the operation | header | `Busy` (open here), `Locked` (elsewhere), `InvalidArgument` (not a snapshot of this volume), `NotFound` |
//!
//! **Flatten** copies, one step at a time, every object a volume still
//! shares with another volume (an entry owned by another id, or a legacy
//! object) into the object it owns for that index, as the write path's
//! copy-up does. On a volume open here (I/O going on), the copy runs with
//! the volume's state unlocked but the object *reserved*: reads go on,
//! writes to other objects go on, a write to that object (or a resize)
//! waits until the step committed, and the entry commits only if nothing
//! changed the volume meanwhile (same epoch, same entry, no write in
//! flight), else the next step looks again. An index with a full
//! overwrite in flight (pending) is skipped: the composer's commit makes
//! it the volume's own. A closed volume is copied under its mutex and its
//! storage lock, taken for the step (its reads wait for that copy).
//! Content objects (named by their SHA-256, shared by dedup) and zero
//! entries stay: they belong to no volume. When no shared entry is left,
//! the last step rewrites every chunk the volume still shares (another
//! owner's) under its own serials and, for a clone, drops the parent
//! link ([`detach`]), in one commit: from then on the volume depends on
//! nothing, and its source snapshot can be removed (unless other volumes
//! depend on it; snapshots taken of the clone before the flatten still
//! list the source's objects and do). Each step is
//! committed on its own, so an interrupted flatten resumes where it was.
//! The objects the volume stops referencing are left to garbage
//! collection.
//!
//! **Rollback** gives a closed volume the map of one of its own live
//! snapshots (same volume id, older epoch) in a new epoch
//! ([`archipelago_mapfmt::rollback`]): O(map), no data copied, and the
//! snapshot's objects become copy-on-write for the volume. Snapshots of
//! other volumes (its clone source among them) are refused: cloning the
//! snapshot again gives that content without breaking the volume's
//! identity.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use archipelago_mapfmt::lineage::{clone_source, dependents, Node};
use archipelago_mapfmt::{
    detach, granule_mask, owned_object_name, rollback, set_entries, Chunk, ChunkRef, Entry, Header,
    ENTRIES_PER_CHUNK,
};
use archipelago_protocol::names::check_volume_name;
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::StoreError;

use crate::io::own_granules;
use crate::load::Vol;
use crate::locks::{Held, VolState};
use crate::{check_name, err, map_err, store_err, Mapper};

/// A header on the map store, as [`Mapper::lineage`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageRecord {
    /// The lineage fields (name, id, epoch, flags, parent link).
    pub node: Node,
    /// Size in bytes.
    pub size: u64,
}

pub use archipelago_protocol::payload::FlattenStep;

/// How often a write waiting for a flatten's copy of its object looks
/// again.
const FLATTEN_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// What [`Mapper::flatten_locked`] leaves to do.
enum Plan {
    /// Nothing more: the step's outcome.
    Done(FlattenStep),
    /// Copy object `index` (entry `entry` of `header`) with the state
    /// unlocked, then commit if nothing changed.
    Copy {
        step: FlattenStep,
        index: u64,
        entry: Entry,
        header: Header,
    },
}

/// Clears a flatten's reservation of an object when dropped (also if the
/// copy panics, so writers never wait forever).
struct Reservation<'a> {
    state: &'a Arc<Mutex<VolState>>,
    index: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut st = Mapper::lock_state(self.state);
        if st.flattening == Some(self.index) {
            st.flattening = None;
        }
    }
}

/// Whether `entry` of volume `h` names an object another volume wrote.
fn shared(h: &Header, entry: &Entry) -> bool {
    match entry {
        Entry::Owned { owner, .. } => *owner != h.volume_id,
        Entry::Legacy(_) => true,
        Entry::Zero | Entry::Content(_) => false,
        // Its own object, or what its other granules read as.
        Entry::Partial { owner, backing, .. } => *owner != h.volume_id || shared(h, backing),
    }
}

impl Mapper {
    /// Every live format 3 header on the map store with its name, removed
    /// ones included (they carry lineage), renamed-away ones not.
    pub(crate) fn lineage_headers(&self) -> Result<Vec<(String, Header)>, Error> {
        let names = self.maps.list("").map_err(|e| store_err("map store", e))?;
        let mut out = Vec::new();
        for n in names {
            // Tombstones: removed headers whose name was used again.
            let tomb = n.starts_with(archipelago_mapfmt::gcmeta::TOMBSTONE_PREFIX);
            if !tomb && check_volume_name(n.as_bytes()).is_err() {
                continue;
            }
            let Some(bytes) = self.read_whole(&n)? else {
                continue;
            };
            let Ok(h) = Header::decode(&bytes) else {
                continue;
            };
            if !self.renamed_away(&n, &h)? {
                out.push((n, h));
            }
        }
        Ok(out)
    }

    /// The names of the live headers that depend on the snapshot `h`
    /// (see [`dependents`]): what keeps it from being removed.
    pub(crate) fn dependents_of(&self, h: &Header) -> Result<Vec<String>, Error> {
        let nodes: Vec<Node> = self
            .lineage_headers()?
            .iter()
            .map(|(n, h)| Node::of(n, h))
            .collect();
        Ok(dependents(&nodes, (h.volume_id, h.epoch))
            .into_iter()
            .map(|i| nodes[i].name.clone())
            .collect())
    }

    /// Every format 3 volume and snapshot (removed ones included, a
    /// removed one whose name was used again under its tombstone's name
    /// `archip_removed_{id}_{epoch}`), sorted by name: the input of `vlmc
    /// tree` and `vlmc children`. Old-format
    /// maps have no lineage and are not listed.
    pub fn lineage(&self) -> Result<Vec<LineageRecord>, Error> {
        let mut out: Vec<LineageRecord> = self
            .lineage_headers()?
            .into_iter()
            .map(|(n, h)| LineageRecord {
                node: Node::of(&n, &h),
                size: h.size,
            })
            .collect();
        out.sort_by(|a, b| a.node.name.cmp(&b.node.name));
        Ok(out)
    }

    /// The names of the live volumes and snapshots that depend on the
    /// snapshot `snap` (exactly those that make [`remove`](Self::remove)
    /// refuse it).
    pub fn dependents(&self, snap: &str) -> Result<Vec<String>, Error> {
        let h = self.load_v3(snap)?;
        if !h.flags.readonly {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("{snap} is not a snapshot"),
            ));
        }
        self.dependents_of(&h)
    }

    /// One step of flattening `name`: copies up to `max_objects` shared
    /// objects at or after index `start` (wrapping around to the first
    /// ones), committing their entries; with none left, finishes (see the
    /// module docs). `max_objects` 0 only reports what is left.
    ///
    /// A volume open here (its I/O goes on) gets one object a step,
    /// copied with the volume's state unlocked: only writes to that very
    /// object (and resizes) wait for the copy, and the entry commits only
    /// if nothing changed it meanwhile. A closed one is copied under the
    /// state's mutex and the storage lock taken for the step.
    pub fn flatten_step(
        &self,
        name: &str,
        start: u64,
        max_objects: u64,
    ) -> Result<FlattenStep, Error> {
        check_name(name)?;
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        if st.opens == 0 {
            return self.locked(name, &mut st, |st, held| {
                match self.flatten_locked(name, st, held, start, max_objects, false)? {
                    Plan::Done(step) => Ok(step),
                    Plan::Copy { step, .. } => Ok(step), // not asked for
                }
            });
        }
        let held = Held {
            name: name.to_owned(),
            token: st.token,
            took: false,
        };
        // One copy with the state unlocked at a time (another flatten of
        // this volume may be running): a second one copies locked.
        let defer = st.flattening.is_none();
        let (mut step, index, entry, header) =
            match self.flatten_locked(name, &mut st, &held, start, max_objects, defer)? {
                Plan::Done(step) => return Ok(step),
                Plan::Copy {
                    step,
                    index,
                    entry,
                    header,
                } => (step, index, entry, header),
            };
        self.check_fence(name, &mut st)?;
        st.flattening = Some(index);
        drop(st);
        // Dropped after `st` on every return: the writes waiting for this
        // object go on only once the entry committed (or did not).
        let reservation = Reservation { state: &s, index };
        let copied = self.copy_shared(&header, index, &entry);
        let mut st = Self::lock_state(&s);
        let new_entry = copied?;
        step.next = index;
        // Closed (and maybe reopened), snapshotted, removed, resized or
        // written meanwhile: commit nothing, the next step looks again.
        let Some(h) = st
            .header
            .clone()
            .filter(|_| st.opens > 0 && st.token == held.token)
        else {
            return Ok(step);
        };
        if h.epoch != header.epoch
            || h.flags.removed
            || index >= h.nr_objects()
            || st.pending.contains_key(&index)
        {
            return Ok(step);
        }
        let vol = Vol {
            version: 3,
            header: h.clone(),
            legacy_chunks: None,
            overlay: None,
        };
        let (slot, at) = h.chunk_for(index).map_err(|e| map_err(name, e))?;
        let chunk = self.chunk(&vol, h.chunks[slot])?;
        if chunk.get(at).cloned().unwrap_or(Entry::Zero) != entry {
            return Ok(step);
        }
        let (c, nh) =
            set_entries(&h, &chunk, vec![(index, new_entry)]).map_err(|e| map_err(name, e))?;
        self.commit(name, Some(&mut st), Some(&held), vec![c], &nh)?;
        drop(st);
        drop(reservation);
        step.copied = 1;
        step.bytes = h.object_size();
        step.remaining -= 1;
        step.next = index + 1;
        Ok(step)
    }

    /// Copies the shared object behind `entry` (object `index` of `h`)
    /// into the object `h` owns for that index; returns the entry to
    /// commit: owned, or zero if the shared object is an owned one that
    /// was never written (it reads as zeros).
    fn copy_shared(&self, h: &Header, index: u64, entry: &Entry) -> Result<Entry, Error> {
        if let Entry::Partial { .. } = entry {
            // Every granule into the own object: those of a partial entry
            // of its own at this epoch are there already.
            let own = owned_object_name(h.volume_id, h.epoch, index);
            let all = granule_mask(h.object_size());
            let held = own_granules(h, entry);
            self.fill_granules(entry, index, &own, all & !held, h.object_size(), None)?;
            return Ok(h.own_entry());
        }
        let old = entry
            .object_name(index)
            .expect("a shared entry names an object");
        let own = owned_object_name(h.volume_id, h.epoch, index);
        match self.data.copy(&old, 0, &own, 0, h.object_size(), true) {
            Ok(()) => Ok(h.own_entry()),
            // `own` must not keep stale bytes behind a zero entry (a
            // later partial write re-owns it without copying).
            Err(StoreError::NotFound { .. }) if matches!(entry, Entry::Owned { .. }) => {
                match self.data.delete(&own) {
                    Ok(()) | Err(StoreError::NotFound { .. }) => Ok(Entry::Zero),
                    Err(e) => Err(store_err(&own, e)),
                }
            }
            Err(e) => Err(store_err(&old, e)),
        }
    }

    /// Whether a flatten is copying an object of `[offset, offset + len)`
    /// with the state unlocked.
    pub(crate) fn flatten_copying(st: &VolState, offset: u64, len: u64) -> bool {
        let (Some(i), Some(h)) = (st.flattening, st.header.as_ref()) else {
            return false;
        };
        if len == 0 {
            return false;
        }
        let os = h.object_size();
        (offset / os..=(offset + len - 1) / os).contains(&i)
    }

    /// Unlocks the state for a while (a flatten's copy of one object is
    /// in flight), then locks it again. Polling: a condition variable
    /// would have to live beside each volume's mutex, and the wait is one
    /// object copy at most.
    pub(crate) fn wait_for_flatten<'a>(
        state: &'a Arc<Mutex<VolState>>,
        st: MutexGuard<'a, VolState>,
    ) -> MutexGuard<'a, VolState> {
        drop(st);
        std::thread::sleep(FLATTEN_POLL);
        Self::lock_state(state)
    }

    fn flatten_locked(
        &self,
        name: &str,
        st: &mut VolState,
        held: &Held,
        start: u64,
        max_objects: u64,
        defer_copy: bool,
    ) -> Result<Plan, Error> {
        let h = self.current(name, st)?;
        if h.flags.removed {
            return Err(err(ErrorCode::NotFound, format!("{name} was removed")));
        }
        if h.flags.readonly {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("{name} is a snapshot: only a volume is flattened"),
            ));
        }
        let vol = Vol {
            version: 3,
            header: h.clone(),
            legacy_chunks: None,
            overlay: None,
        };
        let per = ENTRIES_PER_CHUNK as u64;
        let mut chunks = Vec::with_capacity(h.chunks.len());
        let mut shared_at: Vec<u64> = Vec::new();
        for (slot, r) in h.chunks.iter().enumerate() {
            let c = self.chunk(&vol, *r)?;
            for (off, e) in c.entries().iter().enumerate() {
                if shared(&h, e) {
                    shared_at.push(slot as u64 * per + off as u64);
                }
            }
            chunks.push(c);
        }
        let mut step = FlattenStep {
            next: start,
            remaining: shared_at.len() as u64,
            total: h.nr_objects(),
            ..FlattenStep::default()
        };
        if max_objects == 0 {
            return Ok(Plan::Done(step));
        }
        // Indexes with a full overwrite in flight become the volume's own
        // when the composer commits them: copying now would land under
        // the new data.
        // The object another flatten step is copying is its.
        let free: Vec<u64> = shared_at
            .iter()
            .copied()
            .filter(|i| !st.pending.contains_key(i) && st.flattening != Some(*i))
            .collect();
        let from = free.partition_point(|&i| i < start);
        let pick: Vec<u64> = free[from..]
            .iter()
            .chain(free[..from].iter())
            .take(max_objects as usize)
            .copied()
            .collect();
        if pick.is_empty() {
            if !shared_at.is_empty() {
                step.next = 0;
                return Ok(Plan::Done(step)); // only writes in flight: ask again
            }
            return self
                .flatten_finish(name, st, held, h, chunks, step)
                .map(Plan::Done);
        }
        if defer_copy {
            let index = pick[0];
            let (slot, at) = h.chunk_for(index).map_err(|e| map_err(name, e))?;
            let entry = chunks[slot].get(at).cloned().unwrap_or(Entry::Zero);
            return Ok(Plan::Copy {
                step,
                index,
                entry,
                header: h,
            });
        }
        if st.opens > 0 {
            self.check_fence(name, st)?;
        }
        let os = h.object_size();
        let mut updates: BTreeMap<usize, Vec<(u64, Entry)>> = BTreeMap::new();
        for &index in &pick {
            let (slot, at) = h.chunk_for(index).map_err(|e| map_err(name, e))?;
            let entry = chunks[slot].get(at).cloned().unwrap_or(Entry::Zero);
            let new_entry = self.copy_shared(&h, index, &entry)?;
            updates.entry(slot).or_default().push((index, new_entry));
        }
        let mut nh = h.clone();
        let mut new_chunks = Vec::new();
        for (slot, ups) in updates {
            let (c, next) = set_entries(&nh, &chunks[slot], ups).map_err(|e| map_err(name, e))?;
            new_chunks.push(c);
            nh = next;
        }
        self.commit(name, Some(st), Some(held), new_chunks, &nh)?;
        step.copied = pick.len() as u64;
        step.bytes = step.copied * os;
        step.remaining -= step.copied;
        step.next = pick.last().map_or(0, |i| i + 1);
        Ok(Plan::Done(step))
    }

    /// The end of a flatten: no shared entry is left. Rewrites the chunks
    /// other owners wrote under this volume's serials and, if its parent
    /// walk crosses into another volume (it is a clone), drops the parent
    /// link, in one commit. A volume that was never a clone keeps the
    /// link to its own snapshots.
    fn flatten_finish(
        &self,
        name: &str,
        st: &mut VolState,
        held: &Held,
        h: Header,
        chunks: Vec<std::sync::Arc<Chunk>>,
        mut step: FlattenStep,
    ) -> Result<FlattenStep, Error> {
        let mut nh = h.clone();
        let mut new_chunks = Vec::new();
        for (slot, r) in h.chunks.iter().enumerate() {
            if r.is_zero() || r.owner == h.volume_id {
                continue;
            }
            let id = ChunkRef {
                owner: nh.volume_id,
                serial: nh.next_serial,
            };
            nh.next_serial = nh.next_serial.checked_add(1).ok_or_else(|| {
                err(
                    ErrorCode::NoSpace,
                    format!("{name}: chunk serials exhausted"),
                )
            })?;
            nh.chunks[slot] = id;
            new_chunks.push(chunks[slot].as_ref().clone().with_id(id));
        }
        let is_clone = match &h.parent {
            None => false,
            Some(p) if p.volume_id != h.volume_id => true,
            Some(_) => {
                let nodes: Vec<Node> = self
                    .lineage_headers()?
                    .iter()
                    .map(|(n, h)| Node::of(n, h))
                    .collect();
                clone_source(&nodes, &Node::of(name, &h)).is_some()
            }
        };
        if is_clone {
            let detached = detach(&nh).map_err(|e| map_err(name, e))?;
            self.commit(name, Some(st), Some(held), new_chunks, &detached)?;
        } else if !new_chunks.is_empty() {
            nh.commit_seq += 1;
            self.commit(name, Some(st), Some(held), new_chunks, &nh)?;
        }
        step.done = true;
        step.next = 0;
        Ok(step)
    }

    /// Rolls the closed volume `name` back to its snapshot `snap` (see the
    /// module docs). Refused while `name` is open on this host (`Busy`) or
    /// locked by another (`Locked`).
    pub fn rollback(&self, name: &str, snap: &str) -> Result<(), Error> {
        check_name(name)?;
        check_name(snap)?;
        if name == snap {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("{name}: a volume is not its own snapshot"),
            ));
        }
        let (sv, ss) = (self.state(name), self.state(snap));
        let (mut vst, mut sst) = Self::two(&sv, &ss, name < snap);
        if vst.opens > 0 || !vst.pending.is_empty() {
            return Err(err(
                ErrorCode::Busy,
                format!("{name} is open on this host: close it before rolling back"),
            ));
        }
        self.locked(name, &mut vst, |vst, vheld| {
            // The snapshot's lock keeps a hash from rewriting its chunks
            // under us.
            self.locked(snap, &mut sst, |_, _| {
                let h = self.load_v3(name)?;
                if h.flags.removed {
                    return Err(err(ErrorCode::NotFound, format!("{name} was removed")));
                }
                if h.flags.readonly {
                    return Err(err(
                        ErrorCode::InvalidArgument,
                        format!("{name} is a snapshot: only a volume is rolled back"),
                    ));
                }
                let s = self.load_v3(snap)?;
                if s.flags.removed {
                    return Err(err(
                        ErrorCode::NotFound,
                        format!("snapshot {snap} was removed"),
                    ));
                }
                if !s.flags.readonly || s.volume_id != h.volume_id || s.epoch >= h.epoch {
                    return Err(err(
                        ErrorCode::InvalidArgument,
                        format!(
                            "{snap} is not a snapshot of {name}: a volume rolls back only to its own snapshots"
                        ),
                    ));
                }
                let r = rollback(&h, &s, snap).map_err(|e| map_err(name, e))?;
                self.commit(name, Some(vst), Some(vheld), vec![], &r)
            })
        })
    }
}
