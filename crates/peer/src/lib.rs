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

#![warn(missing_docs)]

mod args;
mod runtime;
mod workers;

pub use args::{init_logging, PeerArgs};
pub use runtime::{Completer, Ctx, Done, Handler, Peer, PeerError};
pub use workers::Workers;
