//! `mapperd`: serves volume maps over xseg (the `archipelago_mapperd`
//! library does the work). Maps and locks live on the
//! blocker at `--blockerm-port`, volume data on the one at
//! `--blockerb-port`; the mapper reaches both through the segment.
//!
//! ```text
//! mapperd --port 3 --blockerb-port 1 --blockerm-port 2 --host-id host-a
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use archipelago_client::RemoteStore;
use archipelago_mapper::Mapper;
use archipelago_mapperd::{Cli, MapperHandler, NullMapper};
use archipelago_peer::init_logging;
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.peer.log_level);
    if cli.null {
        return serve_null(&cli);
    }
    let maps = Arc::new(RemoteStore::new(&cli.peer.segment, cli.blockerm_port));
    let data = Arc::new(RemoteStore::new(&cli.peer.segment, cli.blockerb_port));
    let mut mapper = Mapper::new(maps, data, cli.peer.host_id());
    if let Some(mib) = cli.cache_mib {
        let bytes = mib.saturating_mul(1 << 20);
        mapper = mapper.with_cache_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    let mapper = Arc::new(mapper);
    let threads = cli.peer.threads as usize;
    archipelago_peer::serve("mapperd", &cli.peer, || MapperHandler::new(mapper, threads))
}

/// Runs the null mapper.
fn serve_null(cli: &Cli) -> ExitCode {
    archipelago_peer::serve("mapperd", &cli.peer, NullMapper::default)
}
