use super::*;

fn store(sync: bool) -> (tempfile::TempDir, FileStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path(), FileStoreOptions { sync, fd_cache: 4 }).unwrap();
    (dir, s)
}

/// Every directory under `objects/`.
fn object_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("objects")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn objects_live_under_their_fan_out_directories_made_with_the_store() {
    let (dir, s) = store(true);
    assert_eq!(
        fs::read(dir.path().join("FORMAT")).unwrap(),
        FORMAT.as_bytes()
    );
    let made = object_dirs(dir.path());
    assert_eq!(made.len(), 256);
    for (name, data) in [("obj", b"x"), ("other", b"y")] {
        s.write(name, 0, data, true).unwrap();
        let [h0, _] = fanout(name);
        assert_eq!(
            fs::read(dir.path().join("objects").join(h0).join(name)).unwrap(),
            data
        );
    }
    s.copy("obj", 0, "third", 0, 1, false).unwrap();
    s.store_content(b"content", true).unwrap();
    assert_eq!(object_dirs(dir.path()), made, "an object made a directory");
    // A fan-out directory removed from under a closed store is made again.
    fs::remove_dir(dir.path().join("objects/ff"))
        .unwrap_or_else(|_| fs::remove_dir_all(dir.path().join("objects/ff")).unwrap());
    drop(s);
    let _s = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(object_dirs(dir.path()), made);
}

/// A store made by an earlier version (format 1: two levels of fan-out,
/// made as objects need them) is read and written as it is.
#[test]
fn a_store_of_format_1_keeps_its_two_levels() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("FORMAT"), FORMAT_1).unwrap();
    let [h0, h1] = fanout("old");
    let old_dir = dir.path().join("objects").join(&h0).join(&h1);
    fs::create_dir_all(&old_dir).unwrap();
    fs::write(old_dir.join("old"), b"old data").unwrap();
    let s = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    let mut buf = [0; 8];
    s.read("old", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"old data");
    for name in (0..40).map(|i| format!("new{i}")) {
        s.write(&name, 0, name.as_bytes(), true).unwrap();
        let [h0, h1] = fanout(&name);
        assert!(dir
            .path()
            .join("objects")
            .join(h0)
            .join(h1)
            .join(&name)
            .is_file());
    }
    assert_eq!(
        fs::read(dir.path().join("FORMAT")).unwrap(),
        FORMAT_1.as_bytes()
    );
    // Listing in pages walks both levels and sees every object once.
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = s.list_page("", cursor.as_deref(), 7).unwrap();
        all.extend(page.names);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    all.sort();
    let mut want: Vec<String> = (0..40).map(|i| format!("new{i}")).collect();
    want.push("old".into());
    want.sort();
    assert_eq!(all, want);
    s.delete("old").unwrap();
    assert!(!old_dir.join("old").exists());
}

/// A copy-up syncs nothing, even in write-through mode;
/// the durable write it is for syncs the file and the directories
/// the copy created.
#[test]
fn a_lazy_copy_is_made_durable_by_the_next_durable_write() {
    let (_dir, s) = store(true);
    s.write("a", 0, b"xyz", true).unwrap();
    assert!(s.pending.is_clean());
    let fence = crate::Fence {
        lock: "vol",
        token: 1,
    };
    s.copy_up("a", 0, "c", 0, 3, fence).unwrap();
    assert!(!s.pending.is_clean(), "the copy was synced");
    s.write("c", 1, b"Q", true).unwrap();
    assert!(
        s.pending.is_clean(),
        "left unsynced: the copy's file or directories"
    );
    let mut got = [0; 3];
    s.read("c", 0, &mut got).unwrap();
    assert_eq!(&got, b"xQz");
}

#[test]
fn write_back_mode_leaves_work_for_sync_and_sync_clears_it() {
    let (_dir, s) = store(false);
    s.write("a", 0, b"x", false).unwrap();
    s.write_full("b", b"y", false).unwrap();
    s.copy("a", 0, "c", 0, 1, false).unwrap();
    assert!(!s.pending.is_clean());
    s.sync().unwrap();
    assert!(s.pending.is_clean());
}

#[test]
fn write_through_mode_leaves_nothing_pending() {
    let (_dir, s) = store(true);
    s.write("a", 0, b"x", false).unwrap();
    s.write_full("b", b"y", false).unwrap();
    s.copy("a", 0, "c", 0, 1, false).unwrap();
    s.store_content(b"z", false).unwrap();
    s.delete("a").unwrap();
    assert!(s.pending.is_clean());
}

#[test]
fn a_durable_write_in_write_back_mode_settles_its_path() {
    let (_dir, s) = store(false);
    s.write("a", 0, b"x", false).unwrap();
    s.write("a", 1, b"y", true).unwrap();
    // The directories `a` was created in were fsynced by the durable
    // write; only the data mark of the first write remains.
    assert!(s.pending.dirs_clean());
}

#[test]
fn a_durable_store_of_existing_content_settles_its_pending_link() {
    let (_dir, s) = store(false);
    let name = s.store_content(b"c", false).unwrap();
    assert!(!s.pending.dirs_clean());
    assert_eq!(s.store_content(b"c", true).unwrap(), name);
    assert!(s.pending.dirs_clean());
}

#[test]
fn a_cached_descriptor_never_outlives_a_replace() {
    let (_dir, s) = store(true);
    s.write("a", 0, b"old", false).unwrap();
    s.write_full("a", b"new", false).unwrap();
    s.write("a", 3, b"!", false).unwrap();
    let mut buf = [0; 4];
    s.read("a", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"new!");
    s.delete("a").unwrap();
    s.write("a", 0, b"x", false).unwrap();
    assert_eq!(s.stat("a").unwrap().size, 1);
}

#[test]
fn a_store_refuses_a_directory_of_another_format() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("FORMAT"), "something else\n").unwrap();
    let e = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("not an archipelago file store"),
        "{e}"
    );
}

/// A copy-up into a new object leaves the object open: the data write
/// that follows it needs no `open`.
#[test]
fn a_copy_into_a_new_object_leaves_it_open_for_the_write_after() {
    let (_dir, s) = store(false);
    s.write("parent", 0, &[7; 8192], false).unwrap();
    s.copy("parent", 0, "child", 0, 4096, false).unwrap();
    let cached = s
        .fds
        .get("child")
        .expect("the new object's descriptor is cached");
    s.write("child", 4096, &[9; 4096], false).unwrap();
    let mut buf = [0; 8192];
    s.read("child", 0, &mut buf).unwrap();
    assert_eq!(&buf[..4096], &[7; 4096]);
    assert_eq!(&buf[4096..], &[9; 4096]);
    assert_eq!(
        cached.metadata().unwrap().len(),
        8192,
        "the cached descriptor is another file"
    );
}
