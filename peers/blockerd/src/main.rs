//! `blockerd`: serves an object store over xseg (the `archipelago_blockerd`
//! library does the work). Two instances play the original's two roles:
//! data objects (blockerb, port 1 by default) and maps and locks
//! (blockerm, port 2).
//!
//! ```text
//! blockerd --port 1 --backend files --data-dir /var/lib/archipelago/blocks
//! blockerd --port 2 --backend memory
//! blockerd --port 1 --backend rados --pool blocks --member blockerb --host-id host-a
//! ```
//!
//! With `--backend rados` the store is a RADOS pool: `--pool` (it must
//! exist), `--ceph-conf` (default: librados' search, `$CEPH_CONF` then
//! `/etc/ceph/ceph.conf`), `--client-id` (the cephx user, default
//! `admin`). The client registers its address under `--host-id` as
//! `--member` so that a lock this host takes records every client of the
//! instance, and breaking it fences them all.

use std::process::ExitCode;

use archipelago_blockerd::{Blocker, Cli, NullBlocker};
use archipelago_peer::init_logging;
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.peer.log_level);
    let threads = cli.peer.threads as usize;
    match cli.store.open(cli.peer.host_id()) {
        Ok(Some(store)) => {
            archipelago_peer::serve("blockerd", &cli.peer, || Blocker::new(store, threads))
        }
        Ok(None) => archipelago_peer::serve("blockerd", &cli.peer, || NullBlocker),
        Err(e) => {
            eprintln!("blockerd: {e}");
            ExitCode::FAILURE
        }
    }
}
