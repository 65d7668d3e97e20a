//! I/O mapping: where the bytes of a read, a write or a discard are
//! ([`Extent`]s), with copy-up of shared objects before a partial write
//! and pending entries for first writes and full overwrites (the
//! composer's contract in the crate docs). The hot path of the mapper:
//! [`Mapper::map_cached`] answers from the caches without I/O when it can.

use std::collections::BTreeMap;
use std::sync::Arc;

use archipelago_mapfmt::{
    granule_mask, granule_size, granules_covered, granules_touched, owned_object_name, Chunk,
    Entry, Header,
};
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::{Fence, ObjectStore, StoreError};

use crate::commit::Updates;
use crate::load::Vol;
use crate::locks::{VolState, FENCE_RECHECK};
use crate::{check_name, err, map_err, store_err, Mapper};

pub use archipelago_protocol::payload::Extent;

/// The extent reading `len` bytes at `offset_in_object` of object
/// `index`, backed by `entry`.
fn extent_of_entry(entry: &Entry, index: u64, offset_in_object: u64, len: u64) -> Extent {
    Extent {
        index,
        object: entry.object_name(index),
        offset_in_object,
        len,
        pending: false,
        missing_reads_zero: matches!(entry, Entry::Owned { .. } | Entry::Partial { .. }),
    }
}

/// Appends the extents reading `[off, off + n)` of object `index` (of
/// `os` bytes) backed by `entry`: one, or for a partial entry one per run
/// of granules in its own object or in its backing.
pub(crate) fn entry_extents(
    entry: &Entry,
    index: u64,
    off: u64,
    n: u64,
    os: u64,
    out: &mut Vec<Extent>,
) {
    let Entry::Partial {
        granules, backing, ..
    } = entry
    else {
        out.push(extent_of_entry(entry, index, off, n));
        return;
    };
    let g = granule_size(os);
    let held = |pos: u64| granules >> (pos / g) & 1 == 1;
    let end = off + n;
    let mut pos = off;
    while pos < end {
        let own = held(pos);
        let mut stop = ((pos / g + 1) * g).min(end);
        while stop < end && held(stop) == own {
            stop = ((stop / g + 1) * g).min(end);
        }
        out.push(if own {
            // The own object, as an owned entry's.
            Extent {
                index,
                object: entry.object_name(index),
                offset_in_object: pos,
                len: stop - pos,
                pending: false,
                missing_reads_zero: true,
            }
        } else {
            extent_of_entry(backing, index, pos, stop - pos)
        });
        pos = stop;
    }
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

impl Mapper {
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
        if let Some(h) = st.header.as_ref().filter(|_| st.opens > 0) {
            let vol = Vol {
                version: 3,
                header: h.clone(),
                legacy_chunks: None,
                overlay: None,
            };
            // Under the state's lock: the next journaled commit drops
            // the in-memory chunks this header names.
            return self.extents_of(name, &vol, offset, len);
        }
        drop(st);
        let vol = self.load(name, false, None)?;
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
        self.map_cached_fenced(name, offset, len, write)
            .map(|r| r.map(|(e, _)| e))
    }

    /// [`map_cached`](Self::map_cached) with the token of the lock the
    /// volume is held with (as [`map_write_fenced`](Self::map_write_fenced)).
    pub fn map_cached_fenced(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        write: bool,
    ) -> Option<Result<(Vec<Extent>, u64), Error>> {
        let s = self.volumes.try_lock().ok()?.get(name)?.clone();
        let mut st = s.try_lock().ok()?;
        let st = &mut *st;
        let h = st.header.as_ref().filter(|_| st.opens > 0)?;
        if write
            && (st.exclusive
                || st
                    .fence_checked
                    .map_or(true, |t| t.elapsed() > FENCE_RECHECK))
        {
            return None;
        }
        // First writes to unallocated objects are mapped here too when no
        // orphan can be under their names (`VolState::orphan_free`): they
        // need no delete, only to become pending.
        let allocate = write
            && st.orphan_free
            && !Self::flatten_copying(st, offset, len)
            && !Self::copy_up_in_flight(st, offset, len);
        let mut new_pending = Vec::new();
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
                        let c = match self.try_dirty_chunk(&r) {
                            Some(c) => c,
                            None => self.chunks.try_lock().ok()?.get(&r)?,
                        };
                        cur = Some((slot, c.clone()));
                        c
                    }
                };
                chunk.get(at).cloned().unwrap_or(Entry::Zero)
            };
            if write {
                // In place only: every granule the write touches is the
                // volume's own already, and no write to it is pending.
                let touched = granules_touched(h.object_size(), off, n);
                if st.pending.contains_key(&index) || new_pending.contains(&index) {
                    return None;
                }
                let fresh = entry.is_zero();
                if touched & !own_granules(h, &entry) != 0 && !(fresh && allocate) {
                    return None;
                }
                if fresh {
                    new_pending.push(index);
                }
                out.push(Extent {
                    index,
                    object: if fresh {
                        Some(owned_object_name(h.volume_id, h.epoch, index))
                    } else {
                        entry.object_name(index)
                    },
                    offset_in_object: off,
                    len: n,
                    pending: fresh,
                    missing_reads_zero: true,
                });
                continue;
            }
            entry_extents(&entry, index, off, n, h.object_size(), &mut out);
        }
        let all = granule_mask(h.object_size());
        for index in new_pending {
            st.pending.insert(index, all);
        }
        Some(Ok((out, st.token)))
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
            entry_extents(&entry, index, off, n, h.object_size(), &mut out);
        }
        Ok(out)
    }

    /// Prepares a write of `len` bytes at `offset` of `name`: returns the
    /// objects to write, copying up shared objects first and committing
    /// their entries (see the composer's contract for `pending` extents).
    /// Opens the volume implicitly if this host does not hold it (the
    /// implicit open is released by one [`close`](Self::close)).
    pub fn map_write(&self, name: &str, offset: u64, len: u64) -> Result<Vec<Extent>, Error> {
        self.change(name, offset, len, false).map(|(e, _)| e)
    }

    /// [`map_write`](Self::map_write), with the fencing token of the
    /// volume's lock the extents were mapped under: the composer carries
    /// it on each data write ([`Fence`](archipelago_store::Fence)), so
    /// the data store refuses them once the lock was broken.
    pub fn map_write_fenced(
        &self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<(Vec<Extent>, u64), Error> {
        self.change(name, offset, len, false)
    }

    /// [`discard`](Self::discard) with the lock's token, as
    /// [`map_write_fenced`](Self::map_write_fenced).
    pub fn discard_fenced(
        &self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<(Vec<Extent>, u64), Error> {
        self.change(name, offset, len, true)
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
        self.change(name, offset, len, true).map(|(e, _)| e)
    }

    /// [`map_write`](Self::map_write) (`discard` false) or
    /// [`discard`](Self::discard), and the lock's token.
    fn change(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        discard: bool,
    ) -> Result<(Vec<Extent>, u64), Error> {
        check_name(name)?;
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        crate::lifecycle::refuse_exclusive(name, &st)?;
        loop {
            if st.opens == 0 {
                self.open_locked(name, &mut st)?;
            }
            if !Self::flatten_copying(&st, offset, len)
                && !Self::copy_up_in_flight(&st, offset, len)
            {
                break;
            }
            st = Self::wait_for_flatten(&s, st);
        }
        let h = st.header.clone().expect("a held volume is cached");
        Self::check_range(name, &h, offset, len)?;
        // Fencing: every change to the data store below (deletes of
        // orphans, copy-ups) and the composer's data writes are fenced at
        // the data store; the lock is still checked here at least every
        // FENCE_RECHECK, so that a host whose lock was broken stops soon
        // even where nothing is fenced.
        if st
            .fence_checked
            .map_or(true, |t| t.elapsed() > FENCE_RECHECK)
        {
            self.check_fence(name, &mut st)?;
        }
        let os = h.object_size();
        let vol = Vol {
            version: 3,
            header: h.clone(),
            legacy_chunks: None,
            overlay: None,
        };
        let mut out = Vec::new();
        // slot -> (chunk, updates)
        let mut updates: Updates = BTreeMap::new();
        let mut new_pending = Vec::new();
        let mut copies = Vec::new();
        let all = granule_mask(os);
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
                        self.delete_orphan(&own, Some(st.fence(name)))
                            .map_err(|e| forget_if_fenced(&mut st, e))?;
                        updates
                            .get_mut(&slot)
                            .expect("inserted")
                            .1
                            .push((index, Entry::Zero));
                    }
                    continue;
                }
                if entry.is_zero() && !st.pending.contains_key(&index) {
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
            let granted = st.pending.get(&index).copied();
            let pending = granted.is_some();
            let held = granted.unwrap_or_else(|| own_granules(&h, &entry));
            let touched = granules_touched(os, off, n);
            let in_volume = os.min(h.size - index * os);
            let full = off == 0 && n >= in_volume;
            if touched & !held == 0 {
                // In place: every granule the write touches is in the
                // volume's own object already, or will be when the
                // pending write to it commits (this write joins it).
                ext.pending = pending;
            } else if !pending && (entry.is_zero() || full) {
                // A first write to an unallocated object, or a full
                // overwrite of a shared one: pending, so the entry
                // commits after the data and many such writes share
                // one commit (`commit_batch`). An orphan of an earlier
                // round that never committed may sit under `own` with
                // stale bytes: unless this write covers the whole
                // object, it goes first. A "full" write of the last
                // object covers only the bytes inside the volume; the
                // orphan's bytes past the end (from before a shrink)
                // would come back with a grow.
                if n < os && !st.orphan_free {
                    self.delete_orphan(&own, Some(st.fence(name)))
                        .map_err(|e| forget_if_fenced(&mut st, e))?;
                }
                ext.pending = true;
                new_pending.push(index);
            } else {
                // Sub-object copy-on-write: the granules the write
                // touches but does not cover whole are copied up before
                // the data lands (and, from a partial entry of another
                // object, the granules it holds); the index is then
                // pending, its entry committed after the data with the
                // volume's other commits.
                let mut want = held | touched;
                if held == 0 {
                    if let Entry::Partial { granules, .. } = &entry {
                        want |= granules;
                    }
                }
                let covered = granules_covered(os, off, n);
                // No lock check here: the copy-up, like the data write,
                // is fenced at the data store.
                ext.pending = true;
                copies.push(CopyUp {
                    index,
                    entry: entry.clone(),
                    was_pending: pending,
                    held,
                    copy: want & !held & !covered,
                    want,
                });
            }
            out.push(ext);
        }
        self.apply_updates(name, &mut st, h, updates)?;
        for index in new_pending {
            st.pending.insert(index, all);
        }
        let token = st.token;
        if !copies.is_empty() {
            self.copy_up_unlocked(name, &s, st, copies)?;
        }
        Ok((out, token))
    }

    /// The copy-ups of `copies` whose entry is no longer the one copied
    /// from, with the entry they now have.
    fn entries_moved(
        &self,
        name: &str,
        st: &VolState,
        copies: &[CopyUp],
    ) -> Result<Vec<CopyUp>, Error> {
        let h = st.header.clone().expect("a held volume is cached");
        let vol = Vol {
            version: 3,
            header: h,
            legacy_chunks: None,
            overlay: None,
        };
        let mut moved = Vec::new();
        for c in copies {
            let (slot, at) = vol
                .header
                .chunk_for(c.index)
                .map_err(|e| map_err(name, e))?;
            let current = self
                .chunk(&vol, vol.header.chunks[slot])?
                .get(at)
                .cloned()
                .unwrap_or(Entry::Zero);
            if current != c.entry {
                moved.push(CopyUp {
                    entry: current,
                    ..c.clone()
                });
            }
        }
        Ok(moved)
    }

    /// Whether a copy-up of an object of `[offset, offset + len)` is in
    /// flight with the state unlocked.
    fn copy_up_in_flight(st: &VolState, offset: u64, len: u64) -> bool {
        let Some(h) = st.header.as_ref().filter(|_| !st.copying.is_empty()) else {
            return false;
        };
        if len == 0 {
            return false;
        }
        let os = h.object_size();
        (offset / os..=(offset + len - 1) / os).any(|i| st.copying.contains(&i))
    }

    /// Runs `copies` with the state unlocked, so that writes to other
    /// objects of the volume (their copy-ups, commits and in-place
    /// writes) go on meanwhile; writes to these objects wait
    /// (`copy_up_in_flight`). The indexes are pending from the start: a
    /// flatten step leaves them alone and a barrier cannot run (the
    /// composer drains writes first). On success they stay pending with
    /// the granules they want, to be committed by the composer after the
    /// data; on failure an index that was not pending before is dropped
    /// and the write fails, the map unchanged.
    ///
    /// An entry can change while its copy is in flight only by a dedup
    /// rebase moving it onto the content object of the same bytes, after
    /// which a collection may delete the object being copied: if the
    /// entry changed, the copy is done again from the new entry.
    fn copy_up_unlocked<'s>(
        &self,
        name: &str,
        s: &'s std::sync::Arc<std::sync::Mutex<VolState>>,
        mut st: std::sync::MutexGuard<'s, VolState>,
        copies: Vec<CopyUp>,
    ) -> Result<(), Error> {
        let token = st.token;
        let h = st.header.clone().expect("a held volume is cached");
        let os = h.object_size();
        for c in &copies {
            // Pending with what is held: a commit of an earlier round of
            // the object, arriving while the copy is in flight, commits no
            // more than that.
            st.pending.entry(c.index).or_insert(c.held);
            st.copying.insert(c.index);
        }
        let mut todo = copies.clone();
        let result = loop {
            drop(st);
            let copied = todo.iter().try_for_each(|c| {
                let own = owned_object_name(h.volume_id, h.epoch, c.index);
                // A copy-up: fenced (a broken lock stops it at the data
                // store) and lazy (the write it is for makes it durable,
                // one flush for both; in write-back mode the composer's
                // FLUSH, before any record naming it is).
                let fence = Fence { lock: name, token };
                self.fill_granules(&c.entry, c.index, &own, c.copy, os, Some(fence))
            });
            st = Self::lock_state(s);
            if st.opens == 0 || st.token != token {
                break Err(err(
                    ErrorCode::Fenced,
                    format!("{name}: the volume's lock was lost during a copy-up"),
                ));
            }
            if let Err(e) = copied {
                break Err(e);
            }
            match self.entries_moved(name, &st, &todo) {
                Ok(moved) if moved.is_empty() => break Ok(()),
                Ok(moved) => todo = moved,
                Err(e) => break Err(e),
            }
        };
        for c in &copies {
            st.copying.remove(&c.index);
        }
        match result {
            Ok(()) => {
                for c in &copies {
                    // Pending again if a commit of an earlier round of the
                    // object took it off meanwhile (granting less than this
                    // write needs): this write's round commits the rest.
                    *st.pending.entry(c.index).or_default() |= c.want;
                }
                Ok(())
            }
            Err(e) => {
                if st.token == token {
                    for c in copies.iter().filter(|c| !c.was_pending) {
                        st.drop_pending(c.index);
                        // The copy may have made the object: an orphan.
                        st.orphan_free = false;
                    }
                }
                Err(forget_if_fenced(&mut st, e))
            }
        }
    }
}

/// `e`, after forgetting the volume if the data store refused us as
/// fenced (our lock was broken), as a fenced commit does.
fn forget_if_fenced(st: &mut VolState, e: Error) -> Error {
    if e.code == ErrorCode::Fenced {
        *st = VolState::default();
    }
    e
}

/// A copy-up of [`Mapper::change`]: granules `copy` of object `index`
/// copied from what `entry` reads there into the volume's own object,
/// which then holds `want` (committed with the write).
#[derive(Clone)]
struct CopyUp {
    index: u64,
    entry: Entry,
    /// The index was pending already (a copy for more granules).
    was_pending: bool,
    /// The granules the volume's own object held (or was granted).
    held: u64,
    copy: u64,
    want: u64,
}

/// The granules of object `entry` that the volume of `h` can write in
/// place: its own object at its current epoch holds them (all of an
/// owned entry, those of a partial entry of its own); none for a
/// snapshot or a removed volume.
pub(crate) fn own_granules(h: &Header, entry: &Entry) -> u64 {
    if h.flags.readonly || h.flags.removed {
        return 0;
    }
    match entry {
        Entry::Owned { owner, epoch } if *owner == h.volume_id && *epoch == h.epoch => {
            granule_mask(h.object_size())
        }
        Entry::Partial {
            owner,
            epoch,
            granules,
            ..
        } if *owner == h.volume_id && *epoch == h.epoch => *granules,
        _ => 0,
    }
}

impl Mapper {
    /// Copies the whole of `old` (the object `entry` names) into `own`,
    /// the volume's object at its current epoch. A missing owned source
    /// reads as zeros: `own` must then read as zeros too, so any orphan
    /// under its name (a round that never committed) is deleted rather
    /// than kept under the entry about to name it.
    fn copy_up(
        &self,
        entry: &Entry,
        old: &str,
        own: &str,
        os: u64,
        fence: Option<Fence<'_>>,
    ) -> Result<(), Error> {
        match self.copy_object(old, 0, own, 0, os, fence) {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound { .. }) if matches!(entry, Entry::Owned { .. }) => {
                match fence {
                    // Emptied (reads as zeros) under the fence.
                    Some(f) => self
                        .data
                        .write_full_fenced(own, &[], false, f)
                        .map_err(|e| store_err(own, e)),
                    None => self.delete_orphan(own, None),
                }
            }
            Err(e) => Err(store_err(old, e)),
        }
    }

    /// Makes granules `want` of `own` (object `index` of the volume, at
    /// its current epoch) hold what `entry` reads there, durably (or with
    /// a `fence`, as a copy-up: fenced, and made durable by the caller's
    /// next durable write to `own` or a sync of the data store): copied
    /// from the object that holds each granule (a partial entry's own
    /// object or its backing's), zeros where the entry reads as zeros
    /// (no object, or a missing owned one). Every granule of an entry
    /// that is not partial: one copy of the whole object, or a delete of
    /// `own` if it reads as zeros.
    pub(crate) fn fill_granules(
        &self,
        entry: &Entry,
        index: u64,
        own: &str,
        want: u64,
        os: u64,
        fence: Option<Fence<'_>>,
    ) -> Result<(), Error> {
        let all = granule_mask(os);
        let want = want & all;
        if want == 0 {
            return Ok(());
        }
        if want == all && !matches!(entry, Entry::Partial { .. }) {
            return match entry.object_name(index) {
                Some(old) => self.copy_up(entry, &old, own, os, fence),
                None => self.delete_orphan(own, fence),
            };
        }
        let g = granule_size(os);
        // Granule k reads from this entry's object.
        let source = |k: u64| -> Entry {
            match entry {
                Entry::Partial {
                    owner,
                    epoch,
                    granules,
                    backing,
                } => {
                    if granules >> k & 1 == 1 {
                        Entry::Owned {
                            owner: *owner,
                            epoch: *epoch,
                        }
                    } else {
                        (**backing).clone()
                    }
                }
                e => e.clone(),
            }
        };
        let count = os / g;
        let mut k = 0;
        while k < count {
            if want >> k & 1 == 0 {
                k += 1;
                continue;
            }
            let src = source(k);
            let mut end = k + 1;
            while end < count && want >> end & 1 == 1 && source(end) == src {
                end += 1;
            }
            let (off, len) = (k * g, (end - k) * g);
            let zeros = match src.object_name(index) {
                Some(name) if name == own => false,
                Some(name) => match self.copy_object(&name, off, own, off, len, fence) {
                    Ok(()) => false,
                    Err(StoreError::NotFound { .. }) if matches!(src, Entry::Owned { .. }) => true,
                    Err(e) => return Err(store_err(&name, e)),
                },
                None => true,
            };
            if zeros {
                let z = vec![0; len as usize];
                match fence {
                    Some(f) => self.data.write_fenced(own, off, &z, false, f),
                    None => self.data.write(own, off, &z, true),
                }
                .map_err(|e| store_err(own, e))?;
            }
            k = end;
        }
        Ok(())
    }

    /// A copy in the data store: a copy-up under `fence`, or durable.
    fn copy_object(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        fence: Option<Fence<'_>>,
    ) -> Result<(), StoreError> {
        match fence {
            Some(f) => self.data.copy_up(src, src_offset, dst, dst_offset, len, f),
            None => self.data.copy(src, src_offset, dst, dst_offset, len, true),
        }
    }

    /// Deletes `own`, an object of the volume's current epoch that no
    /// entry names (or that the change under way replaces); missing is
    /// fine.
    /// Fenced with `fence` when the volume is held (a first write's: the
    /// data store refuses it once the lock was broken).
    fn delete_orphan(&self, own: &str, fence: Option<Fence<'_>>) -> Result<(), Error> {
        let deleted = match fence {
            Some(f) => self.data.delete_fenced(own, f),
            None => self.data.delete(own),
        };
        match deleted {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(own, e)),
        }
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
}
