//! Requests on the wire: where the protocol ([`archipelago_protocol`])
//! meets the transport ([`xseg_shm`]). Everything that puts a protocol
//! request into a descriptor or reads a reply out of one lives here, once:
//!
//! - [`Call`] and [`build`]/[`submit`]: a request from its fields, with
//!   nothing left held on failure (clients and vlmcd's sub-requests);
//! - [`reply`]: a failure's code and human detail, written by a peer and
//!   read back by the caller;
//! - [`transport_error`]: a transport failure as a protocol [`Error`];
//! - [`attach`]: a segment, checked for this protocol's version.
//!
//! ```no_run
//! use archipelago_protocol::Op;
//! use archipelago_wire::{attach, submit, Call};
//! let port = attach("archipelago").unwrap().bind_dynamic().unwrap();
//! let index = submit(&port, &Call::new(1, Op::Ping, b""), 7).unwrap();
//! # let _ = index;
//! ```

#![warn(missing_docs)]

use std::sync::Arc;

use archipelago_protocol::{Error, ErrorCode, Flags, Op, PROTOCOL_VERSION};
use xseg_shm::{Port, Request, Segment, SegmentName, TransportError};

pub mod reply;

/// One request to send.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// Destination port.
    pub dst: u32,
    /// Operation.
    pub op: Op,
    /// Target name.
    pub target: &'a [u8],
    /// Byte offset.
    pub offset: u64,
    /// Byte count.
    pub size: u64,
    /// Flags.
    pub flags: Flags,
    /// Data sent (copied into the request's buffer).
    pub data: &'a [u8],
    /// Room for the reply in the buffer (the buffer is the larger of this
    /// and `data`).
    pub reply_room: u64,
}

impl<'a> Call<'a> {
    /// A call of `op` on `target` at `dst`, everything else zero.
    pub fn new(dst: u32, op: Op, target: &'a [u8]) -> Call<'a> {
        Call {
            dst,
            op,
            target,
            offset: 0,
            size: 0,
            flags: Flags::NONE,
            data: &[],
            reply_room: 0,
        }
    }
}

/// Takes a descriptor on `port` and fills it from `call`: target, a data
/// buffer of `max(data, reply_room)` bytes starting with `call.data`, then
/// `fill` over the whole buffer (when there is one), op, offset, size and
/// flags. Nothing is left held on failure.
pub fn build(port: &Port, call: &Call<'_>, fill: impl FnOnce(&mut [u8])) -> Result<Request, Error> {
    let mut req = port
        .get(call.dst)
        .map_err(|e| transport_error(call.dst, e))?;
    let len = (call.data.len() as u64).max(call.reply_room);
    let prepared = (|| {
        port.set_target(&mut req, call.target)?;
        if len > 0 {
            port.alloc_data(&mut req, len)?;
        }
        Ok(())
    })();
    if let Err(e) = prepared {
        port.put(req);
        return Err(transport_error(call.dst, e));
    }
    if len > 0 {
        let buf = port.data_mut(&mut req);
        buf[..call.data.len()].copy_from_slice(call.data);
        fill(buf);
    }
    let d = port.desc(&req);
    d.set_op(call.op.code());
    d.set_offset(call.offset);
    d.set_size(call.size);
    d.set_flags(call.flags.0);
    Ok(req)
}

/// Builds `call` with `tag` and submits it; returns the descriptor's index
/// (to cancel it while it is still queued). Nothing is left held on
/// failure.
pub fn submit(port: &Port, call: &Call<'_>, tag: u64) -> Result<u32, Error> {
    let req = build(port, call, |_| {})?;
    let index = req.index();
    port.desc(&req).set_tag(tag);
    if let Err(rejected) = port.submit(req) {
        port.put(rejected.request);
        return Err(transport_error(call.dst, rejected.error));
    }
    Ok(index)
}

/// A transport failure sending to `dst`, as a protocol error: no room
/// (descriptors, buffers, queue) is `Busy`; nobody bound at `dst` is
/// `PeerDied`; anything else is a request the transport could not carry.
pub fn transport_error(dst: u32, e: TransportError) -> Error {
    match e {
        TransportError::Busy(_) => Error::with(ErrorCode::Busy, e.to_string()),
        TransportError::NotBound(_) | TransportError::NoSuchPort { .. } => {
            Error::with(ErrorCode::PeerDied, format!("no peer serves port {dst}"))
        }
        _ => Error::with(ErrorCode::InvalidArgument, e.to_string()),
    }
}

/// Attaches to `segment` (name or path), checking the protocol version.
pub fn attach(segment: &str) -> Result<Arc<Segment>, Error> {
    let name = SegmentName::parse(segment)
        .map_err(|e| Error::with(ErrorCode::InvalidArgument, e.to_string()))?;
    let seg = Segment::attach(&name, Some(PROTOCOL_VERSION))
        .map_err(|e| Error::with(ErrorCode::Io, e.to_string()))?;
    Ok(Arc::new(seg))
}

#[cfg(test)]
mod tests {
    use archipelago_protocol::{ErrorCode, CLIENT_PORTS_START};

    #[test]
    fn protocol_constants_match_the_transport() {
        // The protocol names the transport's own failure codes so that a
        // request the transport failed decodes as any other failure.
        assert_eq!(ErrorCode::PeerDied.code(), xseg_shm::code::PEER_DIED);
        assert_eq!(ErrorCode::Busy.code(), xseg_shm::code::BUSY);
        assert_eq!(
            ErrorCode::ShuttingDown.code(),
            xseg_shm::code::SHUTTING_DOWN
        );
        // Dynamic ports start after the default segment's static ones.
        assert_eq!(
            CLIENT_PORTS_START,
            xseg_shm::SegmentConfig::default().static_ports
        );
        // A fenced write's target fits the descriptor's target field.
        assert_eq!(
            archipelago_protocol::payload::FencedTarget::MAX_LEN,
            xseg_shm::layout::MAX_TARGET_LEN
        );
    }
}
