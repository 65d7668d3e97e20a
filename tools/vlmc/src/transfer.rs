//! `import` and `export`: raw images moved in chunks with many requests in
//! flight through an [`IoQueue`]. Chunks of zeros are neither written to
//! the volume (import) nor to the file (export, which stays sparse).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use archipelago_client::{Client, IoQueue};
use archipelago_protocol::sizes::{check_volume_size, parse_size, SECTOR};
use archipelago_protocol::{Error, ErrorCode};
use serde::Serialize;

use crate::cli::IoArgs;
use crate::failure::{Failure, On};
use crate::progress::Progress;
use crate::target::Target;

/// Largest chunk (the segment's usual largest buffer).
const MAX_CHUNK: u64 = 4 << 20;
/// How many times a request refused as busy is tried again, in all.
const BUSY_RETRIES: u32 = 1000;
/// Pause before trying again when nothing is in flight.
const BUSY_PAUSE: Duration = Duration::from_millis(5);

/// Chunk size and queue depth.
#[derive(Debug, Clone, Copy)]
pub struct IoPlan {
    chunk: u64,
    depth: usize,
}

impl IoPlan {
    /// Checks the flags.
    pub fn parse(name: &str, a: &IoArgs) -> Result<IoPlan, Failure> {
        let chunk = parse_size(&a.chunk).on(name)?;
        if chunk == 0 || chunk % SECTOR != 0 || chunk > MAX_CHUNK {
            return Err(Failure::new(
                name,
                format!("--chunk {chunk}: a multiple of 512 bytes up to 4M"),
            ));
        }
        if a.depth == 0 {
            return Err(Failure::new(name, "--depth must be at least 1"));
        }
        Ok(IoPlan {
            chunk,
            depth: a.depth,
        })
    }
}

/// What a transfer did.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The volume (or snapshot) read or written.
    pub volume: String,
    /// The image file.
    pub file: String,
    /// The volume's size.
    pub size: u64,
    /// Bytes written (to the volume on import, to the file on export).
    pub bytes_written: u64,
    /// Chunks in all.
    pub chunks: u64,
    /// Chunks of zeros, not written.
    pub chunks_skipped: u64,
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Counts busy refusals; fails once there were too many.
struct Busy(u32);

impl Busy {
    fn again(&mut self, e: Error) -> Result<(), Error> {
        self.0 += 1;
        if self.0 > BUSY_RETRIES {
            Err(e)
        } else {
            Ok(())
        }
    }
}

/// Imports `file` into a new volume `name` of the file's size rounded up
/// to 512 bytes. On failure the new volume is removed.
pub fn import(
    t: &Target,
    c: &Client,
    name: &str,
    file: &Path,
    plan: &IoPlan,
) -> Result<Report, Failure> {
    let fname = file.display().to_string();
    let mut f = File::open(file).on(&fname)?;
    let len = f.metadata().on(&fname)?.len();
    if len == 0 {
        return Err(Failure::new(&fname, "the image is empty"));
    }
    let size = check_volume_size(len.div_ceil(SECTOR) * SECTOR).on(&fname)?;
    let mut q = IoQueue::connect(&t.segment)
        .on(&t.segment)?
        .with_depth(plan.depth);
    c.create_volume(t.vlmcd, name, size, None).on(name)?;
    let result = c
        .open_volume(t.vlmcd, name, true)
        .map_err(|e| Failure::new(name, e))
        .and_then(|_| {
            let r = write_all(t, &mut q, name, &mut f, &fname, len, plan);
            let flushed = c.volume_flush(t.vlmcd, name).on(name);
            let closed = c.close_volume(t.vlmcd, name).on(name);
            let r = r?;
            flushed?;
            closed?;
            Ok(r)
        });
    match result {
        Ok((bytes_written, chunks, chunks_skipped)) => Ok(Report {
            volume: name.to_owned(),
            file: fname,
            size,
            bytes_written,
            chunks,
            chunks_skipped,
        }),
        Err(e) => {
            let _ = c.remove_volume(t.vlmcd, name);
            Err(e)
        }
    }
}

/// Writes the file's non-zero chunks; returns (bytes written, chunks,
/// chunks skipped).
fn write_all(
    t: &Target,
    q: &mut IoQueue,
    name: &str,
    f: &mut File,
    fname: &str,
    len: u64,
    plan: &IoPlan,
) -> Result<(u64, u64, u64), Failure> {
    let mut progress = Progress::new(format!("importing {name}"), len);
    let mut data: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut retry: VecDeque<u64> = VecDeque::new();
    let (mut next, mut written, mut chunks, mut skipped) = (0u64, 0u64, 0u64, 0u64);
    let mut busy = Busy(0);
    let mut failed: Option<Failure> = None;
    loop {
        // Fill the queue.
        while failed.is_none() && q.in_flight() < plan.depth {
            let off = if let Some(off) = retry.pop_front() {
                off
            } else if next < len {
                let n = plan.chunk.min(len - next);
                let mut buf = vec![0u8; n as usize];
                if let Err(e) = f.read_exact(&mut buf) {
                    failed = Some(Failure::new(fname, e));
                    break;
                }
                let off = next;
                next += n;
                chunks += 1;
                if is_zero(&buf) {
                    skipped += 1;
                    progress.add(n);
                    continue;
                }
                data.insert(off, buf);
                off
            } else {
                break;
            };
            match q.submit_write(t.vlmcd, name, off, &data[&off], false, off) {
                Ok(()) => {}
                Err(e) if e.code == ErrorCode::Busy => {
                    retry.push_front(off);
                    if let Err(e) = busy.again(e) {
                        failed = Some(Failure::new(name, e));
                    } else if q.in_flight() == 0 {
                        std::thread::sleep(BUSY_PAUSE);
                        continue;
                    }
                    break;
                }
                Err(e) => failed = Some(Failure::new(name, e)),
            }
        }
        if q.in_flight() == 0 {
            if failed.is_some() || (next >= len && retry.is_empty()) {
                break;
            }
            continue;
        }
        for c in q.complete(plan.depth, Duration::from_secs(1)) {
            match c.result {
                Ok(_) => {
                    let n = data.remove(&c.user_tag).map_or(0, |d| d.len() as u64);
                    written += n;
                    progress.add(n);
                }
                Err(e) if e.code == ErrorCode::Busy && failed.is_none() => {
                    if let Err(e) = busy.again(e) {
                        failed = Some(Failure::new(name, e));
                    } else {
                        retry.push_back(c.user_tag);
                    }
                }
                Err(e) => {
                    failed.get_or_insert_with(|| Failure::new(name, e));
                }
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => {
            progress.finish();
            Ok((written, chunks, skipped))
        }
    }
}

/// Exports `name` into `file` (created or truncated), sparse. A writable
/// volume is read through a temporary snapshot, removed afterwards; an
/// old-format map is read directly (it takes no writes until `vlmc
/// upgrade`, and cannot be snapshotted).
pub fn export(
    t: &Target,
    c: &Client,
    name: &str,
    file: &Path,
    plan: &IoPlan,
) -> Result<Report, Failure> {
    let fname = file.display().to_string();
    let info = c.volume_info(t.vlmcd, name).on(name)?;
    if info.removed {
        return Err(Failure::new(name, "removed"));
    }
    // A writable volume is held for the export, so that it cannot change
    // under it and nothing is left behind (old-format maps cannot be
    // written here: they are read as they are).
    let hold = !info.readonly && info.format_version == 3;
    let mut q = IoQueue::connect(&t.segment)
        .on(&t.segment)?
        .with_depth(plan.depth);
    let out = File::create(file).on(&fname)?;
    let size = if hold {
        match c.open_volume_exclusive(t.vlmcd, name) {
            Ok(held) => held.size,
            Err(e) if e.code == ErrorCode::Busy => {
                return Err(Failure::new(
                    name,
                    format!("{}: export a snapshot of it instead", e.detail),
                ))
            }
            Err(e) => return Err(Failure::new(name, e)),
        }
    } else {
        info.size
    };
    let r = read_all(t, &mut q, name, name, &out, &fname, size, plan);
    if hold {
        let closed = c.close_volume(t.vlmcd, name).on(name);
        if r.is_ok() {
            closed?;
        }
    }
    let (bytes_written, chunks, chunks_skipped) = r?;
    out.set_len(size).on(&fname)?;
    Ok(Report {
        volume: name.to_owned(),
        file: fname,
        size,
        bytes_written,
        chunks,
        chunks_skipped,
    })
}

/// Reads `source` (`size` bytes) into `out`, skipping chunks of zeros;
/// returns (bytes written, chunks, chunks skipped).
#[allow(clippy::too_many_arguments)]
fn read_all(
    t: &Target,
    q: &mut IoQueue,
    source: &str,
    name: &str,
    out: &File,
    fname: &str,
    size: u64,
    plan: &IoPlan,
) -> Result<(u64, u64, u64), Failure> {
    let mut progress = Progress::new(format!("exporting {name}"), size);
    let mut retry: VecDeque<u64> = VecDeque::new();
    let (mut next, mut written, mut skipped) = (0u64, 0u64, 0u64);
    let chunks = size.div_ceil(plan.chunk);
    let mut busy = Busy(0);
    let mut failed: Option<Failure> = None;
    let len_at = |off: u64| plan.chunk.min(size - off);
    loop {
        while failed.is_none() && q.in_flight() < plan.depth {
            let off = if let Some(off) = retry.pop_front() {
                off
            } else if next < size {
                let off = next;
                next += len_at(off);
                off
            } else {
                break;
            };
            match q.submit_read(t.vlmcd, source, off, len_at(off), off) {
                Ok(()) => {}
                Err(e) if e.code == ErrorCode::Busy => {
                    retry.push_front(off);
                    if let Err(e) = busy.again(e) {
                        failed = Some(Failure::new(name, e));
                    } else if q.in_flight() == 0 {
                        std::thread::sleep(BUSY_PAUSE);
                        continue;
                    }
                    break;
                }
                Err(e) => failed = Some(Failure::new(name, e)),
            }
        }
        if q.in_flight() == 0 {
            if failed.is_some() || (next >= size && retry.is_empty()) {
                break;
            }
            continue;
        }
        q.complete_with(
            plan.depth,
            Duration::from_secs(1),
            |off, result| match result {
                Ok(r) => {
                    let n = len_at(off);
                    let data = &r.data[..(n as usize).min(r.data.len())];
                    if data.len() as u64 != n {
                        failed.get_or_insert_with(|| {
                            Failure::new(name, format!("short read at {off}: {}", data.len()))
                        });
                    } else if is_zero(data) {
                        skipped += 1;
                    } else if let Err(e) = out.write_all_at(data, off) {
                        failed.get_or_insert_with(|| Failure::new(fname, e));
                    } else {
                        written += n;
                    }
                    progress.add(n);
                }
                Err(e) if e.code == ErrorCode::Busy && failed.is_none() => {
                    if let Err(e) = busy.again(e) {
                        failed = Some(Failure::new(name, e));
                    } else {
                        retry.push_back(off);
                    }
                }
                Err(e) => {
                    failed.get_or_insert_with(|| Failure::new(name, e));
                }
            },
        );
    }
    match failed {
        Some(e) => Err(e),
        None => {
            progress.finish();
            Ok((written, chunks, skipped))
        }
    }
}
