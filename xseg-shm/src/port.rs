//! Ports: binding, and the data path (get, submit, accept, respond,
//! receive, forward, put) of a bound port.
//!
//! A [`Port`] is the handle of a bound port. It is `Send` but not `Sync`:
//! each ring has one consumer, so one thread at a time accepts and receives
//! on a port; a peer with several worker threads binds one port per thread
//! (as the original's port ranges did).

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{PortError, TransportError};
use crate::layout::{PortShm, RequestShm, MAX_BUFFER_CLASSES, MAX_TARGET_LEN};
use crate::request::{code, status, Phase, Request, Ticket, NO_BUFFER, NO_PORT};
use crate::ring::{PushError, Take};
use crate::segment::Segment;
use crate::sys::{self, Clock, KernelFutex};

const RECOVERING: u32 = 0x8000_0000;

/// A decoded port owner record: `generation << 32 | recovering bit | pid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// Bumped on every bind; replies for an older generation are stale.
    pub gen: u32,
    /// Owner pid (or recovering process), 0 when unbound.
    pub pid: u32,
    /// A process is recovering the port.
    pub recovering: bool,
}

impl Binding {
    /// Decodes.
    pub fn from_word(w: u64) -> Binding {
        let low = w as u32;
        Binding {
            gen: (w >> 32) as u32,
            pid: low & !RECOVERING,
            recovering: low & RECOVERING != 0,
        }
    }

    /// Encodes.
    pub fn word(self) -> u64 {
        (u64::from(self.gen) << 32)
            | u64::from(self.pid & !RECOVERING)
            | if self.recovering {
                u64::from(RECOVERING)
            } else {
                0
            }
    }
}

/// Raises a high-water mark to `v` if lower.
pub(crate) fn raise(hw: &AtomicU32, v: u32) {
    if v > hw.load(Ordering::Relaxed) {
        hw.fetch_max(v, Ordering::Relaxed);
    }
}

fn raise64(hw: &AtomicU64, v: u64) {
    if v > hw.load(Ordering::Relaxed) {
        hw.fetch_max(v, Ordering::Relaxed);
    }
}

/// Buffer handle: class in the top 8 bits, index in the low 24.
pub(crate) fn buffer_handle(class: usize, index: u32) -> u32 {
    ((class as u32) << 24) | index
}

pub(crate) fn decode_buffer(h: u32) -> Option<(usize, u32)> {
    (h != NO_BUFFER).then_some(((h >> 24) as usize, h & 0xFF_FFFF))
}

/// A request held by another thread than its port's (see [`Port::detach`]).
pub struct Detached {
    seg: Arc<Segment>,
    req: Option<Request>,
    index: u32,
    ptr: *mut u8,
    len: usize,
    /// The port's count of detached requests, released on drop.
    out: Arc<AtomicUsize>,
}

// SAFETY: a `Detached` owns its request (the `Request` token is moved in,
// so the port cannot touch it meanwhile) and keeps the mapping alive with
// its `Arc<Segment>`; the buffer pointer stays valid and exclusively ours
// on any thread, as the descriptor's ticket names our port as holder.
unsafe impl Send for Detached {}

impl Detached {
    /// The descriptor.
    pub fn desc(&self) -> &RequestShm {
        self.seg
            .request(self.index)
            .expect("held request index is in range")
    }

    /// The data bytes (empty without a buffer).
    pub fn data(&self) -> &[u8] {
        // SAFETY: as in `Port::data`: the range was bounds-checked against
        // the attached buffer when detached, the mapping is alive (our
        // Arc), and we hold the descriptor and so its buffer.
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
        // the buffer.
        self.out.fetch_sub(1, Ordering::Release);
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

impl Segment {
    /// Binds port `n` for this process.
    pub fn bind(self: &Arc<Self>, n: u32) -> Result<Port, PortError> {
        let gen = self.try_bind(n)?;
        Ok(Port::new(self.clone(), n, gen))
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
        let me = sys::my_pid();
        let my_start = sys::process_start_time(me).unwrap_or(0);
        loop {
            // SYNC POINT (binding): Acquire pairs with the Release that
            // unbound or recovered the port: its cleanup is visible to us.
            let w = p.binding.load(Ordering::Acquire);
            let b = Binding::from_word(w);
            if b.pid != 0 {
                let alive = sys::is_alive(b.pid, p.owner_start.load(Ordering::Acquire));
                return Err(match (b.recovering, alive) {
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
                });
            }
            let gen = b.gen.wrapping_add(1).max(1);
            let new = Binding {
                gen,
                pid: me,
                recovering: false,
            }
            .word();
            if p.binding
                .compare_exchange(w, new, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                p.owner_start.store(my_start, Ordering::Release);
                p.doorbell.0.sleeping.store(0, Ordering::Relaxed);
                log::debug!("bound port {n} generation {gen}");
                return Ok(gen);
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
    detached: Arc<AtomicUsize>,
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
            detached: Arc::new(AtomicUsize::new(0)),
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

    /// The descriptor of a request this port holds.
    pub fn desc(&self, req: &Request) -> &RequestShm {
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
        let start = self.cursor.get();
        for k in 0..n {
            let i = (start + k) % n;
            let r = self.desc_of(i);
            let t = r.ticket.load(Ordering::Relaxed);
            let ticket = Ticket::from_word(t);
            if ticket.phase != Some(Phase::Pooled) {
                continue;
            }
            let owned = Ticket::word(Phase::Owned, self.no, ticket.serial + 1);
            // SYNC POINT (put): Acquire pairs with the Release store that
            // pooled the descriptor; its last holder is done with it.
            if r.ticket
                .compare_exchange(t, owned, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                self.cursor.set(i + 1);
                r.reset(self.no, self.gen, dst);
                let p = self.shm();
                // Load and store, not an atomic add: only the port's owner
                // changes its own count (recovery resets it once the owner
                // is dead).
                let used = p.requests_in_use.load(Ordering::Relaxed) + 1;
                p.requests_in_use.store(used, Ordering::Relaxed);
                raise(&p.requests_high_water, used);
                return Ok(Request { index: i });
            }
        }
        self.shm().busy_events.fetch_add(1, Ordering::Relaxed);
        Err(TransportError::Busy("no free request descriptor"))
    }

    /// Sets the target name.
    pub fn set_target(&self, req: &mut Request, name: &[u8]) -> Result<(), TransportError> {
        if name.len() > MAX_TARGET_LEN {
            return Err(TransportError::TargetTooLong(name.len()));
        }
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
                    .store(buffer_handle(class, index), Ordering::Relaxed);
                r.data_len.store(len, Ordering::Relaxed);
                if let Some(p) = self.seg.port(r.src_port()) {
                    let used = p.buffers_in_use.fetch_add(1, Ordering::Relaxed) + 1;
                    raise(&p.buffers_high_water, used);
                }
                return Ok(());
            }
        }
        self.shm().busy_events.fetch_add(1, Ordering::Relaxed);
        Err(TransportError::Busy("no free data buffer"))
    }

    fn grab_buffer(&self, class: usize, owner_req: u32) -> Option<u32> {
        let count = self.seg.layout().buffer_counts[class];
        let start = self.buffer_cursor[class].get();
        for k in 0..count {
            let i = (start + k) % count;
            let owner = self.seg.buffer_owner(class, i)?;
            // SYNC POINT (buffer free): Acquire pairs with the Release that
            // freed the buffer; its previous user is done writing it.
            if owner.load(Ordering::Relaxed) == 0
                && owner
                    .compare_exchange(0, owner_req + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.buffer_cursor[class].set(i + 1);
                return Some(i);
            }
        }
        None
    }

    /// The buffer attached to `r`, bounds-checked.
    /// The buffer attached to descriptor `req`, if it is in range and its
    /// owner word says it is this descriptor's (a handle left stale by a
    /// holder killed mid-free must not reach a buffer someone else owns).
    fn buffer_of(&self, req: u32) -> Option<(usize, u32)> {
        let r = self.desc_of(req);
        let (class, index) = decode_buffer(r.buffer.load(Ordering::Relaxed))?;
        let owner = self.seg.buffer_owner(class, index)?;
        (owner.load(Ordering::Acquire) == req + 1).then_some((class, index))
    }

    fn free_buffer(&self, req: u32) {
        detach_and_release_buffer(&self.seg, req);
        self.desc_of(req).data_len.store(0, Ordering::Relaxed);
    }

    fn data_ptr(&self, req: &Request) -> (*mut u8, usize) {
        let r = self.desc(req);
        match self.buffer_of(req.index) {
            Some((class, index)) => {
                let len = r.data_len().min(self.seg.layout().class_size(class));
                (self.seg.buffer_ptr(class, index), len as usize)
            }
            None => (std::ptr::NonNull::dangling().as_ptr(), 0),
        }
    }

    /// The request's data bytes (empty without a buffer).
    pub fn data<'r>(&'r self, req: &'r Request) -> &'r [u8] {
        let (ptr, len) = self.data_ptr(req);
        // SAFETY: `ptr..ptr+len` lies inside the buffer attached to the
        // descriptor (bounds-checked handle, length clamped to the class
        // size), inside the mapping that `self.seg` keeps alive. Holding
        // the `Request` means this port holds the descriptor and so its
        // buffer; peers that follow the protocol do not write it meanwhile.
        // A peer that breaks it can only change bytes, which have no
        // invalid values.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// The request's data bytes, writable.
    pub fn data_mut<'r>(&'r self, req: &'r mut Request) -> &'r mut [u8] {
        let (ptr, len) = self.data_ptr(req);
        // SAFETY: as in `data`; the `&mut Request` borrow makes this the
        // only slice of this buffer in this process until it ends.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }

    fn push(&self, req: &Request, dst: u32, ring: u32, phase: Phase) -> Result<(), TransportError> {
        let nr_ports = self.seg.layout().nr_ports;
        let p = self.seg.port(dst).ok_or(TransportError::NoSuchPort {
            port: dst,
            nr_ports,
        })?;
        let r = self.desc(req);
        let t = self.held(req).ok_or(TransportError::NotHeld(req.index))?;
        let in_ring = Ticket::word(phase, self.no, t.serial);
        // SYNC POINT (hand-over): Release, so a consumer that takes the
        // descriptor through any ring entry (an old one included), with
        // its Acquire load of the ticket, sees what we wrote before.
        r.ticket.store(in_ring, Ordering::Release);
        match self.seg.ring(dst, ring).push(req.index) {
            Ok(position) => {
                if let Some(depth) = self.seg.ring(dst, ring).sampled_depth(position) {
                    let tail = if ring == 0 {
                        &p.request_tail.0
                    } else {
                        &p.reply_tail.0
                    };
                    raise64(&tail.high_water, depth);
                }
                Ok(())
            }
            Err(PushError::Full) => {
                let owned = Ticket::word(Phase::Owned, self.no, t.serial);
                // A CAS, not a store: a consumer may have taken it through
                // an old entry for the same descriptor meanwhile, and then
                // it was delivered after all.
                if r.ticket
                    .compare_exchange(in_ring, owned, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    return Ok(());
                }
                self.shm().busy_events.fetch_add(1, Ordering::Relaxed);
                Err(TransportError::Busy("destination ring is full"))
            }
        }
    }

    fn check_dst(&self, dst: u32) -> Result<(), TransportError> {
        let nr_ports = self.seg.layout().nr_ports;
        let p = self.seg.port(dst).ok_or(TransportError::NoSuchPort {
            port: dst,
            nr_ports,
        })?;
        // A port whose owner died still takes requests: they wait in its
        // ring for the next owner. One that nobody bound does not.
        if Binding::from_word(p.binding.load(Ordering::Relaxed)).pid == 0 {
            return Err(TransportError::NotBound(dst));
        }
        Ok(())
    }

    /// Sends a request to its destination and wakes the destination if it
    /// sleeps.
    pub fn submit(&self, req: Request) -> Result<(), Rejected> {
        let dst = self.desc(&req).effective_dst();
        let now = self.clock.now();
        if let Err(error) = self.submit_quiet(&req, dst, now) {
            return Err(Rejected {
                request: req,
                error,
            });
        }
        self.wake(dst);
        Ok(())
    }

    fn submit_quiet(&self, req: &Request, dst: u32, now: u64) -> Result<(), TransportError> {
        self.check_dst(dst)?;
        self.desc(req).set_t_submit(now);
        self.push(req, dst, 0, Phase::Queued)
    }

    /// Sends many requests, ringing each destination's doorbell once.
    /// Stops at the first failure and returns it with the requests not sent
    /// (the failed one first).
    pub fn submit_batch(
        &self,
        reqs: &mut Vec<Request>,
    ) -> Result<(), (Vec<Request>, TransportError)> {
        let now = self.clock.now();
        let mut woken: Vec<u32> = Vec::new();
        let mut drain = reqs.drain(..);
        let mut failure = None;
        for req in drain.by_ref() {
            let dst = self.desc(&req).effective_dst();
            match self.submit_quiet(&req, dst, now) {
                Ok(()) => {
                    if !woken.contains(&dst) {
                        woken.push(dst);
                    }
                }
                Err(e) => {
                    failure = Some((req, e));
                    break;
                }
            }
        }
        let rest: Vec<Request> = drain.collect();
        for dst in woken {
            self.wake(dst);
        }
        match failure {
            None => Ok(()),
            Some((req, e)) => {
                let mut back = vec![req];
                back.extend(rest);
                Err((back, e))
            }
        }
    }

    /// Re-addresses a request this port accepted to `dst`; the reply still
    /// goes to the original source.
    pub fn forward(&self, req: Request, dst: u32) -> Result<(), Rejected> {
        self.desc(&req).effective_dst.store(dst, Ordering::Relaxed);
        self.submit(req)
    }

    fn wake(&self, dst: u32) {
        if let Some(p) = self.seg.port(dst) {
            p.doorbell.0.ring(&self.futex);
        }
    }

    /// Takes the next request addressed to this port, if any.
    pub fn accept(&self) -> Option<Request> {
        let mut out = Vec::with_capacity(1);
        self.accept_batch(&mut out, 1);
        out.pop()
    }

    /// Takes up to `max` requests into `out` (all stamped with one accept
    /// time); returns how many.
    pub fn accept_batch(&self, out: &mut Vec<Request>, max: usize) -> usize {
        let first = out.len();
        self.seg.ring(self.no, 0).pop_many(
            max,
            |v| self.take(v, Phase::Queued),
            |index| out.push(Request { index }),
        );
        let taken = out.len() - first;
        if taken > 0 {
            let now = self.clock.now();
            for r in &out[first..] {
                self.desc(r).set_t_accept(now);
            }
        }
        taken
    }

    /// Validates a ring value and claims its descriptor.
    fn take(&self, v: u32, expected: Phase) -> Take {
        let Some(r) = self.seg.request(v) else {
            log::warn!(
                "port {}: ring held descriptor index {v}, out of range; skipped",
                self.no
            );
            return Take::Skip;
        };
        let t = r.ticket.load(Ordering::Acquire);
        let ticket = Ticket::from_word(t);
        if ticket.phase != Some(expected) {
            return Take::Skip; // stale: recovery claimed it
        }
        let addressed = match expected {
            Phase::Queued => r.effective_dst() == self.no,
            _ => r.src_port() == self.no,
        };
        if !addressed {
            log::warn!(
                "port {}: ring held descriptor {v} addressed elsewhere; skipped",
                self.no
            );
            return Take::Skip;
        }
        let owned = Ticket::word(Phase::Owned, self.no, ticket.serial);
        // SYNC POINT (take): AcqRel; the CAS decides, against recovery,
        // who holds the descriptor.
        match r
            .ticket
            .compare_exchange(t, owned, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Take::Taken,
            Err(_) => Take::Skip,
        }
    }

    /// Completes a request successfully and responds.
    pub fn serve(&self, req: Request, serviced: u64) -> Result<(), Rejected> {
        let r = self.desc(&req);
        r.set_serviced(serviced);
        r.set_status(status::SERVED);
        self.respond(req)
    }

    /// Fails a request with `error` and responds.
    pub fn fail(&self, req: Request, error: u32) -> Result<(), Rejected> {
        let r = self.desc(&req);
        r.set_serviced(0);
        r.set_error(error);
        r.set_status(status::FAILED);
        self.respond(req)
    }

    /// Sends a completed request back to its source. A source that unbound
    /// or was re-bound since (stale generation) gets nothing: the request
    /// goes back to the pool.
    pub fn respond(&self, req: Request) -> Result<(), Rejected> {
        let r = self.desc(&req);
        r.set_t_complete(self.clock.now());
        let src = r.src_port();
        if !src_is_current(&self.seg, r.src_port(), r) {
            log::debug!(
                "port {}: reply for stale source port {src}; request put back",
                self.no
            );
            self.put(req);
            return Ok(());
        }
        if let Err(error) = self.push(&req, src, 1, Phase::Replied) {
            return Err(Rejected {
                request: req,
                error,
            });
        }
        self.wake(src);
        Ok(())
    }

    /// Responds to many requests (completion status already set), ringing
    /// each source's doorbell once. Stops at the first failure and returns
    /// it with the requests not sent.
    pub fn respond_batch(
        &self,
        reqs: &mut Vec<Request>,
    ) -> Result<(), (Vec<Request>, TransportError)> {
        let now = self.clock.now();
        let mut woken: Vec<u32> = Vec::new();
        let mut drain = reqs.drain(..);
        for req in drain.by_ref() {
            let r = self.desc(&req);
            r.set_t_complete(now);
            let src = r.src_port();
            if !src_is_current(&self.seg, r.src_port(), r) {
                self.put(req);
                continue;
            }
            if let Err(e) = self.push(&req, src, 1, Phase::Replied) {
                let mut back = vec![req];
                back.extend(drain);
                for w in woken {
                    self.wake(w);
                }
                return Err((back, e));
            }
            if !woken.contains(&src) {
                woken.push(src);
            }
        }
        for w in woken {
            self.wake(w);
        }
        Ok(())
    }

    /// Takes the next reply addressed to this port, if any. Replies meant
    /// for an earlier binding of this port are put back on the way.
    pub fn receive(&self) -> Option<Request> {
        let mut out = Vec::with_capacity(1);
        while self.receive_batch(&mut out, 1) == 0 {
            if !self.seg.ring(self.no, 1).has_work() {
                return None;
            }
        }
        out.pop()
    }

    /// Takes up to `max` replies into `out`; returns how many (stale ones,
    /// for an earlier binding, are put back and not counted).
    pub fn receive_batch(&self, out: &mut Vec<Request>, max: usize) -> usize {
        let first = out.len();
        self.seg.ring(self.no, 1).pop_many(
            max,
            |v| self.take(v, Phase::Replied),
            |index| {
                let req = Request { index };
                if self.desc(&req).src_gen.load(Ordering::Relaxed) == self.gen {
                    out.push(req);
                } else {
                    self.put(req);
                }
            },
        );
        out.len() - first
    }

    /// Takes back a request this port submitted that is still waiting in
    /// its destination's queue (not accepted yet), e.g. because the peer
    /// there died. Returns `None` if it was accepted meanwhile (its reply
    /// will come) or is not ours. The queue entry left behind is skipped
    /// by its consumer.
    pub fn cancel(&self, index: u32) -> Option<Request> {
        let r = self.seg.request(index)?;
        let w = r.ticket.load(Ordering::Acquire);
        let t = Ticket::from_word(w);
        if t.phase != Some(Phase::Queued)
            || t.holder != self.no
            || r.src_port() != self.no
            || r.src_gen.load(Ordering::Relaxed) != self.gen
        {
            return None;
        }
        let owned = Ticket::word(Phase::Owned, self.no, t.serial);
        r.ticket
            .compare_exchange(w, owned, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| Request { index })
    }

    /// The ticket of `req` if this port holds it (a `Request` used with
    /// another port than the one that got it, or after its port unbound,
    /// is not held and must not be acted on).
    fn held(&self, req: &Request) -> Option<Ticket> {
        let t = Ticket::from_word(self.desc(req).ticket.load(Ordering::Relaxed));
        (t.phase == Some(Phase::Owned) && t.holder == self.no).then_some(t)
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
        put_descriptor(&self.seg, req.index, Some(self.no));
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
        let (ptr, len) = self.data_ptr(&req);
        self.detached.fetch_add(1, Ordering::Relaxed);
        Detached {
            seg: self.seg.clone(),
            index: req.index,
            req: Some(req),
            ptr,
            len,
            out: self.detached.clone(),
        }
    }

    /// Fails back a request with the transport's "busy" code (for a peer
    /// that cannot take more work).
    pub fn reject_busy(&self, req: Request) -> Result<(), Rejected> {
        self.fail(req, code::BUSY)
    }
}

/// Whether the source port of `r` is still bound with the generation that
/// got the descriptor.
pub(crate) fn src_is_current(seg: &Segment, src: u32, r: &RequestShm) -> bool {
    let Some(p) = seg.port(src) else {
        return false;
    };
    let b = Binding::from_word(p.binding.load(Ordering::Acquire));
    b.pid != 0 && !b.recovering && b.gen == r.src_gen.load(Ordering::Relaxed)
}

/// Detaches descriptor `req`'s buffer, then frees it if `req` owns it.
/// In that order: a holder killed between the two leaves a buffer owned by
/// a descriptor without it attached, which recovery frees; the other order
/// would leave a handle to a buffer someone else may own by then.
pub(crate) fn detach_and_release_buffer(seg: &Segment, req: u32) {
    let Some(r) = seg.request(req) else { return };
    // Load and store: only the holder touches the field.
    let handle = r.buffer.load(Ordering::Relaxed);
    r.buffer.store(NO_BUFFER, Ordering::Relaxed);
    let Some((class, index)) = decode_buffer(handle) else {
        return;
    };
    let Some(owner) = seg.buffer_owner(class, index) else {
        return;
    };
    // SYNC POINT (buffer free): Release pairs with the Acquire CAS of the
    // next allocation: our use of the bytes is over before it starts. The
    // expected value frees only a buffer this descriptor owns.
    if owner
        .compare_exchange(req + 1, 0, Ordering::Release, Ordering::Relaxed)
        .is_err()
    {
        log::debug!("buffer {class}/{index} not owned by descriptor {req}; left alone");
        return;
    }
    if src_is_current(seg, r.src_port(), r) {
        if let Some(p) = seg.port(r.src_port()) {
            let _ = p
                .buffers_in_use
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

/// Frees the buffer and pools descriptor `req`. The caller (port `by`, or
/// recovery) holds it.
pub(crate) fn put_descriptor(seg: &Segment, req: u32, by: Option<u32>) {
    let Some(r) = seg.request(req) else { return };
    detach_and_release_buffer(seg, req);
    if src_is_current(seg, r.src_port(), r) {
        if let Some(p) = seg.port(r.src_port()) {
            let used = &p.requests_in_use;
            if by == Some(r.src_port()) {
                // The owner, the count's only writer in the common case:
                // no atomic read-modify-write needed.
                used.store(
                    used.load(Ordering::Relaxed).saturating_sub(1),
                    Ordering::Relaxed,
                );
            } else {
                // Another port dropping it: rare; the count is a statistic.
                let _ =
                    used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }
    }
    // A pooled descriptor names no source: one taken by a `get` whose
    // process is killed before `reset` is then not mistaken by recovery
    // for a request of the previous source to fail back.
    r.src_port.store(NO_PORT, Ordering::Relaxed);
    let t = Ticket::from_word(r.ticket.load(Ordering::Relaxed));
    // SYNC POINT (put): Release pairs with the Acquire CAS in `get`.
    r.ticket
        .store(Ticket::word(Phase::Pooled, 0, t.serial), Ordering::Release);
}

impl Drop for Port {
    fn drop(&mut self) {
        // SYNC POINT (detached): Acquire pairs with the Release decrement
        // of each `Detached`: their last use of a buffer is over.
        let out = self.detached.load(Ordering::Acquire);
        if out > 0 {
            // Putting their descriptors back would free buffers another
            // thread still writes. Leave the port bound: once this process
            // exits, crash recovery puts everything back.
            log::error!(
                "port {}: {out} detached request(s) still out; not unbinding (recovery will, after this process exits)",
                self.no
            );
            return;
        }
        if let Err(e) = crate::recovery::release_port(&self.seg, self.no, self.gen) {
            log::warn!("unbinding port {}: {e}", self.no);
        }
    }
}
