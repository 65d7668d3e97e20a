//! The peer loop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archipelago_protocol::payload::{Payload, StatsReply};
use archipelago_protocol::{Error, ErrorCode, Flags, Op, PROTOCOL_VERSION};
use crossbeam_channel::{Receiver, Sender};
use xseg_shm::{
    code, status, Detached, Idle, Port, PortError, Rejected, Request, Segment, SegmentError,
    SegmentName,
};

use crate::args::PeerArgs;

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// Served; this many bytes done.
    Served(u64),
    /// Failed.
    Failed(Error),
}

impl From<Result<u64, Error>> for Done {
    fn from(r: Result<u64, Error>) -> Done {
        match r {
            Ok(n) => Done::Served(n),
            Err(e) => Done::Failed(e),
        }
    }
}

/// The peer's own logic.
pub trait Handler {
    /// Serves an accepted request (never PING or STATS, which the runtime
    /// answers; `op` is a known op with known flags). Return the request
    /// and its outcome to complete it now; or keep it and complete it later
    /// with [`Ctx::complete`] (e.g. when sub-requests come back); or detach
    /// it ([`Port::detach`]) and hand it to a worker that completes it with
    /// the [`Completer`].
    fn handle(&mut self, ctx: &mut Ctx<'_>, op: Op, req: Request) -> Option<(Request, Done)>;

    /// The reply to a sub-request submitted with [`Ctx::submit`] under
    /// `cookie` (a sub-request to a peer that died comes back failed with
    /// "peer died"). The handler owns `reply` and must put it back.
    fn on_reply(&mut self, ctx: &mut Ctx<'_>, reply: Request, cookie: u64) {
        let _ = cookie;
        ctx.port().put(reply);
    }
}

/// What a handler may do besides answering: submit sub-requests to other
/// peers and complete requests it kept.
pub struct Ctx<'a> {
    port: &'a Port,
    completer: &'a Completer,
    pending: &'a mut HashMap<u32, (u32, u64)>,
    completions: &'a mut Vec<(Request, Done)>,
}

impl Ctx<'_> {
    /// The peer's port.
    pub fn port(&self) -> &Port {
        self.port
    }

    /// The completer for detached requests.
    pub fn completer(&self) -> &Completer {
        self.completer
    }

    /// Submits a sub-request (got from [`Ctx::port`] and filled); its reply
    /// reaches [`Handler::on_reply`] with `cookie`. The wait is bounded: if
    /// the destination's peer dies, the runtime recovers its port and the
    /// reply comes back failed with "peer died".
    pub fn submit(&mut self, req: Request, cookie: u64) -> Result<(), Rejected> {
        let index = req.index();
        let dst = self.port.desc(&req).effective_dst();
        self.port.submit(req)?;
        self.pending.insert(index, (dst, cookie));
        Ok(())
    }

    /// Completes a request this peer accepted and kept.
    pub fn complete(&mut self, req: Request, done: Done) {
        self.completions.push((req, done));
    }
}

/// Finishes detached requests from any thread: the peer's loop responds.
#[derive(Clone)]
pub struct Completer {
    tx: Sender<(Detached, Done)>,
    seg: Arc<Segment>,
    port: u32,
}

impl Completer {
    /// Completes `req` with `done` and wakes the peer's loop.
    pub fn complete(&self, req: Detached, done: Done) {
        if self.tx.send((req, done)).is_ok() {
            self.seg.wake(self.port);
        }
        // A closed channel means the loop is gone; the port's recovery
        // fails the request back.
    }
}

/// Why a peer could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The segment.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The port.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The pid file.
    #[error("pid file {path}: {cause}")]
    Pidfile {
        /// Its path.
        path: PathBuf,
        /// What went wrong.
        cause: String,
    },
    /// Installing signal handlers.
    #[error("installing signal handlers: {0}")]
    Signals(nix::Error),
}

static SHUTDOWN: AtomicBool = AtomicBool::new(false);

/// How often destinations of pending sub-requests are checked for life.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

extern "C" fn on_signal(_: nix::libc::c_int) {
    // Only an atomic store: async-signal-safe. The loop notices within one
    // futex timeout at most (a signal also interrupts the wait).
    SHUTDOWN.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() -> Result<(), PeerError> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; it replaces no handler this process relies on.
        unsafe { sigaction(sig, &action) }.map_err(PeerError::Signals)?;
    }
    Ok(())
}

/// A running peer: its port, counters and lifecycle.
pub struct Peer {
    port: Port,
    args: PeerArgs,
    started: Instant,
    in_flight: u64,
    served: u64,
    failed: u64,
    /// Stage times from the descriptors' timestamps (for STATS).
    timing: Timing,
    done_tx: Sender<(Detached, Done)>,
    done_rx: Receiver<(Detached, Done)>,
    pidfile: Option<PathBuf>,
    /// Sub-requests in flight: descriptor index → (destination, cookie).
    pending: HashMap<u32, (u32, u64)>,
    /// Completions handlers asked for through `Ctx`.
    completions: Vec<(Request, Done)>,
}

impl Peer {
    /// Attaches, binds and prepares to run (see the crate docs).
    pub fn start(args: &PeerArgs) -> Result<Peer, PeerError> {
        let name = SegmentName::parse(&args.segment)?;
        let seg = Arc::new(Segment::attach(&name, Some(PROTOCOL_VERSION))?);
        let port = match seg.bind(args.port) {
            Err(PortError::OwnerDied { port, pid }) => {
                log::warn!("port {port}: previous owner (pid {pid}) died; recovering it");
                match seg.recover(port) {
                    Ok(report) => log::info!("recovered port {port}: {report:?}"),
                    // The supervisor or a client got there first: `bind`
                    // waits for its recovery to end.
                    Err(PortError::Recovering { pid, .. }) => {
                        log::info!("port {port}: process {pid} is recovering it; waiting")
                    }
                    Err(e) => return Err(e.into()),
                }
                seg.bind(port)?
            }
            other => other?,
        };
        let pidfile = match &args.pidfile {
            Some(path) => Some(write_pidfile(path)?),
            None => None,
        };
        install_signal_handlers()?;
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        log::info!(
            "serving port {} of segment {} (pid {})",
            args.port,
            args.segment,
            std::process::id()
        );
        Ok(Peer {
            port,
            args: args.clone(),
            started: Instant::now(),
            in_flight: 0,
            served: 0,
            failed: 0,
            timing: Timing::default(),
            done_tx,
            done_rx,
            pidfile,
            pending: HashMap::new(),
            completions: Vec::new(),
        })
    }

    /// The bound port.
    pub fn port(&self) -> &Port {
        &self.port
    }

    /// A completer for detached requests.
    pub fn completer(&self) -> Completer {
        Completer {
            tx: self.done_tx.clone(),
            seg: self.port.segment().clone(),
            port: self.port.number(),
        }
    }

    /// Whether SIGTERM or SIGINT arrived.
    pub fn shutdown_requested() -> bool {
        SHUTDOWN.load(Ordering::SeqCst)
    }

    /// Serves until a shutdown signal, then drains. Returns `Ok(true)` if
    /// everything in flight finished, `Ok(false)` if the drain deadline
    /// passed with requests still held (the caller should then exit without
    /// unbinding, so the port's next owner recovers them).
    pub fn run(&mut self, handler: &mut impl Handler) -> Result<bool, PeerError> {
        self.run_until(handler, || false)
    }

    /// [`run`](Self::run), also stopping (and draining) once `stop` says
    /// so: for peers embedded in tests and tools.
    pub fn run_until(
        &mut self,
        handler: &mut impl Handler,
        stop: impl Fn() -> bool,
    ) -> Result<bool, PeerError> {
        let completer = self.completer();
        let mut idle = Idle::new(self.args.idle_policy, self.args.idle_polls);
        let mut accepted = Vec::new();
        let mut replies = Vec::new();
        let mut deadline: Option<Instant> = None;
        let mut next_watch = Instant::now();
        loop {
            let stopping = Self::shutdown_requested() || stop();
            if stopping && deadline.is_none() {
                log::info!("stopping: {} request(s) in flight", self.in_flight);
                deadline = Some(Instant::now() + Duration::from_secs(self.args.drain_timeout));
            }
            if stopping && self.in_flight == 0 && self.pending.is_empty() {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                log::warn!(
                    "drain deadline passed with {} request(s) in flight",
                    self.in_flight
                );
                return Ok(false);
            }
            let mut progress = false;
            while let Ok((detached, done)) = self.done_rx.try_recv() {
                self.finish(detached.into_request(), done);
                progress = true;
            }
            if self.port.receive_batch(&mut replies, 64) > 0 {
                progress = true;
                for reply in std::mem::take(&mut replies) {
                    self.reply(handler, reply, &completer);
                }
            }
            if !self.pending.is_empty() && Instant::now() >= next_watch {
                next_watch = Instant::now() + WATCH_INTERVAL;
                progress |= self.watch_destinations(handler, &completer);
            }
            if !stopping {
                let room = (self.args.max_inflight as u64).saturating_sub(self.in_flight) as usize;
                if room > 0 && self.port.accept_batch(&mut accepted, room) > 0 {
                    progress = true;
                    for req in std::mem::take(&mut accepted) {
                        self.in_flight += 1;
                        if let Some((req, done)) = self.dispatch(handler, req, &completer) {
                            self.finish(req, done);
                        }
                        self.flush_completions();
                    }
                }
            }
            if progress {
                idle.busy();
            } else {
                let rx = &self.done_rx;
                idle.idle_unless(&self.port, || !rx.is_empty());
            }
        }
    }

    fn ctx<'a>(&'a mut self, completer: &'a Completer) -> Ctx<'a> {
        Ctx {
            port: &self.port,
            completer,
            pending: &mut self.pending,
            completions: &mut self.completions,
        }
    }

    fn flush_completions(&mut self) {
        for (req, done) in std::mem::take(&mut self.completions) {
            self.finish(req, done);
        }
    }

    fn reply(&mut self, handler: &mut impl Handler, reply: Request, completer: &Completer) {
        let now = self.port.segment().clock().now();
        self.timing.sub_requests += 1;
        self.timing.sub_ticks += now.saturating_sub(self.port.desc(&reply).t_submit());
        match self.pending.remove(&reply.index()) {
            Some((_, cookie)) => handler.on_reply(&mut self.ctx(completer), reply, cookie),
            None => {
                log::warn!(
                    "reply for descriptor {} that was not a pending sub-request; dropped",
                    reply.index()
                );
                self.port.put(reply);
            }
        }
        self.flush_completions();
    }

    /// Recovers destinations of pending sub-requests whose peer died: what
    /// it had accepted comes back failed with "peer died" (as replies);
    /// what was still queued is taken back and failed here.
    fn watch_destinations(&mut self, handler: &mut impl Handler, completer: &Completer) -> bool {
        let seg = self.port.segment().clone();
        let mut dsts: Vec<u32> = self.pending.values().map(|&(d, _)| d).collect();
        dsts.sort_unstable();
        dsts.dedup();
        let mut progress = false;
        for dst in dsts {
            let Some(pid) = seg.dead_owner(dst) else {
                continue;
            };
            match seg.recover(dst) {
                Ok(report) => {
                    log::warn!("port {dst}: its peer (pid {pid}) died; recovered: {report:?}")
                }
                Err(e) => log::debug!("port {dst}: {e}"),
            }
            let queued: Vec<u32> = self
                .pending
                .iter()
                .filter(|(_, &(d, _))| d == dst)
                .map(|(&i, _)| i)
                .collect();
            for index in queued {
                if let Some(req) = self.port.cancel(index) {
                    let d = self.port.desc(&req);
                    d.set_status(status::FAILED);
                    d.set_error(code::PEER_DIED);
                    d.set_serviced(0);
                    self.reply(handler, req, completer);
                    progress = true;
                }
            }
        }
        progress
    }

    fn dispatch(
        &mut self,
        handler: &mut impl Handler,
        req: Request,
        completer: &Completer,
    ) -> Option<(Request, Done)> {
        let d = self.port.desc(&req);
        self.timing.accepted += 1;
        self.timing.queue_ticks += d.t_accept().saturating_sub(d.t_submit());
        let Some(op) = Op::from_code(d.op()) else {
            let e = Error::with(
                ErrorCode::Unsupported,
                format!("unknown op code {}", d.op()),
            );
            return Some((req, Done::Failed(e)));
        };
        if Flags(d.flags()).unknown_bits() != 0 {
            let e = Error::with(
                ErrorCode::InvalidArgument,
                format!("unknown flags {:#x}", d.flags()),
            );
            return Some((req, Done::Failed(e)));
        }
        match op {
            Op::Ping => Some((req, Done::Served(0))),
            Op::Stats => Some(self.stats(req)),
            _ => handler.handle(&mut self.ctx(completer), op, req),
        }
    }

    fn stats(&self, mut req: Request) -> (Request, Done) {
        let clock = self.port.segment().clock();
        let reply = StatsReply {
            // This request is one of them.
            in_flight: self.in_flight,
            served: self.served,
            failed: self.failed,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            pid: u64::from(std::process::id()),
            accepted: self.timing.accepted,
            queue_ns: clock.to_ns(self.timing.queue_ticks),
            service_ns: clock.to_ns(self.timing.service_ticks),
            sub_requests: self.timing.sub_requests,
            sub_ns: clock.to_ns(self.timing.sub_ticks),
        };
        let done = match reply.encode(self.port.data_mut(&mut req)) {
            Ok(()) => Done::Served(StatsReply::SIZE as u64),
            Err(e) => Done::Failed(e),
        };
        (req, done)
    }

    fn finish(&mut self, req: Request, done: Done) {
        self.in_flight -= 1;
        let now = self.port.segment().clock().now();
        self.timing.service_ticks += now.saturating_sub(self.port.desc(&req).t_accept());
        let sent = match done {
            Done::Served(n) => {
                self.served += 1;
                self.port.serve(req, n)
            }
            Done::Failed(e) => {
                self.failed += 1;
                log::debug!("request failed: {e}");
                archipelago_wire::reply::fail_with_detail(&self.port, req, &e)
            }
        };
        if let Err(rejected) = sent {
            // The source's reply ring is full: impossible while rings hold
            // every descriptor; give it back rather than leak it.
            log::warn!("cannot respond: {}; request dropped", rejected.error);
            self.port.put(rejected.request);
        }
    }
}

/// Sums of stage times in segment clock ticks, converted for STATS. The
/// timestamps come from the descriptors (submit, accept) and the segment's
/// clock (now), so each costs one clock read per request, not a syscall.
/// Differences saturate at 0: TSCs of two cores may disagree by a few ticks.
#[derive(Debug, Default)]
struct Timing {
    accepted: u64,
    queue_ticks: u64,
    service_ticks: u64,
    sub_requests: u64,
    sub_ticks: u64,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(p) = &self.pidfile {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn write_pidfile(path: &PathBuf) -> Result<PathBuf, PeerError> {
    let err = |cause: String| PeerError::Pidfile {
        path: path.clone(),
        cause,
    };
    if let Ok(old) = std::fs::read_to_string(path) {
        if let Ok(pid) = old.trim().parse::<u32>() {
            if pid != std::process::id() && xseg_shm::sys::process_start_time(pid).is_some() {
                return Err(err(format!("process {pid} is running")));
            }
        }
    }
    std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| err(e.to_string()))?;
    Ok(path.clone())
}
