//! Issue 15, "commits and copy-ups off the volume's lock": a partial write
//! to a shared object copies it up with the volume's state unlocked, so
//! writes to other objects of the volume go on meanwhile; only writes to
//! the same object wait for the copy.

mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use archipelago_mapper::Mapper;
use archipelago_protocol::ErrorCode;
use archipelago_store::{Fault, FaultyStore, Gate, MemoryStore, ObjectStore, OpKind, Rule};
use common::{pattern, OS};

/// Long enough for any map_write that does not wait for the held copy.
const PATIENCE: Duration = Duration::from_secs(20);

struct Env {
    data: Arc<FaultyStore<MemoryStore>>,
    m: Arc<Mapper>,
}

/// A volume "vol" of 4 objects, all written, then snapshotted: every
/// object is shared with the snapshot.
fn shared_volume() -> (Env, Vec<u8>) {
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(FaultyStore::new(MemoryStore::new()));
    let m = Arc::new(Mapper::new(maps, data.clone(), "host1".into()));
    m.create("vol", 4 * OS, Some(OS)).unwrap();
    let all = pattern(5, 4 * OS as usize);
    common::write(&m, &*data, "vol", 0, &all).unwrap();
    m.snapshot("vol", "snap").unwrap();
    (Env { data, m }, all)
}

/// Holds the next copy into the volume's object `index` (current epoch).
fn hold_copy_of(env: &Env, index: u64) -> Gate {
    let gate = Gate::new();
    let ext = env.m.map_read("vol", index * OS, 1).unwrap();
    // The shared object's name: the copy-up's source.
    let src = ext[0].object.clone().unwrap();
    env.data.add_rule(
        Rule::new(OpKind::Copy, Fault::Hold(gate.clone()))
            .names_with_prefix(src)
            .times(1),
    );
    gate
}

/// map_write on another thread; its result arrives on the channel.
fn map_write_async(
    env: &Env,
    offset: u64,
    len: u64,
) -> mpsc::Receiver<Result<Vec<archipelago_mapper::Extent>, archipelago_protocol::Error>> {
    let (tx, rx) = mpsc::channel();
    let m = env.m.clone();
    std::thread::spawn(move || {
        let _ = tx.send(m.map_write("vol", offset, len));
    });
    rx
}

#[test]
fn a_copy_up_in_flight_does_not_hold_up_writes_to_other_objects() {
    let (env, _) = shared_volume();
    let gate = hold_copy_of(&env, 0);
    let first = map_write_async(&env, 10, 100);
    assert!(
        gate.wait_arrived(1, PATIENCE),
        "the copy-up of object 0 never started"
    );
    // Object 1 is shared too: its own copy-up, and the write, must not
    // wait for object 0's.
    let second = map_write_async(&env, OS + 10, 100);
    let ext = second
        .recv_timeout(PATIENCE)
        .expect("a write to object 1 waited for the copy-up of object 0")
        .unwrap();
    assert!(ext[0].pending && ext[0].object.is_some(), "{ext:?}");
    gate.open();
    let ext0 = first.recv_timeout(PATIENCE).unwrap().unwrap();
    assert!(ext0[0].pending, "{ext0:?}");
    // Finish both rounds as the composer does: data, then the commit.
    for (e, seed) in [(&ext0[0], 1u8), (&ext[0], 2u8)] {
        let obj = e.object.as_ref().unwrap();
        env.data
            .write(obj, e.offset_in_object, &pattern(seed, 100), true)
            .unwrap();
        env.m.commit_writes("vol", &[e.index]).unwrap();
    }
    let mut expect = pattern(5, 4 * OS as usize);
    expect[10..110].copy_from_slice(&pattern(1, 100));
    expect[(OS + 10) as usize..(OS + 110) as usize].copy_from_slice(&pattern(2, 100));
    assert!(common::read(&env.m, &*env.data, "vol", 0, 4 * OS).unwrap() == expect);
    // The snapshot still reads as it was.
    assert!(
        common::read(&env.m, &*env.data, "snap", 0, 4 * OS).unwrap() == pattern(5, 4 * OS as usize)
    );
}

#[test]
fn a_write_to_an_object_being_copied_up_waits_for_the_copy() {
    let (env, all) = shared_volume();
    let gate = hold_copy_of(&env, 2);
    let first = map_write_async(&env, 2 * OS, 10);
    assert!(gate.wait_arrived(1, PATIENCE));
    let second = map_write_async(&env, 2 * OS + 100, 10);
    // The second write must not be told where to write before the copy
    // is done: its data would land under the copy.
    assert!(
        second.recv_timeout(Duration::from_millis(300)).is_err(),
        "a write to object 2 was mapped while its copy-up was in flight"
    );
    gate.open();
    let a = first.recv_timeout(PATIENCE).unwrap().unwrap();
    let b = second.recv_timeout(PATIENCE).unwrap().unwrap();
    assert!(a[0].pending && b[0].pending);
    assert_eq!(a[0].object, b[0].object);
    let obj = a[0].object.clone().unwrap();
    env.data.write(&obj, 0, b"first-wrt!", true).unwrap();
    env.data.write(&obj, 100, b"second-wr!", true).unwrap();
    env.m.commit_writes("vol", &[2]).unwrap();
    let mut expect = all[(2 * OS) as usize..(3 * OS) as usize].to_vec();
    expect[..10].copy_from_slice(b"first-wrt!");
    expect[100..110].copy_from_slice(b"second-wr!");
    assert!(common::read(&env.m, &*env.data, "vol", 2 * OS, OS).unwrap() == expect);
}

#[test]
fn a_failed_copy_up_leaves_the_object_shared_and_a_later_write_copies_again() {
    let (env, all) = shared_volume();
    env.data.fail_next(OpKind::Copy, Fault::NoSpace);
    assert_eq!(
        env.m.map_write("vol", OS + 1, 1).unwrap_err().code,
        ErrorCode::NoSpace
    );
    // Not pending: a barrier is not refused, and the next write copies.
    env.m.snapshot("vol", "snap2").unwrap();
    common::write(&env.m, &*env.data, "vol", OS + 1, b"x").unwrap();
    let mut expect = all.clone();
    expect[(OS + 1) as usize] = b'x';
    assert!(common::read(&env.m, &*env.data, "vol", 0, 4 * OS).unwrap() == expect);
    assert!(common::read(&env.m, &*env.data, "snap2", 0, 4 * OS).unwrap() == all);
}

#[test]
fn a_copied_up_object_whose_round_never_commits_reads_as_before() {
    let (env, all) = shared_volume();
    let ext = env.m.map_write("vol", 3 * OS + 7, 5).unwrap();
    assert!(ext[0].pending);
    env.data
        .write(ext[0].object.as_ref().unwrap(), 7, b"lost!", true)
        .unwrap();
    // No commit (the round failed, or the host crashed): the map still
    // names the shared object.
    assert_eq!(env.m.forget_pending("vol"), vec![3]);
    assert!(common::read(&env.m, &*env.data, "vol", 0, 4 * OS).unwrap() == all);
}

/// Issue 15: a copy-up is not synced on its own; the durable data write
/// it makes room for syncs the object once (the copied bytes and the new
/// ones, as qcow2 writes a cluster's copy-on-write with its data), so a
/// first write into a clone pays one flush of its object, not two. What
/// the write acknowledged then survives a power loss, and so does the
/// parent's data around it.
#[test]
fn a_copy_up_is_made_durable_by_the_write_it_is_for() {
    use archipelago_store::VolatileStore;
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(VolatileStore::new());
    let m = Mapper::new(maps.clone(), data.clone(), "host1".into());
    m.create("vol", 2 * OS, Some(OS)).unwrap();
    let old = pattern(9, 2 * OS as usize);
    common::write(&m, &*data, "vol", 0, &old).unwrap();
    m.snapshot("vol", "snap").unwrap();
    m.clone_volume("snap", "vm", None).unwrap();
    data.sync().unwrap();
    let ext = m.map_write("vm", 100, 10).unwrap();
    let own = ext[0].object.clone().unwrap();
    assert!(ext[0].pending);
    assert_eq!(
        data.dirty_objects(),
        vec![own.clone()],
        "the copy-up was synced on its own"
    );
    data.write(&own, 100, b"0123456789", true).unwrap();
    assert!(data.dirty_objects().is_empty());
    m.commit_writes("vm", &[0]).unwrap();
    data.crash();
    let after = Mapper::new(maps, data.clone(), "host1".into());
    let mut expect = old.clone();
    expect[100..110].copy_from_slice(b"0123456789");
    assert!(common::read(&after, &*data, "vm", 0, 2 * OS).unwrap() == expect);
}

/// The copy-up is fenced at the data store (the mapper no longer asks
/// the map store for its lock first): once another host broke the lock
/// and raised the data store's fence, a copy-up of the old holder copies
/// nothing, and its write fails.
#[test]
fn a_copy_up_under_a_broken_lock_copies_nothing() {
    let (env, _) = shared_volume();
    // The volume is open here (a first write opened it).
    env.m.map_write("vol", 0, 1).unwrap();
    let before = env.data.inner().list("").unwrap();
    // Another host breaks the lock: the data store's fence rises past
    // every token handed out so far.
    env.data.raise_fence("vol", u64::MAX / 2).unwrap();
    let err = env.m.map_write("vol", OS + 10, 10).unwrap_err();
    assert_eq!(err.code, ErrorCode::Fenced, "{err}");
    assert_eq!(
        env.data.inner().list("").unwrap(),
        before,
        "something was copied"
    );
}
