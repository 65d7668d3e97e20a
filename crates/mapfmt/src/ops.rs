//! The map side of volume operations, as pure functions: each takes the
//! current structures and returns what to write, chunks first, then the
//! header (the commit point). Nothing here does I/O.

use crate::chunk::{chunk_mismatch, Chunk, ChunkRef, ENTRIES_PER_CHUNK};
use crate::entry::Entry;
use crate::header::{check_volume_name, chunk_count, Header, HeaderFlags, Parent, INITIAL_EPOCH};
use crate::legacy::nr_objects;
use crate::MapError;
use archipelago_protocol::sizes;

pub(crate) fn bump(v: u64, what: &'static str) -> Result<u64, MapError> {
    v.checked_add(1).ok_or(MapError::Exhausted { what })
}

fn check_live(h: &Header) -> Result<(), MapError> {
    if h.flags.removed {
        return Err(MapError::Removed);
    }
    if h.flags.readonly {
        return Err(MapError::ReadOnly);
    }
    Ok(())
}

/// Snapshots `volume` as `snap_name`: returns `(snapshot, volume going
/// on)`.
///
/// Both share every chunk ref; no entry is rewritten.
///
/// - The snapshot is the volume frozen: same id, same epoch, READONLY,
///   its own commit sequence starting at 1, `first_private_serial =
///   next_serial` (it owns nothing privately), and the volume's parent.
/// - The volume moves to epoch + 1 (so every entry it owned becomes
///   copy-on-write), sets `first_private_serial = next_serial` (so every
///   chunk it has is shared), bumps its commit sequence, and records the
///   snapshot as its parent: `(its id, the old epoch, snap_name)`.
///
/// Write order: the volume's header first (it freezes the old epoch: from
/// then on nothing of it is written in place), then the snapshot's. A
/// crash in between leaves a volume whose parent names a snapshot that
/// does not exist, and no snapshot: nothing is corrupted.
pub fn snapshot(volume: &Header, snap_name: &str) -> Result<(Header, Header), MapError> {
    check_live(volume)?;
    check_volume_name("snapshot name", snap_name)?;
    let snap = Header {
        flags: HeaderFlags {
            readonly: true,
            ..volume.flags
        },
        commit_seq: 1,
        first_private_serial: volume.next_serial,
        ..volume.clone()
    };
    let going_on = Header {
        epoch: bump(volume.epoch, "epoch")?,
        commit_seq: bump(volume.commit_seq, "commit sequence")?,
        first_private_serial: volume.next_serial,
        parent: Some(Parent {
            volume_id: volume.volume_id,
            epoch: volume.epoch,
            name: snap_name.to_owned(),
        }),
        ..volume.clone()
    };
    snap.validate()?;
    going_on.validate()?;
    Ok((snap, going_on))
}

/// A new volume `new_id` cloned from the snapshot `source` (named
/// `source_name`, recorded as the clone's parent), `new_size` bytes (at
/// least the source's; the extra chunk slots are zero).
///
/// The clone shares every chunk of the source and writes none: a single
/// header write creates it. It starts at epoch [`INITIAL_EPOCH`] with
/// serials from 1, and keeps HASHED if the source had it.
///
/// `new_id` must be nonzero and differ from the source's id, its
/// parent's, and every chunk owner in its table (ids are random u64s;
/// this catches the cheap cases of a collision, which would make an
/// ancestor's entries look writable).
pub fn clone_from(
    source: &Header,
    source_name: &str,
    new_id: u64,
    new_size: u64,
) -> Result<Header, MapError> {
    if source.flags.removed {
        return Err(MapError::Removed);
    }
    if !source.flags.readonly {
        return Err(MapError::NotASnapshot);
    }
    check_volume_name("clone source name", source_name)?;
    let ancestor = |id: u64| {
        id == source.volume_id
            || source.parent.as_ref().is_some_and(|p| p.volume_id == id)
            || source.chunks.iter().any(|r| r.owner == id)
    };
    if new_id == 0 || ancestor(new_id) {
        return Err(MapError::BadVolumeId {
            what: "clone id",
            id: new_id,
        });
    }
    sizes::check_volume_size(new_size)?;
    if new_size < source.size {
        return Err(MapError::CloneShrinks {
            size: new_size,
            source_size: source.size,
        });
    }
    let mut chunks = source.chunks.clone();
    chunks.resize(
        chunk_count(new_size, source.object_size_log2) as usize,
        ChunkRef::ZERO,
    );
    let h = Header {
        size: new_size,
        object_size_log2: source.object_size_log2,
        flags: HeaderFlags {
            hashed: source.flags.hashed,
            ..HeaderFlags::default()
        },
        volume_id: new_id,
        epoch: INITIAL_EPOCH,
        commit_seq: 1,
        next_serial: 1,
        first_private_serial: 1,
        parent: Some(Parent {
            volume_id: source.volume_id,
            epoch: source.epoch,
            name: source_name.to_owned(),
        }),
        chunks,
    };
    h.validate()?;
    Ok(h)
}

/// Resizes `volume` to `new_size`: returns the header to commit and, when
/// shrinking cuts a chunk that stores entries past the new end, the
/// trimmed copy of that chunk to write first (under a fresh serial).
///
/// Invariant kept: entries past the last object are zero, so a later
/// grow exposes zeros, never old data. Growing appends zero chunk refs.
/// Shrinking drops whole chunk refs (private ones become garbage) and
/// needs `tail`, the chunk in the new last slot, whenever that slot is
/// cut mid-way and not the zero chunk ([`MapError::TailChunkRequired`]).
pub fn resize(
    volume: &Header,
    new_size: u64,
    tail: Option<&Chunk>,
) -> Result<(Header, Option<Chunk>), MapError> {
    check_live(volume)?;
    sizes::check_volume_size(new_size)?;
    let mut h = volume.clone();
    h.size = new_size;
    h.commit_seq = bump(volume.commit_seq, "commit sequence")?;
    let new_objects = nr_objects(new_size, volume.object_size());
    let count = chunk_count(new_size, volume.object_size_log2) as usize;
    let mut new_chunk = None;
    if new_objects < volume.nr_objects() {
        h.chunks.truncate(count);
        let cut = (new_objects % ENTRIES_PER_CHUNK as u64) as usize;
        let slot = count - 1;
        let r = h.chunks[slot];
        if cut != 0 && !r.is_zero() {
            let tail = tail.ok_or(MapError::TailChunkRequired { slot: slot as u64 })?;
            if tail.id() != r {
                return Err(chunk_mismatch(r, tail.id()));
            }
            if tail.entries().len() > cut {
                let id = ChunkRef {
                    owner: h.volume_id,
                    serial: h.next_serial,
                };
                h.next_serial = bump(h.next_serial, "chunk serial")?;
                let mut c = tail.clone().with_id(id);
                c.truncate(cut);
                h.chunks[slot] = id;
                new_chunk = Some(c);
            }
        }
    } else {
        h.chunks.resize(count, ChunkRef::ZERO);
    }
    h.validate()?;
    Ok((h, new_chunk))
}

/// Sets the entry of object `index` to `entry`: returns the new chunk to
/// write (under a fresh serial of this volume) and the header to commit
/// after it.
///
/// `chunk` must be the chunk the header refers to for that index
/// ([`Chunk::empty`]`(ChunkRef::ZERO)` for a zero slot). The new chunk
/// always gets a fresh serial, whether the old one was shared (a
/// snapshot or a clone still needs it) or private (it becomes garbage,
/// see [`Header::is_chunk_private`]): the header write stays the only
/// commit point. Writing anything but a zero or content entry clears
/// HASHED.
pub fn set_entry(
    volume: &Header,
    chunk: &Chunk,
    index: u64,
    entry: Entry,
) -> Result<(Chunk, Header), MapError> {
    set_entries(volume, chunk, vec![(index, entry)])
}

/// [`set_entry`] for several objects of the same chunk at once (one chunk
/// write and one header write for all of them).
pub fn set_entries(
    volume: &Header,
    chunk: &Chunk,
    updates: Vec<(u64, Entry)>,
) -> Result<(Chunk, Header), MapError> {
    check_live(volume)?;
    let mut slot = None;
    let mut new = chunk.clone();
    let mut hashed = volume.flags.hashed;
    for (index, entry) in updates {
        let (s, off) = volume.chunk_for(index)?;
        match slot {
            None => {
                let r = volume.chunks[s];
                if r != chunk.id() {
                    return Err(chunk_mismatch(r, chunk.id()));
                }
                slot = Some(s);
            }
            Some(first) if first != s => {
                return Err(MapError::EntriesSpanChunks {
                    index,
                    slot: s as u64,
                    expected: first as u64,
                });
            }
            Some(_) => {}
        }
        hashed &= matches!(entry, Entry::Zero | Entry::Content(_));
        new.set(off, entry)?;
    }
    let Some(slot) = slot else {
        return Ok((chunk.clone(), volume.clone()));
    };
    let mut h = volume.clone();
    let id = ChunkRef {
        owner: h.volume_id,
        serial: h.next_serial,
    };
    h.next_serial = bump(h.next_serial, "chunk serial")?;
    h.commit_seq = bump(h.commit_seq, "commit sequence")?;
    h.flags.hashed = hashed;
    h.chunks[slot] = id;
    Ok((new.with_id(id), h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::DEFAULT_OBJECT_SIZE_LOG2;

    const GIB: u64 = 1 << 30;

    fn vol() -> Header {
        Header::new(0x11, 40 * GIB, DEFAULT_OBJECT_SIZE_LOG2).unwrap()
    }

    #[test]
    fn a_snapshot_moves_the_volume_to_a_new_epoch_without_touching_entries() {
        let v = vol();
        let zero = Chunk::empty(ChunkRef::ZERO);
        let (c, v) = set_entry(&v, &zero, 5, v.own_entry()).unwrap();
        assert!(v.is_writable(&Entry::Owned {
            owner: 0x11,
            epoch: 1
        }));
        assert!(v.is_chunk_private(&c.id()));

        let (s, v2) = snapshot(&v, "snap").unwrap();
        assert_eq!(s.chunks, v.chunks);
        assert_eq!(v2.chunks, v.chunks);
        assert!(s.flags.readonly && !v2.flags.readonly);
        assert_eq!((s.volume_id, s.epoch, s.commit_seq), (0x11, 1, 1));
        assert_eq!(
            (v2.volume_id, v2.epoch, v2.commit_seq),
            (0x11, 2, v.commit_seq + 1)
        );
        assert_eq!(s.parent, None);
        assert_eq!(
            v2.parent,
            Some(Parent {
                volume_id: 0x11,
                epoch: 1,
                name: "snap".into()
            })
        );
        let old = c.get(5).unwrap();
        assert!(!v2.is_writable(old), "older than the snapshot");
        assert!(!s.is_writable(old), "a snapshot writes nothing");
        assert!(!v2.is_chunk_private(&c.id()), "shared with the snapshot");
        assert!(v2.is_writable(&v2.own_entry()));
        assert!(!v2.is_writable(&Entry::Content([1; 32])));
        assert!(!v2.is_writable(&Entry::Legacy("x".into())));
        assert!(!v2.is_writable(&Entry::Zero));

        assert_eq!(snapshot(&s, "again"), Err(MapError::ReadOnly));
        assert!(matches!(
            snapshot(&v2, "bad/name"),
            Err(MapError::BadName { .. })
        ));
        let mut last = v2.clone();
        last.epoch = u64::MAX;
        assert_eq!(
            snapshot(&last, "s"),
            Err(MapError::Exhausted { what: "epoch" })
        );
        let mut removed = v2;
        removed.flags.removed = true;
        assert_eq!(snapshot(&removed, "s"), Err(MapError::Removed));
    }

    #[test]
    fn set_entry_always_writes_a_fresh_serial() {
        let v = vol();
        let zero = Chunk::empty(ChunkRef::ZERO);
        let (c1, v) = set_entry(&v, &zero, 0, v.own_entry()).unwrap();
        assert_eq!(
            c1.id(),
            ChunkRef {
                owner: 0x11,
                serial: 1
            }
        );
        let (c2, v) = set_entry(&v, &c1, 1, v.own_entry()).unwrap();
        assert_eq!(c2.id().serial, 2);
        assert_eq!(v.chunks[0], c2.id());
        assert_eq!((v.next_serial, v.commit_seq), (3, 3));
        assert_eq!(c2.entries().len(), 2);
        // The chunk given must be the one the header has.
        assert!(matches!(
            set_entry(&v, &c1, 2, Entry::Zero),
            Err(MapError::ChunkMismatch { .. })
        ));
        assert!(matches!(
            set_entry(&v, &c2, (40 * GIB) >> 22, Entry::Zero),
            Err(MapError::OutOfRange { .. })
        ));
        assert!(matches!(
            set_entries(&v, &c2, vec![(0, Entry::Zero), (4096, Entry::Zero)]),
            Err(MapError::EntriesSpanChunks {
                slot: 1,
                expected: 0,
                ..
            })
        ));
        // HASHED survives content writes only.
        let mut h = v.clone();
        h.flags.hashed = true;
        let (_, h2) = set_entry(&h, &c2, 3, Entry::Content([3; 32])).unwrap();
        assert!(h2.flags.hashed);
        let (_, h3) = set_entry(&h, &c2, 3, h.own_entry()).unwrap();
        assert!(!h3.flags.hashed);
        assert_eq!(set_entries(&v, &c2, vec![]).unwrap(), (c2, v));
    }

    #[test]
    fn clones_share_chunks_and_grow_with_zero_refs() {
        let v = vol();
        let (c, v) = set_entry(&v, &Chunk::empty(ChunkRef::ZERO), 0, v.own_entry()).unwrap();
        let (s, _) = snapshot(&v, "gold").unwrap();
        let k = clone_from(&s, "gold", 0x22, 100 * GIB).unwrap();
        assert_eq!(k.chunks.len(), 7);
        assert_eq!(k.chunks[..3], s.chunks[..]);
        assert!(k.chunks[3..].iter().all(ChunkRef::is_zero));
        assert_eq!((k.epoch, k.next_serial, k.first_private_serial), (1, 1, 1));
        assert_eq!(k.parent.as_ref().unwrap().volume_id, 0x11);
        assert!(!k.is_chunk_private(&c.id()));
        assert!(!k.is_writable(c.get(0).unwrap()));

        assert_eq!(
            clone_from(&v, "v", 0x22, 40 * GIB),
            Err(MapError::NotASnapshot)
        );
        for bad in [0, 0x11] {
            assert!(matches!(
                clone_from(&s, "gold", bad, 40 * GIB),
                Err(MapError::BadVolumeId { .. })
            ));
        }
        assert!(matches!(
            clone_from(&s, "gold", 0x22, 20 * GIB),
            Err(MapError::CloneShrinks { .. })
        ));
        assert!(clone_from(&s, "gold", 0x22, 1000).is_err());
    }

    #[test]
    fn resize_grows_with_zeros_and_trims_a_cut_chunk() {
        let v = Header::new(0x11, 32 * GIB, DEFAULT_OBJECT_SIZE_LOG2).unwrap();
        assert_eq!(v.chunks.len(), 2);
        let (c, v) =
            set_entry(&v, &Chunk::empty(ChunkRef::ZERO), 4096 + 100, v.own_entry()).unwrap();
        let (g, none) = resize(&v, 64 * GIB, None).unwrap();
        assert!(none.is_none());
        assert_eq!(g.chunks.len(), 4);
        assert_eq!(g.chunks[1], c.id());

        // Cutting slot 1 below entry 100 needs that chunk, and trims it.
        let small = 16 * GIB + 50 * (4 << 20);
        assert_eq!(
            resize(&g, small, None),
            Err(MapError::TailChunkRequired { slot: 1 })
        );
        let (s, trimmed) = resize(&g, small, Some(&c)).unwrap();
        let trimmed = trimmed.unwrap();
        assert!(trimmed.entries().is_empty());
        assert_eq!(s.chunks, vec![ChunkRef::ZERO, trimmed.id()]);
        assert_eq!(s.nr_objects(), 4096 + 50);
        // Growing again shows zeros where the old entry was.
        let (g2, _) = resize(&s, 32 * GIB, None).unwrap();
        assert_eq!(g2.chunks[1], trimmed.id());
        // A cut above the last stored entry writes nothing.
        let (s2, none) = resize(&g, 16 * GIB + 200 * (4 << 20), Some(&c)).unwrap();
        assert!(none.is_none());
        assert_eq!(s2.chunks[1], c.id());
        // Cutting at a chunk boundary needs no chunk.
        let (s3, none) = resize(&g, 16 * GIB, None).unwrap();
        assert!(none.is_none());
        assert_eq!(s3.chunks, vec![ChunkRef::ZERO]);
        assert!(matches!(
            resize(&g, 1000, None),
            Err(MapError::InvalidSize(_))
        ));
    }
}
