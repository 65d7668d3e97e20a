//! The map journal (issue 15): the entry changes of writes (first writes,
//! copy-ups, more granules of a partial object) become durable by one
//! append to the volume's journal object in the map store
//! (`archip_journal_{id:016x}`, [`archipelago_mapfmt::journal`]) instead
//! of a chunk and a header written per commit.
//!
//! - **Append.** A group commit of pending writes builds the new chunks in
//!   memory as any change does and appends, fenced with the lock's token
//!   (breaking a lock raises the map store's fence past its holder's
//!   token, so no lock check goes first), one record (the writer's token, the
//!   stored header's commit sequence, the epoch, the new entries) with one
//!   durable write. The chunks stay in memory (the mapper's *dirty*
//!   chunks, found before the cache), the cached header names them, and
//!   its commit sequence stays the stored one's. The first append of an
//!   open replaces the object (`write_full`), so nothing of an earlier
//!   writer's journal can mix in.
//! - **Write-back mode** ([`Mapper::with_write_back`]): the record goes
//!   to the volume's write-back journal instead (same name, in a store
//!   on memory that outlives the mapper but not the host), and the
//!   composer's FLUSH ([`Mapper::sync_maps`]) syncs the data store and
//!   then moves the records that were there to the journal in the map
//!   store. Replay reads the map store's journal, then the write-back
//!   one; a checkpoint syncs the data store first while the write-back
//!   journal holds records, and deletes both journals.
//! - **Checkpoint.** Every other commit of the volume's header (a
//!   snapshot, resize, discard, flatten step, rebase, close...) writes the
//!   dirty chunks the header names with it, then deletes the journal: the
//!   header holds everything. A journal past [`CHECKPOINT_BYTES`] is
//!   checkpointed at once.
//! - **Replay.** Loading a format 3 header reads its journal and applies
//!   the records that apply on it: from the start, while each names the
//!   header's commit sequence, epoch and the first record's token; a torn
//!   or damaged record ends it. A writer that opens a volume whose
//!   journal had records checkpoints at once (a crashed owner's
//!   acknowledged writes are kept; a late append of a fenced owner goes
//!   to a journal whose records no longer apply).
//! - **Data first.** A record is appended only once the data of its
//!   writes landed (the composer commits after the data, and a commit
//!   hiding another object's data behind written granules syncs the data
//!   store first), as for a header commit.
//! - **Garbage collection never needs the journals**: a record names only
//!   the volume's own objects of its current epoch (which a collection
//!   never deletes while the volume lives) and, in a partial entry, a
//!   backing that the stored map names at the same index (the entry it
//!   replaced, or that entry's backing); no record outlives an epoch (a
//!   snapshot or rollback commits the header), and chunks are written
//!   only at a checkpoint, under serials past the stored `next_serial`.
//!   Moves onto content objects (dedup rebase) are header commits, not
//!   records.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use archipelago_mapfmt::journal::{decode_journal, journal_name, JournalRecord};
use archipelago_mapfmt::{set_entries, Chunk, ChunkRef, Entry, Header};
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::{Fence, ObjectStore, StoreError};

use crate::commit::Updates;
use crate::load::{read_object, Vol};
use crate::locks::{Held, VolState};
use crate::{err, map_err, store_err, Mapper};

/// A journal longer than this is checkpointed at once.
pub const CHECKPOINT_BYTES: u64 = 1 << 20;

impl Mapper {
    /// A chunk that exists only in memory.
    pub(crate) fn dirty_chunk(&self, r: &ChunkRef) -> Option<Arc<Chunk>> {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(r)
            .cloned()
    }

    /// [`dirty_chunk`](Self::dirty_chunk) without waiting (the loop
    /// thread's fast path): `None` if contended or absent.
    pub(crate) fn try_dirty_chunk(&self, r: &ChunkRef) -> Option<Arc<Chunk>> {
        self.dirty.try_lock().ok()?.get(r).cloned()
    }

    /// For an operation on a volume not open here, under the lock it
    /// took: a journal left by a crashed owner becomes the stored map
    /// first, so that the operation (which reads the stored map) sees
    /// every acknowledged write. Errors loading are the operation's to
    /// report.
    pub(crate) fn settle_if_closed(
        &self,
        name: &str,
        st: &mut VolState,
        held: &Held,
    ) -> Result<(), Error> {
        if st.opens > 0 {
            return Ok(());
        }
        match self.load(name, false, None) {
            Ok(vol) if vol.version == 3 && vol.overlay.is_some() => {
                self.settle_journal(name, Some(st), held, &vol)
            }
            _ => Ok(()),
        }
    }

    fn pin(&self, chunks: impl IntoIterator<Item = Chunk>) {
        let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        for c in chunks {
            d.insert(c.id(), Arc::new(c));
        }
    }

    /// The dirty chunks `header` names (to write with its commit).
    pub(crate) fn dirty_named(&self, header: &Header) -> Vec<Arc<Chunk>> {
        let d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        header
            .chunks
            .iter()
            .filter_map(|r| d.get(r).cloned())
            .collect()
    }

    /// After a commit of `header`: its volume's dirty chunks are written
    /// (those it names, now cached) or no longer named; its journal, if
    /// any, no longer applies and is deleted.
    pub(crate) fn checkpointed(&self, header: &Header, written: Vec<Arc<Chunk>>) {
        // A snapshot shares its volume's id, never its journal.
        if header.flags.readonly {
            for c in written {
                self.cache_chunk(c);
            }
            return;
        }
        {
            let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
            d.retain(|r, _| r.owner != header.volume_id);
        }
        for c in written {
            self.cache_chunk(c);
        }
        let had = self
            .journals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&header.volume_id);
        if had {
            let name = journal_name(header.volume_id);
            match self.maps.delete(&name) {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                // Harmless: its records name an older commit sequence.
                Err(e) => log::warn!("{name}: {e}"),
            }
        }
        if let Some(journals) = &self.write_back {
            let name = journal_name(header.volume_id);
            match journals.delete(&name) {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                // Harmless, as above.
                Err(e) => log::warn!("{name} (write-back journal): {e}"),
            }
        }
    }

    /// Commits `updates` to the held volume by a journal append (see the
    /// module docs); checkpoints past [`CHECKPOINT_BYTES`].
    pub(crate) fn journal_updates(
        &self,
        name: &str,
        st: &mut VolState,
        h: Header,
        updates: Updates,
    ) -> Result<(), Error> {
        let base_seq = h.commit_seq;
        let mut nh = h;
        let mut chunks = Vec::new();
        let mut replaced = Vec::new();
        let mut entries = Vec::new();
        for (slot, (chunk, ups)) in updates {
            if ups.is_empty() {
                continue;
            }
            replaced.push(nh.chunks[slot]);
            entries.extend(ups.iter().cloned());
            let (c, next) = set_entries(&nh, &chunk, ups).map_err(|e| map_err(name, e))?;
            chunks.push(c);
            nh = next;
        }
        if chunks.is_empty() {
            return Ok(());
        }
        nh.commit_seq = base_seq;
        let record = JournalRecord {
            token: st.token,
            base_seq,
            epoch: nh.epoch,
            entries,
        }
        .encode()
        .map_err(|e| map_err(name, e))?;
        match &self.write_back {
            Some(journals) => self.append_write_back(journals, name, st, nh.volume_id, &record)?,
            // No lock check first (a round trip): the append is fenced,
            // and breaking the lock raised the map store's fence.
            None => self.append_to_journal(name, st, nh.volume_id, &record)?,
        }
        // The in-memory chunks these replace are named by nothing now
        // (readers of a held volume's chunks hold its state's lock): only
        // the latest of each slot is kept until the checkpoint.
        {
            let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
            for r in replaced {
                d.remove(&r);
            }
        }
        self.pin(chunks);
        st.header = Some(nh);
        if st.journal_len > CHECKPOINT_BYTES || st.volatile_len > CHECKPOINT_BYTES {
            self.checkpoint(name, st)?;
        }
        Ok(())
    }

    /// Appends `record` (whole records) to the held volume's journal in
    /// the map store, durably and fenced with the lock's token: once the
    /// lock is broken, the map store refuses the append however late it
    /// arrives. The first append of an open replaces the object.
    fn append_to_journal(
        &self,
        name: &str,
        st: &mut VolState,
        volume_id: u64,
        record: &[u8],
    ) -> Result<(), Error> {
        let jname = journal_name(volume_id);
        self.journals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(volume_id);
        let fence = Fence {
            lock: name,
            token: st.token,
        };
        let appended = if st.journal_len == 0 {
            self.maps.write_full_fenced(&jname, record, true, fence)
        } else {
            self.maps
                .write_fenced(&jname, st.journal_len, record, true, fence)
        };
        if let Err(e) = appended {
            let e = store_err(&jname, e);
            if e.code == ErrorCode::Fenced {
                *st = VolState::default();
            }
            return Err(e);
        }
        st.journal_len += record.len() as u64;
        Ok(())
    }

    /// Appends `record` to the held volume's write-back journal (not
    /// durable; see [`with_write_back`](Mapper::with_write_back)). The
    /// first append since the last checkpoint replaces the object: what
    /// an earlier crashed run left there was replayed, or does not apply.
    fn append_write_back(
        &self,
        journals: &Arc<dyn ObjectStore>,
        name: &str,
        st: &mut VolState,
        volume_id: u64,
        record: &[u8],
    ) -> Result<(), Error> {
        let jname = journal_name(volume_id);
        let r = if st.volatile_len == 0 {
            journals.write_full(&jname, record, false)
        } else {
            journals.write(&jname, st.volatile_len, record, false)
        };
        r.map_err(|e| store_err(&format!("{name} (write-back journal)"), e))?;
        st.volatile_len += record.len() as u64;
        Ok(())
    }

    /// The composer's FLUSH, after it synced the data store: in
    /// write-back mode, the records in the write-back journals become
    /// durable (appended to each volume's journal in the map store). Only
    /// the records there when this starts move, after one more sync of
    /// the data store, so that no record is durable before its data: a
    /// commit arriving meanwhile stays for the next FLUSH.
    pub fn sync_maps(&self) -> Result<(), Error> {
        if self.write_back.is_none() {
            return self.maps.sync().map_err(|e| store_err("map store", e));
        }
        let states: Vec<(String, Arc<std::sync::Mutex<VolState>>)> = self
            .volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        let mut marks = Vec::new();
        for (name, s) in states {
            let st = Self::lock_state(&s);
            if st.opens > 0 && st.volatile_len > 0 {
                marks.push((name, s.clone(), st.volatile_len, st.volatile_gen));
            }
        }
        if marks.is_empty() {
            return Ok(());
        }
        self.data.sync().map_err(|e| store_err("data store", e))?;
        for (name, s, len, gen) in marks {
            let mut st = Self::lock_state(&s);
            // A checkpoint since then stored those records durably.
            if st.opens > 0 && st.volatile_gen == gen {
                self.move_write_back(&name, &mut st, len)?;
            }
        }
        Ok(())
    }

    /// Moves the first `len` bytes of the held volume's write-back
    /// journal to its journal in the map store. A crash between the two
    /// writes leaves those records in both: replay applies the map
    /// store's, then the write-back journal's from its start, which ends
    /// in the same entries (each record sets entries, in order).
    fn move_write_back(&self, name: &str, st: &mut VolState, len: u64) -> Result<(), Error> {
        let journals = self.write_back.as_ref().expect("write-back mode");
        let h = st.header.clone().expect("a held volume is cached");
        let jname = journal_name(h.volume_id);
        let what = format!("{name} (write-back journal)");
        let mut bytes = vec![0; st.volatile_len as usize];
        journals
            .read(&jname, 0, &mut bytes)
            .map_err(|e| store_err(&what, e))?;
        let (moved, rest) = bytes.split_at(len as usize);
        self.append_to_journal(name, st, h.volume_id, moved)?;
        let kept = if rest.is_empty() {
            match journals.delete(&jname) {
                Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        } else {
            // Atomic: the rest, or all of it as before.
            journals.write_full(&jname, rest, false)
        };
        kept.map_err(|e| store_err(&what, e))?;
        st.volatile_len = rest.len() as u64;
        if st.journal_len > CHECKPOINT_BYTES {
            self.checkpoint(name, st)?;
        }
        Ok(())
    }

    /// Writes the held volume's dirty chunks and its header (the next
    /// commit sequence), which makes its journal obsolete.
    pub(crate) fn checkpoint(&self, name: &str, st: &mut VolState) -> Result<(), Error> {
        let Some(mut h) = st.header.clone().filter(|_| st.opens > 0) else {
            return Ok(());
        };
        h.commit_seq = h
            .commit_seq
            .checked_add(1)
            .ok_or_else(|| err(ErrorCode::NoSpace, format!("{name}: commit sequence")))?;
        let held = Held {
            name: name.to_owned(),
            token: st.token,
            took: false,
        };
        // The checkpoint names what the journal named: no orphan appears.
        let orphan_free = st.orphan_free;
        self.commit(name, Some(st), Some(&held), Vec::new(), &h)?;
        st.orphan_free = orphan_free;
        Ok(())
    }

    /// `header` with the records of its journal that apply on it (see
    /// the module docs), and the chunks they make (which exist only in
    /// the returned map); `None` if it has no journal object.
    #[allow(clippy::type_complexity)]
    pub(crate) fn replay_journal(
        &self,
        name: &str,
        header: Header,
    ) -> Result<(Header, Option<HashMap<ChunkRef, Arc<Chunk>>>), Error> {
        // Journals are a volume's: its snapshots share its id.
        if header.flags.readonly {
            return Ok((header, None));
        }
        let jname = journal_name(header.volume_id);
        let durable = self.read_whole(&jname)?;
        // This host's write-back journal continues the durable one.
        let write_back = match &self.write_back {
            Some(journals) => read_object(&**journals, &jname).map_err(|e| {
                err(
                    ErrorCode::Io,
                    format!("{name}: reading the write-back journal: {e}"),
                )
            })?,
            None => None,
        };
        if durable.is_none() && write_back.is_none() {
            return Ok((header, None));
        }
        let mut records = Vec::new();
        for bytes in [durable, write_back].into_iter().flatten() {
            records.extend(decode_journal(&bytes).0);
        }
        let base_seq = header.commit_seq;
        let mut made: HashMap<ChunkRef, Arc<Chunk>> = HashMap::new();
        let token = records.first().map(|r| r.token);
        let mut h = header;
        for r in records {
            if r.base_seq != base_seq || r.epoch != h.epoch || Some(r.token) != token {
                break;
            }
            let vol = Vol {
                version: 3,
                header: h.clone(),
                legacy_chunks: None,
                overlay: Some(made.clone()),
            };
            let mut by_slot: BTreeMap<usize, Vec<(u64, Entry)>> = BTreeMap::new();
            for (index, e) in r.entries {
                let (slot, _) = h.chunk_for(index).map_err(|e| map_err(name, e))?;
                by_slot.entry(slot).or_default().push((index, e));
            }
            for (slot, ups) in by_slot {
                let chunk = self.chunk(&vol, h.chunks[slot])?;
                let (c, next) = set_entries(&h, &chunk, ups).map_err(|e| map_err(name, e))?;
                made.insert(c.id(), Arc::new(c));
                h = next;
            }
        }
        h.commit_seq = base_seq;
        made.retain(|r, _| h.chunks.contains(r));
        Ok((h, Some(made)))
    }

    /// Makes a journal of `vol` (just loaded under its lock) the stored
    /// map: its chunks and the header, the next commit sequence; the
    /// journal is deleted. Nothing to do without one.
    pub(crate) fn settle_journal(
        &self,
        name: &str,
        st: Option<&mut VolState>,
        held: &Held,
        vol: &Vol,
    ) -> Result<(), Error> {
        let Some(overlay) = &vol.overlay else {
            return Ok(());
        };
        // Replayed records of a write-back journal may name data not yet
        // durable (a crashed mapper's): it is, before they are stored.
        if self.write_back.is_some() {
            self.data.sync().map_err(|e| store_err(name, e))?;
        }
        let mut h = vol.header.clone();
        h.commit_seq = h
            .commit_seq
            .checked_add(1)
            .ok_or_else(|| err(ErrorCode::NoSpace, format!("{name}: commit sequence")))?;
        self.journals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(h.volume_id);
        let chunks = overlay.values().map(|c| (**c).clone()).collect();
        self.commit(name, st, Some(held), chunks, &h)
    }
}
