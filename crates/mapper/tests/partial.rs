//! Issue 15, "sub-object copy-on-write": a write to a shared object copies
//! only the granules it covers partly; the map records which granules the
//! volume's own object holds (a partial entry) and reads assemble the
//! object from its own granules and what it replaced. Every operation
//! that reads maps understands partial entries.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use archipelago_mapper::Mapper;
use archipelago_store::{MemoryStore, ObjectStore};
use common::{pattern, read, write};

/// 64 granules of 4 KiB.
const OS: u64 = 256 << 10;
const G: u64 = 4096;

fn env() -> (Arc<MemoryStore>, Arc<MemoryStore>, Mapper) {
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(MemoryStore::new());
    let m = Mapper::new(maps.clone(), data.clone(), "host1".into());
    (maps, data, m)
}

#[test]
fn a_small_write_into_a_clone_copies_one_granule_not_the_object() {
    let (_, data, m) = env();
    m.create("base", 2 * OS, Some(OS)).unwrap();
    let all = pattern(3, 2 * OS as usize);
    write(&m, &*data, "base", 0, &all).unwrap();
    m.snapshot("base", "gold").unwrap();
    m.clone_volume("gold", "vm", None).unwrap();

    // 100 bytes inside granule 1 of object 0.
    write(&m, &*data, "vm", G + 5, &pattern(9, 100)).unwrap();
    let ext = m.map_read("vm", 0, OS).unwrap();
    // Granule 0 from the snapshot, granule 1 the clone's own, the rest
    // from the snapshot again.
    let runs: Vec<(u64, u64, bool)> = ext
        .iter()
        .map(|e| {
            let own = e
                .object
                .as_deref()
                .is_some_and(|o| o.starts_with(&own_prefix(&m, "vm")));
            (e.offset_in_object, e.len, own)
        })
        .collect();
    assert_eq!(
        runs,
        [(0, G, false), (G, G, true), (2 * G, OS - 2 * G, false)]
    );
    let own = ext[1].object.clone().unwrap();
    assert!(
        data.stat(&own).unwrap().size <= 2 * G,
        "the copy-up wrote {} bytes of the clone's object, more than one granule",
        data.stat(&own).unwrap().size
    );
    let mut expect = all.clone();
    expect[(G + 5) as usize..(G + 105) as usize].copy_from_slice(&pattern(9, 100));
    assert!(read(&m, &*data, "vm", 0, 2 * OS).unwrap() == expect);
    assert!(read(&m, &*data, "gold", 0, 2 * OS).unwrap() == all);

    // A write covering granules whole copies nothing of them; a later
    // write to a granule the clone already holds is in place.
    write(&m, &*data, "vm", 8 * G, &pattern(4, 2 * G as usize)).unwrap();
    expect[(8 * G) as usize..(10 * G) as usize].copy_from_slice(&pattern(4, 2 * G as usize));
    let ext = m.map_write("vm", G + 200, 10).unwrap();
    assert!(!ext[0].pending, "granule 1 is the clone's own: {ext:?}");
    data.write(
        ext[0].object.as_ref().unwrap(),
        G + 200,
        b"in-place!!",
        true,
    )
    .unwrap();
    expect[(G + 200) as usize..(G + 210) as usize].copy_from_slice(b"in-place!!");
    assert!(read(&m, &*data, "vm", 0, 2 * OS).unwrap() == expect);
}

/// The clone's own object names start with its volume id in hex.
fn own_prefix(m: &Mapper, name: &str) -> String {
    let id = m.info(name).unwrap().volume_id;
    format!("{id:016x}_")
}

/// Volumes and snapshots with their expected bytes.
struct Model {
    m: Mapper,
    maps: Arc<MemoryStore>,
    data: Arc<MemoryStore>,
    images: BTreeMap<String, Vec<u8>>,
    rng: u64,
}

impl Model {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn volumes(&self) -> Vec<String> {
        self.images
            .keys()
            .filter(|n| n.starts_with('v'))
            .cloned()
            .collect()
    }

    fn pick(&mut self, names: &[String]) -> String {
        names[self.below(names.len() as u64) as usize].clone()
    }

    fn write_random(&mut self, vol: &str) {
        let size = self.images[vol].len() as u64;
        let off = self.below(size);
        // Mostly small writes, sometimes a few granules or objects.
        let max = match self.below(4) {
            0 => 3 * OS,
            1 => 5 * G,
            _ => 700,
        };
        let len = (1 + self.below(max)).min(size - off);
        let bytes = pattern(self.below(250) as u8, len as usize);
        write(&self.m, &*self.data, vol, off, &bytes).unwrap();
        self.images.get_mut(vol).unwrap()[off as usize..(off + len) as usize]
            .copy_from_slice(&bytes);
    }

    /// How many objects of the maps read from two or more objects (a
    /// partial entry).
    fn partial_objects(&self) -> usize {
        let mut n = 0;
        for (name, img) in &self.images {
            let ext = self.m.map_read(name, 0, img.len() as u64).unwrap();
            let mut by_index: BTreeMap<u64, usize> = BTreeMap::new();
            for e in ext {
                *by_index.entry(e.index).or_default() += 1;
            }
            n += by_index.values().filter(|&&c| c > 1).count();
        }
        n
    }

    fn check(&self, step: &str) {
        for (name, expect) in &self.images {
            let got = read(&self.m, &*self.data, name, 0, expect.len() as u64).unwrap();
            if got != *expect {
                let at = got.iter().zip(expect).position(|(a, b)| a != b).unwrap();
                panic!("{name} differs from the model at byte {at} after {step}");
            }
        }
        // Another mapper (nothing cached) reads the same.
        let other = Mapper::new(self.maps.clone(), self.data.clone(), "host2".into());
        for (name, expect) in &self.images {
            let got = read(&other, &*self.data, name, 0, expect.len() as u64).unwrap();
            assert!(
                got == *expect,
                "{name} read from storage differs after {step}"
            );
        }
    }
}

#[test]
fn random_writes_snapshots_clones_hashes_and_flattens_read_like_the_model() {
    let seeds: u64 = std::env::var("ARCHIP_PARTIAL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for seed in 1..=seeds {
        let (maps, data, m) = env();
        let mut model = Model {
            m,
            maps,
            data,
            images: BTreeMap::new(),
            rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        };
        let size = 3 * OS + 5 * G; // a last object of 5 granules
        model.m.create("v0", size, Some(OS)).unwrap();
        model.images.insert("v0".into(), vec![0; size as usize]);
        let mut snaps = 0;
        let mut clones = 0;
        let mut partials = 0;
        for step in 0..60 {
            let vols = model.volumes();
            let what = model.below(100);
            let label;
            if what < 60 {
                let v = model.pick(&vols);
                model.write_random(&v);
                label = format!("seed {seed} step {step}: write {v}");
            } else if what < 75 {
                let v = model.pick(&vols);
                snaps += 1;
                let s = format!("s{snaps}");
                model.m.snapshot(&v, &s).unwrap();
                let img = model.images[&v].clone();
                model.images.insert(s.clone(), img);
                label = format!("seed {seed} step {step}: snapshot {v} {s}");
            } else if what < 88 && snaps > 0 {
                let s = format!("s{}", 1 + model.below(snaps));
                clones += 1;
                let c = format!("v{clones}");
                model.m.clone_volume(&s, &c, None).unwrap();
                let img = model.images[&s].clone();
                model.images.insert(c.clone(), img);
                label = format!("seed {seed} step {step}: clone {s} {c}");
            } else if what < 94 && snaps > 0 {
                let s = format!("s{}", 1 + model.below(snaps));
                model.m.hash(&s).unwrap();
                label = format!("seed {seed} step {step}: hash {s}");
            } else {
                let v = model.pick(&vols);
                let mut next = 0;
                for _ in 0..100 {
                    let s = model.m.flatten_step(&v, next, 2).unwrap();
                    if s.done {
                        break;
                    }
                    next = s.next;
                }
                label = format!("seed {seed} step {step}: flatten {v}");
            }
            model.check(&label);
            partials = partials.max(model.partial_objects());
        }
        assert!(partials > 0, "seed {seed} made no partial object");
    }
}

/// A write copying up more granules of an object whose earlier round
/// commits meanwhile (found by a guest writing files on a clone): the
/// commit took the object off the pending ones, granting only the first
/// round's granules, and the second write's granules were never committed
/// (its data read as the snapshot's).
#[test]
fn a_copy_up_for_more_granules_survives_the_commit_of_an_earlier_round() {
    use archipelago_store::{Fault, FaultyStore, Gate, OpKind, Rule};
    use std::time::Duration;
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(FaultyStore::new(MemoryStore::new()));
    let m = Arc::new(Mapper::new(maps, data.clone(), "host1".into()));
    m.create("base", OS, Some(OS)).unwrap();
    let all = pattern(3, OS as usize);
    write(&m, &*data, "base", 0, &all).unwrap();
    m.snapshot("base", "gold").unwrap();
    m.clone_volume("gold", "vm", None).unwrap();
    // Round 1: 10 bytes in granule 1, copied up, pending.
    let w1 = m.map_write("vm", G + 5, 10).unwrap();
    assert!(w1[0].pending);
    // Write 2: 10 bytes in granule 5, its copy held.
    let gate = Gate::new();
    let src = m.map_read("gold", 0, 1).unwrap()[0].object.clone().unwrap();
    data.add_rule(
        Rule::new(OpKind::Copy, Fault::Hold(gate.clone()))
            .names_with_prefix(src)
            .times(1),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let m2 = m.clone();
    std::thread::spawn(move || {
        let _ = tx.send(m2.map_write("vm", 5 * G + 5, 10));
    });
    assert!(gate.wait_arrived(1, Duration::from_secs(20)));
    // Round 1 lands and commits while write 2's copy is in flight.
    let obj = w1[0].object.clone().unwrap();
    data.write(&obj, G + 5, b"first-data", true).unwrap();
    m.commit_writes("vm", &[0]).unwrap();
    gate.open();
    let w2 = rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
    assert!(w2[0].pending, "{w2:?}");
    data.write(&obj, 5 * G + 5, b"second-dat", true).unwrap();
    m.commit_writes("vm", &[0]).unwrap();
    let mut expect = all.clone();
    expect[(G + 5) as usize..(G + 15) as usize].copy_from_slice(b"first-data");
    expect[(5 * G + 5) as usize..(5 * G + 15) as usize].copy_from_slice(b"second-dat");
    let got = read(&m, &*data, "vm", 0, OS).unwrap();
    assert!(
        got == expect,
        "the second write's granule was not committed"
    );
}

/// Writers on several threads into the same shared objects (each thread
/// its own 512-byte sectors, so the result does not depend on their
/// order), as vlmcd's concurrent requests do: copy-ups for more granules,
/// commits of earlier rounds and in-place writes interleave. Every byte
/// reads as the model, from this mapper and after a restart (journal
/// replay).
#[test]
fn concurrent_writers_into_a_clone_read_like_the_model() {
    // Interleavings vary from run to run: many rounds make a race show.
    for round in 0..30 {
        concurrent_round(round);
    }
}

fn concurrent_round(round: u64) {
    const THREADS: u64 = 4;
    const WRITES: u64 = 150;
    const SECTOR: u64 = 512;
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(MemoryStore::new());
    let m = Arc::new(Mapper::new(maps.clone(), data.clone(), "host1".into()));
    let size = 4 * OS;
    m.create("base", size, Some(OS)).unwrap();
    let base = pattern(7, size as usize);
    write(&m, &*data, "base", 0, &base).unwrap();
    m.snapshot("base", "gold").unwrap();
    m.clone_volume("gold", "vm", None).unwrap();
    let sectors = size / SECTOR;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (m, data) = (m.clone(), data.clone());
            std::thread::spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1) ^ (round << 8);
                let mut mine: Vec<(u64, Vec<u8>)> = Vec::new();
                for w in 0..WRITES {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let s = (rng % (sectors / THREADS)) * THREADS + t;
                    let bytes = pattern((t * 50 + w) as u8, SECTOR as usize);
                    write(&m, &*data, "vm", s * SECTOR, &bytes).unwrap();
                    mine.push((s, bytes));
                }
                mine
            })
        })
        .collect();
    let mut expect = base.clone();
    for h in handles {
        for (s, bytes) in h.join().unwrap() {
            let at = (s * SECTOR) as usize;
            expect[at..at + SECTOR as usize].copy_from_slice(&bytes);
        }
    }
    let got = read(&m, &*data, "vm", 0, size).unwrap();
    if got != expect {
        let bad: Vec<u64> = (0..sectors)
            .filter(|s| {
                let r = (s * SECTOR) as usize..((s + 1) * SECTOR) as usize;
                got[r.clone()] != expect[r]
            })
            .collect();
        let s0 = bad[0];
        let r = (s0 * SECTOR) as usize..((s0 + 1) * SECTOR) as usize;
        let what = if got[r.clone()] == base[r.clone()] {
            "the snapshot's bytes"
        } else if got[r.clone()].iter().all(|&b| b == 0) {
            "zeros"
        } else {
            "other bytes"
        };
        panic!("round {round}: sectors {bad:?} differ (sector {s0} reads {what})");
    }
    let restarted = Mapper::new(maps.clone(), data.clone(), "host1".into());
    assert!(read(&restarted, &*data, "vm", 0, size).unwrap() == expect);
    assert!(read(&m, &*data, "gold", 0, size).unwrap() == base);
}
