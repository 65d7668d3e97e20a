use super::*;

fn store(sync: bool) -> (tempfile::TempDir, FileStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path(), FileStoreOptions { sync, fd_cache: 4 }).unwrap();
    (dir, s)
}

#[test]
fn objects_live_under_their_fan_out_directories() {
    let (dir, s) = store(true);
    s.write("obj", 0, b"x", false).unwrap();
    let [h0, h1] = fanout("obj");
    assert!(dir
        .path()
        .join("objects")
        .join(h0)
        .join(h1)
        .join("obj")
        .is_file());
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
