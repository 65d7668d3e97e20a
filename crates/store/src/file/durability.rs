//! What is acknowledged but not yet on stable storage: the bookkeeping
//! behind write-back mode, `durable` operations and `sync()`.
//!
//! Two kinds of state can be pending:
//!
//! - **File data**, after a non-durable `write` or `copy`: the object's
//!   name is in [`files`](Durability::mark_file). `sync()` opens each and
//!   `fdatasync`s it. A durable operation syncs its own file, which covers
//!   earlier non-durable writes to it too.
//! - **Directory entries**, after a file or directory is created, renamed
//!   into place, linked or removed: the directory is *marked* before the
//!   change is made, and the mark is *settled* (the directory `fsync`ed,
//!   then the mark dropped) by the durable operation itself or by
//!   `sync()`.
//!
//! Marking before the change, and dropping a mark only after the `fsync`
//! that covers it completed, is what makes a durable operation on an
//! object that another thread has just created safe: having seen the
//! object, it either sees the creator's mark (and `fsync`s the directory
//! itself) or the creator's `fsync` is already complete. Each mark carries
//! a unique value so that a settle drops only the marks its `fsync`
//! covered, never one made after it started.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Pending files and directories of one store.
#[derive(Debug, Default)]
pub(super) struct Durability {
    /// Marked directory → value of its latest mark.
    dirs: Mutex<(HashMap<PathBuf, u64>, u64)>,
    /// Objects with data written but not synced.
    files: Mutex<HashSet<String>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is a single map operation: a poisoned mutex
    // still guards consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `fsync`s a directory.
pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Durability {
    /// Marks `dir` as having an entry change not yet on stable storage.
    /// Call *before* making the change.
    pub(super) fn mark_dir(&self, dir: &Path) {
        let mut g = locked(&self.dirs);
        g.1 += 1;
        let value = g.1;
        g.0.insert(dir.to_owned(), value);
    }

    /// If `dir` is marked, `fsync`s it and drops the marks that fsync
    /// covered.
    pub(super) fn settle_dir(&self, dir: &Path) -> io::Result<()> {
        let Some(value) = locked(&self.dirs).0.get(dir).copied() else {
            return Ok(());
        };
        match fsync_dir(dir) {
            Ok(()) => {}
            // Never created (a mark made before a change that then failed,
            // like the removal of a missing file): nothing to make durable.
            // The store never removes directories, so it cannot be one that
            // existed and was unsynced.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut g = locked(&self.dirs);
        if g.0.get(dir) == Some(&value) {
            g.0.remove(dir);
        }
        Ok(())
    }

    /// Records that `name` has unsynced data.
    pub(super) fn mark_file(&self, name: &str) {
        let mut files = locked(&self.files);
        if !files.contains(name) {
            files.insert(name.to_owned());
        }
    }

    /// Forgets `name`'s unsynced data (it was synced, replaced or deleted).
    pub(super) fn forget_file(&self, name: &str) {
        locked(&self.files).remove(name);
    }

    /// Syncs every pending file (through `sync_file`, given the name) and
    /// every marked directory. On error the entries not yet synced stay
    /// pending, and the error is returned with the object or directory it
    /// concerns.
    pub(super) fn sync_all(
        &self,
        mut sync_file: impl FnMut(&str) -> io::Result<()>,
    ) -> Result<(), (String, io::Error)> {
        let files: Vec<String> = locked(&self.files).drain().collect();
        for (i, name) in files.iter().enumerate() {
            if let Err(e) = sync_file(name) {
                let mut pending = locked(&self.files);
                pending.extend(files[i..].iter().cloned());
                return Err((name.clone(), e));
            }
        }
        let dirs: Vec<PathBuf> = locked(&self.dirs).0.keys().cloned().collect();
        for dir in dirs {
            self.settle_dir(&dir)
                .map_err(|e| (dir.display().to_string(), e))?;
        }
        Ok(())
    }

    /// Whether no directory is marked (for tests).
    #[cfg(test)]
    pub(super) fn dirs_clean(&self) -> bool {
        locked(&self.dirs).0.is_empty()
    }

    /// Whether anything is pending (for tests).
    #[cfg(test)]
    pub(super) fn is_clean(&self) -> bool {
        locked(&self.dirs).0.is_empty() && locked(&self.files).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settle_drops_only_the_marks_it_covered() {
        let dir = tempfile::tempdir().unwrap();
        let d = Durability::default();
        d.mark_dir(dir.path());
        d.settle_dir(dir.path()).unwrap();
        assert!(d.is_clean());
        d.mark_file("a");
        d.mark_dir(dir.path());
        d.mark_dir(&dir.path().join("never-created"));
        d.sync_all(|_| Ok(())).unwrap();
        assert!(d.is_clean());
    }

    #[test]
    fn a_failed_sync_keeps_what_it_did_not_sync() {
        let d = Durability::default();
        d.mark_file("a");
        d.mark_file("b");
        let err = d
            .sync_all(|_| Err(io::Error::from_raw_os_error(5)))
            .unwrap_err();
        assert!(err.0 == "a" || err.0 == "b");
        assert!(!d.is_clean());
        d.sync_all(|_| Ok(())).unwrap();
        assert!(d.is_clean());
    }
}
