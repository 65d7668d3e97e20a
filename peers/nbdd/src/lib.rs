//! The NBD server behind `nbdd`: serves the volumes of the mapped set
//! (`<run_dir>/nbd-mapped.json`, see [`archipelago_config::mapped`]) over
//! NBD, on a Unix socket and a loopback TCP address, as a client of
//! `vlmcd` (volume I/O) and `mapperd` (MAP_READ for block status).
//!
//! # Protocol
//!
//! Fixed newstyle handshake only (`NBD_FLAG_FIXED_NEWSTYLE`,
//! `NBD_FLAG_NO_ZEROES`). Options: `EXPORT_NAME`, `GO`, `INFO`, `LIST`,
//! `ABORT`, `STRUCTURED_REPLY`, `LIST_META_CONTEXT` and
//! `SET_META_CONTEXT` (`base:allocation` only); any other option gets
//! `NBD_REP_ERR_UNSUP`. The export name is the volume name; the mapped set
//! is re-read for every new connection. Block size constraints: minimum 1,
//! preferred 4096, maximum the segment's largest buffer (at most 32 MiB):
//! the largest request sent to vlmcd in one piece. Larger READ/WRITE
//! requests, up to 32 MiB, are split (not refused); above that a READ
//! fails with `EOVERFLOW` and a WRITE closes the connection (its payload
//! is not read). TRIM, WRITE_ZEROES are split the same way at any length;
//! BLOCK_STATUS answers at most 64 MiB per request (shorter replies are
//! allowed).
//!
//! Commands: READ, WRITE (FUA honoured: every piece is written with FUA),
//! FLUSH, TRIM (volume DISCARD), WRITE_ZEROES, DISC, BLOCK_STATUS
//! (`base:allocation` from MAP_READ: ZERO extents are
//! `NBD_STATE_HOLE|NBD_STATE_ZERO`, the rest data). With structured
//! replies, READs are answered with one `OFFSET_DATA` chunk (or an `ERROR`
//! chunk).
//!
//! Snapshots (and volumes mapped read-only) are exported with
//! `NBD_FLAG_READ_ONLY`; writes, trims and write-zeroes to them fail with
//! `EPERM`.
//!
//! **Multiple connections.** `NBD_FLAG_CAN_MULTI_CONN` is advertised for
//! writable exports: every connection goes to the same vlmcd, which
//! serialises nothing per connection; a FLUSH drains the *volume's* writes
//! in flight in vlmcd (from every connection) and makes everything written
//! durable, so a flush on one connection covers writes completed on any.
//!
//! # Errors
//!
//! | Archipelago error                  | NBD errno |
//! |------------------------------------|-----------|
//! | `NoSpace`                          | `ENOSPC`  |
//! | `ReadOnly`, `Fenced`               | `EPERM`   |
//! | `OutOfRange`, `InvalidArgument`    | `EINVAL`  |
//! | anything else (I/O, peer died, ...)| `EIO`     |
//!
//! Requests past the end of the export get `EINVAL` without reaching
//! vlmcd (a WRITE's payload is read and dropped: nothing is written).
//!
//! # Threads
//!
//! Per connection: the connection thread does the handshake, then reads
//! and checks requests (payloads included) and passes them over a bounded
//! channel to the connection's I/O thread, which owns an
//! [`IoQueue`](archipelago_client::IoQueue) (its own dynamic port),
//! submits the pieces, collects completions in any order and writes each
//! reply (matched by handle) as soon as its request is done. A client that
//! stops reading its replies is cut off after [`WRITE_TIMEOUT`]; a client
//! that stalls mid-request holds only its own threads. Malformed input
//! (bad magic, a payload larger than allowed) closes the connection.

#![warn(missing_docs)]

pub mod proto;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archipelago_client::{Call, Client, IoQueue};
use archipelago_config::mapped::{MappedSet, NbdClients};
use archipelago_protocol::payload::{decode_extents, extents_size, LockOwner, MapExtent, Payload};
use archipelago_protocol::sizes::MIN_OBJECT_SIZE;
use archipelago_protocol::{Error, ErrorCode, Flags, Op};

use proto::*;

/// Largest READ/WRITE accepted (split into pieces of the block maximum).
pub const HARD_MAX: u32 = 32 << 20;
/// Most bytes one BLOCK_STATUS reply describes.
pub const BLOCK_STATUS_MAX: u64 = 64 << 20;
/// How long a reply may take to write before the client is cut off.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest option payload accepted.
const MAX_OPTION_LEN: u32 = 64 << 10;
/// Read buffer of a connection's request reader.
const READ_BUFFER: usize = 256 << 10;

/// The errno an NBD client gets for `code` (see the crate docs' table).
pub fn errno(code: ErrorCode) -> u32 {
    match code {
        ErrorCode::NoSpace => ENOSPC,
        ErrorCode::ReadOnly | ErrorCode::Fenced => EPERM,
        ErrorCode::OutOfRange | ErrorCode::InvalidArgument => EINVAL,
        _ => EIO,
    }
}

/// A connected client socket.
#[derive(Debug)]
pub enum Sock {
    /// Unix socket.
    Unix(UnixStream),
    /// TCP.
    Tcp(TcpStream),
}

impl Sock {
    fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
        })
    }
    fn shutdown(&self) {
        let _ = match self {
            Sock::Unix(s) => s.shutdown(Shutdown::Both),
            Sock::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Unix(s) => s.set_read_timeout(t),
            Sock::Tcp(s) => s.set_read_timeout(t),
        }
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Unix(s) => s.set_write_timeout(t),
            Sock::Tcp(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => s.read(buf),
            Sock::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => s.write(buf),
            Sock::Tcp(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => s.write_vectored(bufs),
            Sock::Tcp(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Unix(s) => s.flush(),
            Sock::Tcp(s) => s.flush(),
        }
    }
}

/// Where the server finds its peers and files.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Segment name or path.
    pub segment: String,
    /// vlmcd's port.
    pub vlmcd: u32,
    /// mapperd's port.
    pub mapperd: u32,
    /// The mapped set.
    pub mapped_file: PathBuf,
    /// Where to publish connected clients (optional).
    pub status_file: Option<PathBuf>,
    /// Requests in flight per connection.
    pub depth: usize,
    /// How long a reply may take to write before the client is cut off
    /// (default [`WRITE_TIMEOUT`]).
    pub write_timeout: Duration,
    /// How long the handshake may take (default [`HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Duration,
}

struct ConnEntry {
    export: String,
    sock: Sock,
}

/// The server: shared by every connection.
pub struct Server {
    settings: Settings,
    info: Mutex<Client>,
    max_block: u32,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    next_id: AtomicU64,
}

/// An export being served.
#[derive(Debug, Clone)]
struct Export {
    name: String,
    size: u64,
    readonly: bool,
}

impl Server {
    /// Attaches to the segment (a client port for handshake lookups).
    pub fn new(settings: Settings) -> Result<Arc<Server>, Error> {
        let info = Client::connect(&settings.segment)?.with_timeout(Duration::from_secs(30));
        let max_block = info.port().segment().max_buffer().min(u64::from(HARD_MAX)) as u32;
        let s = Arc::new(Server {
            settings,
            info: Mutex::new(info),
            max_block,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        s.publish();
        Ok(s)
    }

    /// The advertised maximum block size.
    pub fn max_block(&self) -> u32 {
        self.max_block
    }

    /// Writes the clients file.
    fn publish(&self) {
        let Some(path) = &self.settings.status_file else {
            return;
        };
        let mut c = NbdClients {
            pid: std::process::id(),
            ..Default::default()
        };
        for e in self.conns.lock().expect("lock").values() {
            *c.clients.entry(e.export.clone()).or_default() += 1;
        }
        if let Err(e) = c.save(path) {
            log::warn!("{}: {e}", path.display());
        }
    }

    /// Removes the clients file (at exit).
    pub fn unpublish(&self) {
        if let Some(path) = &self.settings.status_file {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Re-reads the mapped set and cuts off clients of exports no longer
    /// in it (SIGHUP).
    pub fn reload(&self) {
        let set = match MappedSet::load(&self.settings.mapped_file) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("{e}");
                return;
            }
        };
        for e in self.conns.lock().expect("lock").values() {
            if set.get(&e.export).is_none() {
                log::info!("{}: unmapped: disconnecting its client", e.export);
                e.sock.shutdown();
            }
        }
    }

    fn lookup(&self, set: &MappedSet, name: &str) -> Result<Export, u32> {
        let m = set.get(name).ok_or(REP_ERR_UNKNOWN)?;
        let info = self
            .info
            .lock()
            .expect("lock")
            .volume_info(self.settings.vlmcd, name)
            .map_err(|e| {
                log::warn!("{name}: {e}");
                REP_ERR_UNKNOWN
            })?;
        Ok(Export {
            name: name.to_owned(),
            size: info.size,
            readonly: m.readonly || info.readonly,
        })
    }

    /// Serves one client to the end (the calling thread is its reader).
    pub fn serve(self: &Arc<Self>, sock: Sock) {
        let _ = sock.set_write_timeout(Some(self.settings.write_timeout));
        let _ = sock.set_read_timeout(Some(self.settings.handshake_timeout));
        let mut sock = sock;
        let hs = match self.handshake(&mut sock) {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                log::debug!("handshake: {e}");
                return;
            }
        };
        let _ = sock.set_read_timeout(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (Ok(w), Ok(ctl)) = (sock.try_clone(), sock.try_clone()) else {
            return;
        };
        self.conns.lock().expect("lock").insert(
            id,
            ConnEntry {
                export: hs.export.name.clone(),
                sock: ctl,
            },
        );
        self.publish();
        // The set may have changed while the handshake ran.
        if MappedSet::load(&self.settings.mapped_file)
            .map(|s| s.get(&hs.export.name).is_none())
            .unwrap_or(true)
        {
            sock.shutdown();
        }
        log::info!("{}: client connected", hs.export.name);
        let (tx, rx) = sync_channel::<Job>(self.settings.depth);
        let server = self.clone();
        let export = hs.export.clone();
        let structured = hs.structured;
        let io = std::thread::Builder::new()
            .name(format!("nbd-io-{id}"))
            .spawn(move || {
                let mut worker = match IoWorker::new(&server, export, structured, w) {
                    Ok(w) => w,
                    Err(e) => {
                        log::error!("cannot bind a port for a connection: {e}");
                        return;
                    }
                };
                worker.run(rx);
            });
        let io = match io {
            Ok(h) => h,
            Err(e) => {
                log::error!("spawn: {e}");
                self.conns.lock().expect("lock").remove(&id);
                self.publish();
                return;
            }
        };
        if let Err(e) = self.read_requests(&mut sock, &hs, &tx) {
            log::debug!("{}: connection: {e}", hs.export.name);
            sock.shutdown();
        }
        drop(tx);
        let _ = io.join();
        sock.shutdown();
        self.conns.lock().expect("lock").remove(&id);
        self.publish();
        log::info!("{}: client disconnected", hs.export.name);
    }

    /// The handshake; `None` when the client aborted or left.
    fn handshake(&self, s: &mut Sock) -> io::Result<Option<Handshake>> {
        let mut hello = Vec::new();
        hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
        hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
        hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        s.write_all(&hello)?;
        let cflags = read_u32(s)?;
        if cflags & !u32::from(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) != 0 {
            return Err(bad("unknown client flags"));
        }
        let no_zeroes = cflags & u32::from(FLAG_NO_ZEROES) != 0;
        let set = MappedSet::load(&self.settings.mapped_file).unwrap_or_else(|e| {
            log::warn!("{e}");
            MappedSet::default()
        });
        let mut structured = false;
        let mut meta = false;
        loop {
            if read_u64(s)? != IHAVEOPT {
                return Err(bad("bad option magic"));
            }
            let opt = read_u32(s)?;
            let len = read_u32(s)?;
            if len > MAX_OPTION_LEN {
                return Err(bad("option too long"));
            }
            let mut data = vec![0u8; len as usize];
            s.read_exact(&mut data)?;
            let reply =
                |s: &mut Sock, kind: u32, d: &[u8]| s.write_all(&option_reply(opt, kind, d));
            match opt {
                OPT_ABORT => {
                    let _ = reply(s, REP_ACK, &[]);
                    return Ok(None);
                }
                OPT_LIST => {
                    if len != 0 {
                        reply(s, REP_ERR_INVALID, &[])?;
                        continue;
                    }
                    for v in &set.volumes {
                        let mut d = (v.name.len() as u32).to_be_bytes().to_vec();
                        d.extend_from_slice(v.name.as_bytes());
                        reply(s, REP_SERVER, &d)?;
                    }
                    reply(s, REP_ACK, &[])?;
                }
                OPT_STRUCTURED_REPLY => {
                    if len != 0 {
                        reply(s, REP_ERR_INVALID, &[])?;
                    } else {
                        structured = true;
                        reply(s, REP_ACK, &[])?;
                    }
                }
                OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                    let Some((name, queries)) = parse_meta(&data) else {
                        reply(s, REP_ERR_INVALID, &[])?;
                        continue;
                    };
                    if opt == OPT_SET_META_CONTEXT && !structured {
                        reply(s, REP_ERR_INVALID, &[])?;
                        continue;
                    }
                    if set.get(&name).is_none() {
                        reply(s, REP_ERR_UNKNOWN, &[])?;
                        continue;
                    }
                    let listing = opt == OPT_LIST_META_CONTEXT;
                    let wanted = queries.iter().any(|q| {
                        q == BASE_ALLOCATION || (listing && (q == "base:" || q.is_empty()))
                    }) || (listing && queries.is_empty());
                    if opt == OPT_SET_META_CONTEXT {
                        meta = wanted;
                    }
                    if wanted {
                        let mut d = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
                        d.extend_from_slice(BASE_ALLOCATION.as_bytes());
                        reply(s, REP_META_CONTEXT, &d)?;
                    }
                    reply(s, REP_ACK, &[])?;
                }
                OPT_EXPORT_NAME => {
                    let name = String::from_utf8_lossy(&data).into_owned();
                    let Ok(export) = self.lookup(&set, &name) else {
                        return Err(bad("unknown export"));
                    };
                    let mut d = export.size.to_be_bytes().to_vec();
                    d.extend_from_slice(&self.transmission_flags(&export).to_be_bytes());
                    if !no_zeroes {
                        d.extend_from_slice(&[0u8; 124]);
                    }
                    s.write_all(&d)?;
                    return Ok(Some(Handshake {
                        export,
                        structured,
                        meta: false,
                    }));
                }
                OPT_INFO | OPT_GO => {
                    let Some((name, _infos)) = parse_info(&data) else {
                        reply(s, REP_ERR_INVALID, &[])?;
                        continue;
                    };
                    let export = match self.lookup(&set, &name) {
                        Ok(e) => e,
                        Err(code) => {
                            reply(s, code, &[])?;
                            continue;
                        }
                    };
                    let mut d = INFO_EXPORT.to_be_bytes().to_vec();
                    d.extend_from_slice(&export.size.to_be_bytes());
                    d.extend_from_slice(&self.transmission_flags(&export).to_be_bytes());
                    reply(s, REP_INFO, &d)?;
                    let mut d = INFO_NAME.to_be_bytes().to_vec();
                    d.extend_from_slice(name.as_bytes());
                    reply(s, REP_INFO, &d)?;
                    let mut d = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                    for v in [1u32, 4096, self.max_block] {
                        d.extend_from_slice(&v.to_be_bytes());
                    }
                    reply(s, REP_INFO, &d)?;
                    reply(s, REP_ACK, &[])?;
                    if opt == OPT_GO {
                        return Ok(Some(Handshake {
                            export,
                            structured,
                            meta,
                        }));
                    }
                }
                _ => reply(s, REP_ERR_UNSUP, &[])?,
            }
        }
    }

    fn transmission_flags(&self, e: &Export) -> u16 {
        let mut f = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA;
        if e.readonly {
            f |= TF_READ_ONLY;
        } else {
            f |= TF_SEND_TRIM | TF_SEND_WRITE_ZEROES | TF_CAN_MULTI_CONN;
        }
        f
    }

    /// Reads requests until DISC, EOF or a protocol error.
    fn read_requests(
        &self,
        s: &mut Sock,
        hs: &Handshake,
        tx: &std::sync::mpsc::SyncSender<Job>,
    ) -> io::Result<()> {
        let size = hs.export.size;
        // Buffered: at a queue depth, one read(2) takes many requests.
        let mut s = io::BufReader::with_capacity(READ_BUFFER, s);
        loop {
            let mut b = [0u8; RequestHeader::SIZE];
            match s.read_exact(&mut b) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let h = RequestHeader::parse(&b).ok_or_else(|| bad("bad request magic"))?;
            let in_range = h
                .offset
                .checked_add(u64::from(h.length))
                .is_some_and(|end| end <= size);
            let job = match h.kind {
                CMD_DISC => return Ok(()),
                CMD_WRITE => {
                    if h.length > HARD_MAX {
                        return Err(bad("write larger than the maximum"));
                    }
                    let mut data = vec![0u8; h.length as usize];
                    s.read_exact(&mut data)?;
                    if hs.export.readonly {
                        Job::fail(h, EPERM)
                    } else if !in_range {
                        Job::fail(h, EINVAL)
                    } else {
                        Job::new(h, Kind::Write(data))
                    }
                }
                CMD_READ if h.length > HARD_MAX => Job::fail(h, EOVERFLOW),
                CMD_READ if !in_range => Job::fail(h, EINVAL),
                CMD_READ => Job::new(h, Kind::Read),
                CMD_FLUSH => Job::new(h, Kind::Flush),
                CMD_TRIM | CMD_WRITE_ZEROES if hs.export.readonly => Job::fail(h, EPERM),
                CMD_TRIM | CMD_WRITE_ZEROES if !in_range => Job::fail(h, EINVAL),
                CMD_TRIM => Job::new(h, Kind::Trim),
                CMD_WRITE_ZEROES => Job::new(h, Kind::Zeroes),
                CMD_BLOCK_STATUS if !hs.meta || !in_range || h.length == 0 => Job::fail(h, EINVAL),
                CMD_BLOCK_STATUS => Job::new(h, Kind::Status),
                _ => Job::fail(h, EINVAL),
            };
            if tx.send(job).is_err() {
                return Ok(());
            }
        }
    }
}

struct Handshake {
    export: Export,
    structured: bool,
    meta: bool,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn read_u32(s: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(s: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    s.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// `u32 len, name, u16 count, u16 infos...`.
fn parse_info(d: &[u8]) -> Option<(String, Vec<u16>)> {
    let n = u32::from_be_bytes(d.get(0..4)?.try_into().ok()?) as usize;
    let name = d.get(4..4usize.checked_add(n)?)?;
    let mut p = 4 + n;
    let count = u16::from_be_bytes(d.get(p..p + 2)?.try_into().ok()?) as usize;
    p += 2;
    if d.len() != p + 2 * count {
        return None;
    }
    let infos = (0..count)
        .map(|i| u16::from_be_bytes([d[p + 2 * i], d[p + 2 * i + 1]]))
        .collect();
    Some((String::from_utf8_lossy(name).into_owned(), infos))
}

/// `u32 len, name, u32 count, (u32 len, query)...`.
fn parse_meta(d: &[u8]) -> Option<(String, Vec<String>)> {
    let u32_at = |p: usize| -> Option<usize> {
        Some(u32::from_be_bytes(d.get(p..p.checked_add(4)?)?.try_into().ok()?) as usize)
    };
    let n = u32_at(0)?;
    let name = String::from_utf8_lossy(d.get(4..4usize.checked_add(n)?)?).into_owned();
    let mut p = 4 + n;
    let count = u32_at(p)?;
    p += 4;
    let mut queries = Vec::new();
    for _ in 0..count {
        let l = u32_at(p)?;
        p += 4;
        queries.push(String::from_utf8_lossy(d.get(p..p.checked_add(l)?)?).into_owned());
        p += l;
    }
    (p == d.len()).then_some((name, queries))
}

#[derive(Debug)]
enum Kind {
    Read,
    Write(Vec<u8>),
    Flush,
    Trim,
    Zeroes,
    Status,
    Failed(u32),
}

#[derive(Debug)]
struct Job {
    h: RequestHeader,
    kind: Kind,
}

impl Job {
    fn new(h: RequestHeader, kind: Kind) -> Job {
        Job { h, kind }
    }
    fn fail(h: RequestHeader, errno: u32) -> Job {
        Job {
            h,
            kind: Kind::Failed(errno),
        }
    }
}

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

struct IoWorker {
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
    fn new(server: &Server, export: Export, structured: bool, w: Sock) -> Result<IoWorker, Error> {
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

    fn run(&mut self, rx: Receiver<Job>) {
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
                    let most = (p.len / MIN_OBJECT_SIZE).saturating_add(2);
                    let room = most
                        .saturating_mul(MapExtent::SIZE as u64)
                        .saturating_add(extents_size(0) as u64)
                        .max(LockOwner::SIZE as u64)
                        .min(self.max_reply);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_documented_errnos() {
        assert_eq!(errno(ErrorCode::NoSpace), ENOSPC);
        assert_eq!(errno(ErrorCode::ReadOnly), EPERM);
        assert_eq!(errno(ErrorCode::OutOfRange), EINVAL);
        assert_eq!(errno(ErrorCode::Io), EIO);
        assert_eq!(errno(ErrorCode::PeerDied), EIO);
    }

    #[test]
    fn option_payloads_are_checked() {
        let mut d = 3u32.to_be_bytes().to_vec();
        d.extend_from_slice(b"vol");
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&3u16.to_be_bytes());
        assert_eq!(parse_info(&d), Some(("vol".into(), vec![3])));
        assert_eq!(parse_info(&d[..d.len() - 1]), None);
        assert_eq!(parse_info(&[0xff; 4]), None);
        let mut m = 3u32.to_be_bytes().to_vec();
        m.extend_from_slice(b"vol");
        m.extend_from_slice(&1u32.to_be_bytes());
        m.extend_from_slice(&15u32.to_be_bytes());
        m.extend_from_slice(b"base:allocation");
        assert_eq!(
            parse_meta(&m),
            Some(("vol".into(), vec!["base:allocation".into()]))
        );
        assert_eq!(parse_meta(&m[..m.len() - 1]), None);
        let mut huge = 0u32.to_be_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_meta(&huge), None);
    }
}
