//! Dedup that saves space (issue 14): hashing a snapshot moves every map
//! that names the snapshot's objects (its origin, clones made from it,
//! their snapshots) onto the content objects, so that the old objects
//! become garbage. Open maps are moved by their lock holder, between
//! writes; an entry moves only if it still names the hashed object.

mod common;

use std::collections::BTreeSet;

use archipelago_mapper::Mapper;
use common::{pattern, read, write, Env, OS};

const N: u64 = 12;

/// Every object name the live map `name` refers to.
fn objects_of(m: &Mapper, name: &str) -> BTreeSet<String> {
    let size = m.info(name).unwrap().size;
    m.map_read(name, 0, size)
        .unwrap()
        .into_iter()
        .filter_map(|e| e.object)
        .collect()
}

/// A golden volume of `N` objects (patterns repeat: dedup finds
/// duplicates), its snapshot `gold-s`, and clones of it.
fn golden(env: &Env) -> BTreeSet<String> {
    env.m.create("gold", N * OS, Some(OS)).unwrap();
    for i in 0..N {
        env.write("gold", i * OS, &pattern((i % 5) as u8, OS as usize));
    }
    env.m.close("gold").unwrap();
    env.m.snapshot("gold", "gold-s").unwrap();
    let old = objects_of(&env.m, "gold-s");
    assert_eq!(old.len() as u64, N);
    old
}

#[test]
fn hashing_moves_the_origin_clones_and_their_snapshots_onto_content() {
    let env = Env::new();
    let old = golden(&env);
    // c1 stays open here (held by this mapper: the hasher is the holder),
    // c2 is closed (unlocked), c3 is closed with a snapshot taken before
    // the hash; each overwrote a few objects.
    for (k, c) in ["c1", "c2", "c3"].iter().enumerate() {
        env.m.clone_volume("gold-s", c, None).unwrap();
        let k = k as u64;
        env.write(c, k * OS, &pattern(200 + k as u8, OS as usize)); // full
        env.write(c, (k + 5) * OS + 7, &pattern(99, 100)); // partial: copy-up
    }
    env.m.close("c2").unwrap();
    env.m.close("c3").unwrap();
    env.m.snapshot("c3", "c3-s").unwrap();
    let maps = ["gold", "gold-s", "c1", "c2", "c3", "c3-s"];
    let before: Vec<Vec<u8>> = maps.iter().map(|v| env.read(v, 0, N * OS)).collect();

    env.m.hash("gold-s").unwrap();

    for (v, b) in maps.iter().zip(&before) {
        assert!(env.read(v, 0, N * OS) == *b, "{v} reads differently");
        let still: Vec<_> = objects_of(&env.m, v).intersection(&old).cloned().collect();
        assert!(
            still.is_empty(),
            "{v} still names the hashed objects {still:?}"
        );
    }
    // Writes go on as before on the open clone, over content entries.
    env.write("c1", 9 * OS + 3, &pattern(77, 10));
    let mut want = before[2].clone();
    want[(9 * OS + 3) as usize..(9 * OS + 13) as usize].copy_from_slice(&pattern(77, 10));
    assert!(env.read("c1", 0, N * OS) == want);
}

/// The rebase records left on the map store (and their list).
fn records(env: &Env) -> Vec<String> {
    use archipelago_store::ObjectStore;
    let mut r = env.maps.list("archip_rebase").unwrap();
    r.sort();
    r
}

#[test]
fn a_map_open_on_another_host_is_moved_by_its_holder_entry_by_entry() {
    let env = Env::new();
    let old = golden(&env);
    let b = env.other("host2");
    env.m.clone_volume("gold-s", "c2", None).unwrap();
    // Host 2 opens c2 (its writes take the lock) and overwrites object 1.
    write(&b, &*env.data, "c2", OS, &pattern(50, OS as usize)).unwrap();
    let a = env
        .other("host1")
        .with_rebase_wait(std::time::Duration::from_millis(100));
    let r = a.hash("gold-s").unwrap();
    // gold was closed: moved by the hash; c2 is host 2's to move.
    assert_eq!(r.maps_moved, 1, "{r:?}");
    assert_eq!(r.maps_left, vec!["c2".to_string()], "{r:?}");
    assert!(objects_of(&a, "gold").is_disjoint(&old));
    assert_eq!(
        records(&env).len(),
        2,
        "the record and the list stay for the holder"
    );
    // Host 2 writes on: a copy-up of object 3 (it still names the hashed
    // object) before its holder applies the record.
    write(&b, &*env.data, "c2", 3 * OS + 1, &pattern(51, 10)).unwrap();
    let want = read(&b, &*env.data, "c2", 0, N * OS).unwrap();
    assert_eq!(b.apply_rebases().unwrap(), 1);
    assert_eq!(b.apply_rebases().unwrap(), 0, "nothing left to do");
    assert!(read(&b, &*env.data, "c2", 0, N * OS).unwrap() == want);
    let objs = objects_of(&b, "c2");
    assert!(objs.is_disjoint(&old), "{objs:?}");
    // Its own objects (1, 3) stayed: compare-and-swap per entry.
    let own: Vec<_> = objs.iter().filter(|o| o.len() != 64).collect();
    assert_eq!(own.len(), 2, "{objs:?}");
    // Hashing again finds nothing left and deletes the record.
    let r = a.hash("gold-s").unwrap();
    assert!(r.maps_left.is_empty(), "{r:?}");
    assert!(records(&env).is_empty());
}

#[test]
fn the_hash_waits_while_the_holder_writes_and_moves_at_its_check() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::new();
    let old = golden(&env);
    let b = std::sync::Arc::new(env.other("host2"));
    for c in ["h1", "h2"] {
        env.m.clone_volume("gold-s", c, None).unwrap();
        write(&b, &*env.data, c, 2 * OS, &pattern(60, OS as usize)).unwrap();
    }
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    // Host 2: writes to h1 and applies records between them, as mapperd's
    // periodic check does.
    let holder = {
        let (b, stop, data) = (b.clone(), stop.clone(), env.data.clone());
        std::thread::spawn(move || {
            let mut model = read(&b, &*data, "h1", 0, N * OS).unwrap();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let at = (k * 5 % N) * OS + 11;
                let d = pattern(k as u8, 20);
                write(&b, &*data, "h1", at, &d).unwrap();
                model[at as usize..at as usize + 20].copy_from_slice(&d);
                b.apply_rebases().unwrap();
                k += 1;
            }
            model
        })
    };
    let r = env
        .m
        .hash_wait("gold-s", Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let model = holder.join().unwrap();
    assert!(r.maps_left.is_empty(), "{r:?}");
    // gold, h1, h2 (the holder may move one before the hash looks).
    assert!((1..=3).contains(&r.maps_moved), "{r:?}");
    assert!(read(&b, &*env.data, "h1", 0, N * OS).unwrap() == model);
    for v in ["gold", "h1", "h2"] {
        assert!(objects_of(&b, v).is_disjoint(&old), "{v}");
    }
    assert!(records(&env).is_empty());
}

#[test]
fn an_interrupted_rebase_resumes_with_the_next_hash() {
    let env = Env::new();
    let old = golden(&env);
    let b = env.other("host2");
    env.m.clone_volume("gold-s", "c", None).unwrap();
    write(&b, &*env.data, "c", 0, &pattern(70, 5)).unwrap();
    let want = read(&b, &*env.data, "c", 0, N * OS).unwrap();
    let a = env
        .other("host1")
        .with_rebase_wait(std::time::Duration::ZERO);
    assert_eq!(a.hash("gold-s").unwrap().maps_left, vec!["c".to_string()]);
    // Host 2 goes away without applying the record (a crash, say): the
    // lock is released; the next hash moves c itself.
    b.close("c").unwrap();
    let r = a.hash("gold-s").unwrap();
    assert_eq!((r.maps_moved, r.maps_left.len()), (1, 0), "{r:?}");
    assert!(objects_of(&a, "c").is_disjoint(&old));
    assert!(read(&a, &*env.data, "c", 0, N * OS).unwrap() == want);
    assert!(records(&env).is_empty());
}

#[test]
fn a_holder_never_moves_an_entry_onto_a_content_object_that_is_gone() {
    use archipelago_store::ObjectStore;
    let env = Env::new();
    let old = golden(&env);
    let b = env.other("host2");
    env.m.clone_volume("gold-s", "c", None).unwrap();
    write(&b, &*env.data, "c", 0, &pattern(80, 5)).unwrap();
    let a = env
        .other("host1")
        .with_rebase_wait(std::time::Duration::ZERO);
    assert_eq!(a.hash("gold-s").unwrap().maps_left, vec!["c".to_string()]);
    // One content object disappears before the holder looks (as if a
    // collection had deleted it): the entries it would replace stay.
    let victim = objects_of(&a, "gold-s")
        .into_iter()
        .find(|o| o.len() == 64)
        .unwrap();
    env.data.delete(&victim).unwrap();
    let want = read(&b, &*env.data, "c", 0, N * OS).unwrap();
    assert_eq!(b.apply_rebases().unwrap(), 1);
    let objs = objects_of(&b, "c");
    assert!(!objs.contains(&victim), "{objs:?}");
    assert!(
        !objs.is_disjoint(&old),
        "the entries of the missing one stay"
    );
    assert!(read(&b, &*env.data, "c", 0, N * OS).unwrap() == want);
}

/// Crashes (failed header writes, which leave what a crash before the
/// commit point leaves) before the snapshot's commit and during a move:
/// every map reads the same throughout, and the next hash finishes.
#[test]
fn a_hash_that_fails_before_or_during_the_moves_is_finished_by_the_next() {
    use archipelago_store::{Fault, FaultyStore, MemoryStore, ObjectStore, OpKind, Rule};
    use std::sync::Arc;
    let maps = Arc::new(FaultyStore::new(MemoryStore::new()));
    let data = Arc::new(MemoryStore::new());
    let m = Mapper::new(maps.clone(), data.clone(), "host1".into());
    m.create("gold", N * OS, Some(OS)).unwrap();
    for i in 0..N {
        write(
            &m,
            &*data,
            "gold",
            i * OS,
            &pattern((i % 3) as u8, OS as usize),
        )
        .unwrap();
    }
    m.close("gold").unwrap();
    m.snapshot("gold", "gold-s").unwrap();
    let old = objects_of(&m, "gold-s");
    m.clone_volume("gold-s", "cc", None).unwrap();
    write(&m, &*data, "cc", 2 * OS + 5, &pattern(9, 50)).unwrap();
    m.close("cc").unwrap();
    let want: Vec<Vec<u8>> = ["gold", "gold-s", "cc"]
        .iter()
        .map(|v| read(&m, &*data, v, 0, N * OS).unwrap())
        .collect();
    let same = |m: &Mapper| {
        for (v, w) in ["gold", "gold-s", "cc"].iter().zip(&want) {
            assert!(read(m, &*data, v, 0, N * OS).unwrap() == *w, "{v}");
        }
    };
    // 1. The snapshot's header write fails: the hash did not happen.
    maps.add_rule(
        Rule::new(OpKind::WriteFull, Fault::Io)
            .names_with_prefix("gold-s")
            .times(1),
    );
    m.hash("gold-s").unwrap_err();
    assert!(!m.info("gold-s").unwrap().hashed);
    assert_eq!(objects_of(&m, "gold-s"), old);
    same(&m);
    // 2. The snapshot commits, the move of cc fails.
    maps.add_rule(
        Rule::new(OpKind::WriteFull, Fault::Io)
            .names_with_prefix("cc")
            .times(1),
    );
    let e = m.hash("gold-s").unwrap_err();
    assert!(e.detail.contains("cc"), "{e}");
    assert!(m.info("gold-s").unwrap().hashed);
    assert!(!objects_of(&m, "cc").is_disjoint(&old), "cc not moved");
    same(&m);
    assert!(!maps.list("archip_rebase_").unwrap().is_empty());
    // 3. The next hash reads nothing again and moves what is left.
    let r = m.hash("gold-s").unwrap();
    assert!(r.maps_left.is_empty(), "{r:?}");
    for v in ["gold", "gold-s", "cc"] {
        assert!(objects_of(&m, v).is_disjoint(&old), "{v}");
    }
    same(&m);
    assert!(maps.list("archip_rebase").unwrap().is_empty());
}
