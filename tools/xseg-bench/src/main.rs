//! `xseg-bench`: benchmarks of the xseg transport.
//!
//! Subcommands:
//! * `ring`: cross-process ping-pong one-way latency of xseg and of
//!   reference mechanisms (see [`ring`]).
//! * `snapshot`: snapshot + clone time against the volume size, in process
//!   (see [`snapshot`]).
//! * `volume`: block I/O on a volume through the pipeline (or straight to
//!   the data blocker), IOPS, bandwidth and latency (see [`volume`]).
//!
//! The building blocks ([`harness`], [`stats`]) are meant for reuse by
//! further benchmarks.

mod harness;
mod ring;
mod snapshot;
mod stats;
mod volume;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Cross-process ping-pong: one-way latency per mechanism.
    Ring(ring::RingArgs),
    /// Snapshot + clone time against the volume size (in process).
    Snapshot(snapshot::SnapshotArgs),
    /// Block I/O on a volume through the pipeline, or on the data blocker.
    Volume(volume::VolumeArgs),
    /// Peer side of a `ring` case (spawned by `ring` itself).
    #[command(name = "ring-peer", hide = true)]
    RingPeer(harness::PeerArgs),
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match Cli::parse().cmd {
        Cmd::Ring(args) => ring::run(&args),
        Cmd::RingPeer(args) => ring::run_peer(&args),
        Cmd::Snapshot(args) => snapshot::run(&args),
        Cmd::Volume(args) => volume::run(&args),
    }
}
