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

mod report;
mod run;
mod spawn;
mod stages;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use archipelago_client::Client;
use clap::{Args, ValueEnum};
use serde::Serialize;
use xseg_shm::IdlePolicy;

use crate::snapshot::parse_size;
use report::{print_table, Report};
use run::{measure, open_volume, BenchObjects};
use spawn::{spawn, RadosSpawn};
use workload::Target;

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
    pub idle_policy: Option<IdlePolicy>,
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
    /// Run on a clone: after the prefill, snapshot the volume and run the
    /// workload on a clone of the snapshot (`<volume>-clone`, removed
    /// with the snapshot at the end), so that writes are first writes
    /// into a clone (copy-ups). Only with `--target volume`.
    #[arg(long)]
    pub clone: bool,
    /// Distance between the starts of two blocks (default: --bs):
    /// `--stride 4M --bs 4K` puts one block in each 4 MiB object.
    #[arg(long, value_parser = parse_size)]
    pub stride: Option<u64>,
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

pub fn run(a: &VolumeArgs) -> anyhow::Result<()> {
    if a.bs == 0 || a.bs < 16 && a.verify {
        bail!("--bs must be at least 16 with --verify (and not 0)");
    }
    if a.spawn.is_some() && a.create.is_none() {
        bail!("--spawn needs --create SIZE");
    }
    let has = |k: TargetKind| a.target.contains(&k);
    if a.clone && a.target != [TargetKind::Volume] {
        bail!("--clone runs on a clone of the volume: only with --target volume");
    }
    if a.stride.is_some_and(|s| s < a.bs) {
        bail!("--stride must be at least --bs");
    }
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
    let spawned = a
        .spawn
        .map(|b| spawn(b, rados.as_ref(), threads, a.idle_policy))
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
                let null = spawn(SpawnBackend::Null, None, None, a.idle_policy)?;
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
        clone: a.clone,
        stride: a.stride.unwrap_or(a.bs),
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
