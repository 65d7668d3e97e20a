//! Issue 14, "Durability in write-back mode and after crashes": with a
//! data store that acknowledges writes from a cache (files with
//! `sync = false`), what a snapshot freezes and what a commit of shared
//! data depends on must be stable before the map says so. The data store
//! here is a [`VolatileStore`]: `crash()` loses every write not yet made
//! durable, as a power loss loses the page cache; the mapper runs in
//! write-back mode, as mapperd does over such a store, and a crash loses
//! its write-back journals too.

mod common;

use std::sync::Arc;

use archipelago_mapper::{read_extent, Mapper};
use archipelago_store::{MemoryStore, ObjectStore, VolatileStore};

use common::{pattern, OS};

struct Env {
    maps: Arc<MemoryStore>,
    data: Arc<VolatileStore>,
    m: Mapper,
}

impl Env {
    fn new() -> Env {
        let maps = Arc::new(MemoryStore::new());
        let data = Arc::new(VolatileStore::new());
        let m = Mapper::new(maps.clone(), data.clone(), "host1".into())
            .with_write_back(Arc::new(MemoryStore::new()));
        Env { maps, data, m }
    }

    /// The host crashes: the data store's cache and the mapper (with its
    /// write-back journals) are lost; this host's mapper starts again.
    fn crash(&mut self) {
        self.data.crash();
        self.m = Mapper::new(self.maps.clone(), self.data.clone(), "host1".into())
            .with_write_back(Arc::new(MemoryStore::new()));
    }

    /// A write as vlmcd does it in write-back mode: map_write, the data
    /// acknowledged from the cache (not durable), commit_writes.
    fn write_back(&self, name: &str, offset: u64, bytes: &[u8]) {
        let extents = self.m.map_write(name, offset, bytes.len() as u64).unwrap();
        let mut pos = 0usize;
        let mut pending = Vec::new();
        for e in &extents {
            let obj = e.object.as_ref().expect("write extents name objects");
            self.data
                .write(
                    obj,
                    e.offset_in_object,
                    &bytes[pos..][..e.len as usize],
                    false,
                )
                .unwrap();
            pos += e.len as usize;
            if e.pending {
                pending.push(e.index);
            }
        }
        if !pending.is_empty() {
            self.m.commit_writes(name, &pending).unwrap();
        }
    }

    fn read(&self, name: &str, offset: u64, len: u64) -> Vec<u8> {
        let mut out = vec![0xee; len as usize];
        let mut pos = 0usize;
        for e in self.m.map_read(name, offset, len).unwrap() {
            read_extent(&*self.data, &e, &mut out[pos..][..e.len as usize]).unwrap();
            pos += e.len as usize;
        }
        out
    }
}

#[test]
fn a_snapshot_keeps_what_it_froze_across_a_crash() {
    let mut env = Env::new();
    env.m.create("vol", 4 * OS, Some(OS)).unwrap();
    let before = pattern(7, 2 * OS as usize);
    env.write_back("vol", 0, &before);
    env.m.snapshot("vol", "snap").unwrap();
    env.crash();
    // The snapshot is immutable: whatever it showed when it was taken, it
    // shows after a crash (a clone booted from it must not see its base
    // change under it).
    assert!(
        env.read("snap", 0, 2 * OS) == before,
        "the snapshot lost the data it froze"
    );
}

#[test]
fn a_clone_source_is_stable_before_the_clone_exists() {
    let mut env = Env::new();
    env.m.create("vol", 2 * OS, Some(OS)).unwrap();
    let before = pattern(3, OS as usize);
    env.write_back("vol", 0, &before);
    env.m.snapshot("vol", "snap").unwrap();
    env.m.clone_volume("snap", "clone", None).unwrap();
    env.crash();
    assert!(
        env.read("clone", 0, OS) == before,
        "the clone's base changed"
    );
}

#[test]
fn a_full_overwrite_of_shared_data_never_turns_old_data_into_zeros() {
    let mut env = Env::new();
    env.m.create("vol", 2 * OS, Some(OS)).unwrap();
    let old = pattern(1, OS as usize);
    env.write_back("vol", 0, &old);
    env.data.sync().unwrap();
    // A snapshot makes object 0 shared; a full overwrite then writes a new
    // object of the volume and commits its entry over the shared one.
    env.m.snapshot("vol", "snap").unwrap();
    let new = pattern(2, OS as usize);
    env.write_back("vol", 0, &new);
    env.crash();
    // The guest never flushed: losing the new data is allowed, losing the
    // old is not.
    let got = env.read("vol", 0, OS);
    assert!(
        got == old || got == new,
        "object 0 reads neither the old nor the new data (zeros: {})",
        got.iter().all(|&b| b == 0)
    );
}
