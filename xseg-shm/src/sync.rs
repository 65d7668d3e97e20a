//! The one place atomics come from, so `loom` can replace them.
//!
//! Two families:
//!
//! - **Algorithm atomics** (`AtomicU32`, `AtomicU64`, `AtomicUsize`,
//!   `Ordering`, [`fence`], [`spin_loop`]): loom's model-checked ones under
//!   `--cfg loom`, `core`'s in every other build. The building blocks
//!   (`ring`, `doorbell`, `binding`, `pool`, `buffers`) use nothing else,
//!   so the models in `tests/loom/` run them unchanged.
//! - **Format atomics** ([`shm`]): always `core`'s, because their size and
//!   alignment are part of the shared-memory format. The segment layout
//!   types and the segment's views of mapped memory use them. Outside loom
//!   both families are the same types, so a building block works on words
//!   that live in the segment; under loom the modules that hold format
//!   atomics are not compiled at all.
//!
//! They are type aliases and wrapper functions rather than re-exports on
//! purpose: `xseg-shm/clippy.toml` bans `core`'s (= `std`'s) atomic types
//! and fences everywhere in the crate (`disallowed_types`,
//! `disallowed_methods`), and an alias is a path of its own that the lint
//! does not see through. So this file is the only one with an `allow`, and
//! an atomic taken from `std` anywhere else fails `cargo clippy`.

#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

#[cfg(loom)]
mod imp {
    pub(crate) type AtomicU32 = loom::sync::atomic::AtomicU32;
    pub(crate) type AtomicU64 = loom::sync::atomic::AtomicU64;
    #[allow(dead_code)]
    pub(crate) type AtomicUsize = loom::sync::atomic::AtomicUsize;
    pub(crate) type Ordering = loom::sync::atomic::Ordering;

    /// An atomic fence (loom's, so the model sees it).
    #[inline(always)]
    pub(crate) fn fence(order: Ordering) {
        loom::sync::atomic::fence(order);
    }

    /// Busy-wait hint; under loom, a yield to the model scheduler.
    #[inline(always)]
    pub(crate) fn spin_loop() {
        loom::hint::spin_loop();
    }
}

#[cfg(not(loom))]
mod imp {
    pub(crate) type AtomicU32 = core::sync::atomic::AtomicU32;
    pub(crate) type AtomicU64 = core::sync::atomic::AtomicU64;
    pub(crate) type AtomicUsize = core::sync::atomic::AtomicUsize;
    pub(crate) type Ordering = core::sync::atomic::Ordering;

    /// An atomic fence.
    #[inline(always)]
    pub(crate) fn fence(order: Ordering) {
        core::sync::atomic::fence(order);
    }

    /// Busy-wait hint.
    #[inline(always)]
    pub(crate) fn spin_loop() {
        core::hint::spin_loop();
    }
}

// Under loom, only the port (not built then) counts with `AtomicUsize`.
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use imp::{fence, spin_loop, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Atomics of the segment format: `core`'s, loom or not (see the module
/// docs).
#[cfg(not(loom))]
pub(crate) mod shm {
    /// A 32-bit word of the segment.
    pub(crate) type AtomicU32 = core::sync::atomic::AtomicU32;
    /// A 64-bit word of the segment.
    pub(crate) type AtomicU64 = core::sync::atomic::AtomicU64;
}
