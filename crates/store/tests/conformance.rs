//! The conformance suite (`archipelago_store::conformance`) run against
//! every driver: memory, files (write-through, write-back, without a
//! descriptor cache) and the fault injector with no rules (a transparent
//! wrapper must stay transparent).

use std::sync::atomic::{AtomicUsize, Ordering};

use archipelago_store::{FileStore, FileStoreOptions};

/// A maker of fresh file stores, each in its own directory under one
/// temporary root that lives as long as the maker.
fn files(sync: bool, fd_cache: usize) -> impl Fn() -> FileStore {
    let root = tempfile::tempdir().expect("temporary directory");
    let next = AtomicUsize::new(0);
    move || {
        let dir = root
            .path()
            .join(next.fetch_add(1, Ordering::Relaxed).to_string());
        FileStore::open(dir, FileStoreOptions { sync, fd_cache }).expect("open file store")
    }
}

mod memory {
    archipelago_store::conformance_tests!(archipelago_store::MemoryStore::new);
}

mod files_write_through {
    archipelago_store::conformance_tests!(super::files(true, 64));
}

mod files_write_back {
    archipelago_store::conformance_tests!(super::files(false, 64));
}

mod files_without_fd_cache {
    archipelago_store::conformance_tests!(super::files(false, 0));
}

mod faulty_without_rules {
    archipelago_store::conformance_tests!(|| archipelago_store::FaultyStore::new(
        archipelago_store::MemoryStore::new()
    ));
}

#[test]
fn run_all_runs_the_suite_in_one_go() {
    archipelago_store::conformance::run_all(archipelago_store::MemoryStore::new);
}
