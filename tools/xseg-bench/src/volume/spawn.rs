//! A private pipeline: the four peers on a segment of their own.

use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use archipelago_client::Client;
use archipelago_peer::launch::{Blocker, Common, Composer, Files, Launch, Mapper, Rados, Store};
use archipelago_protocol::PROTOCOL_VERSION;
use xseg_shm::{IdlePolicy, Segment, SegmentConfig, SegmentName};

use super::{SpawnBackend, VolumeArgs, BLOCKERB, BLOCKERM, MAPPER, VLMCD};

/// The lock-owner identity of the spawned mapper (and RADOS blockers).
const HOST_ID: &str = "xseg-bench";

/// A peer process, SIGKILLed and reaped on drop.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private pipeline. Drops the peers top down, then the segment file and
/// the data directory.
pub(super) struct Spawned {
    procs: Vec<Proc>,
    _seg: Arc<Segment>,
    path: PathBuf,
    data_dir: Option<PathBuf>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
        let _ = std::fs::remove_file(&self.path);
        if let Some(d) = &self.data_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Spawned {
    pub(super) fn segment(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

/// The directory of the peers' binaries (this executable's), checked to
/// hold `launch`'s.
fn bin_dir(launch: &Launch) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable directory")?;
    let path = dir.join(launch.binary());
    if !path.exists() {
        bail!(
            "{} not found (build the peers: cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(dir.to_path_buf())
}

/// Starts the peer `launch` describes and waits until it answers PING.
fn start_peer(launch: &Launch) -> anyhow::Result<Proc> {
    use std::os::unix::process::CommandExt;
    let bin = launch.binary();
    let segment = &launch.common().segment;
    let port = launch.common().port;
    let mut cmd = launch.command(&bin_dir(launch)?);
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls prctl(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("spawn {bin}"))?;
    let mut proc = Proc { child };
    let client = Client::connect(segment)
        .map_err(|e| anyhow!("{e}"))?
        .with_timeout(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.ping(port).is_err() {
        if let Some(status) = proc.child.try_wait()? {
            bail!("{bin} exited: {status}");
        }
        if Instant::now() > deadline {
            bail!("{bin} did not answer PING");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(proc)
}

/// Where the blockers of `--spawn rados` keep objects.
#[derive(Debug, Clone)]
pub(super) struct RadosSpawn {
    pool: String,
    ceph_conf: Option<PathBuf>,
    /// Unique to this run.
    namespace: String,
}

impl RadosSpawn {
    pub(super) fn from_args(a: &VolumeArgs) -> anyhow::Result<RadosSpawn> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let pool = match &a.pool {
            Some(p) => p.clone(),
            None => env("CEPH_POOL")
                .and_then(|p| p.into_string().ok())
                .context("--spawn rados needs --pool or $CEPH_POOL")?,
        };
        let ceph_conf = a
            .ceph_conf
            .clone()
            .or_else(|| env("CEPH_CONF").map(PathBuf::from));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(RadosSpawn {
            pool,
            ceph_conf,
            namespace: format!("xseg-bench-{}-{nanos}", std::process::id()),
        })
    }
}

/// Starts a private pipeline with blockers on `backend` (`threads`
/// workers each, except null ones) and every peer on `idle_policy` (`None`:
/// the peers' defaults).
pub(super) fn spawn(
    backend: SpawnBackend,
    rados: Option<&RadosSpawn>,
    threads: Option<u32>,
    idle_policy: Option<IdlePolicy>,
) -> anyhow::Result<Spawned> {
    let tag = format!("xseg-bench-{}", std::process::id());
    let config = SegmentConfig {
        ports: 64,
        static_ports: 16,
        requests: 1024,
        // 4 KiB to 4 MiB: room for 32 requests of 1 MiB, or 16 of 4 MiB,
        // in flight at the client and again at vlmcd (~360 MiB, touched
        // only as used).
        buffer_counts: vec![1024, 256, 128, 64, 64, 32, 64, 16, 80, 8, 40],
        protocol_version: PROTOCOL_VERSION,
        ..Default::default()
    };
    let tag = match backend {
        SpawnBackend::Null => format!("{tag}-null"),
        _ => tag,
    };
    let path = std::env::temp_dir().join(format!("{tag}-seg"));
    let _ = std::fs::remove_file(&path);
    let name = SegmentName::parse(path.to_str().context("utf-8 temp path")?)
        .map_err(|e| anyhow!("{e}"))?;
    let seg = Arc::new(Segment::create(&name, &config).map_err(|e| anyhow!("{e}"))?);
    let data_dir = match backend {
        SpawnBackend::Memory | SpawnBackend::Null | SpawnBackend::Rados => None,
        SpawnBackend::Files => Some(std::env::temp_dir().join(format!("{tag}-data"))),
    };
    let mut s = Spawned {
        procs: Vec::new(),
        _seg: seg,
        path,
        data_dir,
    };
    let seg = s.segment();
    let common = |port: u32| Common {
        idle_policy,
        log_level: Some(log::Level::Warn),
        ..Common::new(&seg, port)
    };
    let blocker = |port: u32, sub: &str, member: &str| -> anyhow::Result<Launch> {
        let mut common = common(port);
        let store = match (backend, &s.data_dir) {
            (SpawnBackend::Null, _) => Store::Null,
            (SpawnBackend::Rados, _) => {
                let r = rados.context("--spawn rados without a pool")?;
                common.host_id = Some(HOST_ID.into());
                Store::Rados(Rados {
                    ceph_conf: r.ceph_conf.clone(),
                    namespace: Some(r.namespace.clone()),
                    member: Some(member.into()),
                    ..Rados::new(&r.pool)
                })
            }
            (_, None) => Store::Memory,
            (_, Some(d)) => Store::Files(Files::new(d.join(sub))),
        };
        if backend != SpawnBackend::Null {
            common.threads = threads;
        }
        Ok(Blocker { common, store }.into())
    };
    s.procs
        .push(start_peer(&blocker(BLOCKERB, "data", "blockerb")?)?);
    s.procs
        .push(start_peer(&blocker(BLOCKERM, "maps", "blockerm")?)?);
    let mapper = Mapper {
        common: Common {
            host_id: Some(HOST_ID.into()),
            ..common(MAPPER)
        },
        blockerm_port: BLOCKERM,
        blockerb_port: BLOCKERB,
        cache_mib: None,
        null: backend == SpawnBackend::Null,
        write_back: false,
    };
    s.procs.push(start_peer(&mapper.into())?);
    let composer = Composer {
        common: common(VLMCD),
        mapper_port: MAPPER,
        blockerb_port: BLOCKERB,
    };
    s.procs.push(start_peer(&composer.into())?);
    Ok(s)
}
