//! Fencing across two clients of one shared store, as two hosts sharing a
//! pool see it (issue 14, "Fencing on the data path"): the old owner's
//! write held in flight past a break, then let go, must not land.

use std::sync::Arc;

use archipelago_store::conformance::a_broken_owners_held_writes_never_land;
use archipelago_store::{FaultyStore, FileStore, FileStoreOptions, MemoryStore};

fn open(dir: &std::path::Path, sync: bool) -> FileStore {
    FileStore::open(dir, FileStoreOptions { sync, fd_cache: 64 }).expect("open file store")
}

/// Two FileStores on one directory (two hosts on a shared filesystem).
#[test]
fn files_two_hosts_one_directory() {
    for sync in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(FaultyStore::new(open(dir.path(), sync)));
        let b = open(dir.path(), sync);
        a_broken_owners_held_writes_never_land(a, b, |_| {});
    }
}

/// Two handles of one MemoryStore.
#[test]
fn memory_two_handles() {
    let shared = Arc::new(MemoryStore::new());
    let a = Arc::new(FaultyStore::new(shared.clone()));
    a_broken_owners_held_writes_never_land(a, shared, |_| {});
}
