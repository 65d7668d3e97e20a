//! The collector's protocol with hashers and other collectors: pins,
//! the generation, the lock, interruption, dry runs.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use archipelago_gc::{collect, generation, GcError, GcOptions};
use archipelago_mapfmt::gcmeta::{encode_generation, pin_name, GC_STATE_OBJECT};
use archipelago_mapfmt::Header;
use archipelago_mapper::Mapper;
use archipelago_protocol::ErrorCode;
use archipelago_store::{Fault, FaultyStore, MemoryStore, ObjectStore, OpKind, Rule};

fn setup() -> (Arc<MemoryStore>, Arc<MemoryStore>, Mapper) {
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(MemoryStore::new());
    let m = Mapper::new(maps.clone(), data.clone(), "h".into())
        .with_gc_wait(Duration::from_millis(300));
    (maps, data, m)
}

fn opts() -> GcOptions {
    GcOptions {
        host: "h".into(),
        ..GcOptions::default()
    }
}

fn nothing(_: archipelago_gc::Phase, _: u64, _: u64) {}

/// Commits the pending extents of a write (first writes to unallocated
/// objects are pending), as the composer does once their data landed.
fn commit_pending(m: &Mapper, name: &str, exts: &[archipelago_mapper::Extent]) {
    let pending: Vec<u64> = exts.iter().filter(|e| e.pending).map(|e| e.index).collect();
    if !pending.is_empty() {
        m.commit_writes(name, &pending).unwrap();
    }
}

/// A volume with `n` 4 KiB objects written, then removed: all garbage.
fn garbage(m: &Mapper, data: &dyn ObjectStore, name: &str, n: u64) {
    m.create(name, n * 4096, Some(4096)).unwrap();
    for i in 0..n {
        let exts = m.map_write(name, i * 4096, 4096).unwrap();
        for e in &exts {
            data.write(
                e.object.as_deref().unwrap(),
                0,
                &[(i % 250) as u8 + 1; 4096],
                true,
            )
            .unwrap();
        }
        commit_pending(m, name, &exts);
    }
    m.remove(name).unwrap();
}

#[test]
fn a_dry_run_reports_what_a_real_run_frees_and_changes_nothing() {
    let (maps, data, m) = setup();
    garbage(&m, &*data, "v", 5);
    let before = (maps.list("").unwrap(), data.list("").unwrap());
    let dry = collect(
        &*maps,
        &*data,
        &GcOptions {
            dry_run: true,
            ..opts()
        },
        &mut nothing,
    )
    .unwrap();
    assert_eq!((maps.list("").unwrap(), data.list("").unwrap()), before);
    assert_eq!(
        generation(&*maps).unwrap(),
        0,
        "a dry run does not start a generation"
    );
    // Everything: its 5 objects, every chunk it ever committed (each
    // write replaced the previous one) and the removed header, which no
    // live header needs.
    let chunks: Vec<String> = maps
        .list("")
        .unwrap()
        .into_iter()
        .filter(|n| n != "v")
        .collect();
    let chunk_bytes: u64 = chunks.iter().map(|c| maps.stat(c).unwrap().size).sum();
    let header_bytes = maps.stat("v").unwrap().size;
    assert_eq!(dry.freed_objects, 5 + chunks.len() as u64 + 1, "{dry:?}");
    assert_eq!(dry.freed_chunks, chunks.len() as u64);
    assert_eq!(dry.freed_headers, 1);
    assert_eq!(dry.freed_bytes, 5 * 4096 + chunk_bytes + header_bytes);
    let real = collect(&*maps, &*data, &opts(), &mut nothing).unwrap();
    assert_eq!(
        (real.freed_objects, real.freed_bytes),
        (dry.freed_objects, dry.freed_bytes)
    );
    assert_eq!(maps.list("").unwrap(), ["archip_gc"]);
    assert!(data.list("").unwrap().is_empty());
    assert_eq!(generation(&*maps).unwrap(), 2, "started odd, finished even");
}

#[test]
fn a_pin_keeps_content_and_a_stale_pin_is_cleared() {
    let (maps, data, m) = setup();
    // Orphan content: stored, referenced by nothing.
    let c = data.store_content(b"orphan", true).unwrap();
    maps.write_full(&pin_name(7), b"snap", true).unwrap();
    let r = collect(&*maps, &*data, &opts(), &mut nothing).unwrap();
    assert_eq!(r.pins, 1);
    assert!(data.stat(&c).is_ok(), "kept while a hash may be in flight");
    assert_eq!(r.kept_in_flight, 1);
    // "snap" is not locked: the pin was a crashed hash's, and is gone now.
    assert!(maps.stat(&pin_name(7)).is_err());
    let r = collect(&*maps, &*data, &opts(), &mut nothing).unwrap();
    assert_eq!(r.freed_objects, 1);
    assert!(data.stat(&c).is_err());
    // A pin of a snapshot that is locked (a live hash) stays.
    maps.write_full(&pin_name(8), b"snap", true).unwrap();
    maps.try_lock("snap", "h").unwrap();
    collect(&*maps, &*data, &opts(), &mut nothing).unwrap();
    assert!(maps.stat(&pin_name(8)).is_ok());
    drop(m);
}

#[test]
fn a_hash_waits_for_a_running_collection_and_fails_busy_after_the_bound() {
    let (maps, data, m) = setup();
    m.create("v", 8192, Some(4096)).unwrap();
    let exts = m.map_write("v", 0, 4096).unwrap();
    for e in &exts {
        data.write(e.object.as_deref().unwrap(), 0, &[9; 4096], true)
            .unwrap();
    }
    commit_pending(&m, "v", &exts);
    m.snapshot("v", "s").unwrap();
    // A collection that crashed: generation odd.
    maps.write_full(GC_STATE_OBJECT, &encode_generation(3), true)
        .unwrap();
    let e = m.hash("s").unwrap_err();
    assert_eq!(e.code, ErrorCode::Busy, "{e}");
    assert!(e.detail.contains("garbage collection"), "{e}");
    assert!(
        maps.list("archip_gcpin_").unwrap().is_empty(),
        "the pin goes with the failed hash"
    );
    // A collection that finishes while a hash waits lets it through: a
    // second mapper (waiting up to 30 s) whose reads of the generation are
    // counted; the collection finishes once the hash has read it three
    // times (the first read and at least one more: it is waiting).
    // v is closed first: the second mapper stands for another mapperd,
    // and a map open in one is moved by that one (here, v is closed and
    // the hash moves it under its lock).
    m.close("v").unwrap();
    let counted = Arc::new(FaultyStore::new(maps.clone()));
    counted.add_rule(
        Rule::new(OpKind::Stat, Fault::Delay(Duration::ZERO)).names_with_prefix(GC_STATE_OBJECT),
    );
    let m2 = Mapper::new(counted.clone(), data.clone(), "h".into())
        .with_gc_wait(Duration::from_secs(30));
    let t = {
        let (maps, counted) = (maps.clone(), counted.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while counted.injected() < 3 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the hash never waited for the collection"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            maps.write_full(GC_STATE_OBJECT, &encode_generation(4), true)
                .unwrap();
        })
    };
    m2.hash("s").unwrap();
    t.join().unwrap();
    drop(m2);
    assert!(maps.list("archip_gcpin_").unwrap().is_empty());
    // The hash moved v onto the content object too (issue 14, dedup that
    // saves space): the next collection frees the replaced object and the
    // chunk v and s shared, and keeps the content.
    let r = collect(&*maps, &*data, &opts(), &mut nothing).unwrap();
    assert_eq!((r.freed_objects, r.freed_chunks), (2, 1), "{r:?}");
    let mut buf = vec![0u8; 4096];
    for v in ["v", "s"] {
        let ext = m.map_read(v, 0, 4096).unwrap();
        archipelago_mapper::read_extent(&*data, &ext[0], &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 9), "{v} reads as before");
    }
}

#[test]
fn collectors_exclude_each_other_and_a_fenced_one_stops() {
    let (maps, data, m) = setup();
    garbage(&m, &*data, "v", 3000);
    maps.try_lock(GC_STATE_OBJECT, "gc@other").unwrap();
    match collect(&*maps, &*data, &opts(), &mut nothing) {
        Err(GcError::Busy { owner }) => assert_eq!(owner, "gc@other"),
        r => panic!("expected Busy, got {r:?}"),
    }
    maps.break_lock(GC_STATE_OBJECT).unwrap();
    // Break our lock in the middle of the sweep.
    let maps2 = maps.clone();
    let mut broke = false;
    let r = collect(&*maps, &*data, &opts(), &mut |phase, done, _| {
        if phase == archipelago_gc::Phase::Sweep && done > 0 && !broke {
            broke = true;
            maps2.break_lock(GC_STATE_OBJECT).unwrap();
            maps2.try_lock(GC_STATE_OBJECT, "gc@thief").unwrap();
        }
    });
    assert!(matches!(r, Err(GcError::Fenced { .. })), "{r:?}");
    assert_eq!(
        maps.lock_owner(GC_STATE_OBJECT).unwrap().unwrap().0,
        "gc@thief"
    );
    // Broken after 1024 objects were swept: at most one batch more.
    let left = data.list("").unwrap().len() as u64;
    assert!(
        left >= 3000 - 1024 - archipelago_gc::DELETE_BATCH,
        "{left} left"
    );
}

#[test]
fn an_interrupted_run_is_finished_by_the_next() {
    let (maps, data, m) = setup();
    garbage(&m, &*data, "v", 3000);
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let o = GcOptions {
        stop: Some(stop),
        ..opts()
    };
    let r = collect(&*maps, &*data, &o, &mut |phase, done, _| {
        if phase == archipelago_gc::Phase::Sweep && done >= 1024 {
            s2.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let freed = match r {
        Err(GcError::Interrupted { freed }) => freed,
        r => panic!("expected Interrupted, got {r:?}"),
    };
    assert!(freed > 0 && freed < 3000, "{freed}");
    assert_eq!(
        generation(&*maps).unwrap() % 2,
        0,
        "a stopped run ends its generation"
    );
    assert!(
        maps.lock_owner(GC_STATE_OBJECT).unwrap().is_none(),
        "and releases the lock"
    );
    let r = collect(&*maps, &*data, &opts(), &mut nothing).unwrap();
    assert!(r.freed_objects > 0);
    assert_eq!(maps.list("").unwrap(), ["archip_gc"]);
    assert!(data.list("").unwrap().is_empty());
    assert_eq!(generation(&*maps).unwrap() % 2, 0);
}

#[test]
fn an_old_format_map_stops_the_run_before_any_delete() {
    let (maps, data, m) = setup();
    garbage(&m, &*data, "v", 2);
    // A v1 map: 12-byte LE header (magic-less) — anything that is not a
    // format 3 header under a volume name.
    maps.write_full("legacy", &[1, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0], true)
        .unwrap();
    let e = collect(&*maps, &*data, &opts(), &mut nothing).unwrap_err();
    assert!(e.to_string().contains("legacy"), "{e}");
    assert_eq!(data.list("").unwrap().len(), 2);
    // The failed run does not leave hashes waiting.
    assert_eq!(generation(&*maps).unwrap(), 2);
}

/// A store whose pages come out of order (as RADOS lists in hash order):
/// names reversed inside each page, and pages of 3.
struct Unordered(Arc<MemoryStore>);

impl ObjectStore for Unordered {
    fn read(&self, n: &str, o: u64, b: &mut [u8]) -> Result<u64, archipelago_store::StoreError> {
        self.0.read(n, o, b)
    }
    fn write(
        &self,
        n: &str,
        o: u64,
        d: &[u8],
        f: bool,
    ) -> Result<(), archipelago_store::StoreError> {
        self.0.write(n, o, d, f)
    }
    fn write_full(&self, n: &str, d: &[u8], f: bool) -> Result<(), archipelago_store::StoreError> {
        self.0.write_full(n, d, f)
    }
    fn write_fenced(
        &self,
        n: &str,
        o: u64,
        d: &[u8],
        f: bool,
        fence: archipelago_store::Fence<'_>,
    ) -> Result<(), archipelago_store::StoreError> {
        self.0.write_fenced(n, o, d, f, fence)
    }
    fn write_full_fenced(
        &self,
        n: &str,
        d: &[u8],
        f: bool,
        fence: archipelago_store::Fence<'_>,
    ) -> Result<(), archipelago_store::StoreError> {
        self.0.write_full_fenced(n, d, f, fence)
    }
    fn raise_fence(&self, l: &str, t: u64) -> Result<u64, archipelago_store::StoreError> {
        self.0.raise_fence(l, t)
    }
    fn delete(&self, n: &str) -> Result<(), archipelago_store::StoreError> {
        self.0.delete(n)
    }
    fn stat(
        &self,
        n: &str,
    ) -> Result<archipelago_store::ObjectStat, archipelago_store::StoreError> {
        self.0.stat(n)
    }
    fn copy(
        &self,
        s: &str,
        so: u64,
        d: &str,
        dof: u64,
        l: u64,
        f: bool,
    ) -> Result<(), archipelago_store::StoreError> {
        self.0.copy(s, so, d, dof, l, f)
    }
    fn store_content(&self, d: &[u8], f: bool) -> Result<String, archipelago_store::StoreError> {
        self.0.store_content(d, f)
    }
    fn sync(&self) -> Result<(), archipelago_store::StoreError> {
        self.0.sync()
    }
    fn try_lock(&self, n: &str, o: &str) -> Result<u64, archipelago_store::StoreError> {
        self.0.try_lock(n, o)
    }
    fn unlock(&self, n: &str, o: &str) -> Result<(), archipelago_store::StoreError> {
        self.0.unlock(n, o)
    }
    fn break_lock(&self, n: &str) -> Result<Option<String>, archipelago_store::StoreError> {
        self.0.break_lock(n)
    }
    fn lock_owner(&self, n: &str) -> Result<Option<(String, u64)>, archipelago_store::StoreError> {
        self.0.lock_owner(n)
    }
    fn list(&self, p: &str) -> Result<Vec<String>, archipelago_store::StoreError> {
        self.0.list(p)
    }
    fn list_page(
        &self,
        p: &str,
        cursor: Option<&str>,
        _limit: usize,
    ) -> Result<archipelago_store::ListPage, archipelago_store::StoreError> {
        let mut page = self.0.list_page(p, cursor, 3)?;
        page.names.reverse();
        Ok(page)
    }
}

#[test]
fn pages_in_any_order_are_collected_the_same() {
    let (maps, data, m) = setup();
    m.create("live", 8 * 4096, Some(4096)).unwrap();
    let exts = m.map_write("live", 0, 8 * 4096).unwrap();
    for e in &exts {
        data.write(
            e.object.as_deref().unwrap(),
            e.offset_in_object,
            &[5; 4096],
            true,
        )
        .unwrap();
    }
    commit_pending(&m, "live", &exts);
    garbage(&m, &*data, "gone", 10);
    let live_objects = m.map_read("live", 0, 8 * 4096).unwrap();
    let (um, ud) = (Unordered(maps.clone()), Unordered(data.clone()));
    let r = collect(&um, &ud, &opts(), &mut nothing).unwrap();
    assert_eq!(r.data_objects, 18);
    assert!(r.freed_objects >= 10, "{r:?}");
    for e in live_objects {
        assert!(
            data.stat(e.object.as_deref().unwrap()).is_ok(),
            "live data kept"
        );
    }
    assert_eq!(data.list("").unwrap().len(), 8);
    assert_eq!(
        collect(&um, &ud, &opts(), &mut nothing)
            .unwrap()
            .freed_objects,
        0
    );
}

/// Hazard 1: a copy-up writes `{V}_{epoch}_{i}` (and a chunk under the
/// next serial) before it commits. A collection between the two keeps
/// them; once V's epoch or serial moved past them, or V is removed, they
/// can never be referenced again and go.
#[test]
fn objects_of_a_change_in_flight_are_kept_until_they_cannot_be_committed() {
    let (maps, data, m) = setup();
    m.create("v", 8 * 4096, Some(4096)).unwrap();
    let read = |name: &str| -> Header {
        let mut b = vec![0; maps.stat(name).unwrap().size as usize];
        maps.read(name, 0, &mut b).unwrap();
        Header::decode(&b).unwrap()
    };
    let h = read("v");
    // What a copy-up in flight has written so far: the object, the chunk.
    let object = archipelago_mapfmt::owned_object_name(h.volume_id, h.epoch, 5);
    data.write(&object, 0, &[1; 4096], true).unwrap();
    let chunk = format!("{:016x}_{:016x}", h.volume_id, h.next_serial);
    maps.write_full(&chunk, b"not yet committed", true).unwrap();
    let r = collect(&*maps, &*data, &opts(), &mut nothing).unwrap();
    assert_eq!((r.freed_objects, r.kept_in_flight), (0, 2), "{r:?}");
    assert!(data.stat(&object).is_ok() && maps.stat(&chunk).is_ok());
    // A snapshot moves v to the next epoch: the object can no longer be
    // committed (a snapshot refuses pending writes) and goes. The chunk's
    // serial is still v's next one.
    m.snapshot("v", "s").unwrap();
    let r = collect(&*maps, &*data, &opts(), &mut nothing).unwrap();
    assert_eq!((r.freed_objects, r.kept_in_flight), (1, 1), "{r:?}");
    assert!(data.stat(&object).is_err() && maps.stat(&chunk).is_ok());
    // A committed change takes that serial (rewriting the orphan) and
    // moves past it: nothing in flight is left.
    let exts = m.map_write("v", 0, 4096).unwrap();
    for e in &exts {
        data.write(e.object.as_deref().unwrap(), 0, &[2; 4096], true)
            .unwrap();
    }
    commit_pending(&m, "v", &exts);
    // The commit went to v's journal: the close checkpoints it.
    m.close("v").unwrap();
    assert!(read("v").next_serial > h.next_serial);
    let r = collect(&*maps, &*data, &opts(), &mut nothing).unwrap();
    assert_eq!(r.kept_in_flight, 0, "{r:?}");
    // Removing v: its current-epoch objects no longer referenced go too.
    let h = read("v");
    let later = archipelago_mapfmt::owned_object_name(h.volume_id, h.epoch, 6);
    data.write(&later, 0, &[3; 4096], true).unwrap();
    assert_eq!(
        collect(&*maps, &*data, &opts(), &mut nothing)
            .unwrap()
            .kept_in_flight,
        1
    );
    m.remove("v").unwrap();
    collect(&*maps, &*data, &opts(), &mut nothing).unwrap();
    assert!(data.stat(&later).is_err());
}

/// Rebase records and their list (left by a hash whose maps held
/// elsewhere were not moved yet) are kept: holders still apply them, and
/// the objects those maps name stay referenced through their headers.
#[test]
fn rebase_records_and_their_list_are_never_collected() {
    let (maps, data, m) = setup();
    let m = m.with_rebase_wait(Duration::ZERO);
    m.create("v", 8192, Some(4096)).unwrap();
    let exts = m.map_write("v", 0, 4096).unwrap();
    for e in &exts {
        data.write(e.object.as_deref().unwrap(), 0, &[7; 4096], true)
            .unwrap();
    }
    commit_pending(&m, "v", &exts);
    m.close("v").unwrap();
    m.snapshot("v", "s").unwrap();
    m.clone_volume("s", "c", None).unwrap();
    maps.try_lock("c", "elsewhere").unwrap();
    let r = m.hash("s").unwrap();
    assert_eq!(r.maps_left, vec!["c".to_string()]);
    let kept = maps.list("archip_rebase").unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    collect(&*maps, &*data, &opts(), &mut nothing).unwrap();
    assert_eq!(maps.list("archip_rebase").unwrap(), kept);
    // c still names v's old object: kept, and c reads it.
    let ext = m.map_read("c", 0, 4096).unwrap();
    let mut buf = vec![0u8; 4096];
    archipelago_mapper::read_extent(&*data, &ext[0], &mut buf).unwrap();
    assert!(ext[0].object.as_ref().unwrap().len() != 64 && buf == [7; 4096]);
}
