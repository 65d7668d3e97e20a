//! The flags of `vlmcd`, parsed by its binary (and by the tests that check the
//! launch descriptions of `archipelago_peer::launch` against them).

use archipelago_peer::PeerArgs;
use clap::Parser;

/// Serve volume I/O over xseg, composed from the mapper and the data blocker.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The flags every peer takes.
    #[command(flatten)]
    pub peer: PeerArgs,

    /// Port of the mapper.
    #[arg(long, default_value_t = 3)]
    pub mapper_port: u32,

    /// Port of the blocker holding volume data.
    #[arg(long, default_value_t = 1)]
    pub blockerb_port: u32,
}
