//! DISCARD / WRITE_ZEROES at the mapper: whole objects get zero entries,
//! partly covered ones come back as write extents to fill with zeros.

mod common;

use archipelago_mapper::Mapper;
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::ObjectStore;
use common::{pattern, Env, OS};

const SIZE: u64 = 16 * OS;

/// What vlmcd does: discard, then write zeros to the extents returned and
/// commit the pending ones.
fn discard(
    m: &Mapper,
    data: &dyn ObjectStore,
    name: &str,
    off: u64,
    len: u64,
) -> Result<(), Error> {
    let extents = m.discard(name, off, len)?;
    let mut pending = Vec::new();
    for e in &extents {
        let obj = e.object.as_ref().expect("discard extents name objects");
        data.write(obj, e.offset_in_object, &vec![0; e.len as usize], true)?;
        if e.pending {
            pending.push(e.index);
        }
    }
    if !pending.is_empty() {
        m.commit_writes(name, &pending)?;
    }
    Ok(())
}

fn expect(full: &[u8], off: u64, len: u64) -> Vec<u8> {
    let mut v = full.to_vec();
    v[off as usize..(off + len) as usize].fill(0);
    v
}

#[test]
fn whole_objects_get_zero_entries_and_partial_ones_are_written_with_zeros() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    let all = pattern(3, 4 * OS as usize);
    e.write("vol", 0, &all);
    let own1 = e.m.map_read("vol", OS, 1).unwrap()[0]
        .object
        .clone()
        .unwrap();
    assert!(e.data.stat(&own1).is_ok());

    // Objects 0 (tail), 1 (whole), 2 (head).
    let (off, len) = (OS / 2, 2 * OS);
    let extents = e.m.discard("vol", off, len).unwrap();
    assert_eq!(
        extents
            .iter()
            .map(|x| (x.index, x.offset_in_object, x.len))
            .collect::<Vec<_>>(),
        [(0, OS / 2, OS / 2), (2, 0, OS / 2)]
    );
    assert!(extents.iter().all(|x| x.object.is_some() && !x.pending));
    for x in &extents {
        let obj = x.object.as_ref().unwrap();
        e.data
            .write(obj, x.offset_in_object, &vec![0; x.len as usize], true)
            .unwrap();
    }
    assert_eq!(e.read("vol", 0, 4 * OS), expect(&all, off, len));
    // The whole object's entry is zero, and its private object is gone.
    let r = e.m.map_read("vol", 0, 4 * OS).unwrap();
    assert_eq!(r[1].object, None);
    assert!(r[0].object.is_some() && r[2].object.is_some());
    assert!(e.data.stat(&own1).is_err(), "a private object is deleted");

    // A later partial write to the discarded object does not expose old
    // bytes.
    e.write("vol", OS + 10, b"xy");
    let mut want = vec![0u8; OS as usize];
    want[10..12].copy_from_slice(b"xy");
    assert_eq!(e.read("vol", OS, OS), want);

    // Partial ranges over zero entries need nothing; the last, short
    // object of a volume counts as whole when covered to the end.
    assert!(e.m.discard("vol", 8 * OS + 1, 10).unwrap().is_empty());
    e.m.resize("vol", SIZE + OS / 2, false).unwrap();
    e.write("vol", SIZE, &[9; 100]);
    assert!(e.m.discard("vol", SIZE, OS / 2).unwrap().is_empty());
    assert_eq!(e.m.map_read("vol", SIZE, 1).unwrap()[0].object, None);
    assert_eq!(e.read("vol", SIZE, OS / 2), vec![0; OS as usize / 2]);
    e.m.close("vol").unwrap();
}

#[test]
fn discard_of_a_clone_leaves_the_parent_snapshot_intact() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    let all = pattern(5, 4 * OS as usize);
    e.write("vol", 0, &all);
    e.m.snapshot("vol", "snap").unwrap();
    e.m.clone_volume("snap", "clone", None).unwrap();

    let (off, len) = (OS / 4, 3 * OS);
    let extents = e.m.discard("clone", off, len).unwrap();
    // Partial objects of the clone were copied up: they name the clone's
    // own objects, not the snapshot's.
    let snap_names: Vec<_> =
        e.m.map_read("snap", 0, 4 * OS)
            .unwrap()
            .into_iter()
            .map(|x| x.object.unwrap())
            .collect();
    for x in &extents {
        assert!(!snap_names.contains(x.object.as_ref().unwrap()));
    }
    for x in &extents {
        let obj = x.object.as_ref().unwrap();
        e.data
            .write(obj, x.offset_in_object, &vec![0; x.len as usize], true)
            .unwrap();
    }
    // Copied up, they are pending: committed after their zeros landed.
    let pending: Vec<u64> = extents
        .iter()
        .filter(|x| x.pending)
        .map(|x| x.index)
        .collect();
    assert_eq!(pending, [0, 3]);
    e.m.commit_writes("clone", &pending).unwrap();
    assert_eq!(e.read("clone", 0, 4 * OS), expect(&all, off, len));
    assert_eq!(e.read("snap", 0, 4 * OS), all, "the snapshot is intact");
    for n in &snap_names {
        assert!(e.data.stat(n).is_ok(), "shared object {n} is kept");
    }

    // The same on the volume itself (its objects are the snapshot's now,
    // at an older epoch): the snapshot keeps reading the old data.
    discard(&e.m, &*e.data, "vol", 0, 4 * OS).unwrap();
    assert_eq!(e.read("vol", 0, 4 * OS), vec![0; 4 * OS as usize]);
    assert!(e
        .m
        .map_read("vol", 0, 4 * OS)
        .unwrap()
        .iter()
        .all(|x| x.object.is_none()));
    assert_eq!(e.read("snap", 0, 4 * OS), all);
    // A later partial write copies nothing stale.
    e.write("vol", 3, b"abc");
    let mut want = vec![0u8; OS as usize];
    want[3..6].copy_from_slice(b"abc");
    assert_eq!(e.read("vol", 0, OS), want);
}

#[test]
fn discard_of_a_partly_covered_shared_object_copies_it_up() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    let all = pattern(9, 2 * OS as usize);
    e.write("vol", 0, &all);
    e.m.snapshot("vol", "s").unwrap();
    discard(&e.m, &*e.data, "vol", 100, 200).unwrap();
    assert_eq!(e.read("vol", 0, 2 * OS), expect(&all, 100, 200));
    assert_eq!(e.read("s", 0, 2 * OS), all);
}

#[test]
fn snapshots_ranges_and_locks_are_refused() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    e.write("vol", 0, &pattern(1, OS as usize));
    e.m.snapshot("vol", "snap").unwrap();
    assert_eq!(
        e.m.discard("snap", 0, OS).unwrap_err().code,
        ErrorCode::ReadOnly
    );
    assert_eq!(e.read("snap", 0, OS), pattern(1, OS as usize));
    assert_eq!(
        e.m.discard("vol", SIZE - 1, 2).unwrap_err().code,
        ErrorCode::OutOfRange
    );
    assert_eq!(
        e.m.discard("vol", u64::MAX, 2).unwrap_err().code,
        ErrorCode::OutOfRange
    );
    assert_eq!(
        e.m.discard("nope", 0, 1).unwrap_err().code,
        ErrorCode::NotFound
    );
    // Another host holding the volume's lock.
    let other = e.other("host2");
    assert_eq!(
        other.discard("vol", 0, OS).unwrap_err().code,
        ErrorCode::Locked
    );
    e.m.close("vol").unwrap();
    assert!(other.discard("vol", 0, OS).unwrap().is_empty());
    assert_eq!(
        common::read(&other, &*e.data, "vol", 0, OS).unwrap(),
        vec![0; OS as usize]
    );
}

#[test]
fn a_pending_full_overwrite_then_a_discard() {
    // A full overwrite of a shared object is pending while a discard of
    // the same object runs: whichever commits last wins, and nothing
    // stale shows.
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    e.write("vol", 0, &pattern(1, OS as usize));
    e.m.snapshot("vol", "s").unwrap();
    let w = e.m.map_write("vol", 0, OS).unwrap();
    assert!(w[0].pending);
    e.data
        .write(
            w[0].object.as_ref().unwrap(),
            0,
            &pattern(2, OS as usize),
            true,
        )
        .unwrap();
    discard(&e.m, &*e.data, "vol", 0, OS).unwrap();
    assert_eq!(e.read("vol", 0, OS), vec![0; OS as usize]);
    // The overwrite's commit comes after: its data is gone with the
    // discard, so the object reads as zeros still (the discard won).
    e.m.commit_writes("vol", &[0]).unwrap();
    assert_eq!(e.read("vol", 0, OS), vec![0; OS as usize]);
    assert_eq!(e.read("s", 0, OS), pattern(1, OS as usize));
}
