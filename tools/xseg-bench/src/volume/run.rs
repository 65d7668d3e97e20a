//! The runner: the prefill, the workload with many requests in flight,
//! and the volume and objects a run creates.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use archipelago_client::{Client, IoQueue};
use archipelago_protocol::ErrorCode;

use super::report::{Latency, RunReport};
use super::stages::{snapshot_stats, stage_ports, stages};
use super::workload::{splitmix, stamp, stamped, Order, Target};
use super::{IoOp, VolumeArgs, BLOCKER_OBJECT, TIMEOUT};

/// Removes a volume this run created (close first; errors ignored).
pub(super) struct CreatedVolume<'a> {
    client: &'a Client,
    port: u32,
    name: String,
}

impl Drop for CreatedVolume<'_> {
    fn drop(&mut self) {
        let _ = self.client.close_volume(self.port, &self.name);
        if let Err(e) = self.client.remove_volume(self.port, &self.name) {
            log::warn!("remove volume {}: {e}", self.name);
        }
    }
}

/// The snapshot and clone of `--clone` (removed at the end, errors
/// logged).
struct ClonedVolume<'a> {
    client: &'a Client,
    port: u32,
    snap: String,
    clone: String,
}

impl<'a> ClonedVolume<'a> {
    fn make(client: &'a Client, port: u32, volume: &str) -> anyhow::Result<Self> {
        let snap = format!("{volume}-snap");
        let clone = format!("{volume}-clone");
        client
            .snapshot(port, volume, &snap)
            .map_err(|e| anyhow!("snapshot {volume} as {snap}: {e}"))?;
        let mut made = ClonedVolume {
            client,
            port,
            snap,
            clone: String::new(),
        };
        client
            .clone_volume(port, &made.snap, &clone, None)
            .map_err(|e| anyhow!("clone {} as {clone}: {e}", made.snap))?;
        made.clone = clone;
        Ok(made)
    }
}

impl Drop for ClonedVolume<'_> {
    fn drop(&mut self) {
        if !self.clone.is_empty() {
            let _ = self.client.close_volume(self.port, &self.clone);
            if let Err(e) = self.client.remove_volume(self.port, &self.clone) {
                log::warn!("remove volume {}: {e}", self.clone);
            }
        }
        if let Err(e) = self.client.remove_volume(self.port, &self.snap) {
            log::warn!("remove snapshot {}: {e}", self.snap);
        }
    }
}

/// Deletes the objects `--target blocker` wrote (errors ignored).
pub(super) struct BenchObjects<'a> {
    pub(super) client: &'a Client,
    pub(super) port: u32,
    pub(super) names: Vec<String>,
}

impl Drop for BenchObjects<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.client.delete(self.port, n);
        }
    }
}

fn is_busy(e: &archipelago_protocol::Error) -> bool {
    e.code == ErrorCode::Busy
}

/// Writes the whole range (stamped blocks), `chunk` bytes (at least `bs`)
/// per request, at most 8 in flight; a request refused or failed as busy
/// goes again.
fn prefill(
    q: &mut IoQueue,
    t: &Target,
    size: u64,
    bs: u64,
    chunk: u64,
    seed: u64,
) -> anyhow::Result<()> {
    // A power of two up to an object, so that no chunk straddles two
    // objects of `--target blocker`.
    let chunk = chunk.clamp(1, BLOCKER_OBJECT);
    let chunk = (1u64 << (63 - chunk.leading_zeros())).max(bs) / bs * bs;
    let mut buf = vec![0xa5u8; chunk as usize];
    let mut todo: Vec<u64> = (0..size).step_by(chunk as usize).collect();
    todo.reverse();
    let mut failed = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !todo.is_empty() || q.in_flight() > 0 {
        while q.in_flight() < q.depth().min(8) {
            let Some(off) = todo.pop() else { break };
            let len = chunk.min(size - off);
            for b in (0..len).step_by(bs as usize) {
                stamp(&mut buf[b as usize..], off + b, seed);
            }
            let (port, name, o) = t.locate(off);
            match q.submit_write(port, name, o, &buf[..len as usize], false, off) {
                Ok(()) => {}
                Err(e) if is_busy(&e) => {
                    todo.push(off);
                    if q.in_flight() == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    break;
                }
                Err(e) => bail!("prefill write at {off}: {e}"),
            }
        }
        q.complete_with(usize::MAX, TIMEOUT, |off, r| match r {
            Ok(_) => {}
            Err(e) if is_busy(&e) => todo.push(off),
            Err(e) => {
                failed.get_or_insert(format!("prefill write at {off}: {e}"));
            }
        });
        if let Some(e) = failed.take() {
            bail!(e);
        }
        if Instant::now() > deadline {
            bail!("prefill still busy after 10 minutes");
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Slot {
    start: Instant,
    block: u64,
    read: bool,
    /// Read of a block whose write had completed: check its stamp.
    check: bool,
    measured: bool,
}

/// Runs the workload against `t` on queue `q` (after the prefill, which
/// took `prefill_s`).
fn run_one(
    q: &mut IoQueue,
    t: &Target,
    size: u64,
    a: &VolumeArgs,
    prefill_s: f64,
) -> anyhow::Result<RunReport> {
    let bs = a.bs;
    let stride = a.stride.unwrap_or(bs);
    // Blocks whose `bs` bytes at `block * stride` fit the range.
    let blocks = (size - bs) / stride + 1;
    let mut written = vec![a.prefill; if a.verify { blocks as usize } else { 0 }];
    let mut order = Order::new(blocks, a.pattern, a.seed);
    let mut mix = splitmix(a.seed ^ 0x6d_6978_6564);
    let total = match (a.total, a.seconds) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(100_000),
    };
    let seconds = a.seconds.map(Duration::from_secs_f64);
    let depth = a.iodepth as usize;

    let mut slots: Vec<Option<Slot>> = vec![None; depth];
    let mut free: Vec<usize> = (0..depth).rev().collect();
    let mut wbuf = vec![0x5au8; bs as usize];
    let mut samples: Vec<u64> = Vec::with_capacity(total.unwrap_or(1 << 20).min(1 << 24) as usize);
    let (mut reads, mut writes, mut errors, mut verified, mut bad) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut first_error: Option<String> = None;
    let mut issued = 0u64;
    let mut next: Option<(u64, bool)> = None;
    // Requests a peer refused as busy (out of buffers: backpressure, not
    // an error), to send again; their latency counts from the first send.
    let mut retry: Vec<Slot> = Vec::new();
    let mut t0: Option<Instant> = None;
    let mut t_end = Instant::now();
    let holes = matches!(t, Target::Blocker { .. });
    // The null pipeline stores nothing: its reads cannot be checked.
    let verify = a.verify && !matches!(t, Target::Volume { null: true, .. });

    loop {
        // Submit while there is room and ops are left.
        while let Some(slot) = free.pop() {
            if let Some(s) = retry.pop() {
                let offset = s.block * stride;
                let (port, name, o) = t.locate(offset);
                let r = if s.read {
                    q.submit_read(port, name, o, bs, slot as u64)
                } else {
                    stamp(&mut wbuf, offset, a.seed);
                    q.submit_write(port, name, o, &wbuf, false, slot as u64)
                };
                match r {
                    Ok(()) => slots[slot] = Some(s),
                    Err(e) if is_busy(&e) => {
                        retry.push(s);
                        free.push(slot);
                        if q.in_flight() == 0 {
                            std::thread::sleep(Duration::from_micros(50));
                        }
                        break;
                    }
                    Err(e) => bail!("submit at offset {offset}: {e}"),
                }
                continue;
            }
            let more = match (total, t0, seconds) {
                (Some(n), _, _) => issued < a.warmup + n,
                (None, Some(t0), Some(s)) => t0.elapsed() < s,
                (None, None, _) => true,
                (None, Some(_), None) => unreachable!(),
            };
            if !more {
                free.push(slot);
                break;
            }
            let (block, read) = *next.get_or_insert_with(|| {
                let read = match a.op {
                    IoOp::Read => true,
                    IoOp::Write => false,
                    IoOp::Mixed => {
                        mix = splitmix(mix);
                        mix >> 63 == 0
                    }
                };
                (order.next_block(), read)
            });
            let offset = block * stride;
            let (port, name, o) = t.locate(offset);
            let measured = issued >= a.warmup;
            if measured && t0.is_none() {
                t0 = Some(Instant::now());
            }
            let start = Instant::now();
            let r = if read {
                q.submit_read(port, name, o, bs, slot as u64)
            } else {
                stamp(&mut wbuf, offset, a.seed);
                q.submit_write(port, name, o, &wbuf, false, slot as u64)
            };
            match r {
                Ok(()) => {
                    next = None;
                    issued += 1;
                    let check = read && verify && written[block as usize];
                    slots[slot] = Some(Slot {
                        start,
                        block,
                        read,
                        check,
                        measured,
                    });
                }
                Err(e) if is_busy(&e) => {
                    free.push(slot);
                    if q.in_flight() == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    break;
                }
                Err(e) => bail!("submit at offset {offset}: {e}"),
            }
        }
        if q.in_flight() == 0 {
            if free.len() == depth && next.is_none() && retry.is_empty() {
                // Nothing left to submit (a Busy with nothing in flight
                // leaves `next` set: go round again).
                let more = match (total, seconds) {
                    (Some(n), _) => issued < a.warmup + n,
                    (None, Some(s)) => match t0 {
                        None => true,
                        Some(t0) => t0.elapsed() < s,
                    },
                    (None, None) => unreachable!(),
                };
                if !more {
                    break;
                }
            }
            continue;
        }
        q.complete_with(depth, TIMEOUT, |tag, r| {
            let now = Instant::now();
            let s = slots[tag as usize].take().expect("slot in flight");
            free.push(tag as usize);
            match r {
                Ok(done) => {
                    if s.read {
                        if s.check {
                            verified += 1;
                            if !(done.data.len() as u64 == bs
                                && stamped(done.data, s.block * stride, a.seed))
                            {
                                bad += 1;
                                first_error.get_or_insert(format!(
                                    "verify failed at offset {}",
                                    s.block * stride
                                ));
                            }
                        }
                    } else if a.verify {
                        written[s.block as usize] = true;
                    }
                }
                Err(e) if is_busy(&e) => {
                    retry.push(s);
                    return;
                }
                // An object never written: a hole, as the volume reads it.
                Err(e) if s.read && holes && e.code == ErrorCode::NotFound => {
                    if s.check {
                        verified += 1;
                        bad += 1;
                        first_error.get_or_insert(format!(
                            "verify failed at offset {}: object missing",
                            s.block * stride
                        ));
                    }
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(format!(
                        "{} at offset {}: {e}",
                        if s.read { "read" } else { "write" },
                        s.block * stride
                    ));
                }
            }
            if s.measured {
                samples.push(now.duration_since(s.start).as_nanos() as u64);
                if s.read {
                    reads += 1;
                } else {
                    writes += 1;
                }
                t_end = now;
            }
        });
    }

    let ops = samples.len() as u64;
    let elapsed_s = t0.map_or(0.0, |t0| t_end.duration_since(t0).as_secs_f64());
    let rate = |x: f64| if elapsed_s > 0.0 { x / elapsed_s } else { 0.0 };
    Ok(RunReport {
        target: t.kind(),
        ops,
        reads,
        writes,
        errors,
        verified,
        verify_failures: bad,
        prefill_s,
        elapsed_s,
        iops: rate(ops as f64),
        bandwidth_mib_s: rate((ops * bs) as f64 / f64::from(1u32 << 20)),
        latency_ns: Latency::of(&mut samples),
        first_error,
        stages: Vec::new(),
    })
}

/// Creates the volume (removed at the end) or reads its size.
pub(super) fn open_volume<'c>(
    client: &'c Client,
    a: &VolumeArgs,
    port: u32,
) -> anyhow::Result<(u64, Option<CreatedVolume<'c>>)> {
    match a.create {
        Some(size) => {
            client
                .create_volume(port, &a.volume, size, None)
                .map_err(|e| anyhow!("create volume {}: {e}", a.volume))?;
            let created = CreatedVolume {
                client,
                port,
                name: a.volume.clone(),
            };
            Ok((size, Some(created)))
        }
        None => {
            let info = client
                .volume_info(port, &a.volume)
                .map_err(|e| anyhow!("volume {}: {e}", a.volume))?;
            Ok((info.size, None))
        }
    }
}

/// Prefills (if asked), then runs the workload against `t` with its
/// stage times.
pub(super) fn measure(
    segment: &str,
    client: &Client,
    t: &Target,
    size: u64,
    a: &VolumeArgs,
) -> anyhow::Result<RunReport> {
    let mut q = IoQueue::connect(segment)
        .map_err(|e| anyhow!("connect {segment}: {e}"))?
        .with_depth(a.iodepth as usize)
        .with_timeout(TIMEOUT);
    let blocks = size / a.bs;
    let t_prefill = Instant::now();
    if a.prefill {
        prefill(&mut q, t, blocks * a.bs, a.bs, a.prefill_bs, a.seed)?;
    }
    let prefill_s = if a.prefill {
        t_prefill.elapsed().as_secs_f64()
    } else {
        0.0
    };
    // `--clone`: the workload goes to a clone of a snapshot of `t`.
    let cloned = match t {
        Target::Volume { port, name, .. } if a.clone => {
            Some(ClonedVolume::make(client, *port, name)?)
        }
        _ => None,
    };
    let clone_target = cloned.as_ref().map(|c| Target::Volume {
        port: c.port,
        name: c.clone.clone(),
        null: false,
    });
    let t = clone_target.as_ref().unwrap_or(t);
    let ports = stage_ports(t, a);
    let before = snapshot_stats(client, &ports);
    let mut report = run_one(&mut q, t, size, a, prefill_s)?;
    let after = snapshot_stats(client, &ports);
    report.stages = stages(&ports, &before, &after);
    Ok(report)
}
