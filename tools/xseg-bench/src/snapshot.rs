//! `snapshot`: the cost of a snapshot and a clone as the volume grows.
//!
//! In process, no xseg: an [`archipelago_mapper::Mapper`] over two
//! [`MemoryStore`]s. For each size, a volume is created and every object
//! of it is allocated in the map only (`map_write` over the whole volume;
//! the data objects stay missing, which reads as zeros), then `--reps`
//! rounds each take a snapshot and clone it. The design makes both a
//! header rewrite that shares the map's immutable chunks, so their time
//! must not grow with the volume: the last size's median over the first
//! one's is expected near 1x.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use archipelago_mapper::Mapper;
use archipelago_store::{MemoryStore, ObjectStore};
use clap::Args;
use serde::Serialize;

use crate::stats::Stats;

/// Arguments of `xseg-bench snapshot`.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Volume sizes, comma separated, with an optional K, M, G or T suffix
    /// (powers of 1024).
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "1G,64G")]
    pub sizes: Vec<u64>,
    /// Object size (a power of two, optional suffix).
    #[arg(long, value_parser = parse_size, default_value = "4M")]
    pub object_size: u64,
    /// Snapshot + clone rounds per size.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub reps: u32,
    /// Bytes of the volume allocated per `map_write` while filling the map.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    pub fill_step: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `64M`, `1G`, `4096`...
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&s[..s.len() - 1], 10),
        Some(b'M') => (&s[..s.len() - 1], 20),
        Some(b'G') => (&s[..s.len() - 1], 30),
        Some(b'T') => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let n: u64 = digits.parse().map_err(|e| format!("bad size {s:?}: {e}"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

/// One size's figures.
#[derive(Debug, Serialize)]
pub struct SizeRow {
    /// Volume size in bytes.
    pub size: u64,
    /// Objects in the volume (all allocated in the map).
    pub objects: u64,
    /// Time to create the volume and allocate its map, milliseconds.
    pub fill_ms: f64,
    /// Snapshot times, nanoseconds.
    pub snapshot_ns: Stats,
    /// Clone times, nanoseconds.
    pub clone_ns: Stats,
    /// Snapshot + clone times, nanoseconds (`p50` is the median).
    pub total_ns: Stats,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Object size in bytes.
    pub object_size: u64,
    /// Rounds per size.
    pub reps: u32,
    /// One row per size, in the order given.
    pub sizes: Vec<SizeRow>,
    /// Median snapshot + clone time of the last size over the first's.
    pub ratio_last_to_first: f64,
}

fn bench_size(args: &SnapshotArgs, size: u64) -> Result<SizeRow> {
    let maps: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let data: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let mapper = Mapper::new(maps, data, "bench".to_owned());
    let vol = "bench-volume";
    let start = Instant::now();
    mapper
        .create(vol, size, Some(args.object_size))
        .with_context(|| format!("create a volume of {size} bytes"))?;
    let step = args.fill_step.max(args.object_size) / args.object_size * args.object_size;
    let mut offset = 0;
    while offset < size {
        let len = step.min(size - offset);
        let extents = mapper
            .map_write(vol, offset, len)
            .with_context(|| format!("map_write {len} bytes at {offset}"))?;
        // Every entry was zero: nothing is pending, nothing to commit.
        let pending: Vec<u64> = extents
            .iter()
            .filter(|e| e.pending)
            .map(|e| e.index)
            .collect();
        if !pending.is_empty() {
            mapper.commit_writes(vol, &pending)?;
        }
        offset += len;
    }
    let fill_ms = start.elapsed().as_secs_f64() * 1e3;
    let objects = size.div_ceil(args.object_size);
    let mapped = mapper.map_read(vol, 0, size)?;
    ensure!(
        mapped.len() as u64 == objects && mapped.iter().all(|e| e.object.is_some()),
        "the map is not fully allocated"
    );

    let (mut snaps, mut clones, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..args.reps {
        let snap = format!("bench-snap-{rep}");
        let clone = format!("bench-clone-{rep}");
        let t0 = Instant::now();
        mapper.snapshot(vol, &snap)?;
        let t1 = Instant::now();
        mapper.clone_volume(&snap, &clone, None)?;
        let t2 = Instant::now();
        snaps.push((t1 - t0).as_nanos() as u64);
        clones.push((t2 - t1).as_nanos() as u64);
        totals.push((t2 - t0).as_nanos() as u64);
    }
    Ok(SizeRow {
        size,
        objects,
        fill_ms,
        snapshot_ns: Stats::from_samples(&mut snaps),
        clone_ns: Stats::from_samples(&mut clones),
        total_ns: Stats::from_samples(&mut totals),
    })
}

/// Runs the benchmark and prints its report.
pub fn run(args: &SnapshotArgs) -> Result<()> {
    if args.sizes.is_empty() {
        bail!("no --sizes given");
    }
    let mut rows = Vec::new();
    for &size in &args.sizes {
        rows.push(bench_size(args, size)?);
    }
    let first = rows[0].total_ns.p50;
    let last = rows[rows.len() - 1].total_ns.p50;
    let report = Report {
        object_size: args.object_size,
        reps: args.reps,
        ratio_last_to_first: if first > 0.0 { last / first } else { 0.0 },
        sizes: rows,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "snapshot + clone, {} rounds, {} KiB objects, in process over MemoryStores",
        report.reps,
        report.object_size >> 10
    );
    println!(
        "{:>12} {:>9} {:>10} {:>14} {:>14} {:>14}",
        "size", "objects", "fill ms", "snapshot p50", "clone p50", "total p50"
    );
    for r in &report.sizes {
        println!(
            "{:>12} {:>9} {:>10.1} {:>11.1} us {:>11.1} us {:>11.1} us",
            human(r.size),
            r.objects,
            r.fill_ms,
            r.snapshot_ns.p50 / 1e3,
            r.clone_ns.p50 / 1e3,
            r.total_ns.p50 / 1e3
        );
    }
    println!(
        "median ratio {} / {}: {:.2}x",
        human(report.sizes[report.sizes.len() - 1].size),
        human(report.sizes[0].size),
        report.ratio_last_to_first
    );
    Ok(())
}

fn human(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(human(64 << 30), "64 GiB");
        assert_eq!(human(1000), "1000 B");
    }
}
