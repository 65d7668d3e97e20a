//! Output rows of `xseg-bench ring`: a human table or JSON.

use serde::Serialize;

use super::Case;
use crate::stats::Stats;

/// One output row: a case's one-way latency.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Case name.
    pub case: &'static str,
    /// Case description.
    pub what: &'static str,
    /// Timed round trips.
    pub iters: u64,
    /// One-way latency (round trip / 2), ns.
    pub one_way_ns: Stats,
    /// Round-trip latency, ns.
    pub round_trip_ns: Stats,
    /// One-way p50 divided by the baseline's (None without a baseline row).
    pub p50_vs_baseline: Option<f64>,
    /// One-way p99 divided by the baseline's.
    pub p99_vs_baseline: Option<f64>,
}

impl Row {
    /// Row for `case` from its round-trip statistics.
    pub fn new(case: &Case, iters: u64, round_trip: Stats) -> Row {
        Row {
            case: case.name,
            what: case.what,
            iters,
            one_way_ns: round_trip.scaled(2.0),
            round_trip_ns: round_trip,
            p50_vs_baseline: None,
            p99_vs_baseline: None,
        }
    }
}

/// Fills the ratio columns relative to the row named `baseline`, if present.
pub fn add_ratios(rows: &mut [Row], baseline: &str) {
    let Some(base) = rows
        .iter()
        .find(|r| r.case == baseline)
        .map(|r| r.one_way_ns)
    else {
        return;
    };
    for r in rows {
        r.p50_vs_baseline = Some(r.one_way_ns.p50 / base.p50);
        r.p99_vs_baseline = Some(r.one_way_ns.p99 / base.p99);
    }
}

/// Prints `rows` as an aligned table on stdout.
pub fn print_table(rows: &[Row]) {
    let ratio = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.1}x"));
    println!(
        "{:<6} {:<34} {:>9} {:>12} {:>12} {:>8} {:>8}",
        "case", "what", "iters", "1-way p50", "1-way p99", "p50/A", "p99/A"
    );
    for r in rows {
        println!(
            "{:<6} {:<34} {:>9} {:>9.0} ns {:>9.0} ns {:>8} {:>8}",
            r.case,
            r.what,
            r.iters,
            r.one_way_ns.p50,
            r.one_way_ns.p99,
            ratio(r.p50_vs_baseline),
            ratio(r.p99_vs_baseline),
        );
    }
}
