//! The mapper handler: decodes mapper requests and runs them on worker
//! threads against a [`Mapper`].
//!
//! | op | target | request | reply |
//! |---|---|---|---|
//! | CREATE | volume | [`CreateRequest`] (object size 0: default) | — |
//! | INFO | volume | `ASSUME_V0`: `size` is the v0 size hint (0: none) | [`VolumeInfo`](archipelago_protocol::payload::VolumeInfo) |
//! | OPEN | volume | `WRITABLE` flag | [`VolumeInfo`](archipelago_protocol::payload::VolumeInfo) |
//! | CLOSE | volume | — | — |
//! | SNAPSHOT | volume | [`NameField`]: the snapshot | — |
//! | CLONE | new volume | [`CloneRequest`] (size 0: the snapshot's) | — |
//! | DELETE | volume | — (remove) | — |
//! | RENAME | volume | [`NameField`]: the new name | — |
//! | RESIZE | volume | `size`, `FORCE` to shrink | — |
//! | MAP_READ, MAP_WRITE | volume | `offset`, `size` (`ASSUME_V0` for MAP_READ) | map reply ([`encode_extents`]); MAP_WRITE and DISCARD add the lock's token ([`encode_map_token`]) |
//! | DISCARD, WRITE_ZEROES | volume | `offset`, `size`: whole objects get zero entries | map reply: the write extents of the partly covered objects, to fill with zeros |
//! | MAP_COMMIT | volume | [`decode_commit`] list of indexes | — |
//! | HASH | snapshot | `size`: how long to wait for the holders of open maps to move them, in ms (0: the mapper's default) | [`encode_hash_rebase`]: [`HashReply`], maps moved and left, the names left |
//! | UPDATE | volume | `ASSUME_V0`: `size` is the v0 size hint | — |
//! | OPEN_LIST | — (ignored) | — | the volumes open for writing on this host, each followed by NUL (`NoSpace` if the buffer is too small) |
//! | LINEAGE | — (ignored) | — | every format 3 header with its parent link ([`encode_lineage`]; `NoSpace` if the buffer is too small) |
//! | FLATTEN | volume | `offset`: first object index to look at, `size`: most objects to copy (0: report only) | [`FlattenStep`](archipelago_protocol::payload::FlattenStep) |
//! | ROLLBACK | volume | [`NameField`]: the snapshot | — |
//!
//! A `Locked` failure writes a [`LockOwner`] naming the holder into the
//! data buffer (when it has room), which clients print as "locked by".

use std::sync::Arc;

use archipelago_mapper::{Extent, Mapper, REBASE_CHECK};
use archipelago_peer::{Completer, Ctx, Done, Handler, Workers};
use archipelago_protocol::payload::{
    decode_commit, encode_extents, encode_hash_rebase, encode_lineage, encode_map_token,
    CloneRequest, CreateRequest, HashRebase, HashReply, LineageRecord, LockOwner, MapExtent,
    NameField, Payload,
};
use archipelago_protocol::{Error, ErrorCode, Flags, Op, Route};
use xseg_shm::{Detached, Request};

/// A request's header fields.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    /// Target name.
    pub target: &'a [u8],
    /// Byte offset.
    pub offset: u64,
    /// Byte count.
    pub size: u64,
    /// Flags.
    pub flags: Flags,
}

fn text(bytes: &[u8], what: &str) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::with(ErrorCode::InvalidArgument, format!("{what} is not UTF-8")))
}

fn hint(size: u64) -> Option<u64> {
    (size != 0).then_some(size)
}

fn put<P: Payload>(p: &P, buf: &mut [u8]) -> Result<u64, Error> {
    p.encode(buf)?;
    Ok(P::SIZE as u64)
}

fn put_extents(extents: &[Extent], buf: &mut [u8]) -> Result<u64, Error> {
    let records = extents
        .iter()
        .map(MapExtent::try_from)
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(encode_extents(&records, buf)? as u64)
}

/// A write map reply: the extents, then the lock's token (the composer
/// fences its data writes with it).
fn put_extents_and_token(extents: &[Extent], token: u64, buf: &mut [u8]) -> Result<u64, Error> {
    let n = put_extents(extents, buf)? as usize;
    Ok(encode_map_token(buf, n, token)? as u64)
}

/// Writes `names`, each followed by NUL, at the start of `buf`.
fn put_names(names: &[String], buf: &mut [u8]) -> Result<u64, Error> {
    let need: usize = names.iter().map(|n| n.len() + 1).sum();
    if buf.len() < need {
        return Err(Error::with(
            ErrorCode::NoSpace,
            format!(
                "{} open volumes need {need} bytes, the buffer has {}",
                names.len(),
                buf.len()
            ),
        ));
    }
    let mut at = 0;
    for n in names {
        buf[at..at + n.len()].copy_from_slice(n.as_bytes());
        buf[at + n.len()] = 0;
        at += n.len() + 1;
    }
    Ok(need as u64)
}

/// Writes the LINEAGE reply: every format 3 header's lineage record.
fn put_lineage(mapper: &Mapper, buf: &mut [u8]) -> Result<u64, Error> {
    let records = mapper
        .lineage()?
        .into_iter()
        .map(|r| {
            let n = r.node;
            let mut flags = 0;
            for (set, bit) in [
                (n.readonly, LineageRecord::READONLY),
                (n.removed, LineageRecord::REMOVED),
                (n.parent.is_some(), LineageRecord::HAS_PARENT),
            ] {
                if set {
                    flags |= bit;
                }
            }
            let (parent_id, parent_epoch, parent_name) = match &n.parent {
                Some(p) => (p.volume_id, p.epoch, p.name.as_str()),
                None => (0, 0, ""),
            };
            Ok(LineageRecord {
                volume_id: n.volume_id,
                epoch: n.epoch,
                size: r.size,
                flags,
                reserved: 0,
                parent_id,
                parent_epoch,
                name: NameField::new(n.name.as_bytes())?,
                parent_name: NameField::new(parent_name.as_bytes())?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(encode_lineage(&records, buf)? as u64)
}

/// Serves one mapper request: `buf` is the request's data buffer, read as
/// the request payload and overwritten with the reply. Returns `serviced`
/// (the reply's length). A `Locked` error also leaves a [`LockOwner`]
/// naming the holder in `buf` when it fits.
pub fn serve(mapper: &Mapper, op: Op, args: Args<'_>, buf: &mut [u8]) -> Result<u64, Error> {
    let r = serve_op(mapper, op, args, buf);
    if let Err(e) = &r {
        if e.code == ErrorCode::Locked && buf.len() >= LockOwner::SIZE {
            if let Ok(owner) = NameField::new(e.detail.as_bytes()) {
                let _ = LockOwner { token: 0, owner }.encode(buf);
            }
        }
    }
    r
}

fn serve_op(mapper: &Mapper, op: Op, a: Args<'_>, buf: &mut [u8]) -> Result<u64, Error> {
    if op == Op::OpenList {
        return put_names(&mapper.open_volumes(), buf);
    }
    if op == Op::Lineage {
        return put_lineage(mapper, buf);
    }
    if op == Op::Sync {
        // vlmcd's FLUSH, once the data store is synced: the journal
        // appends that were not durable become so.
        return mapper.sync_maps().map(|()| 0);
    }
    let name = text(a.target, "the target")?;
    let v0 = a.flags.contains(Flags::ASSUME_V0);
    if op.spec().composer == Route::Barrier {
        // Only vlmcd knows whether writes of the volume are still in
        // flight (their MAP_WRITE answered, their data not yet written):
        // a barrier that did not pass its drain could capture them.
        if !a.flags.contains(Flags::DRAINED) {
            return Err(Error::with(
                ErrorCode::InvalidArgument,
                format!(
                    "{op} of {name} must go through vlmcd, which drains the volume's I/O first"
                ),
            ));
        }
        mapper.forget_pending(&name);
    }
    match op {
        Op::Create => {
            let c = CreateRequest::decode(buf)?;
            let object_size = (c.object_size != 0).then_some(c.object_size);
            mapper.create(&name, c.size, object_size).map(|_| 0)
        }
        Op::Info => {
            let info = if v0 {
                mapper.info_assume_v0(&name, hint(a.size))?
            } else {
                mapper.info(&name)?
            };
            put(&info, buf)
        }
        Op::Open => {
            let writable = a.flags.contains(Flags::WRITABLE);
            let info = if a.flags.contains(Flags::EXCLUSIVE) {
                if !writable {
                    return Err(Error::with(
                        ErrorCode::InvalidArgument,
                        format!("{name}: an exclusive open is a writable one"),
                    ));
                }
                mapper.open_exclusive(&name)?
            } else {
                mapper.open(&name, writable)?
            };
            put(&info, buf)
        }
        Op::Close => mapper.close(&name).map(|_| 0),
        Op::Snapshot => {
            let snap = text(NameField::decode(buf)?.as_bytes(), "the snapshot name")?;
            mapper.snapshot(&name, &snap).map(|_| 0)
        }
        Op::Clone => {
            let c = CloneRequest::decode(buf)?;
            let src = text(c.src.as_bytes(), "the snapshot name")?;
            mapper.clone_volume(&src, &name, hint(c.size)).map(|_| 0)
        }
        Op::Delete if a.flags.contains(Flags::FORCE) => mapper.remove_corrupt(&name).map(|_| 0),
        Op::Delete => mapper.remove(&name).map(|_| 0),
        Op::Rename => {
            let new = text(NameField::decode(buf)?.as_bytes(), "the new name")?;
            mapper.rename(&name, &new).map(|_| 0)
        }
        Op::Resize => mapper
            .resize(&name, a.size, a.flags.contains(Flags::FORCE))
            .map(|_| 0),
        Op::MapRead => {
            let extents = if v0 {
                mapper.map_read_assume_v0(&name, None, a.offset, a.size)?
            } else {
                mapper.map_read(&name, a.offset, a.size)?
            };
            put_extents(&extents, buf)
        }
        Op::MapWrite => {
            let (extents, token) = mapper.map_write_fenced(&name, a.offset, a.size)?;
            put_extents_and_token(&extents, token, buf)
        }
        Op::Discard | Op::WriteZeroes => {
            let (extents, token) = mapper.discard_fenced(&name, a.offset, a.size)?;
            put_extents_and_token(&extents, token, buf)
        }
        Op::MapCommit => {
            let indexes = decode_commit(buf)?;
            mapper
                .commit_batch(&name, &[&indexes])
                .pop()
                .expect("one result per request")
                .map(|_| 0)
        }
        Op::Hash => {
            let wait = (a.size != 0).then(|| std::time::Duration::from_millis(a.size));
            let h = mapper.hash_wait(&name, wait)?;
            let reply = HashReply {
                objects: h.objects,
                distinct: h.distinct,
                bytes_saved: h.bytes_saved,
                zero_objects: h.zero_objects,
            };
            let rebase = HashRebase {
                maps_moved: h.maps_moved,
                maps_left: h.maps_left.len() as u64,
                names: h.maps_left,
            };
            Ok(encode_hash_rebase(&reply, &rebase, buf)? as u64)
        }
        Op::Flatten => put(&mapper.flatten_step(&name, a.offset, a.size)?, buf),
        Op::Rollback => {
            let snap = text(NameField::decode(buf)?.as_bytes(), "the snapshot name")?;
            mapper.rollback(&name, &snap).map(|_| 0)
        }
        Op::Update => {
            if v0 {
                mapper.update_assume_v0(&name, hint(a.size)).map(|_| 0)
            } else {
                mapper.update(&name).map(|_| 0)
            }
        }
        _ => Err(Error::with(
            ErrorCode::Unsupported,
            format!("a mapper does not serve {op}"),
        )),
    }
}

fn serve_detached(mapper: &Mapper, op: Op, req: &mut Detached) -> Result<u64, Error> {
    let d = req.desc();
    let target = d.target().as_bytes().to_vec();
    let args = Args {
        target: &target,
        offset: d.offset(),
        size: d.size(),
        flags: Flags(d.flags()),
    };
    serve(mapper, op, args, req.data_mut())
}

/// The mapper handler: owns the worker pool, the committer and the
/// rebase check.
pub struct MapperHandler {
    workers: Workers,
    mapper: Arc<Mapper>,
    committer: Committer,
    _rebases: RebaseCheck,
}

impl MapperHandler {
    /// Starts `threads` workers serving `mapper`.
    pub fn new(mapper: Arc<Mapper>, threads: usize) -> MapperHandler {
        let shared = mapper.clone();
        let workers = Workers::start("mapper", threads, move |op, req| {
            Done::from(serve_detached(&shared, op, req))
        });
        let committer = Committer::start(mapper.clone());
        let rebases = RebaseCheck::start(mapper.clone(), REBASE_CHECK);
        MapperHandler {
            workers,
            mapper,
            committer,
            _rebases: rebases,
        }
    }

    /// MAP_READ or MAP_WRITE answered on the loop thread from the cache
    /// ([`Mapper::map_cached`]), or the request back for a worker.
    fn map_cached(
        &self,
        ctx: &mut Ctx<'_>,
        op: Op,
        mut req: Request,
    ) -> Result<(Request, Done), Request> {
        let d = ctx.port().desc(&req);
        if Flags(d.flags()).contains(Flags::ASSUME_V0) {
            return Err(req);
        }
        let target = d.target();
        let Ok(name) = std::str::from_utf8(target.as_bytes()) else {
            return Err(req);
        };
        let Some(r) = self
            .mapper
            .map_cached_fenced(name, d.offset(), d.size(), op == Op::MapWrite)
        else {
            return Err(req);
        };
        let buf = ctx.port().data_mut(&mut req);
        let done = r.and_then(|(extents, token)| match op {
            Op::MapWrite => put_extents_and_token(&extents, token, buf),
            _ => put_extents(&extents, buf),
        });
        Ok((req, Done::from(done)))
    }
}

impl Handler for MapperHandler {
    fn handle(&mut self, ctx: &mut Ctx<'_>, op: Op, req: Request) -> Option<(Request, Done)> {
        if !op.spec().mapper {
            let e = Error::with(
                ErrorCode::Unsupported,
                format!("a mapper does not serve {op}"),
            );
            return Some((req, Done::Failed(e)));
        }
        if op == Op::MapCommit {
            let req = ctx.port().detach(req);
            self.committer.submit(req, ctx.completer().clone());
            return None;
        }
        let req = match op {
            Op::MapRead | Op::MapWrite => match self.map_cached(ctx, op, req) {
                Ok(done) => return Some(done),
                Err(req) => req,
            },
            _ => req,
        };
        self.workers.submit(ctx, op, req)
    }
}

/// The lock holder's side of dedup rebasing: every `every`, one thread
/// applies the rebase records a hash (maybe on another host) left for the
/// volumes open here ([`Mapper::apply_rebases`]: one listing when there
/// is none). Stopped when dropped.
struct RebaseCheck {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RebaseCheck {
    fn start(mapper: Arc<Mapper>, every: std::time::Duration) -> RebaseCheck {
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("mapper-rebase".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    match mapper.apply_rebases() {
                        Ok(0) => {}
                        Ok(n) => log::info!("rebase: {n} volumes moved onto content objects"),
                        Err(e) => log::warn!("rebase check: {e}"),
                    }
                }
            })
            .expect("spawn the rebase thread");
        RebaseCheck {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for RebaseCheck {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Group commit: MAP_COMMITs go to one thread that takes every commit
/// queued meanwhile and commits each volume's once
/// ([`Mapper::commit_batch`]). A commit is one journal append whatever
/// it carries, so a queue depth of first writes to new objects costs
/// about one commit instead of one each.
struct Committer {
    tx: Option<std::sync::mpsc::Sender<(Detached, Completer)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    fn start(mapper: Arc<Mapper>) -> Committer {
        let (tx, rx) = std::sync::mpsc::channel::<(Detached, Completer)>();
        let thread = std::thread::Builder::new()
            .name("mapper-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    commit_all(&mapper, batch);
                }
            })
            .expect("spawn the commit thread");
        Committer {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn submit(&self, req: Detached, completer: Completer) {
        let tx = self.tx.as_ref().expect("the committer runs until drop");
        if let Err(e) = tx.send((req, completer)) {
            let (req, completer) = e.0;
            let e = Error::with(ErrorCode::ShuttingDown, "the commit thread stopped");
            completer.complete(req, Done::Failed(e));
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Commits a batch of MAP_COMMIT requests, one group per volume, and
/// completes each.
fn commit_all(mapper: &Mapper, batch: Vec<(Detached, Completer)>) {
    let mut by_volume: std::collections::BTreeMap<Vec<u8>, Vec<usize>> = Default::default();
    let mut decoded = Vec::with_capacity(batch.len());
    for (i, (req, _)) in batch.iter().enumerate() {
        decoded.push(decode_commit(req.data()));
        by_volume
            .entry(req.desc().target().as_bytes().to_vec())
            .or_default()
            .push(i);
    }
    let mut results: Vec<Option<Result<(), Error>>> = (0..batch.len()).map(|_| None).collect();
    for (volume, members) in by_volume {
        let name = match text(&volume, "the target") {
            Ok(n) => n,
            Err(e) => {
                for &i in &members {
                    results[i] = Some(Err(e.clone()));
                }
                continue;
            }
        };
        let mut valid = Vec::new();
        let mut requests: Vec<&[u64]> = Vec::new();
        for &i in &members {
            match &decoded[i] {
                Ok(indexes) => {
                    valid.push(i);
                    requests.push(indexes);
                }
                Err(e) => results[i] = Some(Err(e.clone())),
            }
        }
        for (r, &i) in mapper
            // Not durable by itself: vlmcd syncs the map store at FLUSH
            // and before answering a FUA write (a write-through store
            // makes every write durable anyway).
            .commit_batch(&name, &requests)
            .into_iter()
            .zip(&valid)
        {
            results[i] = Some(r);
        }
    }
    for ((req, completer), r) in batch.into_iter().zip(results) {
        let r = r.expect("every request has a result");
        completer.complete(req, Done::from(r.map(|()| 0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipelago_protocol::payload::{decode_extents, encode_commit, VolumeInfo};
    use archipelago_store::{MemoryStore, ObjectStore};

    fn args(target: &str) -> Args<'_> {
        Args {
            target: target.as_bytes(),
            offset: 0,
            size: 0,
            flags: Flags::NONE,
        }
    }

    /// Serves `op` as vlmcd sends it: a barrier marked DRAINED.
    fn call(m: &Mapper, op: Op, a: Args<'_>, data: &[u8], room: usize) -> Result<Vec<u8>, Error> {
        let a = if op.spec().composer == Route::Barrier {
            Args {
                flags: a.flags | Flags::DRAINED,
                ..a
            }
        } else {
            a
        };
        let mut buf = vec![0; room.max(data.len())];
        buf[..data.len()].copy_from_slice(data);
        let n = serve(m, op, a, &mut buf)?;
        buf.truncate(n as usize);
        Ok(buf)
    }

    #[test]
    fn create_write_commit_read_snapshot_clone() {
        let maps: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let data: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let m = Mapper::new(maps.clone(), data.clone(), "host-a".into());
        let create = CreateRequest {
            size: 1 << 20,
            object_size: 64 << 10,
            flags: 0,
            reserved: 0,
        }
        .to_vec();
        call(&m, Op::Create, args("vol"), &create, 0).unwrap();
        let info = call(&m, Op::Info, args("vol"), &[], 304).unwrap();
        let info = VolumeInfo::decode(&info).unwrap();
        assert_eq!(
            (
                info.size,
                info.object_size,
                info.readonly,
                info.removed,
                info.hashed
            ),
            (1 << 20, 64 << 10, false, false, false)
        );

        let w = Args {
            offset: 60 << 10,
            size: 8 << 10,
            ..args("vol")
        };
        let reply = call(&m, Op::MapWrite, w, &[], 8192).unwrap();
        let extents = decode_extents(&reply).unwrap();
        assert_eq!(extents.len(), 2);
        assert_eq!((extents[0].index, extents[1].index), (0, 1));
        let pending: Vec<u64> = extents
            .iter()
            .filter(|e| e.flags & MapExtent::PENDING != 0)
            .map(|e| e.index)
            .collect();
        for e in &extents {
            data.write(
                &e.object.to_string_lossy(),
                e.offset_in_object,
                &vec![7; e.len as usize],
                false,
            )
            .unwrap();
        }
        let commit = encode_commit(&pending).unwrap();
        call(&m, Op::MapCommit, args("vol"), &commit, 0).unwrap();
        let extents = decode_extents(&call(&m, Op::MapRead, w, &[], 8192).unwrap()).unwrap();
        assert!(extents.iter().all(|e| e.flags & MapExtent::ZERO == 0));

        let snap = NameField::new(b"snap").unwrap().to_vec();
        call(&m, Op::Snapshot, args("vol"), &snap, 0).unwrap();
        let clone = CloneRequest {
            size: 0,
            src: NameField::new(b"snap").unwrap(),
        }
        .to_vec();
        call(&m, Op::Clone, args("clone"), &clone, 0).unwrap();
        let info = call(&m, Op::Info, args("clone"), &[], 304).unwrap();
        let info = VolumeInfo::decode(&info).unwrap();
        assert_eq!(info.parent.as_deref(), Some("snap"));
        let info =
            VolumeInfo::decode(&call(&m, Op::Info, args("snap"), &[], 304).unwrap()).unwrap();
        assert!(info.readonly);
        assert_eq!(
            call(&m, Op::Delete, args("snap"), &[], 0).unwrap_err().code,
            ErrorCode::InUse
        );
        let h = HashReply::decode(&call(&m, Op::Hash, args("snap"), &[], 32).unwrap()).unwrap();
        assert_eq!(h.objects, 2);

        // Too small a reply buffer, hostile payloads, foreign ops.
        assert_eq!(
            call(&m, Op::MapRead, w, &[], 100).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            call(&m, Op::MapCommit, args("vol"), &[9, 0, 0, 0, 0, 0, 0, 0], 0)
                .unwrap_err()
                .code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            call(&m, Op::Create, args("x"), &[1, 2, 3], 0)
                .unwrap_err()
                .code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            call(
                &m,
                Op::Info,
                Args {
                    target: b"\xff",
                    ..args("")
                },
                &[],
                304
            )
            .unwrap_err()
            .code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            call(&m, Op::Read, args("vol"), &[], 0).unwrap_err().code,
            ErrorCode::Unsupported
        );
    }

    #[test]
    fn discard_zeroes_whole_objects_and_returns_the_partial_ones() {
        let maps: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let data: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let m = Mapper::new(maps, data, "host-a".into());
        let create = CreateRequest {
            size: 1 << 20,
            object_size: 64 << 10,
            flags: 0,
            reserved: 0,
        }
        .to_vec();
        call(&m, Op::Create, args("vol"), &create, 0).unwrap();
        let all = Args {
            size: 3 << 16,
            ..args("vol")
        };
        let w = decode_extents(&call(&m, Op::MapWrite, all, &[], 8192).unwrap()).unwrap();
        assert_eq!(w.len(), 3);
        // First writes are pending: commit them (their data never came:
        // the objects read as zeros, the entries are owned).
        assert!(w.iter().all(|e| e.flags & MapExtent::PENDING != 0));
        let commit = encode_commit(&[0, 1, 2]).unwrap();
        call(&m, Op::MapCommit, args("vol"), &commit, 0).unwrap();
        for op in [Op::Discard, Op::WriteZeroes] {
            let d = Args {
                offset: 100,
                size: (2 << 16) - 100,
                ..args("vol")
            };
            let reply = decode_extents(&call(&m, op, d, &[], 8192).unwrap()).unwrap();
            assert_eq!(reply.len(), 1, "{op}: object 0 partly, 1 whole");
            assert_eq!((reply[0].index, reply[0].offset_in_object), (0, 100));
            assert_eq!(reply[0].flags & MapExtent::ZERO, 0);
        }
        let r = decode_extents(&call(&m, Op::MapRead, all, &[], 8192).unwrap()).unwrap();
        let zero: Vec<bool> = r.iter().map(|e| e.flags & MapExtent::ZERO != 0).collect();
        assert_eq!(zero, [false, true, false]);
    }

    #[test]
    fn a_writable_open_elsewhere_is_locked_and_names_its_owner() {
        let maps: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let data: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let a = Mapper::new(maps.clone(), data.clone(), "host-a".into());
        let b = Mapper::new(maps, data, "host-b".into());
        let create = CreateRequest {
            size: 1 << 20,
            object_size: 0,
            flags: 0,
            reserved: 0,
        }
        .to_vec();
        call(&a, Op::Create, args("vol"), &create, 0).unwrap();
        let w = Args {
            flags: Flags::WRITABLE,
            ..args("vol")
        };
        call(&a, Op::Open, w, &[], 304).unwrap();
        let mut buf = vec![0; 304];
        let e = serve(&b, Op::Open, w, &mut buf).unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        assert_eq!(
            LockOwner::decode(&buf).unwrap().owner.to_string_lossy(),
            e.detail
        );
        assert!(e.detail.contains("host-a"), "{e}");
        call(&a, Op::Close, args("vol"), &[], 0).unwrap();
        call(&b, Op::Open, w, &[], 304).unwrap();
    }

    #[test]
    fn open_list_names_the_writable_opens_of_this_host() {
        let maps: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let data: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let m = Mapper::new(maps, data, "host-a".into());
        let create = CreateRequest {
            size: 1 << 20,
            object_size: 0,
            flags: 0,
            reserved: 0,
        }
        .to_vec();
        for v in ["vol-b", "vol-a", "vol-c"] {
            call(&m, Op::Create, args(v), &create, 0).unwrap();
        }
        let list = |room| call(&m, Op::OpenList, args(""), &[], room);
        assert_eq!(list(64).unwrap(), b"");
        let w = |v| Args {
            flags: Flags::WRITABLE,
            ..args(v)
        };
        call(&m, Op::Open, w("vol-b"), &[], 304).unwrap();
        call(&m, Op::Open, w("vol-a"), &[], 304).unwrap();
        // Read-only opens do not count; a write opens implicitly.
        call(&m, Op::Open, args("vol-c"), &[], 304).unwrap();
        assert_eq!(list(64).unwrap(), b"vol-a\0vol-b\0");
        assert_eq!(list(11).unwrap_err().code, ErrorCode::NoSpace);
        call(
            &m,
            Op::MapWrite,
            Args {
                size: 1,
                ..args("vol-c")
            },
            &[],
            8192,
        )
        .unwrap();
        assert_eq!(list(64).unwrap(), b"vol-a\0vol-b\0vol-c\0");
        for v in ["vol-a", "vol-b", "vol-c"] {
            call(&m, Op::Close, args(v), &[], 0).unwrap();
        }
        assert_eq!(list(64).unwrap(), b"");
        assert_eq!(m.tracked_volumes(), 0);
    }
}
