//! How to start each peer: one typed description per peer, from which its
//! binary's name and its command line are produced. `archipelago` (from
//! the configuration), `xseg-bench volume` and the end-to-end tests all
//! start peers through these; each peer's crate has a test that parses
//! the command lines made here with the peer's own flags (its `Cli`) and
//! checks they say what the description says, so a renamed or changed
//! flag fails a test rather than a launch.
//!
//! A field left `None` (or `false`) is not written: the peer's own default
//! holds. The flags come in a fixed order: the common ones
//! ([`Common`]), then the role's.
//!
//! ```
//! use archipelago_peer::launch::{Blocker, Common, Launch, Store};
//! let b = Blocker {
//!     common: Common::new("/tmp/seg", 1),
//!     store: Store::Memory,
//! };
//! let l = Launch::from(b);
//! assert_eq!(l.binary(), "blockerd");
//! assert_eq!(
//!     l.args(),
//!     ["--segment", "/tmp/seg", "--port", "1", "--backend", "memory"]
//! );
//! ```

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use archipelago_protocol::Role;
use xseg_shm::IdlePolicy;

use crate::PeerArgs;

/// The name of the binary that plays `role`.
pub fn binary(role: Role) -> &'static str {
    match role {
        Role::Blockerb | Role::Blockerm => Blocker::BINARY,
        Role::Mapperd => Mapper::BINARY,
        Role::Vlmcd => Composer::BINARY,
        Role::Nbdd => Nbd::BINARY,
    }
}

/// A command line being written.
#[derive(Default)]
struct Argv(Vec<OsString>);

impl Argv {
    fn flag(&mut self, name: &str) {
        self.0.push(name.into());
    }

    fn opt(&mut self, name: &str, value: impl AsRef<OsStr>) {
        self.0.push(name.into());
        self.0.push(value.as_ref().to_owned());
    }

    fn num(&mut self, name: &str, value: &impl ToString) {
        self.opt(name, value.to_string());
    }

    fn opt_num<T: ToString>(&mut self, name: &str, value: &Option<T>) {
        if let Some(v) = value {
            self.num(name, v);
        }
    }

    fn opt_os<T: AsRef<OsStr>>(&mut self, name: &str, value: &Option<T>) {
        if let Some(v) = value {
            self.opt(name, v);
        }
    }
}

/// The options every peer takes ([`PeerArgs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// `--segment`: a shared-memory name, or a path containing '/'.
    pub segment: String,
    /// `--port`: the static port to serve.
    pub port: u32,
    /// `--threads`: worker threads.
    pub threads: Option<u32>,
    /// `--idle-policy`.
    pub idle_policy: Option<IdlePolicy>,
    /// `--idle-polls`: empty polls before sleeping.
    pub idle_polls: Option<u32>,
    /// `--host-id`: this host as a lock owner (default: the host name).
    pub host_id: Option<String>,
    /// `--max-inflight`: most requests served at once.
    pub max_inflight: Option<u32>,
    /// `--pidfile`.
    pub pidfile: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<log::Level>,
    /// `--drain-timeout`: seconds to drain after SIGTERM/SIGINT.
    pub drain_timeout: Option<u64>,
}

impl Common {
    /// A peer on `port` of `segment`, everything else at its default.
    pub fn new(segment: impl Into<String>, port: u32) -> Common {
        Common {
            segment: segment.into(),
            port,
            threads: None,
            idle_policy: None,
            idle_polls: None,
            host_id: None,
            max_inflight: None,
            pidfile: None,
            log_level: None,
            drain_timeout: None,
        }
    }

    fn write(&self, a: &mut Argv) {
        a.opt("--segment", &self.segment);
        a.num("--port", &self.port);
        a.opt_num("--threads", &self.threads);
        a.opt_num("--idle-policy", &self.idle_policy);
        a.opt_num("--idle-polls", &self.idle_polls);
        a.opt_os("--host-id", &self.host_id);
        a.opt_num("--max-inflight", &self.max_inflight);
        a.opt_os("--pidfile", &self.pidfile);
        if let Some(l) = self.log_level {
            a.opt("--log-level", l.as_str().to_ascii_lowercase());
        }
        a.opt_num("--drain-timeout", &self.drain_timeout);
    }

    /// These options as a peer parsed them: every field set (`host_id`
    /// and `pidfile` stay unset where the flags left them out).
    pub fn parsed(args: &PeerArgs) -> Common {
        Common {
            segment: args.segment.clone(),
            port: args.port,
            threads: Some(args.threads),
            idle_policy: Some(args.idle_policy),
            idle_polls: Some(args.idle_polls),
            host_id: args.host_id.clone(),
            max_inflight: Some(args.max_inflight),
            pidfile: args.pidfile.clone(),
            log_level: args.log_level.parse().ok(),
            drain_timeout: Some(args.drain_timeout),
        }
    }

    /// This description with every field left out at the peer's default:
    /// what [`Common::parsed`] gives for the command line it makes.
    pub fn resolved(&self) -> Common {
        use clap::{Args, FromArgMatches};
        let port = self.port.to_string();
        let defaults = PeerArgs::augment_args(clap::Command::new("peer"))
            .try_get_matches_from(["peer", "--port", &port])
            .and_then(|m| PeerArgs::from_arg_matches(&m))
            .expect("the defaults parse");
        let d = Common::parsed(&defaults);
        Common {
            segment: self.segment.clone(),
            port: self.port,
            threads: self.threads.or(d.threads),
            idle_policy: self.idle_policy.or(d.idle_policy),
            idle_polls: self.idle_polls.or(d.idle_polls),
            host_id: self.host_id.clone(),
            max_inflight: self.max_inflight.or(d.max_inflight),
            pidfile: self.pidfile.clone(),
            log_level: self.log_level.or(d.log_level),
            drain_timeout: self.drain_timeout.or(d.drain_timeout),
        }
    }
}

/// Where a blocker keeps its objects (`--backend` and its options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// `--backend files`.
    Files(Files),
    /// `--backend memory`.
    Memory,
    /// `--backend rados`.
    Rados(Rados),
    /// `--backend null`: stores nothing (the pipeline's ceiling).
    Null,
}

/// The files backend's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// `--data-dir`.
    pub dir: PathBuf,
    /// Acknowledge writes only once durable (`false`: `--no-sync`).
    pub sync: bool,
    /// `--fd-cache`: open files kept cached.
    pub fd_cache: Option<usize>,
}

impl Files {
    /// Durable writes under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Files {
        Files {
            dir: dir.into(),
            sync: true,
            fd_cache: None,
        }
    }
}

/// The RADOS backend's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rados {
    /// `--pool`.
    pub pool: String,
    /// `--ceph-conf`.
    pub ceph_conf: Option<PathBuf>,
    /// `--client-id`: the cephx user.
    pub client_id: Option<String>,
    /// `--namespace`.
    pub namespace: Option<String>,
    /// `--member`: this blocker's role in the host's instance.
    pub member: Option<String>,
    /// `--op-timeout`, seconds.
    pub op_timeout: Option<u64>,
    /// `--fence-quarantine`, seconds.
    pub fence_quarantine: Option<u64>,
}

impl Rados {
    /// Pool `pool`, everything else at the blocker's default.
    pub fn new(pool: impl Into<String>) -> Rados {
        Rados {
            pool: pool.into(),
            ceph_conf: None,
            client_id: None,
            namespace: None,
            member: None,
            op_timeout: None,
            fence_quarantine: None,
        }
    }
}

/// `blockerd`: an object store served over xseg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// The common options.
    pub common: Common,
    /// The store.
    pub store: Store,
}

impl Blocker {
    /// The binary.
    pub const BINARY: &'static str = "blockerd";

    fn write(&self, a: &mut Argv) {
        match &self.store {
            Store::Files(f) => {
                a.opt("--backend", "files");
                a.opt("--data-dir", &f.dir);
                if !f.sync {
                    a.flag("--no-sync");
                }
                a.opt_num("--fd-cache", &f.fd_cache);
            }
            Store::Memory => a.opt("--backend", "memory"),
            Store::Rados(r) => {
                a.opt("--backend", "rados");
                a.opt("--pool", &r.pool);
                a.opt_os("--ceph-conf", &r.ceph_conf);
                a.opt_os("--client-id", &r.client_id);
                a.opt_os("--namespace", &r.namespace);
                a.opt_os("--member", &r.member);
                a.opt_num("--op-timeout", &r.op_timeout);
                a.opt_num("--fence-quarantine", &r.fence_quarantine);
            }
            Store::Null => a.opt("--backend", "null"),
        }
    }
}

/// `mapperd`: volume maps over two blockers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapper {
    /// The common options.
    pub common: Common,
    /// `--blockerm-port`: the blocker of maps and locks.
    pub blockerm_port: u32,
    /// `--blockerb-port`: the blocker of volume data.
    pub blockerb_port: u32,
    /// `--cache-mib`: the map-chunk cache.
    pub cache_mib: Option<u64>,
    /// `--null`: the benchmark's null mapper.
    pub null: bool,
    /// `--write-back`: the data blocker acknowledges writes before they
    /// are durable (files, `sync = false`); commits wait for FLUSH too.
    pub write_back: bool,
}

impl Mapper {
    /// The binary.
    pub const BINARY: &'static str = "mapperd";

    fn write(&self, a: &mut Argv) {
        a.num("--blockerm-port", &self.blockerm_port);
        a.num("--blockerb-port", &self.blockerb_port);
        a.opt_num("--cache-mib", &self.cache_mib);
        if self.null {
            a.flag("--null");
        }
        if self.write_back {
            a.flag("--write-back");
        }
    }
}

/// `vlmcd`: the volume composer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composer {
    /// The common options.
    pub common: Common,
    /// `--mapper-port`.
    pub mapper_port: u32,
    /// `--blockerb-port`: the blocker of volume data.
    pub blockerb_port: u32,
}

impl Composer {
    /// The binary.
    pub const BINARY: &'static str = "vlmcd";

    fn write(&self, a: &mut Argv) {
        a.num("--mapper-port", &self.mapper_port);
        a.num("--blockerb-port", &self.blockerb_port);
    }
}

/// `nbdd`: the mapped volumes over NBD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nbd {
    /// The common options.
    pub common: Common,
    /// `--vlmcd-port`.
    pub vlmcd_port: u32,
    /// `--mapperd-port`.
    pub mapperd_port: u32,
    /// `--mapped-file`: the mapped set.
    pub mapped_file: PathBuf,
    /// `--status-file`: the connected clients.
    pub status_file: Option<PathBuf>,
    /// `--socket`: the Unix socket to serve on.
    pub socket: Option<PathBuf>,
    /// `--listen`: the TCP address to serve on.
    pub listen: Option<String>,
    /// `--queue-depth`: requests in flight per connection.
    pub queue_depth: Option<usize>,
    /// `--write-timeout`, seconds.
    pub write_timeout: Option<u64>,
    /// `--handshake-timeout`, seconds.
    pub handshake_timeout: Option<u64>,
}

impl Nbd {
    /// The binary.
    pub const BINARY: &'static str = "nbdd";

    fn write(&self, a: &mut Argv) {
        a.num("--vlmcd-port", &self.vlmcd_port);
        a.num("--mapperd-port", &self.mapperd_port);
        a.opt("--mapped-file", &self.mapped_file);
        a.opt_os("--status-file", &self.status_file);
        a.opt_os("--socket", &self.socket);
        a.opt_os("--listen", &self.listen);
        a.opt_num("--queue-depth", &self.queue_depth);
        a.opt_num("--write-timeout", &self.write_timeout);
        a.opt_num("--handshake-timeout", &self.handshake_timeout);
    }
}

/// How to start one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// A blocker.
    Blocker(Blocker),
    /// The mapper.
    Mapper(Mapper),
    /// The composer.
    Composer(Composer),
    /// The NBD server.
    Nbd(Nbd),
}

impl Launch {
    /// The binary's name.
    pub fn binary(&self) -> &'static str {
        match self {
            Launch::Blocker(_) => Blocker::BINARY,
            Launch::Mapper(_) => Mapper::BINARY,
            Launch::Composer(_) => Composer::BINARY,
            Launch::Nbd(_) => Nbd::BINARY,
        }
    }

    /// The common options.
    pub fn common(&self) -> &Common {
        match self {
            Launch::Blocker(l) => &l.common,
            Launch::Mapper(l) => &l.common,
            Launch::Composer(l) => &l.common,
            Launch::Nbd(l) => &l.common,
        }
    }

    /// The common options, to change.
    pub fn common_mut(&mut self) -> &mut Common {
        match self {
            Launch::Blocker(l) => &mut l.common,
            Launch::Mapper(l) => &mut l.common,
            Launch::Composer(l) => &mut l.common,
            Launch::Nbd(l) => &mut l.common,
        }
    }

    /// The command line, without the binary.
    pub fn args(&self) -> Vec<OsString> {
        let mut a = Argv::default();
        self.common().write(&mut a);
        match self {
            Launch::Blocker(l) => l.write(&mut a),
            Launch::Mapper(l) => l.write(&mut a),
            Launch::Composer(l) => l.write(&mut a),
            Launch::Nbd(l) => l.write(&mut a),
        }
        a.0
    }

    /// The command line with the binary first (what a peer's parser takes).
    pub fn argv(&self) -> Vec<OsString> {
        let mut v = vec![OsString::from(self.binary())];
        v.extend(self.args());
        v
    }

    /// The command that starts the peer from the binary in `bin_dir`.
    pub fn command(&self, bin_dir: &Path) -> Command {
        let mut c = Command::new(bin_dir.join(self.binary()));
        c.args(self.args());
        c
    }
}

impl From<Blocker> for Launch {
    fn from(l: Blocker) -> Launch {
        Launch::Blocker(l)
    }
}

impl From<Mapper> for Launch {
    fn from(l: Mapper) -> Launch {
        Launch::Mapper(l)
    }
}

impl From<Composer> for Launch {
    fn from(l: Composer) -> Launch {
        Launch::Composer(l)
    }
}

impl From<Nbd> for Launch {
    fn from(l: Nbd) -> Launch {
        Launch::Nbd(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        peer: PeerArgs,
        /// Stands for a role's own flags.
        #[arg(long)]
        backend: Option<String>,
    }

    fn parse(l: &Launch) -> Cli {
        Cli::try_parse_from(l.argv()).unwrap_or_else(|e| panic!("{:?}: {e}", l.args()))
    }

    fn launch(common: Common) -> Launch {
        Launch::from(Blocker {
            common,
            store: Store::Memory,
        })
    }

    /// Every common option reaches `PeerArgs` as described, set or left to
    /// the default.
    #[test]
    fn the_common_options_parse_as_described() {
        let full = Common {
            segment: "/tmp/seg-x".into(),
            port: 7,
            threads: Some(9),
            idle_policy: Some(IdlePolicy::Sleep),
            idle_polls: Some(11),
            host_id: Some("h-1".into()),
            max_inflight: Some(13),
            pidfile: Some("/run/p.pid".into()),
            log_level: Some(log::Level::Trace),
            drain_timeout: Some(17),
        };
        for c in [full, Common::new("seg", 3)] {
            let cli = parse(&launch(c.clone()));
            assert_eq!(Common::parsed(&cli.peer), c.resolved());
            assert_eq!(cli.backend.as_deref(), Some("memory"));
        }
        let d = Common::new("seg", 3).resolved();
        assert_eq!(
            (d.threads, d.idle_policy),
            (Some(4), Some(IdlePolicy::Yield))
        );
        for level in [
            log::Level::Error,
            log::Level::Warn,
            log::Level::Info,
            log::Level::Debug,
        ] {
            let mut c = Common::new("s", 1);
            c.log_level = Some(level);
            assert_eq!(
                Common::parsed(&parse(&launch(c)).peer).log_level,
                Some(level)
            );
        }
    }

    #[test]
    fn binaries_and_command() {
        assert_eq!(binary(Role::Blockerm), "blockerd");
        assert_eq!(binary(Role::Vlmcd), "vlmcd");
        let l = Launch::from(Composer {
            common: Common::new("s", 4),
            mapper_port: 3,
            blockerb_port: 1,
        });
        let c = l.command(Path::new("/opt/bin"));
        assert_eq!(c.get_program(), "/opt/bin/vlmcd");
        let args: Vec<&OsStr> = c.get_args().collect();
        assert_eq!(
            args,
            [
                "--segment",
                "s",
                "--port",
                "4",
                "--mapper-port",
                "3",
                "--blockerb-port",
                "1"
            ]
        );
    }
}
