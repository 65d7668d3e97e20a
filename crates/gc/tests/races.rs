//! Interleavings of a collection with volume operations, made exact: a
//! store wrapper runs an operation at a chosen store call of the
//! collector (or of a mapper), so each race of issue 14 happens the same
//! way every run. Each test failed before its fix.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archipelago_gc::{collect, GcError, GcOptions};
use archipelago_mapfmt::gcmeta::{encode_generation, GC_STATE_OBJECT};
use archipelago_mapper::{read_extent, Mapper};
use archipelago_protocol::ErrorCode;
use archipelago_store::{Fence, ListPage, MemoryStore, ObjectStat, ObjectStore, StoreError};

const OS: u64 = 4096;

type Hook = Box<dyn FnOnce() + Send>;

/// Which store call of a [`Hooked`] store fires a hook.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum At {
    Stat,
    Delete,
    WriteFull,
    TryLock,
}

/// A store that runs a hook (once) just before a given call on a given
/// name, then forwards the call.
struct Hooked {
    inner: Arc<MemoryStore>,
    hooks: Mutex<Vec<(At, String, Hook)>>,
}

impl Hooked {
    fn new(inner: Arc<MemoryStore>) -> Hooked {
        Hooked {
            inner,
            hooks: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` before the next `at` call on `name` ("" for any name).
    fn on(&self, at: At, name: &str, f: impl FnOnce() + Send + 'static) {
        self.hooks
            .lock()
            .unwrap()
            .push((at, name.to_owned(), Box::new(f)));
    }

    fn fire(&self, at: At, name: &str) {
        let hook = {
            let mut hooks = self.hooks.lock().unwrap();
            let i = hooks
                .iter()
                .position(|(a, n, _)| *a == at && (n.is_empty() || n == name));
            i.map(|i| hooks.remove(i).2)
        };
        if let Some(f) = hook {
            f();
        }
    }
}

impl ObjectStore for Hooked {
    fn read(&self, n: &str, o: u64, b: &mut [u8]) -> Result<u64, StoreError> {
        self.inner.read(n, o, b)
    }
    fn write(&self, n: &str, o: u64, d: &[u8], f: bool) -> Result<(), StoreError> {
        self.inner.write(n, o, d, f)
    }
    fn write_full(&self, n: &str, d: &[u8], f: bool) -> Result<(), StoreError> {
        self.fire(At::WriteFull, n);
        self.inner.write_full(n, d, f)
    }
    fn write_fenced(
        &self,
        n: &str,
        o: u64,
        d: &[u8],
        f: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        self.inner.write_fenced(n, o, d, f, fence)
    }
    fn write_full_fenced(
        &self,
        n: &str,
        d: &[u8],
        f: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        self.fire(At::WriteFull, n);
        self.inner.write_full_fenced(n, d, f, fence)
    }
    fn raise_fence(&self, lock: &str, token: u64) -> Result<u64, StoreError> {
        self.inner.raise_fence(lock, token)
    }
    fn delete(&self, n: &str) -> Result<(), StoreError> {
        self.fire(At::Delete, n);
        self.inner.delete(n)
    }
    fn stat(&self, n: &str) -> Result<ObjectStat, StoreError> {
        self.fire(At::Stat, n);
        self.inner.stat(n)
    }
    fn copy(&self, s: &str, so: u64, d: &str, dof: u64, l: u64, f: bool) -> Result<(), StoreError> {
        self.inner.copy(s, so, d, dof, l, f)
    }
    fn store_content(&self, d: &[u8], f: bool) -> Result<String, StoreError> {
        self.inner.store_content(d, f)
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }
    fn try_lock(&self, n: &str, o: &str) -> Result<u64, StoreError> {
        self.fire(At::TryLock, n);
        self.inner.try_lock(n, o)
    }
    fn unlock(&self, n: &str, o: &str) -> Result<(), StoreError> {
        self.inner.unlock(n, o)
    }
    fn break_lock(&self, n: &str) -> Result<Option<String>, StoreError> {
        self.inner.break_lock(n)
    }
    fn lock_owner(&self, n: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.inner.lock_owner(n)
    }
    fn list(&self, p: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(p)
    }
    fn list_page(&self, p: &str, c: Option<&str>, l: usize) -> Result<ListPage, StoreError> {
        self.inner.list_page(p, c, l)
    }
}

struct World {
    maps: Arc<MemoryStore>,
    data: Arc<MemoryStore>,
    m: Arc<Mapper>,
}

fn world(host: &str) -> World {
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(MemoryStore::new());
    let m = Arc::new(
        Mapper::new(maps.clone(), data.clone(), host.into())
            .with_hash_threads(1)
            .with_gc_wait(Duration::from_secs(10)),
    );
    World { maps, data, m }
}

impl World {
    fn write(&self, name: &str, index: u64, byte: u8) {
        write_with(&self.m, &*self.data, name, index, byte);
    }
    fn read(&self, name: &str, objects: u64) -> Result<Vec<u8>, String> {
        let exts = self
            .m
            .map_read(name, 0, objects * OS)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for e in exts {
            let mut buf = vec![0u8; e.len as usize];
            read_extent(&*self.data, &e, &mut buf).map_err(|e| e.to_string())?;
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }
}

fn write_with(m: &Mapper, data: &dyn ObjectStore, name: &str, index: u64, byte: u8) {
    let exts = m.map_write(name, index * OS, OS).unwrap();
    for e in &exts {
        data.write(e.object.as_deref().unwrap(), 0, &[byte; OS as usize], true)
            .unwrap();
    }
    let pending: Vec<u64> = exts.iter().filter(|e| e.pending).map(|e| e.index).collect();
    if !pending.is_empty() {
        m.commit_writes(name, &pending).unwrap();
    }
}

fn opts(host: &str) -> GcOptions {
    GcOptions {
        host: host.into(),
        page: 3,
        ..GcOptions::default()
    }
}

fn nothing(_: archipelago_gc::Phase, _: u64, _: u64) {}

fn filled(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().flat_map(|b| vec![*b; OS as usize]).collect()
}

/// `vlmc rollback V S` while the collector has read V but not S, then
/// `vlmc remove S`: V now names S's chunk and older-epoch objects, which
/// the collector never saw referenced through a live header.
#[test]
fn a_rollback_during_the_mark_keeps_what_the_volume_now_names() {
    let w = world("h");
    w.m.create("a-vol", 2 * OS, Some(OS)).unwrap();
    w.write("a-vol", 0, 1);
    w.write("a-vol", 1, 2);
    w.m.snapshot("a-vol", "z-snap").unwrap();
    w.write("a-vol", 0, 3);
    let gc_maps = Hooked::new(w.maps.clone());
    let m = w.m.clone();
    // The collector reads headers in name order: a-vol, then z-snap.
    gc_maps.on(At::Stat, "z-snap", move || {
        m.close("a-vol").unwrap(); // the writes' implicit open
        m.rollback("a-vol", "z-snap").unwrap();
        m.remove("z-snap").unwrap();
    });
    collect(&gc_maps, &*w.data, &opts("h"), &mut nothing).unwrap();
    assert_eq!(w.read("a-vol", 2).unwrap(), filled(&[1, 2]));
    // Nothing is left behind either: a quiet run frees what is garbage.
    collect(&*w.maps, &*w.data, &opts("h"), &mut nothing).unwrap();
    assert_eq!(w.read("a-vol", 2).unwrap(), filled(&[1, 2]));
}

/// `vlmc rename gold gold-old; vlmc snapshot vm gold` after the collector
/// read the old `gold`: the new `gold` has a name already seen.
#[test]
fn a_name_reused_during_the_mark_is_read_again() {
    let w = world("h");
    w.m.create("vm", 2 * OS, Some(OS)).unwrap();
    w.write("vm", 0, 1);
    w.m.snapshot("vm", "gold").unwrap();
    w.write("vm", 0, 2);
    w.write("vm", 1, 3);
    let gc_maps = Hooked::new(w.maps.clone());
    let m = w.m.clone();
    let data = w.data.clone();
    // Headers in name order: gold (the old one), then vm.
    gc_maps.on(At::Stat, "vm", move || {
        m.rename("gold", "gold-old").unwrap();
        m.snapshot("vm", "gold").unwrap();
        write_with(&m, &*data, "vm", 0, 4);
        write_with(&m, &*data, "vm", 1, 5);
    });
    collect(&gc_maps, &*w.data, &opts("h"), &mut nothing).unwrap();
    assert_eq!(w.read("gold", 2).unwrap(), filled(&[2, 3]));
    assert_eq!(w.read("gold-old", 2).unwrap(), filled(&[1, 0]));
    assert_eq!(w.read("vm", 2).unwrap(), filled(&[4, 5]));
}

/// A hash that found a collection running waits for a *finished*
/// generation: a second collector (after `gc --break-lock`) moving the
/// generation from one odd value to the next does not release it.
#[test]
fn a_hash_waits_for_a_finished_generation_not_a_new_odd_one() {
    let w = world("h");
    w.m.create("v", OS, Some(OS)).unwrap();
    w.write("v", 0, 7);
    w.m.snapshot("v", "s").unwrap();
    // A collector that is running (or was, on a dead host).
    w.maps
        .write_full(GC_STATE_OBJECT, &encode_generation(1), true)
        .unwrap();
    w.maps.try_lock(GC_STATE_OBJECT, "gc@dead").unwrap();
    let (tx, rx) = mpsc::channel();
    let m = w.m.clone();
    let hasher = std::thread::spawn(move || {
        let r = m.hash("s");
        tx.send(()).unwrap();
        r
    });
    archipelago_gc::break_lock(&*w.maps).unwrap();
    let mut hashed_during_run = false;
    let mut asked = false;
    let mut progress = |phase, _, _| {
        if phase == archipelago_gc::Phase::Mark && !asked {
            asked = true;
            // The generation is odd (3) now: the hash must still wait.
            hashed_during_run = rx.recv_timeout(Duration::from_millis(400)).is_ok();
        }
    };
    collect(&*w.maps, &*w.data, &opts("h"), &mut progress).unwrap();
    assert!(asked);
    assert!(
        !hashed_during_run,
        "the hash ran while the second collection was running"
    );
    hasher.join().unwrap().unwrap();
}

/// A collector whose lock is broken deletes no content object after
/// the break: it checks its lock before each such delete, not once per
/// batch.
#[test]
fn a_fenced_collector_deletes_no_content_object_after_the_break() {
    let w = world("h");
    let mut contents = Vec::new();
    for i in 0..6u8 {
        contents.push(w.data.store_content(&[i; 64], true).unwrap());
    }
    let gc_data = Hooked::new(w.data.clone());
    let maps = w.maps.clone();
    gc_data.on(At::Delete, "", move || {
        archipelago_gc::break_lock(&*maps).unwrap();
    });
    let e = collect(&*w.maps, &gc_data, &opts("h"), &mut nothing).unwrap_err();
    assert!(matches!(e, GcError::Fenced { .. }), "{e}");
    let left = contents.iter().filter(|c| w.data.stat(c).is_ok()).count();
    assert!(
        left >= contents.len() - 1,
        "{} content objects deleted after the lock was broken",
        contents.len() - 1 - left
    );
}

/// A clone on host A commits while host B removes the snapshot: they
/// exclude each other (one of them fails), never a clone of a removed
/// snapshot.
#[test]
fn clone_and_remove_on_two_hosts_exclude_each_other() {
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(MemoryStore::new());
    let a_maps = Arc::new(Hooked::new(maps.clone()));
    let a = Mapper::new(a_maps.clone(), data.clone(), "host-a".into());
    let b = Arc::new(Mapper::new(maps.clone(), data.clone(), "host-b".into()));
    a.create("v", OS, Some(OS)).unwrap();
    write_with(&a, &*data, "v", 0, 9);
    a.snapshot("v", "s").unwrap();
    let removed = Arc::new(Mutex::new(None));
    {
        let (b, removed) = (b.clone(), removed.clone());
        a_maps.on(At::WriteFull, "c", move || {
            *removed.lock().unwrap() = Some(b.remove("s"));
        });
    }
    let cloned = a.clone_volume("s", "c", None);
    let removed = removed.lock().unwrap().take().expect("the hook ran");
    match (&cloned, &removed) {
        (Ok(()), Err(e)) => assert_eq!(e.code, ErrorCode::Locked, "{e}"),
        (Err(_), Ok(())) => {}
        _ => panic!("clone {cloned:?} and remove {removed:?} both succeeded or both failed"),
    }
    if cloned.is_ok() {
        assert!(!b.info("s").unwrap().removed);
    }
}

/// The collector found the removed header `x` unneeded; before it
/// deletes it, `x` is created again: the live header is not deleted (the
/// collector deletes under the name's lock, and only the same removed
/// header). A guard for the name-reuse change, which added the delete.
#[test]
fn a_removed_header_used_again_before_its_delete_is_not_deleted() {
    let w = world("h");
    w.m.create("x", OS, Some(OS)).unwrap();
    w.m.remove("x").unwrap();
    let gc_maps = Hooked::new(w.maps.clone());
    let m = w.m.clone();
    gc_maps.on(At::TryLock, "x", move || {
        m.create("x", 2 * OS, Some(OS)).unwrap();
    });
    collect(&gc_maps, &*w.data, &opts("h"), &mut nothing).unwrap();
    let info = w.m.info("x").unwrap();
    assert!(!info.removed && info.size == 2 * OS);
    // The old one, moved to its tombstone, goes at the next run.
    collect(&*w.maps, &*w.data, &opts("h"), &mut nothing).unwrap();
    let names = w.maps.list("").unwrap();
    assert_eq!(names, ["archip_gc", "x"], "{names:?}");
}
