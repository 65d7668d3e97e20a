//! Giving a descriptor and its buffer back to their pools, for a port's
//! `put` and for crash recovery alike: the descriptor pool, the buffer
//! allocator and the binding word applied to the segment, plus the usage
//! counts kept on the source port.

use crate::layout::RequestShm;
use crate::request::NO_PORT;
use crate::segment::Segment;
use crate::sync::Ordering;
use crate::{binding, buffers, pool};

/// Whether the source port `src` of descriptor `r` is still bound with
/// the generation that got the descriptor.
pub(crate) fn src_is_current(seg: &Segment, src: u32, r: &RequestShm) -> bool {
    let Some(p) = seg.port(src) else {
        return false;
    };
    let b = binding::load(&p.binding);
    // Relaxed: the caller holds the descriptor, and only its holder writes
    // `src_gen`.
    b.is_bound() && b.gen == r.src_gen.load(Ordering::Relaxed)
}

/// Detaches descriptor `req`'s buffer, then frees it if `req` owns it.
/// In that order: a holder killed between the two leaves a buffer owned by
/// a descriptor without it attached, which recovery frees; the other order
/// would leave a handle to a buffer someone else may own by then.
pub(crate) fn detach_and_release_buffer(seg: &Segment, req: u32) {
    let Some(r) = seg.request(req) else { return };
    // Load and store: only the holder touches the field.
    let handle = r.buffer.load(Ordering::Relaxed);
    r.buffer.store(buffers::NO_BUFFER, Ordering::Relaxed);
    let Some((class, index)) = buffers::decode(handle) else {
        return;
    };
    let Some(owner) = seg.buffer_owner(class, index) else {
        return;
    };
    if !buffers::release(owner, req) {
        log::debug!("buffer {class}/{index} not owned by descriptor {req}; left alone");
        return;
    }
    if src_is_current(seg, r.src_port(), r) {
        if let Some(p) = seg.port(r.src_port()) {
            // Relaxed: a statistic.
            let _ = p
                .buffers_in_use
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

/// Frees the buffer and pools descriptor `req`. The caller (a port, or
/// recovery) holds it. With `seen`, the ticket word the caller holds it
/// by, pooling is a CAS from it: `false` (the buffer freed, the descriptor
/// left alone) if the ticket changed, which the caller treats as the end of
/// its claim.
pub(crate) fn put_descriptor(seg: &Segment, req: u32, seen: Option<u64>) -> bool {
    let Some(r) = seg.request(req) else {
        return false;
    };
    detach_and_release_buffer(seg, req);
    if src_is_current(seg, r.src_port(), r) {
        if let Some(p) = seg.port(r.src_port()) {
            // An atomic decrement that stops at 0, whoever puts it back:
            // the owner's gets add to the count at the same time (a load
            // and a store here lost updates, issue 19). Relaxed: a
            // statistic.
            let _ = p
                .requests_in_use
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
    // A pooled descriptor names no source: one taken by a `get` whose
    // process is killed before `reset` is then not mistaken by recovery
    // for a request of the previous source to fail back. Relaxed: `put`'s
    // Release store of the ticket publishes it.
    r.src_port.store(NO_PORT, Ordering::Relaxed);
    match seen {
        Some(seen) => pool::put_from(&r.ticket, seen),
        None => {
            pool::put(&r.ticket);
            true
        }
    }
}
