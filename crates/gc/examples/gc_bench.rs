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
//! With `--segment SEG`, it only fills the blockers of a running segment
//! (map blocker port 2, data blocker port 1) with the same pool, on 4
//! threads, so that `vlmc gc` can be measured as its own process.
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
    maps: &dyn ObjectStore,
    data: &dyn ObjectStore,
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
        let epoch = h.epoch;
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for i in (first + t..first + n).step_by(4) {
                        let name = archipelago_mapfmt::owned_object_name(id, epoch, i);
                        data.write(&name, 0, &[], false).unwrap();
                    }
                });
            }
        });
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
    if let Some(i) = args.iter().position(|a| a == "--segment") {
        let seg = &args[i + 1];
        let maps = archipelago_client::RemoteStore::new(seg, 2);
        let data = archipelago_client::RemoteStore::new(seg, 1);
        let t = Instant::now();
        volume(&maps, &data, "live", 0x1111, live, false);
        volume(&maps, &data, "gone", 0x2222, garbage, true);
        println!("filled {seg} in {:.1} s", t.elapsed().as_secs_f64());
        return;
    }
    let maps = MemoryStore::new();
    let data = MemoryStore::new();
    let t = Instant::now();
    volume(&maps, &data, "live", 0x1111, live, false);
    volume(&maps, &data, "gone", 0x2222, garbage, true);
    let total = data.list("").unwrap().len() + maps.list("").unwrap().len();
    // Reset the peak to the current RSS (Linux: clear_refs 5), so that the
    // peak after the collection is the collection's own.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (rss0, hwm0) = memory();
    println!(
        "pool: {total} objects ({live} live, {garbage} garbage data objects + chunks), built in {:.1} s; RSS {} MiB (peak reset to {} MiB)",
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
        "gc: {} objects listed, {} referenced, {} freed in {secs:.1} s ({:.0} objects/s); RSS {} MiB, peak {} MiB: the collection's own peak {} MiB",
        r.data_objects + r.map_objects,
        r.referenced,
        r.freed_objects,
        (r.data_objects + r.map_objects) as f64 / secs,
        rss1 >> 10,
        hwm1 >> 10,
        hwm1.saturating_sub(rss0) >> 10
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
