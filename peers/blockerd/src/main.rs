//! `blockerd`: serves an object store over xseg. Two instances play the
//! original's two roles: data objects (blockerb, port 1 by default) and
//! maps and locks (blockerm, port 2).
//!
//! ```text
//! blockerd --port 1 --backend files --data-dir /var/lib/archipelago/blocks
//! blockerd --port 2 --backend memory
//! blockerd --port 1 --backend rados --pool blocks --member blockerb --host-id host-a
//! ```
//!
//! With `--backend rados` the store is a [`RadosStore`]: `--pool` (it must
//! exist), `--ceph-conf` (default: librados' search, `$CEPH_CONF` then
//! `/etc/ceph/ceph.conf`), `--client-id` (the cephx user, default
//! `admin`). The client registers its address under `--host-id` as
//! `--member` so that a lock this host takes records every client of the
//! instance, and breaking it fences them all.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use archipelago_blocker::{Blocker, NullBlocker};
use archipelago_peer::{init_logging, PeerArgs};
use archipelago_rados::{Instance, RadosOptions, RadosStore};
use archipelago_store::{FileStore, FileStoreOptions, MemoryStore, ObjectStore};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// One file per object under --data-dir.
    Files,
    /// In memory: lost when the process exits (tests, benchmarks).
    Memory,
    /// A Ceph RADOS pool (--pool).
    Rados,
    /// Stores nothing: reads and writes succeed at once, reads return
    /// garbage. The pipeline's ceiling, for `xseg-bench --target null`.
    Null,
}

/// Serve an object store (files, memory, a RADOS pool, or null) over xseg.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,

    /// Where objects live.
    #[arg(long, value_enum, default_value_t = Backend::Files)]
    backend: Backend,

    /// Directory of the files backend (created if missing).
    #[arg(long, value_name = "DIR", required_if_eq("backend", "files"))]
    data_dir: Option<PathBuf>,

    /// Write-back: acknowledge writes from the page cache (SYNC, FLUSH and
    /// FUA writes still reach stable storage).
    #[arg(long)]
    no_sync: bool,

    /// Open files kept cached (files backend).
    #[arg(long, default_value_t = 256)]
    fd_cache: usize,

    /// The RADOS pool (rados backend; it must exist).
    #[arg(long, required_if_eq("backend", "rados"))]
    pool: Option<String>,

    /// The Ceph configuration file (rados backend; default: $CEPH_CONF,
    /// then /etc/ceph/ceph.conf).
    #[arg(long, value_name = "FILE")]
    ceph_conf: Option<PathBuf>,

    /// The cephx user, without "client." (rados backend; default admin).
    #[arg(long)]
    client_id: Option<String>,

    /// This blocker's role in the host's instance (rados backend), e.g.
    /// blockerb or blockerm: its address is registered under the host id.
    #[arg(long, default_value = "blocker")]
    member: String,

    /// The RADOS namespace of the objects (rados backend; default: the
    /// pool's default namespace). Locks live in "<namespace>.locks".
    #[arg(long, default_value = "")]
    namespace: String,

    /// Seconds after which a stuck or full cluster fails a request
    /// (rados backend).
    #[arg(long, default_value_t = 30)]
    op_timeout: u64,

    /// Seconds a fenced blocker (its lock broken by another host, its
    /// client blocklisted) fails every request before reconnecting as a
    /// new client (rados backend; a lock request reconnects at once).
    #[arg(long, default_value_t = 10)]
    fence_quarantine: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.peer.log_level);
    let store: Arc<dyn ObjectStore> = match cli.backend {
        Backend::Null => return serve_null(&cli),
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::Files => {
            let dir = cli
                .data_dir
                .clone()
                .expect("clap requires --data-dir with files");
            let options = FileStoreOptions {
                sync: !cli.no_sync,
                fd_cache: cli.fd_cache,
            };
            match FileStore::open(&dir, options) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    eprintln!("blockerd: {}: {e}", dir.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        Backend::Rados => {
            let mut o =
                RadosOptions::new(cli.pool.clone().expect("clap requires --pool with rados"));
            o.ceph_conf = cli.ceph_conf.clone();
            o.client_id = cli.client_id.clone();
            o.namespace = cli.namespace.clone();
            o.op_timeout = std::time::Duration::from_secs(cli.op_timeout.max(1));
            o.fence_quarantine = std::time::Duration::from_secs(cli.fence_quarantine);
            o.instance = Some(Instance {
                host: cli.peer.host_id(),
                member: cli.member.clone(),
            });
            match RadosStore::connect(o) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    eprintln!("blockerd: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let threads = cli.peer.threads as usize;
    archipelago_peer::serve("blockerd", &cli.peer, || Blocker::new(store, threads))
}

/// Runs the null blocker (no store, no workers).
fn serve_null(cli: &Cli) -> ExitCode {
    archipelago_peer::serve("blockerd", &cli.peer, || NullBlocker)
}
