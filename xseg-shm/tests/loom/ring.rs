//! The ring: many producers, one consumer, exactly once.

use loom::sync::Arc;
use loom::thread;

use xseg_shm::ring::{PushError, Take};

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
