//! `vlmcd`: the volume composer (the `archipelago_vlmcd` library does the
//! work). Clients send every volume operation here;
//! it asks the mapper (`--mapper-port`) where a range lives and does the
//! data I/O on the data blocker (`--blockerb-port`), forwarding volume
//! management to the mapper.
//!
//! ```text
//! vlmcd --port 4 --mapper-port 3 --blockerb-port 1
//! ```

use std::process::ExitCode;

use archipelago_peer::init_logging;
use archipelago_vlmcd::{Cli, Composer, Ports};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.peer.log_level);
    archipelago_peer::serve("vlmcd", &cli.peer, || {
        Composer::new(Ports {
            mapper: cli.mapper_port,
            blocker: cli.blockerb_port,
        })
    })
}
