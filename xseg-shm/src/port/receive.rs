//! Receiving: accept requests and receive replies from this port's two
//! rings, claiming each descriptor from its ticket; cancel a request still
//! queued elsewhere.

use super::Port;
use crate::pool::{self, Phase};
use crate::request::Request;
use crate::ring::Take;
use crate::sync::Ordering;

impl Port {
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
            |index| out.push(self.token(index)),
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
        let (t, ticket) = pool::load(&r.ticket);
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
        if !self.seg.held().hold(v, self.no) {
            // The ticket says the descriptor is queued to us, but a port of
            // this process holds it: a forged ticket. Taking it would give
            // the process two references to one buffer.
            log::error!(
                "port {}: ring held descriptor {v}, which a port of this process holds; skipped",
                self.no
            );
            return Take::Skip;
        }
        if pool::claim(&r.ticket, t, self.no, ticket.serial) {
            Take::Taken
        } else {
            self.seg.held().release(v, self.no);
            Take::Skip
        }
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
                let req = self.token(index);
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
        let (w, t) = pool::load(&r.ticket);
        // Relaxed `src_gen`: written by the holder before its hand-over,
        // which our Acquire load of the ticket synchronised with.
        if t.phase != Some(Phase::Queued)
            || t.holder != self.no
            || r.src_port() != self.no
            || r.src_gen.load(Ordering::Relaxed) != self.gen
        {
            return None;
        }
        if !self.seg.held().hold(index, self.no) {
            return None;
        }
        if pool::claim(&r.ticket, w, self.no, t.serial) {
            Some(self.token(index))
        } else {
            self.seg.held().release(index, self.no);
            None
        }
    }
}
