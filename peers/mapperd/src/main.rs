//! `mapperd`: serves volume maps over xseg. Maps and locks live on the
//! blocker at `--blockerm-port`, volume data on the one at
//! `--blockerb-port`; the mapper reaches both through the segment.
//!
//! ```text
//! mapperd --port 3 --blockerb-port 1 --blockerm-port 2 --host-id host-a
//! ```

mod handler;
mod null;

use std::process::ExitCode;
use std::sync::Arc;

use archipelago_client::RemoteStore;
use archipelago_mapper::Mapper;
use archipelago_peer::{init_logging, Peer, PeerArgs};
use clap::Parser;

/// Serve volume maps over xseg, stored on two blockers.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,

    /// Port of the blocker holding maps and locks.
    #[arg(long, default_value_t = 2)]
    blockerm_port: u32,

    /// Port of the blocker holding volume data.
    #[arg(long, default_value_t = 1)]
    blockerb_port: u32,

    /// Benchmark ceiling: keep no map and reach no blocker; answer map
    /// requests from arithmetic (`xseg-bench volume --target null`).
    #[arg(long)]
    null: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.peer.log_level);
    if cli.null {
        return serve_null(&cli);
    }
    let maps = Arc::new(RemoteStore::new(&cli.peer.segment, cli.blockerm_port));
    let data = Arc::new(RemoteStore::new(&cli.peer.segment, cli.blockerb_port));
    let mapper = Arc::new(Mapper::new(maps, data, cli.peer.host_id()));
    let mut peer = match Peer::start(&cli.peer) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mapperd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut handler = handler::MapperHandler::new(mapper, cli.peer.threads as usize);
    match peer.run(&mut handler) {
        Ok(true) => {
            drop(handler);
            drop(peer);
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            log::error!(
                "exiting with requests in flight; the next owner of the port recovers them"
            );
            std::process::exit(1)
        }
        Err(e) => {
            eprintln!("mapperd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the null mapper.
fn serve_null(cli: &Cli) -> ExitCode {
    let mut peer = match Peer::start(&cli.peer) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mapperd: {e}");
            return ExitCode::FAILURE;
        }
    };
    match peer.run(&mut null::NullMapper::default()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mapperd: {e}");
            ExitCode::FAILURE
        }
    }
}
