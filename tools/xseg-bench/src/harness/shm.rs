//! Shared-memory files in `/dev/shm`, mapped `MAP_SHARED` by both sides.
//!
//! The parent [`create`](ShmFile::create)s a zero-filled file with a unique
//! name and passes [`path`](ShmFile::path) to the peer, which
//! [`open`](ShmFile::open)s it. The creator removes the file when dropped
//! (a benchmark killed by a signal may leave `/dev/shm/xseg-bench-*` behind).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use memmap2::MmapRaw;

/// A mapped `/dev/shm` file. Its contents are only ever accessed through
/// atomics, as other processes map it too.
#[derive(Debug)]
pub struct ShmFile {
    map: MmapRaw,
    path: PathBuf,
    owner: bool,
}

impl ShmFile {
    /// Creates and maps a new zero-filled file of `len` bytes named
    /// `/dev/shm/xseg-bench-<pid>-<tag>-<unique>`; removed on drop.
    pub fn create(tag: &str, len: usize) -> Result<ShmFile> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/dev/shm/xseg-bench-{}-{tag}-{seq}-{nanos}",
            std::process::id()
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        match file
            .set_len(len as u64)
            .and_then(|()| MmapRaw::map_raw(&file))
        {
            Ok(map) => Ok(ShmFile {
                map,
                path,
                owner: true,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e).with_context(|| format!("sizing/mapping {}", path.display()))
            }
        }
    }

    /// Maps an existing file created by the other side; not removed on drop.
    pub fn open(path: impl AsRef<Path>) -> Result<ShmFile> {
        let path = path.as_ref().to_owned();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let map = MmapRaw::map_raw(&file).with_context(|| format!("mapping {}", path.display()))?;
        Ok(ShmFile {
            map,
            path,
            owner: false,
        })
    }

    /// The file's path, to hand to the peer.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Pointer to `size` (a power of two) bytes at `offset`, checked for
    /// bounds and alignment.
    fn ptr_at(&self, offset: usize, size: usize) -> Result<*mut u8> {
        debug_assert!(size.is_power_of_two());
        ensure!(
            offset & (size - 1) == 0
                && offset
                    .checked_add(size)
                    .is_some_and(|end| end <= self.map.len()),
            "shm offset {offset} (size {size}) misaligned or out of {} bytes",
            self.map.len()
        );
        // The mapping is page-aligned, so an aligned offset is an aligned address.
        Ok(self.map.as_mut_ptr().wrapping_add(offset))
    }

    /// The `AtomicU64` at byte `offset` (must be 8-aligned and in bounds).
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64> {
        let ptr = self.ptr_at(offset, 8)?;
        // SAFETY: `ptr` is in bounds and 8-aligned (checked by `ptr_at`) in a
        // mapping that lives as long as `&self`; the shared memory is only
        // ever accessed atomically, by either process.
        Ok(unsafe { AtomicU64::from_ptr(ptr.cast()) })
    }

    /// `n` consecutive `AtomicU64`s from byte `offset` (8-aligned, in bounds).
    pub fn atomic_u64_slice(&self, offset: usize, n: usize) -> Result<&[AtomicU64]> {
        let len = n.checked_mul(8).context("slice length overflows")?;
        let ptr = self.ptr_at(offset, 8)?;
        ensure!(
            offset
                .checked_add(len)
                .is_some_and(|end| end <= self.map.len()),
            "shm slice at {offset} of {n} words out of {} bytes",
            self.map.len()
        );
        // SAFETY: the whole range is in bounds (checked above) and 8-aligned
        // in a mapping that lives as long as `&self`; AtomicU64 has the size
        // and alignment of u64 and any bits are valid; accessed atomically only.
        Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), n) })
    }

    /// The `AtomicU32` at byte `offset` (must be 4-aligned and in bounds).
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32> {
        let ptr = self.ptr_at(offset, 4)?;
        // SAFETY: as in `atomic_u64`, with 4-byte size and alignment.
        Ok(unsafe { AtomicU32::from_ptr(ptr.cast()) })
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
