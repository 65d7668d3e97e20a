//! Hashing a snapshot: every entry becomes its content object (or zero),
//! read and stored on worker threads, then one commit. Kept with its
//! garbage-collection pin: a hash may start referring to content objects
//! a running collection found unreferenced, so it announces itself
//! (`archip_gcpin_{owner}`) and waits, bounded, while a collection runs
//! (the `archipelago-gc` crate docs argue why that is enough). After its
//! commit, the hash moves the other maps naming the replaced objects
//! onto the content objects (`rebase.rs`), under the same pin.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use archipelago_mapfmt::gcmeta::{self, RebaseMove, RebaseRecord};
use archipelago_mapfmt::{Chunk, ChunkRef, Entry, ENTRIES_PER_CHUNK};
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::ObjectStore;

use crate::io::{entry_extents, read_extent};
use crate::load::Vol;
use crate::rebase::Moves;
use crate::{check_name, err, map_err, random_id, store_err, Mapper};

/// What [`Mapper::hash`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
    /// Other maps moved onto the content objects (the origin, clones,
    /// their snapshots: see the `rebase` module docs).
    pub maps_moved: u64,
    /// Maps still naming objects the hash replaced when it stopped
    /// waiting (held elsewhere and not moved by their holder in time),
    /// sorted. Their holders still move them; `hash` again checks.
    pub maps_left: Vec<String>,
}

/// `(job, digest)` pairs of one hash worker (`None`: all zeros).
type JobDigests = Vec<(usize, Option<[u8; 32]>)>;

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

impl Mapper {
    /// Replaces every entry of the snapshot `snap` by its content object
    /// (all-zero objects by zero entries). Objects are read and stored on
    /// the hash threads ([`with_hash_threads`](Self::with_hash_threads));
    /// the chunks and then the header are committed as for any change.
    /// The old data objects are left for garbage collection.
    ///
    /// The new chunks are owned by a fresh random id, not the snapshot's:
    /// a snapshot shares its id and serials with its volume, which keeps
    /// writing chunks.
    ///
    /// Then every other live map naming a replaced object is moved onto
    /// the content objects (the `rebase` module docs): at once if it is
    /// closed or open on this mapper, by its holder if another holds it,
    /// waited for at most [`with_rebase_wait`](Self::with_rebase_wait).
    /// A snapshot already hashed is not read again: the hash resumes
    /// moving the maps its earlier hashes left.
    pub fn hash(&self, snap: &str) -> Result<HashReport, Error> {
        self.hash_wait(snap, None)
    }

    /// [`hash`](Self::hash), waiting at most `wait` (`None`: this
    /// mapper's [`with_rebase_wait`](Self::with_rebase_wait)) for the
    /// holders of open maps to move them.
    pub fn hash_wait(&self, snap: &str, wait: Option<Duration>) -> Result<HashReport, Error> {
        let wait = wait.unwrap_or(self.rebase_wait);
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
                overlay: None,
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
                    if matches!(
                        e,
                        Entry::Owned { .. } | Entry::Legacy(_) | Entry::Partial { .. }
                    ) {
                        jobs.push((loaded.len(), at));
                    }
                }
                loaded.push((slot, chunk));
            }
            // Read and store them on the workers: a digest each, or `None`
            // for an all-zero object.
            let digests = self.hash_objects(snap, &loaded, &jobs, os)?;
            let record = RebaseRecord {
                volume_id: h.volume_id,
                epoch: h.epoch,
                snapshot: snap.to_owned(),
                moves: jobs
                    .iter()
                    .zip(&digests)
                    .map(|(&(c, at), d)| {
                        let (slot, chunk) = &loaded[c];
                        let index = (slot * ENTRIES_PER_CHUNK + at) as u64;
                        RebaseMove {
                            index,
                            old: chunk.entries()[at].object_name(index).expect("nonzero"),
                            digest: *d,
                        }
                    })
                    .collect(),
            };
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
                        // A partial entry: the content of its merged bytes.
                        Entry::Owned { .. } | Entry::Legacy(_) | Entry::Partial { .. } => {
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
            // The record first: a crash after the snapshot's commit must
            // not lose what the other maps are to be moved by.
            let ours = gcmeta::rebase_name(owner);
            if !record.moves.is_empty() {
                self.maps
                    .write_full(&ours, &record.encode(), true)
                    .map_err(|e| store_err(&ours, e))?;
                self.edit_rebase_list(std::slice::from_ref(&ours), &[])?;
            }
            self.commit(snap, None, Some(held), chunks, &h)?;
            // Every record of this snapshot (earlier hashes interrupted or
            // left maps to holders) is resumed. The content objects of
            // earlier ones are checked after our pin, as a holder does.
            let mut names = Vec::new();
            let mut older = Vec::new();
            for (n, r) in self.rebase_records()? {
                if r.volume_id != h.volume_id || r.epoch != h.epoch {
                    continue;
                }
                if n != ours {
                    older.push(r);
                }
                names.push(n);
            }
            let mut moves = Moves::from_records([&record]);
            if !older.is_empty() {
                moves.extend(self.existing_moves(snap, &Moves::from_records(&older))?);
            }
            if !moves.is_empty() {
                let (moved, left) = self.rebase_all(snap, &names, &moves, wait)?;
                report.maps_moved = moved.len() as u64;
                if left.is_empty() {
                    self.edit_rebase_list(&[], &names)?;
                    for n in &names {
                        if let Err(e) = self.maps.delete(n) {
                            log::warn!("{n}: {e}");
                        }
                    }
                }
                report.maps_left = left;
                report.maps_left.sort();
            }
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
        let os = buf.len() as u64;
        let mut extents = Vec::new();
        entry_extents(e, index, 0, os, os, &mut extents);
        let mut pos = 0;
        for x in &extents {
            let end = pos + x.len as usize;
            read_extent(&*self.data, x, &mut buf[pos..end])?;
            pos = end;
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
}

/// A hash pin (`archip_gcpin_{owner}`), deleted when dropped: while it
/// exists a collection keeps every content object and every chunk of an
/// unknown owner (the `archipelago-gc` crate docs argue why).
pub(crate) struct HashPin<'a> {
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

impl Mapper {
    /// The gc state (the generation is odd while a collection runs).
    fn gc_state(&self) -> Result<gcmeta::GcState, Error> {
        let name = gcmeta::GC_STATE_OBJECT;
        match self.read_whole(name)? {
            None => Ok(gcmeta::GcState::default()),
            Some(b) => gcmeta::decode_state(&b)
                .ok_or_else(|| err(ErrorCode::Io, format!("{name}: not a gc generation"))),
        }
    }

    /// Writes the pin of a hash of `snap` writing chunks of `owner`, then
    /// reads the gc generation; while it is odd (a collection that may
    /// have listed the pins before ours was written is running), waits
    /// until that run has finished ([`gcmeta::finished_since`]), at most
    /// `gc_wait`. Not merely a changed generation: a collector started
    /// after `gc --break-lock` moves it from one odd value to the next
    /// (forced) while the fenced one may still be deleting.
    pub(crate) fn pin_hash(&self, snap: &str, owner: u64) -> Result<HashPin<'_>, Error> {
        let name = gcmeta::pin_name(owner);
        self.maps
            .write_full(&name, snap.as_bytes(), true)
            .map_err(|e| store_err(&name, e))?;
        let pin = HashPin {
            maps: &*self.maps,
            name,
        };
        let first = self.gc_state()?.generation;
        if gcmeta::collecting(first) {
            let start = std::time::Instant::now();
            log::info!("{snap}: hash waits for garbage collection {first} to finish");
            while !gcmeta::finished_since(first, self.gc_state()?) {
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
    fn content_names_are_digests() {
        let d = [0x5au8; 32];
        let name = archipelago_protocol::names::content_name(&d);
        assert_eq!(hex_digest(&name), Some(d));
        assert_eq!(hex_digest("xyz"), None);
    }
}
