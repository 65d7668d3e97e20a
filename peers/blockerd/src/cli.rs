//! The flags of `blockerd`, parsed by its binary (and by the tests that check the
//! launch descriptions of `archipelago_peer::launch` against them).

use archipelago_peer::PeerArgs;
use clap::Parser;

use crate::BackendArgs;

/// Serve an object store (files, memory, a RADOS pool, or null) over xseg.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The flags every peer takes.
    #[command(flatten)]
    pub peer: PeerArgs,

    /// The store served.
    #[command(flatten)]
    pub store: BackendArgs,
}
