//! [`Blocker`], the handler: decodes and validates on the loop thread,
//! runs store calls on the workers (or the store's asynchronous path).

use std::sync::Arc;

use archipelago_peer::{Completer, Ctx, Done, Handler, Workers};
use archipelago_protocol::payload::{
    CopyRequest, FencedTarget, InfoReply, LockOwner, NameField, Payload,
};
use archipelago_protocol::{Error, ErrorCode, Flags, Op};
use archipelago_store::{Fence, IoDone, ObjectStore, StoreError};
use xseg_shm::{Detached, Request};

fn too_small(have: usize, need: u64) -> Error {
    Error::with(
        ErrorCode::InvalidArgument,
        format!("data buffer of {have} bytes, {need} needed"),
    )
}

/// The blocker handler: owns the worker pool.
pub struct Blocker {
    workers: Workers,
    store: Arc<dyn ObjectStore>,
    /// The store's calls never block: READ and WRITE run on the loop
    /// thread, which costs less than waking a worker.
    inline: bool,
    /// The store has an asynchronous path: READ and WRITE are started on
    /// the loop thread and completed by the store's callback.
    asynchronous: bool,
}

impl Blocker {
    /// Starts `threads` workers serving `store`.
    pub fn new(store: Arc<dyn ObjectStore>, threads: usize) -> Blocker {
        let inline = store.never_blocks();
        let asynchronous = store.async_io().is_some();
        let shared = store.clone();
        let workers = Workers::start("blocker", threads, move |op, req| {
            Done::from(serve(&*shared, op, req))
        });
        Blocker {
            workers,
            store,
            inline,
            asynchronous,
        }
    }
}

impl Handler for Blocker {
    fn handle(&mut self, ctx: &mut Ctx<'_>, op: Op, req: Request) -> Option<(Request, Done)> {
        if !op.spec().blocker {
            let e = Error::with(
                ErrorCode::Unsupported,
                format!("a blocker does not serve {op}"),
            );
            return Some((req, Done::Failed(e)));
        }
        if self.inline && matches!(op, Op::Read | Op::Write) {
            let mut req = ctx.port().detach(req);
            let done = Done::from(serve(&*self.store, op, &mut req));
            return Some((req.into_request(), done));
        }
        if self.asynchronous && matches!(op, Op::Read | Op::Write) {
            let req = ctx.port().detach(req);
            start_async(&*self.store, op, req, ctx.completer().clone());
            return None;
        }
        let req = if op == Op::Read {
            match self.read_now(ctx, req) {
                Ok(done) => return Some(done),
                Err(req) => req,
            }
        } else {
            req
        };
        self.workers.submit(ctx, op, req)
    }
}

impl Blocker {
    /// A READ served at once if the store has the bytes in memory
    /// ([`ObjectStore::try_read_now`]), or the request back for a worker.
    fn read_now(&self, ctx: &mut Ctx<'_>, req: Request) -> Result<(Request, Done), Request> {
        let mut d = ctx.port().detach(req);
        let desc = d.desc();
        let (offset, size) = (desc.offset(), desc.size());
        let target = desc.target();
        let Ok(name) = std::str::from_utf8(target.as_bytes()).map(str::to_owned) else {
            return Err(d.into_request());
        };
        let Some(buf) = usize::try_from(size)
            .ok()
            .and_then(|n| d.data_mut().get_mut(..n))
        else {
            return Err(d.into_request());
        };
        match self.store.try_read_now(&name, offset, buf) {
            Some(r) => {
                let done = Done::from(r.map(|_| size).map_err(Error::from));
                Ok((d.into_request(), done))
            }
            None => Err(d.into_request()),
        }
    }
}

/// Starts READ or WRITE on the store's asynchronous path; the request is
/// completed through `completer` when the store calls back.
fn start_async(store: &dyn ObjectStore, op: Op, mut req: Detached, completer: Completer) {
    let Some(aio) = store.async_io() else {
        let done = Done::from(serve(store, op, &mut req));
        return completer.complete(req, done);
    };
    let d = req.desc();
    let target = d.target();
    let fenced = op == Op::Write && Flags(d.flags()).contains(Flags::FENCED);
    let (name, fence) = if fenced {
        match FencedTarget::decode(target.as_bytes()) {
            Ok(f) => (f.object.to_owned(), Some((f.lock.to_owned(), f.token))),
            Err(e) => return completer.complete(req, Done::Failed(e.into())),
        }
    } else {
        (
            String::from_utf8_lossy(target.as_bytes()).into_owned(),
            None,
        )
    };
    let (offset, size) = (d.offset(), d.size());
    let len = req.data().len();
    if (len as u64) < size {
        return completer.complete(req, Done::Failed(too_small(len, size)));
    }
    let n = size as usize;
    let ptr = req.data_mut().as_mut_ptr();
    // `req` (its buffer in the segment) moves into the callback, which
    // alone gives it back: nothing else touches the buffer meanwhile.
    let done: IoDone = Box::new(move |r| {
        completer.complete(req, Done::from(r.map(|_| size).map_err(Error::from)));
    });
    // SAFETY: `ptr` addresses the request's data buffer in the segment
    // (at least `n` bytes, checked above), which stays mapped and is not
    // accessed by anyone else until `done` runs and hands the request back.
    unsafe {
        match op {
            Op::Read => aio.start_read(&name, offset, ptr, n, done),
            _ => match &fence {
                Some((lock, token)) => {
                    let fence = Fence {
                        lock,
                        token: *token,
                    };
                    aio.start_write_fenced(&name, offset, ptr, n, fence, done)
                }
                None => aio.start_write(&name, offset, ptr, n, done),
            },
        }
    }
}

/// Serves one request on a worker thread; returns `serviced`.
fn serve(store: &dyn ObjectStore, op: Op, req: &mut Detached) -> Result<u64, Error> {
    let d = req.desc();
    let target = d.target();
    let name = String::from_utf8_lossy(target.as_bytes()).into_owned();
    let (offset, size, flags) = (d.offset(), d.size(), Flags(d.flags()));
    let durable = flags.contains(Flags::FUA);
    let len = req.data().len();
    let need = |n: u64| {
        if (len as u64) < n {
            Err(too_small(len, n))
        } else {
            Ok(n as usize)
        }
    };
    match op {
        Op::Read => {
            let n = need(size)?;
            store
                .read(&name, offset, &mut req.data_mut()[..n])
                .map_err(Error::from)?;
            Ok(size)
        }
        Op::Write | Op::WriteFull if flags.contains(Flags::FENCED) => {
            // The target is `<object> NUL <lock> NUL <token>`.
            let f = FencedTarget::decode(target.as_bytes())?;
            let n = need(size)?;
            let fence = Fence {
                lock: f.lock,
                token: f.token,
            };
            let data = &req.data()[..n];
            if op == Op::Write {
                store.write_fenced(f.object, offset, data, durable, fence)
            } else {
                store.write_full_fenced(f.object, data, durable, fence)
            }
            .map_err(Error::from)?;
            Ok(size)
        }
        Op::Write => {
            let n = need(size)?;
            store
                .write(&name, offset, &req.data()[..n], durable)
                .map_err(Error::from)?;
            Ok(size)
        }
        Op::WriteFull => {
            let n = need(size)?;
            store
                .write_full(&name, &req.data()[..n], durable)
                .map_err(Error::from)?;
            Ok(size)
        }
        Op::Delete => store.delete(&name).map(|_| 0).map_err(Error::from),
        Op::Info => {
            let stat = store.stat(&name).map_err(Error::from)?;
            let reply = InfoReply {
                size: stat.size,
                object_size: 0,
                flags: 0,
                reserved: 0,
            };
            reply.encode(req.data_mut())?;
            Ok(InfoReply::SIZE as u64)
        }
        Op::Copy => {
            let c = CopyRequest::decode(req.data())?;
            let src = String::from_utf8_lossy(c.src.as_bytes()).into_owned();
            if flags.contains(Flags::FENCED) {
                // A copy-up: the target is `<object> NUL <lock> NUL <token>`.
                let f = FencedTarget::decode(target.as_bytes())?;
                let fence = Fence {
                    lock: f.lock,
                    token: f.token,
                };
                store.copy_up(&src, c.src_offset, f.object, offset, size, fence)
            } else {
                store.copy(&src, c.src_offset, &name, offset, size, durable)
            }
            .map_err(Error::from)?;
            Ok(size)
        }
        Op::Hash if name.is_empty() => {
            // Store the request's own data by content.
            let n = need(size)?;
            need(NameField::SIZE as u64)?;
            let hex = store
                .store_content(&req.data()[..n], durable)
                .map_err(Error::from)?;
            NameField::new(hex.as_bytes())?.encode(req.data_mut())?;
            Ok(NameField::SIZE as u64)
        }
        Op::Hash => {
            if size == 0 {
                return Err(Error::with(
                    ErrorCode::InvalidArgument,
                    "hash of zero bytes",
                ));
            }
            need(NameField::SIZE as u64)?;
            let mut content = vec![0u8; size as usize];
            store
                .read(&name, offset, &mut content)
                .map_err(Error::from)?;
            let hex = store
                .store_content(&content, durable)
                .map_err(Error::from)?;
            NameField::new(hex.as_bytes())?.encode(req.data_mut())?;
            Ok(NameField::SIZE as u64)
        }
        Op::Sync | Op::Flush => store.sync().map(|_| 0).map_err(Error::from),
        Op::Acquire if flags.contains(Flags::FENCED) => {
            // Raise the lock's fence (a breaker fencing a data store).
            let who = LockOwner::decode(req.data())?;
            let token = store.raise_fence(&name, who.token).map_err(Error::from)?;
            LockOwner {
                token,
                owner: who.owner,
            }
            .encode(req.data_mut())?;
            Ok(LockOwner::SIZE as u64)
        }
        Op::Acquire | Op::Release => {
            let who = LockOwner::decode(req.data())?;
            let owner = who.owner.to_string_lossy();
            if op == Op::Release && flags.contains(Flags::FORCE) {
                let previous = store.break_lock(&name).map_err(Error::from)?;
                LockOwner {
                    token: 0,
                    owner: NameField::new(previous.unwrap_or_default().as_bytes())?,
                }
                .encode(req.data_mut())?;
                return Ok(LockOwner::SIZE as u64);
            }
            let result = if op == Op::Release {
                store.unlock(&name, &owner).map(|_| 0)
            } else {
                store.try_lock(&name, &owner)
            };
            match result {
                Ok(_) if op == Op::Release => Ok(0),
                Ok(token) => {
                    LockOwner {
                        token,
                        owner: who.owner,
                    }
                    .encode(req.data_mut())?;
                    Ok(LockOwner::SIZE as u64)
                }
                Err(StoreError::Locked { owner: holder, .. }) => {
                    // The reply names the holder, for "locked by ...".
                    let field = NameField::new(holder.as_bytes())
                        .unwrap_or_else(|_| NameField::new(b"?").expect("short"));
                    LockOwner {
                        token: 0,
                        owner: field,
                    }
                    .encode(req.data_mut())?;
                    Err(Error::with(ErrorCode::Locked, holder))
                }
                Err(e) => Err(Error::from(e)),
            }
        }
        Op::LockInfo => {
            need(LockOwner::SIZE as u64)?;
            match store.lock_owner(&name).map_err(Error::from)? {
                Some((owner, token)) => {
                    LockOwner {
                        token,
                        owner: NameField::new(owner.as_bytes())?,
                    }
                    .encode(req.data_mut())?;
                    Ok(LockOwner::SIZE as u64)
                }
                None => Err(Error::with(
                    ErrorCode::NotFound,
                    format!("lock {name} is free"),
                )),
            }
        }
        Op::List => {
            let mut out = Vec::new();
            let names = if flags.contains(Flags::PAGED) {
                let cursor_len = need(size)?;
                let cursor = String::from_utf8_lossy(&req.data()[..cursor_len]).into_owned();
                if offset == 0 {
                    return Err(Error::with(
                        ErrorCode::InvalidArgument,
                        "a paged LIST needs a page size (offset) of at least 1",
                    ));
                }
                let limit = usize::try_from(offset).unwrap_or(usize::MAX);
                let page = store
                    .list_page(&name, (cursor_len > 0).then_some(cursor.as_str()), limit)
                    .map_err(Error::from)?;
                // The next cursor first (empty: the last page).
                out.extend_from_slice(page.next.unwrap_or_default().as_bytes());
                out.push(0);
                page.names
            } else {
                store.list(&name).map_err(Error::from)?
            };
            for n in names {
                out.extend_from_slice(n.as_bytes());
                out.push(0);
            }
            let n = need(out.len() as u64)?;
            req.data_mut()[..n].copy_from_slice(&out);
            Ok(n as u64)
        }
        _ => Err(Error::new(ErrorCode::Unsupported)),
    }
}

/// A blocker that stores nothing: the benchmark ceiling of the pipeline
/// (`blockerd --backend null`, `xseg-bench volume --target null`).
///
/// READ and WRITE succeed at once on the peer's loop thread with
/// `serviced = size`, without touching the data buffer (a read returns
/// whatever the buffer held); SYNC and FLUSH succeed; every other op is
/// refused. What remains of a request's cost is the transport and the
/// peer runtime, which is what the ceiling measures.
#[derive(Debug, Default)]
pub struct NullBlocker;

impl Handler for NullBlocker {
    fn handle(&mut self, ctx: &mut Ctx<'_>, op: Op, req: Request) -> Option<(Request, Done)> {
        let d = ctx.port().desc(&req);
        let done = match op {
            Op::Read | Op::Write => {
                let (size, room) = (d.size(), ctx.port().data(&req).len());
                if (room as u64) < size {
                    Done::Failed(too_small(room, size))
                } else {
                    Done::Served(size)
                }
            }
            Op::Sync | Op::Flush => Done::Served(0),
            _ => Done::Failed(Error::with(
                ErrorCode::Unsupported,
                format!("the null blocker does not serve {op}"),
            )),
        };
        Some((req, done))
    }
}
