//! A peer for the end-to-end tests: a server that echoes or holds requests,
//! or a client that drives a server and checks every reply.
//!
//! It prints `ready` on stdout once bound (and `held N` / `done N` as it
//! goes), so a test can synchronise with it and then kill it at a known
//! point.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use archipelago_e2e::{pattern, OP_STOP};
use clap::{Parser, Subcommand};
use xseg_shm::{code, status, Idle, IdlePolicy, Segment, SegmentName, TransportError};

#[derive(Parser)]
struct Args {
    /// Segment name or path.
    #[arg(long)]
    segment: String,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Serve port PORT: check each request's payload and answer with the
    /// reply pattern (echo), or accept and hold them (hold).
    Server {
        #[arg(long)]
        port: u32,
        /// Hold the first N accepted requests without answering, then stop
        /// accepting (later ones stay queued).
        #[arg(long)]
        hold: Option<u32>,
        /// Also take this many descriptors of its own, with buffers, and
        /// hold them.
        #[arg(long, default_value_t = 0)]
        own: u32,
        #[arg(long, default_value = "yield")]
        idle: IdlePolicy,
    },
    /// Send COUNT requests spread over the DST ports, IN_FLIGHT at a time,
    /// and check every reply; exit non-zero on any mismatch.
    Client {
        #[arg(long, value_delimiter = ',')]
        dst: Vec<u32>,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        /// Client id, mixed into tags and payloads.
        #[arg(long, default_value_t = 0)]
        id: u32,
        /// Largest payload in bytes.
        #[arg(long, default_value_t = 16384)]
        max_len: u64,
        /// Submit COUNT requests, print `ready`, and wait to be killed.
        #[arg(long)]
        hold: bool,
        /// Retry requests failed with "peer died" instead of failing.
        #[arg(long)]
        retry: bool,
        /// Also take this many descriptors, with buffers, and hold them.
        #[arg(long, default_value_t = 0)]
        own: u32,
        #[arg(long, default_value = "yield")]
        idle: IdlePolicy,
    },
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args = Args::parse();
    let name = SegmentName::parse(&args.segment).expect("segment name");
    let seg = Arc::new(Segment::attach(&name, None).expect("attach"));
    let result = match args.role {
        Role::Server {
            port,
            hold,
            own,
            idle,
        } => server(&seg, port, hold, own, idle),
        Role::Client {
            dst,
            count,
            in_flight,
            id,
            max_len,
            hold,
            retry,
            own,
            idle,
        } => client(
            &seg, &dst, count, in_flight, id, max_len, hold, retry, own, idle,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xseg-testpeer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn server(
    seg: &Arc<Segment>,
    port: u32,
    hold: Option<u32>,
    own: u32,
    idle: IdlePolicy,
) -> Result<(), String> {
    let p = seg.bind(port).map_err(|e| e.to_string())?;
    let mut mine = Vec::new();
    for _ in 0..own {
        let mut r = p.get(port).map_err(|e| e.to_string())?;
        p.alloc_data(&mut r, 8192).map_err(|e| e.to_string())?;
        mine.push(r);
    }
    say("ready");
    let mut held = Vec::new();
    let mut idler = Idle::new(idle, 100);
    loop {
        if hold.is_some_and(|h| held.len() as u32 >= h) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        let Some(mut req) = p.accept() else {
            idler.idle(&p);
            continue;
        };
        idler.busy();
        let d = p.desc(&req);
        if d.op() == OP_STOP {
            p.serve(req, 0).map_err(|e| e.error.to_string())?;
            return Ok(());
        }
        let tag = d.tag();
        if pattern::check(p.data(&req), tag, 0).is_err() {
            p.fail(req, 1).map_err(|e| e.error.to_string())?;
            continue;
        }
        if hold.is_some() {
            held.push(req);
            if Some(held.len() as u32) == hold {
                say(&format!("held {}", held.len()));
            }
            continue;
        }
        pattern::fill(p.data_mut(&mut req), tag, 1);
        let size = p.desc(&req).size();
        p.serve(req, size).map_err(|e| e.error.to_string())?;
    }
}

#[allow(clippy::too_many_arguments)]
fn client(
    seg: &Arc<Segment>,
    dst: &[u32],
    count: u64,
    in_flight: usize,
    id: u32,
    max_len: u64,
    hold: bool,
    retry: bool,
    own: u32,
    idle: IdlePolicy,
) -> Result<(), String> {
    let p = seg.bind_dynamic().map_err(|e| e.to_string())?;
    let mut mine = Vec::new();
    for _ in 0..own {
        let mut r = p.get(dst[0]).map_err(|e| e.to_string())?;
        p.alloc_data(&mut r, 4096).map_err(|e| e.to_string())?;
        mine.push(r);
    }
    let mut seen = vec![false; count as usize];
    let (mut next_seq, mut outstanding, mut done, mut retried) = (0u64, 0usize, 0u64, 0u64);
    let mut pending: Vec<u64> = Vec::new(); // sequence numbers to (re)send
    let mut idler = Idle::new(idle, 100);
    let send = |seq: u64| -> Result<(), String> {
        let tag = (u64::from(id) << 40) | seq;
        let len = 1 + pattern::mix(tag) % max_len;
        let target = dst[(seq % dst.len() as u64) as usize];
        let mut r = loop {
            match p.get(target) {
                Ok(r) => break r,
                Err(TransportError::Busy(_)) => std::thread::yield_now(),
                Err(e) => return Err(e.to_string()),
            }
        };
        let d = p.desc(&r);
        d.set_tag(tag);
        d.set_size(len);
        d.set_offset(seq);
        p.set_target(&mut r, format!("obj-{id}-{seq}").as_bytes())
            .map_err(|e| e.to_string())?;
        loop {
            match p.alloc_data(&mut r, len) {
                Ok(()) => break,
                Err(TransportError::Busy(_)) => std::thread::yield_now(),
                Err(e) => return Err(e.to_string()),
            }
        }
        pattern::fill(p.data_mut(&mut r), tag, 0);
        loop {
            match p.submit(r) {
                Ok(()) => return Ok(()),
                Err(rejected) => match rejected.error {
                    // Full ring, or a port between owners: wait.
                    TransportError::Busy(_) | TransportError::NotBound(_) => {
                        r = rejected.request;
                        std::thread::yield_now();
                    }
                    e => return Err(e.to_string()),
                },
            }
        }
    };
    while done < count {
        while outstanding < in_flight && (next_seq < count || !pending.is_empty()) {
            let seq = pending.pop().unwrap_or_else(|| {
                next_seq += 1;
                next_seq - 1
            });
            send(seq)?;
            outstanding += 1;
        }
        if hold && next_seq == count {
            say("ready");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        let Some(reply) = p.receive() else {
            idler.idle(&p);
            continue;
        };
        idler.busy();
        outstanding -= 1;
        let d = p.desc(&reply);
        let tag = d.tag();
        let seq = d.offset();
        if tag >> 40 != u64::from(id) || seq >= count || tag & ((1 << 40) - 1) != seq {
            return Err(format!("reply with foreign tag {tag:#x}"));
        }
        if d.status() == status::FAILED && d.error() == code::PEER_DIED && retry {
            p.put(reply);
            pending.push(seq);
            retried += 1;
            continue;
        }
        if d.status() != status::SERVED {
            return Err(format!("request {seq} failed with code {:#x}", d.error()));
        }
        if d.serviced() != d.size() || d.data_len() != d.size() {
            return Err(format!(
                "request {seq}: serviced {} of {}",
                d.serviced(),
                d.size()
            ));
        }
        pattern::check(p.data(&reply), tag, 1)
            .map_err(|at| format!("request {seq}: reply payload differs at byte {at}"))?;
        if std::mem::replace(&mut seen[seq as usize], true) {
            return Err(format!("request {seq} answered twice"));
        }
        p.put(reply);
        done += 1;
    }
    say(&format!("done {done} retried {retried}"));
    Ok(())
}
