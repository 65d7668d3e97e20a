//! Request descriptors: the token a holder carries, and field access.
//!
//! Who holds a descriptor is its ticket's business (see the `pool`
//! module); the fields here are read and written by the holder alone.

use crate::buffers::NO_BUFFER;
use crate::layout::{RequestShm, MAX_TARGET_LEN};
use crate::sync::Ordering;

/// Completion status values.
pub mod status {
    /// Not completed yet.
    pub const PENDING: u32 = 0;
    /// Served: `serviced` bytes done.
    pub const SERVED: u32 = 1;
    /// Failed: see the error code.
    pub const FAILED: u32 = 2;
}

/// Error codes the transport itself sets; the layer above defines the rest
/// and must stay below [`TRANSPORT_BASE`](code::TRANSPORT_BASE).
pub mod code {
    /// First code reserved for the transport.
    pub const TRANSPORT_BASE: u32 = 0xFFFF_FF00;
    /// The peer that held the request died.
    pub const PEER_DIED: u32 = 0xFFFF_FF01;
    /// A pool or ring was full.
    pub const BUSY: u32 = 0xFFFF_FF02;
    /// The peer is shutting down.
    pub const SHUTTING_DOWN: u32 = 0xFFFF_FF03;
}

/// No port (the source of a pooled descriptor).
pub const NO_PORT: u32 = u32::MAX;

/// A descriptor this port holds. Not `Clone`: handing it to `submit`,
/// `respond`, `forward` or `put` gives it away. Dropping one without that
/// leaks it until the port unbinds, when it is put back.
///
/// The token names the descriptor, the port and binding generation that
/// took it, and the ticket's serial at that moment; every port method
/// checks all four against the port and the ticket, so a token used with
/// another port, after its port unbound, or after its descriptor was put
/// back and taken again reaches nothing (issue 19: before, a token was an
/// index, and one outliving its port gave safe code two `&mut [u8]` to
/// one buffer).
#[must_use = "a request must be submitted, responded to or put back"]
#[derive(Debug)]
pub struct Request {
    pub(crate) index: u32,
    pub(crate) port: u32,
    pub(crate) gen: u32,
    pub(crate) serial: u64,
}

impl Request {
    /// Index of the descriptor in the segment.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The port that took the descriptor.
    pub fn port(&self) -> u32 {
        self.port
    }
}

/// What a port shows for a request token it does not hold: zeros, outside
/// the segment, so writes through it reach no one.
pub(crate) static NOT_HELD: RequestShm = RequestShm::zeroed();

/// A target name copied out of a descriptor.
#[derive(Clone)]
pub struct Target {
    bytes: [u8; MAX_TARGET_LEN],
    len: usize,
}

impl Target {
    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

macro_rules! field {
    ($get:ident, $set:ident, $field:ident, $t:ty, $doc:literal) => {
        #[doc = concat!("Reads ", $doc, ".")]
        pub fn $get(&self) -> $t {
            // Relaxed: the ring push/pop that handed us the descriptor
            // synchronised (Release/Acquire) everything its last holder
            // wrote.
            self.$field.load(Ordering::Relaxed)
        }
        #[doc = concat!("Sets ", $doc, ".")]
        pub fn $set(&self, v: $t) {
            self.$field.store(v, Ordering::Relaxed)
        }
    };
}

/// Field access for the holder of a descriptor.
impl RequestShm {
    field!(op, set_op, op, u32, "the operation code");
    field!(flags, set_flags, flags, u32, "the flags");
    field!(offset, set_offset, offset, u64, "the byte offset");
    field!(size, set_size, size, u64, "the byte count requested");
    field!(serviced, set_serviced, serviced, u64, "the bytes serviced");
    field!(status, set_status, status, u32, "the completion status");
    field!(error, set_error, error, u32, "the error code");
    field!(tag, set_tag, tag, u64, "the submitter's opaque tag");
    field!(
        t_submit,
        set_t_submit,
        t_submit,
        u64,
        "the submit timestamp (segment clock ticks)"
    );
    field!(
        t_accept,
        set_t_accept,
        t_accept,
        u64,
        "the accept timestamp"
    );
    field!(
        t_complete,
        set_t_complete,
        t_complete,
        u64,
        "the completion timestamp"
    );

    /// Source port (replies go there).
    pub fn src_port(&self) -> u32 {
        self.src_port.load(Ordering::Relaxed)
    }

    /// Destination the request was first submitted to.
    pub fn dst_port(&self) -> u32 {
        self.dst_port.load(Ordering::Relaxed)
    }

    /// Current destination.
    pub fn effective_dst(&self) -> u32 {
        self.effective_dst.load(Ordering::Relaxed)
    }

    /// Bytes of data attached.
    pub fn data_len(&self) -> u64 {
        self.data_len.load(Ordering::Relaxed)
    }

    /// Copies the target name out (clamped to the maximum length, whatever
    /// the shared length word says).
    pub fn target(&self) -> Target {
        let len = (self.target_len.load(Ordering::Relaxed) as usize).min(MAX_TARGET_LEN);
        let mut bytes = [0u8; MAX_TARGET_LEN];
        for (i, chunk) in bytes.chunks_mut(8).enumerate().take(len.div_ceil(8)) {
            chunk.copy_from_slice(&self.target[i].load(Ordering::Relaxed).to_ne_bytes());
        }
        Target { bytes, len }
    }

    pub(crate) fn write_target(&self, name: &[u8]) {
        debug_assert!(name.len() <= MAX_TARGET_LEN);
        for (i, chunk) in name.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.target[i].store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
        self.target_len.store(name.len() as u32, Ordering::Relaxed);
    }

    /// Resets every field but the ticket, as a fresh get sees it.
    pub(crate) fn reset(&self, src: u32, src_gen: u32, dst: u32) {
        for f in [
            &self.op,
            &self.flags,
            &self.status,
            &self.error,
            &self.target_len,
        ] {
            f.store(0, Ordering::Relaxed);
        }
        for f in [
            &self.offset,
            &self.size,
            &self.serviced,
            &self.data_len,
            &self.tag,
            &self.t_submit,
            &self.t_accept,
            &self.t_complete,
        ] {
            f.store(0, Ordering::Relaxed);
        }
        self.src_port.store(src, Ordering::Relaxed);
        self.src_gen.store(src_gen, Ordering::Relaxed);
        self.dst_port.store(dst, Ordering::Relaxed);
        self.effective_dst.store(dst, Ordering::Relaxed);
        self.buffer.store(NO_BUFFER, Ordering::Relaxed);
    }
}
