//! `xseg-bench ring`: one-way latency of cross-process ping-pong.
//!
//! The parent runs each selected [`Case`] in turn: the case's parent side
//! sets up shared state, spawns the peer via [`RunCtx::peer`] (which re-runs
//! this binary as `xseg-bench ring-peer --case NAME ...`, dispatched to the
//! case's peer side by [`run_peer`]) and times round trips with
//! [`RunCtx::measure`]. Reported latencies are round trip / 2.
//!
//! To add a case, write its two sides and add a [`Case`] to [`CASES`].

mod baselines;
mod report;
mod xseg;

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::harness::{self, PeerArgs, PeerCommand};
use crate::stats::Stats;

/// Name of the hidden peer subcommand.
pub const PEER_SUBCOMMAND: &str = "ring-peer";

/// Flags of `xseg-bench ring`.
#[derive(clap::Args, Debug)]
pub struct RingArgs {
    /// Cases to run, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,
    /// Timed round trips for every case (overrides per-case defaults).
    #[arg(long)]
    pub iters: Option<u64>,
    /// Timed round trips for one case, e.g. `--iters-for b=50000`; repeatable.
    #[arg(long, value_parser = parse_case_iters)]
    pub iters_for: Vec<(String, u64)>,
    /// Untimed warm-up round trips (default: a tenth of the timed ones).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// CPU for the parent (measuring) side.
    #[arg(long, default_value_t = 0)]
    pub parent_cpu: usize,
    /// CPU for the peer side.
    #[arg(long, default_value_t = 1)]
    pub child_cpu: usize,
    /// Do not pin either process.
    #[arg(long)]
    pub no_pin: bool,
    /// Per-case time limit in seconds (covers the peer's whole life).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Print a JSON array of rows instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_case_iters(s: &str) -> Result<(String, u64), String> {
    let (case, n) = s.split_once('=').ok_or("expected CASE=N")?;
    Ok((case.to_owned(), n.parse().map_err(|e| format!("{e}"))?))
}

/// A benchmark case: both sides of one ping-pong mechanism.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Short name used by `--cases` and in the output.
    pub name: &'static str,
    /// One-line description for the output.
    pub what: &'static str,
    /// Timed round trips unless overridden.
    pub default_iters: u64,
    /// Messages (descriptors) per round trip, for the rate column.
    pub per_round: u64,
    /// Parent side: set up, spawn the peer, return round-trip statistics.
    pub parent: fn(&RunCtx) -> Result<Stats>,
    /// Peer side, run in the child with its parsed flags.
    pub peer: fn(&PeerArgs) -> Result<()>,
}

/// All cases, in output order. The first one is the ratio baseline.
pub const CASES: &[Case] = &[
    baselines::SPIN,
    baselines::SOCKET,
    baselines::FUTEX,
    xseg::RING,
    xseg::REQ,
    xseg::REQ_YIELD,
    xseg::REQ_SLEEP,
    xseg::BULK,
    xseg::STREAM,
];

/// Everything a case's parent side needs to know.
#[derive(Debug, Clone)]
pub struct RunCtx {
    /// The case being run.
    pub case: &'static str,
    /// Untimed warm-up round trips.
    pub warmup: u64,
    /// Timed round trips.
    pub iters: u64,
    /// CPU the peer pins itself to, if any.
    pub child_cpu: Option<usize>,
    /// Bound on the whole case.
    pub timeout: Duration,
}

impl RunCtx {
    /// A peer command for this case, already carrying the CPU, the number of
    /// rounds (warm-up + timed) and the timeout; add `arg`s and `spawn` it.
    pub fn peer(&self) -> PeerCommand {
        PeerCommand::new(PEER_SUBCOMMAND, self.case)
            .cpu(self.child_cpu)
            .rounds(self.warmup + self.iters)
            .timeout(self.timeout)
    }

    /// Times `round_trip` (called exactly `warmup + iters` times, matching
    /// the peer's rounds); returns round-trip statistics.
    pub fn measure(&self, round_trip: impl FnMut() -> Result<()>) -> Result<Stats> {
        harness::measure(self.warmup, self.iters, round_trip)
    }
}

/// Runs `xseg-bench ring`.
pub fn run(args: &RingArgs) -> Result<()> {
    let selected: Vec<&Case> = if args.cases.is_empty() {
        CASES.iter().collect()
    } else {
        let mut v = Vec::new();
        for name in &args.cases {
            match CASES.iter().find(|c| c.name == name.trim()) {
                Some(c) => v.push(c),
                None => bail!("unknown case {name:?}; known: {}", case_names()),
            }
        }
        v
    };
    if !args.no_pin {
        harness::pin_to_cpu(args.parent_cpu);
    }
    let mut rows = Vec::new();
    for case in selected {
        let iters = args
            .iters_for
            .iter()
            .rev()
            .find(|(n, _)| n == case.name)
            .map(|&(_, n)| n)
            .or(args.iters)
            .unwrap_or(case.default_iters);
        let ctx = RunCtx {
            case: case.name,
            warmup: args.warmup.unwrap_or(iters / 10),
            iters,
            child_cpu: (!args.no_pin).then_some(args.child_cpu),
            timeout: Duration::from_secs(args.timeout),
        };
        // The cache-line floor moves by 3-6x within seconds on a VM, so each
        // xseg row gets its own baseline A, measured just before it.
        let adjacent_a = if case.name.len() > 1 {
            let base = &CASES[0];
            let ctx = RunCtx {
                case: base.name,
                warmup: base.default_iters / 10,
                iters: base.default_iters,
                ..ctx.clone()
            };
            Some(
                (base.parent)(&ctx)
                    .context("adjacent baseline a")?
                    .scaled(2.0),
            )
        } else {
            None
        };
        let rtt = (case.parent)(&ctx).with_context(|| format!("case {}", case.name))?;
        rows.push(report::Row::new(case, iters, rtt, adjacent_a));
    }
    report::add_ratios(&mut rows, CASES[0].name);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        report::print_table(&rows);
        report::print_targets(&rows);
    }
    Ok(())
}

/// Runs the peer side of a case (the hidden `ring-peer` subcommand).
pub fn run_peer(args: &PeerArgs) -> Result<()> {
    let case = CASES
        .iter()
        .find(|c| c.name == args.case)
        .with_context(|| format!("unknown case {:?}; known: {}", args.case, case_names()))?;
    (case.peer)(args).with_context(|| format!("peer of case {}", case.name))
}

fn case_names() -> String {
    CASES.iter().map(|c| c.name).collect::<Vec<_>>().join(",")
}
