//! Parallel hashing, the byte-bounded chunk cache, the header-cache rule
//! (never outliving the lock) and bounded per-volume state.

mod common;

use std::sync::Arc;

use archipelago_mapper::{HashReport, Mapper, DEFAULT_CACHE_BYTES};
use archipelago_protocol::ErrorCode;
use archipelago_store::{MemoryStore, ObjectStore};
use common::{pattern, read, write, Env, OS};

const PER_CHUNK: u64 = 4096;

fn mapper(maps: &Arc<MemoryStore>, data: &Arc<MemoryStore>, host: &str) -> Mapper {
    Mapper::new(maps.clone(), data.clone(), host.into())
}

/// A snapshot spanning three chunks, with distinct, duplicate, all-zero,
/// never-written and already-content objects; hashed with `threads`.
/// Returns the report, the snapshot's data, and its object names.
fn hash_scenario(threads: usize) -> (HashReport, Vec<u8>, Vec<Option<String>>) {
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(MemoryStore::new());
    let m = mapper(&maps, &data, "host1").with_hash_threads(threads);
    let objects = 2 * PER_CHUNK + 100;
    let size = objects * OS;
    m.create("vol", size, Some(OS)).unwrap();
    let mut i = 0;
    while i < objects {
        let bytes = match i % 5 {
            0 => pattern((i % 7) as u8, OS as usize), // duplicates
            1 => pattern(100, 16),                    // partial, duplicates
            2 => vec![0u8; OS as usize],              // all zeros
            _ => {
                let mut b = pattern(3, 64);
                b[..8].copy_from_slice(&i.to_le_bytes()); // distinct
                b
            }
        };
        write(&m, &*data, "vol", i * OS, &bytes).unwrap();
        i += 37;
    }
    // A first write whose data never lands: an owned object that is missing.
    m.map_write("vol", (objects - 1) * OS, 1).unwrap();
    m.close("vol").unwrap();
    // A first hash, then more writes: the second snapshot mixes content
    // entries and owned ones.
    m.snapshot("vol", "s1").unwrap();
    m.hash("s1").unwrap();
    m.clone_volume("s1", "c", None).unwrap();
    for (k, i) in (5..objects).step_by(101).enumerate() {
        let bytes = if k % 3 == 0 {
            vec![0u8; OS as usize]
        } else {
            pattern(9, 100)
        };
        write(&m, &*data, "c", i * OS, &bytes).unwrap();
    }
    m.close("c").unwrap();
    m.snapshot("c", "s2").unwrap();
    let report = m.hash("s2").unwrap();
    let info = m.info("s2").unwrap();
    assert!(info.hashed);
    let bytes = read(&m, &*data, "s2", 0, size).unwrap();
    let names = m
        .map_read("s2", 0, size)
        .unwrap()
        .into_iter()
        .map(|e| e.object)
        .collect();
    (report, bytes, names)
}

#[test]
fn hashing_on_one_or_four_threads_gives_the_same_result() {
    let one = hash_scenario(1);
    let four = hash_scenario(4);
    assert_eq!(one.0, four.0);
    assert!(one.1 == four.1, "same data");
    assert_eq!(one.2, four.2);
    let r = one.0;
    assert!(r.objects > 0 && r.zero_objects > 0);
    assert!(r.distinct < r.objects - r.zero_objects, "duplicates found");
    assert_eq!(r.bytes_saved, (r.objects - r.distinct) * OS);
    // Every nonzero entry is a content object now.
    assert!(one
        .2
        .iter()
        .flatten()
        .all(|n| archipelago_protocol::names::is_content_name(n.as_bytes())));
}

#[test]
fn hashing_with_default_threads_matches_too() {
    let e = Env::new();
    e.m.create("vol", 64 * OS, Some(OS)).unwrap();
    for i in 0..64 {
        e.write("vol", i * OS, &pattern((i % 3) as u8, OS as usize));
    }
    e.m.close("vol").unwrap();
    e.m.snapshot("vol", "snap").unwrap();
    let before = e.read("snap", 0, 64 * OS);
    let r = e.m.hash("snap").unwrap();
    assert_eq!(r.objects, 64);
    assert_eq!(r.distinct, 3);
    assert_eq!(r.zero_objects, 0);
    assert_eq!(e.read("snap", 0, 64 * OS), before);
}

#[test]
fn the_chunk_cache_stays_within_its_byte_budget() {
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(MemoryStore::new());
    // A full chunk is about 4096 × 40 bytes: the budget holds two.
    let budget = 400_000;
    let m = mapper(&maps, &data, "host1").with_cache_bytes(budget);
    let slots = 12;
    let size = slots * PER_CHUNK * OS;
    m.create("vol", size, Some(OS)).unwrap();
    let mut peak = 0;
    for slot in 0..slots {
        // The last entry of each chunk: every chunk is full length.
        let at = (slot * PER_CHUNK + PER_CHUNK - 1) * OS;
        write(&m, &*data, "vol", at, b"x").unwrap();
        write(&m, &*data, "vol", slot * PER_CHUNK * OS, b"y").unwrap();
        peak = peak.max(m.cache_bytes());
        assert!(m.cache_bytes() <= budget, "{} > {budget}", m.cache_bytes());
    }
    m.close("vol").unwrap();
    for _ in 0..2 {
        for slot in 0..slots {
            let at = (slot * PER_CHUNK + PER_CHUNK - 1) * OS;
            assert_eq!(read(&m, &*data, "vol", at, 1).unwrap(), b"x");
            assert_eq!(
                read(&m, &*data, "vol", slot * PER_CHUNK * OS, 1).unwrap(),
                b"y"
            );
            peak = peak.max(m.cache_bytes());
            assert!(m.cache_bytes() <= budget);
        }
    }
    // A read across the whole volume touches every chunk.
    assert_eq!(
        m.map_read("vol", 0, size).unwrap().len() as u64,
        slots * PER_CHUNK
    );
    assert!(m.cache_bytes() <= budget);
    assert!(peak > budget / 4, "the cache is used: {peak}");

    // No cache at all still works; the default budget holds.
    let none = mapper(&maps, &data, "host1").with_cache_bytes(0);
    assert_eq!(
        read(&none, &*data, "vol", (PER_CHUNK - 1) * OS, 1).unwrap(),
        b"x"
    );
    assert_eq!(none.cache_bytes(), 0);
    let dflt = mapper(&maps, &data, "host1");
    dflt.map_read("vol", 0, size).unwrap();
    assert!(dflt.cache_bytes() > 0 && dflt.cache_bytes() <= DEFAULT_CACHE_BYTES);
}

#[test]
fn a_volume_reopened_after_another_host_held_it_is_read_from_storage() {
    let e = Env::new();
    let b = e.other("host2");
    e.m.create("vol", 16 * OS, Some(OS)).unwrap();
    e.m.open("vol", true).unwrap();
    e.write("vol", 0, b"aaaa");
    assert_eq!(e.read("vol", 0, 4), b"aaaa");
    assert_eq!(b.open("vol", true).unwrap_err().code, ErrorCode::Locked);
    e.m.close("vol").unwrap();

    // host2 takes the lock, changes the map (new chunks, a resize) and
    // releases it.
    b.open("vol", true).unwrap();
    write(&b, &*e.data, "vol", 0, b"bbbb").unwrap();
    write(&b, &*e.data, "vol", 9 * OS, b"more").unwrap();
    b.resize("vol", 32 * OS, false).unwrap();
    b.close("vol").unwrap();

    // Not open here: read from storage.
    assert_eq!(e.read("vol", 0, 4), b"bbbb");
    // Reopened: the header is read again, not served from before.
    let info = e.m.open("vol", true).unwrap();
    assert_eq!(info.size, 32 * OS);
    assert_eq!(e.read("vol", 0, 4), b"bbbb");
    assert_eq!(e.read("vol", 9 * OS, 4), b"more");
    // Our next commit builds on host2's map, not on our old one.
    e.write("vol", 20 * OS, b"mine");
    e.m.close("vol").unwrap();
    assert_eq!(read(&b, &*e.data, "vol", 0, 4).unwrap(), b"bbbb");
    assert_eq!(read(&b, &*e.data, "vol", 9 * OS, 4).unwrap(), b"more");
    assert_eq!(read(&b, &*e.data, "vol", 20 * OS, 4).unwrap(), b"mine");
}

#[test]
fn a_fenced_open_drops_its_cached_map() {
    let e = Env::new();
    let b = e.other("host2");
    e.m.create("vol", 16 * OS, Some(OS)).unwrap();
    e.m.open("vol", true).unwrap();
    e.write("vol", 0, b"aaaa");
    // Broken as `vlmc unlock --force` breaks it: the data store's fence
    // first.
    let (_, token) = e.maps.lock_owner("vol").unwrap().unwrap();
    e.data.raise_fence("vol", token + 1).unwrap();
    e.maps.break_lock("vol").unwrap();
    b.open("vol", true).unwrap();
    write(&b, &*e.data, "vol", 0, b"bbbb").unwrap();
    b.close("vol").unwrap();
    // The next first write fails as fenced: at its map (a delete of a
    // possible orphan, fenced at the data store) or, where the volume was
    // created here and no orphan can exist, at its commit (the
    // composer's data write is fenced at the data store too).
    let code = match e.m.map_write("vol", OS, 1) {
        Err(err) => err.code,
        Ok(ext) => {
            assert!(ext[0].pending, "{ext:?}");
            e.m.commit_writes("vol", &[1]).unwrap_err().code
        }
    };
    assert_eq!(code, ErrorCode::Fenced);
    assert!(!e.m.is_open("vol"));
    assert_eq!(e.m.tracked_volumes(), 0);
    // Reopened: host2's map.
    e.m.open("vol", true).unwrap();
    assert_eq!(e.read("vol", 0, 4), b"bbbb");
    e.write("vol", OS, b"cccc");
    e.m.close("vol").unwrap();
    assert_eq!(read(&b, &*e.data, "vol", 0, 4).unwrap(), b"bbbb");
    assert_eq!(read(&b, &*e.data, "vol", OS, 4).unwrap(), b"cccc");
}

#[test]
fn removed_and_renamed_names_are_not_served_from_cache() {
    let e = Env::new();
    let b = e.other("host2");
    e.m.create("vol", 16 * OS, Some(OS)).unwrap();
    e.m.open("vol", true).unwrap();
    e.write("vol", 0, b"old!");
    e.m.remove("vol").unwrap();
    assert!(!e.m.is_open("vol"));
    assert_eq!(e.m.tracked_volumes(), 0);
    assert_eq!(
        e.m.map_read("vol", 0, 4).unwrap_err().code,
        ErrorCode::NotFound
    );
    // The name removed here is not live anymore anywhere; a volume
    // renamed here frees its old name for another host.
    e.m.create("r", 16 * OS, Some(OS)).unwrap();
    e.write("r", 0, b"rrrr");
    e.m.close("r").unwrap();
    e.m.rename("r", "r2").unwrap();
    b.create("r", 8 * OS, Some(OS)).unwrap();
    write(&b, &*e.data, "r", 0, b"new!").unwrap();
    b.close("r").unwrap();
    let info = e.m.open("r", true).unwrap();
    assert_eq!(info.size, 8 * OS);
    assert_eq!(e.read("r", 0, 4), b"new!");
    assert_eq!(e.read("r2", 0, 4), b"rrrr");
    e.m.close("r").unwrap();
    assert_eq!(e.m.tracked_volumes(), 0);
}

#[test]
fn per_volume_state_does_not_grow_with_names() {
    let e = Env::new();
    for i in 0..2000 {
        let name = format!("v{i}");
        e.m.create(&name, 4 * OS, Some(OS)).unwrap();
        e.write(&name, 0, b"data");
        e.m.close(&name).unwrap();
        assert_eq!(e.read(&name, 0, 4), b"data");
        e.m.info(&name).unwrap();
        assert!(!e.m.is_open(&name));
        if i % 3 == 0 {
            e.m.snapshot(&name, &format!("s{i}")).unwrap();
        }
        if i % 5 == 0 {
            e.m.remove(&name).unwrap();
        }
        // Failures leave nothing behind either.
        assert!(e.m.open(&format!("missing{i}"), true).is_err());
        assert!(e.m.close(&format!("missing{i}")).is_err());
        assert_eq!(e.m.tracked_volumes(), 0);
    }
    // Open volumes are kept, and only them.
    let live = || (1..13).filter(|i| i % 5 != 0);
    for i in live() {
        e.m.open(&format!("v{i}"), true).unwrap();
    }
    assert_eq!(e.m.tracked_volumes(), 10);
    for i in live() {
        e.m.close(&format!("v{i}")).unwrap();
    }
    assert_eq!(e.m.tracked_volumes(), 0);
}

#[test]
fn concurrent_uses_of_few_names_leave_no_state() {
    let e = Env::new();
    for i in 0..4 {
        e.m.create(&format!("v{i}"), 64 * OS, Some(OS)).unwrap();
        e.m.close(&format!("v{i}")).unwrap_err();
    }
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let e = &e;
            s.spawn(move || {
                for k in 0..200u64 {
                    let name = format!("v{}", (t + k) % 4);
                    e.m.open(&name, true).unwrap();
                    let at = ((t * 16 + k) % 64) * OS;
                    write(&e.m, &*e.data, &name, at, b"z").unwrap();
                    e.m.close(&name).unwrap();
                    read(&e.m, &*e.data, &name, at, 1).unwrap();
                    e.m.info(&name).unwrap();
                }
            });
        }
    });
    assert_eq!(e.m.tracked_volumes(), 0);
    for i in 0..4 {
        assert!(!e.m.is_open(&format!("v{i}")));
        // The lock was released by each last close.
        assert_eq!(e.maps.lock_owner(&format!("v{i}")).unwrap(), None);
    }
}

#[test]
fn a_failed_hash_on_many_threads_commits_nothing() {
    use archipelago_store::{Fault, FaultyStore, OpKind};
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(FaultyStore::new(MemoryStore::new()));
    let m = Mapper::new(maps.clone(), data.clone(), "host1".into()).with_hash_threads(4);
    m.create("vol", 64 * OS, Some(OS)).unwrap();
    for i in 0..64 {
        write(&m, &*data, "vol", i * OS, &pattern(i as u8, 64)).unwrap();
    }
    m.close("vol").unwrap();
    m.snapshot("vol", "snap").unwrap();
    let before = read(&m, &*data, "snap", 0, 64 * OS).unwrap();
    data.fail_always(OpKind::StoreContent, Fault::Io);
    assert_eq!(m.hash("snap").unwrap_err().code, ErrorCode::Io);
    assert!(!m.info("snap").unwrap().hashed);
    assert_eq!(read(&m, &*data, "snap", 0, 64 * OS).unwrap(), before);
    // The lock taken for the hash was released; a retry works.
    assert_eq!(maps.lock_owner("snap").unwrap(), None);
    data.clear();
    let r = m.hash("snap").unwrap();
    assert_eq!(r.objects, 64);
    assert_eq!(r.distinct, 64);
    assert_eq!(read(&m, &*data, "snap", 0, 64 * OS).unwrap(), before);
    assert_eq!(m.tracked_volumes(), 0);
}

/// The loop-thread fast path answers exactly what the full calls answer
/// when it answers at all, and declines whatever needs I/O or a change.
#[test]
fn map_cached_matches_the_full_path_or_declines() {
    let env = Env::new();
    let size = 8 * OS;
    env.m.create("vol", size, Some(OS)).unwrap();
    // Not open on this host: nothing cached.
    assert!(env.m.map_cached("vol", 0, OS, false).is_none());
    env.m.open("vol", true).unwrap();
    env.write("vol", 0, &pattern(1, 3 * OS as usize));
    // Reads: owned, never-written (zero) and split extents.
    for (off, len) in [(0, OS), (OS / 2, 2 * OS), (5 * OS, OS), (0, size)] {
        let fast = env.m.map_cached("vol", off, len, false).unwrap().unwrap();
        assert_eq!(
            fast,
            env.m.map_read("vol", off, len).unwrap(),
            "{off} {len}"
        );
    }
    // Writes to owned objects: the same extents as map_write.
    let fast = env.m.map_cached("vol", OS, OS, true).unwrap().unwrap();
    assert_eq!(fast, env.m.map_write("vol", OS, OS).unwrap());
    // A write needing allocation (a zero entry) of a volume created here,
    // where no orphan can exist: pending, to the volume's own object, as
    // map_write would answer it.
    let fast = env.m.map_cached("vol", 6 * OS, OS, true).unwrap().unwrap();
    assert!(
        fast.len() == 1 && fast[0].pending && fast[0].index == 6,
        "{fast:?}"
    );
    assert!(fast[0]
        .object
        .as_ref()
        .unwrap()
        .ends_with("_0000000000000006"));
    env.m.commit_writes("vol", &[6]).unwrap();
    // Out of range: answered with the same error.
    let e = env
        .m
        .map_cached("vol", size, 1, false)
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code, env.m.map_read("vol", size, 1).unwrap_err().code);
    // After a snapshot, the owned objects are copy-on-write: declined.
    env.m.close("vol").unwrap();
    env.m.snapshot("vol", "snap").unwrap();
    env.m.open("vol", true).unwrap();
    assert!(env.m.map_cached("vol", 0, OS, true).is_none());
    assert!(env.m.map_cached("vol", 0, OS, false).is_some());
    // Opened again: an orphan may exist, so allocation is declined.
    assert!(env.m.map_cached("vol", 7 * OS, OS, true).is_none());
    // Closed: declined again.
    env.m.close("vol").unwrap();
    assert!(env.m.map_cached("vol", 0, OS, false).is_none());
}

/// A map store that says this host was fenced (RADOS: our client was
/// blocklisted when another host broke one of our locks) makes the mapper
/// forget the volume, cached map included: it is used again only after
/// reopening, which relocks.
#[test]
fn a_fenced_map_store_drops_the_open_and_its_cached_map() {
    use archipelago_store::{Fault, FaultyStore, OpKind};
    let maps = Arc::new(FaultyStore::new(MemoryStore::new()));
    let data = Arc::new(MemoryStore::new());
    let m = Mapper::new(maps.clone(), data.clone(), "host1".into());
    m.create("vol", 16 * OS, Some(OS)).unwrap();
    m.open("vol", true).unwrap();
    write(&m, &*data, "vol", 0, b"aaaa").unwrap();
    // Blocklisted: the map store refuses the next write (the commit's
    // journal append) as fenced.
    maps.fail_next(OpKind::Write, Fault::Fenced);
    let err = write(&m, &*data, "vol", 5 * OS, b"b").unwrap_err();
    assert_eq!(err.code, ErrorCode::Fenced, "{err}");
    assert!(!m.is_open("vol"));
    assert_eq!(m.tracked_volumes(), 0);
    // Reopened (the store reconnected): the data is still there.
    m.open("vol", true).unwrap();
    assert_eq!(read(&m, &*data, "vol", 0, 4).unwrap(), b"aaaa");
}

/// The same when the map store refuses the commit itself as fenced.
#[test]
fn a_fenced_commit_drops_the_open() {
    use archipelago_store::{Fault, FaultyStore, OpKind};
    let maps = Arc::new(FaultyStore::new(MemoryStore::new()));
    let data = Arc::new(MemoryStore::new());
    let m = Mapper::new(maps.clone(), data.clone(), "host1".into());
    m.create("vol", 16 * OS, Some(OS)).unwrap();
    m.open("vol", true).unwrap();
    maps.fail_next(OpKind::WriteFull, Fault::Fenced);
    // A first write is pending: the commit writes the map.
    let ext = m.map_write("vol", 5 * OS, 1).unwrap();
    assert!(ext[0].pending);
    let err = m.commit_writes("vol", &[5]).unwrap_err();
    assert_eq!(err.code, ErrorCode::Fenced, "{err}");
    assert!(!m.is_open("vol"));
    m.open("vol", true).unwrap();
}
