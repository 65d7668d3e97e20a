//! [`VolatileStore`]: a store with a write-back cache that a test can
//! crash, to check what survives a power loss.
//!
//! It models a files backend mounted without `sync` (the page cache): an
//! operation acknowledged without `durable` changes what reads see at once
//! but reaches stable storage only at the next [`sync`](ObjectStore::sync)
//! or at a durable operation on the same object (an `fsync` of its file).
//! [`crash`](VolatileStore::crash) forgets everything not yet stable.
//!
//! ```
//! use archipelago_store::{MemoryStore, ObjectStore, VolatileStore};
//!
//! let store = VolatileStore::new();
//! store.write("a", 0, b"kept", true).unwrap();
//! store.write("b", 0, b"lost", false).unwrap();
//! store.crash();
//! assert!(store.stat("a").is_ok());
//! assert!(store.stat("b").unwrap_err().is_not_found());
//! ```
//!
//! Deletes, copies and content stores are volatile unless durable, like
//! writes (an unlink is not stable before its directory is synced).
//! Locks are stable at once (the real drivers make a grant durable before
//! answering).

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use crate::{ListPage, MemoryStore, ObjectStat, ObjectStore, StoreError};

/// A store whose non-durable operations are lost by [`crash`](Self::crash).
#[derive(Debug, Default)]
pub struct VolatileStore {
    /// What reads see: stable state plus everything acknowledged since.
    cache: MemoryStore,
    /// What survives a crash.
    stable: MemoryStore,
    /// Objects whose cache state may differ from their stable state.
    dirty: Mutex<BTreeSet<String>>,
}

impl VolatileStore {
    /// An empty store.
    pub fn new() -> VolatileStore {
        VolatileStore::default()
    }

    /// Loses every operation that was not made durable: the store is
    /// again what stable storage held.
    pub fn crash(&self) {
        let dirty = std::mem::take(&mut *self.dirty());
        for name in dirty {
            match whole(&self.stable, &name) {
                Some(bytes) => self
                    .cache
                    .write_full(&name, &bytes, true)
                    .expect("memory store"),
                None => {
                    let _ = self.cache.delete(&name);
                }
            }
        }
    }

    /// Objects with operations not yet stable.
    pub fn dirty_objects(&self) -> Vec<String> {
        self.dirty().iter().cloned().collect()
    }

    fn dirty(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an operation on `name`: stable now if `durable`, else
    /// later.
    fn done(&self, name: &str, durable: bool) {
        if durable {
            self.dirty().remove(name);
            self.flush(name);
        } else {
            self.dirty().insert(name.to_owned());
        }
    }

    /// Copies `name`'s cache state to stable storage.
    fn flush(&self, name: &str) {
        match whole(&self.cache, name) {
            Some(bytes) => self
                .stable
                .write_full(name, &bytes, true)
                .expect("memory store"),
            None => {
                let _ = self.stable.delete(name);
            }
        }
    }
}

/// The whole of object `name` in `store`, if it exists.
fn whole(store: &MemoryStore, name: &str) -> Option<Vec<u8>> {
    let size = store.stat(name).ok()?.size;
    let mut bytes = vec![0; size as usize];
    store.read(name, 0, &mut bytes).ok()?;
    Some(bytes)
}

impl ObjectStore for VolatileStore {
    fn write_fenced(
        &self,
        name: &str,
        offset: u64,
        data: &[u8],
        durable: bool,
        fence: crate::Fence<'_>,
    ) -> Result<(), StoreError> {
        // The fence is a lock's state: stable at once, like locks.
        self.cache
            .write_fenced(name, offset, data, durable, fence)?;
        self.done(name, durable);
        Ok(())
    }

    fn write_full_fenced(
        &self,
        name: &str,
        data: &[u8],
        durable: bool,
        fence: crate::Fence<'_>,
    ) -> Result<(), StoreError> {
        self.cache.write_full_fenced(name, data, durable, fence)?;
        self.done(name, durable);
        Ok(())
    }

    fn raise_fence(&self, lock: &str, token: u64) -> Result<u64, StoreError> {
        self.cache.raise_fence(lock, token)
    }

    fn read(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<u64, StoreError> {
        self.cache.read(name, offset, buf)
    }

    fn write(&self, name: &str, offset: u64, data: &[u8], durable: bool) -> Result<(), StoreError> {
        self.cache.write(name, offset, data, durable)?;
        self.done(name, durable);
        Ok(())
    }

    fn write_full(&self, name: &str, data: &[u8], durable: bool) -> Result<(), StoreError> {
        self.cache.write_full(name, data, durable)?;
        self.done(name, durable);
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.cache.delete(name)?;
        self.done(name, false);
        Ok(())
    }

    fn stat(&self, name: &str) -> Result<ObjectStat, StoreError> {
        self.cache.stat(name)
    }

    fn copy(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        offset: u64,
        size: u64,
        durable: bool,
    ) -> Result<(), StoreError> {
        self.cache
            .copy(src, src_offset, dst, offset, size, durable)?;
        self.done(dst, durable);
        Ok(())
    }

    fn store_content(&self, data: &[u8], durable: bool) -> Result<String, StoreError> {
        let name = self.cache.store_content(data, durable)?;
        self.done(&name, durable);
        Ok(name)
    }

    fn sync(&self) -> Result<(), StoreError> {
        let dirty = std::mem::take(&mut *self.dirty());
        for name in dirty {
            self.flush(&name);
        }
        Ok(())
    }

    fn try_lock(&self, name: &str, owner: &str) -> Result<u64, StoreError> {
        self.cache.try_lock(name, owner)
    }

    fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.cache.unlock(name, owner)
    }

    fn break_lock(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.cache.break_lock(name)
    }

    fn lock_owner(&self, name: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.cache.lock_owner(name)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.cache.list(prefix)
    }

    fn list_page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        max: usize,
    ) -> Result<ListPage, StoreError> {
        self.cache.list_page(prefix, cursor, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_durable_operations_and_synced_ones_survive_a_crash() {
        let s = VolatileStore::new();
        s.write("a", 0, b"one", true).unwrap();
        s.write("a", 0, b"two", false).unwrap();
        s.write("b", 0, b"bbb", false).unwrap();
        s.write_full("c", b"ccc", false).unwrap();
        s.sync().unwrap();
        s.delete("c").unwrap();
        s.copy("b", 0, "d", 0, 3, false).unwrap();
        assert_eq!(s.dirty_objects(), ["c", "d"]);
        s.crash();
        let mut buf = [0; 3];
        s.read("a", 0, &mut buf).unwrap();
        assert_eq!(&buf, b"two", "synced");
        s.read("c", 0, &mut buf).unwrap();
        assert_eq!(&buf, b"ccc", "the delete was not stable");
        assert!(s.stat("d").unwrap_err().is_not_found());
        assert!(s.dirty_objects().is_empty());
    }

    #[test]
    fn the_store_conforms() {
        crate::conformance::run_all(VolatileStore::new);
    }
}
