//! Issue 14: "Shrink then grow must never show bytes of a write that was
//! never acknowledged", and writes racing the commit of their object.
//! An orphan is a data object of the volume's current epoch that no entry
//! names: the data of a round that was never committed (its data failed
//! and the round was abandoned, or a crash came before the commit).

mod common;

use archipelago_store::ObjectStore;
use common::{pattern, Env, OS};

/// A first write to object `index` of `vol` whose data landed and whose
/// commit never came; the barrier that follows forgets it, as vlmcd's
/// DRAINED barriers do.
fn abandon_round(env: &Env, vol: &str, index: u64, len: u64, seed: u8) {
    let ext = env.m.map_write(vol, index * OS, len).unwrap();
    assert!(ext[0].pending, "{ext:?}");
    let obj = ext[0].object.clone().unwrap();
    env.data
        .write(&obj, 0, &pattern(seed, len as usize), true)
        .unwrap();
    assert_eq!(env.m.forget_pending(vol), vec![index]);
}

#[test]
fn an_orphan_under_a_zero_entry_never_reappears_after_shrink_and_grow() {
    let env = Env::new();
    env.m.create("vol", 2 * OS, Some(OS)).unwrap();
    abandon_round(&env, "vol", 1, OS, 9);
    // Shrink into object 1, write all of it that is left (a "full" write
    // of the last object), grow again: the cut half must read as zeros.
    env.m.resize("vol", OS + OS / 2, true).unwrap();
    env.write("vol", OS, &pattern(4, (OS / 2) as usize));
    env.m.resize("vol", 2 * OS, false).unwrap();
    assert!(
        env.read("vol", OS + OS / 2, OS / 2) == vec![0; (OS / 2) as usize],
        "bytes of a write that was never acknowledged came back"
    );
    assert!(env.read("vol", OS, OS / 2) == pattern(4, (OS / 2) as usize));
}

#[test]
fn a_copy_up_from_a_missing_owned_source_leaves_no_stale_bytes() {
    let env = Env::new();
    env.m.create("vol", 2 * OS, Some(OS)).unwrap();
    env.write("vol", 0, &pattern(1, OS as usize));
    let old = env.m.map_read("vol", 0, OS).unwrap()[0]
        .object
        .clone()
        .unwrap();
    env.m.snapshot("vol", "snap").unwrap();
    // A full overwrite of the now shared object 0, abandoned: its data
    // sits in the volume's new object.
    abandon_round(&env, "vol", 0, OS, 7);
    // The shared source goes missing (an owned entry naming a missing
    // object reads as zeros: a crash between a discard's delete and its
    // commit leaves exactly this).
    env.data.delete(&old).unwrap();
    assert!(env.read("vol", 0, OS) == vec![0; OS as usize]);
    // A partial write copies up from the missing source: the rest of the
    // object must still read as zeros, not as the abandoned round.
    env.write("vol", 0, b"new");
    let mut expect = vec![0; OS as usize];
    expect[..3].copy_from_slice(b"new");
    assert!(
        env.read("vol", 0, OS) == expect,
        "stale bytes after a copy-up"
    );
}

#[test]
fn a_shrink_into_a_shared_object_with_a_missing_source_leaves_no_stale_bytes() {
    let env = Env::new();
    env.m.create("vol", 2 * OS, Some(OS)).unwrap();
    env.write("vol", OS, &pattern(1, OS as usize));
    let old = env.m.map_read("vol", OS, OS).unwrap()[0]
        .object
        .clone()
        .unwrap();
    env.m.snapshot("vol", "snap").unwrap();
    abandon_round(&env, "vol", 1, OS, 7);
    env.data.delete(&old).unwrap();
    env.m.resize("vol", OS + 512, true).unwrap();
    env.m.resize("vol", 2 * OS, false).unwrap();
    assert!(
        env.read("vol", OS, OS) == vec![0; OS as usize],
        "stale bytes after shrinking into an object whose source is missing"
    );
}

/// Two writes to one unallocated object, both mapped before either
/// committed: the first commit makes the index the volume's own; the
/// second write's data landed in that same object, so its commit must
/// succeed, not fail with "no pending write".
#[test]
fn a_write_mapped_before_the_commit_of_its_object_commits() {
    let env = Env::new();
    env.m.create("vol", 2 * OS, Some(OS)).unwrap();
    let first = env.m.map_write("vol", 0, 10).unwrap();
    let second = env.m.map_write("vol", 100, 10).unwrap();
    assert!(first[0].pending && second[0].pending);
    let obj = first[0].object.clone().unwrap();
    assert_eq!(second[0].object.as_deref(), Some(obj.as_str()));
    env.data.write(&obj, 0, b"first-data", true).unwrap();
    env.m.commit_writes("vol", &[0]).unwrap();
    env.data.write(&obj, 100, b"secondData", true).unwrap();
    env.m.commit_writes("vol", &[0]).unwrap();
    assert_eq!(env.read("vol", 100, 10), b"secondData");
    // An index that was never written stays an error.
    assert!(env.m.commit_writes("vol", &[1]).is_err());
}

/// A volume created by this mapper and opened by it with the very next
/// lock token can hold no orphan: its first writes delete nothing (a
/// round trip to the data store each) and are mapped from the cache.
#[test]
fn first_writes_into_a_volume_created_here_delete_nothing() {
    use archipelago_store::{Fault, FaultyStore, MemoryStore, OpKind};
    use std::sync::Arc;
    for clone in [false, true] {
        let maps = Arc::new(MemoryStore::new());
        let data = Arc::new(FaultyStore::new(MemoryStore::new()));
        let m = archipelago_mapper::Mapper::new(maps.clone(), data.clone(), "host1".into());
        let vol = if clone {
            m.create("base", 8 * OS, Some(OS)).unwrap();
            common::write(&m, &*data, "base", 0, b"base").unwrap();
            m.close("base").unwrap();
            m.snapshot("base", "gold").unwrap();
            m.clone_volume("gold", "vm", None).unwrap();
            "vm"
        } else {
            m.create("vm", 8 * OS, Some(OS)).unwrap();
            "vm"
        };
        m.open(vol, true).unwrap();
        data.fail_always(OpKind::Delete, Fault::Io);
        // A partial first write on the full path, then one from the cache.
        common::write(&m, &*data, vol, OS + 10, b"first").unwrap();
        let fast = m.map_cached(vol, 2 * OS + 10, 4, true).unwrap().unwrap();
        assert!(fast[0].pending, "{fast:?}");
        let obj = fast[0].object.clone().unwrap();
        data.write(&obj, 10, b"fast", true).unwrap();
        m.commit_writes(vol, &[2]).unwrap();
        assert_eq!(data.injected(), 0, "a delete was tried");
        data.clear();
        let mut want = vec![0u8; OS as usize];
        want[10..15].copy_from_slice(b"first");
        assert_eq!(common::read(&m, &*data, vol, OS, OS).unwrap(), want);
        let mut want = vec![0u8; OS as usize];
        want[10..14].copy_from_slice(b"fast");
        assert_eq!(common::read(&m, &*data, vol, 2 * OS, OS).unwrap(), want);
        if clone {
            assert_eq!(common::read(&m, &*data, vol, 0, 4).unwrap(), b"base");
        }
    }
}

/// Another host held the lock between the creation here and the open
/// here: it may have left an orphan, which the first write deletes.
#[test]
fn an_orphan_left_by_another_open_since_the_creation_is_deleted() {
    let env = Env::new();
    env.m.create("vol", 2 * OS, Some(OS)).unwrap();
    let other = env.other("host2");
    let ext = other.map_write("vol", OS, 8).unwrap();
    assert!(ext[0].pending, "{ext:?}");
    let obj = ext[0].object.clone().unwrap();
    env.data
        .write(&obj, 0, &pattern(5, OS as usize), true)
        .unwrap();
    other.close("vol").unwrap();
    env.write("vol", OS + 100, b"new");
    let mut want = vec![0u8; OS as usize];
    want[100..103].copy_from_slice(b"new");
    assert!(env.read("vol", OS, OS) == want, "the orphan's bytes show");
}

/// A round abandoned in an open that began orphan-free (a barrier forgot
/// it) leaves an orphan: the next first write of the object deletes it.
#[test]
fn an_abandoned_round_ends_the_certainty_that_no_orphan_exists() {
    let env = Env::new();
    env.m.create("vol", 2 * OS, Some(OS)).unwrap();
    env.m.open("vol", true).unwrap();
    abandon_round(&env, "vol", 1, OS / 2, 3);
    env.write("vol", OS + OS / 2 + 7, b"new");
    let mut want = vec![0u8; OS as usize];
    want[(OS / 2 + 7) as usize..(OS / 2 + 10) as usize].copy_from_slice(b"new");
    assert!(env.read("vol", OS, OS) == want, "the orphan's bytes show");
}
