//! Bounded lock-free ring of 24-bit indexes, many producers, one consumer.
//!
//! # Algorithm
//!
//! A ring of `capacity` (a power of two) slots, each one `AtomicU64` word
//! that packs a 40-bit *stamp* and a 24-bit *value* (a request index). Two
//! free-running 64-bit positions, `head` (next to pop) and `tail` (next to
//! push), live on separate cache lines. Position `p` uses slot
//! `p % capacity`; the slot's stamp tells its state, in the manner of
//! Dmitry Vyukov's bounded queue and crossbeam's `ArrayQueue`:
//!
//! | stamp of slot `p % capacity` | meaning for position `p` |
//! |---|---|
//! | `p` (first lap only) | never used: free |
//! | `p + 1` | published: holds the value of position `p` |
//! | `p + 1 - capacity` | holds position `p - capacity`: free once `head > p - capacity` |
//!
//! **The producer linearises with one CAS on the slot word.** Vyukov's
//! producer first moves `tail` with a CAS and then writes the slot; a
//! producer killed between the two leaves a claimed slot that is never
//! published, and the consumer waits on it forever. Here the producer
//! publishes stamp and value together with one CAS on the slot and only
//! then moves `tail`, which any other producer may do for it ("helping").
//! A producer that dies at any instruction leaves the ring either without
//! its value or with it fully published: there is no half-published state to
//! skip, and the ring cannot wedge.
//!
//! **The consumer never writes a slot.** It reads published slots, lets the
//! caller *take* each value (the port validates and claims the request
//! descriptor with a CAS on its ticket), and stores `head` once per batch.
//! Whether the previous lap's value was consumed is read from `head`, not
//! from a "freed" stamp: a consumer that wrote slots would pull each slot's
//! cache line back from the producers on every pop, and measured here that
//! costed more than everything else in a batch. Producers keep a copy of
//! `head` (`head_seen`, on the tail's cache line) and read the consumer's
//! line only when that copy says the ring is full: once per lap, not once
//! per push.
//!
//! `head` is written only by the consumer, or by crash recovery once it is
//! dead. A consumer killed in the middle of a batch has taken some values
//! without storing `head`; [`Ring::repair_head`] moves `head` past the ones
//! the caller recognises as taken (their descriptors are held by the dead
//! port). Any value it leaves behind is stale and the next consumer's take
//! skips it, as it skips values recovery claimed.
//!
//! Stamps are 40 bits, so a producer would have to be descheduled while
//! 2^40 (about 10^12) values pass through one ring for its stale CAS to
//! succeed; at 3 M values/s that is four days.

use crate::sync::{spin_loop, AtomicU64, Ordering};

/// Bits of the value part of a slot word.
pub const VALUE_BITS: u32 = 24;
/// Attempts after which a push gives up (each failed attempt means another
/// producer made progress, so only corruption reaches this).
const MAX_PUSH_ATTEMPTS: u32 = 1 << 20;
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
    /// The value does not fit a slot's 24 bits (it would overwrite the
    /// stamp); nothing was pushed.
    OutOfRange,
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
    /// The producers' copy of `head`, never ahead of it (kept on the tail's
    /// cache line so a push reads one line, not the consumer's).
    pub head_seen: &'a AtomicU64,
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

    /// Whether the value of position `t - capacity` was popped, so position
    /// `t` may reuse its slot.
    fn lapped_slot_is_free(&self, t: u64) -> bool {
        let need = t.wrapping_add(1).saturating_sub(self.capacity());
        // SYNC POINT (consumed): Acquire, through the copy's release
        // sequence, pairs with the consumer's Release store of `head`: its
        // read of the old value is done before we overwrite the slot.
        if self.head_seen.load(Ordering::Acquire) >= need {
            return true;
        }
        let h = self.head.load(Ordering::Acquire);
        // AcqRel: passes on what we acquired from `head` to producers that
        // read the copy. `fetch_max`, so the copy never moves back.
        self.head_seen.fetch_max(h, Ordering::AcqRel);
        h >= need
    }

    /// Publishes `value`; returns the position it took (see
    /// [`sampled_depth`](Self::sampled_depth)).
    pub fn push(&self, value: u32) -> Result<u64, PushError> {
        // In every build: a value past 24 bits would spill into the stamp
        // and publish garbage for another position.
        if value > MAX_VALUE {
            return Err(PushError::OutOfRange);
        }
        debug_assert!(self.slots.len().is_power_of_two());
        let lapped = 1 - self.capacity() as i64;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if attempts > MAX_PUSH_ATTEMPTS {
                // Only a corrupt `tail` (written by a misbehaving peer) keeps
                // every attempt failing; report it as full, not hang.
                return Err(PushError::Full);
            }
            // Relaxed: `tail` is only a hint; the slot CAS below decides.
            let t = self.tail.load(Ordering::Relaxed);
            let slot = self.slot(t);
            // Relaxed: the CAS below re-checks the word; what must be
            // ordered before it is the consumer's read (see `consumed`).
            let word = slot.load(Ordering::Relaxed);
            match stamp_distance(word, t) {
                d if d == 0 || d == lapped => {
                    if d == lapped && !self.lapped_slot_is_free(t) {
                        // Full, unless `tail` moved meanwhile.
                        if self.tail.load(Ordering::Relaxed) == t {
                            return Err(PushError::Full);
                        }
                        spin_loop();
                        continue;
                    }
                    // SYNC POINT (publish): Release makes everything the
                    // producer wrote before (the request descriptor) visible
                    // to the consumer that loads this slot with Acquire.
                    if slot
                        .compare_exchange(
                            word,
                            pack(t.wrapping_add(1), value),
                            Ordering::Release,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        // Relaxed: moving `tail` publishes nothing; a failure
                        // means another producer already helped.
                        let _ = self.tail.compare_exchange(
                            t,
                            t.wrapping_add(1),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        return Ok(t);
                    }
                }
                1 => {
                    // Published for `t` by a producer that has not moved
                    // `tail` yet (or died): help it.
                    let _ = self.tail.compare_exchange(
                        t,
                        t.wrapping_add(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
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
    /// is stored once at the end, so producers see one cache line move per
    /// batch, not one per value. Single consumer only.
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
            // SYNC POINT (publish): Acquire pairs with the producer's
            // Release CAS; the descriptor it wrote is visible to `take`.
            let word = self.slot(h).load(Ordering::Acquire);
            if stamp_distance(word, h) != 1 {
                break;
            }
            h = h.wrapping_add(1);
            let v = value(word);
            if take(v) == Take::Taken {
                taken(v);
                n += 1;
            }
        }
        if h != start {
            // SYNC POINT (consumed): Release orders our reads of the
            // values (and the takes) before producers reuse their slots.
            self.head.store(h, Ordering::Release);
        }
        n
    }

    /// The ring's depth at a push that took `position`, sampled: the load
    /// of `head` is a cache line the consumer keeps writing, so producers
    /// pay for it on one push in 32. High-water marks built from it are
    /// approximate.
    pub fn sampled_depth(&self, position: u64) -> Option<u64> {
        position.is_multiple_of(32).then(|| {
            position
                .wrapping_add(1)
                .saturating_sub(self.head.load(Ordering::Relaxed))
        })
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
        for k in 0..self.capacity() {
            let p = head.wrapping_add(k);
            let word = self.slot(p).load(Ordering::Acquire);
            if stamp_distance(word, p) != 1 {
                break;
            }
            f(value(word));
        }
    }

    /// Repairs `head` after its consumer died in the middle of a batch:
    /// moves it past published values that `was_taken` says the dead
    /// consumer had already taken. Only call this while no consumer is
    /// running. Returns how many positions `head` moved, or `None` (and
    /// `head` is left alone) if `head` moved meanwhile: then a consumer
    /// does run, and the caller must stop.
    pub fn repair_head(&self, mut was_taken: impl FnMut(u32) -> bool) -> Option<u64> {
        let start = self.head.load(Ordering::Acquire);
        let mut h = start;
        while h.wrapping_sub(start) < self.capacity() {
            let word = self.slot(h).load(Ordering::Acquire);
            if stamp_distance(word, h) != 1 || !was_taken(value(word)) {
                break;
            }
            h = h.wrapping_add(1);
        }
        // SYNC POINT (consumed): Release, as a consumer's store of `head`.
        // A CAS from the head we started from, so a consumer that runs
        // after all is never moved back.
        if h != start
            && self
                .head
                .compare_exchange(start, h, Ordering::Release, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        Some(h.wrapping_sub(start))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Store {
        head: AtomicU64,
        tail: AtomicU64,
        head_seen: AtomicU64,
        slots: Vec<AtomicU64>,
    }

    impl Store {
        fn new(capacity: u64) -> Store {
            Store::starting_at(capacity, 0)
        }

        /// A ring whose positions start at `start` (as after many laps).
        fn starting_at(capacity: u64, start: u64) -> Store {
            let slots = (0..capacity)
                .map(|i| {
                    // The last position that used slot i before `start`, or
                    // i itself if none did.
                    let p = start + ((i + capacity - start % capacity) % capacity);
                    AtomicU64::new(if p >= capacity {
                        pack(p + 1 - capacity, 0)
                    } else {
                        initial_slot(p)
                    })
                })
                .collect();
            Store {
                head: AtomicU64::new(start),
                tail: AtomicU64::new(start),
                head_seen: AtomicU64::new(start),
                slots,
            }
        }

        fn ring(&self) -> Ring<'_> {
            Ring {
                head: &self.head,
                tail: &self.tail,
                head_seen: &self.head_seen,
                slots: &self.slots,
            }
        }
    }

    #[test]
    fn fifo_order_and_full_then_empty() {
        let st = Store::new(4);
        let r = st.ring();
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
        // Many laps keep working, and full is detected on every lap.
        for lap in 0..1000u32 {
            for k in 0..4 {
                r.push(lap + k).unwrap();
            }
            assert_eq!(r.push(7), Err(PushError::Full));
            for k in 0..4 {
                assert_eq!(r.pop(|_| Take::Taken), Some(lap + k));
            }
        }
    }

    #[test]
    fn a_value_past_24_bits_is_refused_in_every_build() {
        let st = Store::new(4);
        let r = st.ring();
        assert_eq!(r.push(MAX_VALUE + 1), Err(PushError::OutOfRange));
        assert_eq!(r.push(u32::MAX), Err(PushError::OutOfRange));
        assert!(r.is_empty() && !r.has_work(), "nothing published");
        r.push(MAX_VALUE).unwrap();
        assert_eq!(r.pop(|_| Take::Taken), Some(MAX_VALUE));
    }

    #[test]
    fn the_consumer_never_writes_a_slot() {
        let st = Store::new(8);
        let r = st.ring();
        r.push(5).unwrap();
        let before: Vec<u64> = st.slots.iter().map(|s| s.load(Ordering::Relaxed)).collect();
        assert_eq!(r.pop(|_| Take::Taken), Some(5));
        let after: Vec<u64> = st.slots.iter().map(|s| s.load(Ordering::Relaxed)).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn skipped_values_are_dropped() {
        let st = Store::new(8);
        let r = st.ring();
        for v in 0..5 {
            r.push(v).unwrap();
        }
        let got = r.pop(|v| if v < 3 { Take::Skip } else { Take::Taken });
        assert_eq!(got, Some(3));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn lagging_tail_is_helped_forward() {
        let st = Store::new(4);
        let r = st.ring();
        // A producer that published position 0 and died before moving tail.
        st.slots[0].store(pack(1, 7), Ordering::Relaxed);
        r.push(8).unwrap();
        assert_eq!(st.tail.load(Ordering::Relaxed), 2);
        assert_eq!(r.pop(|_| Take::Taken), Some(7));
        assert_eq!(r.pop(|_| Take::Taken), Some(8));
    }

    #[test]
    fn pop_many_takes_a_batch_and_moves_head_once() {
        let st = Store::new(8);
        let r = st.ring();
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
        assert_eq!(st.head.load(Ordering::Relaxed), 5);
        assert_eq!(r.sampled_depth(32), Some(28));
        assert_eq!(r.sampled_depth(1), None);
    }

    #[test]
    fn repair_head_moves_past_values_a_dead_consumer_had_taken() {
        let st = Store::new(8);
        let r = st.ring();
        for v in 0..4 {
            r.push(v).unwrap();
        }
        // The dead consumer took 0, 1 and 2 but never stored head.
        assert_eq!(r.repair_head(|v| v <= 2), Some(3));
        assert_eq!(r.pop(|_| Take::Taken), Some(3));
        assert_eq!(r.pop(|_| Take::Taken), None);
        // Nothing to repair on a healthy ring.
        r.push(9).unwrap();
        assert_eq!(r.repair_head(|_| false), Some(0));
        assert_eq!(r.pop(|_| Take::Taken), Some(9));
    }

    #[test]
    fn producers_reread_head_only_when_their_copy_says_full() {
        let st = Store::new(4);
        let r = st.ring();
        for v in 0..4 {
            r.push(v).unwrap();
        }
        for _ in 0..4 {
            r.pop(|_| Take::Taken).unwrap();
        }
        assert_eq!(
            st.head_seen.load(Ordering::Relaxed),
            0,
            "not read while not full"
        );
        r.push(4).unwrap();
        assert_eq!(
            st.head_seen.load(Ordering::Relaxed),
            4,
            "refreshed at the lap"
        );
    }

    #[test]
    fn stamps_wrap_around_40_bits() {
        let st = Store::starting_at(4, (1u64 << 40) - 2);
        let r = st.ring();
        for lap in 0..3 {
            for v in 0..4 {
                r.push(v + lap).unwrap();
            }
            assert_eq!(r.push(9), Err(PushError::Full));
            for v in 0..4 {
                assert_eq!(r.pop(|_| Take::Taken), Some(v + lap));
            }
        }
    }
}
