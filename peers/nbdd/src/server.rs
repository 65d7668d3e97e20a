//! The server: the exports of the mapped set, the connections (each
//! served by a reader thread and an I/O thread, see the crate docs), the
//! clients file `vlmc unmap` reads, and the listeners.

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archipelago_client::Client;
use archipelago_config::mapped::{MappedSet, NbdClients};
use archipelago_peer::{Ctx, Done, Handler, Peer, PeerArgs};
use archipelago_protocol::{Error, ErrorCode, Op};
use xseg_shm::Request;

use crate::bridge::IoWorker;
use crate::proto::REP_ERR_UNKNOWN;
use crate::sock::Sock;
use crate::transmission::Job;
use crate::HARD_MAX;

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
    /// (default [`WRITE_TIMEOUT`](crate::WRITE_TIMEOUT)).
    pub write_timeout: Duration,
    /// How long the handshake may take (default [`HANDSHAKE_TIMEOUT`](crate::HANDSHAKE_TIMEOUT)).
    pub handshake_timeout: Duration,
}

struct ConnEntry {
    export: String,
    sock: Sock,
}

/// The server: shared by every connection.
pub struct Server {
    pub(crate) settings: Settings,
    info: Mutex<Client>,
    pub(crate) max_block: u32,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    next_id: AtomicU64,
}

/// An export being served.
#[derive(Debug, Clone)]
pub(crate) struct Export {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) readonly: bool,
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

    pub(crate) fn lookup(&self, set: &MappedSet, name: &str) -> Result<Export, u32> {
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
}

/// Where the server accepts clients.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    /// A Unix socket (replaced if it exists).
    pub socket: Option<PathBuf>,
    /// A TCP address, e.g. `127.0.0.1:10809` (port 0: the kernel chooses).
    pub tcp: Option<String>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No listener was given.
    #[error("nothing to serve on: give --socket and/or --listen")]
    NoListener,
    /// A listener could not be bound.
    #[error("{what}: {source}")]
    Bind {
        /// The socket path or address.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The peer runtime or the segment failed.
    #[error("{0}")]
    Peer(String),
}

/// Runs `nbdd` to the end: binds the static port (which answers PING and
/// STATS and refuses everything else), serves NBD on `on` as a client of
/// the peers `settings` names, re-reads the mapped set on SIGHUP, and
/// returns whether the peer drained in time when told to stop.
pub fn serve(peer_args: &PeerArgs, settings: Settings, on: &Listeners) -> Result<bool, ServeError> {
    if on.socket.is_none() && on.tcp.is_none() {
        return Err(ServeError::NoListener);
    }
    let mut peer = Peer::start(peer_args).map_err(|e| ServeError::Peer(e.to_string()))?;
    let server = Server::new(settings).map_err(|e| ServeError::Peer(e.to_string()))?;
    listen(&server, on)?;
    reload_on_hup(&server).map_err(|e| ServeError::Peer(e.to_string()))?;
    let drained = peer
        .run(&mut Refuse)
        .map_err(|e| ServeError::Peer(e.to_string()))?;
    server.unpublish();
    if let Some(path) = &on.socket {
        let _ = std::fs::remove_file(path);
    }
    log::info!("stopped");
    Ok(drained)
}

/// Accepts clients on every listener of `on`: a thread per listener and
/// one per connection.
pub fn listen(server: &Arc<Server>, on: &Listeners) -> Result<(), ServeError> {
    if let Some(path) = &on.socket {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).map_err(|source| ServeError::Bind {
            what: path.display().to_string(),
            source,
        })?;
        let s = server.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                match c {
                    Ok(c) => spawn(&s, Sock::Unix(c)),
                    Err(e) => log::warn!("accept: {e}"),
                }
            }
        });
        log::info!("serving NBD on {}", path.display());
    }
    if let Some(addr) = &on.tcp {
        let l = TcpListener::bind(addr).map_err(|source| ServeError::Bind {
            what: addr.clone(),
            source,
        })?;
        // The bound address: with port 0 the kernel chose one.
        let bound = l
            .local_addr()
            .map_or_else(|_| addr.clone(), |a| a.to_string());
        let s = server.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                match c {
                    Ok(c) => {
                        let _ = c.set_nodelay(true);
                        spawn(&s, Sock::Tcp(c))
                    }
                    Err(e) => log::warn!("accept: {e}"),
                }
            }
        });
        log::info!("serving NBD on {bound}");
    }
    Ok(())
}

fn spawn(server: &Arc<Server>, sock: Sock) {
    let s = server.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("nbd-conn".into())
        .spawn(move || s.serve(sock))
    {
        log::warn!("cannot serve a connection: {e}");
    }
}

static HUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hup(_: std::os::raw::c_int) {
    HUP.store(true, Ordering::SeqCst);
}

/// `vlmc map`/`unmap` signal a changed mapped set with SIGHUP: a thread
/// polls the flag the handler sets and reloads.
fn reload_on_hup(server: &Arc<Server>) -> nix::Result<()> {
    let handler = nix::sys::signal::SigHandler::Handler(on_hup);
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGHUP, handler) }?;
    let s = server.clone();
    std::thread::spawn(move || loop {
        if HUP.swap(false, Ordering::SeqCst) {
            s.reload();
        }
        std::thread::sleep(Duration::from_millis(100));
    });
    Ok(())
}

/// nbdd's static port answers nothing but PING and STATS (the runtime
/// does those): the NBD work goes through dynamic ports.
struct Refuse;

impl Handler for Refuse {
    fn handle(&mut self, _: &mut Ctx<'_>, op: Op, req: Request) -> Option<(Request, Done)> {
        let e = Error::with(
            ErrorCode::Unsupported,
            format!("nbdd serves NBD, not {}", op.name()),
        );
        Some((req, Done::Failed(e)))
    }
}
