//! The xseg rows: the ring alone, a full request descriptor round trip
//! under each idle policy, and batched throughput.
//!
//! * `ring`: an index hop through two `xseg_shm::ring` rings, busy-polling;
//! * `req`: get, fill, submit, accept, serve (respond), receive and put of a
//!   real descriptor in a real segment, busy-polling;
//! * `req-yield`: the same with the default `yield` idle policy;
//! * `req-sleep`: the `sleep` policy with no empty polls before sleeping,
//!   so every wait ends on the futex doorbell, like baseline C;
//! * `bulk`: batches of [`BATCH`] descriptors making the whole round trip
//!   (get, fill, submit, accept, respond, receive, put), busy-polling;
//! * `stream`: descriptors flowing one way in batches of [`BATCH`]: the
//!   parent gets, fills and pushes, the peer pops and puts back (the pool
//!   is the only flow control); a round is one batch pushed. The peer idles
//!   with the default `yield` policy: a busy-polling consumer that is always
//!   caught up reads every slot line while the producer is still writing
//!   it, and costs the producer a cache-line transfer per push.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use xseg_shm::ring::{initial_slot, Ring, Take, MAX_VALUE};
use xseg_shm::{
    status, Idle, IdlePolicy, Port, Segment, SegmentConfig, SegmentName, DEFAULT_IDLE_POLLS,
};

use super::{Case, RunCtx};
use crate::harness::{PeerArgs, ShmFile, Watchdog};
use crate::stats::Stats;

/// Descriptors per round in the `bulk` case.
pub const BATCH: u64 = 64;
/// Port the peer serves on.
const SERVER: u32 = 1;
/// Slots per ring in the `ring` case.
const RING_SLOTS: usize = 64;

/// Index hop through the ring alone.
pub const RING: Case = Case {
    name: "ring",
    what: "xseg ring index hop, busy poll",
    default_iters: 200_000,
    per_round: 1,
    parent: ring_parent,
    peer: ring_peer,
};

/// Request descriptor round trip, busy poll.
pub const REQ: Case = Case {
    name: "req",
    what: "xseg request hop, busy poll",
    default_iters: 200_000,
    per_round: 1,
    parent: |ctx| req_parent(ctx, IdlePolicy::Spin, 1),
    peer: |args| req_peer(args, IdlePolicy::Spin, 1),
};

/// Request round trip, default idle policy.
pub const REQ_YIELD: Case = Case {
    name: "req-yield",
    what: "xseg request hop, yield policy",
    default_iters: 20_000,
    per_round: 1,
    parent: |ctx| req_parent(ctx, IdlePolicy::Yield, 1),
    peer: |args| req_peer(args, IdlePolicy::Yield, 1),
};

/// Request round trip, sleep policy.
pub const REQ_SLEEP: Case = Case {
    name: "req-sleep",
    what: "xseg request hop, sleep at once",
    default_iters: 20_000,
    per_round: 1,
    parent: |ctx| req_parent(ctx, IdlePolicy::Sleep, 1),
    peer: |args| req_peer(args, IdlePolicy::Sleep, 1),
};

/// Batched throughput.
pub const BULK: Case = Case {
    name: "bulk",
    what: "xseg batches of 64 requests, busy poll",
    default_iters: 20_000,
    per_round: BATCH,
    parent: |ctx| req_parent(ctx, IdlePolicy::Spin, BATCH),
    peer: |args| req_peer(args, IdlePolicy::Spin, BATCH),
};

/// One-way streaming throughput: get, fill, push; pop, put.
pub const STREAM: Case = Case {
    name: "stream",
    what: "xseg stream, pop side yields when idle",
    default_iters: 20_000,
    per_round: BATCH,
    parent: stream_parent,
    peer: stream_peer,
};

fn ring_at(shm: &ShmFile, which: usize) -> Result<Ring<'_>> {
    let base = which * (2 * 128 + RING_SLOTS * 8);
    Ok(Ring {
        head: shm.atomic_u64(base)?,
        tail: shm.atomic_u64(base + 128)?,
        head_seen: shm.atomic_u64(base + 136)?,
        slots: shm.atomic_u64_slice(base + 256, RING_SLOTS)?,
    })
}

fn ring_parent(ctx: &RunCtx) -> Result<Stats> {
    let shm = ShmFile::create("ring", 2 * (256 + RING_SLOTS * 8))?;
    let (to_peer, back) = (ring_at(&shm, 0)?, ring_at(&shm, 1)?);
    for r in [&to_peer, &back] {
        for (i, s) in r.slots.iter().enumerate() {
            s.store(initial_slot(i as u64), std::sync::atomic::Ordering::Relaxed);
        }
    }
    let peer = ctx.peer().arg("shm", shm.path().display()).spawn()?;
    let wd = peer.watchdog();
    let mut k = 0u32;
    let stats = ctx.measure(|| {
        k = (k + 1) & MAX_VALUE;
        to_peer
            .push(k)
            .map_err(|e| anyhow::anyhow!("push: {e:?}"))?;
        let mut got = None;
        wd.spin_until(|| {
            got = back.pop(|_| Take::Taken);
            got.is_some()
        })?;
        ensure!(got == Some(k), "ring: sent {k}, got {got:?}");
        Ok(())
    })?;
    peer.wait()?;
    Ok(stats)
}

fn ring_peer(args: &PeerArgs) -> Result<()> {
    let wd = args.setup();
    let shm = ShmFile::open(args.get("shm")?)?;
    let (from_parent, back) = (ring_at(&shm, 0)?, ring_at(&shm, 1)?);
    for _ in 0..args.rounds {
        let mut got = None;
        wd.spin_until(|| {
            got = from_parent.pop(|_| Take::Taken);
            got.is_some()
        })?;
        back.push(got.expect("popped"))
            .map_err(|e| anyhow::anyhow!("push: {e:?}"))?;
    }
    Ok(())
}

/// A private segment in /dev/shm, destroyed on drop.
struct BenchSegment {
    name: SegmentName,
    seg: Arc<Segment>,
}

impl BenchSegment {
    fn create() -> Result<BenchSegment> {
        let path = format!("/dev/shm/xseg-bench-{}-seg", std::process::id());
        let name = SegmentName::parse(&path)?;
        let _ = Segment::destroy(&name, true);
        let config = SegmentConfig {
            ports: 8,
            static_ports: 4,
            requests: 1024,
            buffer_counts: vec![256],
            ..Default::default()
        };
        let seg = Arc::new(Segment::create(&name, &config)?);
        Ok(BenchSegment { name, seg })
    }
}

impl Drop for BenchSegment {
    fn drop(&mut self) {
        let _ = Segment::destroy(&self.name, true);
    }
}

/// Waits for `poll` to yield something, idling as `policy` says.
fn wait_for<T>(
    port: &Port,
    policy: IdlePolicy,
    wd: &Watchdog,
    mut poll: impl FnMut() -> Option<T>,
) -> Result<T> {
    if policy == IdlePolicy::Spin {
        let mut got = None;
        wd.spin_until(|| {
            got = poll();
            got.is_some()
        })?;
        return Ok(got.expect("polled"));
    }
    // The sleep row sleeps at the first empty poll, as baseline C does, so
    // it measures the doorbell; the yield row idles as peers do by default.
    let polls = if policy == IdlePolicy::Sleep {
        0
    } else {
        DEFAULT_IDLE_POLLS
    };
    let mut idle = Idle::new(policy, polls);
    let mut polls = 0u32;
    loop {
        if let Some(v) = poll() {
            return Ok(v);
        }
        idle.idle(port);
        polls += 1;
        if polls.is_multiple_of(1024) {
            wd.check()?;
        }
    }
}

fn req_parent(ctx: &RunCtx, policy: IdlePolicy, batch: u64) -> Result<Stats> {
    let bench = BenchSegment::create()?;
    let client = bench.seg.bind_dynamic()?;
    let peer = ctx
        .peer()
        .arg("segment", bench.name.to_string())
        .arg("batch", batch)
        .spawn()?;
    let wd = peer.watchdog();
    // The peer binds the server port; wait until it has.
    wd.spin_until(|| bench.seg.live_owner(SERVER).is_some())?;
    let mut k = 0u64;
    let mut reqs = Vec::with_capacity(batch as usize);
    let mut replies = Vec::with_capacity(batch as usize);
    let stats = ctx.measure(|| {
        for _ in 0..batch {
            k += 1;
            let r = client.get(SERVER)?;
            let d = client.desc(&r);
            d.set_op(1);
            d.set_offset(k << 12);
            d.set_size(4096);
            d.set_tag(k);
            reqs.push(r);
        }
        client
            .submit_batch(&mut reqs)
            .map_err(|(_, e)| e)
            .context("submit")?;
        let mut expect = k + 1 - batch;
        while expect <= k {
            let n = wait_for(&client, policy, &wd, || {
                let n = client.receive_batch(&mut replies, batch as usize);
                (n > 0).then_some(n)
            })?;
            for r in replies.drain(..n) {
                let d = client.desc(&r);
                ensure!(
                    d.tag() == expect && d.status() == status::SERVED,
                    "reply {} for {expect}",
                    d.tag()
                );
                expect += 1;
                client.put(r);
            }
        }
        Ok(())
    })?;
    peer.wait()?;
    Ok(stats)
}

fn req_peer(args: &PeerArgs, policy: IdlePolicy, batch: u64) -> Result<()> {
    let wd = args.setup();
    let name = SegmentName::parse(args.get("segment")?)?;
    let seg = Arc::new(Segment::attach(&name, None)?);
    let server = seg.bind(SERVER)?;
    let mut reqs = Vec::with_capacity(batch as usize);
    let mut left = args.rounds * batch;
    while left > 0 {
        let n = wait_for(&server, policy, &wd, || {
            let n = server.accept_batch(&mut reqs, left as usize);
            (n > 0).then_some(n)
        })?;
        for r in &reqs {
            let d = server.desc(r);
            d.set_serviced(d.size());
            d.set_status(status::SERVED);
        }
        server
            .respond_batch(&mut reqs)
            .map_err(|(_, e)| e)
            .context("respond")?;
        left -= n as u64;
    }
    Ok(())
}

fn stream_parent(ctx: &RunCtx) -> Result<Stats> {
    let bench = BenchSegment::create()?;
    let client = bench.seg.bind_dynamic()?;
    let peer = ctx.peer().arg("segment", bench.name.to_string()).spawn()?;
    let wd = peer.watchdog();
    wd.spin_until(|| bench.seg.live_owner(SERVER).is_some())?;
    let mut k = 0u64;
    let mut reqs = Vec::with_capacity(BATCH as usize);
    let stats = ctx.measure(|| {
        while reqs.len() < BATCH as usize {
            match client.get(SERVER) {
                Ok(r) => {
                    k += 1;
                    let d = client.desc(&r);
                    d.set_op(1);
                    d.set_offset(k << 12);
                    d.set_size(4096);
                    d.set_tag(k);
                    reqs.push(r);
                }
                // The pool is empty until the peer puts some back.
                Err(xseg_shm::TransportError::Busy(_)) => wd.spin_until(|| true)?,
                Err(e) => return Err(e.into()),
            }
        }
        client
            .submit_batch(&mut reqs)
            .map_err(|(_, e)| e)
            .context("submit")
    })?;
    peer.wait()?;
    Ok(stats)
}

fn stream_peer(args: &PeerArgs) -> Result<()> {
    let wd = args.setup();
    let name = SegmentName::parse(args.get("segment")?)?;
    let seg = Arc::new(Segment::attach(&name, None)?);
    let server = seg.bind(SERVER)?;
    let mut reqs = Vec::with_capacity(BATCH as usize);
    let mut expect = 1;
    let mut left = args.rounds * BATCH;
    while left > 0 {
        let n = wait_for(&server, IdlePolicy::Yield, &wd, || {
            let n = server.accept_batch(&mut reqs, BATCH as usize);
            (n > 0).then_some(n)
        })?;
        for r in reqs.drain(..) {
            ensure!(
                server.desc(&r).tag() == expect,
                "stream: got {} for {expect}",
                server.desc(&r).tag()
            );
            expect += 1;
            server.put(r);
        }
        left -= n as u64;
    }
    Ok(())
}
