//! Garbage collection against a reference model: volumes are created,
//! written, snapshotted, cloned, hashed and removed in random order
//! through a `Mapper` over `MemoryStore`s (the way vlmcd drives it), and
//! collections run between (and, in the second test, during) the
//! operations. After each: every live volume reads exactly as the model
//! says, and the stores hold no object that no live map refers to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use archipelago_gc::{collect, usage, GcOptions};
use archipelago_mapfmt::{Chunk, Header};
use archipelago_mapper::{read_extent, Mapper};
use archipelago_protocol::ErrorCode;
use archipelago_store::{MemoryStore, ObjectStore};

const OS: u64 = 4096;
const OBJECTS: u64 = 12;
const SIZE: u64 = OS * OBJECTS;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct World {
    maps: Arc<MemoryStore>,
    data: Arc<MemoryStore>,
    mapper: Mapper,
}

impl World {
    fn new() -> World {
        let maps = Arc::new(MemoryStore::new());
        let data = Arc::new(MemoryStore::new());
        let mapper = Mapper::new(maps.clone(), data.clone(), "host-a".into())
            .with_hash_threads(2)
            .with_gc_wait(Duration::from_secs(30));
        World { maps, data, mapper }
    }

    /// Writes `buf` at `offset` as the composer does.
    fn write(&self, name: &str, offset: u64, buf: &[u8]) {
        let exts = self
            .mapper
            .map_write(name, offset, buf.len() as u64)
            .unwrap_or_else(|e| panic!("map_write {name}: {e}"));
        let mut pos = 0usize;
        let mut pending = Vec::new();
        for e in exts {
            let obj = e
                .object
                .as_deref()
                .expect("a write extent names its object");
            self.data
                .write(
                    obj,
                    e.offset_in_object,
                    &buf[pos..pos + e.len as usize],
                    true,
                )
                .unwrap();
            pos += e.len as usize;
            if e.pending {
                pending.push(e.index);
            }
        }
        assert_eq!(pos, buf.len());
        if !pending.is_empty() {
            self.mapper.commit_writes(name, &pending).unwrap();
        }
    }

    fn read(&self, name: &str) -> Vec<u8> {
        let exts = self
            .mapper
            .map_read(name, 0, SIZE)
            .unwrap_or_else(|e| panic!("map_read {name}: {e}"));
        let mut out = Vec::new();
        for e in exts {
            let mut buf = vec![0u8; e.len as usize];
            read_extent(&*self.data, &e, &mut buf)
                .unwrap_or_else(|err| panic!("read {name}: {err}"));
            out.extend_from_slice(&buf);
        }
        out
    }

    fn gc(&self) -> archipelago_gc::GcReport {
        let opts = GcOptions {
            host: "host-a".into(),
            sort_budget: 2048, // spill often: the merge is what is tested
            page: 7,
            ..GcOptions::default()
        };
        collect(&*self.maps, &*self.data, &opts, &mut |_, _, _| {}).unwrap()
    }

    /// Every chunk and object a live map refers to, read independently of
    /// the collector.
    fn referenced(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut chunks = BTreeSet::new();
        let mut objects = BTreeSet::new();
        for n in self.maps.list("").unwrap() {
            if archipelago_protocol::names::check_volume_name(n.as_bytes()).is_err() {
                continue;
            }
            let mut b = vec![0; self.maps.stat(&n).unwrap().size as usize];
            self.maps.read(&n, 0, &mut b).unwrap();
            let h = Header::decode(&b).unwrap();
            if h.flags.removed {
                continue;
            }
            for (slot, r) in h.chunks.iter().enumerate() {
                let Some(cn) = r.object_name() else { continue };
                let mut b = vec![0; self.maps.stat(&cn).unwrap().size as usize];
                self.maps.read(&cn, 0, &mut b).unwrap();
                let c = Chunk::decode_as(&b, *r).unwrap();
                for (at, e) in c.entries().iter().enumerate() {
                    if let Some(o) = e.object_name((slot * 4096 + at) as u64) {
                        objects.insert(o);
                    }
                }
                chunks.insert(cn);
            }
        }
        (chunks, objects)
    }

    /// The stores hold nothing unreferenced (after a collection with no
    /// operation in flight).
    fn assert_no_garbage(&self) {
        let (chunks, objects) = self.referenced();
        for o in self.data.list("").unwrap() {
            assert!(
                objects.contains(&o),
                "data object {o} is referenced by no live map"
            );
        }
        for c in self.maps.list("").unwrap() {
            let parts: Vec<&str> = c.split('_').collect();
            let is_chunk = parts.len() == 2 && parts.iter().all(|p| p.len() == 16);
            if is_chunk && !c.ends_with("_0000000000000000") {
                assert!(
                    chunks.contains(&c),
                    "map chunk {c} is referenced by no live map"
                );
            }
        }
    }
}

fn block(tag: u64) -> Vec<u8> {
    let mut r = Rng(tag);
    // Half the blocks come from 4 patterns, so hashing deduplicates.
    let pat = if tag % 2 == 0 { tag % 8 } else { r.next() };
    let mut r = Rng(pat);
    (0..OS).map(|_| r.next() as u8).collect()
}

#[test]
fn random_operations_then_gc_leave_exactly_what_the_model_needs() {
    for seed in 1..=6u64 {
        let w = World::new();
        let mut rng = Rng(seed);
        // name -> (contents, is a snapshot)
        let mut model: BTreeMap<String, (Vec<u8>, bool)> = BTreeMap::new();
        let mut counter = 0u64;
        for step in 0..120 {
            counter += 1;
            let vols: Vec<String> = model
                .iter()
                .filter(|(_, v)| !v.1)
                .map(|(k, _)| k.clone())
                .collect();
            let snaps: Vec<String> = model
                .iter()
                .filter(|(_, v)| v.1)
                .map(|(k, _)| k.clone())
                .collect();
            match rng.below(10) {
                0 if model.len() < 12 => {
                    let n = format!("v{counter}");
                    w.mapper.create(&n, SIZE, Some(OS)).unwrap();
                    model.insert(n, (vec![0; SIZE as usize], false));
                }
                1..=3 if !vols.is_empty() => {
                    let n = &vols[rng.below(vols.len() as u64) as usize];
                    let idx = rng.below(OBJECTS);
                    // Full objects (pending commit) and partial writes (copy-up).
                    let (off, len) = if rng.below(2) == 0 {
                        (idx * OS, OS)
                    } else {
                        (idx * OS + 100, 1000)
                    };
                    let data = &block(rng.next())[..len as usize];
                    w.write(n, off, data);
                    model.get_mut(n).unwrap().0[off as usize..(off + len) as usize]
                        .copy_from_slice(data);
                }
                4 if !vols.is_empty() => {
                    let n = vols[rng.below(vols.len() as u64) as usize].clone();
                    let s = format!("s{counter}");
                    w.mapper.snapshot(&n, &s).unwrap();
                    let c = model[&n].0.clone();
                    model.insert(s, (c, true));
                }
                5 if !snaps.is_empty() => {
                    let s = &snaps[rng.below(snaps.len() as u64) as usize];
                    let n = format!("c{counter}");
                    w.mapper.clone_volume(s, &n, None).unwrap();
                    let c = model[s].0.clone();
                    model.insert(n, (c, false));
                }
                6 if !snaps.is_empty() => {
                    let s = &snaps[rng.below(snaps.len() as u64) as usize];
                    w.mapper.hash(s).unwrap();
                }
                7 | 8 if !model.is_empty() => {
                    let names: Vec<&String> = model.keys().collect();
                    let n = names[rng.below(names.len() as u64) as usize].clone();
                    match w.mapper.remove(&n) {
                        Ok(()) => {
                            model.remove(&n);
                        }
                        // A snapshot with clones stays.
                        Err(e) if e.code == ErrorCode::Exists => {}
                        Err(e) => panic!("remove {n}: {e}"),
                    }
                }
                _ => {
                    let count = || {
                        w.data.list("").unwrap().len()
                            + w.maps
                                .list("")
                                .unwrap()
                                .iter()
                                .filter(|n| *n != "archip_gc")
                                .count()
                    };
                    let before = count();
                    let r = w.gc();
                    let after = count();
                    assert_eq!(
                        before - after,
                        r.freed_objects as usize,
                        "seed {seed} step {step}"
                    );
                    w.assert_no_garbage();
                }
            }
            for (n, (c, _)) in &model {
                assert!(
                    w.read(n) == *c,
                    "seed {seed} step {step}: {n} differs from the model"
                );
            }
        }
        let r = w.gc();
        w.assert_no_garbage();
        for (n, (c, _)) in &model {
            assert!(
                w.read(n) == *c,
                "seed {seed}: {n} differs after the last gc"
            );
        }
        // A second collection finds nothing.
        let again = w.gc();
        assert_eq!(again.freed_objects, 0, "seed {seed}: {again:?} after {r:?}");
        // Accounting: removing a volume frees exactly its unique bytes.
        let u = usage(&*w.maps, &*w.data, None).unwrap();
        assert_eq!(u.len(), model.len());
        if let Some(victim) = u.iter().find(|v| w.mapper.remove(&v.name).is_ok()) {
            let before = w.data.used_bytes();
            w.gc();
            assert_eq!(
                before - w.data.used_bytes(),
                victim.unique_bytes,
                "seed {seed}: du of {}",
                victim.name
            );
        }
    }
}

#[test]
fn gc_during_writes_clones_and_hashes_loses_nothing() {
    let w = Arc::new(World::new());
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU64::new(0));
    let collector = {
        let (w, stop, runs) = (w.clone(), stop.clone(), runs.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                w.gc();
                runs.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Each worker owns its volumes and checks them against its model as
    // it goes; a collection deleting anything referenced fails a read.
    let worker = |kind: u64| {
        let w = w.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(kind * 1000 + 7);
            let vol = format!("vol{kind}");
            w.mapper.create(&vol, SIZE, Some(OS)).unwrap();
            let mut model = vec![0u8; SIZE as usize];
            let mut kept: Vec<(String, Vec<u8>, bool)> = Vec::new(); // snapshots and clones
            for i in 0..60u64 {
                let idx = rng.below(OBJECTS);
                let (off, len) = if i % 2 == 0 {
                    (idx * OS, OS)
                } else {
                    (idx * OS + 10, 300)
                };
                let data = &block(rng.next())[..len as usize];
                w.write(&vol, off, data);
                model[off as usize..(off + len) as usize].copy_from_slice(data);
                if i % 5 == 4 {
                    let s = format!("{vol}-s{i}");
                    w.mapper.snapshot(&vol, &s).unwrap();
                    match kind {
                        // The hasher: hash the snapshot.
                        2 => {
                            w.mapper.hash(&s).unwrap();
                        }
                        // The cloner: clone it, write into the clone.
                        1 => {
                            let c = format!("{vol}-c{i}");
                            w.mapper.clone_volume(&s, &c, None).unwrap();
                            let mut cm = model.clone();
                            let d = block(rng.next());
                            w.write(&c, 0, &d);
                            cm[..OS as usize].copy_from_slice(&d);
                            kept.push((c, cm, false));
                        }
                        _ => {}
                    }
                    kept.push((s, model.clone(), true));
                    // Drop the oldest (clones before their snapshots).
                    if kept.len() > 4 {
                        let (n, _, _) = kept.remove(0);
                        match w.mapper.remove(&n) {
                            Ok(()) => {}
                            Err(e) if e.code == ErrorCode::Exists => {
                                kept.push((n.clone(), vec![], true));
                                kept.pop();
                            }
                            Err(e) => panic!("remove {n}: {e}"),
                        }
                    }
                }
                assert!(w.read(&vol) == model, "{vol} differs at step {i}");
                for (n, c, _) in &kept {
                    if !c.is_empty() {
                        assert!(w.read(n) == *c, "{n} differs at step {i}");
                    }
                }
            }
            let mut out = vec![(vol, model, false)];
            out.extend(kept.into_iter().filter(|k| !k.1.is_empty()));
            out
        })
    };
    let handles: Vec<_> = (0..3).map(worker).collect();
    let mut live = Vec::new();
    for h in handles {
        live.extend(h.join().expect("worker"));
    }
    stop.store(true, Ordering::Relaxed);
    collector.join().unwrap();
    assert!(
        runs.load(Ordering::Relaxed) >= 2,
        "the collector ran during the workers"
    );
    w.gc();
    w.assert_no_garbage();
    for (n, c, _) in &live {
        assert!(w.read(n) == *c, "{n} differs after the last gc");
    }
}
