//! `nbdd`: serves the mapped volumes over NBD (see the `archipelago_nbd`
//! library for the protocol). It binds its static port with the peer
//! runtime, which answers PING and STATS (liveness for `archipelago`) and
//! refuses everything else; the NBD work goes through its own dynamic
//! ports, as a client of vlmcd and mapperd.
//!
//! ```text
//! nbdd --port 5 --vlmcd-port 4 --mapperd-port 3 \
//!      --mapped-file /run/archipelago/nbd-mapped.json \
//!      --socket /run/archipelago/nbd.sock --listen 127.0.0.1:10809
//! ```

use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use archipelago_nbd::{Server, Settings, Sock};
use archipelago_peer::{init_logging, Ctx, Done, Handler, Peer, PeerArgs};
use archipelago_protocol::{Error, ErrorCode, Op};
use clap::Parser;
use xseg_shm::Request;

/// Serve mapped Archipelago volumes over NBD.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,

    /// Port of the composer (volume I/O).
    #[arg(long, default_value_t = 4)]
    vlmcd_port: u32,

    /// Port of the mapper (block status).
    #[arg(long, default_value_t = 3)]
    mapperd_port: u32,

    /// The mapped set (see `vlmc map`).
    #[arg(long, value_name = "FILE")]
    mapped_file: PathBuf,

    /// Publish connected clients here (for `vlmc unmap`).
    #[arg(long, value_name = "FILE")]
    status_file: Option<PathBuf>,

    /// Unix socket to serve on.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// TCP address to serve on (e.g. 127.0.0.1:10809).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,

    /// Requests in flight per connection.
    #[arg(long, default_value_t = 64)]
    queue_depth: usize,

    /// Seconds a reply may take to write before its client is cut off.
    #[arg(long, default_value_t = archipelago_nbd::WRITE_TIMEOUT.as_secs())]
    write_timeout: u64,

    /// Seconds a client may take over its handshake.
    #[arg(long, default_value_t = archipelago_nbd::HANDSHAKE_TIMEOUT.as_secs())]
    handshake_timeout: u64,
}

/// Answers nothing but PING and STATS (the runtime does those).
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

static HUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hup(_: std::os::raw::c_int) {
    HUP.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.peer.log_level);
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nbdd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode, String> {
    if cli.socket.is_none() && cli.listen.is_none() {
        return Err("nothing to serve on: give --socket and/or --listen".into());
    }
    let mut peer = Peer::start(&cli.peer).map_err(|e| e.to_string())?;
    let server = Server::new(Settings {
        segment: cli.peer.segment.clone(),
        vlmcd: cli.vlmcd_port,
        mapperd: cli.mapperd_port,
        mapped_file: cli.mapped_file.clone(),
        status_file: cli.status_file.clone(),
        depth: cli.queue_depth.max(1),
        write_timeout: Duration::from_secs(cli.write_timeout.max(1)),
        handshake_timeout: Duration::from_secs(cli.handshake_timeout.max(1)),
    })
    .map_err(|e| e.to_string())?;
    if let Some(path) = &cli.socket {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
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
    if let Some(addr) = &cli.listen {
        let l = TcpListener::bind(addr).map_err(|e| format!("{addr}: {e}"))?;
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
    let handler = nix::sys::signal::SigHandler::Handler(on_hup);
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGHUP, handler) }
        .map_err(|e| e.to_string())?;
    let s = server.clone();
    std::thread::spawn(move || loop {
        if HUP.swap(false, Ordering::SeqCst) {
            s.reload();
        }
        std::thread::sleep(Duration::from_millis(100));
    });
    let drained = peer.run(&mut Refuse).map_err(|e| e.to_string())?;
    server.unpublish();
    if let Some(path) = &cli.socket {
        let _ = std::fs::remove_file(path);
    }
    log::info!("stopped");
    Ok(if drained {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
