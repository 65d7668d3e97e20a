//! `nbdd`: serves the mapped volumes over NBD; the `archipelago_nbdd`
//! library does the work (the protocol, the connections, the bridge to
//! vlmcd and mapperd).
//!
//! ```text
//! nbdd --port 5 --vlmcd-port 4 --mapperd-port 3 \
//!      --mapped-file /run/archipelago/nbd-mapped.json \
//!      --socket /run/archipelago/nbd.sock --listen 127.0.0.1:10809
//! ```

use std::process::ExitCode;
use std::time::Duration;

use archipelago_nbdd::{Cli, Listeners, Settings};
use archipelago_peer::init_logging;
use clap::Parser;

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
