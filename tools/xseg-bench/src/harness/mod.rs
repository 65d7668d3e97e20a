//! Generic two-process benchmark harness.
//!
//! * [`pin_to_cpu`] pins the calling thread;
//! * [`measure`] times a "do one round trip" closure and summarises it;
//! * [`Watchdog`] bounds every wait and notices a dead peer process;
//! * [`peer`] re-executes this binary as the other side of a benchmark;
//! * [`shm`] creates the `/dev/shm` files both sides map.

pub mod peer;
pub mod shm;

use std::hint::spin_loop;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{getppid, Pid};

use crate::stats::Stats;

pub use peer::{PeerArgs, PeerCommand};
pub use shm::ShmFile;

/// Pins the calling thread to `cpu`. On failure logs a warning and returns
/// `false`; the benchmark then runs unpinned.
pub fn pin_to_cpu(cpu: usize) -> bool {
    let mut set = CpuSet::new();
    let res = set
        .set(cpu)
        .and_then(|()| sched_setaffinity(Pid::from_raw(0), &set));
    match res {
        Ok(()) => true,
        Err(e) => {
            log::warn!(
                "cannot pin pid {} to CPU {cpu}: {e}; running unpinned",
                std::process::id()
            );
            false
        }
    }
}

/// Runs `round_trip` `warmup` times untimed, then `iters` times timed, and
/// returns the statistics of the per-call durations in nanoseconds.
///
/// One clock read per iteration: each sample is the time between the ends of
/// two consecutive calls, so it includes one `Instant::now()` (~20 ns, vDSO)
/// besides the round trip itself. The first error aborts the measurement.
pub fn measure(
    warmup: u64,
    iters: u64,
    mut round_trip: impl FnMut() -> Result<()>,
) -> Result<Stats> {
    for _ in 0..warmup {
        round_trip()?;
    }
    let mut samples = Vec::with_capacity(usize::try_from(iters)?);
    let mut t0 = Instant::now();
    for _ in 0..iters {
        round_trip()?;
        let t1 = Instant::now();
        samples.push(u64::try_from((t1 - t0).as_nanos()).unwrap_or(u64::MAX));
        t0 = t1;
    }
    Ok(Stats::from_samples(&mut samples))
}

/// Which other process a [`Watchdog`] keeps an eye on.
#[derive(Debug, Clone, Copy)]
enum Watched {
    /// Our child: dead once `waitid(WNOHANG|WNOWAIT)` reports it exited.
    Child(Pid),
    /// Our parent: dead once we are re-parented.
    Parent(Pid),
}

/// Bounds a wait loop: fails once a deadline passes or the peer process died.
///
/// Wait loops call [`Watchdog::check`] every so often (e.g. after each
/// timed-out blocking call) or use [`Watchdog::spin_until`].
#[derive(Debug, Clone)]
pub struct Watchdog {
    deadline: Instant,
    peer: Watched,
}

impl Watchdog {
    /// Watches child `pid` until `deadline` (parent side).
    pub fn for_child(pid: Pid, deadline: Instant) -> Watchdog {
        Watchdog {
            deadline,
            peer: Watched::Child(pid),
        }
    }

    /// Watches our parent for `timeout` from now (peer side).
    pub fn for_parent(timeout: Duration) -> Watchdog {
        Watchdog {
            deadline: Instant::now() + timeout,
            peer: Watched::Parent(getppid()),
        }
    }

    /// Errors if the deadline passed or the peer process is gone.
    pub fn check(&self) -> Result<()> {
        if Instant::now() > self.deadline {
            bail!("watchdog: deadline passed, peer unresponsive");
        }
        match self.peer {
            Watched::Child(pid) => {
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
                match waitid(Id::Pid(pid), flags).context("watchdog: waitid on peer")? {
                    WaitStatus::StillAlive => Ok(()),
                    status => bail!("watchdog: peer {pid} died: {status:?}"),
                }
            }
            Watched::Parent(pid) if getppid() != pid => bail!("watchdog: parent {pid} died"),
            Watched::Parent(_) => Ok(()),
        }
    }

    /// Busy-waits (with `spin_loop` hints) until `cond()` is true, calling
    /// [`check`](Self::check) every 4096 unsuccessful polls.
    #[inline]
    pub fn spin_until(&self, mut cond: impl FnMut() -> bool) -> Result<()> {
        loop {
            for _ in 0..4096 {
                if cond() {
                    return Ok(());
                }
                spin_loop();
            }
            self.check()?;
        }
    }
}
