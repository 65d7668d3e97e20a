//! The composer's handler: one record per client request, keyed by an id
//! that its sub-requests carry (through their cookies), driven by the
//! replies of the mapper and the data blocker.
//!
//! | client op | sub-requests |
//! |---|---|
//! | READ | MAP_READ to the mapper; READ to the blocker per non-zero extent (zero extents are zero-filled here) |
//! | WRITE | MAP_WRITE; WRITE per extent (FUA passed on); MAP_COMMIT of the pending extents once all writes succeeded |
//! | DISCARD, WRITE_ZEROES | DISCARD to the mapper (whole objects get zero entries); WRITE of zeros per extent it returns (the partly covered objects, copy-on-write done by the mapper); MAP_COMMIT of the pending ones, as WRITE. I/O for the barriers |
//! | FLUSH, SYNC, zero-length WRITE with FLUSH | SYNC to the blocker (after the volume's I/O drained) |
//! | CLOSE, SNAPSHOT, DELETE, RENAME, RESIZE, ROLLBACK | copied to the mapper after the volume's I/O drained |
//! | CREATE, INFO, OPEN, CLONE, HASH, UPDATE, LINEAGE, FLATTEN | copied to the mapper at once (a FLATTEN step runs alongside the volume's I/O: the mapper serialises it with the writes) |
//!
//! Data is copied between the client's buffer and each sub-request's own
//! buffer (zero-copy aliasing is a later optimisation).

use std::collections::HashMap;

use archipelago_peer::{Ctx, Done, Handler};
use archipelago_protocol::payload::{
    decode_extents, decode_map_token, encode_commit, map_reply_room, FencedTarget,
};
use archipelago_protocol::{Error, ErrorCode, Flags, Op};
use archipelago_wire::{build, transport_error, Call};
use xseg_shm::{status, Request};

use crate::compose::{class, plan, plan_zeroes, Action, Class, Commits, Gate, Io, Step};

/// Where the composer sends sub-requests.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// The mapper.
    pub mapper: u32,
    /// The blocker holding volume data.
    pub blocker: u32,
}

/// A client request being served.
struct Pending {
    req: Request,
    op: Op,
    class: Class,
    volume: Vec<u8>,
    offset: u64,
    size: u64,
    flags: Flags,
    /// Sub-requests in flight.
    outstanding: usize,
    /// The first failure of a piece.
    error: Option<Error>,
    /// Indexes of the pending extents this write joined.
    pend: Vec<u64>,
    /// Of those, the ones whose outcome is not known yet.
    waiting: usize,
}

/// What a sub-request is for.
#[derive(Debug, Clone, Copy)]
enum Sub {
    Map,
    Data {
        pos: u64,
        len: u64,
        missing_reads_zero: bool,
    },
    Commit {
        index: u64,
    },
    Sync,
    /// SYNC of the mapper's map store (its journal appends), after the
    /// data store's: the request then completes with `serviced`.
    SyncMaps {
        serviced: u64,
    },
    Forward,
}

/// The volume composer.
pub struct Composer {
    ports: Ports,
    next: u64,
    reqs: HashMap<u64, Pending>,
    /// Sub-request cookie → (client request id, what it is for).
    subs: HashMap<u64, (u64, Sub)>,
    gate: Gate<u64>,
    commits: Commits<u64>,
    /// A MAP_COMMIT succeeded since the map store was last synced: the
    /// next FLUSH syncs it (its journal appends) after the data.
    maps_dirty: bool,
}

impl Composer {
    /// A composer sending to `ports`.
    pub fn new(ports: Ports) -> Composer {
        Composer {
            ports,
            next: 1,
            reqs: HashMap::new(),
            subs: HashMap::new(),
            gate: Gate::default(),
            maps_dirty: false,
            commits: Commits::default(),
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    /// Submits `r` for request `id`.
    fn send(&mut self, ctx: &mut Ctx<'_>, id: u64, sub: Sub, r: Request) -> Result<(), Error> {
        let cookie = self.id();
        match ctx.submit(r, cookie) {
            Ok(()) => {
                self.subs.insert(cookie, (id, sub));
                if let Some(p) = self.reqs.get_mut(&id) {
                    p.outstanding += 1;
                }
                Ok(())
            }
            Err(rejected) => {
                let dst = ctx.port().desc(&rejected.request).dst_port();
                let e = transport_error(dst, rejected.error);
                ctx.port().put(rejected.request);
                Err(e)
            }
        }
    }

    /// Starts requests the gate let go, finishing any that fail at once.
    fn start_all(&mut self, ctx: &mut Ctx<'_>, mut todo: Vec<u64>) {
        let mut i = 0;
        while i < todo.len() {
            let id = todo[i];
            if let Err(e) = self.start(ctx, id) {
                let more = self.finish(ctx, id, Done::Failed(e));
                todo.extend(more);
            }
            i += 1;
        }
    }

    fn start(&mut self, ctx: &mut Ctx<'_>, id: u64) -> Result<(), Error> {
        let Some(p) = self.reqs.get(&id) else {
            return Ok(());
        };
        let port = ctx.port();
        let (sub, r) = match p.class {
            Class::Io(io) => {
                let (op, room) = match io {
                    Io::Read => (Op::MapRead, p.size),
                    Io::Write => (Op::MapWrite, p.size),
                    // At most two partly covered objects come back.
                    Io::Zero => (Op::Discard, 0),
                };
                let call = Call {
                    dst: self.ports.mapper,
                    op,
                    target: &p.volume,
                    offset: p.offset,
                    size: p.size,
                    flags: Flags(p.flags.0 & Flags::ASSUME_V0.0),
                    data: &[],
                    reply_room: map_reply_room(room, port.segment().max_buffer()),
                };
                (Sub::Map, build(port, &call, |_| {})?)
            }
            Class::Barrier(Action::Sync) | Class::Free(Action::Sync) => {
                let call = Call {
                    dst: self.ports.blocker,
                    op: Op::Sync,
                    target: b"",
                    offset: 0,
                    size: 0,
                    flags: Flags::NONE,
                    data: &[],
                    reply_room: 0,
                };
                (Sub::Sync, build(port, &call, |_| {})?)
            }
            Class::Barrier(Action::Forward) | Class::Free(Action::Forward) => {
                let data = port.data(&p.req);
                // A barrier runs once the volume's I/O drained: the mapper
                // may forget writes it still holds pending (abandoned).
                let flags = match p.class {
                    Class::Barrier(_) => p.flags | Flags::DRAINED,
                    _ => Flags(p.flags.0 & !Flags::DRAINED.0),
                };
                let call = Call {
                    dst: self.ports.mapper,
                    op: p.op,
                    target: &p.volume,
                    offset: p.offset,
                    size: p.size,
                    flags,
                    data,
                    reply_room: 0,
                };
                (Sub::Forward, build(port, &call, |_| {})?)
            }
            Class::Nothing | Class::Unsupported => return Ok(()),
        };
        self.send(ctx, id, sub, r)
    }

    /// Completes request `id`; returns what the gate lets go because of it.
    fn finish(&mut self, ctx: &mut Ctx<'_>, id: u64, done: Done) -> Vec<u64> {
        let Some(p) = self.reqs.remove(&id) else {
            return Vec::new();
        };
        ctx.complete(p.req, done);
        match p.class {
            Class::Io(_) => self.gate.io_done(&p.volume),
            Class::Barrier(_) => self.gate.barrier_done(&p.volume),
            _ => Vec::new(),
        }
    }

    fn finish_and_go_on(&mut self, ctx: &mut Ctx<'_>, id: u64, done: Done) {
        let next = self.finish(ctx, id, done);
        self.start_all(ctx, next);
    }

    /// The map reply for I/O request `id`: zero-fill zero extents, send the
    /// data sub-requests.
    fn serve_map(&mut self, ctx: &mut Ctx<'_>, id: u64, map: &[u8]) -> Result<(), Error> {
        let Some(p) = self.reqs.get_mut(&id) else {
            return Ok(());
        };
        let zero = p.class == Class::Io(Io::Zero);
        let write = zero || p.class == Class::Io(Io::Write);
        let extents = decode_extents(map)?;
        // The lock's token the extents were mapped under: every data write
        // carries it (in its target), so the blocker refuses them once the
        // lock is broken.
        let fence = match decode_map_token(map)? {
            Some(token) if write => {
                let lock = std::str::from_utf8(&p.volume).map_err(|_| {
                    Error::with(ErrorCode::InvalidArgument, "a volume name is not UTF-8")
                })?;
                Some((lock.to_owned(), token))
            }
            _ => None,
        };
        let pieces = if zero {
            plan_zeroes(&extents, p.size)?
        } else {
            plan(&extents, p.size, write)?
        };
        for piece in pieces.iter().filter(|p| p.pending) {
            self.commits.join(&p.volume, piece.index);
            p.pend.push(piece.index);
        }
        let mut flags = if write && p.flags.contains(Flags::FUA) {
            Flags::FUA
        } else {
            Flags::NONE
        };
        if fence.is_some() {
            flags = flags | Flags::FENCED;
        }
        for piece in pieces {
            let (pos, len) = (piece.pos as usize, piece.len as usize);
            let Some(p) = self.reqs.get_mut(&id) else {
                break;
            };
            let Some(object) = &piece.object else {
                ctx.port().data_mut(&mut p.req)[pos..pos + len].fill(0);
                continue;
            };
            // A fenced write names its object, the lock and the token in
            // its target; its buffer holds the data only.
            let mut buf = [0u8; FencedTarget::<'static>::MAX_LEN];
            let fenced = fence
                .as_ref()
                .map(|(lock, token)| fenced_target(&mut buf, object, lock, *token));
            let fenced = match fenced.transpose() {
                Ok(f) => f,
                Err(e) => {
                    p.error.get_or_insert(e);
                    break;
                }
            };
            let port = ctx.port();
            let call = Call {
                dst: self.ports.blocker,
                op: if write { Op::Write } else { Op::Read },
                target: fenced.map_or(object, |n| &buf[..n]),
                offset: piece.offset_in_object,
                size: piece.len,
                flags,
                data: &[],
                reply_room: piece.len,
            };
            let built = if zero {
                build(port, &call, |buf| buf[..len].fill(0))
            } else if write {
                let data = &port.data(&p.req)[pos..pos + len];
                build(port, &call, |buf| buf[..len].copy_from_slice(data))
            } else {
                build(port, &call, |_| {})
            };
            let sent = built.and_then(|r| {
                let sub = Sub::Data {
                    pos: piece.pos,
                    len: piece.len,
                    missing_reads_zero: piece.missing_reads_zero,
                };
                self.send(ctx, id, sub, r)
            });
            let Some(p) = self.reqs.get_mut(&id) else {
                break;
            };
            match sent {
                Ok(()) => {}
                Err(e) => {
                    p.error.get_or_insert(e);
                    break;
                }
            }
        }
        Ok(())
    }

    /// All data sub-requests of `id` are back: complete it, or settle the
    /// pending indexes it joined first.
    fn data_done(&mut self, ctx: &mut Ctx<'_>, id: u64) {
        let Some(p) = self.reqs.get_mut(&id) else {
            return;
        };
        if p.pend.is_empty() {
            let done = match p.error.take() {
                Some(e) => Done::Failed(e),
                None => Done::Served(p.size),
            };
            return self.finish_and_go_on(ctx, id, done);
        }
        let result = match &p.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        };
        let volume = p.volume.clone();
        let pend = std::mem::take(&mut p.pend);
        p.waiting = pend.len();
        for index in pend {
            match self.commits.written(&volume, index, id, result.clone()) {
                Step::Wait => {}
                Step::Resolved(r) => self.resolve(ctx, r),
                Step::Commit => {
                    if let Err(e) = self.commit(ctx, id, &volume, index) {
                        let r = self.commits.committed(&volume, index, Err(e));
                        self.resolve(ctx, r);
                    }
                }
            }
        }
    }

    /// Sends MAP_COMMIT of `index` on behalf of `id`.
    fn commit(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: u64,
        volume: &[u8],
        index: u64,
    ) -> Result<(), Error> {
        log::debug!(
            "committing object {index} of {}",
            String::from_utf8_lossy(volume)
        );
        let payload = encode_commit(&[index])?;
        let call = Call {
            dst: self.ports.mapper,
            op: Op::MapCommit,
            target: volume,
            offset: 0,
            size: 0,
            flags: Flags::NONE,
            data: &payload,
            reply_room: 0,
        };
        let r = build(ctx.port(), &call, |_| {})?;
        self.send(ctx, id, Sub::Commit { index }, r)
    }

    /// Writes learnt the outcome of a pending index: those that know all
    /// of theirs complete.
    fn resolve(&mut self, ctx: &mut Ctx<'_>, resolved: Vec<(u64, Result<(), Error>)>) {
        for (id, result) in resolved {
            let Some(p) = self.reqs.get_mut(&id) else {
                continue;
            };
            if let Err(e) = result {
                p.error.get_or_insert(e);
            }
            p.waiting = p.waiting.saturating_sub(1);
            if p.waiting == 0 {
                let done = match p.error.take() {
                    Some(e) => Done::Failed(e),
                    // A FUA write whose objects' entries were committed
                    // (journal appends that a write-back map store keeps
                    // in its cache): the map store syncs before the reply.
                    None if p.flags.contains(Flags::FUA) && !p.pend.is_empty() => {
                        let serviced = p.size;
                        if let Err(e) = self.sync_maps(ctx, id, serviced) {
                            self.finish_and_go_on(ctx, id, Done::Failed(e));
                        }
                        continue;
                    }
                    None => Done::Served(p.size),
                };
                self.finish_and_go_on(ctx, id, done);
            }
        }
    }

    /// Sends SYNC to the mapper for request `id` (its map store's journal
    /// appends become durable), which then completes with `serviced`.
    fn sync_maps(&mut self, ctx: &mut Ctx<'_>, id: u64, serviced: u64) -> Result<(), Error> {
        let call = Call {
            dst: self.ports.mapper,
            op: Op::Sync,
            target: b"",
            offset: 0,
            size: 0,
            flags: Flags::NONE,
            data: &[],
            reply_room: 0,
        };
        let r = build(ctx.port(), &call, |_| {})?;
        self.send(ctx, id, Sub::SyncMaps { serviced }, r)
    }
}

/// The target of a fenced data write of `object` (see [`FencedTarget`]),
/// encoded into `buf`; returns its length.
fn fenced_target(buf: &mut [u8], object: &[u8], lock: &str, token: u64) -> Result<usize, Error> {
    let object = std::str::from_utf8(object).map_err(|_| {
        Error::with(
            ErrorCode::InvalidArgument,
            "a data object name is not UTF-8",
        )
    })?;
    Ok(FencedTarget {
        object,
        lock,
        token,
    }
    .encode_into(buf)?)
}

impl Handler for Composer {
    fn handle(&mut self, ctx: &mut Ctx<'_>, op: Op, req: Request) -> Option<(Request, Done)> {
        let d = ctx.port().desc(&req);
        let volume = d.target().as_bytes().to_vec();
        let (offset, size, flags) = (d.offset(), d.size(), Flags(d.flags()));
        let class = class(op, flags, size, &volume);
        match class {
            Class::Nothing => return Some((req, Done::Served(0))),
            Class::Unsupported => {
                let e = Error::with(
                    ErrorCode::Unsupported,
                    format!("a volume composer does not serve {op}"),
                );
                return Some((req, Done::Failed(e)));
            }
            Class::Io(io) if io != Io::Zero && d.data_len() < size => {
                let e = Error::with(
                    ErrorCode::InvalidArgument,
                    format!("{op} of {size} bytes with a {}-byte buffer", d.data_len()),
                );
                return Some((req, Done::Failed(e)));
            }
            _ => {}
        }
        let id = self.id();
        let start = match class {
            Class::Io(_) => self.gate.admit(&volume, false, id),
            Class::Barrier(_) => self.gate.admit(&volume, true, id),
            _ => vec![id],
        };
        self.reqs.insert(
            id,
            Pending {
                req,
                op,
                class,
                volume,
                offset,
                size,
                flags,
                outstanding: 0,
                error: None,
                pend: Vec::new(),
                waiting: 0,
            },
        );
        self.start_all(ctx, start);
        None
    }

    fn on_reply(&mut self, ctx: &mut Ctx<'_>, reply: Request, cookie: u64) {
        let Some((id, sub)) = self.subs.remove(&cookie) else {
            ctx.port().put(reply);
            return;
        };
        let Some(p) = self.reqs.get_mut(&id) else {
            ctx.port().put(reply);
            return;
        };
        p.outstanding -= 1;
        let port = ctx.port();
        let d = port.desc(&reply);
        let failure = (d.status() != status::SERVED).then(|| {
            archipelago_wire::reply::error_of(d, || {
                let target = d.target();
                // The object alone: a fenced write's target goes on with
                // the lock and the token after a NUL.
                let object = target.as_bytes().split(|&b| b == 0).next().unwrap_or(&[]);
                format!(
                    "{} of {}",
                    Op::from_code(d.op()).map_or("request", Op::name),
                    String::from_utf8_lossy(object)
                )
            })
        });
        let serviced = d.serviced();
        match sub {
            Sub::Map => {
                let r = match failure {
                    Some(e) => {
                        port.put(reply);
                        Err(e)
                    }
                    None => {
                        // What the mapper replied, not the whole buffer:
                        // the token trailer is only read where it was
                        // written.
                        let data = port.data(&reply);
                        let n = usize::try_from(serviced).map_or(data.len(), |n| n.min(data.len()));
                        let map = data[..n].to_vec();
                        port.put(reply);
                        self.serve_map(ctx, id, &map)
                    }
                };
                if let Err(e) = r {
                    if let Some(p) = self.reqs.get_mut(&id) {
                        p.error.get_or_insert(e);
                    }
                }
                self.data_done_if_idle(ctx, id);
            }
            Sub::Data {
                pos,
                len,
                missing_reads_zero,
            } => {
                let read = p.class == Class::Io(Io::Read);
                let range = pos as usize..(pos + len) as usize;
                match failure {
                    None if read => {
                        let src = &port.data(&reply)[..len as usize];
                        port.data_mut(&mut p.req)[range].copy_from_slice(src);
                    }
                    None => {}
                    Some(e) if read && missing_reads_zero && e.code == ErrorCode::NotFound => {
                        port.data_mut(&mut p.req)[range].fill(0);
                    }
                    Some(e) => {
                        p.error.get_or_insert(e);
                    }
                }
                port.put(reply);
                self.data_done_if_idle(ctx, id);
            }
            Sub::Commit { index } => {
                port.put(reply);
                let volume = p.volume.clone();
                let result = match failure {
                    Some(e) => Err(e),
                    None => {
                        self.maps_dirty = true;
                        Ok(())
                    }
                };
                let r = self.commits.committed(&volume, index, result);
                self.resolve(ctx, r);
            }
            Sub::Sync => {
                port.put(reply);
                match failure {
                    Some(e) => self.finish_and_go_on(ctx, id, Done::Failed(e)),
                    // The data is stable: now the map store's journal
                    // appends, which may depend on it (none since the
                    // last sync: the flush needs no mapper).
                    None if self.maps_dirty => {
                        self.maps_dirty = false;
                        if let Err(e) = self.sync_maps(ctx, id, 0) {
                            self.maps_dirty = true;
                            self.finish_and_go_on(ctx, id, Done::Failed(e));
                        }
                    }
                    None => self.finish_and_go_on(ctx, id, Done::Served(0)),
                }
            }
            Sub::SyncMaps { serviced } => {
                port.put(reply);
                let done = match failure {
                    Some(e) => {
                        self.maps_dirty = true;
                        Done::Failed(e)
                    }
                    None => Done::Served(serviced),
                };
                self.finish_and_go_on(ctx, id, done);
            }
            Sub::Forward => {
                let src = port.data(&reply);
                let dst = port.data_mut(&mut p.req);
                let n = src.len().min(dst.len());
                dst[..n].copy_from_slice(&src[..n]);
                port.put(reply);
                let done = match failure {
                    Some(e) => Done::Failed(e),
                    None => Done::Served(serviced),
                };
                self.finish_and_go_on(ctx, id, done);
            }
        }
    }
}

impl Composer {
    fn data_done_if_idle(&mut self, ctx: &mut Ctx<'_>, id: u64) {
        if self.reqs.get(&id).is_some_and(|p| p.outstanding == 0) {
            self.data_done(ctx, id);
        }
    }
}
