//! `nbdd`: serves the mapped volumes over NBD; the `archipelago_nbdd`
//! library does the work (the protocol, the connections, the bridge to
//! vlmcd and mapperd).
//!
//! ```text
//! nbdd --port 5 --vlmcd-port 4 --mapperd-port 3 \
//!      --mapped-file /run/archipelago/nbd-mapped.json \
//!      --socket /run/archipelago/nbd.sock --listen 127.0.0.1:10809
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use archipelago_nbdd::{Listeners, Settings};
use archipelago_peer::{init_logging, PeerArgs};
use clap::Parser;

/// Serve mapped Archipelago volumes over NBD.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,

    /// Port of the composer (volume I/O).
    #[arg(long, default_value_t = 4)]
    vlmcd_port: u32,

    /// Port of the mapper (block status).
    #[arg(long, default_value_t = 3)]
    mapperd_port: u32,

    /// The mapped set (see `vlmc map`).
    #[arg(long, value_name = "FILE")]
    mapped_file: PathBuf,

    /// Publish connected clients here (for `vlmc unmap`).
    #[arg(long, value_name = "FILE")]
    status_file: Option<PathBuf>,

    /// Unix socket to serve on.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// TCP address to serve on (e.g. 127.0.0.1:10809).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,

    /// Requests in flight per connection.
    #[arg(long, default_value_t = 64)]
    queue_depth: usize,

    /// Seconds a reply may take to write before its client is cut off.
    #[arg(long, default_value_t = archipelago_nbdd::WRITE_TIMEOUT.as_secs())]
    write_timeout: u64,

    /// Seconds a client may take over its handshake.
    #[arg(long, default_value_t = archipelago_nbdd::HANDSHAKE_TIMEOUT.as_secs())]
    handshake_timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.peer.log_level);
    let settings = Settings {
        segment: cli.peer.segment.clone(),
        vlmcd: cli.vlmcd_port,
        mapperd: cli.mapperd_port,
        mapped_file: cli.mapped_file,
        status_file: cli.status_file,
        depth: cli.queue_depth.max(1),
        write_timeout: Duration::from_secs(cli.write_timeout.max(1)),
        handshake_timeout: Duration::from_secs(cli.handshake_timeout.max(1)),
    };
    let on = Listeners {
        socket: cli.socket,
        tcp: cli.listen,
    };
    match archipelago_nbdd::serve(&cli.peer, settings, &on) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("nbdd: {e}");
            ExitCode::FAILURE
        }
    }
}
