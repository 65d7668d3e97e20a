//! The xseg bridge: a connection's I/O thread turns NBD requests into
//! xseg requests to vlmcd (volume I/O) and mapperd (block status) on its
//! own dynamic port, keeps a bounded number in flight, and writes each
//! reply as soon as its request is done, in any order.
//!
//! **A peer's death is retried, not reported.** A piece that fails with
//! `PeerDied` (the peer died holding it, or nobody serves its port yet)
//! is sent again, after a back-off ([`RETRY_FIRST`] doubling to
//! [`RETRY_MAX`]), until the supervisor has the peer back; only when it
//! has failed for [`PEER_RETRY_WINDOW`] does the client get `EIO`. NBD
//! orders nothing between requests in flight, so sending a write again is
//! safe, with one rule kept here: a FLUSH is sent only once every WRITE,
//! TRIM and WRITE_ZEROES received before it on the connection is finished
//! (replied to), so no write is ever (re-)applied after a FLUSH that
//! followed it was acknowledged. (vlmcd's FLUSH drains the volume's writes
//! in flight anyway, so holding it back costs at most one round trip.)
//! A piece that vlmcd failed as `Busy` (no buffers for its sub-requests
//! while other large requests hold them) is retried the same way: a full
//! pool is back-pressure, never an error the guest sees.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use archipelago_client::{Call, IoQueue};
use archipelago_protocol::payload::{
    decode_extents, map_reply_room, LockOwner, MapExtent, Payload,
};
use archipelago_protocol::{Error, ErrorCode, Flags, Op};

use crate::proto::*;
use crate::server::{Export, Server};
use crate::sock::Sock;
use crate::transmission::{Job, Kind};
use crate::{errno, BLOCK_STATUS_MAX};

/// A request being served.
struct Active {
    job: Job,
    remaining: usize,
    error: Option<u32>,
    /// READ: the data.
    data: Vec<u8>,
    /// BLOCK_STATUS: (length, flags) descriptors.
    extents: Vec<(u32, u32)>,
}

/// How long a piece failing with `PeerDied` is retried before the client
/// gets `EIO` (the supervisor restarts a peer within a second at first,
/// after 8 s at most when it keeps crashing).
pub const PEER_RETRY_WINDOW: Duration = Duration::from_secs(30);
/// First wait before a retry.
pub const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest wait between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(1);
/// Wait before sending a `Busy` piece again: buffers come back as soon as
/// requests in flight complete, so no back-off.
pub const BUSY_RETRY: Duration = Duration::from_millis(2);

/// One xseg request to send.
#[derive(Debug, Clone, Copy)]
struct Piece {
    id: u64,
    offset: u64,
    len: u64,
    /// Offset in the request's data.
    at: usize,
    /// When it first failed with `PeerDied`, and how many times.
    failed: Option<(Instant, u32)>,
}

impl Kind {
    /// WRITE, TRIM and WRITE_ZEROES: what a later FLUSH must cover.
    fn mutates(&self) -> bool {
        matches!(self, Kind::Write(_) | Kind::Trim | Kind::Zeroes)
    }
}

pub(crate) struct IoWorker {
    q: IoQueue,
    export: Export,
    structured: bool,
    vlmcd: u32,
    mapperd: u32,
    max_block: u64,
    max_reply: u64,
    w: Sock,
    dead: bool,
    next: u64,
    active: HashMap<u64, Active>,
    backlog: VecDeque<Piece>,
    /// Pieces waiting to be sent again after a `PeerDied`, with when.
    retry: VecDeque<(Instant, Piece)>,
    /// FLUSHes waiting for the mutating requests received before them.
    held: VecDeque<Piece>,
    /// Sub-request tag → the piece it carries.
    tags: HashMap<u64, Piece>,
    next_tag: u64,
}

impl IoWorker {
    pub(crate) fn new(
        server: &Server,
        export: Export,
        structured: bool,
        w: Sock,
    ) -> Result<IoWorker, Error> {
        let q = IoQueue::connect(&server.settings.segment)?.with_depth(server.settings.depth);
        let max_reply = q.port().segment().max_buffer();
        Ok(IoWorker {
            q,
            export,
            structured,
            vlmcd: server.settings.vlmcd,
            mapperd: server.settings.mapperd,
            max_block: u64::from(server.max_block),
            max_reply,
            w,
            dead: false,
            next: 1,
            active: HashMap::new(),
            backlog: VecDeque::new(),
            retry: VecDeque::new(),
            held: VecDeque::new(),
            tags: HashMap::new(),
            next_tag: 1,
        })
    }

    pub(crate) fn run(&mut self, rx: Receiver<Job>) {
        let mut open = true;
        loop {
            // Take new requests while there is room.
            while open && self.waiting() + self.q.in_flight() < self.q.depth() {
                let idle = self.q.in_flight() == 0 && self.waiting() == 0;
                // Blocks at once: polling here (yielding) was measured to
                // slow a queue depth of 1 by a third, as it takes the CPU
                // from the connection thread that brings the next request.
                let job = if idle {
                    match rx.recv() {
                        Ok(j) => j,
                        Err(_) => {
                            open = false;
                            break;
                        }
                    }
                } else {
                    match rx.try_recv() {
                        Ok(j) => j,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                };
                self.start(job);
            }
            self.release();
            self.submit_backlog();
            if self.q.in_flight() > 0 {
                for c in self.q.complete(64, Duration::from_millis(20)) {
                    self.completed(c.user_tag, c.result);
                }
            } else if self.waiting() > 0 {
                let pause = self
                    .retry
                    .iter()
                    .map(|(at, _)| at.saturating_duration_since(Instant::now()))
                    .min()
                    .unwrap_or(Duration::ZERO)
                    .clamp(Duration::from_millis(1), Duration::from_millis(20));
                std::thread::sleep(pause);
            } else if !open {
                return;
            }
        }
    }

    /// Pieces not in flight: to send, to retry, or held FLUSHes.
    fn waiting(&self) -> usize {
        self.backlog.len() + self.retry.len() + self.held.len()
    }

    /// Moves retries that are due, and FLUSHes nothing holds back any
    /// more, to the backlog.
    fn release(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.retry.len() {
            if self.retry[i].0 <= now {
                let (_, p) = self.retry.remove(i).expect("in range");
                self.backlog.push_back(p);
            } else {
                i += 1;
            }
        }
        while let Some(p) = self.held.front() {
            if self.mutations_before(p.id) {
                break;
            }
            let p = self.held.pop_front().expect("a front");
            self.backlog.push_back(p);
        }
    }

    /// Whether a WRITE, TRIM or WRITE_ZEROES received before request `id`
    /// is unfinished.
    fn mutations_before(&self, id: u64) -> bool {
        self.active
            .iter()
            .any(|(&other, a)| other < id && a.job.kind.mutates())
    }

    /// A piece failed with `error`: schedules it again if the peer died and
    /// the retry window is open; returns whether it did.
    fn retried(&mut self, p: Piece, error: &archipelago_protocol::Error) -> bool {
        // A dead peer comes back (the supervisor restarts it); a busy one
        // (vlmcd out of buffers for the sub-requests of large requests)
        // frees them as its requests complete: back-pressure, never an
        // error a guest should see.
        if !matches!(error.code, ErrorCode::PeerDied | ErrorCode::Busy) || self.dead {
            return false;
        }
        let now = Instant::now();
        let (first, n) = p.failed.unwrap_or((now, 0));
        if now.duration_since(first) > PEER_RETRY_WINDOW {
            log::warn!(
                "{}: giving up after {n} retries over {PEER_RETRY_WINDOW:?}: {error}",
                self.export.name
            );
            return false;
        }
        if n == 0 && error.code == ErrorCode::PeerDied {
            log::warn!(
                "{}: {error}; retrying until the peer is back",
                self.export.name
            );
        }
        let wait = if error.code == ErrorCode::Busy {
            BUSY_RETRY
        } else {
            RETRY_FIRST.saturating_mul(1 << n.min(5)).min(RETRY_MAX)
        };
        self.retry.push_back((
            now + wait,
            Piece {
                failed: Some((first, n + 1)),
                ..p
            },
        ));
        true
    }

    fn start(&mut self, job: Job) {
        let id = self.next;
        self.next += 1;
        let h = job.h;
        let (offset, len) = (h.offset, u64::from(h.length));
        let mut pieces = Vec::new();
        let mut data = Vec::new();
        let mut error = None;
        let mut split = |max: u64| {
            let mut at = 0;
            while at < len {
                let n = max.min(len - at);
                pieces.push(Piece {
                    id,
                    offset: offset + at,
                    len: n,
                    at: at as usize,
                    failed: None,
                });
                at += n;
            }
        };
        match &job.kind {
            Kind::Failed(e) => error = Some(*e),
            Kind::Read => {
                data = vec![0u8; len as usize];
                split(self.max_block);
            }
            Kind::Write(_) => split(self.max_block),
            // Zeroing needs no buffer: larger pieces are fine.
            Kind::Trim | Kind::Zeroes => split(self.max_block.max(64 << 20)),
            Kind::Flush => pieces.push(Piece {
                id,
                offset: 0,
                len: 0,
                at: 0,
                failed: None,
            }),
            Kind::Status => {
                let n = len.min(BLOCK_STATUS_MAX);
                pieces.push(Piece {
                    id,
                    offset,
                    len: n,
                    at: 0,
                    failed: None,
                })
            }
        }
        let remaining = pieces.len();
        let flush = matches!(job.kind, Kind::Flush);
        self.active.insert(
            id,
            Active {
                job,
                remaining,
                error,
                data,
                extents: Vec::new(),
            },
        );
        if flush && (!self.held.is_empty() || self.mutations_before(id)) {
            self.held.extend(pieces);
        } else {
            self.backlog.extend(pieces);
        }
        if remaining == 0 {
            self.finish(id);
        }
    }

    fn submit_backlog(&mut self) {
        while let Some(p) = self.backlog.pop_front() {
            let tag = self.next_tag;
            let Some(a) = self.active.get(&p.id) else {
                continue;
            };
            let name = self.export.name.as_str();
            let r = match &a.job.kind {
                Kind::Read => self.q.submit_read(self.vlmcd, name, p.offset, p.len, tag),
                Kind::Write(d) => self.q.submit_write(
                    self.vlmcd,
                    name,
                    p.offset,
                    &d[p.at..p.at + p.len as usize],
                    a.job.h.flags & CMD_FLAG_FUA != 0,
                    tag,
                ),
                Kind::Flush => self.q.submit_flush(self.vlmcd, name, tag),
                // FUA is honoured on these too: the zeros vlmcd writes to
                // partly covered objects must be durable before the reply.
                Kind::Trim | Kind::Zeroes => {
                    let op = if matches!(a.job.kind, Kind::Trim) {
                        Op::Discard
                    } else {
                        Op::WriteZeroes
                    };
                    let fua = a.job.h.flags & CMD_FLAG_FUA != 0;
                    self.q.submit(
                        &Call {
                            offset: p.offset,
                            size: p.len,
                            flags: if fua { Flags::FUA } else { Flags::NONE },
                            reply_room: LockOwner::SIZE as u64,
                            ..Call::new(self.vlmcd, op, name.as_bytes())
                        },
                        tag,
                    )
                }
                Kind::Status => {
                    let room = map_reply_room(p.len, self.max_reply);
                    self.q.submit(
                        &Call {
                            offset: p.offset,
                            size: p.len,
                            reply_room: room,
                            ..Call::new(self.mapperd, Op::MapRead, name.as_bytes())
                        },
                        tag,
                    )
                }
                Kind::Failed(_) => Ok(()),
            };
            match r {
                Ok(()) => {
                    self.next_tag += 1;
                    self.tags.insert(tag, p);
                }
                Err(e) if e.code == ErrorCode::Busy => {
                    self.backlog.push_front(p);
                    return;
                }
                Err(e) if self.retried(p, &e) => {}
                Err(e) => {
                    let a = self.active.get_mut(&p.id).expect("active");
                    a.error.get_or_insert(errno(e.code));
                    a.remaining -= 1;
                    if a.remaining == 0 {
                        self.finish(p.id);
                    }
                }
            }
        }
    }

    fn completed(&mut self, tag: u64, result: Result<archipelago_client::CompletedData, Error>) {
        let Some(p) = self.tags.remove(&tag) else {
            return;
        };
        let (id, at) = (p.id, p.at);
        if let Err(e) = &result {
            if self.active.contains_key(&id) && self.retried(p, e) {
                return;
            }
        }
        let Some(a) = self.active.get_mut(&id) else {
            return;
        };
        match result {
            Err(e) => {
                log::debug!("{}: {e}", self.export.name);
                a.error.get_or_insert(errno(e.code));
            }
            Ok(c) => match a.job.kind {
                Kind::Read => {
                    let n = c.data.len().min(a.data.len() - at);
                    a.data[at..at + n].copy_from_slice(&c.data[..n]);
                }
                Kind::Status => match decode_extents(&c.data) {
                    Ok(extents) => {
                        let want = a.job.h.flags & CMD_FLAG_REQ_ONE != 0;
                        for e in extents {
                            if e.len == 0 {
                                continue;
                            }
                            let flags = if e.flags & MapExtent::ZERO != 0 {
                                STATE_HOLE | STATE_ZERO
                            } else {
                                0
                            };
                            match a.extents.last_mut() {
                                Some(last) if last.1 == flags => last.0 += e.len as u32,
                                _ => a.extents.push((e.len as u32, flags)),
                            }
                        }
                        if want {
                            a.extents.truncate(1);
                        }
                        if a.extents.is_empty() {
                            a.error.get_or_insert(EIO);
                        }
                    }
                    Err(_) => {
                        a.error.get_or_insert(EIO);
                    }
                },
                _ => {}
            },
        }
        a.remaining -= 1;
        if a.remaining == 0 {
            self.finish(id);
        }
    }

    /// Sends the reply of request `id`.
    fn finish(&mut self, id: u64) {
        let a = self.active.remove(&id).expect("active");
        if self.dead {
            return;
        }
        let h = a.job.h;
        let mut out = Vec::new();
        let mut payload: &[u8] = &[];
        // With structured replies negotiated, a READ or BLOCK_STATUS must
        // be answered with structured chunks, errors included (those
        // refused before any I/O, `Kind::Failed`, too).
        let structured_only = self.structured && matches!(h.kind, CMD_READ | CMD_BLOCK_STATUS);
        match (&a.job.kind, a.error) {
            (_, Some(e)) if structured_only => {
                out = structured_error(h.handle, e);
            }
            (Kind::Read, None) if self.structured => {
                out = structured_header(
                    h.handle,
                    REPLY_FLAG_DONE,
                    REPLY_TYPE_OFFSET_DATA,
                    8 + a.data.len() as u32,
                );
                out.extend_from_slice(&h.offset.to_be_bytes());
                payload = &a.data;
            }
            (Kind::Read, None) => {
                out = simple_reply(h.handle, 0);
                payload = &a.data;
            }
            (Kind::Status, None) => {
                out = structured_header(
                    h.handle,
                    REPLY_FLAG_DONE,
                    REPLY_TYPE_BLOCK_STATUS,
                    4 + 8 * a.extents.len() as u32,
                );
                out.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
                for (len, flags) in &a.extents {
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&flags.to_be_bytes());
                }
            }
            (_, e) => out.extend_from_slice(&simple_reply(h.handle, e.unwrap_or(0))),
        }
        let r = write_all2(&mut self.w, &out, payload);
        if let Err(e) = r {
            log::debug!("{}: writing a reply: {e}", self.export.name);
            self.dead = true;
            self.w.shutdown();
        }
    }
}

/// Writes `head` then `body` with as few system calls as the socket takes
/// (one `writev` for a reply that fits): the client wakes once per reply,
/// not once for its header and again for its data.
fn write_all2(w: &mut impl Write, mut head: &[u8], mut body: &[u8]) -> io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let n = w.write_vectored(&[io::IoSlice::new(head), io::IoSlice::new(body)])?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    Ok(())
}
