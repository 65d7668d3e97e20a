//! Writes through one `RadosStore` from N threads (N operations in flight,
//! as a blocker with N workers) and prints the rate at each N.
//!
//! ```sh
//! eval "$(scripts/ceph-dev-cluster.sh start)"
//! cargo run --release -p archipelago-rados --example rados-qd -- 4096 2000 1 4 16
//! ```
//!
//! Arguments: bytes per write, writes per run, then the thread counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use archipelago_rados::{testenv, RadosStore};
use archipelago_store::ObjectStore;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let (size, count) = (
        args.first().copied().unwrap_or(4096),
        args.get(1).copied().unwrap_or(2000),
    );
    let threads: Vec<u64> = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        vec![1, 4, 16]
    };
    let Some((conf, pool)) = testenv::cluster("rados-qd") else {
        std::process::exit(2);
    };
    let store =
        RadosStore::connect(testenv::options(conf, pool, "qd")).unwrap_or_else(|e| panic!("{e}"));
    let data = vec![0x5a; size as usize];
    println!(
        "{:>8} {:>10} {:>12} {:>10}",
        "threads", "ops/s", "MB/s", "avg us"
    );
    for t in threads {
        let next = AtomicU64::new(0);
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..t {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    store.write(&format!("qd_{t}_{i}"), 0, &data, true).unwrap();
                });
            }
        });
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{t:>8} {:>10.0} {:>12.1} {:>10.0}",
            count as f64 / secs,
            (count * size) as f64 / secs / 1e6,
            secs * 1e6 * t as f64 / count as f64
        );
    }
}
