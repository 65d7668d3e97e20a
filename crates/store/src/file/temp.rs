//! The temporary-file area `<root>/tmp`: where whole objects, content
//! objects, lock records and fences are built before being renamed or
//! linked into place.
//!
//! # Names
//!
//! Each [`FileStore`](super::FileStore) instance picks a random 64-bit
//! *nonce* at open and creates an **instance file** `tmp/+<nonce>` on
//! which it holds an exclusive `flock` for its whole life; its temporary
//! files are `tmp/+<nonce>+<counter>`. The leading `+` is outside the
//! name grammar, so no temporary name is ever an object name (and they
//! live in another directory anyway).
//!
//! # Stale files
//!
//! A crash leaves temporary files behind. They can never make an operation
//! fail: a temporary is created with `O_EXCL`, and a name that exists
//! (stale, or planted) is skipped for the next counter value. They are
//! removed when a store opens the directory: every file of `tmp/` whose
//! name does not follow the pattern, and every temporary whose instance is
//! dead — its instance file is missing or not locked (a lock is released
//! when its process dies, even by `SIGKILL`). Temporaries of live
//! instances, this host's or, on a shared filesystem whose `flock` is
//! shared between clients (Linux NFS maps it onto byte-range locks),
//! another host's, are left alone.

use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// How many existing names `create` skips before giving up (each is a
/// file someone else made with exactly our next name).
const MAX_SKIPS: u32 = 1000;

/// The temporary area of one store instance.
pub(super) struct TempArea {
    dir: PathBuf,
    nonce: String,
    counter: AtomicU64,
    /// Held for the instance's life (released when dropped, after
    /// `Drop::drop` removed the file): proves to other openers that our
    /// temporaries are in use.
    _instance: Flock<File>,
}

impl std::fmt::Debug for TempArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempArea")
            .field("dir", &self.dir)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// A temporary file, removed on drop unless [`keep`](TempFile::keep) was
/// called (after it was renamed into place).
#[derive(Debug)]
pub(super) struct TempFile {
    pub(super) path: PathBuf,
    pub(super) file: File,
    armed: bool,
}

impl TempFile {
    /// The file was renamed away: nothing to remove.
    pub(super) fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: a leftover is harmless (skipped by `create`,
            // removed at the next open).
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn random_nonce() -> u64 {
    // `RandomState` is seeded from the OS's randomness once per thread and
    // advanced per call; the pid and the clock make nonces of different
    // processes differ even if that seed repeated.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    h.finish()
}

/// What a name in `tmp/` is.
enum Entry<'a> {
    /// `+<nonce>`.
    Instance(&'a str),
    /// `+<nonce>+<counter>`.
    Temp(&'a str),
    /// Anything else.
    Foreign,
}

fn is_hex16(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn classify(name: &str) -> Entry<'_> {
    let Some(rest) = name.strip_prefix('+') else {
        return Entry::Foreign;
    };
    match rest.split_once('+') {
        None if is_hex16(rest) => Entry::Instance(rest),
        Some((nonce, counter))
            if is_hex16(nonce)
                && !counter.is_empty()
                && counter.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Entry::Temp(nonce)
        }
        _ => Entry::Foreign,
    }
}

impl TempArea {
    /// Sets up this instance's temporary area in `dir` (which exists) and
    /// removes what dead instances left there.
    pub(super) fn open(dir: &Path) -> io::Result<TempArea> {
        let (nonce, instance) = Self::register(dir)?;
        let area = TempArea {
            dir: dir.to_owned(),
            nonce,
            counter: AtomicU64::new(0),
            _instance: instance,
        };
        area.remove_stale()?;
        Ok(area)
    }

    /// Creates and locks a fresh instance file.
    fn register(dir: &Path) -> io::Result<(String, Flock<File>)> {
        loop {
            let nonce = format!("{:016x}", random_nonce());
            let path = dir.join(format!("+{nonce}"));
            let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            // Between the create and the lock a cleaner may see the file
            // unlocked and remove it (or hold its lock for a moment). Then
            // start over with another nonce.
            let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, Errno::EWOULDBLOCK)) => continue,
                Err((_, e)) => return Err(e.into()),
            };
            match fs::metadata(&path) {
                Ok(m) if m.ino() == locked.metadata()?.ino() => return Ok((nonce, locked)),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the instance `nonce` is dead; if so, returns its instance
    /// file locked by us (so it stays dead while we clean), or `None` if
    /// it has none.
    fn dead_instance(&self, nonce: &str) -> io::Result<Option<Option<Flock<File>>>> {
        let file = match File::open(self.dir.join(format!("+{nonce}"))) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(None)),
            Err(e) => return Err(e),
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(Some(l))),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e.into()),
        }
    }

    /// Removes foreign files and the files of dead instances.
    fn remove_stale(&self) -> io::Result<()> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                // Not UTF-8: certainly not ours.
                Err(raw) => remove_any(&self.dir.join(raw))?,
            }
        }
        let mut nonces: Vec<&str> = Vec::new();
        for name in &names {
            match classify(name) {
                Entry::Foreign => remove_any(&self.dir.join(name))?,
                Entry::Instance(n) | Entry::Temp(n) => {
                    if n != self.nonce && !nonces.contains(&n) {
                        nonces.push(n);
                    }
                }
            }
        }
        for nonce in nonces {
            let Some(instance) = self.dead_instance(nonce)? else {
                continue;
            };
            for name in &names {
                if matches!(classify(name), Entry::Temp(n) if n == nonce) {
                    remove_any(&self.dir.join(name))?;
                }
            }
            if instance.is_some() {
                remove_any(&self.dir.join(format!("+{nonce}")))?;
            }
        }
        Ok(())
    }

    /// The name the next [`create`](TempArea::create) tries first.
    pub(super) fn next_name(&self) -> String {
        let n = self.counter.load(Ordering::Relaxed);
        format!("+{}+{n}", self.nonce)
    }

    /// This instance's file, `tmp/+<nonce>`.
    fn instance_path(&self) -> PathBuf {
        self.dir.join(format!("+{}", self.nonce))
    }

    /// The directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a new, empty temporary file (read-write), skipping names
    /// that exist.
    pub(super) fn create(&self) -> io::Result<TempFile> {
        for _ in 0..MAX_SKIPS {
            // Relaxed: the counter only has to hand out distinct values.
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.join(format!("+{}+{n}", self.nonce));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file,
                        armed: true,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{MAX_SKIPS} temporary names in {} exist already",
                self.dir.display()
            ),
        ))
    }
}

impl Drop for TempArea {
    fn drop(&mut self) {
        // Still holding the lock, so no opener takes it for a dead
        // instance's file meanwhile; a failure leaves a file the next
        // opener removes.
        let _ = fs::remove_file(self.instance_path());
    }
}

/// Removes a file (or a directory someone made), tolerating its absence.
fn remove_any(path: &Path) -> io::Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified() {
        assert!(matches!(classify("+0123456789abcdef"), Entry::Instance(_)));
        assert!(matches!(classify("+0123456789abcdef+12"), Entry::Temp(_)));
        for foreign in [
            "x",
            "+x",
            "+0123456789abcdef+",
            "+0123456789abcdef+1x",
            "0123456789abcdef",
        ] {
            assert!(matches!(classify(foreign), Entry::Foreign), "{foreign}");
        }
    }

    #[test]
    fn live_instances_keep_their_files_and_dead_ones_lose_them() {
        let dir = tempfile::tempdir().unwrap();
        let a = TempArea::open(dir.path()).unwrap();
        let t = a.create().unwrap();
        let kept = t.path.clone();
        t.keep();
        let b = TempArea::open(dir.path()).unwrap();
        assert!(kept.exists(), "a live instance's temporary was removed");
        drop(a);
        drop(b);
        let _c = TempArea::open(dir.path()).unwrap();
        assert!(!kept.exists(), "a dead instance's temporary survived");
    }

    #[test]
    fn an_existing_name_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = TempArea::open(dir.path()).unwrap();
        let planted = dir.path().join(a.next_name());
        fs::write(&planted, b"stale").unwrap();
        let t = a.create().unwrap();
        assert_ne!(t.path, planted);
        assert_eq!(fs::read(&planted).unwrap(), b"stale");
    }
}
