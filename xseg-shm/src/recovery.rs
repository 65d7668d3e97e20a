//! Crash recovery: restore a consistent segment after a port's owner died.
//!
//! Recovery of port `P` runs in whichever process notices (the `xseg`
//! tool, the supervisor, a test); it first claims the port by setting the
//! recovering bit in its binding with a CAS, so two recoverers never work
//! on one port (the claimant's identity is written before the CAS, so a
//! second recoverer never takes the first for dead: see the `binding`
//! module), and a new owner cannot bind until recovery ends. Every step
//! below first checks that the port is still claimed by us, and every
//! change of a ticket is a CAS from the word seen: if either fails, the
//! cleanup stops rather than give a descriptor two owners. Then:
//!
//! 1. **Rings.** `P` was the single consumer of its two rings. If it died
//!    in the middle of a batch, [`Ring::repair_head`](crate::ring::Ring::repair_head)
//!    advances `head` past the values whose descriptors `P` had already
//!    claimed (their tickets say `Owned` by `P`).
//! 2. **Descriptors.** Every descriptor whose ticket names `P` as holder
//!    is claimed (a CAS for those in a ring, so a consumer that takes it at
//!    the same moment wins cleanly and recovery leaves it):
//!    - `P`'s own requests (source `P`) go back to the pool: nobody waits
//!      for their replies;
//!    - requests `P` had accepted, or forwarded and not yet seen taken,
//!      are failed back to their sources with [`PEER_DIED`](crate::code::PEER_DIED);
//!    - replies `P` was sending are sent again.
//!
//!    A source's reply ring that is full (its consumer has not come round
//!    yet) is waited on, up to [`REPLY_RING_WAIT`] for the whole cleanup;
//!    only then is a request put back without its reply.
//!
//!    A descriptor in a ring phase (`Queued`, `Replied`) with `P` as pusher
//!    is left alone if its entry is in the destination ring (the push
//!    completed; a consumer never skips an entry addressed to it), and
//!    claimed otherwise (`P` died before pushing, and nobody else will).
//! 3. **Replies to `P`.** Its reply ring is drained into the pool: they
//!    were for the dead incarnation. A reply a server sends after this (it
//!    checked `P`'s generation just before recovery began) waits in the
//!    ring until the port's next owner receives it and puts it back, as its
//!    generation is stale; `xseg report` shows it as a queued reply of a
//!    free port meanwhile.
//! 4. **Buffers.** A buffer's owner word names its descriptor; buffers of
//!    descriptors `P` held that are not attached (`P` died between
//!    allocating and attaching) are freed.
//! 5. Requests queued *to* `P` by others stay in its request ring for the
//!    next owner. The binding is released with the generation kept, so the
//!    next bind gets a new one and anything still addressed to the dead
//!    incarnation is recognised as stale.
//!
//! A port's owner unbinding cleanly (dropping its [`Port`](crate::Port))
//! runs the same steps on itself, except that what it pushed is known to be
//! in its rings and is left there.

use crate::error::PortError;
use crate::pool::Phase;
use crate::put::{put_descriptor, src_is_current};
use crate::request::{code, status};
use crate::ring::Take;
use crate::segment::Segment;
use crate::sync::Ordering;
use crate::{binding, buffers, pool, sys};

/// How long one cleanup waits, in all, for room in full reply rings of
/// live sources before it puts their requests back without a reply.
pub const REPLY_RING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What one recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// The port.
    pub port: u32,
    /// Its dead owner (0 if it had none).
    pub dead_pid: u32,
    /// Requests failed back to their sources with "peer died".
    pub failed_back: u32,
    /// Replies sent again on the dead peer's behalf.
    pub replies_resent: u32,
    /// Descriptors returned to the pool.
    pub requests_freed: u32,
    /// Buffers returned to the pool that no descriptor referenced.
    pub buffers_freed: u32,
    /// Ring positions repaired after a consumer died mid-pop.
    pub ring_repairs: u32,
}

impl Segment {
    /// Recovers port `n` after its owner died (or tidies an unbound port).
    ///
    /// Exclusive: of several processes (or threads) recovering one port at
    /// once, one claims it and cleans up, the others get
    /// [`PortError::Recovering`] (see the `binding` module for why a
    /// recoverer is never taken for dead while it works).
    pub fn recover(&self, n: u32) -> Result<RecoveryReport, PortError> {
        let p = self.port(n).ok_or(PortError::NoSuchPort {
            port: n,
            nr_ports: self.layout().nr_ports,
        })?;
        let me = sys::my_identity();
        let b = binding::claim_for_recovery(&p.binding, &p.owner_id, me, sys::is_alive).map_err(
            |b| {
                if b.recovering {
                    PortError::Recovering {
                        port: n,
                        pid: b.pid,
                    }
                } else {
                    PortError::OwnerAlive {
                        port: n,
                        pid: b.pid,
                    }
                }
            },
        )?;
        crate::hooks::run(crate::hooks::Point::RecoveryClaimed, self.name());
        let claim = Claim {
            port: n,
            gen: b.gen,
            me,
        };
        let mut report = cleanup(self, &claim, true)?;
        report.dead_pid = if b.recovering { 0 } else { b.pid };
        if b.pid != 0 {
            // Relaxed: a statistic.
            p.recoveries.fetch_add(1, Ordering::Relaxed);
            log::info!("recovered port {n} of dead process {}: {report:?}", b.pid);
        }
        finish(self, &claim)?;
        Ok(report)
    }

    /// Recovers every port whose owner died.
    pub fn recover_dead(&self) -> Vec<Result<RecoveryReport, PortError>> {
        (0..self.layout().nr_ports)
            .filter(|&n| self.dead_owner(n).is_some())
            .map(|n| self.recover(n))
            .collect()
    }
}

/// A claim on a port: recovering by us (identity `me`) in generation `gen`.
struct Claim {
    port: u32,
    gen: u32,
    me: u64,
}

impl Claim {
    fn pid(&self) -> u32 {
        (self.me >> 32) as u32
    }

    /// `Ok` while the port is still claimed by us; every step of a cleanup
    /// checks it first and stops when it is not.
    fn check(&self, seg: &Segment) -> Result<(), PortError> {
        let p = seg.port(self.port).expect("in range");
        if binding::still_claimed(&p.binding, self.gen, self.pid()) {
            Ok(())
        } else {
            Err(self.lost())
        }
    }

    fn lost(&self) -> PortError {
        log::error!(
            "port {}: no longer claimed by us (generation {}); cleanup stopped",
            self.port,
            self.gen
        );
        PortError::LostClaim { port: self.port }
    }
}

/// The owner's own clean unbind.
pub(crate) fn release_port(seg: &Segment, n: u32, gen: u32) -> Result<(), PortError> {
    let p = seg.port(n).ok_or(PortError::NoSuchPort {
        port: n,
        nr_ports: seg.layout().nr_ports,
    })?;
    let me = sys::my_identity();
    if !binding::claim_own(&p.binding, gen, sys::my_pid()) {
        // Someone recovered it from under us (we were taken for dead).
        return Err(PortError::Recovering { port: n, pid: 0 });
    }
    let claim = Claim { port: n, gen, me };
    cleanup(seg, &claim, false)?;
    finish(seg, &claim)
}

fn finish(seg: &Segment, claim: &Claim) -> Result<(), PortError> {
    claim.check(seg)?;
    let p = seg.port(claim.port).expect("in range");
    // Relaxed: statistics and hints, published with the rest of the
    // cleanup by the Release of `binding::release`.
    p.requests_in_use.store(0, Ordering::Relaxed);
    p.buffers_in_use.store(0, Ordering::Relaxed);
    p.doorbell.0.sleeping.store(0, Ordering::Relaxed);
    if binding::release(&p.binding, &p.owner_id, claim.gen, claim.me) {
        Ok(())
    } else {
        Err(claim.lost())
    }
}

/// Whether ring `which` of `port` has `value` published from its head on.
fn ring_holds(seg: &Segment, port: u32, which: u32, value: u32) -> bool {
    let mut found = false;
    if let Some(ring) = seg.ring_checked(port, which) {
        ring.for_each_published(|v| found |= v == value);
    }
    found
}

/// Puts back what the claimed port held. `crashed`: its owner died,
/// possibly in the middle of any operation; otherwise the owner itself
/// unbinds, and everything it pushed is in its ring. Every change of a
/// ticket is a CAS from the word seen; a failed one, or the port no longer
/// claimed by us, stops the cleanup (someone else acts on the port).
fn cleanup(seg: &Segment, claim: &Claim, crashed: bool) -> Result<RecoveryReport, PortError> {
    let n = claim.port;
    let mut report = RecoveryReport {
        port: n,
        ..Default::default()
    };
    let reply_deadline = std::time::Instant::now() + REPLY_RING_WAIT;
    let held_by_n = |v: u32| {
        seg.request(v)
            .is_some_and(|r| pool::load(&r.ticket).1.is_owned_by(n))
    };
    for which in 0..2 {
        claim.check(seg)?;
        if let Some(ring) = seg.ring_checked(n, which) {
            report.ring_repairs += ring.repair_head(held_by_n).ok_or_else(|| claim.lost())? as u32;
        }
    }
    claim.check(seg)?;
    free_orphan_buffers(seg, n, &mut report);

    for i in 0..seg.layout().nr_requests {
        let r = seg.request(i).expect("in range");
        let (w, t) = pool::load(&r.ticket);
        if t.holder != n {
            continue;
        }
        claim.check(seg)?;
        let (previous, held) = match t.phase {
            Some(Phase::Owned) => (Phase::Owned, w),
            Some(phase @ (Phase::Queued | Phase::Replied)) => {
                if !crashed {
                    continue; // pushed: its consumer takes it
                }
                // Did the dead owner finish the push? A consumer never
                // skips an entry addressed to it, so an entry found now is
                // delivered, and one not found never will be.
                let (dst, which) = if phase == Phase::Queued {
                    (r.effective_dst(), 0)
                } else {
                    (r.src_port(), 1)
                };
                if ring_holds(seg, dst, which, i) {
                    continue;
                }
                if !pool::claim(&r.ticket, w, n, t.serial) {
                    continue; // a consumer took it: no longer ours
                }
                (phase, pool::Ticket::word(Phase::Owned, n, t.serial))
            }
            _ => continue,
        };
        // The port's marks in this process's record, if the port was ours
        // (its owner unbinding, or a test playing a killed process).
        seg.held().release(i, n);
        // Read once: a misbehaving peer may change it under us.
        let src = r.src_port();
        if src == n || !src_is_current(seg, src, r) {
            if !put_descriptor(seg, i, Some(held)) {
                return Err(claim.lost());
            }
            report.requests_freed += 1;
            continue;
        }
        if previous == Phase::Replied {
            report.replies_resent += 1;
        } else {
            r.set_serviced(0);
            r.set_error(code::PEER_DIED);
            r.set_status(status::FAILED);
            r.set_t_complete(seg.clock().now());
            report.failed_back += 1;
        }
        // A full reply ring is back-pressure: its consumer (alive, the
        // source is current) drains it; wait for room, up to a deadline
        // shared by the whole cleanup, holding the descriptor meanwhile.
        loop {
            let in_ring = pool::hand_over_from(&r.ticket, held, Phase::Replied, n, t.serial)
                .ok_or_else(|| claim.lost())?;
            if seg
                .ring_checked(src, 1)
                .is_some_and(|ring| ring.push(i).is_ok())
            {
                seg.wake(src);
                break;
            }
            if !pool::claim(&r.ticket, in_ring, n, t.serial) {
                break; // its source took it through an older entry: delivered
            }
            if std::time::Instant::now() >= reply_deadline || !src_is_current(seg, src, r) {
                log::error!(
                    "recovery of port {n}: reply ring of port {src} still full after {REPLY_RING_WAIT:?}; request {i} put back without a reply"
                );
                if !put_descriptor(seg, i, Some(held)) {
                    return Err(claim.lost());
                }
                report.requests_freed += 1;
                break;
            }
            seg.wake(src);
            std::thread::sleep(std::time::Duration::from_millis(1));
            claim.check(seg)?;
        }
    }

    // Replies addressed to the dead incarnation.
    claim.check(seg)?;
    if let Some(ring) = seg.ring_checked(n, 1) {
        while let Some(i) = ring.pop(|v| {
            let Some(r) = seg.request(v) else {
                return Take::Skip;
            };
            let (w, t) = pool::load(&r.ticket);
            if t.phase == Some(Phase::Replied)
                && r.src_port() == n
                && pool::claim(&r.ticket, w, n, t.serial)
            {
                Take::Taken
            } else {
                Take::Skip
            }
        }) {
            let t = pool::peek(&seg.request(i).expect("popped in range").ticket);
            if !put_descriptor(seg, i, Some(pool::Ticket::word(Phase::Owned, n, t.serial))) {
                return Err(claim.lost());
            }
            report.requests_freed += 1;
            claim.check(seg)?;
        }
    }
    Ok(report)
}

/// Frees buffers whose owner descriptor `n` held without this buffer
/// attached (it died between allocating and attaching), or whose owner
/// word is corrupt.
fn free_orphan_buffers(seg: &Segment, n: u32, report: &mut RecoveryReport) {
    for (class, &count) in seg.layout().buffer_counts.iter().enumerate() {
        for index in 0..count {
            let owner = seg.buffer_owner(class, index).expect("in range");
            let Some(d) = buffers::owner(owner) else {
                continue;
            };
            let orphan = match seg.request(d) {
                None => true, // corrupt owner word
                Some(r) => {
                    let (_, t) = pool::load(&r.ticket);
                    // Relaxed: the Acquire load of the ticket synchronised
                    // with the holder's last hand-over; a dead holder
                    // writes no more.
                    let attached =
                        buffers::decode(r.buffer.load(Ordering::Relaxed)) == Some((class, index));
                    // Only a descriptor the dead port held is safe to
                    // judge: nobody else touches it.
                    t.is_owned_by(n) && !attached
                }
            };
            if orphan && buffers::release(owner, d) {
                report.buffers_freed += 1;
            }
        }
    }
}
