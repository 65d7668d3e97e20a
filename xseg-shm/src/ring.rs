//! Bounded lock-free ring of 24-bit indexes, many producers, one consumer.
//!
//! # Algorithm
//!
//! A ring of `capacity` (a power of two) slots, each one `AtomicU64` word
//! that packs a 40-bit *stamp* and a 24-bit *value* (a request index). Two
//! free-running 64-bit positions, `head` (next to pop) and `tail` (next to
//! push), live on separate cache lines. The stamp of the slot for position
//! `p` tells its state, in the manner of Dmitry Vyukov's bounded queue and
//! crossbeam's `ArrayQueue`:
//!
//! | stamp of slot `p % capacity` | meaning |
//! |---|---|
//! | `p` | free: a producer may publish position `p` here |
//! | `p + 1` | published: holds the value of position `p` |
//! | `p + capacity` | freed by the consumer: free for position `p + capacity` |
//!
//! The difference from Vyukov's queue is *where the producer linearises*.
//! Vyukov's producer first moves `tail` with a CAS and then writes the slot;
//! a producer killed between the two leaves a claimed slot that is never
//! published, and the consumer waits on it forever. Here the producer
//! publishes with **one CAS on the slot word** (free stamp → published stamp
//! and value together) and only then moves `tail`, which any other producer
//! may do for it ("helping"). A producer that dies at any instruction leaves
//! the ring either without its value or with it fully published: there is no
//! half-published state to skip, and the ring cannot wedge.
//!
//! The consumer is single (the owner of the port); `head` is written only by
//! it, or by crash recovery once it is dead. It reads the slot, lets the
//! caller *take* the value (the port validates and claims the request
//! descriptor with a CAS on its ticket), frees the slot, then advances
//! `head`. A consumer killed between those steps leaves one of two shapes
//! that [`repair_head`] recognises: the slot at `head` already freed (then
//! `head` moves on), or still published with a value the caller can tell was
//! taken (then the slot is freed too). Stale values (taken by recovery, or
//! pushed by a confused peer) are skipped by the take callback.
//!
//! Stamps are 40 bits, so a producer would have to be descheduled while
//! 2^40 (about 10^12) values pass through one ring for its stale CAS to
//! succeed; at 3 M values/s that is four days.

use crate::sync::{spin_loop, AtomicU64, Ordering};

/// Bits of the value part of a slot word.
pub const VALUE_BITS: u32 = 24;
/// Largest value a ring can carry.
pub const MAX_VALUE: u32 = (1 << VALUE_BITS) - 1;
const STAMP_BITS: u32 = 64 - VALUE_BITS;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
const VALUE_MASK: u64 = (1 << VALUE_BITS) - 1;

fn pack(position: u64, value: u32) -> u64 {
    ((position & STAMP_MASK) << VALUE_BITS) | u64::from(value)
}

fn stamp(word: u64) -> u64 {
    word >> VALUE_BITS
}

fn value(word: u64) -> u32 {
    (word & VALUE_MASK) as u32
}

/// `stamp - position` in 40-bit modular arithmetic, as a signed number.
fn stamp_distance(word: u64, position: u64) -> i64 {
    let d = stamp(word).wrapping_sub(position) & STAMP_MASK;
    // Sign-extend the 40-bit difference.
    ((d << VALUE_BITS) as i64) >> VALUE_BITS
}

/// The initial word of slot `index`: free for position `index`.
pub fn initial_slot(index: u64) -> u64 {
    pack(index, 0)
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Every slot holds a value the consumer has not popped yet.
    Full,
}

/// What the consumer's take callback decided for a popped value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The value is the consumer's now.
    Taken,
    /// The value is stale or invalid; drop it and look at the next slot.
    Skip,
}

/// A ring view: positions plus slots, wherever they live (shared memory or,
/// for model checking, the heap).
pub struct Ring<'a> {
    /// Next position to pop; written only by the consumer (or recovery).
    pub head: &'a AtomicU64,
    /// Next position to push; advanced by the publishing producer or any
    /// producer that helps it.
    pub tail: &'a AtomicU64,
    /// `capacity` slot words; `capacity` is a power of two.
    pub slots: &'a [AtomicU64],
}

impl Ring<'_> {
    fn slot(&self, position: u64) -> &AtomicU64 {
        // The mask keeps any position, even a corrupt one read from shared
        // memory, inside the slot array.
        &self.slots[(position & (self.slots.len() as u64 - 1)) as usize]
    }

    fn capacity(&self) -> u64 {
        self.slots.len() as u64
    }

    /// Publishes `value`; returns the position it took (see
    /// [`sampled_depth`](Self::sampled_depth)).
    pub fn push(&self, value: u32) -> Result<u64, PushError> {
        debug_assert!(value <= MAX_VALUE);
        debug_assert!(self.slots.len().is_power_of_two());
        loop {
            // Relaxed: `tail` is only a hint; the slot CAS below decides.
            let t = self.tail.load(Ordering::Relaxed);
            let slot = self.slot(t);
            // SYNC POINT (slot-free): Acquire pairs with the consumer's
            // Release store that freed the slot, so its read of the old
            // value is finished before we overwrite it.
            let word = slot.load(Ordering::Acquire);
            match stamp_distance(word, t) {
                0 => {
                    // SYNC POINT (publish): Release makes everything the
                    // producer wrote before (the request descriptor) visible
                    // to the consumer that loads this slot with Acquire.
                    if slot
                        .compare_exchange(
                            word,
                            pack(t + 1, value),
                            Ordering::Release,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        // Relaxed: moving `tail` publishes nothing; a failure
                        // means another producer already helped.
                        let _ = self.tail.compare_exchange(
                            t,
                            t + 1,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        return Ok(t);
                    }
                }
                1 => {
                    // Published for `t` by a producer that has not moved
                    // `tail` yet (or died): help it.
                    let _ =
                        self.tail
                            .compare_exchange(t, t + 1, Ordering::Relaxed, Ordering::Relaxed);
                    spin_loop();
                }
                d if d == 1 - self.capacity() as i64 => {
                    // The slot still holds position `t - capacity`: full,
                    // unless `tail` moved meanwhile.
                    if self.tail.load(Ordering::Relaxed) == t {
                        return Err(PushError::Full);
                    }
                    spin_loop();
                }
                _ => {
                    // Our `tail` was stale; reload.
                    spin_loop();
                }
            }
        }
    }

    /// Pops the next value the `take` callback accepts, skipping the ones it
    /// rejects. Must only be called by the ring's single consumer.
    pub fn pop(&self, mut take: impl FnMut(u32) -> Take) -> Option<u32> {
        let mut got = None;
        self.pop_many(1, &mut take, |v| got = Some(v));
        got
    }

    /// Pops up to `max` values the `take` callback accepts (skipping the
    /// ones it rejects), handing each to `taken`; returns how many. `head`
    /// is stored once at the end, so a batch costs the producers one cache
    /// line transfer, not one per value. Single consumer only.
    pub fn pop_many(
        &self,
        max: usize,
        mut take: impl FnMut(u32) -> Take,
        mut taken: impl FnMut(u32),
    ) -> usize {
        // Relaxed: only this consumer writes `head`.
        let start = self.head.load(Ordering::Relaxed);
        let mut h = start;
        let mut n = 0;
        while n < max {
            let slot = self.slot(h);
            // SYNC POINT (publish): Acquire pairs with the producer's
            // Release CAS; the descriptor it wrote is visible to `take`.
            let word = slot.load(Ordering::Acquire);
            if stamp_distance(word, h) != 1 {
                break;
            }
            let v = value(word);
            let verdict = take(v);
            // SYNC POINT (slot-free): Release orders our read of the value
            // (and the take) before a producer reuses the slot.
            slot.store(pack(h + self.capacity(), 0), Ordering::Release);
            h += 1;
            if verdict == Take::Taken {
                taken(v);
                n += 1;
            }
        }
        if h != start {
            // Release: recovery and reports read `head` after our frees.
            self.head.store(h, Ordering::Release);
        }
        n
    }

    /// The ring's depth at a push that took `position`, sampled: the load
    /// of `head` is a cache line the consumer keeps writing, so producers
    /// pay for it on one push in 32. High-water marks built from it are
    /// approximate.
    pub fn sampled_depth(&self, position: u64) -> Option<u64> {
        position
            .is_multiple_of(32)
            .then(|| (position + 1).saturating_sub(self.head.load(Ordering::Relaxed)))
    }

    /// Whether a value is published at `head` (a racy snapshot: it can only
    /// turn true by a push, and only the consumer makes it false).
    pub fn has_work(&self) -> bool {
        let h = self.head.load(Ordering::Relaxed);
        stamp_distance(self.slot(h).load(Ordering::Acquire), h) == 1
    }

    /// Number of values between `head` and `tail` (racy, for reports).
    pub fn len(&self) -> u64 {
        let t = self.tail.load(Ordering::Relaxed);
        let h = self.head.load(Ordering::Relaxed);
        t.saturating_sub(h)
    }

    /// Whether [`len`](Self::len) is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every value currently published, from `head` on (a
    /// racy snapshot, for reports and recovery).
    pub fn for_each_published(&self, mut f: impl FnMut(u32)) {
        let head = self.head.load(Ordering::Relaxed);
        for p in head..head + self.capacity() {
            let word = self.slot(p).load(Ordering::Acquire);
            if stamp_distance(word, p) != 1 {
                break;
            }
            f(value(word));
        }
    }

    /// Repairs `head` after its consumer died mid-pop: moves it past slots
    /// the consumer freed, and frees a slot whose value `was_taken` says the
    /// dead consumer had already taken. Only call this while no consumer is
    /// running. Returns how many positions `head` moved.
    pub fn repair_head(&self, mut was_taken: impl FnMut(u32) -> bool) -> u64 {
        let start = self.head.load(Ordering::Acquire);
        let mut h = start;
        // A batch pop frees several slots before it moves `head` once.
        while h - start < self.capacity() {
            let slot = self.slot(h);
            let word = slot.load(Ordering::Acquire);
            match stamp_distance(word, h) {
                // Freed, `head` not advanced past it.
                d if d == self.capacity() as i64 => h += 1,
                // Taken by the dead consumer, not freed yet (at most one).
                1 if was_taken(value(word)) => {
                    slot.store(pack(h + self.capacity(), 0), Ordering::Release);
                    h += 1;
                }
                _ => break,
            }
        }
        self.head.store(h, Ordering::Release);
        h - start
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ring_of(capacity: usize) -> (AtomicU64, AtomicU64, Vec<AtomicU64>) {
        let slots = (0..capacity as u64)
            .map(|i| AtomicU64::new(initial_slot(i)))
            .collect();
        (AtomicU64::new(0), AtomicU64::new(0), slots)
    }

    #[test]
    fn fifo_order_and_full_then_empty() {
        let (h, t, s) = ring_of(4);
        let r = Ring {
            head: &h,
            tail: &t,
            slots: &s,
        };
        for v in 10..14 {
            r.push(v).unwrap();
        }
        assert_eq!(r.push(99), Err(PushError::Full));
        assert_eq!(r.len(), 4);
        let mut got = vec![];
        while let Some(v) = r.pop(|_| Take::Taken) {
            got.push(v);
        }
        assert_eq!(got, vec![10, 11, 12, 13]);
        assert!(r.is_empty());
        // Many laps keep working.
        for lap in 0..1000u32 {
            r.push(lap).unwrap();
            r.push(lap + 1).unwrap();
            assert_eq!(r.pop(|_| Take::Taken), Some(lap));
            assert_eq!(r.pop(|_| Take::Taken), Some(lap + 1));
        }
    }

    #[test]
    fn skipped_values_are_dropped() {
        let (h, t, s) = ring_of(8);
        let r = Ring {
            head: &h,
            tail: &t,
            slots: &s,
        };
        for v in 0..5 {
            r.push(v).unwrap();
        }
        let got = r.pop(|v| if v < 3 { Take::Skip } else { Take::Taken });
        assert_eq!(got, Some(3));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn lagging_tail_is_helped_forward() {
        let (h, t, s) = ring_of(4);
        let r = Ring {
            head: &h,
            tail: &t,
            slots: &s,
        };
        // A producer that published position 0 and died before moving tail.
        s[0].store(pack(1, 7), Ordering::Relaxed);
        r.push(8).unwrap();
        assert_eq!(t.load(Ordering::Relaxed), 2);
        assert_eq!(r.pop(|_| Take::Taken), Some(7));
        assert_eq!(r.pop(|_| Take::Taken), Some(8));
    }

    #[test]
    fn repair_head_after_consumer_died_mid_pop() {
        let (h, t, s) = ring_of(4);
        let r = Ring {
            head: &h,
            tail: &t,
            slots: &s,
        };
        r.push(1).unwrap();
        r.push(2).unwrap();
        // Died after freeing the slot, before moving head.
        s[0].store(pack(4, 0), Ordering::Relaxed);
        assert_eq!(r.repair_head(|_| false), 1);
        assert_eq!(h.load(Ordering::Relaxed), 1);
        // Died after taking value 2, before freeing its slot.
        assert_eq!(r.repair_head(|v| v == 2), 1);
        assert_eq!(r.pop(|_| Take::Taken), None);
        // Nothing to repair on a healthy ring.
        r.push(3).unwrap();
        assert_eq!(r.repair_head(|_| false), 0);
        assert_eq!(r.pop(|_| Take::Taken), Some(3));
    }

    #[test]
    fn pop_many_takes_a_batch_and_moves_head_once() {
        let (h, t, s) = ring_of(8);
        let r = Ring {
            head: &h,
            tail: &t,
            slots: &s,
        };
        for v in 0..6 {
            assert_eq!(r.push(v), Ok(u64::from(v)));
        }
        let mut got = vec![];
        let n = r.pop_many(
            4,
            |v| if v == 1 { Take::Skip } else { Take::Taken },
            |v| got.push(v),
        );
        assert_eq!((n, got), (4, vec![0, 2, 3, 4]));
        assert_eq!(h.load(Ordering::Relaxed), 5);
        assert_eq!(r.sampled_depth(32), Some(28));
        assert_eq!(r.sampled_depth(1), None);
    }

    #[test]
    fn repair_head_after_a_batch_consumer_died_before_moving_head() {
        let (h, t, s) = ring_of(8);
        let r = Ring {
            head: &h,
            tail: &t,
            slots: &s,
        };
        for v in 0..4 {
            r.push(v).unwrap();
        }
        // Freed slots 0 and 1, took value 2 (slot not freed), then died.
        s[0].store(pack(8, 0), Ordering::Relaxed);
        s[1].store(pack(9, 0), Ordering::Relaxed);
        assert_eq!(r.repair_head(|v| v == 2), 3);
        assert_eq!(r.pop(|_| Take::Taken), Some(3));
        assert_eq!(r.pop(|_| Take::Taken), None);
    }

    #[test]
    fn stamps_wrap_around_40_bits() {
        let (h, t, s) = ring_of(4);
        let start = (1u64 << 40) - 2;
        h.store(start, Ordering::Relaxed);
        t.store(start, Ordering::Relaxed);
        for (i, slot) in s.iter().enumerate() {
            // Slot for position p is p % 4; start % 4 == 2.
            let p = start + ((i as u64 + 4 - (start % 4)) % 4);
            slot.store(initial_slot(p), Ordering::Relaxed);
        }
        let r = Ring {
            head: &h,
            tail: &t,
            slots: &s,
        };
        for v in 0..4 {
            r.push(v).unwrap();
        }
        assert_eq!(r.push(9), Err(PushError::Full));
        for v in 0..4 {
            assert_eq!(r.pop(|_| Take::Taken), Some(v));
        }
    }
}
