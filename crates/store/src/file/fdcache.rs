//! A bounded LRU cache of open object files, keyed by object name.
//!
//! Entries are `Arc<File>`: a lookup clones the `Arc`, so evicting an
//! entry never closes a descriptor still in use (it closes when the last
//! user drops it); the number of open descriptors can briefly exceed the
//! capacity by the number of operations in flight.
//!
//! Files are only ever accessed with positional I/O (`pread`/`pwrite`), so
//! a shared descriptor has no state to corrupt (the original's cached file
//! position made a second COPY append).
//!
//! # Coherence with replace and delete
//!
//! `write_full` renames a new file over an object and `delete` unlinks it;
//! both then [`invalidate`](FdCache::invalidate) the name, so later
//! operations open the current file. A racing opener could otherwise
//! insert a descriptor of the old file *after* the invalidation (it opened
//! before the rename, inserts after) and keep serving it forever. To
//! prevent that, the cache has a generation bumped by every invalidation:
//! an opener reads it before opening ([`generation`](FdCache::generation))
//! and [`insert`](FdCache::insert) refuses to cache the descriptor if it
//! changed. The opener still uses its descriptor for the operation at
//! hand, which then orders before the replace or delete.
//!
//! The cache is per process: a file replaced or deleted by another process
//! keeps being served through a cached descriptor here (see the
//! [`FileStore`](super::FileStore) docs).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};

/// The cache; cheap to share (`&self` methods, one mutex).
#[derive(Debug)]
pub(super) struct FdCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Name → (file, last-use tick).
    map: HashMap<String, (Arc<File>, u64)>,
    /// Last-use tick → name; the first entry is the least recently used.
    order: BTreeMap<u64, String>,
    /// Source of last-use ticks.
    tick: u64,
    /// Bumped by every invalidation.
    generation: u64,
}

impl FdCache {
    /// A cache of at most `capacity` descriptors (0 disables caching).
    pub(super) fn new(capacity: usize) -> FdCache {
        FdCache {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` consistent before anything
        // that could panic (allocation aside), so a poisoned lock is safe.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached file of `name`, marked most recently used.
    pub(super) fn get(&self, name: &str) -> Option<Arc<File>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let (file, old) = inner.map.get_mut(name)?;
        let file = file.clone();
        let old = std::mem::replace(old, tick);
        inner.order.remove(&old);
        inner.order.insert(tick, name.to_owned());
        Some(file)
    }

    /// The current generation; read it before opening a file to insert.
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Caches `file` for `name` unless an invalidation happened since
    /// `generation` was read (or the cache is disabled), evicting the least
    /// recently used entry if full. An existing entry is kept (the racing
    /// opener that inserted it opened the same file).
    pub(super) fn insert(&self, name: &str, file: &Arc<File>, generation: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != generation || inner.map.contains_key(name) {
            return;
        }
        while inner.map.len() >= self.capacity {
            let Some((_, victim)) = inner.order.pop_first() else {
                break;
            };
            inner.map.remove(&victim);
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.map.insert(name.to_owned(), (file.clone(), tick));
        inner.order.insert(tick, name.to_owned());
    }

    /// Forgets `name`'s descriptor; call after its file was replaced or
    /// unlinked.
    pub(super) fn invalidate(&self, name: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        if let Some((_, tick)) = inner.map.remove(name) {
            inner.order.remove(&tick);
        }
    }

    /// Number of cached descriptors.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Arc<File> {
        Arc::new(tempfile::tempfile().unwrap())
    }

    #[test]
    fn the_least_recently_used_entry_is_evicted() {
        let c = FdCache::new(2);
        let g = c.generation();
        c.insert("a", &file(), g);
        c.insert("b", &file(), g);
        assert!(c.get("a").is_some());
        c.insert("c", &file(), g);
        assert_eq!(c.len(), 2);
        assert!(c.get("b").is_none());
        assert!(c.get("a").is_some() && c.get("c").is_some());
    }

    #[test]
    fn an_insert_racing_an_invalidation_is_dropped() {
        let c = FdCache::new(4);
        let g = c.generation();
        c.invalidate("a");
        c.insert("a", &file(), g);
        assert!(c.get("a").is_none());
        let g = c.generation();
        c.insert("a", &file(), g);
        assert!(c.get("a").is_some());
        c.invalidate("a");
        assert!(c.get("a").is_none());
    }

    #[test]
    fn a_zero_capacity_cache_caches_nothing() {
        let c = FdCache::new(0);
        c.insert("a", &file(), c.generation());
        assert!(c.get("a").is_none());
    }
}
