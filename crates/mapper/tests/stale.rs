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
