//! The descriptor pool: a descriptor has one holder at a time, and each
//! change of hands publishes what the last holder wrote.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use xseg_shm::pool::{self, Phase, Ticket};
use xseg_shm::ring::Take;

use crate::{model, Rings};

/// Descriptors on the heap: a ticket word each and, standing for the
/// descriptor's other fields, a plain cell that only the holder may touch.
struct Descriptors {
    tickets: Vec<AtomicU64>,
    fields: Vec<UnsafeCell<u64>>,
}

impl Descriptors {
    fn new(count: usize) -> Descriptors {
        Descriptors {
            tickets: (0..count).map(|_| AtomicU64::new(0)).collect(),
            fields: (0..count).map(|_| UnsafeCell::new(0)).collect(),
        }
    }

    /// The holder appends `digit` to descriptor `i`'s fields (a write that
    /// loom checks against every other access) and returns what it read.
    fn append(&self, i: u32, digit: u64) -> u64 {
        self.fields[i as usize].with_mut(|f| {
            // SAFETY: the pointer comes from the cell and is valid; that no
            // other thread accesses it concurrently is what the model
            // checks (loom panics if one does).
            unsafe {
                let before = *f;
                *f = before * 10 + digit;
                before
            }
        })
    }

    fn read(&self, i: u32) -> u64 {
        // SAFETY: as in `append`.
        self.fields[i as usize].with(|f| unsafe { *f })
    }
}

/// Two ports get, use and put back the only descriptor, each trying twice:
/// they never hold it together, each sees the fields the previous holder
/// wrote (`put`'s Release, `get`'s Acquire), and every get bumps the
/// serial.
#[test]
fn pool_get_is_exclusive_and_put_publishes_the_fields() {
    model(|| {
        let d = Arc::new(Descriptors::new(1));
        let users: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|port| {
                let d = d.clone();
                thread::spawn(move || {
                    for _ in 0..2 {
                        if let Some(i) = pool::get(1, 0, port, |i| &d.tickets[i as usize]) {
                            assert!(pool::peek(&d.tickets[0]).is_owned_by(port));
                            d.append(i, u64::from(port));
                            pool::put(&d.tickets[i as usize]);
                            return true;
                        }
                        thread::yield_now();
                    }
                    false
                })
            })
            .collect();
        let gets = users
            .into_iter()
            .map(|u| u.join().unwrap())
            .filter(|&got| got)
            .count() as u64;
        assert!(gets >= 1, "a get fails only while the other port holds it");
        let t = pool::peek(&d.tickets[0]);
        assert_eq!(t.phase, Some(Phase::Pooled));
        assert_eq!(t.serial, gets, "one serial per get");
        // Each holder appended its port to what the one before wrote.
        assert!(matches!((gets, d.read(0)), (1, 1 | 2) | (2, 12 | 21)));
    });
}

/// A port hands a descriptor over to a consumer's request ring (writing
/// its fields first), while the consumer's ring also holds an older entry
/// for the same descriptor and recovery of the pushing port (taken for
/// dead) tries to claim it back. Exactly one of the consumer and recovery
/// ends up holding it, or neither and it waits in the ring; the holder sees
/// the fields (`hand_over`'s Release, the claim's Acquire).
#[test]
fn pool_handed_over_descriptor_is_claimed_once_by_consumer_or_recovery() {
    model(|| {
        const PUSHER: u32 = 1;
        const CONSUMER: u32 = 2;
        let d = Arc::new(Descriptors::new(1));
        let rings = Arc::new(Rings::new(2));
        let claims = Arc::new(AtomicUsize::new(0));
        // The pusher got descriptor 0 (serial 1); an entry for it from an
        // earlier round trip is still in the consumer's ring.
        assert_eq!(pool::get(1, 0, PUSHER, |i| &d.tickets[i as usize]), Some(0));
        rings.ring().push(0).unwrap();

        let pusher = {
            let (d, rings) = (d.clone(), rings.clone());
            thread::spawn(move || {
                d.append(0, 7);
                pool::hand_over(&d.tickets[0], Phase::Queued, PUSHER, 1);
                // Room for it: the ring has two slots.
                rings.ring().push(0).unwrap();
            })
        };
        let consumer = {
            let (d, rings, claims) = (d.clone(), rings.clone(), claims.clone());
            thread::spawn(move || {
                // As `Port::take`: only a `Queued` ticket is taken.
                let take = |v: u32| {
                    let (w, t) = pool::load(&d.tickets[v as usize]);
                    if t.phase == Some(Phase::Queued)
                        && pool::claim(&d.tickets[v as usize], w, CONSUMER, t.serial)
                    {
                        Take::Taken
                    } else {
                        Take::Skip
                    }
                };
                for _ in 0..2 {
                    if let Some(v) = rings.ring().pop(take) {
                        claims.fetch_add(1, Ordering::Relaxed);
                        assert_eq!(d.append(v, 8), 7);
                        return;
                    }
                    thread::yield_now();
                }
            })
        };
        let recovery = {
            let (d, claims) = (d.clone(), claims.clone());
            thread::spawn(move || {
                // As `cleanup` for a descriptor in a ring phase whose pusher
                // is the recovered port (its ring check is left out: the
                // claim must be exclusive without it).
                let (w, t) = pool::load(&d.tickets[0]);
                if t.phase == Some(Phase::Queued)
                    && t.holder == PUSHER
                    && pool::claim(&d.tickets[0], w, PUSHER, t.serial)
                {
                    claims.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(d.append(0, 9), 7);
                }
            })
        };
        for t in [pusher, consumer, recovery] {
            t.join().unwrap();
        }
        let t = pool::peek(&d.tickets[0]);
        match claims.load(Ordering::Relaxed) {
            1 => assert_eq!(t.phase, Some(Phase::Owned)),
            0 => {
                // Nobody claimed it: it is still in the ring for the consumer.
                assert_eq!(
                    t,
                    Ticket {
                        phase: Some(Phase::Queued),
                        holder: PUSHER,
                        serial: 1
                    }
                );
                let mut taken = false;
                while let Some(v) = rings.ring().pop(|v| {
                    let (w, t) = pool::load(&d.tickets[v as usize]);
                    if t.phase == Some(Phase::Queued)
                        && pool::claim(&d.tickets[v as usize], w, CONSUMER, t.serial)
                    {
                        Take::Taken
                    } else {
                        Take::Skip
                    }
                }) {
                    taken = true;
                    assert_eq!(d.append(v, 8), 7);
                }
                assert!(taken);
            }
            n => panic!("{n} holders"),
        }
    });
}
