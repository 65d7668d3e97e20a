//! The report: per-target results, as JSON or a table.

use serde::Serialize;

use super::stages::Stage;
use super::{IoOp, Pattern, SpawnBackend};
use crate::stats::percentile;

/// Latency summary in nanoseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

impl Latency {
    pub(super) fn of(samples: &mut [u64]) -> Latency {
        if samples.is_empty() {
            return Latency {
                mean: 0.0,
                p50: 0,
                p90: 0,
                p99: 0,
                p99_9: 0,
                max: 0,
            };
        }
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Latency {
            mean: sum as f64 / samples.len() as f64,
            p50: percentile(samples, 50.0),
            p90: percentile(samples, 90.0),
            p99: percentile(samples, 99.0),
            p99_9: percentile(samples, 99.9),
            max: samples[samples.len() - 1],
        }
    }
}

/// One target's results.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub target: &'static str,
    /// Measured operations (warmup excluded).
    pub ops: u64,
    pub reads: u64,
    pub writes: u64,
    pub errors: u64,
    /// Reads whose stamp was checked (all matched, or the run failed).
    pub verified: u64,
    pub verify_failures: u64,
    pub prefill_s: f64,
    pub elapsed_s: f64,
    pub iops: f64,
    pub bandwidth_mib_s: f64,
    pub latency_ns: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// What each peer of the target added (warmup included).
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub segment: String,
    pub spawn: Option<SpawnBackend>,
    pub volume: String,
    pub size: u64,
    pub bs: u64,
    pub iodepth: u32,
    pub op: IoOp,
    pub pattern: Pattern,
    pub warmup: u64,
    pub prefill: bool,
    /// The workload ran on a clone of a snapshot of the volume.
    pub clone: bool,
    /// Distance between block starts.
    pub stride: u64,
    pub verify: bool,
    pub seed: u64,
    pub runs: Vec<RunReport>,
}

pub(super) fn print_table(r: &Report) {
    println!(
        "size {} MiB, bs {}, stride {}, iodepth {}, op {:?}, pattern {:?}, prefill {}, clone {}, verify {}",
        r.size >> 20,
        r.bs,
        r.stride,
        r.iodepth,
        r.op,
        r.pattern,
        r.prefill,
        r.clone,
        r.verify
    );
    println!(
        "{:<8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}",
        "target",
        "ops",
        "IOPS",
        "MiB/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "errors",
        "verified"
    );
    let us = |ns: u64| ns as f64 / 1000.0;
    for x in &r.runs {
        let l = &x.latency_ns;
        println!(
            "{:<8} {:>9} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>9}",
            x.target,
            x.ops,
            x.iops,
            x.bandwidth_mib_s,
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p99_9),
            us(l.max),
            x.errors,
            x.verified
        );
    }
    println!("stage times (mean per request, us; own = held minus sub-request round trips):");
    println!(
        "{:<8} {:<9} {:>9} {:>8} {:>8} {:>6} {:>8} {:>8}",
        "target", "peer", "requests", "queued", "held", "subs", "sub rtt", "own"
    );
    for x in &r.runs {
        for st in &x.stages {
            println!(
                "{:<8} {:<9} {:>9} {:>8.1} {:>8.1} {:>6.2} {:>8.1} {:>8.1}",
                x.target,
                st.peer,
                st.requests,
                st.queue_ns / 1000.0,
                st.service_ns / 1000.0,
                st.sub_per_request,
                st.sub_ns / 1000.0,
                st.own_ns / 1000.0
            );
        }
    }
}
