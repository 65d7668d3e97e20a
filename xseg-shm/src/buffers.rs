//! The buffer allocator: data buffers in size classes, each with an owner
//! word naming the descriptor it belongs to.
//!
//! Class `c` holds buffers of `4 KiB << c` bytes (see the layout table).
//! Each buffer has a 32-bit owner word: 0 when free, `d + 1` when owned by
//! descriptor `d`. A descriptor names its buffer by a *handle*,
//! `class << 24 | index`, or [`NO_BUFFER`].
//!
//! | step | owner word | function |
//! |---|---|---|
//! | allocate for descriptor `d` | `0` → `d + 1` (CAS) | [`grab`] |
//! | free | `d + 1` → `0` (CAS from what the caller expects) | [`release`] |
//!
//! The owner word, not the handle, decides: a holder frees a buffer by
//! first clearing its handle and then releasing the owner word (in that
//! order, see `put::detach_and_release_buffer`), and looks a buffer up only
//! if its owner word names the holder's descriptor ([`owned_by`]), so a
//! handle left stale by a holder killed between the two never reaches a
//! buffer someone else owns. Recovery frees the buffers of a dead port's
//! descriptors that lost their handle.
//!
//! The functions take owner words wherever they live (the segment, or for
//! the loom models the heap); the buffer bytes are the owner's, published
//! by the Release of [`release`] to the Acquire of the next [`grab`].

use crate::sync::{AtomicU32, Ordering};

/// No buffer attached (the handle of a descriptor without one).
pub const NO_BUFFER: u32 = u32::MAX;

/// Buffer handle: class in the top 8 bits, index in the low 24.
pub fn handle(class: usize, index: u32) -> u32 {
    ((class as u32) << 24) | index
}

/// Decodes a handle into (class, index); `None` for [`NO_BUFFER`]. The
/// result comes from shared memory: look it up bounds-checked.
pub fn decode(h: u32) -> Option<(usize, u32)> {
    (h != NO_BUFFER).then_some(((h >> 24) as usize, h & 0xFF_FFFF))
}

/// Allocates a free buffer of one class to descriptor `req`: scans the
/// class's `owners` from `start` on (wrapping) and claims the first free
/// one. Returns its index.
pub fn grab(owners: &[AtomicU32], start: u32, req: u32) -> Option<u32> {
    let count = owners.len() as u32;
    for k in 0..count {
        let i = (start + k) % count;
        let owner = &owners[i as usize];
        // Relaxed load: a candidate only; the CAS re-checks.
        // SYNC POINT (buffer free): the CAS's Acquire pairs with the
        // Release that freed the buffer; its previous user is done writing
        // it.
        if owner.load(Ordering::Relaxed) == 0
            && owner
                .compare_exchange(0, req + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return Some(i);
        }
    }
    None
}

/// Whether descriptor `req` owns the buffer of this owner word.
pub fn owned_by(owner: &AtomicU32, req: u32) -> bool {
    // SYNC POINT (buffer free): Acquire, as a grab's, so bytes a previous
    // owner wrote are not read after the word says they are ours.
    owner.load(Ordering::Acquire) == req + 1
}

/// The descriptor owning a buffer (it may be out of range if the word is
/// corrupt), or `None` if the buffer is free.
pub fn owner(owner: &AtomicU32) -> Option<u32> {
    // SYNC POINT (buffer free): Acquire, as in `owned_by`.
    owner.load(Ordering::Acquire).checked_sub(1)
}

/// Whether the buffer is free now (a racy snapshot, for reports).
pub fn is_free(owner: &AtomicU32) -> bool {
    // Relaxed: a report only counts.
    owner.load(Ordering::Relaxed) == 0
}

/// Frees a buffer if descriptor `req` owns it; `false` if not (then it is
/// left alone).
pub fn release(owner: &AtomicU32, req: u32) -> bool {
    // SYNC POINT (buffer free): Release pairs with the Acquire CAS of the
    // next `grab`: our use of the bytes is over before it starts. The
    // expected value frees only a buffer this descriptor owns.
    owner
        .compare_exchange(req + 1, 0, Ordering::Release, Ordering::Relaxed)
        .is_ok()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip() {
        assert_eq!(decode(handle(3, 0xAB_CDEF)), Some((3, 0xAB_CDEF)));
        assert_eq!(decode(NO_BUFFER), None);
    }

    #[test]
    fn grab_scans_from_the_cursor_and_release_needs_the_owner() {
        let owners: Vec<AtomicU32> = (0..3).map(|_| AtomicU32::new(0)).collect();
        assert_eq!(grab(&owners, 2, 7), Some(2));
        assert_eq!(grab(&owners, 2, 8), Some(0), "the scan wraps");
        assert_eq!(grab(&owners, 0, 9), Some(1));
        assert_eq!(grab(&owners, 0, 9), None);
        assert!(owned_by(&owners[2], 7));
        assert_eq!(owner(&owners[0]), Some(8));
        assert!(!release(&owners[2], 8), "not its owner");
        assert!(release(&owners[2], 7));
        assert!(is_free(&owners[2]) && owner(&owners[2]).is_none());
        assert_eq!(grab(&[], 0, 1), None);
    }
}
