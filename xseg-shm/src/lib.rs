//! The xseg shared-memory transport.
//!
//! Independent processes (*peers*) map one shared-memory **segment** and
//! pass **request descriptors** to each other through numbered **ports**.
//! This crate knows nothing about volumes: ops, flags and error codes above
//! the transport's own are the protocol crate's business.
//!
//! - [`Segment`] creates, attaches to and destroys a segment (a POSIX shm
//!   object under `/dev/shm`, a file for tests, or a sealed anonymous
//!   memory file passed by descriptor), checks its versioned header,
//!   reports on it and recovers ports of dead peers.
//! - [`Port`] is a bound port: `get` a descriptor, fill it (`desc`,
//!   `set_target`, `alloc_data`/`data_mut`), `submit` it; the server
//!   `accept`s, serves and `respond`s; the client `receive`s and `put`s it
//!   back. `forward` re-addresses a request on its way.
//! - Each port has two lock-free rings (requests in, replies in) of
//!   descriptor indexes, see [`ring`], and a futex [`doorbell`] that a
//!   submitter rings only when the consumer announced it sleeps; [`Idle`]
//!   is the poll/yield/sleep loop a peer runs between bursts.
//! - Every descriptor carries a *ticket* naming the one port that holds it,
//!   so [`Segment::recover`] can put right exactly what a killed peer held
//!   (see the `recovery` module docs).
//!
//! Nothing in the segment is a pointer; every index or offset read from it
//! is bounds-checked before use, in release builds too. The memory layout
//! is documented byte by byte in [`layout`].
//!
//! # Trust boundary
//!
//! Every process that maps the segment can write all of it. What a peer
//! that breaks the protocol can and cannot do to this process:
//!
//! - It cannot make us read or write outside the mapping (every index and
//!   offset is checked), nor give this process two references to one data
//!   buffer: which port of this process holds each descriptor, and which
//!   descriptor each buffer serves here, is recorded in this process's own
//!   memory and checked before a descriptor is taken or a buffer is shown
//!   (the `held` module); a request token names the binding that took it
//!   and is refused elsewhere.
//! - It can change the bytes of a buffer we are reading or writing (they
//!   are plain bytes: values change, nothing else), fail or drop requests,
//!   and corrupt descriptors and rings so that requests are lost or
//!   refused; recovery and the checks above keep that from spreading into
//!   two owners of one thing.
//! - It can shrink a named segment's file (`ftruncate`), after which
//!   touching the lost pages kills every peer with `SIGBUS` (a crash,
//!   never an access outside the mapping: attach maps exactly the length
//!   the header describes and refuses a file shorter than that). A
//!   **sealed** segment ([`Segment::create_sealed`], an anonymous memory
//!   file whose size is sealed) closes this: nobody can resize it. It has
//!   no name; processes get it as a file descriptor, inherited or passed
//!   over a Unix socket ([`sys::send_fd`], [`sys::recv_fd`], with
//!   [`sys::peer_credentials`] to check who asks), and attach it with
//!   [`Segment::attach_fd`]. Named segments stay for tests and explicit
//!   use. (Making it the default under `archipelago start`, with the
//!   supervisor handing it out, is not done yet.)
//!
//! # Layers
//!
//! A module imports only from the layers below its own:
//!
//! 1. `sync` (every atomic, so loom can replace them) and [`sys`] (the
//!    futex, process liveness, the clock).
//! 2. Building blocks, lock-free algorithms over words wherever they live
//!    (the segment, or the heap in the loom models of `tests/loom/`):
//!    [`ring`], [`doorbell`], [`binding`] (who owns a port), [`pool`] (the
//!    ticket that says who holds a descriptor) and [`buffers`] (the owner
//!    word of each data buffer).
//! 3. The segment: [`layout`] (the format), descriptor fields, and
//!    [`Segment`]'s bounds-checked views of mapped memory.
//! 4. Operations over the segment shared by ports and recovery (putting a
//!    descriptor back), crash recovery, reports.
//! 5. The API: [`Port`], [`Detached`], [`Idle`].
//!
//! ```
//! use std::sync::Arc;
//! use xseg_shm::{Segment, SegmentConfig, SegmentName};
//!
//! let dir = std::env::temp_dir().join(format!("xseg-doc-{}", std::process::id()));
//! let name = SegmentName::parse(dir.to_str().unwrap()).unwrap();
//! let config = SegmentConfig { ports: 8, static_ports: 4, requests: 64, buffer_counts: vec![8], ..Default::default() };
//! let seg = Arc::new(Segment::create(&name, &config).unwrap());
//! let server = seg.bind(1).unwrap();
//! let client = seg.bind_dynamic().unwrap();
//!
//! let mut req = client.get(1).unwrap();
//! client.set_target(&mut req, b"volume-1").unwrap();
//! client.alloc_data(&mut req, 5).unwrap();
//! client.data_mut(&mut req).copy_from_slice(b"hello");
//! client.submit(req).unwrap();
//!
//! let req = server.accept().unwrap();
//! assert_eq!(server.desc(&req).target().as_bytes(), b"volume-1");
//! assert_eq!(server.data(&req), b"hello");
//! server.serve(req, 5).unwrap();
//!
//! let reply = client.receive().unwrap();
//! assert_eq!(client.desc(&reply).serviced(), 5);
//! client.put(reply);
//! drop((server, client));
//! Segment::destroy(&name, false).unwrap();
//! ```

#![warn(missing_docs)]
// Atomics come from `sync` only (see there, and `clippy.toml`).
#![deny(clippy::disallowed_types, clippy::disallowed_methods)]

// Building blocks: lock-free algorithms over atomics from `sync`, built
// under loom too.
pub mod binding;
pub mod buffers;
pub mod doorbell;
pub mod pool;
pub mod ring;
mod sync;

#[cfg(not(loom))]
mod detached;
#[cfg(not(loom))]
mod put;

#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod held;
#[cfg(not(loom))]
#[doc(hidden)]
pub mod hooks;
#[cfg(not(loom))]
mod idle;
#[cfg(not(loom))]
pub mod layout;
#[cfg(not(loom))]
mod port;
#[cfg(not(loom))]
mod recovery;
#[cfg(not(loom))]
mod report;
#[cfg(not(loom))]
mod request;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
pub mod sys;

#[cfg(not(loom))]
pub use crate::{
    binding::Binding,
    detached::Detached,
    error::{PortError, SegmentError, TransportError},
    idle::{Idle, IdlePolicy, DEFAULT_IDLE_POLLS},
    layout::RequestShm as Descriptor,
    pool::{Phase, Ticket},
    port::{Port, Rejected, BIND_WAIT},
    recovery::{RecoveryReport, REPLY_RING_WAIT},
    report::{BufferClassReport, PortReport, SegmentReport},
    request::{code, status, Request, Target},
    segment::{Segment, SegmentConfig, SegmentName},
    sys::Clock,
};
