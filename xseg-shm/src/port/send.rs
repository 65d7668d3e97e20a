//! Sending: submit and forward requests, respond to them. Each pushes the
//! descriptor's index into a ring of its destination (requests) or source
//! (replies) after handing the descriptor over (see the `pool` module),
//! then rings that port's doorbell.

use super::{raise64, Port, Rejected};
use crate::binding;
use crate::error::TransportError;
use crate::pool::{self, Phase};
use crate::put::src_is_current;
use crate::request::{status, Request};
use crate::ring::PushError;
use crate::sync::Ordering;

impl Port {
    fn push(&self, req: &Request, dst: u32, ring: u32, phase: Phase) -> Result<(), TransportError> {
        let nr_ports = self.seg.layout().nr_ports;
        let p = self.seg.port(dst).ok_or(TransportError::NoSuchPort {
            port: dst,
            nr_ports,
        })?;
        let r = self.desc(req);
        let t = self.held(req).ok_or(TransportError::NotHeld(req.index))?;
        // Before the hand-over: its consumer may be a port of this process.
        self.seg.held().release(req.index, self.no);
        let in_ring = pool::hand_over(&r.ticket, phase, self.no, t.serial);
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
            Err(e) => {
                // A CAS, not a store: a consumer may have taken it through
                // an old entry for the same descriptor meanwhile, and then
                // it was delivered after all (and if that consumer is a
                // port of this process, it holds the mark).
                if !self.seg.held().hold(req.index, self.no) {
                    return Ok(());
                }
                if !pool::claim(&r.ticket, in_ring, self.no, t.serial) {
                    self.seg.held().release(req.index, self.no);
                    return Ok(());
                }
                match e {
                    PushError::Full => {
                        // Relaxed: a statistic.
                        self.shm().busy_events.fetch_add(1, Ordering::Relaxed);
                        Err(TransportError::Busy("destination ring is full"))
                    }
                    // Not reached: a held index is below MAX_REQUESTS.
                    PushError::OutOfRange => Err(TransportError::NotHeld(req.index)),
                }
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
        if binding::peek(&p.binding).pid == 0 {
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
        self.held(req).ok_or(TransportError::NotHeld(req.index))?;
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
        if self.held(&req).is_none() {
            let error = TransportError::NotHeld(req.index);
            return Err(Rejected {
                request: req,
                error,
            });
        }
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
            if self.held(&req).is_none() {
                let e = TransportError::NotHeld(req.index);
                let mut back = vec![req];
                back.extend(drain);
                for w in woken {
                    self.wake(w);
                }
                return Err((back, e));
            }
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
}
