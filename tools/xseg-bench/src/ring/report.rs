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
    /// Messages per round trip.
    pub per_round: u64,
    /// Messages per second: `per_round` / mean round trip.
    pub rate_per_sec: f64,
    /// Messages per second at the median round trip (robust to the host
    /// preempting a vCPU, which inflates the mean).
    pub rate_at_p50_per_sec: f64,
    /// One-way latency of baseline A measured just before this row (xseg
    /// rows only); ratios use it instead of the A row.
    pub adjacent_a_ns: Option<Stats>,
}

impl Row {
    /// Row for `case` from its round-trip statistics.
    pub fn new(case: &Case, iters: u64, round_trip: Stats, adjacent_a: Option<Stats>) -> Row {
        Row {
            case: case.name,
            what: case.what,
            iters,
            one_way_ns: round_trip.scaled(2.0),
            round_trip_ns: round_trip,
            p50_vs_baseline: None,
            p99_vs_baseline: None,
            per_round: case.per_round,
            rate_per_sec: case.per_round as f64 * 1e9 / round_trip.mean,
            rate_at_p50_per_sec: case.per_round as f64 * 1e9 / round_trip.p50,
            adjacent_a_ns: adjacent_a,
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
        let base = r.adjacent_a_ns.unwrap_or(base);
        r.p50_vs_baseline = Some(r.one_way_ns.p50 / base.p50);
        r.p99_vs_baseline = Some(r.one_way_ns.p99 / base.p99);
    }
}

/// Prints `rows` as an aligned table on stdout.
pub fn print_table(rows: &[Row]) {
    let ratio = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.1}x"));
    println!(
        "{:<10} {:<40} {:>9} {:>12} {:>12} {:>8} {:>8} {:>12}",
        "case", "what", "iters", "1-way p50", "1-way p99", "p50/A", "p99/A", "msgs/s"
    );
    for r in rows {
        println!(
            "{:<10} {:<40} {:>9} {:>9.0} ns {:>9.0} ns {:>8} {:>8} {:>12.0}",
            r.case,
            r.what,
            r.iters,
            r.one_way_ns.p50,
            r.one_way_ns.p99,
            ratio(r.p50_vs_baseline),
            ratio(r.p99_vs_baseline),
            r.rate_per_sec,
        );
    }
}

/// One target of the issue, checked on this run's rows.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is compared.
    pub what: &'static str,
    /// Measured ratio.
    pub ratio: f64,
    /// The bound.
    pub bound: &'static str,
    /// Whether the ratio meets it.
    pub met: bool,
}

/// The ratios the transport is held to, from rows of one run (missing rows
/// skip their targets).
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let get = |name: &str| rows.iter().find(|r| r.case == name);
    let mut out = Vec::new();
    let mut at_most = |what, ratio: f64, max: f64, bound| {
        out.push(Target {
            what,
            ratio,
            bound,
            met: ratio <= max,
        })
    };
    for (name, what50, what99, max, bound) in [
        (
            "ring",
            "index hop p50 / A p50",
            "index hop p99 / A p99",
            2.0,
            "<= 2x",
        ),
        (
            "req",
            "request hop p50 / A p50",
            "request hop p99 / A p99",
            3.0,
            "<= 3x",
        ),
    ] {
        if let Some(row) = get(name) {
            if let (Some(p50), Some(p99)) = (row.p50_vs_baseline, row.p99_vs_baseline) {
                at_most(what50, p50, max, bound);
                at_most(what99, p99, max, bound);
            }
        }
    }
    if let (Some(b), Some(req)) = (get("b"), get("req")) {
        let better = b.one_way_ns.p50 / req.one_way_ns.p50;
        out.push(Target {
            what: "socket p50 / request hop p50",
            ratio: better,
            bound: ">= 50x",
            met: better >= 50.0,
        });
    }
    if let (Some(c), Some(sleep)) = (get("c"), get("req-sleep")) {
        let mut at_most = |what, ratio: f64| {
            out.push(Target {
                what,
                ratio,
                bound: "<= 1.5x",
                met: ratio <= 1.5,
            })
        };
        at_most(
            "sleep-policy hop p50 / C p50",
            sleep.one_way_ns.p50 / c.one_way_ns.p50,
        );
        at_most(
            "sleep-policy hop p99 / C p99",
            sleep.one_way_ns.p99 / c.one_way_ns.p99,
        );
    }
    for (name, what_p50, what_mean) in [
        (
            "stream",
            "stream rate / round-trip rate (medians)",
            "stream rate / round-trip rate (means)",
        ),
        (
            "bulk",
            "bulk rate / round-trip rate (medians)",
            "bulk rate / round-trip rate (means)",
        ),
    ] {
        if let (Some(req), Some(row)) = (get("req"), get(name)) {
            let ratio = row.rate_at_p50_per_sec / req.rate_at_p50_per_sec;
            out.push(Target {
                what: what_p50,
                ratio,
                bound: ">= 8x",
                met: ratio >= 8.0,
            });
            let ratio = row.rate_per_sec / req.rate_per_sec;
            out.push(Target {
                what: what_mean,
                ratio,
                bound: ">= 8x",
                met: ratio >= 8.0,
            });
        }
    }
    out
}

/// Prints the targets under the table.
pub fn print_targets(rows: &[Row]) {
    let t = targets(rows);
    if t.is_empty() {
        return;
    }
    println!();
    println!("{:<40} {:>8} {:>8}  met", "target", "ratio", "bound");
    for t in t {
        println!(
            "{:<40} {:>7.2}x {:>8}  {}",
            t.what,
            t.ratio,
            t.bound,
            if t.met { "yes" } else { "NO" }
        );
    }
}
