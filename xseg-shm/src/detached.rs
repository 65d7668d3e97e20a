//! A request handed to another thread than its port's.

use std::sync::Arc;

use crate::layout::RequestShm;
use crate::request::Request;
use crate::segment::Segment;
use crate::sync::{AtomicUsize, Ordering};

/// A request held by another thread than its port's (see [`Port::detach`](crate::Port::detach)).
pub struct Detached {
    seg: Arc<Segment>,
    req: Option<Request>,
    index: u32,
    /// Whether the port held the request when it was detached (if not,
    /// the descriptor and the data are not shown).
    held: bool,
    ptr: *mut u8,
    len: usize,
    /// The port's count of detached requests, released on drop.
    out: Arc<AtomicUsize>,
}

// SAFETY: the only field that is not `Send` by itself is the buffer
// pointer. A `Detached` owns its request (the `Request` token is moved in,
// so the port cannot reach it meanwhile), the port keeps it held (its mark
// in this process's record stays until the request comes back and is
// handed on, so no other port of this process takes the descriptor or its
// buffer), and the `Arc<Segment>` keeps the mapping alive: the pointer
// stays valid and, within this process, this `Detached`'s alone on
// whichever thread it moves to.
unsafe impl Send for Detached {}

impl Detached {
    /// Wraps `req`, whose data bytes are `ptr..ptr + len` (bounds-checked
    /// by the port, empty if it did not hold `req`: `held`); `out` is the
    /// port's count, already raised for it.
    pub(crate) fn new(
        seg: Arc<Segment>,
        req: Request,
        held: bool,
        ptr: *mut u8,
        len: usize,
        out: Arc<AtomicUsize>,
    ) -> Detached {
        Detached {
            seg,
            index: req.index,
            req: Some(req),
            held,
            ptr,
            len,
            out,
        }
    }

    /// The descriptor.
    pub fn desc(&self) -> &RequestShm {
        if !self.held {
            return &crate::request::NOT_HELD;
        }
        self.seg
            .request(self.index)
            .expect("held request index is in range")
    }

    /// The data bytes (empty without a buffer).
    pub fn data(&self) -> &[u8] {
        // SAFETY: as in `Port::data`: the range was bounds-checked against
        // the attached buffer and marked as this descriptor's in this
        // process when detached (or is empty), the mapping is alive (our
        // Arc), and the token is ours alone; `&self` excludes a `&mut`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The data bytes, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; `&mut self` makes this the only slice.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The request, to give back to its port.
    pub fn into_request(mut self) -> Request {
        self.req
            .take()
            .expect("a Detached holds its request until here")
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        // Dropped without `into_request`, the request stays held by the
        // port (its unbind fails it back); either way it no longer reaches
        // the buffer. SYNC POINT (detached): Release pairs with the
        // Acquire load in the port's drop: our use of the buffer is over.
        self.out.fetch_sub(1, Ordering::Release);
    }
}
