//! What only the file driver promises: persistence across reopen, fencing
//! tokens that survive a restart, immunity to stale temporary files, two
//! instances sharing a directory, and names that cannot leave it.

use std::fs;
use std::path::{Path, PathBuf};

use archipelago_store::{FileStore, FileStoreOptions, ObjectStore, StoreError};

fn open(dir: &Path, sync: bool) -> FileStore {
    FileStore::open(dir, FileStoreOptions { sync, fd_cache: 8 }).unwrap()
}

fn contents(s: &FileStore, name: &str) -> Vec<u8> {
    let mut buf = vec![0; s.stat(name).unwrap().size as usize];
    s.read(name, 0, &mut buf).unwrap();
    buf
}

/// Every file under `dir`, relative to it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Files in `tmp/` other than the instance files (`+<nonce>`).
fn temporaries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !(n.starts_with('+') && n.len() == 17))
        .collect()
}

#[test]
fn objects_survive_a_reopen_in_both_modes() {
    for sync in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let name;
        {
            let s = open(dir.path(), sync);
            s.write("vol_1", 10, b"data", false).unwrap();
            s.write_full("map", b"map v2", false).unwrap();
            s.copy("vol_1", 10, "vol_2", 0, 4, false).unwrap();
            name = s.store_content(b"block", false).unwrap();
            s.sync().unwrap();
        }
        let s = open(dir.path(), sync);
        assert_eq!(contents(&s, "vol_1"), b"\0\0\0\0\0\0\0\0\0\0data");
        assert_eq!(contents(&s, "map"), b"map v2");
        assert_eq!(contents(&s, "vol_2"), b"data");
        assert_eq!(contents(&s, &name), b"block");
        assert_eq!(s.list("").unwrap().len(), 4);
    }
}

#[test]
fn fencing_tokens_keep_growing_across_breaks_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let t1 = {
        let s = open(dir.path(), false);
        let t1 = s.try_lock("vol", "host_1").unwrap();
        assert_eq!(s.break_lock("vol").unwrap().as_deref(), Some("host_1"));
        t1
    };
    let t2 = {
        let s = open(dir.path(), false);
        assert_eq!(s.lock_owner("vol").unwrap(), None);
        let t2 = s.try_lock("vol", "host_2").unwrap();
        assert!(t2 > t1);
        t2
    };
    // Held locks survive a reopen too, with their token.
    let s = open(dir.path(), true);
    assert_eq!(s.lock_owner("vol").unwrap(), Some(("host_2".into(), t2)));
    assert!(matches!(
        s.try_lock("vol", "host_1"),
        Err(StoreError::Locked { ref owner, .. }) if owner == "host_2"
    ));
    s.unlock("vol", "host_2").unwrap();
    drop(s);
    let s = open(dir.path(), true);
    assert!(s.try_lock("vol", "host_1").unwrap() > t2);
}

#[test]
fn stale_temporary_files_break_nothing_and_do_not_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), true);
    // A crash leftover under the exact name the store will try next, a
    // file with a random name, and a directory.
    let tmp = s.temp_dir().to_owned();
    for _ in 0..3 {
        fs::write(tmp.join(s.next_temp_name()), b"stale").unwrap();
    }
    fs::write(tmp.join("random-garbage.tmp"), b"x").unwrap();
    fs::create_dir(tmp.join("somedir")).unwrap();
    let t = s.try_lock("vol", "host_1").unwrap();
    assert!(t > 0);
    fs::write(tmp.join(s.next_temp_name()), b"stale").unwrap();
    s.write_full("map", b"new map", true).unwrap();
    fs::write(tmp.join(s.next_temp_name()), b"stale").unwrap();
    let name = s.store_content(b"content", true).unwrap();
    fs::write(tmp.join(s.next_temp_name()), b"stale").unwrap();
    s.write("src", 0, b"abc", false).unwrap();
    s.copy("src", 0, "new_dst", 0, 3, false).unwrap();
    assert_eq!(contents(&s, "map"), b"new map");
    assert_eq!(contents(&s, &name), b"content");
    assert_eq!(contents(&s, "new_dst"), b"abc");
    s.unlock("vol", "host_1").unwrap();
    assert!(!temporaries(dir.path()).is_empty());
    drop(s);

    let s = open(dir.path(), true);
    assert_eq!(temporaries(dir.path()), Vec::<String>::new());
    assert!(s.try_lock("vol", "host_1").unwrap() > t);
}

#[test]
fn a_live_instances_temporaries_survive_another_opening() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), true);
    let in_use = a.temp_dir().join(a.next_temp_name());
    fs::write(&in_use, b"in flight").unwrap();
    let b = open(dir.path(), true);
    assert!(in_use.exists(), "another instance's temporary was removed");
    drop(a);
    drop(b);
    open(dir.path(), true);
    assert!(!in_use.exists());
}

#[test]
fn two_instances_on_one_directory_share_locks_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), true);
    let b = open(dir.path(), false);
    let t = a.try_lock("vol", "host_a").unwrap();
    assert!(matches!(
        b.try_lock("vol", "host_b"),
        Err(StoreError::Locked { .. })
    ));
    assert_eq!(b.break_lock("vol").unwrap().as_deref(), Some("host_a"));
    let t2 = b.try_lock("vol", "host_b").unwrap();
    assert!(t2 > t);
    assert!(matches!(
        a.unlock("vol", "host_a"),
        Err(StoreError::Locked { .. })
    ));
    a.write_full("obj", b"from a", true).unwrap();
    assert_eq!(contents(&b, "obj"), b"from a");
}

#[test]
fn a_lock_file_of_the_original_format_can_be_seen_and_broken() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), true);
    s.try_lock("vol", "placeholder").unwrap();
    // Overwrite the record with what archip-filed wrote: the bare owner.
    let lock = tree(dir.path())
        .into_iter()
        .find(|p| p.ends_with("vol_lock"))
        .unwrap();
    fs::write(dir.path().join(lock), b"node1_1000").unwrap();
    assert_eq!(s.lock_owner("vol").unwrap(), Some(("node1_1000".into(), 0)));
    assert!(matches!(
        s.try_lock("vol", "node1_10"),
        Err(StoreError::Locked { .. })
    ));
    assert_eq!(s.break_lock("vol").unwrap().as_deref(), Some("node1_1000"));
    assert!(s.try_lock("vol", "node1_10").unwrap() > 1);
}

#[test]
fn nothing_is_ever_created_outside_the_layout() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("store");
    let s = open(&dir, true);
    for bad in ["../escape", "a/b", "..", "/tmp/x"] {
        assert!(s.write(bad, 0, b"x", true).is_err());
        assert!(s.write_full(bad, b"x", true).is_err());
        assert!(s.try_lock(bad, "me").is_err());
    }
    s.write("ok", 0, b"x", true).unwrap();
    s.try_lock("ok", "me").unwrap();
    assert_eq!(fs::read_dir(outer.path()).unwrap().count(), 1);
    for path in tree(&dir) {
        let top = path
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            ["FORMAT", "objects", "locks", "tmp"].contains(&top.as_str()),
            "{}",
            path.display()
        );
        if top == "objects" {
            // objects/<h0>/<file>
            assert_eq!(path.components().count(), 3, "{}", path.display());
        }
        if top == "locks" && !path.ends_with(".guard") {
            // locks/<h0>/<h1>/<file>
            assert_eq!(path.components().count(), 4, "{}", path.display());
        }
    }
}

#[test]
fn foreign_files_in_the_object_tree_are_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), true);
    s.write("real", 0, b"x", true).unwrap();
    fs::create_dir_all(dir.path().join("objects/00/00")).unwrap();
    fs::write(dir.path().join("objects/00/00/.nfs0001"), b"").unwrap();
    fs::write(dir.path().join("objects/stray"), b"").unwrap();
    assert_eq!(s.list("").unwrap(), ["real"]);
}

#[test]
fn a_lost_fence_file_cannot_make_tokens_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), true);
    let mut t = 0;
    for _ in 0..5 {
        t = s.try_lock("vol", "host_1").unwrap();
        s.unlock("vol", "host_1").unwrap();
    }
    assert!(s.try_lock("vol", "host_1").unwrap() > t);
    let t = s.lock_owner("vol").unwrap().unwrap().1;
    for path in tree(dir.path()) {
        if path.ends_with("vol_fence") {
            fs::remove_file(dir.path().join(path)).unwrap();
        }
    }
    assert_eq!(s.break_lock("vol").unwrap().as_deref(), Some("host_1"));
    assert!(s.try_lock("vol", "host_2").unwrap() > t);
}

/// The page-cache fast path reads exactly what `read` reads (zeros past the
/// end, the object's size) or declines; it never reports a missing object
/// itself and never sees a replaced file's old bytes.
#[test]
fn try_read_now_matches_read_or_declines() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), false);
    let name = "vol_0000000000000001_0000000000000000";
    assert!(s.try_read_now(name, 0, &mut [0; 8]).is_none(), "missing");
    s.write(name, 4, b"abcdefgh", false).unwrap();
    let mut slow = vec![0xffu8; 32];
    let size = s.read(name, 2, &mut slow).unwrap();
    // Just written and read: in the page cache, its file open.
    let mut fast = vec![0xffu8; 32];
    let r = s.try_read_now(name, 2, &mut fast).expect("cached");
    assert_eq!(r.unwrap(), size);
    assert_eq!(fast, slow);
    assert_eq!(&fast[..12], b"\0\0abcdefgh\0\0");
    // Wholly past the end: zeros.
    let mut past = vec![0xffu8; 8];
    assert_eq!(s.try_read_now(name, 100, &mut past).unwrap().unwrap(), 12);
    assert_eq!(past, [0; 8]);
    // Replaced atomically: the fast path sees the new content or declines.
    s.write_full(name, b"new", false).unwrap();
    let mut after = vec![0xffu8; 4];
    if let Some(r) = s.try_read_now(name, 0, &mut after) {
        assert_eq!(r.unwrap(), 3);
        assert_eq!(&after, b"new\0");
    }
    s.delete(name).unwrap();
    assert!(s.try_read_now(name, 0, &mut [0; 4]).is_none(), "deleted");
}
