//! The skeleton every Archipelago peer runs, so that `blockerd`, `mapperd`,
//! `vlmcd` and `nbdd` hold only their own logic.
//!
//! - [`PeerArgs`]: the flags every peer shares (segment, port, threads,
//!   requests in flight, idle policy, host id, pid file, log level), parsed
//!   and validated by clap; each peer flattens them into its own flags.
//! - [`Peer::start`]: attaches to the segment (checking the protocol
//!   version), binds the port (recovering it first if its owner died),
//!   writes the pid file and installs the SIGTERM/SIGINT handlers.
//! - [`Peer::run`]: the loop. It accepts requests up to the in-flight
//!   bound, answers PING and STATS itself, hands every other request to the
//!   peer's [`Handler`], and completes what the handler finishes, on the
//!   spot or later from a worker thread through a [`Completer`]. On a
//!   signal it stops accepting, lets what is in flight finish within the
//!   drain deadline, leaves queued requests for the port's next owner, and
//!   returns; dropping the `Peer` unbinds the port.
//! - [`serve`]: a peer binary's `main` after parsing its flags: start,
//!   run, and the exit code.
//! - [`launch`]: how to start each peer (its binary and command line), as
//!   one typed description per peer, for whoever starts peers
//!   (`archipelago`, `xseg-bench volume`, the end-to-end tests).

#![warn(missing_docs)]

mod args;
pub mod launch;
mod runtime;
mod workers;

pub use args::{init_logging, PeerArgs};
pub use runtime::{Completer, Ctx, Done, Handler, Peer, PeerError};
pub use workers::Workers;

/// Starts the peer (`args`), builds its handler with `make` (after the
/// port is bound, so a second instance fails before starting workers),
/// serves until a shutdown signal and returns the process's exit code.
/// Errors go to stderr prefixed with `name`. If the drain deadline passed
/// with requests still held, the process exits with status 1 at once,
/// without unbinding, so that the port's next owner recovers them rather
/// than have them failed under the handler's workers.
pub fn serve<H: Handler>(
    name: &str,
    args: &PeerArgs,
    make: impl FnOnce() -> H,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let mut peer = match Peer::start(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut handler = make();
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
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
