//! Listing a [`FileStore`]: walking its fan-out directories, whole or a
//! page at a time, in either layout.

use std::fs;
use std::io;
use std::ops::ControlFlow;
use std::path::Path;

use super::{FileStore, Layout};
use crate::{check_name, ListPage, StoreError};

impl FileStore {
    /// Walks the fan-out directories in order, one page at a time: the
    /// cursor is `<leaf directory>/<last name>` (`h0/last` or, in a store
    /// of format 1, `h0/h1/last`; opaque to callers), so a page reads the
    /// fan-out directory lists and the leaf directories it covers, never
    /// the whole store. Pages come in fan-out order (by hash), each sorted
    /// inside its leaf directories.
    pub(super) fn page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let limit = limit.max(1);
        let label = self.objects.display().to_string();
        let io = |e| StoreError::io(&label, "list", e);
        let (from, after) = match cursor.map(|c| c.rsplit_once('/')) {
            Some(Some((leaf, last))) if !leaf.is_empty() && !last.is_empty() => {
                (Some(leaf), Some(last))
            }
            Some(_) => {
                return Err(StoreError::InvalidArgument {
                    name: label,
                    why: "not a listing cursor of this store",
                })
            }
            None => (None, None),
        };
        let mut names = Vec::new();
        let mut next = None;
        self.walk_leaves(from, |rel, dir| {
            let here = from == Some(rel);
            let mut leaf = Vec::new();
            leaf_names(dir, prefix, |name| {
                if !(here && after.is_some_and(|a| name.as_str() <= a)) {
                    leaf.push(name);
                }
            })?;
            leaf.sort_unstable();
            let room = limit - names.len();
            if leaf.len() >= room {
                leaf.truncate(room);
                next = Some(format!("{rel}/{}", leaf.last().expect("room ≥ 1")));
                names.extend(leaf);
                return Ok(ControlFlow::Break(()));
            }
            names.extend(leaf);
            Ok(ControlFlow::Continue(()))
        })
        .map_err(io)?;
        Ok(ListPage { names, next })
    }
}

impl FileStore {
    /// Calls `f` with every object name starting with `prefix`, in no
    /// particular order.
    pub(super) fn each_name(
        &self,
        prefix: &str,
        mut f: impl FnMut(String),
    ) -> Result<(), StoreError> {
        let label = self.objects.display().to_string();
        self.walk_leaves(None, |_, dir| {
            leaf_names(dir, prefix, &mut f)?;
            Ok(ControlFlow::Continue(()))
        })
        .map_err(|e| StoreError::io(&label, "list", e))
    }

    /// Calls `f` with each leaf directory of the object tree (its path
    /// relative to `objects/`, and its full path) in sorted order, from
    /// the leaf `from` on, until `f` breaks.
    fn walk_leaves(
        &self,
        from: Option<&str>,
        mut f: impl FnMut(&str, &Path) -> io::Result<ControlFlow<()>>,
    ) -> io::Result<()> {
        let from_h0 = from.map(|l| l.split('/').next().unwrap_or(l));
        for h0 in sorted_dirs(&self.objects)? {
            if from_h0.is_some_and(|f0| h0.as_str() < f0) {
                continue;
            }
            let top = self.objects.join(&h0);
            match self.layout {
                Layout::OneLevel => {
                    if f(&h0, &top)?.is_break() {
                        return Ok(());
                    }
                }
                Layout::TwoLevels => {
                    for h1 in sorted_dirs(&top)? {
                        let rel = format!("{h0}/{h1}");
                        if from.is_some_and(|l| rel.as_str() < l) {
                            continue;
                        }
                        if f(&rel, &top.join(&h1))?.is_break() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The names of the subdirectories of `dir`, sorted (none if it is gone).
fn sorted_dirs(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            if let Ok(n) = entry.file_name().into_string() {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Calls `f` with the name of every object file in the leaf directory
/// `dir` that starts with `prefix` (a file whose name is no object name,
/// an NFS silly-rename say, or anything not a file is skipped).
fn leaf_names(dir: &Path, prefix: &str, mut f: impl FnMut(String)) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with(prefix) && check_name(&name).is_ok() && entry.file_type()?.is_file() {
            f(name);
        }
    }
    Ok(())
}
