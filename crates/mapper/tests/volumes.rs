//! Volume operations end to end over memory stores.

mod common;

use archipelago_protocol::ErrorCode;
use archipelago_store::ObjectStore;
use common::{pattern, Env, OS};

const SIZE: u64 = 64 * OS;

#[test]
fn writes_read_back_and_unwritten_space_reads_zeros() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    assert_eq!(
        e.m.create("vol", SIZE, Some(OS)).unwrap_err().code,
        ErrorCode::Exists
    );
    let info = e.m.info("vol").unwrap();
    assert_eq!(
        (info.size, info.object_size, info.format_version),
        (SIZE, OS, 3)
    );
    assert!(!info.readonly && info.volume_id != 0 && info.epoch == 1);

    let data = pattern(7, 3 * OS as usize);
    e.write("vol", OS / 2, &data);
    assert_eq!(e.read("vol", OS / 2, data.len() as u64), data);
    assert_eq!(e.read("vol", 0, OS / 2), vec![0; OS as usize / 2]);
    assert_eq!(e.read("vol", 10 * OS, OS), vec![0; OS as usize]);
    // Rewriting in place.
    e.write("vol", OS, b"hello");
    assert_eq!(e.read("vol", OS, 5), b"hello");
    // A read straddling everything: one extent per object.
    let ext = e.m.map_read("vol", 0, SIZE).unwrap();
    assert_eq!(ext.len(), 64);
    assert!(ext[10].object.is_none());
    e.m.close("vol").unwrap(); // the implicit open of map_write
    assert_eq!(e.maps.lock_owner("vol").unwrap(), None);
}

#[test]
fn bad_arguments_are_refused_with_their_codes() {
    let e = Env::new();
    let code = |r: Result<(), archipelago_protocol::Error>| r.unwrap_err().code;
    assert_eq!(
        code(e.m.create("a/b", SIZE, None)),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(e.m.create("vol", 1000, None)),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(e.m.create("vol", SIZE, Some(3000))),
        ErrorCode::InvalidArgument
    );
    assert_eq!(e.m.info("nope").unwrap_err().code, ErrorCode::NotFound);
    let err = e.m.open("nope", true).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(err.detail.contains("nope"), "{err}");
    assert_eq!(
        e.maps.lock_owner("nope").unwrap(),
        None,
        "a failed open keeps no lock"
    );
}

#[test]
fn snapshots_freeze_and_clones_are_isolated() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    let a = pattern(1, 4 * OS as usize);
    e.write("vol", 0, &a);
    e.m.snapshot("vol", "s1").unwrap();
    assert_eq!(
        e.m.snapshot("vol", "s1").unwrap_err().code,
        ErrorCode::Exists
    );
    let s1 = e.m.info("s1").unwrap();
    assert!(s1.readonly);
    let vi = e.m.info("vol").unwrap();
    assert_eq!(vi.epoch, s1.epoch + 1);
    assert_eq!(vi.parent.as_deref(), Some("s1"));

    // Overwrite: partial (copy-up) and full (pending, committed after the data).
    e.write("vol", 10, b"partial");
    let b = pattern(2, OS as usize);
    e.write("vol", 2 * OS, &b);
    let mut expect = a.clone();
    expect[10..17].copy_from_slice(b"partial");
    expect[2 * OS as usize..3 * OS as usize].copy_from_slice(&b);
    assert_eq!(e.read("vol", 0, 4 * OS), expect);
    assert_eq!(e.read("s1", 0, 4 * OS), a, "the snapshot is unchanged");
    assert_eq!(e.m.open("s1", true).unwrap_err().code, ErrorCode::ReadOnly);
    assert_eq!(
        e.m.map_write("s1", 0, 1).unwrap_err().code,
        ErrorCode::ReadOnly
    );

    // Clone: sees the snapshot; writes are isolated both ways.
    assert_eq!(
        e.m.clone_volume("vol", "bad", None).unwrap_err().code,
        ErrorCode::InvalidArgument,
        "not a snapshot"
    );
    assert_eq!(
        e.m.clone_volume("s1", "bad", Some(SIZE - OS))
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument,
        "smaller"
    );
    e.m.clone_volume("s1", "c1", Some(2 * SIZE)).unwrap();
    assert_eq!(
        e.m.clone_volume("s1", "c1", None).unwrap_err().code,
        ErrorCode::Exists
    );
    let c1 = e.m.info("c1").unwrap();
    assert_eq!((c1.size, c1.parent.as_deref()), (2 * SIZE, Some("s1")));
    assert_eq!(e.read("c1", 0, 4 * OS), a);
    assert_eq!(e.read("c1", SIZE, SIZE), vec![0; SIZE as usize]);
    e.write("c1", 5, b"clone");
    e.write("c1", SIZE + 3, b"far");
    assert_eq!(&e.read("c1", 5, 5)[..], b"clone");
    assert_eq!(e.read("s1", 0, 4 * OS), a);
    assert_eq!(e.read("vol", 0, 4 * OS), expect);
    e.write("vol", 3 * OS, b"vol only");
    assert_eq!(
        e.read("c1", 3 * OS, 8),
        a[3 * OS as usize..3 * OS as usize + 8]
    );

    // Clone of a clone.
    e.m.snapshot("c1", "c1s").unwrap();
    e.m.clone_volume("c1s", "c2", None).unwrap();
    let mut c1_view = a.clone();
    c1_view[5..10].copy_from_slice(b"clone");
    assert_eq!(e.read("c2", 0, 4 * OS), c1_view);
    assert_eq!(&e.read("c2", SIZE + 3, 3)[..], b"far");
    e.write("c2", 0, b"c2");
    assert_eq!(e.read("c1", 0, 4 * OS), c1_view);
}

#[test]
fn resize_grows_freely_and_shrinks_only_by_force() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    let a = pattern(3, 2 * OS as usize);
    e.write("vol", SIZE - 2 * OS, &a);
    e.m.resize("vol", 2 * SIZE, false).unwrap();
    assert_eq!(e.m.info("vol").unwrap().size, 2 * SIZE);
    assert_eq!(e.read("vol", SIZE - 2 * OS, 2 * OS), a);
    assert_eq!(e.read("vol", SIZE, SIZE), vec![0; SIZE as usize]);

    assert_eq!(
        e.m.resize("vol", SIZE - OS, false).unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    e.m.resize("vol", SIZE - OS - 512, true).unwrap();
    assert_eq!(
        e.m.map_read("vol", SIZE - OS, 1).unwrap_err().code,
        ErrorCode::OutOfRange
    );
    assert_eq!(
        e.m.map_write("vol", SIZE - OS - 512, 1).unwrap_err().code,
        ErrorCode::OutOfRange
    );
    assert_eq!(
        e.read("vol", SIZE - 2 * OS, OS - 512),
        a[..OS as usize - 512].to_vec()
    );
    // A larger clone of a snapshot taken after the shrink reads zeros past
    // the cut, not the old bytes.
    e.m.snapshot("vol", "small").unwrap();
    e.m.clone_volume("small", "big", Some(SIZE)).unwrap();
    assert_eq!(
        e.read("big", SIZE - OS - 512, OS + 512),
        vec![0; OS as usize + 512]
    );
    // Growing again exposes zeros where the tail was cut, not old data.
    e.m.resize("vol", SIZE, false).unwrap();
    assert_eq!(
        e.read("vol", SIZE - OS - 512, OS + 512),
        vec![0; OS as usize + 512]
    );
    // A partly covered last object: a write covering its in-volume part is full.
    e.m.resize("vol", SIZE - 512, true).unwrap();
    e.write("vol", SIZE - OS, &vec![9u8; OS as usize - 512]);
    assert_eq!(
        e.read("vol", SIZE - OS, OS - 512),
        vec![9u8; OS as usize - 512]
    );
}

#[test]
fn opens_share_the_lock_and_other_hosts_are_locked_out() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    assert_eq!(
        e.maps.lock_owner("vol").unwrap(),
        None,
        "create releases its lock"
    );
    e.m.open("vol", true).unwrap();
    e.m.open("vol", true).unwrap();
    assert_eq!(e.maps.lock_owner("vol").unwrap().unwrap().0, "host1");
    e.m.close("vol").unwrap();
    assert_eq!(e.maps.lock_owner("vol").unwrap().unwrap().0, "host1");

    let h2 = e.other("host2");
    let err = h2.open("vol", true).unwrap_err();
    assert_eq!(err.code, ErrorCode::Locked);
    assert_eq!(err.detail, "host1");
    assert_eq!(
        h2.map_write("vol", 0, 1).unwrap_err().code,
        ErrorCode::Locked
    );
    assert_eq!(h2.snapshot("vol", "s").unwrap_err().code, ErrorCode::Locked);
    assert_eq!(h2.remove("vol").unwrap_err().code, ErrorCode::Locked);
    assert_eq!(
        h2.resize("vol", 2 * SIZE, false).unwrap_err().code,
        ErrorCode::Locked
    );
    // Reads and read-only opens need no lock.
    e.write("vol", 0, b"shared");
    h2.open("vol", false).unwrap();
    assert_eq!(
        &common::read(&h2, &*e.data, "vol", 0, 6).unwrap()[..],
        b"shared"
    );
    // A create of an open volume's name fails and keeps its lock (bug 7.3.13).
    assert_eq!(
        e.m.create("vol", SIZE, None).unwrap_err().code,
        ErrorCode::Exists
    );
    assert_eq!(
        e.m.snapshot("x", "vol").unwrap_err().code,
        ErrorCode::Exists
    );
    assert_eq!(e.maps.lock_owner("vol").unwrap().unwrap().0, "host1");

    e.m.close("vol").unwrap();
    assert_eq!(e.maps.lock_owner("vol").unwrap(), None);
    assert_eq!(e.m.close("vol").unwrap_err().code, ErrorCode::NotFound);
    h2.open("vol", true).unwrap();
    assert_eq!(e.maps.lock_owner("vol").unwrap().unwrap().0, "host2");
    h2.close("vol").unwrap();
}

#[test]
fn a_broken_lock_fences_the_old_owner() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    e.m.open("vol", true).unwrap();
    e.write("vol", 0, b"mine");
    // Broken as `vlmc unlock --force` breaks it: the data store's fence
    // first. The old owner's first write is refused: at its map (a
    // fenced delete of a possible orphan) or, in a volume created here
    // where no orphan can exist, at its data write (fenced at the data
    // store) and its commit (fenced at the map store).
    let (_, token) = e.maps.lock_owner("vol").unwrap().unwrap();
    e.data.raise_fence("vol", token + 1).unwrap();
    e.maps.break_lock("vol").unwrap();
    let h2 = e.other("host2");
    h2.open("vol", true).unwrap();
    let code = match e.m.map_write("vol", OS, 1) {
        Err(err) => err.code,
        Ok(ext) => {
            let obj = ext[0].object.clone().unwrap();
            let fence = archipelago_store::Fence { lock: "vol", token };
            let refused = e.data.write_fenced(&obj, 0, b"x", true, fence);
            assert!(
                matches!(
                    refused,
                    Err(archipelago_store::StoreError::StaleToken { .. })
                ),
                "{refused:?}"
            );
            e.m.commit_writes("vol", &[1]).unwrap_err().code
        }
    };
    assert_eq!(code, ErrorCode::Fenced);
    assert_eq!(e.maps.lock_owner("vol").unwrap().unwrap().0, "host2");
    assert!(!e.m.is_open("vol"));
}

#[test]
fn removing_marks_removed_and_refuses_snapshots_with_clones() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    e.write("vol", 0, b"x");
    e.m.snapshot("vol", "s1").unwrap();
    e.m.clone_volume("s1", "c1", None).unwrap();
    let err = e.m.remove("s1").unwrap_err();
    assert_eq!(err.code, ErrorCode::InUse);
    assert!(err.detail.contains("c1"), "{err}");
    e.m.remove("c1").unwrap();
    assert!(e.m.info("c1").unwrap().removed);
    assert_eq!(e.m.open("c1", false).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(
        e.m.map_read("c1", 0, 1).unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(e.m.remove("c1").unwrap_err().code, ErrorCode::NotFound);
    e.m.remove("s1").unwrap();
    // The volume itself (parent s1, same id) never blocked the removal.
    e.m.close("vol").unwrap();
    e.m.open("vol", true).unwrap();
    e.m.remove("vol").unwrap();
    assert!(!e.m.is_open("vol"));
    assert_eq!(e.maps.lock_owner("vol").unwrap(), None);
}

#[test]
fn rename_keeps_the_data() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    e.write("vol", 100, b"data");
    assert_eq!(e.m.rename("vol", "new").unwrap_err().code, ErrorCode::Busy);
    e.m.close("vol").unwrap();
    let id = e.m.info("vol").unwrap().volume_id;
    e.m.create("taken", SIZE, None).unwrap();
    assert_eq!(
        e.m.rename("vol", "taken").unwrap_err().code,
        ErrorCode::Exists
    );
    e.m.rename("vol", "new").unwrap();
    assert_eq!(e.m.info("vol").unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(e.m.info("new").unwrap().volume_id, id);
    assert_eq!(&e.read("new", 100, 4)[..], b"data");
    e.write("new", 104, b"more");
    assert_eq!(&e.read("new", 100, 8)[..], b"datamore");
    // The name is free again.
    e.m.create("vol", SIZE, None).unwrap();
}

#[test]
fn missing_owned_objects_read_as_zeros() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    // A first write to a zero entry is pending: the entry commits after
    // the data. Here the data write never comes (a crashed client) and the
    // commit comes anyway: the entry names a missing owned object.
    let ext = e.m.map_write("vol", 0, 10).unwrap();
    assert!(ext[0].pending && ext[0].missing_reads_zero);
    let obj = ext[0].object.clone().unwrap();
    assert!(e.data.stat(&obj).is_err(), "no data written");
    assert!(e.m.map_read("vol", 0, 10).unwrap()[0].object.is_none());
    e.m.commit_writes("vol", &[0]).unwrap();
    let r = e.m.map_read("vol", 0, 10).unwrap();
    assert_eq!(r[0].object.as_deref(), Some(obj.as_str()));
    assert_eq!(e.read("vol", 0, OS), vec![0; OS as usize]);
    // A copy-up from such an entry after a snapshot copies zeros.
    e.m.snapshot("vol", "s").unwrap();
    e.write("vol", 1, b"z");
    let mut expect = vec![0u8; OS as usize];
    expect[1] = b'z';
    assert_eq!(e.read("vol", 0, OS), expect);
    assert_eq!(e.read("s", 0, OS), vec![0; OS as usize]);
}

#[test]
fn concurrent_writers_on_one_volume() {
    let e = std::sync::Arc::new(Env::new());
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    e.m.open("vol", true).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let e = e.clone();
            s.spawn(move || {
                for i in 0..8u64 {
                    let idx = u64::from(t) * 8 + i;
                    e.write("vol", idx * OS, &pattern(t + i as u8, OS as usize));
                }
            });
        }
    });
    for t in 0..4u8 {
        for i in 0..8u64 {
            let idx = u64::from(t) * 8 + i;
            assert_eq!(
                e.read("vol", idx * OS, OS),
                pattern(t + i as u8, OS as usize)
            );
        }
    }
}

#[test]
fn objects_cut_off_by_a_shrink_do_not_come_back_with_old_bytes_on_a_grow() {
    let e = Env::new();
    e.m.create("vol", 4 * OS, Some(OS)).unwrap();
    let data = pattern(9, 4 * OS as usize);
    e.write("vol", 0, &data);
    e.m.resize("vol", 2 * OS, true).unwrap();
    e.m.resize("vol", 4 * OS, false).unwrap();
    // A partial write re-owns object 3 under the same epoch: the rest of
    // it must read as zeros, not as the bytes written before the shrink.
    e.write("vol", 3 * OS, b"new");
    let back = e.read("vol", 3 * OS, OS);
    assert_eq!(&back[..3], b"new");
    assert!(
        back[3..].iter().all(|&b| b == 0),
        "stale bytes after shrink and grow"
    );
    assert_eq!(e.read("vol", 2 * OS, OS), vec![0; OS as usize]);
    assert_eq!(e.read("vol", 0, 2 * OS), data[..2 * OS as usize]);
}

#[test]
fn a_snapshot_cannot_be_removed_while_a_clone_depends_on_it_through_later_snapshots() {
    let e = Env::new();
    e.m.create("base", 4 * OS, Some(OS)).unwrap();
    e.write("base", 0, &pattern(1, OS as usize));
    e.m.snapshot("base", "gold").unwrap();
    e.m.clone_volume("gold", "vm", None).unwrap();
    e.write("vm", 0, b"vm");
    // The clone is snapshotted (as an export of a writable volume does)
    // and that snapshot removed again: its lineage still leads to gold.
    e.m.snapshot("vm", "vm-export").unwrap();
    e.m.remove("vm-export").unwrap();
    let refused = e.m.remove("gold").unwrap_err();
    assert_eq!(refused.code, ErrorCode::InUse);
    assert!(refused.detail.contains("vm"), "{refused}");
    // Snapshots of the snapshot's own volume are not clones of it.
    e.m.snapshot("base", "later").unwrap();
    e.m.remove("vm").unwrap();
    e.m.remove("gold").unwrap();
}

#[test]
fn a_fenced_owner_cannot_copy_up_over_the_new_owners_data() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    e.m.open("vol", true).unwrap();
    e.write("vol", 0, &pattern(1, OS as usize));
    e.m.snapshot("vol", "snap").unwrap();
    // host1 keeps the volume open (its header cached), its lock is broken
    // as `vlmc unlock --force` breaks it (the data store's fence raised
    // past the holder's token first), and host2 overwrites object 0 in
    // full.
    let (_, token) = e.maps.lock_owner("vol").unwrap().unwrap();
    e.data.raise_fence("vol", token + 1).unwrap();
    e.maps.break_lock("vol").unwrap();
    let h2 = e.other("host2");
    h2.open("vol", true).unwrap();
    let theirs = pattern(2, OS as usize);
    common::write(&h2, &*e.data, "vol", 0, &theirs).unwrap();
    // host1's partial write would copy the snapshot's object up over
    // host2's: the data store refuses the copy-up (fenced).
    let err = e.m.map_write("vol", 10, 5).unwrap_err();
    assert_eq!(err.code, ErrorCode::Fenced);
    assert_eq!(common::read(&h2, &*e.data, "vol", 0, OS).unwrap(), theirs);
    h2.close("vol").unwrap();
}

#[test]
fn a_first_write_never_exposes_an_orphan_of_an_uncommitted_round() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    // A first write whose data landed but whose commit never came (the
    // composer crashed): an orphan under the volume's own name.
    let ext = e.m.map_write("vol", 0, OS).unwrap();
    let obj = ext[0].object.clone().unwrap();
    e.data.write(&obj, 0, &[0xee; OS as usize], true).unwrap();
    // The implicit open of map_write is closed, the round abandoned.
    e.m.close("vol").unwrap();
    assert!(!e.m.is_open("vol"));
    assert_eq!(e.maps.lock_owner("vol").unwrap(), None);
    // The next first write is partial: the bytes around it read as zeros,
    // not as the orphan's.
    e.write("vol", 100, b"new");
    let mut expect = vec![0u8; OS as usize];
    expect[100..103].copy_from_slice(b"new");
    assert_eq!(e.read("vol", 0, OS), expect);
}

#[test]
fn a_batch_commits_the_valid_requests_and_fails_the_others_alone() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    for i in 0..3 {
        let ext = e.m.map_write("vol", i * OS, 8).unwrap();
        assert!(ext[0].pending);
        let obj = ext[0].object.clone().unwrap();
        e.data.write(&obj, 0, &[i as u8 + 1; 8], true).unwrap();
    }
    let r = e.m.commit_batch("vol", &[&[0], &[7], &[1, 2]]);
    assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
    assert_eq!(r[1].as_ref().unwrap_err().code, ErrorCode::InvalidArgument);
    for i in 0..3u64 {
        assert_eq!(e.read("vol", i * OS, 8), vec![i as u8 + 1; 8]);
    }
    // Committed: a late commit of the same object (a write mapped before
    // the first commit, issue 14) finds it the volume's own and succeeds;
    // an object never written still fails.
    e.m.commit_writes("vol", &[0]).unwrap();
    assert_eq!(
        e.m.commit_writes("vol", &[5]).unwrap_err().code,
        ErrorCode::InvalidArgument
    );
}

#[test]
fn an_abandoned_pending_write_blocks_snapshots_until_forgotten() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    e.write("vol", 0, b"kept");
    // A first write whose data failed: the composer never commits it.
    let ext = e.m.map_write("vol", OS, 8).unwrap();
    assert!(ext[0].pending);
    assert_eq!(
        e.m.snapshot("vol", "s").unwrap_err().code,
        ErrorCode::Busy,
        "uncommitted writes"
    );
    // The composer's barrier, its I/O drained, forgets it.
    assert_eq!(e.m.forget_pending("vol"), vec![1]);
    assert!(e.m.forget_pending("vol").is_empty());
    e.m.snapshot("vol", "s").unwrap();
    assert_eq!(&e.read("s", 0, 4)[..], b"kept");
    assert_eq!(e.read("s", OS, 8), vec![0; 8]);
    // The forgotten index takes writes again, as a first write.
    e.write("vol", OS, b"again");
    assert_eq!(&e.read("vol", OS, 5)[..], b"again");
}

/// An exclusive open (an export) holds the volume unchanged: refused while
/// it is open for writing here; while held, other opens and writes are
/// refused; a close releases it.
#[test]
fn an_exclusive_open_holds_the_volume_unchanged() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    e.write("vol", 0, b"before");
    assert_eq!(
        e.m.open_exclusive("vol").unwrap_err().code,
        ErrorCode::Busy,
        "the write's implicit open is still there"
    );
    e.m.close("vol").unwrap();
    e.m.open_exclusive("vol").unwrap();
    assert_eq!(
        e.m.map_write("vol", 0, 4).unwrap_err().code,
        ErrorCode::Busy
    );
    assert_eq!(e.m.open("vol", true).unwrap_err().code, ErrorCode::Busy);
    assert_eq!(&e.read("vol", 0, 6)[..], b"before");
    let other = e.other("host2");
    assert_eq!(other.open("vol", true).unwrap_err().code, ErrorCode::Locked);
    e.m.close("vol").unwrap();
    e.write("vol", 0, b"after!");
    assert_eq!(&e.read("vol", 0, 6)[..], b"after!");
}

/// A forced remove deletes only a map that is certainly corrupt: a
/// readable one and a missing one are refused.
#[test]
fn remove_corrupt_removes_only_a_corrupt_map() {
    let e = Env::new();
    e.m.create("ok", SIZE, Some(OS)).unwrap();
    e.m.create("bad", SIZE, Some(OS)).unwrap();
    assert_eq!(
        e.m.remove_corrupt("ok").unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        e.m.remove_corrupt("nope").unwrap_err().code,
        ErrorCode::NotFound
    );
    let mut bytes = vec![0u8; 4096];
    let n = e.maps.read("bad", 0, &mut bytes).unwrap() as usize;
    bytes.truncate(n);
    bytes[40] ^= 0xff;
    e.maps.write_full("bad", &bytes, true).unwrap();
    assert_eq!(e.m.info("bad").unwrap_err().code, ErrorCode::Io);
    e.m.remove_corrupt("bad").unwrap();
    assert_eq!(e.m.info("bad").unwrap_err().code, ErrorCode::NotFound);
    assert!(e.m.info("ok").is_ok());
    assert_eq!(e.maps.lock_owner("bad").unwrap(), None);
}
