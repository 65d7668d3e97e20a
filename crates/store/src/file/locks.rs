//! Lock files and fences of the [`FileStore`](super::FileStore).
//!
//! The lock `name` is the file `locks/<h0>/<h1>/<name>_lock` (`h0`, `h1`:
//! the first two bytes of SHA-256(`name`) in hex); it exists exactly while
//! the lock is held and contains
//!
//! ```text
//! archipelago-lock 1
//! <token, decimal>
//! <owner, to the end of the file>
//! ```
//!
//! Beside it, `<name>_fence` holds the lock's fence (decimal): the largest
//! token ever granted for the lock, raised past the holder's token by a
//! break, by `raise_fence` and by a fenced write carrying a newer token.
//! It outlives releases and breaks, so the next grant always gets a larger
//! token, across restarts too. (No lock name's `_lock` file can be
//! another's `_fence` file: no name ends in both.) It is also the
//! per-volume token file fenced writes are checked against.
//!
//! # Checking fenced writes
//!
//! A fenced write `stat`s the fence file and compares its identity
//! (device, inode, size, modification and change times) with the one it
//! last read for that lock: unchanged, the cached token is used (one
//! `stat`, no read); changed or unknown, the file is read again. The fence
//! is only ever replaced by `rename` (a new inode), so any change is
//! seen by the next write, on this host or another sharing the directory
//! (on NFS, within its attribute cache time: mount with `actimeo=0` or
//! `noac` for an exact check). A write's token above the fence raises it
//! first, under the guard.
//!
//! # Granting
//!
//! 1. The fence is raised to `token = fence + 1`: written to a temporary
//!    file, `fdatasync`ed, renamed over the old fence, directory
//!    `fsync`ed. A crash after this step only wastes a token.
//! 2. The record is written to a temporary file and `fdatasync`ed, then
//!    `link`ed to `<name>_lock`: `link` fails if the name exists, so
//!    creation is exclusive (like `O_EXCL`, and atomic on NFSv3+ too), and
//!    no half-written lock file is ever visible. The directory is
//!    `fsync`ed, then the temporary removed.
//!
//! Lock operations are always durable, whatever the store's sync mode.
//!
//! # Serialisation
//!
//! Deciding (read the record, compare owners, raise the fence, link or
//! unlink) is not one atomic filesystem operation, so every lock operation
//! runs holding an exclusive `flock` on `locks/.guard`: this serialises the
//! threads and processes of one host (and, where the filesystem shares
//! `flock` between clients, as Linux NFS does, those of every host). The
//! guard is held only for the few file operations of one call, so
//! `try_lock` never waits for a *lock* to be released.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};

use super::durability::fsync_dir;
use super::fanout;
use super::temp::TempArea;
use crate::{Fence, StoreError};

/// First line of a lock record.
const MAGIC: &str = "archipelago-lock 1";

/// The lock area `<root>/locks`.
#[derive(Debug)]
pub(super) struct LockFiles {
    dir: PathBuf,
    /// Per lock: the identity of the fence file last read, and its token.
    fences: Mutex<HashMap<String, (FileId, u64)>>,
}

/// What tells a replaced fence file from the one read before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(m: &fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Where one lock's files live.
struct LockPaths {
    /// `locks/<h0>/<h1>`.
    dir: PathBuf,
    /// `<dir>/<name>_lock`.
    lock: PathBuf,
    /// `<dir>/<name>_fence`.
    fence: PathBuf,
}

/// Who holds a lock, as read from its file.
struct Record {
    owner: String,
    token: u64,
}

impl Record {
    fn encode(&self) -> String {
        format!("{MAGIC}\n{}\n{}", self.token, self.owner)
    }

    /// Decodes a lock file. A file in another format (a lock left by the
    /// original `archip-filed` holds just its owner string) is read as
    /// held by its whole content with token 0, so it can be broken.
    fn decode(bytes: &[u8]) -> Record {
        let text = String::from_utf8_lossy(bytes);
        let parsed = text.strip_prefix(MAGIC).and_then(|rest| {
            let rest = rest.strip_prefix('\n')?;
            let (token, owner) = rest.split_once('\n')?;
            Some(Record {
                owner: owner.to_owned(),
                token: token.parse().ok()?,
            })
        });
        parsed.unwrap_or_else(|| Record {
            owner: text.into_owned(),
            token: 0,
        })
    }
}

fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Writes `bytes` to a new temporary file and `fdatasync`s it.
fn durable_temp(temp: &TempArea, bytes: &[u8]) -> io::Result<super::temp::TempFile> {
    let mut t = temp.create()?;
    t.file.write_all(bytes)?;
    t.file.sync_data()?;
    Ok(t)
}

impl LockFiles {
    /// The lock area in `dir` (which exists).
    pub(super) fn new(dir: PathBuf) -> LockFiles {
        LockFiles {
            dir,
            fences: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses `fence` (for a write to `name`) if its token is below the
    /// lock's fence; raises the fence to a newer token. See "Checking
    /// fenced writes" above.
    pub(super) fn check_fence(
        &self,
        temp: &TempArea,
        name: &str,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        let io = |e| StoreError::io(name, "fence check", e);
        let paths = self.paths(fence.lock);
        let id = match fs::metadata(&paths.fence) {
            Ok(m) => Some(FileId::of(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        let cached = {
            let fences = self.fences.lock().unwrap_or_else(|p| p.into_inner());
            fences
                .get(fence.lock)
                .filter(|(seen, _)| Some(*seen) == id)
                .map(|&(_, token)| token)
        };
        let current = match (cached, id) {
            (Some(token), _) => token,
            (None, None) => 0,
            (None, Some(id)) => {
                // Read after the stat: the token is at least as new as `id`.
                let token = Self::fence(&paths).map_err(io)?;
                self.fences
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fence.lock.to_owned(), (id, token));
                token
            }
        };
        if fence.token < current {
            self.forget(fence.lock);
            return Err(StoreError::StaleToken {
                name: name.to_owned(),
                lock: fence.lock.to_owned(),
                token: fence.token,
                current,
            });
        }
        if fence.token > current {
            let now = self.raise_fence(temp, fence.lock, fence.token)?;
            if fence.token < now {
                return Err(StoreError::StaleToken {
                    name: name.to_owned(),
                    lock: fence.lock.to_owned(),
                    token: fence.token,
                    current: now,
                });
            }
        }
        Ok(())
    }

    fn forget(&self, lock: &str) {
        self.fences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(lock);
    }

    /// See [`ObjectStore::raise_fence`](crate::ObjectStore::raise_fence).
    pub(super) fn raise_fence(
        &self,
        temp: &TempArea,
        name: &str,
        token: u64,
    ) -> Result<u64, StoreError> {
        let io = |e| StoreError::io(name, "raise_fence", e);
        let paths = self.paths(name);
        let _guard = self.guard().map_err(io)?;
        let current = Self::fence(&paths).map_err(io)?;
        if current >= token {
            return Ok(current);
        }
        self.make_dirs(&paths).map_err(io)?;
        self.raise_fence_file(temp, &paths, token).map_err(io)?;
        self.forget(name);
        Ok(token)
    }

    fn paths(&self, name: &str) -> LockPaths {
        let [h0, h1] = fanout(name);
        let dir = self.dir.join(h0).join(h1);
        LockPaths {
            lock: dir.join(format!("{name}_lock")),
            fence: dir.join(format!("{name}_fence")),
            dir,
        }
    }

    /// Takes the guard; released when the returned value drops.
    fn guard(&self) -> io::Result<Flock<File>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join(".guard"))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e.into())
    }

    fn record(paths: &LockPaths) -> io::Result<Option<Record>> {
        Ok(read_optional(&paths.lock)?.map(|b| Record::decode(&b)))
    }

    fn fence(paths: &LockPaths) -> io::Result<u64> {
        match read_optional(&paths.fence)? {
            None => Ok(0),
            Some(b) => String::from_utf8_lossy(&b).trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("fence file {} is corrupt", paths.fence.display()),
                )
            }),
        }
    }

    /// Creates `locks/<h0>/<h1>`, `fsync`ing each parent that gained an
    /// entry.
    fn make_dirs(&self, paths: &LockPaths) -> io::Result<()> {
        let h0 = paths.dir.parent().expect("fan-out dir has a parent");
        for (dir, parent) in [(h0, self.dir.as_path()), (paths.dir.as_path(), h0)] {
            match fs::create_dir(dir) {
                Ok(()) => fsync_dir(parent)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Durably replaces the fence with `token`.
    fn raise_fence_file(&self, temp: &TempArea, paths: &LockPaths, token: u64) -> io::Result<()> {
        let fence = durable_temp(temp, format!("{token}\n").as_bytes())?;
        fs::rename(&fence.path, &paths.fence)?;
        fence.keep();
        fsync_dir(&paths.dir)
    }

    fn grant(&self, temp: &TempArea, paths: &LockPaths, owner: &str) -> io::Result<Option<u64>> {
        self.make_dirs(paths)?;
        let token = Self::fence(paths)? + 1;
        self.raise_fence_file(temp, paths, token)?;
        let record = Record {
            owner: owner.to_owned(),
            token,
        };
        let t = durable_temp(temp, record.encode().as_bytes())?;
        match fs::hard_link(&t.path, &paths.lock) {
            Ok(()) => {}
            // Someone not sharing our guard got there first.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(e),
        }
        fsync_dir(&paths.dir)?;
        Ok(Some(token))
    }

    /// See [`ObjectStore::try_lock`](crate::ObjectStore::try_lock).
    pub(super) fn try_lock(
        &self,
        temp: &TempArea,
        name: &str,
        owner: &str,
    ) -> Result<u64, StoreError> {
        let io = |e| StoreError::io(name, "try_lock", e);
        let paths = self.paths(name);
        let _guard = self.guard().map_err(io)?;
        loop {
            match Self::record(&paths).map_err(io)? {
                Some(r) if r.owner == owner => return Ok(r.token),
                Some(r) => {
                    return Err(StoreError::Locked {
                        name: name.to_owned(),
                        owner: r.owner,
                    })
                }
                None => {
                    if let Some(token) = self.grant(temp, &paths, owner).map_err(io)? {
                        return Ok(token);
                    }
                }
            }
        }
    }

    /// See [`ObjectStore::unlock`](crate::ObjectStore::unlock).
    pub(super) fn unlock(
        &self,
        temp: &TempArea,
        name: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        let io = |e| StoreError::io(name, "unlock", e);
        let paths = self.paths(name);
        let _guard = self.guard().map_err(io)?;
        match Self::record(&paths).map_err(io)? {
            None => Err(StoreError::not_found(name)),
            Some(r) if r.owner != owner => Err(StoreError::Locked {
                name: name.to_owned(),
                owner: r.owner,
            }),
            Some(r) => self.remove(temp, &paths, &r).map_err(io),
        }
    }

    /// See [`ObjectStore::break_lock`](crate::ObjectStore::break_lock).
    pub(super) fn break_lock(
        &self,
        temp: &TempArea,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let io = |e| StoreError::io(name, "break_lock", e);
        let paths = self.paths(name);
        let _guard = self.guard().map_err(io)?;
        let Some(r) = Self::record(&paths).map_err(io)? else {
            return Ok(None);
        };
        // Past the holder's token first: its fenced writes are refused
        // from now on, before the lock is free for anyone else.
        if Self::fence(&paths).map_err(io)? <= r.token {
            self.raise_fence_file(temp, &paths, r.token + 1)
                .map_err(io)?;
        }
        self.remove(temp, &paths, &r).map_err(io)?;
        self.forget(name);
        Ok(Some(r.owner))
    }

    /// See [`ObjectStore::lock_owner`](crate::ObjectStore::lock_owner).
    /// Reads without the guard: the lock file appears and disappears
    /// atomically, complete.
    pub(super) fn owner(&self, name: &str) -> Result<Option<(String, u64)>, StoreError> {
        let paths = self.paths(name);
        Ok(Self::record(&paths)
            .map_err(|e| StoreError::io(name, "lock_owner", e))?
            .map(|r| (r.owner, r.token)))
    }

    /// Removes the lock file holding `record`. The fence already covers
    /// its token unless the fence file was lost (or the lock file came from
    /// elsewhere): then it is raised first, so the next grant still gets a
    /// larger token.
    fn remove(&self, temp: &TempArea, paths: &LockPaths, record: &Record) -> io::Result<()> {
        if Self::fence(paths)? < record.token {
            self.raise_fence_file(temp, paths, record.token)?;
        }
        match fs::remove_file(&paths.lock) {
            Ok(()) => fsync_dir(&paths.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_foreign_files_read_as_their_owner() {
        let r = Record {
            owner: "host 1\nwith newline".into(),
            token: 42,
        };
        let back = Record::decode(r.encode().as_bytes());
        assert_eq!(
            (back.owner.as_str(), back.token),
            ("host 1\nwith newline", 42)
        );
        let legacy = Record::decode(b"node1_1000");
        assert_eq!((legacy.owner.as_str(), legacy.token), ("node1_1000", 0));
    }
}
