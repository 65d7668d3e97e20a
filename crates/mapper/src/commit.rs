//! Commits: the one way a map changes (chunks first, then the header with
//! one atomic `write_full`), and the pending writes of the composer's
//! contract (entries committed once their data landed, many requests
//! sharing one commit).
//!
//! Kept in one place because the commit is where fencing bites: a header
//! is written only after the lock was found still ours, and a commit
//! refused as fenced forgets the volume's state.

use std::collections::BTreeMap;
use std::sync::Arc;

use archipelago_mapfmt::{granule_mask, set_entries, Chunk, Entry, Header};
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::Fence;

use crate::io::own_granules;
use crate::load::Vol;
use crate::locks::{Held, VolState};
use crate::{check_name, err, map_err, store_err, Mapper};

/// Entry changes by chunk slot: the chunk now referenced, and the
/// `(index, entry)` updates to apply to it.
pub(crate) type Updates = BTreeMap<usize, (Arc<Chunk>, Vec<(u64, Entry)>)>;

impl Mapper {
    /// Writes `chunks`, then `header` under `name`: the commit point. With
    /// `held`, checks first that the lock is still ours (fencing).
    pub(crate) fn commit(
        &self,
        name: &str,
        mut st: Option<&mut VolState>,
        held: Option<&Held>,
        chunks: Vec<Chunk>,
        header: &Header,
    ) -> Result<(), Error> {
        if let Some(st) = st.as_deref_mut() {
            // A header replaced by anything but a checkpoint of what this
            // open journaled (a resize, a rollback, a flatten step, a
            // rebase, a snapshot) may stop naming objects of the epoch.
            st.orphan_free = false;
        }
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
        // Under a held lock, chunks and the header are written fenced with
        // its token: once the lock is broken, the map store refuses them,
        // however late they arrive. Without it, a chunk write of a fenced
        // host held in flight could land over the new owner's chunk of the
        // same serial (both start from the same committed `next_serial`).
        let fence = held.map(|h| Fence {
            lock: name,
            token: h.token,
        });
        // Records of the write-back journal name data that may not be
        // durable yet; the chunks written here hold them.
        if self.write_back.is_some() && st.as_deref().is_some_and(|st| st.volatile_len > 0) {
            self.data.sync().map_err(|e| store_err(name, e))?;
        }
        let write = |object: &str, bytes: &[u8]| match fence {
            Some(f) => self.maps.write_full_fenced(object, bytes, true, f),
            None => self.maps.write_full(object, bytes, true),
        };
        // Chunks the header names that exist only in memory (journaled
        // writes, a replayed journal) are written with it: a checkpoint.
        let dirty: Vec<Arc<Chunk>> = self
            .dirty_named(header)
            .into_iter()
            .filter(|d| !chunks.iter().any(|c| c.id() == d.id()))
            .collect();
        for c in dirty.iter().map(|c| &**c).chain(&chunks) {
            let cname = c.id().object_name().expect("a written chunk is nonzero");
            let bytes = c.encode().map_err(|e| map_err(name, e))?;
            write(&cname, &bytes).map_err(|e| store_err(&cname, e))?;
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
        write(name, &bytes).map_err(|e| store_err(name, e))?;
        let mut written = dirty;
        written.extend(chunks.into_iter().map(Arc::new));
        self.checkpointed(header, written);
        if let Some(st) = st {
            st.journal_len = 0;
            st.volatile_len = 0;
            st.volatile_gen += 1;
            if st.opens > 0 {
                st.header = Some(header.clone());
            }
        }
        Ok(())
    }

    /// Sets entries chunk by chunk, then commits all chunks and one header.
    pub(crate) fn apply_updates(
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
    /// [`map_write`](Self::map_write), once their data writes succeeded
    /// ([`commit_batch`](Self::commit_batch) of one request).
    pub fn commit_writes(&self, name: &str, indexes: &[u64]) -> Result<(), Error> {
        self.commit_batch(name, &[indexes])
            .pop()
            .expect("one result per request")
    }

    /// [`commit_writes`](Self::commit_writes) of several requests with one
    /// commit (group commit): a commit is one journal append, which costs
    /// the same for one index as for hundreds, so the composer's
    /// concurrent commits of a volume share it. Each request is checked
    /// on its own (one naming an index that is not pending fails alone);
    /// the others succeed or fail together with the commit. Returns one
    /// result per request, in order.
    ///
    /// The commit is durable when this returns, unless the mapper is in
    /// write-back mode ([`with_write_back`](Self::with_write_back)): then
    /// it is in the write-back journal, which survives a crash of the
    /// mapper but not of the host, until the composer's next FLUSH
    /// ([`sync_maps`](Self::sync_maps)) syncs the data and then makes it
    /// durable. Either way no record is durable before the data it names.
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
        let mut results: Vec<Result<(), Error>> = Vec::with_capacity(requests.len());
        for r in requests {
            let mut result = Ok(());
            for &index in r.iter().filter(|i| !st.pending.contains_key(i)) {
                // A write mapped before an earlier commit of its object
                // wrote into the object that commit made the volume's own:
                // its data is in place, there is nothing left to commit.
                match self.names_own_object(&st, index) {
                    Ok(true) => {}
                    Ok(false) => {
                        result = Err(err(
                            ErrorCode::InvalidArgument,
                            format!("{name}: object {index} has no pending write"),
                        ));
                        break;
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            results.push(result);
        }
        let indexes: Vec<u64> = requests
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .flat_map(|(r, _)| r.iter().copied())
            .filter(|i| st.pending.contains_key(i))
            .collect();
        if let Err(e) = self.commit_pending(name, &mut st, &indexes) {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone());
            }
        }
        results
    }

    /// Whether object `index` of the held volume already names the
    /// volume's own object at its current epoch (owned, or partial: the
    /// commit that made it so granted every granule its writes touched).
    fn names_own_object(&self, st: &VolState, index: u64) -> Result<bool, Error> {
        let h = st.header.as_ref().expect("a held volume is cached");
        let Ok((slot, at)) = h.chunk_for(index) else {
            return Ok(false);
        };
        let vol = Vol {
            version: 3,
            header: h.clone(),
            legacy_chunks: None,
            overlay: None,
        };
        let chunk = self.chunk(&vol, h.chunks[slot])?;
        Ok(chunk.get(at).is_some_and(|e| own_granules(h, e) != 0))
    }

    /// Commits own entries for `indexes` (all pending) and forgets them:
    /// owned, or partial over what the entry read as if the write was
    /// granted only some granules.
    fn commit_pending(&self, name: &str, st: &mut VolState, indexes: &[u64]) -> Result<(), Error> {
        if indexes.is_empty() {
            return Ok(());
        }
        let h = st.header.clone().expect("a held volume is cached");
        let vol = Vol {
            version: 3,
            header: h.clone(),
            legacy_chunks: None,
            overlay: None,
        };
        let mut updates: Updates = BTreeMap::new();
        let all = granule_mask(h.object_size());
        for &index in indexes {
            let (slot, offset) = h.chunk_for(index).map_err(|e| map_err(name, e))?;
            let (chunk, ups) = match updates.entry(slot) {
                std::collections::btree_map::Entry::Occupied(o) => {
                    let (c, u) = o.into_mut();
                    (&*c, u)
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    let (c, u) = v.insert((self.chunk(&vol, h.chunks[slot])?, Vec::new()));
                    (&*c, u)
                }
            };
            let current = chunk.get(offset).cloned().unwrap_or(Entry::Zero);
            // Every pending index has its grant (a first write: all).
            let granted = st
                .pending
                .get(&index)
                .copied()
                .unwrap_or_else(|| own_granules(&h, &current));
            let new = Entry::partial(h.volume_id, h.epoch, granted, current, all);
            if !ups.iter().any(|(i, _)| *i == index) {
                ups.push((index, new));
            }
        }
        self.journal_updates(name, st, h, updates)?;
        for &i in indexes {
            st.drop_pending(i);
        }
        Ok(())
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
        let mut gone: Vec<u64> = st.pending.keys().copied().collect();
        st.clear_pending();
        gone.sort_unstable();
        if !gone.is_empty() {
            log::warn!("{name}: writes to objects {gone:?} were abandoned; forgotten");
        }
        gone
    }
}
