//! The flags of `nbdd`, parsed by its binary (and by the tests that check the
//! launch descriptions of `archipelago_peer::launch` against them).

use std::path::PathBuf;

use archipelago_peer::PeerArgs;
use clap::Parser;

/// Serve mapped Archipelago volumes over NBD.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The flags every peer takes.
    #[command(flatten)]
    pub peer: PeerArgs,

    /// Port of the composer (volume I/O).
    #[arg(long, default_value_t = 4)]
    pub vlmcd_port: u32,

    /// Port of the mapper (block status).
    #[arg(long, default_value_t = 3)]
    pub mapperd_port: u32,

    /// The mapped set (see `vlmc map`).
    #[arg(long, value_name = "FILE")]
    pub mapped_file: PathBuf,

    /// Publish connected clients here (for `vlmc unmap`).
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,

    /// Unix socket to serve on.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// TCP address to serve on (e.g. 127.0.0.1:10809).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Requests in flight per connection.
    #[arg(long, default_value_t = 64)]
    pub queue_depth: usize,

    /// Seconds a reply may take to write before its client is cut off.
    #[arg(long, default_value_t = crate::WRITE_TIMEOUT.as_secs())]
    pub write_timeout: u64,

    /// Seconds a client may take over its handshake.
    #[arg(long, default_value_t = crate::HANDSHAKE_TIMEOUT.as_secs())]
    pub handshake_timeout: u64,
}
