//! The ring: many producers, one consumer, exactly once; a producer dead
//! mid-push, batched pops with skipped entries, and repairing `head` after
//! a dead consumer.

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom::thread;

use xseg_shm::ring::{PushError, Take, VALUE_BITS};

use crate::{model, Rings};

/// Two producers and the consumer race on a ring of two slots (so laps,
/// helping and "full" happen): every value arrives exactly once, in
/// per-producer order. Loops are bounded so the model stays finite: a
/// producer that finds the ring full hands its remaining values back, and
/// the consumer makes a fixed number of attempts before it joins them.
#[test]
fn ring_two_producers_one_consumer_exactly_once() {
    model(|| {
        let rings = Arc::new(Rings::new(2));
        let producers: Vec<_> = [vec![1u32, 2], vec![11]]
            .into_iter()
            .map(|values| {
                let rings = rings.clone();
                thread::spawn(move || {
                    let mut left = values.into_iter();
                    for v in left.by_ref() {
                        if let Err(PushError::Full) = rings.ring().push(v) {
                            return std::iter::once(v).chain(left).collect::<Vec<_>>();
                        }
                    }
                    Vec::new()
                })
            })
            .collect();
        let mut got = Vec::new();
        for _ in 0..2 {
            if let Some(v) = rings.ring().pop(|_| Take::Taken) {
                got.push(v);
            }
        }
        let leftovers: Vec<Vec<u32>> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        while let Some(v) = rings.ring().pop(|_| Take::Taken) {
            got.push(v);
        }
        for v in leftovers.into_iter().flatten() {
            rings.ring().push(v).unwrap();
            got.push(rings.ring().pop(|_| Take::Taken).unwrap());
        }
        assert_eq!(rings.ring().pop(|_| Take::Taken), None);
        let a: Vec<_> = got.iter().copied().filter(|&v| v < 10).collect();
        let b: Vec<_> = got.iter().copied().filter(|&v| v > 10).collect();
        assert_eq!(a, vec![1, 2]);
        assert_eq!(b, vec![11]);
    });
}

/// A producer died right after publishing its value in slot 0 (the slot
/// CAS done, `tail` not moved). A live producer and the consumer run: the
/// live producer helps `tail` past the dead one's slot, and both values
/// arrive exactly once, the dead one's first.
#[test]
fn ring_a_producer_dead_mid_push_neither_wedges_nor_duplicates() {
    model(|| {
        let rings = Arc::new(Rings::new(2));
        rings.slots[0].store((1 << VALUE_BITS) | 5, Ordering::Relaxed);
        let producer = {
            let rings = rings.clone();
            thread::spawn(move || rings.ring().push(6).unwrap())
        };
        let mut got = Vec::new();
        if let Some(v) = rings.ring().pop(|_| Take::Taken) {
            got.push(v);
        }
        assert_eq!(
            producer.join().unwrap(),
            1,
            "the dead one's position was skipped"
        );
        while let Some(v) = rings.ring().pop(|_| Take::Taken) {
            got.push(v);
        }
        assert_eq!(got, vec![5, 6]);
        assert_eq!(rings.head.load(Ordering::Relaxed), 2);
    });
}

/// A batched pop that skips the values its take rejects runs against a
/// producer: each accepted value is handed over once, no rejected one ever
/// is, `head` moves once per batch past everything it looked at, and what
/// it did not reach is popped later.
#[test]
fn ring_batched_pops_with_skipped_entries_hand_each_taken_value_over_once() {
    model(|| {
        let rings = Arc::new(Rings::new(4));
        rings.ring().push(1).unwrap();
        rings.ring().push(2).unwrap();
        let producer = {
            let rings = rings.clone();
            thread::spawn(move || rings.ring().push(3).unwrap())
        };
        let mut got = Vec::new();
        let odd = |v: u32| if v % 2 == 1 { Take::Taken } else { Take::Skip };
        rings.ring().pop_many(4, odd, |v| got.push(v));
        producer.join().unwrap();
        rings.ring().pop_many(4, odd, |v| got.push(v));
        assert_eq!(got, vec![1, 3]);
        assert_eq!(rings.head.load(Ordering::Relaxed), 3);
        assert!(!rings.ring().has_work());
    });
}

/// The consumer died in the middle of a batch: it had taken value 1 (its
/// descriptor says so) without storing `head`. Recovery repairs `head`
/// while a producer keeps pushing to the ring: `head` moves past 1 only
/// (by a CAS, never backwards), and the next consumer pops 2 and 3 once.
#[test]
fn ring_repair_head_after_a_dead_consumer_races_a_producer() {
    model(|| {
        let rings = Arc::new(Rings::new(4));
        rings.ring().push(1).unwrap();
        rings.ring().push(2).unwrap();
        let producer = {
            let rings = rings.clone();
            thread::spawn(move || rings.ring().push(3).unwrap())
        };
        assert_eq!(rings.ring().repair_head(|v| v == 1), Some(1));
        producer.join().unwrap();
        let mut got = Vec::new();
        while let Some(v) = rings.ring().pop(|_| Take::Taken) {
            got.push(v);
        }
        assert_eq!(got, vec![2, 3]);
    });
}
