//! The descriptor pool: the ticket that says who holds each request
//! descriptor, and every change of hands on it.
//!
//! # The ticket
//!
//! Every descriptor's first word packs `phase` (bits 0–3), `holder` (bits
//! 4–19, a port number) and `serial` (bits 20–63, bumped on every get):
//!
//! | phase | holder | where the descriptor is |
//! |---|---|---|
//! | `Pooled` | — | free |
//! | `Owned` | port holding it | in a peer's hands (filling it, serving it) |
//! | `Queued` | port that pushed it | in the request ring of `effective_dst` |
//! | `Replied` | port that responded | in the reply ring of `src_port` |
//!
//! There is no free list: the pool is the set of `Pooled` tickets, and
//! [`get`] scans for one. Every change of hands is one CAS or store on the
//! ticket, so each descriptor has exactly one responsible port at every
//! instant, also at the instant a process is killed: recovery of a dead
//! port claims exactly the descriptors whose holder it is (see the
//! `recovery` module).
//!
//! | step | from | to | function |
//! |---|---|---|---|
//! | get | `Pooled` | `Owned` by the getter, next serial | [`get`] (CAS) |
//! | push to a ring | `Owned` by the pusher | `Queued`/`Replied` by the pusher | [`hand_over`] (store) |
//! | take from a ring, cancel, claim by recovery, undo a push | the word seen | `Owned` by the claimant | [`claim`] (CAS) |
//! | put | `Owned` by the putter | `Pooled` | [`put`] (store) |
//! | recovery's hand-over and put | `Owned` by the port it cleans up | `Replied` / `Pooled` | [`hand_over_from`], [`put_from`] (CAS) |
//!
//! A consumer takes a descriptor out of a ring by CAS from
//! `Queued`/`Replied` to `Owned` by itself; a ring entry whose ticket no
//! longer matches (recovery claimed it, or it was taken through another
//! entry) is stale and skipped. The port methods act only on descriptors
//! whose ticket names them (`Owned` by the port, with the serial of the
//! `Request` token, made by the same binding), so a token used with the
//! wrong port, after its port unbound, or after its descriptor changed
//! hands is refused.
//!
//! The functions take ticket words wherever they live (the segment, or for
//! the loom models the heap); the descriptor's other fields are the
//! holder's, published by these Release stores and CASes.

use crate::sync::{AtomicU64, Ordering};

/// Where a descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Free.
    Pooled = 0,
    /// Held by a port.
    Owned = 1,
    /// In a request ring.
    Queued = 2,
    /// In a reply ring.
    Replied = 3,
}

/// A decoded ticket word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Phase.
    pub phase: Option<Phase>,
    /// Responsible port.
    pub holder: u32,
    /// Bumped on each get.
    pub serial: u64,
}

impl Ticket {
    /// Decodes; an unknown phase decodes as `None` (a corrupt word).
    pub fn from_word(w: u64) -> Ticket {
        let phase = match w & 0xF {
            0 => Some(Phase::Pooled),
            1 => Some(Phase::Owned),
            2 => Some(Phase::Queued),
            3 => Some(Phase::Replied),
            _ => None,
        };
        Ticket {
            phase,
            holder: ((w >> 4) & 0xFFFF) as u32,
            serial: w >> 20,
        }
    }

    /// Encodes.
    pub fn word(phase: Phase, holder: u32, serial: u64) -> u64 {
        (phase as u64) | (u64::from(holder & 0xFFFF) << 4) | (serial << 20)
    }

    /// `Owned` by `port`.
    pub fn is_owned_by(&self, port: u32) -> bool {
        self.phase == Some(Phase::Owned) && self.holder == port
    }
}

/// Gets a free descriptor for port `holder`: scans `count` descriptors
/// from `start` on (wrapping), `ticket(i)` giving descriptor `i`'s ticket,
/// and claims the first pooled one (`Owned` by `holder`, next serial).
/// Returns its index.
pub fn get<'a>(
    count: u32,
    start: u32,
    holder: u32,
    ticket: impl Fn(u32) -> &'a AtomicU64,
) -> Option<u32> {
    for k in 0..count {
        let i = (start + k) % count;
        let word = ticket(i);
        // Relaxed: a candidate only; the CAS below re-checks the word and
        // acquires.
        let t = word.load(Ordering::Relaxed);
        let seen = Ticket::from_word(t);
        if seen.phase != Some(Phase::Pooled) {
            continue;
        }
        let owned = Ticket::word(Phase::Owned, holder, seen.serial + 1);
        // SYNC POINT (put): Acquire pairs with the Release store that
        // pooled the descriptor; its last holder is done with it.
        if word
            .compare_exchange(t, owned, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Some(i);
        }
    }
    None
}

/// Reads a ticket, to act on the descriptor if it says so; returns the
/// word (to [`claim`] from) and its decoding.
pub fn load(ticket: &AtomicU64) -> (u64, Ticket) {
    // SYNC POINT (hand-over): Acquire pairs with the Release of
    // `hand_over` (and of `put`): what the last holder wrote to the
    // descriptor is visible before we look at it.
    let w = ticket.load(Ordering::Acquire);
    (w, Ticket::from_word(w))
}

/// Reads a ticket without synchronising: for a holder checking its own
/// hold, and for reports.
pub fn peek(ticket: &AtomicU64) -> Ticket {
    // Relaxed: a holder wrote the word itself (or acquired it when it
    // claimed the descriptor), and only the holder changes it; a report is
    // a racy snapshot anyway.
    Ticket::from_word(ticket.load(Ordering::Relaxed))
}

/// The holder hands a descriptor over to a ring: the ticket says `phase`
/// (`Queued` or `Replied`) with `holder` as the pusher. Call it before the
/// push. Returns the word stored (to [`claim`] it back if the push fails).
pub fn hand_over(ticket: &AtomicU64, phase: Phase, holder: u32, serial: u64) -> u64 {
    let in_ring = Ticket::word(phase, holder, serial);
    // SYNC POINT (hand-over): Release, so a consumer that takes the
    // descriptor through any ring entry (an old one included), with its
    // Acquire load of the ticket, sees what the holder wrote before.
    ticket.store(in_ring, Ordering::Release);
    in_ring
}

/// Claims a descriptor whose ticket was `seen`: it becomes `Owned` by
/// `holder` with `serial` (the one seen). `false` if the ticket changed
/// meanwhile (someone else claimed it).
pub fn claim(ticket: &AtomicU64, seen: u64, holder: u32, serial: u64) -> bool {
    let owned = Ticket::word(Phase::Owned, holder, serial);
    // SYNC POINT (take): AcqRel; the CAS decides, against recovery and the
    // consumer of another entry for the same descriptor, who holds it.
    ticket
        .compare_exchange(seen, owned, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// As [`hand_over`], by CAS from the word `seen` (the caller's own hold):
/// `None`, and nothing changed, if the ticket is no longer `seen`. For
/// recovery, which must not act on a descriptor someone else took.
pub fn hand_over_from(
    ticket: &AtomicU64,
    seen: u64,
    phase: Phase,
    holder: u32,
    serial: u64,
) -> Option<u64> {
    let in_ring = Ticket::word(phase, holder, serial);
    // SYNC POINT (hand-over): Release, as in `hand_over`; the CAS decides
    // against anybody else acting on the descriptor.
    ticket
        .compare_exchange(seen, in_ring, Ordering::Release, Ordering::Relaxed)
        .ok()
        .map(|_| in_ring)
}

/// As [`put`], by CAS from the word `seen`: `false`, and nothing changed,
/// if the ticket is no longer `seen`.
pub fn put_from(ticket: &AtomicU64, seen: u64) -> bool {
    let pooled = Ticket::word(Phase::Pooled, 0, Ticket::from_word(seen).serial);
    // SYNC POINT (put): Release, as in `put`.
    ticket
        .compare_exchange(seen, pooled, Ordering::Release, Ordering::Relaxed)
        .is_ok()
}

/// Puts a descriptor its caller holds back into the pool (serial kept).
pub fn put(ticket: &AtomicU64) {
    // Relaxed: the caller holds the descriptor, so nobody else writes the
    // word now.
    let t = Ticket::from_word(ticket.load(Ordering::Relaxed));
    // SYNC POINT (put): Release pairs with the Acquire CAS in `get`.
    ticket.store(Ticket::word(Phase::Pooled, 0, t.serial), Ordering::Release);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn ticket_round_trips_and_rejects_unknown_phases() {
        let w = Ticket::word(Phase::Replied, 0xABCD, (1 << 44) - 1);
        let t = Ticket::from_word(w);
        assert_eq!(t.phase, Some(Phase::Replied));
        assert_eq!(t.holder, 0xABCD);
        assert_eq!(t.serial, (1 << 44) - 1);
        assert_eq!(Ticket::from_word(0x7).phase, None);
        assert_eq!(
            Ticket::from_word(0),
            Ticket {
                phase: Some(Phase::Pooled),
                holder: 0,
                serial: 0
            }
        );
    }

    #[test]
    fn get_hand_over_claim_put_cycle() {
        let tickets: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
        let at = |i: u32| &tickets[i as usize];
        assert_eq!(get(3, 1, 5, at), Some(1));
        assert_eq!(get(3, 1, 6, at), Some(2), "a held one is skipped");
        assert_eq!(get(3, 1, 7, at), Some(0), "the scan wraps");
        assert_eq!(get(3, 0, 7, at), None);
        let (w, t) = load(at(1));
        assert!(t.is_owned_by(5));
        assert_eq!(t.serial, 1);
        let in_ring = hand_over(at(1), Phase::Queued, 5, t.serial);
        assert!(!claim(at(1), w, 9, t.serial), "the word changed");
        assert!(claim(at(1), in_ring, 9, t.serial));
        assert!(peek(at(1)).is_owned_by(9));
        put(at(1));
        assert_eq!(
            peek(at(1)),
            Ticket {
                phase: Some(Phase::Pooled),
                holder: 0,
                serial: 1
            }
        );
        assert_eq!(get(3, 0, 4, at), Some(1));
        assert_eq!(peek(at(1)).serial, 2, "each get bumps the serial");
    }
}
