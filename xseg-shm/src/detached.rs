//! A request handed to another thread than its port's.

use std::sync::Arc;

use crate::layout::RequestShm;
use crate::request::Request;
use crate::segment::Segment;
use crate::sync::{AtomicU32, AtomicUsize, Ordering};

/// What a port shares with the requests it detached: how many are out,
/// and whether the port was dropped meanwhile, in which case the last one
/// to come back unbinds it (before issue 19 the port stayed bound for
/// good). The unbind fails back whatever the port still held, the
/// requests that came back included (their tokens reach nothing without
/// their port).
pub(crate) struct Detaching {
    out: AtomicUsize,
    port_dropped: AtomicU32,
    unbound: AtomicU32,
    port: u32,
    gen: u32,
}

impl Detaching {
    pub(crate) fn new(port: u32, gen: u32) -> Detaching {
        Detaching {
            out: AtomicUsize::new(0),
            port_dropped: AtomicU32::new(0),
            unbound: AtomicU32::new(0),
            port,
            gen,
        }
    }

    /// One more request is detached (by the port's own thread).
    pub(crate) fn lend(&self) {
        // Relaxed: the port's thread raises the count before the
        // `Detached` exists; its decrement (SeqCst) is what orders.
        self.out.fetch_add(1, Ordering::Relaxed);
    }

    /// The port is dropped: unbinds it now if nothing is out, else leaves
    /// that to the last `Detached` dropped. Returns how many are out.
    pub(crate) fn port_dropped(&self, seg: &Segment) -> usize {
        // SYNC POINT (detached): SeqCst store then load here, SeqCst
        // decrement then load in `returned`: of the port's drop and the
        // last return, at least one sees the other's write, so the port is
        // unbound once both happened (and `unbind_once` keeps it to once).
        // The decrement also releases the worker's last use of the buffer
        // to whichever side unbinds.
        self.port_dropped.store(1, Ordering::SeqCst);
        let out = self.out.load(Ordering::SeqCst);
        if out == 0 {
            self.unbind_once(seg);
        }
        out
    }

    /// A `Detached` is dropped (given back or not).
    fn returned(&self, seg: &Segment) {
        // SYNC POINT (detached): see `port_dropped`.
        if self.out.fetch_sub(1, Ordering::SeqCst) == 1
            && self.port_dropped.load(Ordering::SeqCst) == 1
        {
            self.unbind_once(seg);
        }
    }

    fn unbind_once(&self, seg: &Segment) {
        // AcqRel: one caller wins; the winner has acquired everything the
        // SeqCst operations above ordered.
        if self.unbound.swap(1, Ordering::AcqRel) == 0 {
            if let Err(e) = crate::recovery::release_port(seg, self.port, self.gen) {
                log::warn!("unbinding port {}: {e}", self.port);
            }
        }
    }
}

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
    out: Arc<Detaching>,
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
        out: Arc<Detaching>,
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
        // the buffer, and if the port was dropped meanwhile and this was
        // the last one out, the port is unbound now.
        self.out.returned(&self.seg);
    }
}
