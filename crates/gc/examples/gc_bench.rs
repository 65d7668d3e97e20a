//! Times a collection over a pool of `--live` referenced plus
//! `--garbage` unreferenced data objects (MemoryStores, in process), and
//! reports the process's memory before and after: the collector's own
//! share is the growth of the peak over what the stores hold.
//!
//! ```text
//! cargo run --release -p archipelago-gc --example gc_bench -- \
//!     [--live 600000] [--garbage 500000] [--sort-budget-mib 16] [--dry-run]
//! ```
//!
//! The maps are built directly (format 3 headers and chunks of owned
//! entries): one live volume, and one removed volume whose objects are
//! garbage. Data objects are empty: only names matter to a collection.

use std::time::Instant;

use archipelago_gc::{collect, GcOptions};
use archipelago_mapfmt::{Chunk, ChunkRef, Entry, Header, ENTRIES_PER_CHUNK};
use archipelago_store::{MemoryStore, ObjectStore};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// (VmRSS, VmHWM) in KiB.
fn memory() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A volume `name` of `objects` 4 MiB objects, every one written.
fn volume(
    maps: &MemoryStore,
    data: &MemoryStore,
    name: &str,
    id: u64,
    objects: u64,
    removed: bool,
) {
    let mut h = Header::new(id, objects << 22, 22).unwrap();
    let mut serial = 0;
    for (slot, r) in h.chunks.iter_mut().enumerate() {
        let first = slot as u64 * ENTRIES_PER_CHUNK as u64;
        let n = (objects - first).min(ENTRIES_PER_CHUNK as u64);
        serial += 1;
        let id_ref = ChunkRef { owner: id, serial };
        let entries = vec![
            Entry::Owned {
                owner: id,
                epoch: h.epoch
            };
            n as usize
        ];
        let c = Chunk::from_entries(id_ref, entries).unwrap();
        maps.write_full(&id_ref.object_name().unwrap(), &c.encode().unwrap(), false)
            .unwrap();
        *r = id_ref;
        for i in first..first + n {
            let name = archipelago_mapfmt::owned_object_name(id, h.epoch, i);
            data.write(&name, 0, &[], false).unwrap();
        }
    }
    h.next_serial = serial + 1;
    h.flags.removed = removed;
    maps.write_full(name, &h.encode().unwrap(), false).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let live = arg(&args, "--live", 600_000);
    let garbage = arg(&args, "--garbage", 500_000);
    let budget = arg(&args, "--sort-budget-mib", 16) << 20;
    let dry_run = args.iter().any(|a| a == "--dry-run");
    let maps = MemoryStore::new();
    let data = MemoryStore::new();
    let t = Instant::now();
    volume(&maps, &data, "live", 0x1111, live, false);
    volume(&maps, &data, "gone", 0x2222, garbage, true);
    let total = data.list("").unwrap().len() + maps.list("").unwrap().len();
    let (rss0, hwm0) = memory();
    println!(
        "pool: {total} objects ({live} live, {garbage} garbage data objects + chunks), built in {:.1} s; RSS {} MiB, peak {} MiB",
        t.elapsed().as_secs_f64(),
        rss0 >> 10,
        hwm0 >> 10
    );
    let spill = tempfile::tempdir().unwrap();
    let opts = GcOptions {
        dry_run,
        host: "bench".into(),
        spill_dir: Some(spill.path().to_owned()),
        sort_budget: budget as usize,
        ..GcOptions::default()
    };
    let t = Instant::now();
    let r = collect(&maps, &data, &opts, &mut |_, _, _| {}).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let (rss1, hwm1) = memory();
    println!(
        "gc: {} objects listed, {} referenced, {} freed in {secs:.1} s ({:.0} objects/s); RSS {} MiB, peak {} MiB (peak grew {} MiB over the pool's)",
        r.data_objects + r.map_objects,
        r.referenced,
        r.freed_objects,
        (r.data_objects + r.map_objects) as f64 / secs,
        rss1 >> 10,
        hwm1 >> 10,
        hwm1.saturating_sub(hwm0.max(rss0)) >> 10
    );
    assert_eq!(
        r.freed_objects,
        if dry_run {
            r.freed_objects
        } else {
            garbage + garbage.div_ceil(4096)
        }
    );
}
