//! Ports: binding, and the data path (get, submit, accept, respond,
//! receive, forward, put) of a bound port. This file binds a port and
//! handles descriptors and their buffers (get, data, put, detach);
//! `send.rs` submits, forwards and responds, `receive.rs` accepts,
//! receives and cancels.
//!
//! A [`Port`] is the handle of a bound port. It is `Send` but not `Sync`:
//! each ring has one consumer, so one thread at a time accepts and receives
//! on a port; a peer with several worker threads binds one port per thread
//! (as the original's port ranges did).

use std::cell::Cell;
use std::sync::Arc;

use crate::detached::{Detached, Detaching};
use crate::error::{PortError, TransportError};
use crate::layout::{PortShm, RequestShm, MAX_BUFFER_CLASSES, MAX_TARGET_LEN};
use crate::pool::Ticket;
use crate::put::put_descriptor;
use crate::request::{code, Request};
use crate::segment::Segment;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::sys::{self, Clock, KernelFutex};
use crate::{binding, buffers, pool};

mod receive;
mod send;

/// Raises a high-water mark to `v` if lower (Relaxed: a statistic; the
/// load spares the cache line a write when the mark is already higher).
pub(crate) fn raise(hw: &AtomicU32, v: u32) {
    if v > hw.load(Ordering::Relaxed) {
        hw.fetch_max(v, Ordering::Relaxed);
    }
}

/// As [`raise`], 64 bits.
fn raise64(hw: &AtomicU64, v: u64) {
    if v > hw.load(Ordering::Relaxed) {
        hw.fetch_max(v, Ordering::Relaxed);
    }
}

/// A request handed back with the reason it could not be sent.
#[derive(Debug)]
pub struct Rejected {
    /// The request, still held by the caller.
    pub request: Request,
    /// Why.
    pub error: TransportError,
}

/// How long [`Segment::bind`] waits for a recovery of the port to end.
pub const BIND_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Segment {
    /// Binds port `n` for this process.
    ///
    /// A port that a live process is recovering (or its owner unbinding)
    /// is waited for, up to [`BIND_WAIT`]: a restarted peer binds its port
    /// while the supervisor or a client still recovers it.
    pub fn bind(self: &Arc<Self>, n: u32) -> Result<Port, PortError> {
        let deadline = std::time::Instant::now() + BIND_WAIT;
        loop {
            match self.try_bind(n) {
                Ok(gen) => return Ok(Port::new(self.clone(), n, gen)),
                Err(PortError::Recovering { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Binds the first free dynamic port.
    pub fn bind_dynamic(self: &Arc<Self>) -> Result<Port, PortError> {
        let l = self.layout();
        for n in l.static_ports..l.nr_ports {
            match self.try_bind(n) {
                Ok(gen) => return Ok(Port::new(self.clone(), n, gen)),
                Err(
                    PortError::Owned { .. }
                    | PortError::OwnerDied { .. }
                    | PortError::Recovering { .. },
                ) => {}
                Err(e) => return Err(e),
            }
        }
        Err(PortError::NoFreePort {
            count: l.nr_ports - l.static_ports,
        })
    }

    fn try_bind(&self, n: u32) -> Result<u32, PortError> {
        let p = self.port(n).ok_or(PortError::NoSuchPort {
            port: n,
            nr_ports: self.layout().nr_ports,
        })?;
        match binding::bind(&p.binding, &p.owner_id, sys::my_identity()) {
            Ok(gen) => {
                // Relaxed: a stale "sleeping" only costs one needless wake.
                p.doorbell.0.sleeping.store(0, Ordering::Relaxed);
                log::debug!("bound port {n} generation {gen}");
                Ok(gen)
            }
            Err(b) => {
                // Relaxed: read after `bind`'s Acquire load of the binding
                // (see `binding::load_with_start`).
                let start = binding::judge(b, p.owner_id.load(Ordering::Relaxed));
                let alive = sys::is_alive(b.pid, start);
                Err(match (b.recovering, alive) {
                    (true, true) => PortError::Recovering {
                        port: n,
                        pid: b.pid,
                    },
                    (false, true) => PortError::Owned {
                        port: n,
                        pid: b.pid,
                    },
                    (_, false) => PortError::OwnerDied {
                        port: n,
                        pid: b.pid,
                    },
                })
            }
        }
    }
}

/// A bound port. Unbinds on drop, putting back what it still holds and
/// failing back requests it had accepted.
pub struct Port {
    seg: Arc<Segment>,
    no: u32,
    gen: u32,
    cursor: Cell<u32>,
    buffer_cursor: [Cell<u32>; MAX_BUFFER_CLASSES],
    futex: KernelFutex,
    clock: Clock,
    /// Requests detached to other threads and not yet given back.
    detached: Arc<Detaching>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("no", &self.no)
            .field("gen", &self.gen)
            .finish()
    }
}

impl Port {
    fn new(seg: Arc<Segment>, no: u32, gen: u32) -> Port {
        // Start each port's scans at a different place so ports seldom
        // race for the same free descriptor.
        let l = seg.layout();
        let spread = |count: u32| (u64::from(no) * u64::from(count) / u64::from(l.nr_ports)) as u32;
        let cursor = Cell::new(spread(l.nr_requests));
        let buffer_cursor =
            std::array::from_fn(|c| Cell::new(l.buffer_counts.get(c).map_or(0, |&n| spread(n))));
        Port {
            clock: seg.clock(),
            seg,
            no,
            gen,
            cursor,
            buffer_cursor,
            futex: KernelFutex::default(),
            detached: Arc::new(Detaching::new(no, gen)),
        }
    }

    /// Port number.
    pub fn number(&self) -> u32 {
        self.no
    }

    /// Generation of this binding.
    pub fn generation(&self) -> u32 {
        self.gen
    }

    /// The segment.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    fn shm(&self) -> &PortShm {
        self.seg.port(self.no).expect("own port is in range")
    }

    fn desc_of(&self, index: u32) -> &RequestShm {
        self.seg
            .request(index)
            .expect("held request index is in range")
    }

    /// The token of descriptor `index`, which this port has just taken.
    fn token(&self, index: u32) -> Request {
        Request {
            index,
            port: self.no,
            gen: self.gen,
            serial: pool::peek(&self.desc_of(index).ticket).serial,
        }
    }

    /// The descriptor of a request this port holds. For a token it does
    /// not hold (another port's, or one that outlived its port's binding)
    /// a descriptor of zeros outside the segment, whose writes reach no
    /// one; the operations on such a token fail with
    /// [`TransportError::NotHeld`] or do nothing.
    pub fn desc(&self, req: &Request) -> &RequestShm {
        if self.held(req).is_none() {
            return not_held(self.no, req);
        }
        self.desc_of(req.index)
    }

    /// Takes a free descriptor addressed to `dst`.
    pub fn get(&self, dst: u32) -> Result<Request, TransportError> {
        let nr_ports = self.seg.layout().nr_ports;
        if dst >= nr_ports {
            return Err(TransportError::NoSuchPort {
                port: dst,
                nr_ports,
            });
        }
        let n = self.seg.layout().nr_requests;
        let mut start = self.cursor.get();
        for _ in 0..n {
            let Some(i) = pool::get(n, start, self.no, |i| &self.desc_of(i).ticket) else {
                break;
            };
            start = i + 1;
            if !self.seg.held().hold(i, self.no) {
                // A port of this process holds it: its pooled ticket was
                // forged. It stays with us in the segment, untouched.
                log::error!(
                    "port {}: descriptor {i} was pooled while a port of this process holds it; left alone",
                    self.no
                );
                continue;
            }
            self.cursor.set(i + 1);
            self.desc_of(i).reset(self.no, self.gen, dst);
            let p = self.shm();
            // An atomic add: other ports (a server putting back our request,
            // recovery) decrement the count concurrently. Relaxed: a
            // statistic.
            let used = p.requests_in_use.fetch_add(1, Ordering::Relaxed) + 1;
            raise(&p.requests_high_water, used);
            return Ok(self.token(i));
        }
        // Relaxed: a statistic.
        self.shm().busy_events.fetch_add(1, Ordering::Relaxed);
        Err(TransportError::Busy("no free request descriptor"))
    }

    /// Sets the target name.
    pub fn set_target(&self, req: &mut Request, name: &[u8]) -> Result<(), TransportError> {
        if name.len() > MAX_TARGET_LEN {
            return Err(TransportError::TargetTooLong(name.len()));
        }
        self.held(req).ok_or(TransportError::NotHeld(req.index))?;
        self.desc(req).write_target(name);
        Ok(())
    }

    /// Attaches a buffer of at least `len` bytes (reusing the attached one
    /// if large enough) and sets the data length to `len`.
    pub fn alloc_data(&self, req: &mut Request, len: u64) -> Result<(), TransportError> {
        let max = self.seg.max_buffer();
        if len > max {
            return Err(TransportError::TooLarge(len, max));
        }
        self.held(req).ok_or(TransportError::NotHeld(req.index))?;
        let r = self.desc(req);
        let l = self.seg.layout();
        if let Some((class, _)) = self.buffer_of(req.index) {
            if l.class_size(class) >= len {
                r.data_len.store(len, Ordering::Relaxed);
                return Ok(());
            }
        }
        self.free_buffer(req.index);
        let first = (0..l.buffer_counts.len())
            .find(|&c| l.class_size(c) >= len.max(1))
            .unwrap_or(0);
        for class in first..l.buffer_counts.len() {
            if let Some(index) = self.grab_buffer(class, req.index) {
                r.buffer
                    .store(buffers::handle(class, index), Ordering::Relaxed);
                r.data_len.store(len, Ordering::Relaxed);
                // Counted on the source port while its binding is the one
                // that got the descriptor, as the free in `put.rs` uncounts
                // it: a stale source's count (reset when it unbound) is not
                // raised for good.
                let src = r.src_port();
                if crate::put::src_is_current(&self.seg, src, r) {
                    if let Some(p) = self.seg.port(src) {
                        // Relaxed: a statistic.
                        let used = p.buffers_in_use.fetch_add(1, Ordering::Relaxed) + 1;
                        raise(&p.buffers_high_water, used);
                    }
                }
                return Ok(());
            }
        }
        self.shm().busy_events.fetch_add(1, Ordering::Relaxed);
        Err(TransportError::Busy("no free data buffer"))
    }

    fn grab_buffer(&self, class: usize, owner_req: u32) -> Option<u32> {
        let owners = self.seg.buffer_owners(class)?;
        let i = buffers::grab(owners, self.buffer_cursor[class].get(), owner_req)?;
        self.buffer_cursor[class].set(i + 1);
        Some(i)
    }

    /// The buffer attached to descriptor `req`, if it is in range and its
    /// owner word says it is this descriptor's (a handle left stale by a
    /// holder killed mid-free must not reach a buffer someone else owns).
    fn buffer_of(&self, req: u32) -> Option<(usize, u32)> {
        let r = self.desc_of(req);
        // Relaxed: only the holder (we) writes the handle.
        let (class, index) = buffers::decode(r.buffer.load(Ordering::Relaxed))?;
        let owner = self.seg.buffer_owner(class, index)?;
        buffers::owned_by(owner, req).then_some((class, index))
    }

    fn free_buffer(&self, req: u32) {
        self.seg.held().release_buffer(req);
        crate::put::detach_and_release_buffer(&self.seg, req);
        self.desc_of(req).data_len.store(0, Ordering::Relaxed);
    }

    /// Where the data of a request this port holds lies; empty for a
    /// token it does not hold.
    fn data_ptr(&self, req: &Request) -> (*mut u8, usize) {
        let none = (std::ptr::NonNull::dangling().as_ptr(), 0);
        if self.held(req).is_none() {
            log::error!(
                "port {}: data of descriptor {} it does not hold; empty",
                self.no,
                req.index
            );
            return none;
        }
        let r = self.desc(req);
        match self.buffer_of(req.index) {
            Some((class, index)) if !self.seg.held().hold_buffer(req.index, class, index) => {
                log::error!(
                    "port {}: buffer {class}/{index} of descriptor {} is another descriptor's in this process; empty",
                    self.no,
                    req.index
                );
                none
            }
            Some((class, index)) => {
                let len = r.data_len().min(self.seg.layout().class_size(class));
                (self.seg.buffer_ptr(class, index), len as usize)
            }
            None => none,
        }
    }

    /// The request's data bytes (empty without a buffer).
    pub fn data<'r>(&'r self, req: &'r Request) -> &'r [u8] {
        let (ptr, len) = self.data_ptr(req);
        // SAFETY: `ptr..ptr+len` lies inside one buffer (bounds-checked
        // handle, length clamped to the class size), inside the mapping
        // that `self.seg` keeps alive for `'r`; `u8` has no alignment or
        // validity requirement. In this process, no `&mut` to these bytes
        // exists while the slice lives: `data_ptr` returned them only
        // because this port holds `req` (`held`: token of this binding,
        // ticket and serial match), this process's record admits one port
        // per descriptor and one descriptor per buffer (`held.rs`, checked
        // in this process's memory, not the segment's), a port makes one
        // token per hold (`Request` is not `Clone`), and a `&mut` slice
        // needs `&mut Request`, which our `&'r Request` borrow excludes.
        // Other processes are outside Rust's model: a peer that breaks the
        // protocol can change the bytes under us, which only changes
        // values (`u8` has no invalid ones); that is the trust boundary the
        // crate docs describe.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// The request's data bytes, writable.
    pub fn data_mut<'r>(&'r self, req: &'r mut Request) -> &'r mut [u8] {
        let (ptr, len) = self.data_ptr(req);
        // SAFETY: as in `data`: the bytes are in bounds and, in this
        // process, reachable only through `req`'s one token; the
        // `&'r mut Request` borrow makes this the only slice of them until
        // it ends.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }

    /// The ticket of `req` if this port holds it: the token was made by
    /// this binding of this port (number and generation), and the ticket
    /// still names this port with the token's serial. A `Request` used
    /// with another port than the one that got it, after its port unbound,
    /// or after recovery took its descriptor, is not held and must not be
    /// acted on.
    pub(crate) fn held(&self, req: &Request) -> Option<Ticket> {
        if req.port != self.no || req.gen != self.gen {
            return None;
        }
        let t = pool::peek(&self.seg.request(req.index)?.ticket);
        (t.is_owned_by(self.no) && t.serial == req.serial).then_some(t)
    }

    /// Returns a request and its buffer to the pools.
    pub fn put(&self, req: Request) {
        if self.held(&req).is_none() {
            log::error!(
                "port {}: put of descriptor {} it does not hold; ignored",
                self.no,
                req.index
            );
            return;
        }
        // Before the descriptor is pooled, so that another port of this
        // process may take it at once.
        self.seg.held().release(req.index, self.no);
        put_descriptor(&self.seg, req.index, None);
    }

    /// Whether a request or a reply is waiting.
    pub fn has_work(&self) -> bool {
        self.seg.ring(self.no, 0).has_work() || self.seg.ring(self.no, 1).has_work()
    }

    /// Sleeps on the doorbell until work arrives or the futex timeout
    /// passes; returns at once if work is already there.
    pub fn sleep(&self) -> bool {
        self.sleep_unless(|| false)
    }

    /// Like [`sleep`](Self::sleep), also staying awake while `other_work`
    /// says so (e.g. completions from worker threads, which wake the port
    /// with [`Segment::wake`] after making them visible).
    pub fn sleep_unless(&self, other_work: impl Fn() -> bool) -> bool {
        self.shm()
            .doorbell
            .0
            .sleep_unless(&self.futex, || self.has_work() || other_work())
    }

    /// Hands a request to another thread: the returned [`Detached`] owns it
    /// and gives access to its descriptor and data buffer without the port
    /// (which stays with its own thread). Give it back with
    /// [`Detached::into_request`] to respond or put it.
    pub fn detach(&self, req: Request) -> Detached {
        let held = self.held(&req).is_some();
        let (ptr, len) = self.data_ptr(&req);
        self.detached.lend();
        Detached::new(self.seg.clone(), req, held, ptr, len, self.detached.clone())
    }

    /// Fails back a request with the transport's "busy" code (for a peer
    /// that cannot take more work).
    pub fn reject_busy(&self, req: Request) -> Result<(), Rejected> {
        self.fail(req, code::BUSY)
    }
}

/// What [`Port::desc`] shows for a token the port does not hold.
fn not_held(port: u32, req: &Request) -> &'static RequestShm {
    log::error!(
        "port {port}: descriptor {} of port {} generation {} is not held here; its fields are not shown",
        req.index,
        req.port,
        req.gen
    );
    &crate::request::NOT_HELD
}

impl Drop for Port {
    fn drop(&mut self) {
        // Putting back the descriptors of detached requests would free
        // buffers another thread still writes: with some out, the last one
        // dropped unbinds the port (see `Detaching`).
        let out = self.detached.port_dropped(&self.seg);
        if out > 0 {
            log::info!(
                "port {}: {out} detached request(s) still out; the port unbinds when they are dropped",
                self.no
            );
        }
    }
}
