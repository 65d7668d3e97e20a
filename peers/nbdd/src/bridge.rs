//! The xseg bridge: a connection's I/O thread turns NBD requests into
//! xseg requests to vlmcd (volume I/O) and mapperd (block status) on its
//! own dynamic port, keeps a bounded number in flight, and writes each
//! reply as soon as its request is done, in any order.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

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

/// One xseg request to send.
struct Piece {
    id: u64,
    offset: u64,
    len: u64,
    /// Offset in the request's data.
    at: usize,
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
    /// Sub-request tag → (request id, piece's offset in the data).
    tags: HashMap<u64, (u64, usize)>,
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
            tags: HashMap::new(),
            next_tag: 1,
        })
    }

    pub(crate) fn run(&mut self, rx: Receiver<Job>) {
        let mut open = true;
        loop {
            // Take new requests while there is room.
            while open && self.backlog.len() + self.q.in_flight() < self.q.depth() {
                let idle = self.q.in_flight() == 0 && self.backlog.is_empty();
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
            self.submit_backlog();
            if self.q.in_flight() > 0 {
                for c in self.q.complete(64, Duration::from_millis(20)) {
                    self.completed(c.user_tag, c.result);
                }
            } else if !self.backlog.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            } else if !open {
                return;
            }
        }
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
            }),
            Kind::Status => {
                let n = len.min(BLOCK_STATUS_MAX);
                pieces.push(Piece {
                    id,
                    offset,
                    len: n,
                    at: 0,
                })
            }
        }
        let remaining = pieces.len();
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
        self.backlog.extend(pieces);
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
                    self.tags.insert(tag, (p.id, p.at));
                }
                Err(e) if e.code == ErrorCode::Busy => {
                    self.backlog.push_front(p);
                    return;
                }
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
        let Some((id, at)) = self.tags.remove(&tag) else {
            return;
        };
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
        match (&a.job.kind, a.error) {
            (Kind::Read | Kind::Status, Some(e)) if self.structured => {
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
