//! The doorbell: no lost wake-up.

use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use xseg_shm::doorbell::{Doorbell, Futex};
use xseg_shm::ring::Take;

use crate::{model, Rings};

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

/// Two values pushed one after the other, each followed by a ring: the
/// consumer sleeps as often as it finds the ring empty (several sleep
/// cycles, announcing and withdrawing its sleep each time) and never
/// misses a wake-up.
#[test]
fn doorbell_never_loses_a_wakeup_over_several_sleeps() {
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
                for v in [7, 8] {
                    rings.ring().push(v).unwrap();
                    bell.ring(&*futex);
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < 2 {
            if let Some(v) = rings.ring().pop(|_| Take::Taken) {
                got.push(v);
                continue;
            }
            bell.sleep_unless(&*futex, || rings.ring().has_work());
        }
        assert_eq!(got, vec![7, 8]);
        producer.join().unwrap();
    });
}
