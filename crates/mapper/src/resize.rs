//! Resize: growing only changes the header; shrinking also changes data,
//! so it lives apart from the other lifecycle operations. Before a shrink
//! commits, the cut bytes of the new last object are zeroed and the
//! objects this volume owns past the new end are deleted: their names
//! would come back should the volume grow again, with stale bytes where
//! zeros are due.

use std::sync::Arc;

use archipelago_mapfmt::{
    granule_mask, owned_object_name, resize, set_entries, Chunk, Entry, Header, ENTRIES_PER_CHUNK,
};
use archipelago_protocol::sizes::check_volume_size;
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::StoreError;

use crate::io::own_granules;
use crate::load::Vol;
use crate::{check_name, err, map_err, store_err, Mapper};

impl Mapper {
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
                overlay: None,
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
            // Only a grow makes the header larger, and a grow has changed
            // no data yet.
            self.check_header_fits(&nh)?;
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
                // Private: owned, or partial, at the current epoch.
                if own_granules(h, &entry) != 0 {
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
        // Shared, or partly the volume's own: the own object takes every
        // granule first.
        let held = own_granules(h, &entry);
        self.fill_granules(&entry, index, &own, granule_mask(os) & !held, os, None)?;
        self.data
            .write(&own, off, &zeros, true)
            .map_err(|e| store_err(&own, e))?;
        let (c, nh) =
            set_entries(h, &chunk, vec![(index, h.own_entry())]).map_err(|e| map_err(name, e))?;
        Ok((nh, vec![c]))
    }
}
