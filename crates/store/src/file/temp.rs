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
//!
//! # Spares
//!
//! Creating a file allocates an inode, which on a full or aged filesystem
//! (or over NFS, where it is a round trip) can cost a millisecond, and a
//! first write into an object pays it; creations in one directory are
//! also serialised by its lock. Moving an existing empty file into place
//! costs tens of microseconds. So after its first temporary an instance
//! keeps empty temporaries made ahead by a background thread, and
//! [`create`](TempArea::create) hands one out when it has one: bursts of
//! new objects (a clone's first writes as a guest boots) go at the speed
//! of a rename, and only a sustained stream of them at the speed of the
//! filesystem's inode allocation. The number kept starts at
//! [`FIRST_SPARES`] and doubles, up to [`MAX_SPARES`], each time a
//! `create` finds none (a short-lived tool never makes many). Spares are
//! ordinary temporaries of the instance, kept by name, not open (the same
//! names, removed when it closes, or by the next opener after a crash).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// How many existing names `create` skips before giving up (each is a
/// file someone else made with exactly our next name).
const MAX_SKIPS: u32 = 1000;

/// How many empty temporaries an instance keeps made ahead at first (an
/// inode each, no data blocks).
pub(super) const FIRST_SPARES: usize = 32;

/// The most it keeps: a burst of this many new objects creates no inode
/// on its path.
pub(super) const MAX_SPARES: usize = 512;

/// How long the spare maker waits after failing to create one (a full
/// disk, say) before trying again; `create` reports such errors itself.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The temporary area of one store instance.
pub(super) struct TempArea {
    names: Arc<Names>,
    spares: Arc<Spares>,
    /// The spare maker, started by the first `create`.
    maker: Mutex<Option<JoinHandle<()>>>,
    /// Held for the instance's life (released when dropped, after
    /// `Drop::drop` removed the file): proves to other openers that our
    /// temporaries are in use.
    _instance: Flock<File>,
}

/// Where temporaries go and what they are called.
struct Names {
    dir: PathBuf,
    nonce: String,
    counter: AtomicU64,
}

/// The empty temporaries made ahead, and the maker's stop signal.
#[derive(Default)]
struct Spares {
    state: Mutex<SpareState>,
    /// Signalled when a spare is taken and when the area closes.
    changed: Condvar,
}

struct SpareState {
    /// Their paths, oldest first: handed out in the order they were made.
    paths: VecDeque<PathBuf>,
    /// How many to keep.
    target: usize,
    closing: bool,
}

impl Default for SpareState {
    fn default() -> Self {
        SpareState {
            paths: VecDeque::new(),
            target: FIRST_SPARES,
            closing: false,
        }
    }
}

impl Spares {
    fn lock(&self) -> MutexGuard<'_, SpareState> {
        // A panic while holding this lock leaves a valid list.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for TempArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempArea")
            .field("dir", &self.names.dir)
            .field("nonce", &self.names.nonce)
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

    /// Moves the file to `dst` unless a file is there already: `true` if
    /// it moved (it is then no temporary any more), `false` if `dst`
    /// exists (the temporary stays, removed on drop). One
    /// `renameat2(RENAME_NOREPLACE)`, one directory operation fewer than
    /// `link` then `unlink`; where the filesystem has no such rename
    /// (NFS), `link` (which never replaces either) then the unlink.
    pub(super) fn place(&mut self, dst: &Path) -> io::Result<bool> {
        use nix::fcntl::{renameat2, RenameFlags};
        match renameat2(None, &self.path, None, dst, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => {
                self.armed = false;
                return Ok(true);
            }
            Err(Errno::EEXIST) => return Ok(false),
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
        match fs::hard_link(&self.path, dst) {
            Ok(()) => {
                fs::remove_file(&self.path)?;
                self.armed = false;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
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
            names: Arc::new(Names {
                dir: dir.to_owned(),
                nonce,
                counter: AtomicU64::new(0),
            }),
            spares: Arc::default(),
            maker: Mutex::new(None),
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
        let file = match File::open(self.names.dir.join(format!("+{nonce}"))) {
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
        let dir = &self.names.dir;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                // Not UTF-8: certainly not ours.
                Err(raw) => remove_any(&dir.join(raw))?,
            }
        }
        let mut nonces: Vec<&str> = Vec::new();
        for name in &names {
            match classify(name) {
                Entry::Foreign => remove_any(&dir.join(name))?,
                Entry::Instance(n) | Entry::Temp(n) => {
                    if n != self.names.nonce && !nonces.contains(&n) {
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
                    remove_any(&dir.join(name))?;
                }
            }
            if instance.is_some() {
                remove_any(&dir.join(format!("+{nonce}")))?;
            }
        }
        Ok(())
    }

    /// The name the next temporary made (now, or as a spare) tries first.
    pub(super) fn next_name(&self) -> String {
        let n = self.names.counter.load(Ordering::Relaxed);
        format!("+{}+{n}", self.names.nonce)
    }

    /// This instance's file, `tmp/+<nonce>`.
    fn instance_path(&self) -> PathBuf {
        self.names.dir.join(format!("+{}", self.names.nonce))
    }

    /// The directory.
    pub(super) fn dir(&self) -> &Path {
        &self.names.dir
    }

    /// A new, empty temporary file (read-write): a spare if one is ready,
    /// else one created now.
    pub(super) fn create(&self) -> io::Result<TempFile> {
        match self.take_spare()? {
            Some(t) => Ok(t),
            None => self.names.create(),
        }
    }

    /// A spare if one is ready (the caller then creates its file itself,
    /// as it sees fit: creations in `tmp/` are serialised on its lock).
    pub(super) fn take_spare(&self) -> io::Result<Option<TempFile>> {
        loop {
            let spare = self.spares.lock().paths.pop_front();
            self.spares.changed.notify_one();
            let Some(path) = spare else {
                if self.start_maker() {
                    // The maker runs and could not keep up: keep more.
                    let mut state = self.spares.lock();
                    state.target = (state.target * 2).min(MAX_SPARES);
                }
                return Ok(None);
            };
            let file = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                // Removed from under us: the next one.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let t = TempFile {
                path,
                file,
                armed: true,
            };
            // Still empty (nobody wrote into our file meanwhile), or
            // dropped, which removes it.
            if t.file.metadata()?.len() == 0 {
                return Ok(Some(t));
            }
        }
    }

    /// How many spares are ready (for tests).
    #[cfg(test)]
    fn spares_ready(&self) -> usize {
        self.spares.lock().paths.len()
    }

    /// Starts the spare maker unless it runs; whether it ran. Failing to
    /// start a thread only costs speed.
    fn start_maker(&self) -> bool {
        let mut maker = self.maker.lock().unwrap_or_else(|e| e.into_inner());
        if maker.is_some() {
            return true;
        }
        let (names, spares) = (Arc::clone(&self.names), Arc::clone(&self.spares));
        *maker = std::thread::Builder::new()
            .name("store-spares".into())
            .spawn(move || make_spares(&names, &spares))
            .ok();
        false
    }
}

impl Names {
    /// Creates a new, empty temporary file, skipping names that exist.
    fn create(&self) -> io::Result<TempFile> {
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

/// The spare maker's loop: tops the spares up to their target whenever
/// one is taken, until the area closes. Files are created without holding
/// the lock, so `create` never waits for the filesystem here.
fn make_spares(names: &Names, spares: &Spares) {
    let mut state = spares.lock();
    loop {
        if state.closing {
            return;
        }
        if state.paths.len() >= state.target {
            state = spares
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
            continue;
        }
        drop(state);
        let made = names.create();
        state = spares.lock();
        match made {
            Ok(mut t) => {
                t.armed = false;
                state.paths.push_back(t.path.clone());
            }
            Err(e) => {
                log::debug!("spare temporary in {}: {e}", names.dir.display());
                state = spares
                    .changed
                    .wait_timeout(state, RETRY_AFTER)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}

impl Drop for TempArea {
    fn drop(&mut self) {
        self.spares.lock().closing = true;
        self.spares.changed.notify_all();
        if let Some(maker) = self
            .maker
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = maker.join();
        }
        for path in self.spares.lock().paths.drain(..) {
            // Best effort, as for any temporary.
            let _ = fs::remove_file(path);
        }
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

    /// Waits (up to ten seconds) until the area holds `n` spares.
    fn wait_for_spares(a: &TempArea, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while a.spares_ready() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {n} spares made",
                a.spares_ready()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn temporaries_after_the_first_are_files_made_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let a = TempArea::open(dir.path()).unwrap();
        drop(a.create().unwrap());
        wait_for_spares(&a, FIRST_SPARES);
        let before = files_in(dir.path());
        for _ in 0..FIRST_SPARES {
            let t = a.create().unwrap();
            assert!(
                before.contains(&t.path),
                "{} was not made ahead",
                t.path.display()
            );
            assert_eq!(t.file.metadata().unwrap().len(), 0);
        }
        // Taken spares are replaced.
        wait_for_spares(&a, FIRST_SPARES);
    }

    #[test]
    fn spares_are_removed_with_their_instance_and_left_alone_while_it_lives() {
        let dir = tempfile::tempdir().unwrap();
        let a = TempArea::open(dir.path()).unwrap();
        drop(a.create().unwrap());
        wait_for_spares(&a, FIRST_SPARES);
        // Another instance opening the directory keeps a live one's spares.
        let b = TempArea::open(dir.path()).unwrap();
        assert_eq!(a.spares_ready(), FIRST_SPARES);
        assert!(files_in(dir.path()).len() > FIRST_SPARES);
        drop(b);
        drop(a);
        assert_eq!(files_in(dir.path()), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_temporary_is_placed_only_where_nothing_is() {
        let dir = tempfile::tempdir().unwrap();
        let a = TempArea::open(dir.path()).unwrap();
        let (free, taken) = (dir.path().join("free"), dir.path().join("taken"));
        fs::write(&taken, b"old").unwrap();
        let mut t = a.create().unwrap();
        fs::write(&t.path, b"new").unwrap();
        let tmp = t.path.clone();
        assert!(!t.place(&taken).unwrap());
        assert_eq!(fs::read(&taken).unwrap(), b"old");
        assert!(t.place(&free).unwrap());
        drop(t);
        assert_eq!(fs::read(&free).unwrap(), b"new");
        assert!(!tmp.exists(), "the temporary's name is left");
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
