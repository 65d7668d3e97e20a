//! Many requests in flight from one port: [`IoQueue`].
//!
//! An [`IoQueue`] binds its own dynamic port, like [`Client`](crate::Client),
//! but does not wait after sending: `submit_*` queue a request at its
//! destination and return, [`complete`](IoQueue::complete) (or
//! [`complete_with`](IoQueue::complete_with), which does not copy the data)
//! collects the replies, in whatever order they arrive. Each request
//! carries a caller's `user_tag` (any `u64`, need not be unique), returned
//! with its completion; internally requests get tags of their own, and
//! replies are matched by those.
//!
//! **Depth.** At most [`depth`](IoQueue::depth) requests are in flight; a
//! submit beyond that returns [`ErrorCode::Busy`] at once (nothing was
//! sent): complete some and submit again. A submit also returns `Busy` when
//! the segment has no free descriptor or buffer, or the destination's queue
//! is full.
//!
//! **Bounded.** Every request completes, and `complete` waits no longer
//! than its timeout (rounded up to the doorbell's sleep, 200 ms at most):
//! - while waiting, `complete` looks (at most every
//!   [`HEALTH_CHECK_INTERVAL`]) at every destination with requests in
//!   flight. If its owner died, it recovers the port (which fails back the
//!   requests the peer had accepted: they complete with
//!   [`ErrorCode::PeerDied`]), and takes back the requests still waiting
//!   in its queue (completed with `PeerDied` too). A destination nobody
//!   owns any more (someone else recovered it, or its peer exited) has its
//!   queued requests taken back the same way;
//! - a request without a reply after the queue's request timeout
//!   ([`with_timeout`](IoQueue::with_timeout), 30 s by default) completes
//!   with [`ErrorCode::Busy`] if it is still queued (taken back: it never
//!   reached the peer) or is a read (abandoned: a late reply is put back
//!   unread). A write, discard or other change a live peer accepted is
//!   never abandoned: it could still land over data the caller writes
//!   next, so the queue keeps waiting for it (or for the peer's death).
//!
//! Idle waits sleep on the port's doorbell (woken by replies, or after the
//! doorbell's own timeout of a few hundred milliseconds); nothing spins.
//!
//! ```no_run
//! use std::time::Duration;
//! use archipelago_client::IoQueue;
//! let mut q = IoQueue::connect("archipelago").unwrap().with_depth(64);
//! for i in 0..32u64 {
//!     q.submit_write(4, "vol", i * 4096, &[i as u8; 4096], false, i).unwrap();
//! }
//! while q.in_flight() > 0 {
//!     for c in q.complete(32, Duration::from_secs(1)) {
//!         c.result.unwrap();
//!     }
//! }
//! // Reads without copying: the data is lent until the closure returns.
//! q.submit_read(4, "vol", 0, 4 << 20, 7).unwrap();
//! q.complete_with(1, Duration::from_secs(30), |tag, result| {
//!     let data = result.unwrap().data;
//!     assert_eq!(tag, 7);
//!     let _ = data.len();
//! });
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archipelago_protocol::{Error, ErrorCode, Flags, Op};
use xseg_shm::{status, Idle, IdlePolicy, Port, Request, Segment, DEFAULT_IDLE_POLLS};

use crate::Call;

/// How often, at most, `complete` checks destinations for a dead owner
/// and requests for their timeout.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Default queue depth.
pub const DEFAULT_DEPTH: usize = 128;

/// A finished request's result, with its data copied out
/// (see [`IoQueue::complete`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedData {
    /// Bytes the peer reports done.
    pub serviced: u64,
    /// Reads: the bytes read (`len` of them). Writes, flushes, discards:
    /// empty. Generic [`submit`](IoQueue::submit): the whole data buffer
    /// after the call.
    pub data: Vec<u8>,
}

/// A finished request's result, its data lent from the shared buffer
/// (see [`IoQueue::complete_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedRef<'a> {
    /// Bytes the peer reports done.
    pub serviced: u64,
    /// As [`CompletedData::data`], borrowed: valid until the closure
    /// returns, then the descriptor and its buffer go back to the pool.
    pub data: &'a [u8],
}

/// One finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The tag given at submit.
    pub user_tag: u64,
    /// What came of it.
    pub result: Result<CompletedData, Error>,
}

/// A request in flight.
#[derive(Debug)]
struct Pending {
    user_tag: u64,
    dst: u32,
    /// The descriptor, to take it back while it is still queued.
    index: u32,
    /// Bytes of the reply buffer to hand over.
    keep: usize,
    deadline: Instant,
    /// Whether the op changes data (see `check_timeouts`).
    mutates: bool,
}

/// A port with many requests in flight; see the [module docs](self).
pub struct IoQueue {
    port: Port,
    depth: usize,
    timeout: Duration,
    next_tag: u64,
    pending: HashMap<u64, Pending>,
    /// Completions decided here (taken back, timed out), not yet returned.
    failed: VecDeque<(u64, Error)>,
    last_check: Instant,
    /// How a wait for completions idles: yield the CPU on an empty poll,
    /// sleep on the doorbell after a run of them, as the peers do (a
    /// sleeping waiter costs a futex wake-up, tens of microseconds on a
    /// VM, per reply).
    idle: Idle,
    scratch: Vec<Request>,
}

impl std::fmt::Debug for IoQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoQueue")
            .field("port", &self.port)
            .field("depth", &self.depth)
            .field("in_flight", &self.pending.len())
            .finish()
    }
}

impl IoQueue {
    /// Attaches to `segment` (name or path) and binds a dynamic port.
    pub fn connect(segment: &str) -> Result<IoQueue, Error> {
        IoQueue::bind(&archipelago_wire::attach(segment)?)
    }

    /// Binds a dynamic port of an attached segment.
    pub fn bind(segment: &Arc<Segment>) -> Result<IoQueue, Error> {
        let port = segment
            .bind_dynamic()
            .map_err(|e| Error::with(ErrorCode::Busy, e.to_string()))?;
        Ok(IoQueue {
            port,
            depth: DEFAULT_DEPTH,
            timeout: Duration::from_secs(30),
            next_tag: 1,
            pending: HashMap::new(),
            failed: VecDeque::new(),
            last_check: Instant::now(),
            idle: Idle::new(IdlePolicy::Yield, DEFAULT_IDLE_POLLS),
            scratch: Vec::new(),
        })
    }

    /// Sets the most requests in flight (at least 1).
    pub fn with_depth(mut self, depth: usize) -> IoQueue {
        self.depth = depth.max(1);
        self
    }

    /// Sets how long a request may wait for its reply (from its submit)
    /// before it completes with [`ErrorCode::Busy`].
    pub fn with_timeout(mut self, timeout: Duration) -> IoQueue {
        self.timeout = timeout;
        self
    }

    /// The most requests in flight.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Requests submitted whose completion was not returned yet.
    pub fn in_flight(&self) -> usize {
        self.pending.len() + self.failed.len()
    }

    /// The queue's port.
    pub fn port(&self) -> &Port {
        &self.port
    }

    /// Sends `call`; its completion carries the whole data buffer.
    pub fn submit(&mut self, call: &Call<'_>, user_tag: u64) -> Result<(), Error> {
        self.start(call, user_tag, usize::MAX)
    }

    /// READ `len` bytes of volume (or object) `name` at `offset`.
    pub fn submit_read(
        &mut self,
        dst: u32,
        name: &str,
        offset: u64,
        len: u64,
        user_tag: u64,
    ) -> Result<(), Error> {
        let call = Call {
            offset,
            size: len,
            reply_room: len,
            ..Call::new(dst, Op::Read, name.as_bytes())
        };
        let keep = usize::try_from(len).unwrap_or(usize::MAX);
        self.start(&call, user_tag, keep)
    }

    /// WRITE `data` into `name` at `offset`; `fua` makes it durable before
    /// the reply. The data is copied into the request's buffer.
    pub fn submit_write(
        &mut self,
        dst: u32,
        name: &str,
        offset: u64,
        data: &[u8],
        fua: bool,
        user_tag: u64,
    ) -> Result<(), Error> {
        let call = Call {
            offset,
            size: data.len() as u64,
            flags: if fua { Flags::FUA } else { Flags::NONE },
            data,
            ..Call::new(dst, Op::Write, name.as_bytes())
        };
        self.start(&call, user_tag, 0)
    }

    /// FLUSH volume `name`: completes once the writes in flight before it
    /// have finished and everything written is durable.
    pub fn submit_flush(&mut self, dst: u32, name: &str, user_tag: u64) -> Result<(), Error> {
        self.start(&Call::new(dst, Op::Flush, name.as_bytes()), user_tag, 0)
    }

    /// DISCARD `len` bytes of volume `name` at `offset` (a peer that does
    /// not implement it completes it with its error).
    pub fn submit_discard(
        &mut self,
        dst: u32,
        name: &str,
        offset: u64,
        len: u64,
        user_tag: u64,
    ) -> Result<(), Error> {
        let call = Call {
            offset,
            size: len,
            ..Call::new(dst, Op::Discard, name.as_bytes())
        };
        self.start(&call, user_tag, 0)
    }

    fn start(&mut self, call: &Call<'_>, user_tag: u64, keep: usize) -> Result<(), Error> {
        if self.in_flight() >= self.depth {
            return Err(Error::with(
                ErrorCode::Busy,
                format!("{} requests in flight (the queue's depth)", self.depth),
            ));
        }
        let tag = self.next_tag;
        self.next_tag = tag.wrapping_add(1);
        let index = archipelago_wire::submit(&self.port, call, tag)?;
        self.pending.insert(
            tag,
            Pending {
                user_tag,
                dst: call.dst,
                index,
                keep,
                deadline: Instant::now() + self.timeout,
                mutates: call.op.spec().mutates,
            },
        );
        Ok(())
    }

    /// Waits (at most `timeout`) until at least one request completes, and
    /// returns up to `max` completions, data copied out. Returns at once,
    /// empty, if nothing is in flight; empty after `timeout` if nothing
    /// completed (a zero `timeout` polls).
    pub fn complete(&mut self, max: usize, timeout: Duration) -> Vec<Completion> {
        let mut out = Vec::new();
        self.complete_with(max, timeout, |user_tag, result| {
            out.push(Completion {
                user_tag,
                result: result.map(|r| CompletedData {
                    serviced: r.serviced,
                    data: r.data.to_vec(),
                }),
            });
        });
        out
    }

    /// Like [`complete`](Self::complete) without copying: calls `f` with
    /// each completion's user tag and result, whose data is lent from the
    /// shared buffer for the call's duration. Returns how many completed.
    pub fn complete_with(
        &mut self,
        max: usize,
        timeout: Duration,
        mut f: impl FnMut(u64, Result<CompletedRef<'_>, Error>),
    ) -> usize {
        let deadline = Instant::now() + timeout;
        let mut done = 0;
        while done < max {
            if self.last_check.elapsed() >= HEALTH_CHECK_INTERVAL {
                self.last_check = Instant::now();
                self.check_peers();
                self.check_timeouts();
            }
            done += self.harvest(max - done, &mut f);
            if done > 0 {
                self.idle.busy();
                break;
            }
            if self.in_flight() == 0 || Instant::now() >= deadline {
                break;
            }
            // Yields, or sleeps until a reply or the doorbell's timeout
            // (for the next health check).
            self.idle.idle(&self.port);
        }
        done
    }

    /// Hands over up to `max` completions decided here or arrived.
    fn harvest(
        &mut self,
        max: usize,
        f: &mut impl FnMut(u64, Result<CompletedRef<'_>, Error>),
    ) -> usize {
        let mut done = 0;
        while done < max {
            let Some((user_tag, e)) = self.failed.pop_front() else {
                break;
            };
            f(user_tag, Err(e));
            done += 1;
        }
        while done < max {
            let mut batch = std::mem::take(&mut self.scratch);
            if self.port.receive_batch(&mut batch, max - done) == 0 {
                self.scratch = batch;
                break;
            }
            for r in batch.drain(..) {
                let tag = self.port.desc(&r).tag();
                match self.pending.remove(&tag) {
                    Some(p) => {
                        self.deliver(&r, &p, f);
                        done += 1;
                    }
                    // A reply to a request given up on (timed out).
                    None => log::debug!("port {}: stale reply tag {tag}", self.port.number()),
                }
                self.port.put(r);
            }
            self.scratch = batch;
        }
        done
    }

    fn deliver(
        &self,
        r: &Request,
        p: &Pending,
        f: &mut impl FnMut(u64, Result<CompletedRef<'_>, Error>),
    ) {
        let d = self.port.desc(r);
        let data = self.port.data(r);
        if d.status() == status::SERVED {
            let data = &data[..p.keep.min(data.len())];
            f(
                p.user_tag,
                Ok(CompletedRef {
                    serviced: d.serviced(),
                    data,
                }),
            );
        } else {
            let error = archipelago_wire::reply::error_of(d, || {
                String::from_utf8_lossy(d.target().as_bytes()).into_owned()
            });
            f(p.user_tag, Err(error));
        }
    }

    /// Recovers destinations whose owner died and takes back the requests
    /// still queued at destinations nobody owns.
    fn check_peers(&mut self) {
        let mut dsts: Vec<u32> = self.pending.values().map(|p| p.dst).collect();
        dsts.sort_unstable();
        dsts.dedup();
        let seg = self.port.segment().clone();
        for dst in dsts {
            if let Some(pid) = seg.dead_owner(dst) {
                match seg.recover(dst) {
                    Ok(report) => {
                        log::warn!("port {dst}: its peer (pid {pid}) died; recovered: {report:?}")
                    }
                    Err(e) => log::debug!("port {dst}: {e}"),
                }
            } else if seg.live_owner(dst).is_some() {
                continue;
            }
            // Nobody serves `dst` now: what it accepted was failed back
            // (its replies are in our ring or on their way); take back
            // what waits in its queue.
            self.take_back(
                |p| p.dst == dst,
                || Error::with(ErrorCode::PeerDied, format!("the peer on port {dst} died")),
            );
        }
    }

    /// Completes requests past their deadline with `Busy`.
    fn check_timeouts(&mut self) {
        let now = Instant::now();
        if self.pending.values().all(|p| p.deadline > now) {
            return;
        }
        let timeout = self.timeout;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&t, _)| t)
            .collect();
        for tag in expired {
            let p = self.pending.get_mut(&tag).expect("listed");
            if let Some(r) = self.port.cancel(p.index) {
                // Still queued: it never reached the peer.
                self.port.put(r);
            } else if p.mutates {
                // Accepted by a live peer: it may still land. Reporting it
                // failed now would let the caller write the range again and
                // have this one land over the newer data, so keep waiting
                // (the peer's death, if it comes, ends the wait).
                log::warn!(
                    "port {}: a write is taking longer than {timeout:?}; still waiting",
                    p.dst
                );
                p.deadline = now + timeout;
                continue;
            }
            // A read accepted meanwhile: its late reply is put back as stale.
            let p = self.pending.remove(&tag).expect("listed");
            self.failed.push_back((
                p.user_tag,
                Error::with(
                    ErrorCode::Busy,
                    format!("no reply from port {} within {timeout:?}", p.dst),
                ),
            ));
        }
    }

    /// Takes back the queued requests `which` selects, failing them with
    /// `error()`.
    fn take_back(&mut self, which: impl Fn(&Pending) -> bool, error: impl Fn() -> Error) {
        let tags: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| which(p))
            .map(|(&t, _)| t)
            .collect();
        for tag in tags {
            let index = self.pending[&tag].index;
            if let Some(r) = self.port.cancel(index) {
                self.port.put(r);
                let p = self.pending.remove(&tag).expect("listed");
                self.failed.push_back((p.user_tag, error()));
            }
        }
    }
}
