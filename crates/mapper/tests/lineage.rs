//! Lineage, flatten and rollback over memory stores.

mod common;

use std::sync::Arc;

use archipelago_protocol::ErrorCode;
use archipelago_store::ObjectStore;
use common::{pattern, write, Env, OS};

const OBJECTS: u64 = 40;
const SIZE: u64 = OBJECTS * OS;

/// A base volume with objects 0..30 written, snapshot "gold", clone
/// "clone" of it. Returns the expected content of the clone.
fn base_and_clone(e: &Env) -> Vec<u8> {
    e.m.create("base", SIZE, Some(OS)).unwrap();
    let mut model = vec![0u8; SIZE as usize];
    let data = pattern(3, 30 * OS as usize);
    e.write("base", 0, &data);
    model[..data.len()].copy_from_slice(&data);
    e.m.close("base").unwrap();
    e.m.snapshot("base", "gold").unwrap();
    e.m.clone_volume("gold", "clone", None).unwrap();
    model
}

fn flatten_all(e: &Env, name: &str) -> u64 {
    let mut next = 0;
    let mut copied = 0;
    for _ in 0..10 * OBJECTS {
        let s = e.m.flatten_step(name, next, 1).unwrap();
        copied += s.copied;
        if s.done {
            return copied;
        }
        next = s.next;
    }
    panic!("flatten of {name} never finished");
}

#[test]
fn flatten_copies_shared_objects_and_frees_the_parent() {
    let e = Env::new();
    let mut model = base_and_clone(&e);
    // The clone's own write: object 2 is no longer shared.
    e.write("clone", 2 * OS + 5, b"mine");
    model[2 * OS as usize + 5..2 * OS as usize + 9].copy_from_slice(b"mine");
    assert_eq!(
        e.m.remove("gold").unwrap_err().code,
        ErrorCode::InUse,
        "a snapshot with a clone stays"
    );
    assert_eq!(e.m.dependents("gold").unwrap(), ["clone"]);

    let status = e.m.flatten_step("clone", 0, 0).unwrap();
    assert_eq!(
        (status.remaining, status.total, status.copied),
        (29, OBJECTS, 0)
    );
    assert_eq!(flatten_all(&e, "clone"), 29);
    assert_eq!(e.m.info("clone").unwrap().parent, None);
    assert!(e.m.dependents("gold").unwrap().is_empty());
    // Idempotent: flattening again copies nothing.
    let again = e.m.flatten_step("clone", 0, 1).unwrap();
    assert!(again.done && again.copied == 0);

    e.m.remove("gold").unwrap();
    e.m.remove("base").unwrap();
    assert_eq!(e.read("clone", 0, SIZE), model);
    // No entry nor chunk of the clone names the base's objects: deleting
    // every object of the base's id leaves the clone intact.
    let base_id = format!("{:016x}_", e.m.info("base").unwrap().volume_id);
    for n in e.data.list(&base_id).unwrap() {
        e.data.delete(&n).unwrap();
    }
    for n in e.maps.list(&base_id).unwrap() {
        e.maps.delete(&n).unwrap();
    }
    let fresh = e.other("host1");
    e.m.close("clone").unwrap();
    assert_eq!(
        common::read(&fresh, &*e.data, "clone", 0, SIZE).unwrap(),
        model
    );
}

#[test]
fn flatten_serialises_with_writes_and_skips_pending_overwrites() {
    let e = Env::new();
    let mut model = base_and_clone(&e);
    // A full overwrite of object 4 in flight: map_write returned it
    // pending, the data is not written yet.
    let ext = e.m.map_write("clone", 4 * OS, OS).unwrap();
    assert!(ext[0].pending);
    let s = e.m.flatten_step("clone", 4, 1).unwrap();
    assert_eq!(s.next, 6, "object 4 skipped, 5 copied");
    e.data
        .write(
            ext[0].object.as_ref().unwrap(),
            0,
            &vec![0xab; OS as usize],
            true,
        )
        .unwrap();
    e.m.commit_writes("clone", &[4]).unwrap();
    model[4 * OS as usize..5 * OS as usize].fill(0xab);

    // Writers and the flatten on threads; a model of every write.
    let m = Arc::new(e);
    let writer = {
        let m = m.clone();
        std::thread::spawn(move || {
            let mut written = Vec::new();
            for i in 0..60u64 {
                let index = (i * 7) % OBJECTS;
                let off = index * OS + (i % 3) * 100;
                let bytes = pattern(i as u8, 700);
                write(&m.m, &*m.data, "clone", off, &bytes).unwrap();
                written.push((off, bytes));
            }
            written
        })
    };
    let mut next = 0;
    loop {
        let s = m.m.flatten_step("clone", next, 1).unwrap();
        if s.done {
            break;
        }
        next = s.next;
    }
    for (off, bytes) in writer.join().unwrap() {
        model[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
    }
    assert_eq!(m.read("clone", 0, SIZE), model);
    assert_eq!(m.m.info("clone").unwrap().parent, None);
    m.m.close("clone").unwrap();
    m.m.remove("gold").unwrap();
    assert_eq!(m.read("clone", 0, SIZE), model);
}

#[test]
fn flattening_a_volume_that_is_no_clone_changes_nothing() {
    let e = Env::new();
    base_and_clone(&e);
    let s = e.m.flatten_step("base", 0, 1).unwrap();
    assert!(s.done && s.copied == 0 && s.remaining == 0);
    assert_eq!(e.m.info("base").unwrap().parent.as_deref(), Some("gold"));
    assert_eq!(
        e.m.flatten_step("gold", 0, 1).unwrap_err().code,
        ErrorCode::InvalidArgument,
        "a snapshot is never flattened"
    );
    // A clone with a snapshot of its own: the walk crosses through it.
    e.m.snapshot("clone", "clone-s1").unwrap();
    assert_eq!(
        e.m.info("clone").unwrap().parent.as_deref(),
        Some("clone-s1")
    );
    flatten_all(&e, "clone");
    assert_eq!(e.m.info("clone").unwrap().parent, None);
}

#[test]
fn snapshots_of_a_clone_keep_depending_on_its_source() {
    let e = Env::new();
    base_and_clone(&e);
    e.m.snapshot("clone", "clone-s1").unwrap();
    e.m.clone_volume("clone-s1", "grandchild", None).unwrap();
    let mut deps = e.m.dependents("gold").unwrap();
    deps.sort();
    assert_eq!(deps, ["clone", "clone-s1", "grandchild"]);
    assert_eq!(e.m.dependents("clone-s1").unwrap(), ["grandchild"]);
    flatten_all(&e, "clone");
    let mut deps = e.m.dependents("gold").unwrap();
    deps.sort();
    assert_eq!(
        deps,
        ["clone-s1", "grandchild"],
        "they still list gold's objects"
    );
    let err = e.m.remove("gold").unwrap_err();
    assert!(err.detail.contains("clone-s1"), "{err}");
    let lineage = e.m.lineage().unwrap();
    let names: Vec<&str> = lineage.iter().map(|r| r.node.name.as_str()).collect();
    assert_eq!(names, ["base", "clone", "clone-s1", "gold", "grandchild"]);
}

#[test]
fn rollback_returns_the_snapshot_content_without_touching_it() {
    let e = Env::new();
    e.m.create("vol", SIZE, Some(OS)).unwrap();
    let first = pattern(1, 10 * OS as usize);
    e.write("vol", 0, &first);
    e.m.close("vol").unwrap();
    e.m.snapshot("vol", "s1").unwrap();
    let second = pattern(2, 20 * OS as usize);
    e.write("vol", 5 * OS, &second);
    e.m.resize("vol", 2 * SIZE, false).unwrap();
    let before = e.read("vol", 0, 2 * SIZE);

    // Refused while open, for a non-snapshot and for another volume's.
    assert_eq!(e.m.rollback("vol", "s1").unwrap_err().code, ErrorCode::Busy);
    e.m.close("vol").unwrap();
    let other = e.other("host2");
    other.open("vol", true).unwrap();
    assert_eq!(
        e.m.rollback("vol", "s1").unwrap_err().code,
        ErrorCode::Locked
    );
    other.close("vol").unwrap();
    e.m.create("stranger", SIZE, Some(OS)).unwrap();
    e.m.snapshot("stranger", "stranger-s").unwrap();
    let err = e.m.rollback("vol", "stranger-s").unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.detail.contains("not a snapshot of vol"), "{err}");
    assert_eq!(
        e.m.rollback("vol", "stranger").unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        e.read("vol", 0, 2 * SIZE),
        before,
        "refusals change nothing"
    );

    e.m.snapshot("vol", "s2").unwrap();
    let epoch = e.m.info("vol").unwrap().epoch;
    e.m.rollback("vol", "s1").unwrap();
    let info = e.m.info("vol").unwrap();
    assert_eq!((info.size, info.epoch), (SIZE, epoch + 1));
    assert_eq!(info.parent.as_deref(), Some("s1"));
    let mut expect = vec![0u8; SIZE as usize];
    expect[..first.len()].copy_from_slice(&first);
    assert_eq!(e.read("vol", 0, SIZE), expect);
    // Writing after the rollback copies on write: s1 is unchanged.
    e.write("vol", 0, b"after");
    e.m.close("vol").unwrap();
    assert_eq!(e.read("s1", 0, SIZE), expect);
    assert_eq!(&e.read("vol", 0, 5), b"after");
    // Forward again to a later snapshot of the same volume.
    e.m.rollback("vol", "s2").unwrap();
    assert_eq!(e.read("vol", 0, 2 * SIZE), before);
    // A removed snapshot is refused.
    e.m.remove("s1").unwrap();
    assert_eq!(
        e.m.rollback("vol", "s1").unwrap_err().code,
        ErrorCode::NotFound
    );
}

#[test]
fn a_flatten_copy_in_flight_stalls_only_writes_to_its_object() {
    use archipelago_mapper::Mapper;
    use archipelago_store::{Fault, FaultyStore, Gate, MemoryStore, OpKind};
    use std::sync::mpsc;
    use std::time::Duration;

    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(FaultyStore::new(MemoryStore::new()));
    let m = Arc::new(Mapper::new(maps, data.clone(), "host1".into()));
    m.create("base", SIZE, Some(OS)).unwrap();
    let base = pattern(5, SIZE as usize);
    write(&m, &*data, "base", 0, &base).unwrap();
    m.close("base").unwrap();
    m.snapshot("base", "gold").unwrap();
    m.clone_volume("gold", "clone", None).unwrap();
    let mut model = base.clone();
    // Object 9 becomes the clone's own (open, as under a writer).
    write(&m, &*data, "clone", 9 * OS, b"own").unwrap();
    model[9 * OS as usize..9 * OS as usize + 3].copy_from_slice(b"own");

    // Every copy now waits at a gate: the flatten's copy of object 0 is
    // held in flight until the gate opens.
    let gate = Gate::new();
    data.fail_always(OpKind::Copy, Fault::Hold(gate.clone()));
    let flatten = {
        let m = m.clone();
        std::thread::spawn(move || m.flatten_step("clone", 0, 1).unwrap())
    };
    assert!(
        gate.wait_arrived(1, Duration::from_secs(30)),
        "the flatten never started its copy"
    );
    // Reads of every object and a write elsewhere complete while the copy
    // is held.
    let (tx, rx) = mpsc::channel();
    {
        let (m, data) = (m.clone(), data.clone());
        std::thread::spawn(move || {
            let got = common::read(&m, &*data, "clone", 0, SIZE).unwrap();
            write(&m, &*data, "clone", 9 * OS + 100, b"meanwhile").unwrap();
            let _ = tx.send(got);
        });
    }
    let got = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| {
            gate.open();
            panic!("reads and writes elsewhere waited for the copy in flight: {e}")
        });
    assert!(!gate.is_open() && !flatten.is_finished());
    assert_eq!(
        got, model,
        "reads of the object being copied see the shared one"
    );
    model[9 * OS as usize + 100..9 * OS as usize + 109].copy_from_slice(b"meanwhile");
    // A write into object 0 waits for the copy, then lands on top of it:
    // it returns only after the gate opened.
    let (tx, rx) = mpsc::channel();
    {
        let (m, data, gate) = (m.clone(), data.clone(), gate.clone());
        std::thread::spawn(move || {
            write(&m, &*data, "clone", 10, b"after").unwrap();
            let _ = tx.send(gate.is_open());
        });
    }
    // Give a write that does not wait the chance to return too early (a
    // slow machine can only hide the bug here, never fail the test).
    match rx.recv_timeout(Duration::from_millis(300)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => {
            gate.open();
            panic!("the write into object 0 went on before its copy ended: {other:?}");
        }
    }
    gate.open();
    assert!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        "the write into object 0 went on before its copy ended"
    );
    model[10..15].copy_from_slice(b"after");
    let step = flatten.join().unwrap();
    assert_eq!((step.copied, step.next), (1, 1), "{step:?}");
    data.clear();
    assert_eq!(common::read(&m, &*data, "clone", 0, SIZE).unwrap(), model);
    let mut next = 0;
    while !m
        .flatten_step("clone", next, 1)
        .map(|s| {
            next = s.next;
            s.done
        })
        .unwrap()
    {}
    m.close("clone").unwrap();
    m.remove("gold").unwrap();
    assert_eq!(common::read(&m, &*data, "clone", 0, SIZE).unwrap(), model);
}
