//! Failures reach the caller as errors naming the object, never as
//! success, and the atomic operations (`write_full`, `store_content`,
//! `copy` into a new object) leave the store as it was.
//!
//! Three sources of failure: the `FaultyStore` wrapper (rules), the file
//! driver's own write path failing mid-way (its test hook makes a data
//! write store a prefix and then fail with `ENOSPC` or `EIO`, as a filling
//! disk does), and a `MemoryStore` that is really full.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use archipelago_protocol::ErrorCode;
use archipelago_store::{
    content_name_of, Fault, FaultyStore, FileStore, FileStoreOptions, MemoryStore, ObjectStore,
    OpKind, Rule, StoreError,
};

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

fn contents(s: &impl ObjectStore, name: &str) -> Option<Vec<u8>> {
    let size = match s.stat(name) {
        Ok(st) => st.size,
        Err(StoreError::NotFound { .. }) => return None,
        Err(e) => panic!("stat {name}: {e}"),
    };
    let mut buf = vec![0; size as usize];
    s.read(name, 0, &mut buf).unwrap();
    Some(buf)
}

#[track_caller]
fn assert_no_space<T: std::fmt::Debug>(r: Result<T, StoreError>, name: &str) {
    let e = r.expect_err("a fault was reported as success");
    assert_eq!(e.code(), ErrorCode::NoSpace, "{e}");
    assert!(
        matches!(&e, StoreError::NoSpace { name: n } if n == name),
        "{e:?}"
    );
    assert!(e.to_string().contains(name), "{e}");
}

#[track_caller]
fn assert_io<T: std::fmt::Debug>(r: Result<T, StoreError>, name: &str, op: &str) {
    let e = r.expect_err("a fault was reported as success");
    assert_eq!(e.code(), ErrorCode::Io, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(name) && msg.contains(op), "{msg}");
}

/// Seeds `map`, `src` and `old_dst`; returns a snapshot to compare with.
fn seed(s: &impl ObjectStore) -> Vec<(String, Option<Vec<u8>>)> {
    s.write_full("map", b"old map", true).unwrap();
    s.write("src", 0, b"source bytes", true).unwrap();
    s.write("old_dst", 0, b"old destination", true).unwrap();
    snapshot(s)
}

fn snapshot(s: &impl ObjectStore) -> Vec<(String, Option<Vec<u8>>)> {
    let mut names = s.list("").unwrap();
    names.extend(["new_dst".to_owned(), content_name_of(b"fresh content")]);
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| (n.clone(), contents(s, &n)))
        .collect()
}

/// Checks an operation's result, given the object name and operation.
type Check = dyn Fn(Result<(), StoreError>, &str, &str);

/// Runs the atomic operations under a fault and checks they fail with
/// `check` and change nothing.
fn atomic_ops_fail_cleanly<S: ObjectStore>(s: &S, arm: &dyn Fn(OpKind), check: &Check) {
    let before = seed(s);
    arm(OpKind::WriteFull);
    check(
        s.write_full("map", b"new map, longer than before", true),
        "map",
        "write_full",
    );
    arm(OpKind::StoreContent);
    let content = content_name_of(b"fresh content");
    check(
        s.store_content(b"fresh content", true).map(|_| ()),
        &content,
        "store_content",
    );
    arm(OpKind::Copy);
    check(s.copy("src", 0, "new_dst", 4, 12, true), "new_dst", "copy");
    assert_eq!(snapshot(s), before);
}

#[test]
fn injected_no_space_and_io_errors_reach_the_caller_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let next = AtomicU64::new(0);
    type Make<'a> = Box<dyn Fn() -> FaultyStore<Box<dyn ObjectStore>> + 'a>;
    let stores: Vec<Make> = vec![
        Box::new(|| FaultyStore::new(Box::new(MemoryStore::new()))),
        Box::new(|| {
            let dir = root
                .path()
                .join(next.fetch_add(1, Ordering::Relaxed).to_string());
            FaultyStore::new(Box::new(
                FileStore::open(dir, FileStoreOptions::default()).unwrap(),
            ))
        }),
    ];
    for make in &stores {
        let s = make();
        atomic_ops_fail_cleanly(&s, &|op| s.fail_next(op, Fault::NoSpace), &|r, name, _| {
            assert_no_space(r, name)
        });
        let s = make();
        atomic_ops_fail_cleanly(&s, &|op| s.fail_next(op, Fault::Io), &|r, name, op| {
            assert_io(r, name, op)
        });
        // A torn atomic operation is one that crashed before committing.
        let s = make();
        atomic_ops_fail_cleanly(
            &s,
            &|op| s.fail_next(op, Fault::Torn { keep: 3 }),
            &|r, name, op| assert_io(r, name, op),
        );
        // Plain writes and reads, and the other operations, report too.
        let s = make();
        s.fail_always(OpKind::Write, Fault::NoSpace);
        assert_no_space(s.write("obj", 0, b"x", true), "obj");
        s.clear();
        s.write("obj", 0, b"x", true).unwrap();
        for op in [
            OpKind::Read,
            OpKind::Stat,
            OpKind::Delete,
            OpKind::TryLock,
            OpKind::Sync,
        ] {
            s.fail_next(op, Fault::Io);
        }
        assert_io(s.read("obj", 0, &mut [0; 1]), "obj", "read");
        assert_io(s.stat("obj"), "obj", "stat");
        assert_io(s.delete("obj"), "obj", "delete");
        assert_io(s.try_lock("obj", "me"), "obj", "try_lock");
        assert!(s.sync().is_err());
        assert_eq!(contents(&s, "obj").unwrap(), b"x");
        assert_eq!(s.lock_owner("obj").unwrap(), None);
    }
}

#[test]
fn a_torn_write_is_an_error_and_applies_only_a_prefix() {
    let s = FaultyStore::new(MemoryStore::new());
    s.write("obj", 0, b"........", false).unwrap();
    s.fail_next(OpKind::Write, Fault::Torn { keep: 3 });
    assert_io(s.write("obj", 2, b"ABCDEF", true), "obj", "write");
    assert_eq!(contents(&s, "obj").unwrap(), b"..ABC...");
    // A torn copy into an existing object: a prefix too.
    s.fail_next(OpKind::Copy, Fault::Torn { keep: 2 });
    assert_io(s.copy("obj", 2, "obj", 0, 4, false), "obj", "copy");
    assert_eq!(contents(&s, "obj").unwrap(), b"ABABC...");
    // Prefix rules hit only their names.
    s.add_rule(Rule::new(OpKind::Write, Fault::Torn { keep: 0 }).names_with_prefix("vol_"));
    s.write("other", 0, b"fine", false).unwrap();
    assert!(s.write("vol_1", 0, b"torn", false).is_err());
    assert_eq!(contents(&s, "vol_1").unwrap(), b"");
}

/// The file driver's own paths, failing for real half-way through a data
/// write.
#[test]
fn a_file_store_failing_mid_write_leaves_atomic_objects_unchanged_and_no_temporaries() {
    for sync in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path(), FileStoreOptions { sync, fd_cache: 4 }).unwrap();
        let big = vec![7u8; 3 << 20];
        let before = seed(&s);
        for (errno, expect_no_space) in [(ENOSPC, true), (EIO, false)] {
            let check = |r: Result<(), StoreError>, name: &str, op: &str| {
                if expect_no_space {
                    assert_no_space(r, name)
                } else {
                    assert_io(r, name, op)
                }
            };
            s.inject_write_error(4096, errno);
            check(s.write_full("map", &big, true), "map", "write_full");
            s.inject_write_error(5, errno);
            let content = content_name_of(b"fresh content");
            check(
                s.store_content(b"fresh content", true).map(|_| ()),
                &content,
                "store_content",
            );
            s.inject_write_error(1, errno);
            check(s.copy("src", 0, "new_dst", 4, 12, true), "new_dst", "copy");
            // A multi-chunk copy failing in its second chunk.
            s.write_full("big_src", &big, true).unwrap();
            s.inject_write_error(100, errno);
            check(
                s.copy("big_src", 0, "new_dst", 0, 3 << 20, false),
                "new_dst",
                "copy",
            );
            s.delete("big_src").unwrap();
            assert_eq!(snapshot(&s), before);
            assert_eq!(leftover_temporaries(dir.path()), Vec::<String>::new());
        }
        // In-place writes may leave part written, but must say they failed.
        s.inject_write_error(2, ENOSPC);
        assert_no_space(s.write("old_dst", 0, b"XXXXXX", true), "old_dst");
        s.inject_write_error(2, EIO);
        assert_io(
            s.write("brand_new", 0, b"XXXXXX", false),
            "brand_new",
            "write",
        );
        s.inject_write_error(1, ENOSPC);
        assert_no_space(s.copy("src", 0, "old_dst", 0, 6, false), "old_dst");
        // And the store goes on working.
        s.write_full("map", b"finally", true).unwrap();
        assert_eq!(contents(&s, "map").unwrap(), b"finally");
    }
}

/// The temporaries in `dir/tmp` holding bytes: a failed operation's
/// (every failure injected here comes after some bytes were written).
/// The instance file and the store's empty spares are not leftovers.
fn leftover_temporaries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.metadata().unwrap().len() > 0)
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| !(n.starts_with('+') && n.len() == 17))
        .collect()
}

/// A memory store with a capacity is a really full disk.
#[test]
fn a_full_memory_store_refuses_atomic_operations_and_changes_nothing() {
    let s = MemoryStore::with_capacity(64);
    let before = seed(&s);
    assert_no_space(s.write_full("map", &[1; 64], true), "map");
    let content = content_name_of(&[9; 60]);
    assert_no_space(s.store_content(&[9; 60], true).map(|_| ()), &content);
    assert_no_space(s.copy("src", 0, "new_dst", 0, 60, true), "new_dst");
    assert_no_space(s.copy("src", 0, "old_dst", 10, 60, true), "old_dst");
    assert_no_space(s.write("src", 60, b"x", true), "src");
    assert_eq!(snapshot(&s), before);
}
