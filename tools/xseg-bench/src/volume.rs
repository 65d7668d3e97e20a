//! `xseg-bench volume`: block I/O on a volume through the pipeline, as a
//! client, with many requests in flight ([`IoQueue`]). The same workload
//! can go, in the same run, to other targets (`--target volume,null,blocker`):
//!
//! - `volume`: the volume through vlmcd → mapperd → blocker;
//! - `null`: the same four peer processes as pure forwarders
//!   (`mapperd --null`, `blockerd --backend null`: no mapping, no
//!   storage), on a second private segment: the ceiling of the pipeline on
//!   this machine;
//! - `blocker`: object I/O straight to the data blocker.
//!
//! The system is either running already (`--segment`, the composer's
//! `--port`) or started here (`--spawn memory|files|rados`: the four peers,
//! found next to this executable, on a private segment; killed at the end,
//! and with `PR_SET_PDEATHSIG` should this process die first).
//!
//! `--spawn rados` puts both blockers on a RADOS pool (`--pool`, default
//! `$CEPH_POOL`; `--ceph-conf`, default `$CEPH_CONF`) in a namespace of
//! their own per run (`xseg-bench-<pid>-<time>`), so runs on one pool
//! never see each other's objects (the pipeline is killed at the end and
//! the volume removed; its objects stay in the namespace).
//!
//! Stage times: every peer sums, from each descriptor's submit and accept
//! timestamps and its own clock at reply, the time requests waited in its
//! queue and the time it held them (STATS). Their differences over a run,
//! per request, show what each stage added; vlmcd's own share is its
//! holding time minus the round trips of its sub-requests.
//!
//! Offsets: block `b` is at `b * bs`. `--pattern seq` walks the blocks in
//! order; `--pattern rand` walks a permutation of them (a full-period LCG
//! modulo the next power of two, skipping values out of range), so each
//! block comes once per pass. `--target blocker` sends offset `o` to
//! object `bench-obj-<o / 4 MiB>` at `o % 4 MiB`.
//!
//! `--verify`: every written block starts with its offset and a checksum
//! of the offset and the seed (16 bytes); a read of a block whose write
//! had completed when the read was submitted must carry them.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use archipelago_client::{Client, IoQueue};
use archipelago_protocol::payload::StatsReply;
use archipelago_protocol::{ErrorCode, PROTOCOL_VERSION};
use clap::{Args, ValueEnum};
use serde::Serialize;
use xseg_shm::{Segment, SegmentConfig, SegmentName};

use crate::snapshot::parse_size;
use crate::stats::percentile;

/// Object size of `--target blocker`.
pub const BLOCKER_OBJECT: u64 = 4 << 20;
/// Ports of a spawned pipeline (the defaults of the peers).
const BLOCKERB: u32 = 1;
const BLOCKERM: u32 = 2;
const MAPPER: u32 = 3;
const VLMCD: u32 = 4;
/// Per-request timeout of the queue and the client.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpawnBackend {
    /// Blockers keep objects in memory.
    Memory,
    /// Blockers keep objects in files under a temporary directory.
    Files,
    /// Blockers keep objects in a RADOS pool (--pool, --ceph-conf), in a
    /// namespace of this run.
    Rados,
    /// Pure forwarders: the null mapper and null blockers.
    #[value(skip)]
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoOp {
    Read,
    Write,
    /// 50% reads, 50% writes.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Seq,
    Rand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The volume, through vlmcd.
    Volume,
    /// The same peers as pure forwarders (needs --spawn).
    Null,
    /// Object I/O straight to the data blocker.
    Blocker,
}

#[derive(Args, Debug)]
pub struct VolumeArgs {
    /// Segment (name or path) of a running system.
    #[arg(long, conflicts_with = "spawn", required_unless_present = "spawn")]
    pub segment: Option<String>,
    /// Start a private pipeline with this blocker backend (killed at the end).
    #[arg(long, value_enum)]
    pub spawn: Option<SpawnBackend>,
    /// The RADOS pool of `--spawn rados` (default: $CEPH_POOL).
    #[arg(long)]
    pub pool: Option<String>,
    /// The Ceph configuration of `--spawn rados` (default: $CEPH_CONF,
    /// then librados' own search).
    #[arg(long, value_name = "FILE")]
    pub ceph_conf: Option<PathBuf>,
    /// Worker threads of each spawned blocker (default: the blocker's own).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub blocker_threads: Option<u32>,
    /// Idle policy of the spawned peers (yield, spin or sleep; default:
    /// the peers' own).
    #[arg(long)]
    pub idle_policy: Option<String>,
    /// Port of vlmcd.
    #[arg(long, default_value_t = VLMCD)]
    pub port: u32,
    /// Port of the data blocker (`--target blocker`).
    #[arg(long, default_value_t = BLOCKERB)]
    pub blocker_port: u32,
    /// What the I/O goes to, one after the other in this order (a
    /// comma-separated list).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "volume")]
    pub target: Vec<TargetKind>,
    /// Volume name.
    #[arg(long, default_value = "xseg-bench-vol")]
    pub volume: String,
    /// Create the volume with this size (removed at the end); with
    /// `--target blocker`, the size of the range of objects.
    #[arg(long, value_parser = parse_size)]
    pub create: Option<u64>,
    /// Write the whole range first.
    #[arg(long)]
    pub prefill: bool,
    /// Request size of the prefill (rounded to a multiple of --bs;
    /// 4M writes each object whole, as `rbd bench --io-size 4M` does).
    #[arg(long, value_parser = parse_size, default_value = "256K")]
    pub prefill_bs: u64,
    #[arg(long, value_enum, default_value_t = IoOp::Read)]
    pub op: IoOp,
    #[arg(long, value_enum, default_value_t = Pattern::Rand)]
    pub pattern: Pattern,
    /// Block size (optional K, M suffix).
    #[arg(long, value_parser = parse_size, default_value = "4K")]
    pub bs: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub iodepth: u32,
    /// Measured operations (default 100000 unless --seconds).
    #[arg(long, conflicts_with = "seconds")]
    pub total: Option<u64>,
    /// Measure for this many seconds instead of a number of operations.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Operations done first and not measured.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Stamp written blocks and check them when read back.
    #[arg(long)]
    pub verify: bool,
    /// Seed of the permutation, the 50/50 mix and the stamps.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

// ---------------------------------------------------------------- spawning

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
struct Spawned {
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
    fn segment(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

fn peer_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("executable directory")?.join(name);
    if !path.exists() {
        bail!(
            "{} not found (build the peers: cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// `--idle-policy P` for every spawned peer, if set (read once in `run`).
static IDLE_POLICY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn start_peer(segment: &str, bin: &str, port: u32, extra: &[String]) -> anyhow::Result<Proc> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(peer_bin(bin)?);
    cmd.args(["--segment", segment, "--port", &port.to_string()])
        .args(["--log-level", "warn"])
        .args(extra);
    if let Some(Some(p)) = IDLE_POLICY.get() {
        cmd.args(["--idle-policy", p]);
    }
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
struct RadosSpawn {
    pool: String,
    ceph_conf: Option<PathBuf>,
    /// Unique to this run.
    namespace: String,
}

impl RadosSpawn {
    fn from_args(a: &VolumeArgs) -> anyhow::Result<RadosSpawn> {
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

fn spawn(
    backend: SpawnBackend,
    rados: Option<&RadosSpawn>,
    threads: Option<u32>,
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
    let backend_args = |sub: &str, member: &str| -> anyhow::Result<Vec<String>> {
        let mut v: Vec<String> = match (backend, &s.data_dir) {
            (SpawnBackend::Null, _) => vec!["--backend".into(), "null".into()],
            (SpawnBackend::Rados, _) => {
                let r = rados.context("--spawn rados without a pool")?;
                let mut v = vec![
                    "--backend".into(),
                    "rados".into(),
                    "--pool".into(),
                    r.pool.clone(),
                    "--namespace".into(),
                    r.namespace.clone(),
                    "--member".into(),
                    member.into(),
                    "--host-id".into(),
                    "xseg-bench".into(),
                ];
                if let Some(c) = &r.ceph_conf {
                    v.push("--ceph-conf".into());
                    v.push(c.to_string_lossy().into_owned());
                }
                v
            }
            (_, None) => vec!["--backend".into(), "memory".into()],
            (_, Some(d)) => vec![
                "--backend".into(),
                "files".into(),
                "--data-dir".into(),
                d.join(sub).to_string_lossy().into_owned(),
            ],
        };
        if let (Some(t), false) = (threads, backend == SpawnBackend::Null) {
            v.push("--threads".into());
            v.push(t.to_string());
        }
        Ok(v)
    };
    let data = backend_args("data", "blockerb")?;
    let maps = backend_args("maps", "blockerm")?;
    s.procs.push(start_peer(&seg, "blockerd", BLOCKERB, &data)?);
    s.procs.push(start_peer(&seg, "blockerd", BLOCKERM, &maps)?);
    let mut mapper_args = vec![
        "--host-id".into(),
        "xseg-bench".into(),
        "--blockerb-port".into(),
        BLOCKERB.to_string(),
        "--blockerm-port".into(),
        BLOCKERM.to_string(),
    ];
    if backend == SpawnBackend::Null {
        mapper_args.push("--null".into());
    }
    let m = start_peer(&seg, "mapperd", MAPPER, &mapper_args)?;
    s.procs.push(m);
    let v = start_peer(
        &seg,
        "vlmcd",
        VLMCD,
        &[
            "--mapper-port".into(),
            MAPPER.to_string(),
            "--blockerb-port".into(),
            BLOCKERB.to_string(),
        ],
    )?;
    s.procs.push(v);
    Ok(s)
}

/// Removes a volume this run created (close first; errors ignored).
struct CreatedVolume<'a> {
    client: &'a Client,
    port: u32,
    name: String,
}

impl Drop for CreatedVolume<'_> {
    fn drop(&mut self) {
        let _ = self.client.close_volume(self.port, &self.name);
        if let Err(e) = self.client.remove_volume(self.port, &self.name) {
            log::warn!("remove volume {}: {e}", self.name);
        }
    }
}

/// Deletes the objects `--target blocker` wrote (errors ignored).
struct BenchObjects<'a> {
    client: &'a Client,
    port: u32,
    names: Vec<String>,
}

impl Drop for BenchObjects<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.client.delete(self.port, n);
        }
    }
}

// ------------------------------------------------------------- the workload

/// Block order: sequential, or a permutation of `0..n` from a full-period
/// LCG modulo the next power of two (cycle walking).
pub struct Order {
    n: u64,
    mask: u64,
    a: u64,
    c: u64,
    x: u64,
    rand: bool,
}

impl Order {
    pub fn new(n: u64, pattern: Pattern, seed: u64) -> Order {
        assert!(n > 0);
        let m = n.next_power_of_two();
        let s = splitmix(seed);
        Order {
            n,
            mask: m - 1,
            // a = 1 mod 4 and c odd: period m (Hull-Dobell).
            a: (s << 2) | 1,
            c: splitmix(s) | 1,
            x: splitmix(s ^ 0x9e37) & (m - 1),
            rand: pattern == Pattern::Rand,
        }
    }

    pub fn next_block(&mut self) -> u64 {
        if !self.rand {
            let b = self.x % self.n;
            self.x = (b + 1) % self.n;
            return b;
        }
        loop {
            self.x = self.x.wrapping_mul(self.a).wrapping_add(self.c) & self.mask;
            if self.x < self.n {
                return self.x;
            }
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 16-byte stamp of the block at `offset`.
pub fn stamp(buf: &mut [u8], offset: u64, seed: u64) {
    buf[..8].copy_from_slice(&offset.to_le_bytes());
    buf[8..16].copy_from_slice(&splitmix(offset ^ splitmix(seed)).to_le_bytes());
}

/// Whether `buf` carries the stamp of `offset`.
pub fn stamped(buf: &[u8], offset: u64, seed: u64) -> bool {
    let mut want = [0u8; 16];
    stamp(&mut want, offset, seed);
    buf.len() >= 16 && buf[..16] == want
}

/// Where I/O goes.
enum Target {
    /// A volume through a composer (`null`: of the null pipeline).
    Volume {
        port: u32,
        name: String,
        null: bool,
    },
    Blocker {
        port: u32,
        names: Vec<String>,
    },
}

impl Target {
    fn locate(&self, offset: u64) -> (u32, &str, u64) {
        match self {
            Target::Volume { port, name, .. } => (*port, name, offset),
            Target::Blocker { port, names } => (
                *port,
                &names[(offset / BLOCKER_OBJECT) as usize],
                offset % BLOCKER_OBJECT,
            ),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Target::Volume { null: false, .. } => "volume",
            Target::Volume { null: true, .. } => "null",
            Target::Blocker { .. } => "blocker",
        }
    }
}

fn is_busy(e: &archipelago_protocol::Error) -> bool {
    e.code == ErrorCode::Busy
}

/// Writes the whole range (stamped blocks), `chunk` bytes (at least `bs`)
/// per request, at most 8 in flight; a request refused or failed as busy
/// goes again.
fn prefill(
    q: &mut IoQueue,
    t: &Target,
    size: u64,
    bs: u64,
    chunk: u64,
    seed: u64,
) -> anyhow::Result<()> {
    // A power of two up to an object, so that no chunk straddles two
    // objects of `--target blocker`.
    let chunk = chunk.clamp(1, BLOCKER_OBJECT);
    let chunk = (1u64 << (63 - chunk.leading_zeros())).max(bs) / bs * bs;
    let mut buf = vec![0xa5u8; chunk as usize];
    let mut todo: Vec<u64> = (0..size).step_by(chunk as usize).collect();
    todo.reverse();
    let mut failed = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !todo.is_empty() || q.in_flight() > 0 {
        while q.in_flight() < q.depth().min(8) {
            let Some(off) = todo.pop() else { break };
            let len = chunk.min(size - off);
            for b in (0..len).step_by(bs as usize) {
                stamp(&mut buf[b as usize..], off + b, seed);
            }
            let (port, name, o) = t.locate(off);
            match q.submit_write(port, name, o, &buf[..len as usize], false, off) {
                Ok(()) => {}
                Err(e) if is_busy(&e) => {
                    todo.push(off);
                    if q.in_flight() == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    break;
                }
                Err(e) => bail!("prefill write at {off}: {e}"),
            }
        }
        q.complete_with(usize::MAX, TIMEOUT, |off, r| match r {
            Ok(_) => {}
            Err(e) if is_busy(&e) => todo.push(off),
            Err(e) => {
                failed.get_or_insert(format!("prefill write at {off}: {e}"));
            }
        });
        if let Some(e) = failed.take() {
            bail!(e);
        }
        if Instant::now() > deadline {
            bail!("prefill still busy after 10 minutes");
        }
    }
    Ok(())
}

/// Latency summary in nanoseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

impl Latency {
    fn of(samples: &mut [u64]) -> Latency {
        if samples.is_empty() {
            return Latency {
                mean: 0.0,
                p50: 0,
                p90: 0,
                p99: 0,
                p99_9: 0,
                max: 0,
            };
        }
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Latency {
            mean: sum as f64 / samples.len() as f64,
            p50: percentile(samples, 50.0),
            p90: percentile(samples, 90.0),
            p99: percentile(samples, 99.0),
            p99_9: percentile(samples, 99.9),
            max: samples[samples.len() - 1],
        }
    }
}

/// One target's results.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub target: &'static str,
    /// Measured operations (warmup excluded).
    pub ops: u64,
    pub reads: u64,
    pub writes: u64,
    pub errors: u64,
    /// Reads whose stamp was checked (all matched, or the run failed).
    pub verified: u64,
    pub verify_failures: u64,
    pub prefill_s: f64,
    pub elapsed_s: f64,
    pub iops: f64,
    pub bandwidth_mib_s: f64,
    pub latency_ns: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// What each peer of the target added (warmup included).
    pub stages: Vec<Stage>,
}

/// One peer's share of a run, from the differences of its STATS.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub peer: &'static str,
    pub port: u32,
    /// Requests it accepted during the run.
    pub requests: u64,
    /// Mean wait in its queue (submit to accept).
    pub queue_ns: f64,
    /// Mean time it held a request (accept to reply).
    pub service_ns: f64,
    /// Sub-requests it sent per request.
    pub sub_per_request: f64,
    /// Mean round trip of a sub-request (submit to reply seen).
    pub sub_ns: f64,
    /// Its own share: holding time minus its sub-requests' round trips,
    /// per request (sub-requests sent one after the other, as vlmcd does
    /// for a one-object I/O; an upper bound of overlap otherwise).
    pub own_ns: f64,
}

/// The peers of a target, by name and port.
fn stage_ports(t: &Target, a: &VolumeArgs) -> Vec<(&'static str, u32)> {
    match t {
        Target::Volume { null: false, .. } if a.spawn.is_none() => vec![("vlmcd", a.port)],
        Target::Volume { .. } => vec![
            ("vlmcd", VLMCD),
            ("mapperd", MAPPER),
            ("blockerb", BLOCKERB),
        ],
        Target::Blocker { port, .. } => vec![("blockerb", *port)],
    }
}

fn snapshot_stats(client: &Client, ports: &[(&'static str, u32)]) -> Vec<Option<StatsReply>> {
    ports.iter().map(|&(_, p)| client.stats(p).ok()).collect()
}

fn stages(
    ports: &[(&'static str, u32)],
    before: &[Option<StatsReply>],
    after: &[Option<StatsReply>],
) -> Vec<Stage> {
    let mut out = Vec::new();
    for (i, &(peer, port)) in ports.iter().enumerate() {
        let (Some(b), Some(a)) = (&before[i], &after[i]) else {
            continue;
        };
        let d = |x: u64, y: u64| x.saturating_sub(y) as f64;
        let requests = d(a.accepted, b.accepted);
        let completed = d(a.served + a.failed, b.served + b.failed);
        let subs = d(a.sub_requests, b.sub_requests);
        let per = |x: f64, n: f64| if n > 0.0 { x / n } else { 0.0 };
        let service_ns = per(d(a.service_ns, b.service_ns), completed);
        let sub_total = d(a.sub_ns, b.sub_ns);
        out.push(Stage {
            peer,
            port,
            requests: requests as u64,
            queue_ns: per(d(a.queue_ns, b.queue_ns), requests),
            service_ns,
            sub_per_request: per(subs, completed),
            sub_ns: per(sub_total, subs),
            own_ns: (service_ns - per(sub_total, completed)).max(0.0),
        });
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub segment: String,
    pub spawn: Option<SpawnBackend>,
    pub volume: String,
    pub size: u64,
    pub bs: u64,
    pub iodepth: u32,
    pub op: IoOp,
    pub pattern: Pattern,
    pub warmup: u64,
    pub prefill: bool,
    pub verify: bool,
    pub seed: u64,
    pub runs: Vec<RunReport>,
}

#[derive(Clone, Copy)]
struct Slot {
    start: Instant,
    block: u64,
    read: bool,
    /// Read of a block whose write had completed: check its stamp.
    check: bool,
    measured: bool,
}

/// Runs the workload against `t` on queue `q` (after the prefill, which
/// took `prefill_s`).
fn run_one(
    q: &mut IoQueue,
    t: &Target,
    size: u64,
    a: &VolumeArgs,
    prefill_s: f64,
) -> anyhow::Result<RunReport> {
    let bs = a.bs;
    let blocks = size / bs;
    let mut written = vec![a.prefill; if a.verify { blocks as usize } else { 0 }];
    let mut order = Order::new(blocks, a.pattern, a.seed);
    let mut mix = splitmix(a.seed ^ 0x6d_6978_6564);
    let total = match (a.total, a.seconds) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(100_000),
    };
    let seconds = a.seconds.map(Duration::from_secs_f64);
    let depth = a.iodepth as usize;

    let mut slots: Vec<Option<Slot>> = vec![None; depth];
    let mut free: Vec<usize> = (0..depth).rev().collect();
    let mut wbuf = vec![0x5au8; bs as usize];
    let mut samples: Vec<u64> = Vec::with_capacity(total.unwrap_or(1 << 20).min(1 << 24) as usize);
    let (mut reads, mut writes, mut errors, mut verified, mut bad) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut first_error: Option<String> = None;
    let mut issued = 0u64;
    let mut next: Option<(u64, bool)> = None;
    // Requests a peer refused as busy (out of buffers: backpressure, not
    // an error), to send again; their latency counts from the first send.
    let mut retry: Vec<Slot> = Vec::new();
    let mut t0: Option<Instant> = None;
    let mut t_end = Instant::now();
    let holes = matches!(t, Target::Blocker { .. });
    // The null pipeline stores nothing: its reads cannot be checked.
    let verify = a.verify && !matches!(t, Target::Volume { null: true, .. });

    loop {
        // Submit while there is room and ops are left.
        while let Some(slot) = free.pop() {
            if let Some(s) = retry.pop() {
                let offset = s.block * bs;
                let (port, name, o) = t.locate(offset);
                let r = if s.read {
                    q.submit_read(port, name, o, bs, slot as u64)
                } else {
                    stamp(&mut wbuf, offset, a.seed);
                    q.submit_write(port, name, o, &wbuf, false, slot as u64)
                };
                match r {
                    Ok(()) => slots[slot] = Some(s),
                    Err(e) if is_busy(&e) => {
                        retry.push(s);
                        free.push(slot);
                        if q.in_flight() == 0 {
                            std::thread::sleep(Duration::from_micros(50));
                        }
                        break;
                    }
                    Err(e) => bail!("submit at offset {offset}: {e}"),
                }
                continue;
            }
            let more = match (total, t0, seconds) {
                (Some(n), _, _) => issued < a.warmup + n,
                (None, Some(t0), Some(s)) => t0.elapsed() < s,
                (None, None, _) => true,
                (None, Some(_), None) => unreachable!(),
            };
            if !more {
                free.push(slot);
                break;
            }
            let (block, read) = *next.get_or_insert_with(|| {
                let read = match a.op {
                    IoOp::Read => true,
                    IoOp::Write => false,
                    IoOp::Mixed => {
                        mix = splitmix(mix);
                        mix >> 63 == 0
                    }
                };
                (order.next_block(), read)
            });
            let offset = block * bs;
            let (port, name, o) = t.locate(offset);
            let measured = issued >= a.warmup;
            if measured && t0.is_none() {
                t0 = Some(Instant::now());
            }
            let start = Instant::now();
            let r = if read {
                q.submit_read(port, name, o, bs, slot as u64)
            } else {
                stamp(&mut wbuf, offset, a.seed);
                q.submit_write(port, name, o, &wbuf, false, slot as u64)
            };
            match r {
                Ok(()) => {
                    next = None;
                    issued += 1;
                    let check = read && verify && written[block as usize];
                    slots[slot] = Some(Slot {
                        start,
                        block,
                        read,
                        check,
                        measured,
                    });
                }
                Err(e) if is_busy(&e) => {
                    free.push(slot);
                    if q.in_flight() == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    break;
                }
                Err(e) => bail!("submit at offset {offset}: {e}"),
            }
        }
        if q.in_flight() == 0 {
            if free.len() == depth && next.is_none() && retry.is_empty() {
                // Nothing left to submit (a Busy with nothing in flight
                // leaves `next` set: go round again).
                let more = match (total, seconds) {
                    (Some(n), _) => issued < a.warmup + n,
                    (None, Some(s)) => match t0 {
                        None => true,
                        Some(t0) => t0.elapsed() < s,
                    },
                    (None, None) => unreachable!(),
                };
                if !more {
                    break;
                }
            }
            continue;
        }
        q.complete_with(depth, TIMEOUT, |tag, r| {
            let now = Instant::now();
            let s = slots[tag as usize].take().expect("slot in flight");
            free.push(tag as usize);
            match r {
                Ok(done) => {
                    if s.read {
                        if s.check {
                            verified += 1;
                            if !(done.data.len() as u64 == bs
                                && stamped(done.data, s.block * bs, a.seed))
                            {
                                bad += 1;
                                first_error.get_or_insert(format!(
                                    "verify failed at offset {}",
                                    s.block * bs
                                ));
                            }
                        }
                    } else if a.verify {
                        written[s.block as usize] = true;
                    }
                }
                Err(e) if is_busy(&e) => {
                    retry.push(s);
                    return;
                }
                // An object never written: a hole, as the volume reads it.
                Err(e) if s.read && holes && e.code == ErrorCode::NotFound => {
                    if s.check {
                        verified += 1;
                        bad += 1;
                        first_error.get_or_insert(format!(
                            "verify failed at offset {}: object missing",
                            s.block * bs
                        ));
                    }
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(format!(
                        "{} at offset {}: {e}",
                        if s.read { "read" } else { "write" },
                        s.block * bs
                    ));
                }
            }
            if s.measured {
                samples.push(now.duration_since(s.start).as_nanos() as u64);
                if s.read {
                    reads += 1;
                } else {
                    writes += 1;
                }
                t_end = now;
            }
        });
    }

    let ops = samples.len() as u64;
    let elapsed_s = t0.map_or(0.0, |t0| t_end.duration_since(t0).as_secs_f64());
    let rate = |x: f64| if elapsed_s > 0.0 { x / elapsed_s } else { 0.0 };
    Ok(RunReport {
        target: t.kind(),
        ops,
        reads,
        writes,
        errors,
        verified,
        verify_failures: bad,
        prefill_s,
        elapsed_s,
        iops: rate(ops as f64),
        bandwidth_mib_s: rate((ops * bs) as f64 / f64::from(1u32 << 20)),
        latency_ns: Latency::of(&mut samples),
        first_error,
        stages: Vec::new(),
    })
}

/// Creates the volume (removed at the end) or reads its size.
fn open_volume<'c>(
    client: &'c Client,
    a: &VolumeArgs,
    port: u32,
) -> anyhow::Result<(u64, Option<CreatedVolume<'c>>)> {
    match a.create {
        Some(size) => {
            client
                .create_volume(port, &a.volume, size, None)
                .map_err(|e| anyhow!("create volume {}: {e}", a.volume))?;
            let created = CreatedVolume {
                client,
                port,
                name: a.volume.clone(),
            };
            Ok((size, Some(created)))
        }
        None => {
            let info = client
                .volume_info(port, &a.volume)
                .map_err(|e| anyhow!("volume {}: {e}", a.volume))?;
            Ok((info.size, None))
        }
    }
}

/// Prefills (if asked), then runs the workload against `t` with its
/// stage times.
fn measure(
    segment: &str,
    client: &Client,
    t: &Target,
    size: u64,
    a: &VolumeArgs,
) -> anyhow::Result<RunReport> {
    let mut q = IoQueue::connect(segment)
        .map_err(|e| anyhow!("connect {segment}: {e}"))?
        .with_depth(a.iodepth as usize)
        .with_timeout(TIMEOUT);
    let blocks = size / a.bs;
    let t_prefill = Instant::now();
    if a.prefill {
        prefill(&mut q, t, blocks * a.bs, a.bs, a.prefill_bs, a.seed)?;
    }
    let prefill_s = if a.prefill {
        t_prefill.elapsed().as_secs_f64()
    } else {
        0.0
    };
    let ports = stage_ports(t, a);
    let before = snapshot_stats(client, &ports);
    let mut report = run_one(&mut q, t, size, a, prefill_s)?;
    let after = snapshot_stats(client, &ports);
    report.stages = stages(&ports, &before, &after);
    Ok(report)
}

pub fn run(a: &VolumeArgs) -> anyhow::Result<()> {
    if a.bs == 0 || a.bs < 16 && a.verify {
        bail!("--bs must be at least 16 with --verify (and not 0)");
    }
    if a.spawn.is_some() && a.create.is_none() {
        bail!("--spawn needs --create SIZE");
    }
    let has = |k: TargetKind| a.target.contains(&k);
    if has(TargetKind::Null) && a.spawn.is_none() {
        bail!("--target null needs --spawn (it starts its own null pipeline)");
    }
    if has(TargetKind::Blocker) && (a.bs > BLOCKER_OBJECT || !a.bs.is_power_of_two()) {
        bail!("--target blocker needs --bs a power of two up to 4 MiB");
    }
    let rados = match a.spawn {
        Some(SpawnBackend::Rados) => Some(RadosSpawn::from_args(a)?),
        _ => None,
    };
    let threads = a.blocker_threads;
    let _ = IDLE_POLICY.set(a.idle_policy.clone());
    let spawned = a
        .spawn
        .map(|b| spawn(b, rados.as_ref(), threads))
        .transpose()?;
    let segment = match (&spawned, &a.segment) {
        (Some(s), _) => s.segment(),
        (None, Some(s)) => s.clone(),
        (None, None) => unreachable!("clap requires one"),
    };
    let client = Client::connect(&segment)
        .map_err(|e| anyhow!("connect {segment}: {e}"))?
        .with_timeout(TIMEOUT);
    let size = if has(TargetKind::Volume) || a.create.is_none() {
        None
    } else {
        a.create
    };
    let mut runs = Vec::new();
    let mut size_seen = size;
    for &kind in &a.target {
        let report = match kind {
            TargetKind::Volume => {
                let (size, _created) = open_volume(&client, a, a.port)?;
                size_seen = Some(size);
                check_size(size, a)?;
                let t = Target::Volume {
                    port: a.port,
                    name: a.volume.clone(),
                    null: false,
                };
                measure(&segment, &client, &t, size, a)?
            }
            TargetKind::Null => {
                let null = spawn(SpawnBackend::Null, None, None)?;
                let seg = null.segment();
                let null_client = Client::connect(&seg)
                    .map_err(|e| anyhow!("connect {seg}: {e}"))?
                    .with_timeout(TIMEOUT);
                let (size, _created) = open_volume(&null_client, a, VLMCD)?;
                size_seen.get_or_insert(size);
                check_size(size, a)?;
                let t = Target::Volume {
                    port: VLMCD,
                    name: a.volume.clone(),
                    null: true,
                };
                measure(&seg, &null_client, &t, size, a)?
            }
            TargetKind::Blocker => {
                let size = match size_seen {
                    Some(s) => s,
                    None => open_volume(&client, a, a.port)?.0,
                };
                check_size(size, a)?;
                let names: Vec<String> = (0..size.div_ceil(BLOCKER_OBJECT))
                    .map(|i| format!("bench-obj-{i}"))
                    .collect();
                let _objects = BenchObjects {
                    client: &client,
                    port: a.blocker_port,
                    names: names.clone(),
                };
                let t = Target::Blocker {
                    port: a.blocker_port,
                    names,
                };
                measure(&segment, &client, &t, size, a)?
            }
        };
        runs.push(report);
    }
    let report = Report {
        segment,
        spawn: a.spawn,
        volume: a.volume.clone(),
        size: size_seen.unwrap_or(0),
        bs: a.bs,
        iodepth: a.iodepth,
        op: a.op,
        pattern: a.pattern,
        warmup: a.warmup,
        prefill: a.prefill,
        verify: a.verify,
        seed: a.seed,
        runs,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    let failed: Vec<&str> = report
        .runs
        .iter()
        .filter_map(|r| r.first_error.as_deref())
        .collect();
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

fn check_size(size: u64, a: &VolumeArgs) -> anyhow::Result<()> {
    if size < a.bs {
        bail!("size {size} is smaller than --bs {}", a.bs);
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "size {} MiB, bs {}, iodepth {}, op {:?}, pattern {:?}, prefill {}, verify {}",
        r.size >> 20,
        r.bs,
        r.iodepth,
        r.op,
        r.pattern,
        r.prefill,
        r.verify
    );
    println!(
        "{:<8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}",
        "target",
        "ops",
        "IOPS",
        "MiB/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "errors",
        "verified"
    );
    let us = |ns: u64| ns as f64 / 1000.0;
    for x in &r.runs {
        let l = &x.latency_ns;
        println!(
            "{:<8} {:>9} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>9}",
            x.target,
            x.ops,
            x.iops,
            x.bandwidth_mib_s,
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p99_9),
            us(l.max),
            x.errors,
            x.verified
        );
    }
    println!("stage times (mean per request, us; own = held minus sub-request round trips):");
    println!(
        "{:<8} {:<9} {:>9} {:>8} {:>8} {:>6} {:>8} {:>8}",
        "target", "peer", "requests", "queued", "held", "subs", "sub rtt", "own"
    );
    for x in &r.runs {
        for st in &x.stages {
            println!(
                "{:<8} {:<9} {:>9} {:>8.1} {:>8.1} {:>6.2} {:>8.1} {:>8.1}",
                x.target,
                st.peer,
                st.requests,
                st.queue_ns / 1000.0,
                st.service_ns / 1000.0,
                st.sub_per_request,
                st.sub_ns / 1000.0,
                st.own_ns / 1000.0
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand_order_is_a_permutation_each_pass() {
        for n in [1u64, 2, 3, 7, 64, 1000, 4096] {
            let mut o = Order::new(n, Pattern::Rand, 42);
            for _pass in 0..2 {
                let mut seen = vec![false; n as usize];
                for _ in 0..n {
                    let b = o.next_block();
                    assert!(!seen[b as usize], "n {n}: {b} twice");
                    seen[b as usize] = true;
                }
            }
        }
        let mut s = Order::new(5, Pattern::Seq, 1);
        let first = s.next_block();
        let v: Vec<u64> = (0..4).map(|_| s.next_block()).collect();
        assert_eq!(v, (1..5).map(|i| (first + i) % 5).collect::<Vec<_>>());
    }

    #[test]
    fn stamps_depend_on_offset_and_seed() {
        let mut b = [0u8; 32];
        stamp(&mut b, 4096, 7);
        assert!(stamped(&b, 4096, 7));
        assert!(!stamped(&b, 8192, 7));
        assert!(!stamped(&b, 4096, 8));
        assert!(!stamped(&b[..8], 4096, 7));
    }
}
