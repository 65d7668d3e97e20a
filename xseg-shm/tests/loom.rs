//! Model checks of the ring and the doorbell under every interleaving loom
//! explores. Run with:
//! `RUSTFLAGS="--cfg loom" cargo test -p xseg-shm --test loom --release`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use xseg_shm::doorbell::{Doorbell, Futex};
use xseg_shm::ring::{initial_slot, PushError, Ring, Take};

struct Rings {
    head: AtomicU64,
    tail: AtomicU64,
    head_seen: AtomicU64,
    slots: Vec<AtomicU64>,
}

impl Rings {
    fn new(capacity: u64) -> Rings {
        Rings {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            head_seen: AtomicU64::new(0),
            slots: (0..capacity)
                .map(|i| AtomicU64::new(initial_slot(i)))
                .collect(),
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

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // Bounded preemptions keep the spin-and-retry loops tractable; most
    // concurrency bugs need very few (the loom docs suggest 2–3).
    builder.preemption_bound = Some(3);
    builder.check(f);
}

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

/// A model of the kernel futex: the value check and the sleep are atomic
/// with respect to wakes, as the kernel's hash-bucket lock makes them.
struct ModelFutex {
    lock: Mutex<()>,
    cond: Condvar,
}

impl Futex for ModelFutex {
    fn wait(&self, word: &AtomicU32, expected: u32) {
        let guard = self.lock.lock().unwrap();
        if word.load(Ordering::SeqCst) == expected {
            // No timeout: a lost wake-up shows up as a deadlock.
            drop(self.cond.wait(guard).unwrap());
        }
    }
    fn wake(&self, _word: &AtomicU32) {
        let _guard = self.lock.lock().unwrap();
        self.cond.notify_all();
    }
}

/// The consumer sleeps until the producer's published work is visible;
/// loom fails the model on a deadlock, i.e. a lost wake-up.
#[test]
fn doorbell_never_loses_a_wakeup() {
    model(|| {
        let rings = Arc::new(Rings::new(2));
        let bell = Arc::new(Doorbell::new());
        let futex = Arc::new(ModelFutex {
            lock: Mutex::new(()),
            cond: Condvar::new(),
        });
        let producer = {
            let (rings, bell, futex) = (rings.clone(), bell.clone(), futex.clone());
            thread::spawn(move || {
                rings.ring().push(7).unwrap();
                bell.ring(&*futex);
            })
        };
        let got = loop {
            if let Some(v) = rings.ring().pop(|_| Take::Taken) {
                break v;
            }
            bell.sleep_unless(&*futex, || rings.ring().has_work());
        };
        assert_eq!(got, 7);
        producer.join().unwrap();
    });
}
