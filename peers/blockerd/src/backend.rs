//! The store a blocker serves: which backend, and its options as `blockerd`
//! takes them on its command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use archipelago_rados::{Instance, RadosOptions, RadosStore};
use archipelago_store::{FileStore, FileStoreOptions, MemoryStore, ObjectStore};
use clap::{Args, ValueEnum};

/// Where objects live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
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

/// The backend and its options.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Where objects live.
    #[arg(long, value_enum, default_value_t = Backend::Files)]
    pub backend: Backend,

    /// Directory of the files backend (created if missing).
    #[arg(long, value_name = "DIR", required_if_eq("backend", "files"))]
    pub data_dir: Option<PathBuf>,

    /// Write-back: acknowledge writes from the page cache (SYNC, FLUSH and
    /// FUA writes still reach stable storage).
    #[arg(long)]
    pub no_sync: bool,

    /// Open files kept cached (files backend).
    #[arg(long, default_value_t = 256)]
    pub fd_cache: usize,

    /// The RADOS pool (rados backend; it must exist).
    #[arg(long, required_if_eq("backend", "rados"))]
    pub pool: Option<String>,

    /// The Ceph configuration file (rados backend; default: $CEPH_CONF,
    /// then /etc/ceph/ceph.conf).
    #[arg(long, value_name = "FILE")]
    pub ceph_conf: Option<PathBuf>,

    /// The cephx user, without "client." (rados backend; default admin).
    #[arg(long)]
    pub client_id: Option<String>,

    /// This blocker's role in the host's instance (rados backend), e.g.
    /// blockerb or blockerm: its address is registered under the host id.
    #[arg(long, default_value = "blocker")]
    pub member: String,

    /// The RADOS namespace of the objects (rados backend; default: the
    /// pool's default namespace). Locks live in "NAMESPACE.locks".
    #[arg(long, default_value = "")]
    pub namespace: String,

    /// Seconds after which a stuck or full cluster fails a request
    /// (rados backend).
    #[arg(long, default_value_t = 30)]
    pub op_timeout: u64,

    /// Seconds a fenced blocker (its lock broken by another host, its
    /// client blocklisted) fails every request before reconnecting as a
    /// new client (rados backend; a lock request reconnects at once).
    #[arg(long, default_value_t = 10)]
    pub fence_quarantine: u64,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A required option is missing.
    #[error("--backend {backend}: give {option}")]
    Missing {
        /// The backend.
        backend: &'static str,
        /// The missing option.
        option: &'static str,
    },
    /// The files backend's directory.
    #[error("{dir}: {cause}")]
    Files {
        /// The directory.
        dir: String,
        /// The cause.
        cause: String,
    },
    /// The cluster.
    #[error("{0}")]
    Rados(String),
}

impl BackendArgs {
    /// Opens the store; `None` for the null backend (no store at all).
    /// `host` is this host's id, under which a RADOS client registers.
    pub fn open(&self, host: String) -> Result<Option<Arc<dyn ObjectStore>>, OpenError> {
        Ok(Some(match self.backend {
            Backend::Null => return Ok(None),
            Backend::Memory => Arc::new(MemoryStore::new()),
            Backend::Files => {
                let dir = self.data_dir.as_ref().ok_or(OpenError::Missing {
                    backend: "files",
                    option: "--data-dir",
                })?;
                let options = FileStoreOptions {
                    sync: !self.no_sync,
                    fd_cache: self.fd_cache,
                };
                Arc::new(FileStore::open(dir, options).map_err(|e| OpenError::Files {
                    dir: dir.display().to_string(),
                    cause: e.to_string(),
                })?)
            }
            Backend::Rados => {
                let pool = self.pool.clone().ok_or(OpenError::Missing {
                    backend: "rados",
                    option: "--pool",
                })?;
                let mut o = RadosOptions::new(pool);
                o.ceph_conf = self.ceph_conf.clone();
                o.client_id = self.client_id.clone();
                o.namespace = self.namespace.clone();
                o.op_timeout = Duration::from_secs(self.op_timeout.max(1));
                o.fence_quarantine = Duration::from_secs(self.fence_quarantine);
                o.instance = Some(Instance {
                    host,
                    member: self.member.clone(),
                });
                Arc::new(RadosStore::connect(o).map_err(|e| OpenError::Rados(e.to_string()))?)
            }
        }))
    }
}
