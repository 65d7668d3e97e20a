//! Failures at each commit step leave the old view intact.

mod common;

use std::sync::Arc;

use archipelago_mapfmt::v1;
use archipelago_mapper::Mapper;
use archipelago_protocol::ErrorCode;
use archipelago_store::{Fault, FaultyStore, MemoryStore, ObjectStore, OpKind, Rule};
use common::{pattern, OS};

struct Faulty {
    maps: Arc<FaultyStore<MemoryStore>>,
    data: Arc<FaultyStore<MemoryStore>>,
    m: Mapper,
}

impl Faulty {
    fn new() -> Faulty {
        let maps = Arc::new(FaultyStore::new(MemoryStore::new()));
        let data = Arc::new(FaultyStore::new(MemoryStore::new()));
        let m = Mapper::new(maps.clone(), data.clone(), "host1".into());
        Faulty { maps, data, m }
    }

    /// The mapper after a restart of this host: nothing cached.
    fn restarted(&self) -> Mapper {
        Mapper::new(self.maps.clone(), self.data.clone(), "host1".into())
    }

    fn read(&self, m: &Mapper, name: &str, off: u64, len: u64) -> Vec<u8> {
        common::read(m, &*self.data, name, off, len).unwrap()
    }
}

#[test]
fn a_failed_commit_of_a_copied_up_write_changes_nothing() {
    let f = Faulty::new();
    f.m.create("vol", 16 * OS, Some(OS)).unwrap();
    let a = pattern(1, 2 * OS as usize);
    common::write(&f.m, &*f.data, "vol", 0, &a).unwrap();
    f.m.snapshot("vol", "snap").unwrap();

    // A partial write of a shared object: copy-up, the data, then its
    // commit (a journal append) fails.
    f.maps.add_rule(
        Rule::new(OpKind::WriteFull, Fault::Io)
            .names_with_prefix("archip_journal_")
            .times(1),
    );
    let ext = f.m.map_write("vol", 5, 3).unwrap();
    assert!(ext[0].pending, "{ext:?}");
    f.data
        .write(ext[0].object.as_ref().unwrap(), 5, b"new", true)
        .unwrap();
    let err = f.m.commit_writes("vol", &[0]).unwrap_err();
    assert_eq!(err.code, ErrorCode::Io);
    assert_eq!(
        f.read(&f.m, "vol", 0, 2 * OS),
        a,
        "the cached view did not move"
    );
    assert_eq!(
        f.read(&f.restarted(), "vol", 0, 2 * OS),
        a,
        "nor the stored one"
    );
    assert_eq!(f.read(&f.m, "snap", 0, 2 * OS), a);

    // The retry rewrites the same names and works.
    common::write(&f.m, &*f.data, "vol", 5, b"new").unwrap();
    let mut expect = a.clone();
    expect[5..8].copy_from_slice(b"new");
    assert_eq!(f.read(&f.restarted(), "vol", 0, 2 * OS), expect);
    assert_eq!(f.read(&f.m, "snap", 0, 2 * OS), a);
}

#[test]
fn a_failed_full_overwrite_of_shared_data_keeps_the_old_data() {
    let f = Faulty::new();
    f.m.create("vol", 16 * OS, Some(OS)).unwrap();
    let a = pattern(2, 2 * OS as usize);
    common::write(&f.m, &*f.data, "vol", 0, &a).unwrap();
    f.m.snapshot("vol", "snap").unwrap();

    // Full overwrite of object 1: pending until the data lands.
    let ext = f.m.map_write("vol", OS, OS).unwrap();
    assert!(ext[0].pending);
    assert_eq!(
        f.m.snapshot("vol", "s2").unwrap_err().code,
        ErrorCode::Busy,
        "no snapshot while a write is uncommitted"
    );
    // The data write tears (a crash mid-write) and is never committed.
    f.data.fail_next(OpKind::Write, Fault::Torn { keep: 100 });
    let obj = ext[0].object.clone().unwrap();
    assert!(f
        .data
        .write(&obj, 0, &vec![7u8; OS as usize], true)
        .is_err());
    assert_eq!(f.read(&f.m, "vol", 0, 2 * OS), a, "old data, not zeros");
    assert_eq!(f.read(&f.restarted(), "vol", 0, 2 * OS), a);
    assert_eq!(
        f.m.commit_writes("vol", &[0]).unwrap_err().code,
        ErrorCode::InvalidArgument,
        "object 0 has no pending write"
    );

    // Retried, it lands and is committed.
    common::write(&f.m, &*f.data, "vol", OS, &vec![7u8; OS as usize]).unwrap();
    assert_eq!(
        f.read(&f.restarted(), "vol", OS, OS),
        vec![7u8; OS as usize]
    );
    assert_eq!(f.read(&f.m, "snap", 0, 2 * OS), a);
    f.m.snapshot("vol", "s2").unwrap();
}

#[test]
fn a_failed_copy_up_fails_the_write_and_changes_nothing() {
    let f = Faulty::new();
    f.m.create("vol", 16 * OS, Some(OS)).unwrap();
    let a = pattern(3, OS as usize);
    common::write(&f.m, &*f.data, "vol", 0, &a).unwrap();
    f.m.snapshot("vol", "snap").unwrap();
    f.data.fail_next(OpKind::Copy, Fault::NoSpace);
    assert_eq!(
        f.m.map_write("vol", 1, 1).unwrap_err().code,
        ErrorCode::NoSpace
    );
    assert_eq!(f.read(&f.m, "vol", 0, OS), a);
}

#[test]
fn a_snapshot_interrupted_after_the_volume_header_leaves_no_snapshot() {
    let f = Faulty::new();
    f.m.create("vol", 16 * OS, Some(OS)).unwrap();
    common::write(&f.m, &*f.data, "vol", 0, b"before").unwrap();
    f.maps.add_rule(
        Rule::new(OpKind::WriteFull, Fault::Io)
            .names_with_prefix("snap")
            .times(1),
    );
    assert!(f.m.snapshot("vol", "snap").is_err());
    assert_eq!(f.m.info("snap").unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(&f.read(&f.restarted(), "vol", 0, 6)[..], b"before");
    common::write(&f.m, &*f.data, "vol", 0, b"after!").unwrap();
    assert_eq!(&f.read(&f.m, "vol", 0, 6)[..], b"after!");
    f.m.snapshot("vol", "snap").unwrap();
    assert_eq!(&f.read(&f.m, "snap", 0, 6)[..], b"after!");
}

#[test]
fn an_interrupted_rename_leaves_exactly_one_live_name() {
    let f = Faulty::new();
    f.m.create("vol", 16 * OS, Some(OS)).unwrap();
    common::write(&f.m, &*f.data, "vol", 0, b"data").unwrap();
    f.m.close("vol").unwrap();

    // The new header write fails: the old name is still the volume.
    f.maps.add_rule(
        Rule::new(OpKind::WriteFull, Fault::Io)
            .names_with_prefix("new")
            .times(1),
    );
    assert!(f.m.rename("vol", "new").is_err());
    assert_eq!(f.m.info("new").unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(&f.read(&f.restarted(), "vol", 0, 4)[..], b"data");

    // The old header's deletion fails: the rename counts as done.
    f.maps.add_rule(
        Rule::new(OpKind::Delete, Fault::Io)
            .names_with_prefix("vol")
            .times(1),
    );
    assert!(f.m.rename("vol", "new").is_err());
    assert!(
        f.maps.inner().stat("vol").is_ok(),
        "the old header is still stored"
    );
    let m = f.restarted();
    assert_eq!(m.info("vol").unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(m.open("vol", true).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(&f.read(&m, "new", 0, 4)[..], b"data");
    common::write(&m, &*f.data, "new", 4, b"more").unwrap();
    // The old name can be created afresh.
    m.create("vol", 16 * OS, Some(OS)).unwrap();
    assert_eq!(f.read(&m, "vol", 0, 8), vec![0u8; 8]);
    assert_eq!(&f.read(&m, "new", 0, 8)[..], b"datamore");
}

#[test]
fn an_interrupted_update_leaves_the_old_map() {
    let f = Faulty::new();
    let a = f.data.store_content(b"old data", true).unwrap();
    let mut d = [0u8; 32];
    for (i, p) in a.as_bytes().chunks(2).enumerate() {
        d[i] = u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap();
    }
    f.maps
        .write_full("old", &v1::encode(4 << 20, &[(0, d)]), true)
        .unwrap();
    f.maps.add_rule(
        Rule::new(OpKind::WriteFull, Fault::Io)
            .names_with_prefix("old")
            .times(1),
    );
    assert!(f.m.update("old").is_err());
    assert_eq!(f.m.info("old").unwrap().format_version, 1);
    assert_eq!(&f.read(&f.m, "old", 0, 8)[..], b"old data");
    assert_eq!(f.maps.lock_owner("old").unwrap(), None);
    f.m.update("old").unwrap();
    assert_eq!(f.m.info("old").unwrap().format_version, 3);
    assert_eq!(&f.read(&f.m, "old", 0, 8)[..], b"old data");
}
