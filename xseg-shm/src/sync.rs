//! The one place atomics come from, so `loom` can replace them.
//!
//! Under `--cfg loom` the ring and doorbell algorithms run against loom's
//! model-checked atomics; in every other build they use `core`'s. Only the
//! algorithm modules (`ring`, `doorbell`) take their atomics from here: the
//! segment layout types always use `core` atomics, because their memory
//! layout is part of the shared-memory format.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Busy-wait hint; under loom, a yield to the model scheduler.
#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;

#[cfg(not(loom))]
pub(crate) use core::hint::spin_loop;
