//! The flags of `mapperd`, parsed by its binary (and by the tests that check the
//! launch descriptions of `archipelago_peer::launch` against them).

use archipelago_peer::PeerArgs;
use clap::Parser;

/// Serve volume maps over xseg, stored on two blockers.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The flags every peer takes.
    #[command(flatten)]
    pub peer: PeerArgs,

    /// Port of the blocker holding maps and locks.
    #[arg(long, default_value_t = 2)]
    pub blockerm_port: u32,

    /// Port of the blocker holding volume data.
    #[arg(long, default_value_t = 1)]
    pub blockerb_port: u32,

    /// Size of the decoded map-chunk cache in MiB (0 disables it; default
    /// `archipelago_mapper::DEFAULT_CACHE_BYTES`).
    #[arg(long)]
    pub cache_mib: Option<u64>,

    /// Benchmark ceiling: keep no map and reach no blocker; answer map
    /// requests from arithmetic (`xseg-bench volume --target null`).
    #[arg(long)]
    pub null: bool,
}
