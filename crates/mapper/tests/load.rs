//! The public map loading (`archipelago_mapper::load`), which the garbage
//! collector shares: the bounded retry of a read that an object's
//! replacement cut, and the errors that tell an old map from a broken one.

mod common;

use std::sync::Mutex;

use archipelago_mapfmt::{ChunkRef, Entry};
use archipelago_mapper::load::{
    chunk_entries, read_chunk, read_header, read_map, read_object, LoadError, MapObject, READ_TRIES,
};
use archipelago_store::{ListPage, MemoryStore, ObjectStat, ObjectStore, StoreError};
use common::{Env, OS};

/// A map store that, before each of its first `rewrites` reads, replaces
/// the object being read with one byte more: what a reader sees when a
/// commit changes an object's size between its stat and its read.
struct Growing {
    inner: MemoryStore,
    rewrites: Mutex<u32>,
}

impl Growing {
    fn new(rewrites: u32) -> Growing {
        Growing {
            inner: MemoryStore::new(),
            rewrites: Mutex::new(rewrites),
        }
    }
}

impl ObjectStore for Growing {
    fn read(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<u64, StoreError> {
        let mut left = self.rewrites.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            let size = self.inner.stat(name)?.size;
            self.inner
                .write_full(name, &vec![7; size as usize + 1], true)?;
        }
        self.inner.read(name, offset, buf)
    }
    fn write(&self, name: &str, offset: u64, data: &[u8], durable: bool) -> Result<(), StoreError> {
        self.inner.write(name, offset, data, durable)
    }
    fn write_full(&self, name: &str, data: &[u8], durable: bool) -> Result<(), StoreError> {
        self.inner.write_full(name, data, durable)
    }
    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.inner.delete(name)
    }
    fn stat(&self, name: &str) -> Result<ObjectStat, StoreError> {
        self.inner.stat(name)
    }
    fn copy(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        durable: bool,
    ) -> Result<(), StoreError> {
        self.inner
            .copy(src, src_offset, dst, dst_offset, len, durable)
    }
    fn store_content(&self, data: &[u8], durable: bool) -> Result<String, StoreError> {
        self.inner.store_content(data, durable)
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }
    fn try_lock(&self, name: &str, owner: &str) -> Result<u64, StoreError> {
        self.inner.try_lock(name, owner)
    }
    fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.unlock(name, owner)
    }
    fn break_lock(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.inner.break_lock(name)
    }
    fn lock_owner(&self, name: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.inner.lock_owner(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix)
    }
    fn list_page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.inner.list_page(prefix, cursor, limit)
    }
}

#[test]
fn a_read_cut_by_a_replacement_is_read_again_at_the_new_size() {
    let store = Growing::new(2);
    store.write_full("obj", &[1; 10], true).unwrap();
    // Two reads find the object grown under them; the third is whole.
    let bytes = read_object(&store, "obj").unwrap().unwrap();
    assert_eq!(bytes, vec![7; 12]);
    assert_eq!(read_object(&store, "missing").unwrap(), None);
}

#[test]
fn an_object_that_never_settles_is_an_io_error_after_the_bound() {
    let store = Growing::new(READ_TRIES);
    store.write_full("obj", &[1; 10], true).unwrap();
    match read_object(&store, "obj") {
        Err(LoadError::Store {
            name,
            error: StoreError::Io { op: "read", .. },
        }) => assert_eq!(name, "obj"),
        other => panic!("{other:?}"),
    }
    // The bound was READ_TRIES reads, no more.
    assert_eq!(*store.rewrites.lock().unwrap(), 0);
    assert_eq!(read_object(&store, "obj").unwrap().unwrap().len(), 10 + 8);
}

#[test]
fn headers_chunks_and_entries_load_as_the_mapper_wrote_them() {
    let env = Env::new();
    env.m.create("v", 3 * OS, Some(OS)).unwrap();
    env.write("v", OS, &[9; OS as usize]);
    let h = read_header(&*env.maps, "v").unwrap().unwrap();
    assert!(matches!(
        read_map(&*env.maps, "v", false).unwrap(),
        Some(MapObject::V3(ref m)) if *m == h
    ));
    assert_eq!(read_header(&*env.maps, "nothing").unwrap(), None);
    let (slot, r) = h
        .chunks
        .iter()
        .enumerate()
        .find(|(_, r)| !r.is_zero())
        .expect("a written volume has a chunk");
    let chunk = read_chunk(&*env.maps, *r).unwrap();
    let named: Vec<(u64, String)> = chunk_entries(&chunk, slot)
        .filter_map(|(i, e)| e.object_name(i).map(|n| (i, n)))
        .collect();
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].0, 1);
    assert!(env.data.stat(&named[0].1).is_ok());
    assert!(chunk_entries(&chunk, slot).all(|(i, e)| i == 1 || *e == Entry::Zero));
}

#[test]
fn old_broken_and_missing_maps_are_told_apart() {
    let env = Env::new();
    // A v1 map (a little-endian 1, then its fields).
    env.maps
        .write_full("old", &[1, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0], true)
        .unwrap();
    assert!(matches!(
        read_header(&*env.maps, "old"),
        Err(LoadError::OldFormat { ref name, .. }) if name == "old"
    ));
    env.maps.write_full("junk", &[9; 64], true).unwrap();
    assert!(matches!(
        read_header(&*env.maps, "junk"),
        Err(LoadError::Unrecognised { .. })
    ));
    env.m.create("v", OS, Some(OS)).unwrap();
    let mut bytes = read_object(&*env.maps, "v").unwrap().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    env.maps.write_full("v", &bytes, true).unwrap();
    assert!(matches!(
        read_header(&*env.maps, "v"),
        Err(LoadError::Corrupt { .. })
    ));
    let r = ChunkRef {
        owner: 0x1234,
        serial: 1,
    };
    let e = read_chunk(&*env.maps, r).unwrap_err();
    assert!(matches!(e, LoadError::MissingChunk { .. }), "{e:?}");
    assert!(e.to_string().contains("is missing"), "{e}");
    env.maps
        .write_full(&r.object_name().unwrap(), b"not a chunk", true)
        .unwrap();
    assert!(matches!(
        read_chunk(&*env.maps, r),
        Err(LoadError::CorruptChunk { .. })
    ));
}
