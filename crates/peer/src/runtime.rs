//! The peer loop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archipelago_protocol::payload::{Payload, StatsReply};
use archipelago_protocol::{Error, ErrorCode, Flags, Op, PROTOCOL_VERSION};
use crossbeam_channel::{Receiver, Sender};
use xseg_shm::{Detached, Idle, Port, PortError, Request, Segment, SegmentError, SegmentName};

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
    /// and its outcome to complete it now, or `None` after detaching it
    /// ([`Port::detach`]) and handing it to a worker that finishes it with
    /// the [`Completer`].
    fn handle(
        &mut self,
        port: &Port,
        op: Op,
        req: Request,
        completer: &Completer,
    ) -> Option<(Request, Done)>;
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
    done_tx: Sender<(Detached, Done)>,
    done_rx: Receiver<(Detached, Done)>,
    pidfile: Option<PathBuf>,
}

impl Peer {
    /// Attaches, binds and prepares to run (see the crate docs).
    pub fn start(args: &PeerArgs) -> Result<Peer, PeerError> {
        let name = SegmentName::parse(&args.segment)?;
        let seg = Arc::new(Segment::attach(&name, Some(PROTOCOL_VERSION))?);
        let port = match seg.bind(args.port) {
            Err(PortError::OwnerDied { port, pid }) => {
                log::warn!("port {port}: previous owner (pid {pid}) died; recovering it");
                let report = seg.recover(port)?;
                log::info!("recovered port {port}: {report:?}");
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
            done_tx,
            done_rx,
            pidfile,
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
        let completer = self.completer();
        let mut idle = Idle::new(self.args.idle_policy, self.args.idle_polls);
        let mut accepted = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            let stopping = Self::shutdown_requested();
            if stopping && deadline.is_none() {
                log::info!("stopping: {} request(s) in flight", self.in_flight);
                deadline = Some(Instant::now() + Duration::from_secs(self.args.drain_timeout));
            }
            if stopping && self.in_flight == 0 {
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
            if !stopping {
                let room = (self.args.max_inflight as u64).saturating_sub(self.in_flight) as usize;
                if room > 0 && self.port.accept_batch(&mut accepted, room) > 0 {
                    progress = true;
                    for req in accepted.drain(..) {
                        self.in_flight += 1;
                        if let Some((req, done)) = self.dispatch(handler, req, &completer) {
                            self.finish(req, done);
                        }
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

    fn dispatch(
        &mut self,
        handler: &mut impl Handler,
        req: Request,
        completer: &Completer,
    ) -> Option<(Request, Done)> {
        let d = self.port.desc(&req);
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
            _ => handler.handle(&self.port, op, req, completer),
        }
    }

    fn stats(&self, mut req: Request) -> (Request, Done) {
        let reply = StatsReply {
            // This request is one of them.
            in_flight: self.in_flight,
            served: self.served,
            failed: self.failed,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            pid: u64::from(std::process::id()),
        };
        let done = match reply.encode(self.port.data_mut(&mut req)) {
            Ok(()) => Done::Served(StatsReply::SIZE as u64),
            Err(e) => Done::Failed(e),
        };
        (req, done)
    }

    fn finish(&mut self, req: Request, done: Done) {
        self.in_flight -= 1;
        let sent = match done {
            Done::Served(n) => {
                self.served += 1;
                self.port.serve(req, n)
            }
            Done::Failed(e) => {
                self.failed += 1;
                log::debug!("request failed: {e}");
                self.port.fail(req, e.code.code())
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
