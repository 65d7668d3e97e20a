//! Fencing on the map store (issue 14, "Fencing on the data path"): two
//! hosts share one files directory; host A's commit is held in flight
//! (its chunk write) while host B breaks A's lock, opens the volume and
//! commits a chunk of the same serial. Let go, A's chunk write must not
//! land over B's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use archipelago_mapper::Mapper;
use archipelago_protocol::ErrorCode;
use archipelago_store::{Fault, FaultyStore, FileStore, FileStoreOptions, ObjectStore, OpKind};
use common::{pattern, read, write, OS};

fn files(dir: &std::path::Path) -> FileStore {
    FileStore::open(
        dir,
        FileStoreOptions {
            sync: false,
            fd_cache: 16,
        },
    )
    .expect("open file store")
}

#[test]
fn a_broken_owners_held_chunk_write_never_overwrites_the_new_owners_chunk() {
    let root = tempfile::tempdir().unwrap();
    let (maps_dir, data_dir) = (root.path().join("maps"), root.path().join("blocks"));
    let a_maps = Arc::new(FaultyStore::new(files(&maps_dir)));
    let a_data = Arc::new(files(&data_dir));
    let b_maps = Arc::new(files(&maps_dir));
    let b_data = Arc::new(files(&data_dir));
    let a = Arc::new(Mapper::new(a_maps.clone(), a_data.clone(), "host-a".into()));
    let b = Mapper::new(b_maps.clone(), b_data.clone(), "host-b".into());

    a.create("vm", 16 * OS, Some(OS)).unwrap();
    a.open("vm", true).unwrap();
    // A's next commit writes a chunk first: hold it.
    let gate = archipelago_store::Gate::new();
    a_maps.fail_next(OpKind::WriteFull, Fault::Hold(gate.clone()));
    let writer = {
        let (a, a_data) = (a.clone(), a_data.clone());
        std::thread::spawn(move || write(&a, &*a_data, "vm", 0, &pattern(1, OS as usize)))
    };
    assert!(
        gate.wait_arrived(1, Duration::from_secs(60)),
        "A's commit never reached its chunk write"
    );

    // vlmc unlock -f vm on host B, then B writes index 1 and commits.
    assert_eq!(b_maps.break_lock("vm").unwrap().as_deref(), Some("host-a"));
    b.open("vm", true).unwrap();
    write(&b, &*b_data, "vm", OS, &pattern(2, OS as usize)).unwrap();

    gate.open();
    let e = writer
        .join()
        .unwrap()
        .expect_err("A's commit under a broken lock succeeded");
    assert_eq!(e.code, ErrorCode::Fenced, "{e}");

    // A host reading the store afresh (no cached chunk) sees B's commit.
    let c = Mapper::new(b_maps.clone(), b_data.clone(), "host-c".into());
    assert!(
        read(&c, &*b_data, "vm", OS, OS).unwrap() == pattern(2, OS as usize),
        "B's committed write was lost: A's chunk of the same serial landed over B's"
    );
    assert!(
        read(&c, &*b_data, "vm", 0, OS).unwrap() == vec![0; OS as usize],
        "A's write under the broken lock is visible"
    );
}
