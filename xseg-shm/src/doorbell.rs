//! The doorbell: how a sleeping consumer is woken without lost wake-ups,
//! and without a syscall for the producer while the consumer is awake.
//!
//! Each port has one [`Doorbell`]: a futex word (`bell`) and a `sleeping`
//! flag. The protocol is Dekker's: each side stores, fences, then loads the
//! other side's word.
//!
//! ```text
//! consumer (about to sleep)           producer (after publishing work)
//!   seq = bell                          publish (ring push, Release)
//!   sleeping = 1                        fence(SeqCst)
//!   fence(SeqCst)                       if sleeping == 1:
//!   if work published: cancel             bell += 1
//!   else futex_wait(bell, seq)            futex_wake(bell)
//!   sleeping = 0
//! ```
//!
//! Why no wake-up is lost: by the two SeqCst fences, either the producer
//! sees `sleeping == 1` or the consumer sees the published work. In the
//! first case the producer increments `bell`; if that happens before the
//! consumer's `futex_wait`, the kernel finds `bell != seq` and returns at
//! once; if after, the wake reaches the sleeper. `bell` is read *before*
//! `sleeping` is set, so an increment can never fall between the read and
//! the wait unnoticed. The `loom` model in `tests/loom/` checks this.
//!
//! The futex itself is passed in (`Futex`), so the same code runs on the
//! kernel's futex between processes and on a model futex under loom. The
//! word is shared between processes, so the kernel futex must not use
//! `FUTEX_PRIVATE_FLAG`.

use crate::sync::{fence, AtomicU32, Ordering};

/// Wait and wake on a 32-bit word, as the kernel's futex does.
pub trait Futex {
    /// Sleeps while `word == expected`, until woken or a timeout; may
    /// return spuriously.
    fn wait(&self, word: &AtomicU32, expected: u32);
    /// Wakes every sleeper on `word`.
    fn wake(&self, word: &AtomicU32);
}

/// A port's doorbell (lives in shared memory; see the layout table).
#[repr(C)]
pub struct Doorbell {
    /// The futex word; incremented by each wake that finds a sleeper.
    pub bell: AtomicU32,
    /// 1 while the consumer announced it is going to sleep.
    pub sleeping: AtomicU32,
}

impl Doorbell {
    /// A doorbell nobody sleeps on (for model tests; the segment's doorbells
    /// start as zeroed memory, which is the same state).
    #[cfg(loom)]
    pub fn new() -> Self {
        Doorbell {
            bell: AtomicU32::new(0),
            sleeping: AtomicU32::new(0),
        }
    }

    /// Consumer side: sleeps unless `has_work` sees work after the sleep
    /// was announced. Returns whether it actually waited.
    pub fn sleep_unless(&self, futex: &impl Futex, has_work: impl Fn() -> bool) -> bool {
        // SeqCst on both: the read of `bell` must come before the announce.
        let seq = self.bell.load(Ordering::SeqCst);
        self.sleeping.store(1, Ordering::SeqCst);
        // SYNC POINT (doorbell): pairs with the fence in `ring`; after it,
        // either we see the producer's work or it sees `sleeping == 1`.
        fence(Ordering::SeqCst);
        let waited = if has_work() {
            false
        } else {
            futex.wait(&self.bell, seq);
            true
        };
        // Relaxed: a stale 1 only costs a producer one needless wake.
        self.sleeping.store(0, Ordering::Relaxed);
        waited
    }

    /// Producer side, after publishing: wakes the consumer if it announced
    /// sleep. Returns whether a wake was sent.
    pub fn ring(&self, futex: &impl Futex) -> bool {
        // SYNC POINT (doorbell): pairs with the fence in `sleep_unless`.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) != 0 {
            self.bell.fetch_add(1, Ordering::SeqCst);
            futex.wake(&self.bell);
            true
        } else {
            false
        }
    }
}

#[cfg(not(loom))]
impl Futex for crate::sys::KernelFutex {
    fn wait(&self, word: &AtomicU32, expected: u32) {
        crate::sys::futex_wait(word, expected, self.timeout);
    }

    fn wake(&self, word: &AtomicU32) {
        crate::sys::futex_wake(word);
    }
}
