//! Model checks of the transport's building blocks under every
//! interleaving loom explores (within a preemption bound). Run with:
//! `RUSTFLAGS="--cfg loom" cargo test -p xseg-shm --test loom --release`.
//!
//! Each building block takes its atomics from the crate's `sync` module,
//! which hands out loom's under `--cfg loom`, so the models run the code
//! the segment runs, on words that live on the heap. Where a model checks
//! that a hand-over publishes data (a descriptor's fields, a buffer's
//! bytes, a port's cleanup), the data is a `loom::cell::UnsafeCell`: loom
//! fails the model on any access to it that the algorithm's
//! synchronisation does not order after the previous one, and on two
//! holders touching it at once.
//!
//! - `ring`: the ring (also a producer dead mid-push, batched pops with
//!   skipped entries, `repair_head` racing a producer) and the doorbell
//!   (also several sleep cycles);
//! - `pool`: the descriptor pool (get and put, hand-over and take);
//! - `buffers`: the buffer allocator;
//! - `binding`: binding a port, the recovery claim and the owner's unbind,
//!   and the recovery claim judged by pid and start time (issue 19).
#![cfg(loom)]
// The models build their words from loom's atomics directly, and loom's
// `Ordering` is `std`'s: the crate's rule against `std` atomics (its
// `clippy.toml`) is for the transport's own code.
#![allow(clippy::disallowed_types)]

mod binding;
mod buffers;
mod doorbell;
mod pool;
mod ring;

use loom::sync::atomic::AtomicU64;
use xseg_shm::ring::{initial_slot, Ring};

/// Runs `f` under loom with the preemption bound every model here uses.
pub fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // Bounded preemptions keep the spin-and-retry loops tractable; most
    // concurrency bugs need very few (the loom docs suggest 2–3).
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// A ring's words on the heap.
pub struct Rings {
    pub head: AtomicU64,
    pub tail: AtomicU64,
    pub head_seen: AtomicU64,
    pub slots: Vec<AtomicU64>,
}

impl Rings {
    pub fn new(capacity: u64) -> Rings {
        Rings {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            head_seen: AtomicU64::new(0),
            slots: (0..capacity)
                .map(|i| AtomicU64::new(initial_slot(i)))
                .collect(),
        }
    }

    pub fn ring(&self) -> Ring<'_> {
        Ring {
            head: &self.head,
            tail: &self.tail,
            head_seen: &self.head_seen,
            slots: &self.slots,
        }
    }
}
