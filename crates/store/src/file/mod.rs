//! [`FileStore`]: one file per object under a directory. The layout and
//! the guarantees are documented on the type; the pieces live in
//! `temp.rs` (temporary files), `locks.rs` (lock files and fences),
//! `durability.rs` (what write-back mode still owes), `fdcache.rs` and
//! `listing.rs` (walking the fan-out directories).

mod durability;
mod fdcache;
mod listing;
mod locks;
mod temp;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use self::durability::{fsync_dir, Durability};
use self::fdcache::FdCache;
use self::locks::LockFiles;
use self::temp::{TempArea, TempFile};
use crate::{
    check_copy, check_name, check_owner, check_range, content_name_of, strip_trailing_zeros,
    ListPage, ObjectStat, ObjectStore, StoreError,
};

/// Content of `<dir>/FORMAT` in a store of the current layout (one level
/// of object fan-out directories, all made with the store).
const FORMAT: &str = "archipelago-store files 2\n";

/// `FORMAT` of the first layout (two levels of object fan-out directories,
/// made as objects need them), still read and written.
const FORMAT_1: &str = "archipelago-store files 1\n";

/// How objects are placed under `objects/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `objects/<h0>/<h1>/<name>` (format 1).
    TwoLevels,
    /// `objects/<h0>/<name>`, all 256 `<h0>` made when the store is
    /// (format 2): a new object creates no directory.
    OneLevel,
}

/// Largest buffer `copy` uses at once.
const COPY_CHUNK: u64 = 1 << 20;

/// How a [`FileStore`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStoreOptions {
    /// Write-through (`true`: everything durable when acknowledged) or
    /// write-back (`false`: durable on `durable` operations and `sync()`).
    pub sync: bool,
    /// How many open descriptors to cache (0: none).
    pub fd_cache: usize,
}

impl Default for FileStoreOptions {
    /// Write-through, 512 cached descriptors.
    fn default() -> Self {
        FileStoreOptions {
            sync: true,
            fd_cache: 512,
        }
    }
}

/// An [`ObjectStore`] keeping each object in a file under a directory.
///
/// # Layout
///
/// ```text
/// <dir>/FORMAT                       "archipelago-store files 2"
/// <dir>/objects/<h0>/<name>          one file per object
/// <dir>/objects/<h0>/<h1>/<name>     (instead, in a store of format 1)
/// <dir>/locks/<h0>/<h1>/<name>_lock  a held lock (see below)
/// <dir>/locks/<h0>/<h1>/<name>_fence the largest token granted for <name>
/// <dir>/locks/.guard                 flock'ed around lock operations
/// <dir>/tmp/+<nonce>[+<n>]           temporary files of live instances
/// ```
///
/// `h0` and `h1` are the first two bytes, in lowercase hex, of the SHA-256
/// of the object (or lock) name. Objects have one level of 256-way
/// fan-out, whose 256 directories are made with the store, so that
/// creating an object creates no directory (`mkdir` costs an inode, and
/// on an aged filesystem a millisecond, on a first write's path); a
/// directory of a million objects per 256 stays well within what ext4's
/// and XFS's hashed directories serve at one lookup. A store made by an
/// earlier version (`FORMAT` "archipelago-store files 1") keeps its two
/// levels, made as objects need them, and is read and written as it is.
/// Locks (few, one per volume) always have two levels. Every name is checked against the store-name grammar
/// (letters, digits, `.`, `_`, `-`, starting with a letter or digit, at
/// most 208 bytes) before a path is built from it, so no name can contain
/// `/`, be `.` or `..`, or otherwise leave its directory. Since names are
/// placed by hash, [`list`](crate::ObjectStore::list) walks the whole
/// fan-out tree (up to 65,536 directories and every object's entry),
/// whatever the prefix: a tool's operation, not an I/O path one. Emptied
/// fan-out directories are never removed (so no creation races a removal).
///
/// # Durability
///
/// - **`sync: true`** (write-through): an operation is on stable storage
///   when acknowledged: file data is `fdatasync`ed, and every directory
///   that gained or lost an entry (a created, renamed, linked or removed
///   file, a new fan-out directory) is `fsync`ed, parents included.
/// - **`sync: false`** (write-back): operations are acknowledged from the
///   page cache, except those called with `durable == true` (which behave
///   as in write-through mode) and lock operations (always durable). The
///   store remembers which objects and directories are pending and
///   [`sync`](crate::ObjectStore::sync) flushes exactly those.
/// - Whatever the mode, `write_full` and `store_content` build the new
///   file under `tmp/`, `fdatasync` it, and only then rename (`write_full`)
///   or move it with a rename that never replaces (`store_content`:
///   `renameat2(RENAME_NOREPLACE)`, or `link` then `unlink` where the
///   filesystem lacks it, as NFS does) into place: after a
///   crash the object holds the old content or the complete new one, and
///   a content name never refers to partial content. In write-back mode
///   the rename or link itself may be lost in a crash (the old content, or
///   no content object, remains).
/// - In-place `write` and `copy` into an existing object use `pwrite`: on
///   an error (a full disk, say) or a crash, part of the range may have
///   been written and the object may have grown. `copy` into a missing
///   object builds it under `tmp/` and moves it into place the same way,
///   so a failure leaves no object behind; a write to a missing object
///   moves an empty temporary into place first.
///
/// # Temporary files
///
/// Each instance picks a random nonce at open, creates `tmp/+<nonce>` and
/// keeps it `flock`ed for its life; its temporaries are
/// `tmp/+<nonce>+<counter>` (`+` is outside the name grammar, so a
/// temporary name is never an object name). Temporaries are created with
/// `O_EXCL`, and an existing name (a crash leftover, or planted) is
/// skipped, so a stale file never makes an operation fail. `open` removes
/// every file in `tmp/` that does not follow the pattern and every
/// temporary whose instance is dead (instance file missing or not locked:
/// a `flock` dies with its process); temporaries of live instances, on this
/// host or another sharing the filesystem, are left alone.
///
/// # File descriptors
///
/// Open objects are kept in an LRU cache of `fd_cache` descriptors and
/// accessed only with positional I/O (`pread`/`pwrite`), never through a
/// descriptor's file position. The cache is per process: this store
/// invalidates an entry when it replaces or deletes the object, but an
/// object replaced or deleted by *another* process (or host) keeps being
/// served through a cached descriptor here. Give each data directory one
/// writing process per host, or set `fd_cache: 0` where several share it.
///
/// # Locks and fencing
///
/// A held lock is the file `locks/<h0>/<h1>/<name>_lock` holding a format
/// line, the token and the owner. It is written to a temporary file,
/// `fdatasync`ed, and then `link`ed into place: `link` fails if the name
/// exists (exclusive creation, atomic on NFSv3+ too), and no half-written
/// lock file is ever visible. Beside it, `<name>_fence` records the largest
/// token ever granted (replaced atomically, and raised *before* the lock
/// file is linked, so a crash can only waste a token): the next grant,
/// after a release, a break or a restart, gets a larger one. Lock
/// operations are always durable, whatever the sync mode, and run under an
/// exclusive `flock` on `locks/.guard`, which serialises the deciding steps
/// (read, compare owners exactly, raise the fence, link or unlink) between
/// the threads and processes of a host. A lock file in the original
/// `archip-filed` format (the bare owner string) reads as held by that
/// owner with token 0, so it can be broken.
///
/// **Fencing on this backend is single-host.** Hosts sharing the directory
/// get mutual exclusion from the exclusive `link`, but the store cannot
/// refuse a stale owner's writes: a host whose lock was broken and that
/// keeps writing data files is not stopped here (only a peer that checks
/// tokens on every request can fence it). Token monotonicity across hosts
/// also relies on the filesystem sharing `flock` between clients (Linux
/// NFS does, through byte-range locks); without it, grants racing on two
/// hosts could hand out the same token twice.
pub struct FileStore {
    root: PathBuf,
    objects: PathBuf,
    options: FileStoreOptions,
    fds: FdCache,
    temp: TempArea,
    locks: LockFiles,
    layout: Layout,
    pending: Durability,
    /// Test hook: fail the next data write (see `inject_write_error`).
    injected: Mutex<Option<(usize, i32)>>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("root", &self.root)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The two fan-out directory names of `name`.
pub(crate) fn fanout(name: &str) -> [String; 2] {
    let d = Sha256::digest(name.as_bytes());
    [format!("{:02x}", d[0]), format!("{:02x}", d[1])]
}

/// Creates `dir` if missing (its parent exists); `true` if it was created.
fn create_dir(dir: &Path) -> io::Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads `buf.len()` bytes at `offset`, stopping at the end of the file;
/// the rest of `buf` is zeroed.
fn read_full_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// One `preadv2(RWF_NOWAIT)`: bytes read, or `None` if the data is not
/// all in the page cache (`EAGAIN`) or anything else went wrong (the
/// blocking path then reads, and reports errors).
fn read_cached_at(file: &File, offset: u64, buf: &mut [u8]) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let offset = libc::off_t::try_from(offset).ok()?;
    // SAFETY: `iov` describes `buf`, which is valid for writes of its
    // length and outlives the call; the fd is open for as long as `file`
    // is borrowed; `preadv2` writes at most `iov_len` bytes into it.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    usize::try_from(n).ok()
}

/// Where an object's file lives.
struct ObjectPath {
    /// `objects/<h0>`.
    h0: PathBuf,
    /// `objects/<h0>/<h1>`.
    dir: PathBuf,
    /// `objects/<h0>/<h1>/<name>`.
    file: PathBuf,
}

impl FileStore {
    /// Opens the store in `dir`, creating the directory and its layout if
    /// missing, and removes the temporary files dead instances left.
    ///
    /// Fails if `dir` holds a `FORMAT` file of another format.
    pub fn open(dir: impl AsRef<Path>, options: FileStoreOptions) -> Result<FileStore, StoreError> {
        let root = dir.as_ref().to_owned();
        let label = root.display().to_string();
        let io = |e| StoreError::io(&label, "open", e);
        if !root.is_dir() {
            fs::create_dir_all(&root).map_err(io)?;
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent).map_err(io)?;
            }
        }
        let layout = Self::check_format(&root).map_err(io)?;
        let mut created = false;
        for sub in ["objects", "locks", "tmp"] {
            created |= create_dir(&root.join(sub)).map_err(io)?;
        }
        if created {
            fsync_dir(&root).map_err(io)?;
        }
        if layout == Layout::OneLevel {
            Self::make_fan_out(&root.join("objects")).map_err(io)?;
        }
        let temp = TempArea::open(&root.join("tmp")).map_err(io)?;
        {
            // What an earlier instance acknowledged but did not sync (in
            // write-back mode, or lazy copies) is in the page cache, where
            // this instance's `sync()` and durable writes (which sync only
            // what it knows of) would never reach it: synced now.
            let dir = File::open(&root).map_err(io)?;
            nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)).map_err(|e| io(e.into()))?;
        }
        Ok(FileStore {
            objects: root.join("objects"),
            locks: LockFiles::new(root.join("locks")),
            root,
            options,
            fds: FdCache::new(options.fd_cache),
            temp,
            layout,
            pending: Durability::default(),
            injected: Mutex::new(None),
        })
    }

    /// Writes `FORMAT` into a new store, or checks it in an existing one;
    /// the store's layout.
    fn check_format(root: &Path) -> io::Result<Layout> {
        let path = root.join("FORMAT");
        match fs::read(&path) {
            Ok(b) if b == FORMAT.as_bytes() => Ok(Layout::OneLevel),
            Ok(b) if b == FORMAT_1.as_bytes() => Ok(Layout::TwoLevels),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is not an archipelago file store (FORMAT differs)",
                    root.display()
                ),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let new = root.join("FORMAT.new");
                let mut f = File::create(&new)?;
                io::Write::write_all(&mut f, FORMAT.as_bytes())?;
                f.sync_data()?;
                fs::rename(&new, &path)?;
                fsync_dir(root)?;
                Ok(Layout::OneLevel)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes whichever of the 256 fan-out directories of `objects` are
    /// missing (all of them in a new store), durably.
    fn make_fan_out(objects: &Path) -> io::Result<()> {
        let mut created = false;
        for h0 in 0..=255u8 {
            created |= create_dir(&objects.join(format!("{h0:02x}")))?;
        }
        if created {
            fsync_dir(objects)?;
        }
        Ok(())
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The options it was opened with.
    pub fn options(&self) -> FileStoreOptions {
        self.options
    }

    /// The directory holding temporary files (for tests that plant stale
    /// ones).
    #[doc(hidden)]
    pub fn temp_dir(&self) -> &Path {
        self.temp.dir()
    }

    /// The name of the temporary file this instance will try to create
    /// next (for tests that plant a stale file under it).
    #[doc(hidden)]
    pub fn next_temp_name(&self) -> String {
        self.temp.next_name()
    }

    /// Test hook: the next data write (of `write`, `write_full`, `copy` or
    /// `store_content`) writes its first `keep` bytes, then fails with
    /// OS error `errno` (28 for `ENOSPC`), as a filling disk would.
    #[doc(hidden)]
    pub fn inject_write_error(&self, keep: usize, errno: i32) {
        *self.injected.lock().unwrap_or_else(|e| e.into_inner()) = Some((keep, errno));
    }

    fn path(&self, name: &str) -> ObjectPath {
        let [h0, h1] = fanout(name);
        let h0 = self.objects.join(h0);
        let dir = match self.layout {
            Layout::TwoLevels => h0.join(h1),
            Layout::OneLevel => h0.clone(),
        };
        ObjectPath {
            file: dir.join(name),
            dir,
            h0,
        }
    }

    fn durable(&self, durable: bool) -> bool {
        durable || self.options.sync
    }

    /// `pwrite`s all of `data` at `offset` (a short write is retried, and
    /// an error is an error), through the test hook.
    fn write_data(&self, file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let injected = self
            .injected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((keep, errno)) = injected {
            file.write_all_at(&data[..keep.min(data.len())], offset)?;
            return Err(io::Error::from_raw_os_error(errno));
        }
        file.write_all_at(data, offset)
    }

    /// Creates the fan-out directories of `p`, marking each parent that
    /// gains an entry.
    fn make_dirs(&self, p: &ObjectPath) -> io::Result<()> {
        if self.layout == Layout::OneLevel {
            // Made with the store (and at every open).
            return Ok(());
        }
        for (dir, parent) in [(&p.h0, &self.objects), (&p.dir, &p.h0)] {
            if !dir.exists() {
                self.pending.mark_dir(parent);
                create_dir(dir)?;
            }
        }
        Ok(())
    }

    /// Makes the path to `p`'s file durable: `fsync`s whichever of its
    /// directories have pending changes.
    fn settle(&self, p: &ObjectPath) -> io::Result<()> {
        self.pending.settle_dir(&p.dir)?;
        if self.layout == Layout::TwoLevels {
            self.pending.settle_dir(&p.h0)?;
            self.pending.settle_dir(&self.objects)?;
        }
        Ok(())
    }

    /// The open file of an existing object.
    fn open_existing(&self, name: &str, op: &'static str) -> Result<Arc<File>, StoreError> {
        if let Some(f) = self.fds.get(name) {
            return Ok(f);
        }
        let generation = self.fds.generation();
        let path = self.path(name);
        match OpenOptions::new().read(true).write(true).open(&path.file) {
            Ok(f) => {
                let f = Arc::new(f);
                self.fds.insert(name, &f, generation);
                Ok(f)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::not_found(name)),
            Err(e) => Err(StoreError::io(name, op, e)),
        }
    }

    /// The open file of an object, created empty if missing.
    fn open_or_create(&self, name: &str, op: &'static str) -> Result<Arc<File>, StoreError> {
        match self.open_existing(name, op) {
            Err(StoreError::NotFound { .. }) => {}
            other => return other,
        }
        let io = |e| StoreError::io(name, op, e);
        let path = self.path(name);
        self.make_dirs(&path).map_err(io)?;
        let generation = self.fds.generation();
        self.pending.mark_dir(&path.dir);
        // A spare (its inode made ahead) moved into place, never
        // replacing; without one, the file created in place (in its own
        // fan-out directory, not behind `tmp/`'s lock).
        let placed = match self.temp.take_spare().map_err(io)? {
            Some(mut t) => t
                .place(&path.file)
                .map_err(io)?
                .then(|| t.file.try_clone())
                .transpose()
                .map_err(io)?,
            None => match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path.file)
            {
                Ok(f) => Some(f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
                Err(e) => return Err(io(e)),
            },
        };
        let file = match placed {
            Some(f) => f,
            // Created meanwhile by another thread or process.
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path.file)
                .map_err(io)?,
        };
        let file = Arc::new(file);
        self.fds.insert(name, &file, generation);
        Ok(file)
    }

    /// After data was written to `name`'s `file` in place: syncs it and
    /// its path now if `durable`, or records it for `sync()`.
    fn finish_write(
        &self,
        name: &str,
        file: &File,
        durable: bool,
        op: &'static str,
    ) -> Result<(), StoreError> {
        if durable {
            let io = |e| StoreError::io(name, op, e);
            // Forgotten before the sync, which covers every write marked
            // so far (each is marked after its data was written); a later
            // mark stays.
            self.pending.forget_file(name);
            if let Err(e) = file.sync_data() {
                self.pending.mark_file(name);
                return Err(io(e));
            }
            self.settle(&self.path(name)).map_err(io)?;
        } else {
            self.pending.mark_file(name);
        }
        Ok(())
    }

    /// A new temporary file holding `data` at `offset`, `fdatasync`ed if
    /// `sync`.
    fn temp_with(
        &self,
        name: &str,
        op: &'static str,
        offset: u64,
        data: &[u8],
        sync: bool,
    ) -> Result<TempFile, StoreError> {
        let io = |e| StoreError::io(name, op, e);
        let t = self.temp.create().map_err(io)?;
        self.write_data(&t.file, offset, data).map_err(io)?;
        if sync {
            t.file.sync_data().map_err(io)?;
        }
        Ok(t)
    }

    /// Moves the complete temporary `t` into place as `name` unless the
    /// object exists; `Ok(false)` if it does (`t` is then removed).
    fn link_new(
        &self,
        name: &str,
        op: &'static str,
        mut t: TempFile,
        durable: bool,
    ) -> Result<bool, StoreError> {
        let io = |e| StoreError::io(name, op, e);
        let path = self.path(name);
        self.make_dirs(&path).map_err(io)?;
        self.pending.mark_dir(&path.dir);
        let generation = self.fds.generation();
        let linked = t.place(&path.file).map_err(io)?;
        if linked {
            // The next access (the data write a copy-up makes room for)
            // needs no `open`.
            let file = Arc::new(t.file.try_clone().map_err(io)?);
            self.fds.insert(name, &file, generation);
        }
        drop(t);
        if durable {
            self.settle(&path).map_err(io)?;
        }
        Ok(linked)
    }

    /// Copies `len` bytes of `src` (whose size was `src_size` when the
    /// copy started; bytes past it copy as zeros) from `src_offset` into
    /// `dst` at `dst_offset`, in chunks. When both are the same object and
    /// the destination range lies after the source range, chunks go from
    /// the last to the first, like `memmove`, so no source byte is
    /// overwritten before it is read.
    #[allow(clippy::too_many_arguments)]
    fn copy_range(
        &self,
        (src, src_file, src_size, src_offset): (&str, &File, u64, u64),
        (dst, dst_file, dst_offset): (&str, &File, u64),
        len: u64,
        backwards: bool,
    ) -> Result<(), StoreError> {
        let chunk = len.min(COPY_CHUNK);
        let mut buf = vec![0; chunk as usize];
        let n_chunks = len.div_ceil(COPY_CHUNK);
        for i in 0..n_chunks {
            let i = if backwards { n_chunks - 1 - i } else { i };
            let at = i * COPY_CHUNK;
            let n = (len - at).min(COPY_CHUNK) as usize;
            let buf = &mut buf[..n];
            let from = src_offset + at;
            // Only the bytes below the source's initial size are read.
            let real = src_size.saturating_sub(from).min(n as u64) as usize;
            read_full_at(src_file, from, &mut buf[..real])
                .map_err(|e| StoreError::io(src, "copy", e))?;
            buf[real..].fill(0);
            self.write_data(dst_file, dst_offset + at, buf)
                .map_err(|e| StoreError::io(dst, "copy", e))?;
        }
        Ok(())
    }

    /// [`ObjectStore::copy`], synced if `durable`.
    fn copy_synced_if(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        durable: bool,
    ) -> Result<(), StoreError> {
        check_copy(src, src_offset, dst, dst_offset, len)?;
        let src_file = self.open_existing(src, "copy")?;
        let src_size = src_file
            .metadata()
            .map_err(|e| StoreError::io(src, "copy", e))?
            .len();
        let source = (src, &*src_file, src_size, src_offset);
        loop {
            match self.open_existing(dst, "copy") {
                Ok(dst_file) => {
                    let backwards = src == dst && dst_offset > src_offset;
                    self.copy_range(source, (dst, &dst_file, dst_offset), len, backwards)?;
                    return self.finish_write(dst, &dst_file, durable, "copy");
                }
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            // A new destination: built aside, linked into place complete.
            let t = self
                .temp
                .create()
                .map_err(|e| StoreError::io(dst, "copy", e))?;
            self.copy_range(source, (dst, &t.file, dst_offset), len, false)?;
            if durable {
                t.file
                    .sync_data()
                    .map_err(|e| StoreError::io(dst, "copy", e))?;
            }
            if self.link_new(dst, "copy", t, durable)? {
                if !durable {
                    self.pending.mark_file(dst);
                }
                return Ok(());
            }
            // Created meanwhile: copy into it in place.
        }
    }
}

impl ObjectStore for FileStore {
    /// The check costs one `stat` of the lock's fence file while it is
    /// unchanged (see `locks.rs`), then the write as `write`.
    fn write_fenced(
        &self,
        name: &str,
        offset: u64,
        data: &[u8],
        durable: bool,
        fence: crate::Fence<'_>,
    ) -> Result<(), StoreError> {
        check_name(name)?;
        check_name(fence.lock)?;
        check_range(name, offset, data.len() as u64)?;
        self.locks.check_fence(&self.temp, name, fence)?;
        self.write(name, offset, data, durable)
    }

    fn write_full_fenced(
        &self,
        name: &str,
        data: &[u8],
        durable: bool,
        fence: crate::Fence<'_>,
    ) -> Result<(), StoreError> {
        check_name(name)?;
        check_name(fence.lock)?;
        self.locks.check_fence(&self.temp, name, fence)?;
        self.write_full(name, data, durable)
    }

    fn raise_fence(&self, lock: &str, token: u64) -> Result<u64, StoreError> {
        check_name(lock)?;
        self.locks.raise_fence(&self.temp, lock, token)
    }

    fn read(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<u64, StoreError> {
        check_name(name)?;
        check_range(name, offset, buf.len() as u64)?;
        let file = self.open_existing(name, "read")?;
        let io = |e| StoreError::io(name, "read", e);
        let size = file.metadata().map_err(io)?.len();
        read_full_at(&file, offset, buf).map_err(io)?;
        Ok(size)
    }

    /// From the page cache only (`preadv2` with `RWF_NOWAIT`), through an
    /// already open file: the blocker then serves a cached read on its
    /// loop thread instead of waking a worker.
    fn try_read_now(
        &self,
        name: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Option<Result<u64, StoreError>> {
        check_name(name).ok()?;
        check_range(name, offset, buf.len() as u64).ok()?;
        let file = self.fds.get(name)?;
        let size = file.metadata().ok()?.len();
        let want = (size.saturating_sub(offset) as usize).min(buf.len());
        let mut done = 0;
        while done < want {
            let n = read_cached_at(&file, offset + done as u64, &mut buf[done..want])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf[done..].fill(0);
        Some(Ok(size))
    }

    fn write(&self, name: &str, offset: u64, data: &[u8], durable: bool) -> Result<(), StoreError> {
        check_name(name)?;
        check_range(name, offset, data.len() as u64)?;
        let file = self.open_or_create(name, "write")?;
        self.write_data(&file, offset, data)
            .map_err(|e| StoreError::io(name, "write", e))?;
        self.finish_write(name, &file, self.durable(durable), "write")
    }

    fn write_full(&self, name: &str, data: &[u8], durable: bool) -> Result<(), StoreError> {
        check_name(name)?;
        let io = |e| StoreError::io(name, "write_full", e);
        // Synced whatever the mode: the rename must never expose a file
        // whose data is not on disk yet.
        let t = self.temp_with(name, "write_full", 0, data, true)?;
        let path = self.path(name);
        self.make_dirs(&path).map_err(io)?;
        self.pending.mark_dir(&path.dir);
        fs::rename(&t.path, &path.file).map_err(io)?;
        t.keep();
        self.fds.invalidate(name);
        self.pending.forget_file(name);
        if self.durable(durable) {
            self.settle(&path).map_err(io)?;
        }
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name(name)?;
        let io = |e| StoreError::io(name, "delete", e);
        let path = self.path(name);
        self.pending.mark_dir(&path.dir);
        match fs::remove_file(&path.file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::not_found(name))
            }
            Err(e) => return Err(io(e)),
        }
        self.fds.invalidate(name);
        self.pending.forget_file(name);
        if self.options.sync {
            self.settle(&path).map_err(io)?;
        }
        Ok(())
    }

    /// The fence costs what it costs a write.
    fn delete_fenced(&self, name: &str, fence: crate::Fence<'_>) -> Result<(), StoreError> {
        check_name(name)?;
        check_name(fence.lock)?;
        self.locks.check_fence(&self.temp, name, fence)?;
        self.delete(name)
    }

    fn stat(&self, name: &str) -> Result<ObjectStat, StoreError> {
        check_name(name)?;
        match fs::metadata(self.path(name).file) {
            Ok(m) => Ok(ObjectStat { size: m.len() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::not_found(name)),
            Err(e) => Err(StoreError::io(name, "stat", e)),
        }
    }

    fn copy(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        durable: bool,
    ) -> Result<(), StoreError> {
        let durable = self.durable(durable);
        self.copy_synced_if(src, src_offset, dst, dst_offset, len, durable)
    }

    /// Not synced even in write-through mode: the next durable write to
    /// `dst` (its `fdatasync` and the directories it settles) or `sync()`
    /// makes it durable. The fence costs what it costs a write.
    fn copy_up(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        fence: crate::Fence<'_>,
    ) -> Result<(), StoreError> {
        check_copy(src, src_offset, dst, dst_offset, len)?;
        check_name(fence.lock)?;
        self.locks.check_fence(&self.temp, dst, fence)?;
        self.copy_synced_if(src, src_offset, dst, dst_offset, len, false)
    }

    fn store_content(&self, data: &[u8], durable: bool) -> Result<String, StoreError> {
        let name = content_name_of(data);
        let path = self.path(&name);
        match fs::metadata(&path.file) {
            Ok(_) => {
                // Its data was synced before it was linked, but in
                // write-back mode the link itself may still be pending.
                if self.durable(durable) {
                    self.settle(&path)
                        .map_err(|e| StoreError::io(&name, "store_content", e))?;
                }
                return Ok(name);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&name, "store_content", e)),
        }
        // Synced whatever the mode: a content name must never refer to
        // partial content.
        let t = self.temp_with(&name, "store_content", 0, strip_trailing_zeros(data), true)?;
        self.link_new(&name, "store_content", t, self.durable(durable))?;
        Ok(name)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.pending
            .sync_all(|name| match File::open(self.path(name).file) {
                Ok(f) => f.sync_data(),
                // Deleted since: nothing to sync.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            })
            .map_err(|(name, e)| StoreError::io(&name, "sync", e))
    }

    fn try_lock(&self, name: &str, owner: &str) -> Result<u64, StoreError> {
        check_name(name)?;
        check_owner(name, owner)?;
        self.locks.try_lock(&self.temp, name, owner)
    }

    fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        check_name(name)?;
        check_owner(name, owner)?;
        self.locks.unlock(&self.temp, name, owner)
    }

    fn break_lock(&self, name: &str) -> Result<Option<String>, StoreError> {
        check_name(name)?;
        self.locks.break_lock(&self.temp, name)
    }

    fn lock_owner(&self, name: &str) -> Result<Option<(String, u64)>, StoreError> {
        check_name(name)?;
        self.locks.owner(name)
    }

    /// Cost: reads every fan-out directory (65,536 at most) and every
    /// object's directory entry, whatever the prefix (names are placed by
    /// hash, so a prefix narrows nothing).
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        self.each_name(prefix, |n| names.push(n))?;
        names.sort_unstable();
        Ok(names)
    }

    /// Walks the fan-out directories in order, one page at a time (see
    /// `listing.rs`).
    fn list_page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.page(prefix, cursor, limit)
    }
}

#[cfg(test)]
mod tests;
