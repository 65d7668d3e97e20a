//! The configuration file every Archipelago tool reads.
//!
//! Where it comes from ([`Config::load`]): `--config FILE`, else
//! `$ARCHIPELAGO_CONFIG`, else `/etc/archipelago/archipelago.toml` if it
//! exists, else a built-in default that runs everything on this machine.
//!
//! ```toml
//! [segment]
//! name = "archipelago"        # a value with '/' is a file path
//! ports = 128
//! static_ports = 32
//! requests = 4096
//! max_buffer = "4M"
//! idle_policy = "yield"
//! idle_polls = 100
//! [host]
//! id = "host-a"               # default: the host name
//! [paths]                     # defaults depend on root vs user
//! data_dir = "/var/lib/archipelago"
//! [blockerb]
//! backend = "files"           # files, memory or rados
//! [mapperd]
//! port = 3
//! [supervisor]
//! hang_timeout = 10           # seconds without a PING answer before a restart
//! ```
//!
//! Unknown keys, bad values and port clashes are errors that name the key.
//! The loaded [`Config`] is complete (every default filled in) and
//! serialises back to a file that loads to the same configuration.

use std::path::{Path, PathBuf};

use archipelago_peer::launch::{
    self, Blocker, Common, Composer, Files, Launch, Mapper, Nbd, Rados, Store,
};
use archipelago_protocol::{sizes::parse_size, Role, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use xseg_shm::{IdlePolicy, SegmentConfig, SegmentName};

/// The system-wide configuration file, used if it exists.
pub const SYSTEM_CONFIG: &str = "/etc/archipelago/archipelago.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "ARCHIPELAGO_CONFIG";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// Not TOML, an unknown key or a value of the wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or "configuration".
        origin: String,
        /// The parser's message (names the key).
        message: String,
    },
    /// A value is refused.
    #[error("{key}: {message}")]
    Invalid {
        /// `section.key`.
        key: String,
        /// Why.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where an object store keeps its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One file per object.
    Files,
    /// In memory (lost when the process exits).
    Memory,
    /// A Ceph RADOS pool.
    Rados,
}

/// `[segment]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentSection {
    /// Shared-memory name, or a file path if it contains '/'.
    pub name: String,
    /// Total ports.
    pub ports: u32,
    /// Ports below this are static (the roles' ports).
    pub static_ports: u32,
    /// Request descriptors.
    pub requests: u32,
    /// Total buffer memory in MiB (absent: the default buffer counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_mib: Option<u64>,
    /// Largest buffer (a power of two, e.g. "4M").
    pub max_buffer: String,
    /// Peers' idle policy.
    pub idle_policy: IdlePolicy,
    /// Empty polls before a peer sleeps.
    pub idle_polls: u32,
}

/// `[host]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSection {
    /// Lock-owner identity of this host.
    pub id: String,
}

/// `[paths]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathsSection {
    /// Persistent data.
    pub data_dir: PathBuf,
    /// Pid files, state, sockets.
    pub run_dir: PathBuf,
    /// Logs.
    pub log_dir: PathBuf,
}

/// `[blockerb]` and `[blockerm]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockerSection {
    /// Static port.
    pub port: u32,
    /// Worker threads.
    pub threads: u32,
    /// Object store.
    pub backend: Backend,
    /// Directory of the files backend.
    pub data_dir: PathBuf,
    /// Acknowledge writes only once durable.
    pub sync: bool,
    /// RADOS pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// RADOS configuration file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceph_conf: Option<PathBuf>,
    /// RADOS client id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// RADOS namespace of the objects (locks: `<namespace>.locks`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `[mapperd]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapperSection {
    /// Static port.
    pub port: u32,
    /// Worker threads.
    pub threads: u32,
    /// Decoded map-chunk cache in MiB (mapperd's `--cache-mib`; 0 disables
    /// it; unset: mapperd's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_mib: Option<u64>,
}

/// `[vlmcd]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VlmcSection {
    /// Static port.
    pub port: u32,
    /// Worker threads.
    pub threads: u32,
}

/// `[nbdd]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NbdSection {
    /// Static port.
    pub port: u32,
    /// Unix socket to serve NBD on.
    pub socket: PathBuf,
    /// TCP address to serve NBD on as well; none by default (the Unix
    /// socket only: its permissions decide who may reach the volumes,
    /// while any local user can connect to a TCP port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// `[supervisor]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupervisorSection {
    /// Seconds a role may go without answering a PING before the
    /// supervisor kills and restarts it (0: never).
    pub hang_timeout: u32,
}

/// Default [`SupervisorSection::hang_timeout`]: long enough for a busy
/// peer (its loop thread answers PING between requests), short against a
/// client's patience (an EIO turns a guest's filesystem read-only).
pub const DEFAULT_HANG_TIMEOUT: u32 = 10;

/// A complete, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// `[segment]`.
    pub segment: SegmentSection,
    /// `[host]`.
    pub host: HostSection,
    /// `[paths]`.
    pub paths: PathsSection,
    /// `[blockerb]`.
    pub blockerb: BlockerSection,
    /// `[blockerm]`.
    pub blockerm: BlockerSection,
    /// `[mapperd]`.
    pub mapperd: MapperSection,
    /// `[vlmcd]`.
    pub vlmcd: VlmcSection,
    /// `[nbdd]`.
    pub nbdd: NbdSection,
    /// `[supervisor]`.
    pub supervisor: SupervisorSection,
}

/// What the defaults depend on (injected by tests).
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Effective user id.
    pub uid: u32,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$XDG_DATA_HOME`.
    pub xdg_data_home: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$XDG_STATE_HOME`.
    pub xdg_state_home: Option<PathBuf>,
    /// The host name.
    pub hostname: String,
}

impl Env {
    /// This process's environment.
    pub fn current() -> Env {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Env {
            uid: nix::unistd::geteuid().as_raw(),
            home: var("HOME"),
            xdg_data_home: var("XDG_DATA_HOME"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            xdg_state_home: var("XDG_STATE_HOME"),
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_owned()),
        }
    }

    /// Default `[paths]`: system directories for root, XDG ones otherwise.
    pub fn default_paths(&self) -> PathsSection {
        if self.uid == 0 {
            return PathsSection {
                data_dir: "/var/lib/archipelago".into(),
                run_dir: "/run/archipelago".into(),
                log_dir: "/var/log/archipelago".into(),
            };
        }
        let home = self.home.clone().unwrap_or_else(|| PathBuf::from("/tmp"));
        let sub = |p: &Path| p.join("archipelago");
        PathsSection {
            data_dir: sub(&self
                .xdg_data_home
                .clone()
                .unwrap_or_else(|| home.join(".local/share"))),
            run_dir: match &self.xdg_runtime_dir {
                Some(d) => sub(d),
                None => PathBuf::from(format!("/tmp/archipelago-{}", self.uid)),
            },
            log_dir: sub(&self
                .xdg_state_home
                .clone()
                .unwrap_or_else(|| home.join(".local/state"))),
        }
    }
}

// The file as written: every key optional, unknown keys refused.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    segment: Option<RawSegment>,
    host: Option<RawHost>,
    paths: Option<RawPaths>,
    blockerb: Option<RawBlocker>,
    blockerm: Option<RawBlocker>,
    mapperd: Option<RawMapper>,
    vlmcd: Option<RawVlmc>,
    nbdd: Option<RawNbd>,
    supervisor: Option<RawSupervisor>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    hang_timeout: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSegment {
    name: Option<String>,
    ports: Option<u32>,
    static_ports: Option<u32>,
    requests: Option<u32>,
    buffer_mib: Option<u64>,
    max_buffer: Option<String>,
    idle_policy: Option<String>,
    idle_polls: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    data_dir: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    log_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlocker {
    port: Option<u32>,
    threads: Option<u32>,
    backend: Option<String>,
    data_dir: Option<PathBuf>,
    sync: Option<bool>,
    pool: Option<String>,
    ceph_conf: Option<PathBuf>,
    client_id: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapper {
    port: Option<u32>,
    threads: Option<u32>,
    cache_mib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVlmc {
    port: Option<u32>,
    threads: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNbd {
    port: Option<u32>,
    socket: Option<PathBuf>,
    listen: Option<String>,
}

/// Default worker threads of a peer (the peers' own default).
pub const DEFAULT_THREADS: u32 = 4;

/// Default worker threads of a files-backend blocker: each durable write
/// holds its worker through an `fdatasync`, and more of them in flight let
/// the filesystem's journal commit them together (4 KiB random writes at
/// queue depth 32 through NBD: 16 workers did 1.2x what 4 did; 32 no
/// better than 16).
pub const DEFAULT_FILES_THREADS: u32 = 16;

fn threads(key: &str, t: Option<u32>) -> Result<u32, ConfigError> {
    threads_or(key, t, DEFAULT_THREADS)
}

fn threads_or(key: &str, t: Option<u32>, default: u32) -> Result<u32, ConfigError> {
    match t.unwrap_or(default) {
        t @ 1..=256 => Ok(t),
        t => Err(ConfigError::invalid(
            key,
            format!("{t} is not from 1 to 256"),
        )),
    }
}

fn blocker(
    role: Role,
    raw: Option<RawBlocker>,
    default_dir: PathBuf,
) -> Result<BlockerSection, ConfigError> {
    let r = raw.unwrap_or_default();
    let name = role.name();
    let backend = match r.backend.as_deref().unwrap_or("files") {
        "files" => Backend::Files,
        "memory" => Backend::Memory,
        "rados" => Backend::Rados,
        other => {
            return Err(ConfigError::invalid(
                format!("{name}.backend"),
                format!("unknown backend {other:?} (expected files, memory or rados)"),
            ))
        }
    };
    if backend == Backend::Rados && !matches!(r.pool.as_deref(), Some(p) if !p.is_empty()) {
        return Err(ConfigError::invalid(
            format!("{name}.pool"),
            "required with backend = \"rados\" (an existing pool)",
        ));
    }
    if backend != Backend::Rados {
        for (key, set) in [
            ("pool", r.pool.is_some()),
            ("ceph_conf", r.ceph_conf.is_some()),
            ("client_id", r.client_id.is_some()),
            ("namespace", r.namespace.is_some()),
        ] {
            if set {
                return Err(ConfigError::invalid(
                    format!("{name}.{key}"),
                    "only for backend = \"rados\"",
                ));
            }
        }
    }
    Ok(BlockerSection {
        port: r.port.unwrap_or(role.default_port()),
        threads: threads_or(
            &format!("{name}.threads"),
            r.threads,
            if backend == Backend::Files {
                DEFAULT_FILES_THREADS
            } else {
                DEFAULT_THREADS
            },
        )?,
        backend,
        data_dir: r.data_dir.unwrap_or(default_dir),
        sync: r.sync.unwrap_or(true),
        pool: r.pool,
        ceph_conf: r.ceph_conf,
        client_id: r.client_id,
        namespace: r.namespace,
    })
}

impl Config {
    /// Loads from `explicit`, else `$ARCHIPELAGO_CONFIG`, else
    /// [`SYSTEM_CONFIG`] if it exists, else the built-in default.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let env_path = std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let path = match (explicit, env_path) {
            (Some(p), _) => Some(p.to_path_buf()),
            (None, Some(p)) => Some(p),
            (None, None) => Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()),
        };
        match path {
            None => Ok(Config::default_for_this_user()),
            Some(path) => Config::load_file(&path, &Env::current()),
        }
    }

    /// Loads `path` with defaults from `env`.
    pub fn load_file(path: &Path, env: &Env) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Config::parse(&text, &path.display().to_string(), env)
    }

    /// Parses a configuration (defaults from this process's environment).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str_with(text, &Env::current())
    }

    /// Parses a configuration with defaults from `env`.
    pub fn from_toml_str_with(text: &str, env: &Env) -> Result<Config, ConfigError> {
        Config::parse(text, "configuration", env)
    }

    /// The built-in default for whoever runs this.
    pub fn default_for_this_user() -> Config {
        Config::from_toml_str("").expect("the built-in default is valid")
    }

    fn parse(text: &str, origin: &str, env: &Env) -> Result<Config, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Config::resolve(raw, env)
    }

    fn resolve(raw: RawFile, env: &Env) -> Result<Config, ConfigError> {
        let s = raw.segment.unwrap_or_default();
        let d = SegmentConfig::default();
        let idle_policy = match s.idle_policy.as_deref() {
            None => IdlePolicy::default(),
            Some(p) => p
                .parse()
                .map_err(|e: String| ConfigError::invalid("segment.idle_policy", e))?,
        };
        let segment = SegmentSection {
            name: s.name.unwrap_or_else(|| "archipelago".to_owned()),
            ports: s.ports.unwrap_or(d.ports),
            static_ports: s.static_ports.unwrap_or(d.static_ports),
            requests: s.requests.unwrap_or(d.requests),
            buffer_mib: s.buffer_mib,
            max_buffer: s.max_buffer.unwrap_or_else(|| "4M".to_owned()),
            idle_policy,
            idle_polls: s.idle_polls.unwrap_or(xseg_shm::DEFAULT_IDLE_POLLS),
        };
        if let Err(e) = SegmentName::parse(&segment.name) {
            return Err(ConfigError::invalid("segment.name", e.to_string()));
        }
        let host = HostSection {
            id: raw
                .host
                .and_then(|h| h.id)
                .unwrap_or_else(|| env.hostname.clone()),
        };
        if host.id.is_empty() {
            return Err(ConfigError::invalid("host.id", "must not be empty"));
        }
        let dp = env.default_paths();
        let p = raw.paths.unwrap_or_default();
        let paths = PathsSection {
            data_dir: p.data_dir.unwrap_or(dp.data_dir),
            run_dir: p.run_dir.unwrap_or(dp.run_dir),
            log_dir: p.log_dir.unwrap_or(dp.log_dir),
        };
        let blockerb = blocker(Role::Blockerb, raw.blockerb, paths.data_dir.join("blocks"))?;
        let blockerm = blocker(Role::Blockerm, raw.blockerm, paths.data_dir.join("maps"))?;
        let m = raw.mapperd.unwrap_or_default();
        let mapperd = MapperSection {
            port: m.port.unwrap_or(Role::Mapperd.default_port()),
            threads: threads("mapperd.threads", m.threads)?,
            cache_mib: m.cache_mib,
        };
        let v = raw.vlmcd.unwrap_or_default();
        let vlmcd = VlmcSection {
            port: v.port.unwrap_or(Role::Vlmcd.default_port()),
            threads: threads("vlmcd.threads", v.threads)?,
        };
        let n = raw.nbdd.unwrap_or_default();
        let nbdd = NbdSection {
            port: n.port.unwrap_or(Role::Nbdd.default_port()),
            socket: n.socket.unwrap_or_else(|| paths.run_dir.join("nbd.sock")),
            listen: n.listen,
        };
        if let Some(listen) = &nbdd.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::invalid(
                    "nbdd.listen",
                    format!("{listen:?} is not an address:port"),
                ));
            }
        }
        let config = Config {
            segment,
            host,
            paths,
            blockerb,
            blockerm,
            mapperd,
            vlmcd,
            nbdd,
            supervisor: SupervisorSection {
                hang_timeout: raw
                    .supervisor
                    .and_then(|s| s.hang_timeout)
                    .unwrap_or(DEFAULT_HANG_TIMEOUT),
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.segment;
        let max = xseg_shm::layout::MAX_PORTS;
        if s.ports == 0 || s.ports > max {
            return Err(ConfigError::invalid(
                "segment.ports",
                format!("{} is not from 1 to {max}", s.ports),
            ));
        }
        if s.static_ports > s.ports {
            return Err(ConfigError::invalid(
                "segment.static_ports",
                format!("{} is more than segment.ports {}", s.static_ports, s.ports),
            ));
        }
        if s.requests == 0 || s.requests > xseg_shm::layout::MAX_REQUESTS {
            return Err(ConfigError::invalid(
                "segment.requests",
                format!(
                    "{} is not from 1 to {}",
                    s.requests,
                    xseg_shm::layout::MAX_REQUESTS
                ),
            ));
        }
        if s.buffer_mib == Some(0) {
            return Err(ConfigError::invalid("segment.buffer_mib", "must not be 0"));
        }
        self.segment_config()?;
        let mut seen: Vec<(Role, u32)> = Vec::new();
        for role in Role::ALL {
            let port = self.port(role);
            let key = format!("{role}.port");
            if port >= s.static_ports {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "{port} is not a static port (segment.static_ports is {})",
                        s.static_ports
                    ),
                ));
            }
            if let Some((other, _)) = seen.iter().find(|(_, p)| *p == port) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{port} is also {other}.port"),
                ));
            }
            seen.push((role, port));
        }
        Ok(())
    }

    /// The static port of `role`.
    pub fn port(&self, role: Role) -> u32 {
        match role {
            Role::Blockerb => self.blockerb.port,
            Role::Blockerm => self.blockerm.port,
            Role::Mapperd => self.mapperd.port,
            Role::Vlmcd => self.vlmcd.port,
            Role::Nbdd => self.nbdd.port,
        }
    }

    /// The segment's name.
    pub fn segment_name(&self) -> SegmentName {
        SegmentName::parse(&self.segment.name).expect("validated")
    }

    /// The layout of the segment to create.
    pub fn segment_config(&self) -> Result<SegmentConfig, ConfigError> {
        let s = &self.segment;
        let max = parse_size(&s.max_buffer)
            .map_err(|e| ConfigError::invalid("segment.max_buffer", e.to_string()))?;
        let mut config = SegmentConfig {
            ports: s.ports,
            static_ports: s.static_ports,
            requests: s.requests,
            protocol_version: PROTOCOL_VERSION,
            ..SegmentConfig::default()
        }
        .with_max_buffer(max)
        .map_err(|e| ConfigError::invalid("segment.max_buffer", e.to_string()))?;
        if let Some(mib) = s.buffer_mib {
            // Scale the default counts to the memory asked for, keeping at
            // least one buffer per class.
            let total: u64 = config
                .buffer_counts
                .iter()
                .enumerate()
                .map(|(c, &n)| (4096u64 << c) * u64::from(n))
                .sum();
            let want = mib << 20;
            for (c, n) in config.buffer_counts.iter_mut().enumerate() {
                let scaled = (u128::from(*n) * u128::from(want) / u128::from(total.max(1))) as u64;
                let floor = if (4096u64 << c) <= want { 1 } else { 0 };
                *n = scaled.clamp(floor, u64::from(u32::MAX)) as u32;
            }
            if config.buffer_counts.iter().all(|&n| n == 0) {
                return Err(ConfigError::invalid(
                    "segment.buffer_mib",
                    format!("{mib} MiB holds no buffer"),
                ));
            }
        }
        Ok(config)
    }

    /// How to start `role`'s peer: its launch description.
    pub fn launch(&self, role: Role) -> Launch {
        let threads = match role {
            Role::Blockerb => self.blockerb.threads,
            Role::Blockerm => self.blockerm.threads,
            Role::Mapperd => self.mapperd.threads,
            Role::Vlmcd => self.vlmcd.threads,
            Role::Nbdd => DEFAULT_THREADS,
        };
        let common = Common {
            threads: Some(threads),
            idle_policy: Some(self.segment.idle_policy),
            idle_polls: Some(self.segment.idle_polls),
            host_id: Some(self.host.id.clone()),
            ..Common::new(&self.segment.name, self.port(role))
        };
        match role {
            Role::Blockerb | Role::Blockerm => {
                let b = if role == Role::Blockerb {
                    &self.blockerb
                } else {
                    &self.blockerm
                };
                let store = match b.backend {
                    Backend::Memory => Store::Memory,
                    Backend::Files => Store::Files(Files {
                        sync: b.sync,
                        ..Files::new(&b.data_dir)
                    }),
                    Backend::Rados => Store::Rados(Rados {
                        ceph_conf: b.ceph_conf.clone(),
                        client_id: b.client_id.clone(),
                        namespace: b.namespace.clone(),
                        // Its address is registered under the host as this
                        // member, so that locks record (and breaks fence) both.
                        member: Some(role.name().to_owned()),
                        ..Rados::new(b.pool.clone().expect("loading requires a pool for rados"))
                    }),
                };
                Blocker { common, store }.into()
            }
            Role::Mapperd => Mapper {
                common,
                blockerm_port: self.blockerm.port,
                blockerb_port: self.blockerb.port,
                cache_mib: self.mapperd.cache_mib,
                null: false,
                // The data blocker's mode is the volumes' (see the
                // mapper's write-back mode).
                write_back: self.blockerb.backend == Backend::Files && !self.blockerb.sync,
            }
            .into(),
            Role::Vlmcd => Composer {
                common,
                mapper_port: self.mapperd.port,
                blockerb_port: self.blockerb.port,
            }
            .into(),
            Role::Nbdd => Nbd {
                common,
                vlmcd_port: self.vlmcd.port,
                mapperd_port: self.mapperd.port,
                mapped_file: self.nbd_mapped_file(),
                status_file: Some(self.nbd_clients_file()),
                socket: Some(self.nbdd.socket.clone()),
                listen: self.nbdd.listen.clone(),
                queue_depth: None,
                write_timeout: None,
                handshake_timeout: None,
            }
            .into(),
        }
    }

    /// The command line (without the binary) of `role`'s peer, as text
    /// (see [`Config::launch`]).
    pub fn peer_args(&self, role: Role) -> Vec<String> {
        self.launch(role)
            .args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// `<run_dir>/nbd-mapped.json`: the volumes nbdd serves.
    pub fn nbd_mapped_file(&self) -> PathBuf {
        self.paths.run_dir.join("nbd-mapped.json")
    }

    /// `<run_dir>/nbd-clients.json`: nbdd's connected clients.
    pub fn nbd_clients_file(&self) -> PathBuf {
        self.paths.run_dir.join("nbd-clients.json")
    }

    /// The name of `role`'s binary.
    pub fn binary(role: Role) -> &'static str {
        launch::binary(role)
    }

    /// The configuration as TOML (loads back to the same configuration).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a configuration serialises")
    }
}

pub mod mapped;

#[cfg(test)]
mod tests;
