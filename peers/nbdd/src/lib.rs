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
//! | anything else (I/O, ...)           | `EIO`     |
//!
//! A request failed by a peer's death (`PeerDied`: vlmcd, or a peer
//! behind it, died holding it) is sent again once the supervisor has the
//! peer back, and the client gets `EIO` only if that takes longer than
//! [`bridge::PEER_RETRY_WINDOW`]; a FLUSH waits for the writes received
//! before it, so no write lands after a FLUSH that followed it was
//! acknowledged (see the bridge module).
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
//!
//! # Modules
//!
//! [`server`] owns the listeners, the exports and the connections;
//! `handshake` negotiates a connection's options; `transmission`
//! reads and checks its requests; `bridge` turns them into xseg
//! requests to vlmcd and mapperd and writes the replies; [`sock`] is the
//! socket of either family.

#![warn(missing_docs)]

pub mod bridge;
pub mod cli;
mod handshake;
pub mod proto;
pub mod server;
pub mod sock;
mod transmission;

use std::time::Duration;

use archipelago_protocol::ErrorCode;

pub use cli::Cli;
pub use server::{listen, serve, Listeners, ServeError, Server, Settings};
pub use sock::Sock;

use proto::{EINVAL, EIO, ENOSPC, EPERM};

/// Largest READ/WRITE accepted (split into pieces of the block maximum).
pub const HARD_MAX: u32 = 32 << 20;
/// Most bytes one BLOCK_STATUS reply describes.
pub const BLOCK_STATUS_MAX: u64 = 64 << 20;
/// How long a reply may take to write before the client is cut off.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The errno an NBD client gets for `code` (see the crate docs' table).
pub fn errno(code: ErrorCode) -> u32 {
    match code {
        ErrorCode::NoSpace => ENOSPC,
        ErrorCode::ReadOnly | ErrorCode::Fenced => EPERM,
        ErrorCode::OutOfRange | ErrorCode::InvalidArgument => EINVAL,
        _ => EIO,
    }
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
}
