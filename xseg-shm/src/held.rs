//! The per-process record of held descriptors: which port of this process
//! holds each descriptor of a segment, kept in this process's memory where
//! no peer can write it.
//!
//! The ticket in the segment says which port holds a descriptor, but a
//! misbehaving peer can write tickets and ring entries: a forged `Queued`
//! ticket naming our port B, pushed into B's ring, would make B's take
//! succeed while our port A still holds the descriptor, and this process
//! would then have two `&mut [u8]` to one buffer (issue 19). So every port
//! of this process also marks here the descriptors it holds (`port + 1`
//! per descriptor, 0 for none) and refuses to take one already marked;
//! the mark is set before a descriptor is taken and cleared before it is
//! handed on (pushed or put back), so one port of the process at a time
//! holds it, whatever the segment says.
//!
//! The same holds for data buffers: a buffer's owner word (which says which
//! descriptor the buffer belongs to) is in the segment too, and a forged
//! one could make a second descriptor of ours reach a buffer a first one's
//! slice covers. So a port marks here, before it makes a slice of a
//! buffer, that the buffer belongs to that descriptor in this process, and
//! refuses a buffer marked for another one; the mark goes with the
//! descriptor's.
//!
//! The record belongs to the segment's file (its device and inode), not to
//! one [`Segment`](crate::Segment) value: two attachments of the same
//! segment in one process share it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::buffers::{decode, handle, NO_BUFFER};
use crate::sync::{AtomicU32, Ordering};

/// One mark per descriptor (0, or `port + 1` of the port holding it) and
/// per buffer (0, or `d + 1` of the descriptor whose data it is here).
pub(crate) struct Held {
    marks: Box<[AtomicU32]>,
    /// Per class, per buffer.
    buffers: Box<[Box<[AtomicU32]>]>,
    /// Per descriptor, the handle of the buffer it marked, or `NO_BUFFER`.
    buffer_of: Box<[AtomicU32]>,
}

type Registry = HashMap<(u64, u64), Weak<Held>>;

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

impl Held {
    /// The record of the segment file `(dev, ino)` with `count`
    /// descriptors, shared with the other attachments in this process.
    pub(crate) fn for_file(dev: u64, ino: u64, count: u32, buffer_counts: &[u32]) -> Arc<Held> {
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let registry = registry.get_or_insert_with(HashMap::new);
        registry.retain(|_, w| w.strong_count() > 0);
        if let Some(held) = registry.get(&(dev, ino)).and_then(Weak::upgrade) {
            let same = held.marks.len() == count as usize
                && held.buffers.len() == buffer_counts.len()
                && held
                    .buffers
                    .iter()
                    .zip(buffer_counts)
                    .all(|(b, &c)| b.len() == c as usize);
            if same {
                return held;
            }
        }
        let zeros = |n: u32| (0..n).map(|_| AtomicU32::new(0)).collect();
        let held = Arc::new(Held {
            marks: zeros(count),
            buffers: buffer_counts.iter().map(|&c| zeros(c)).collect(),
            buffer_of: (0..count).map(|_| AtomicU32::new(NO_BUFFER)).collect(),
        });
        registry.insert((dev, ino), Arc::downgrade(&held));
        held
    }

    /// Marks descriptor `i` held by `port`; `false` if a port of this
    /// process (this one included) already holds it, or `i` is out of
    /// range.
    pub(crate) fn hold(&self, i: u32, port: u32) -> bool {
        let Some(m) = self.marks.get(i as usize) else {
            return false;
        };
        // SYNC POINT (held): Acquire pairs with the Release of `release`:
        // the previous holder in this process is done with the descriptor
        // and its buffer before we touch them (the ticket's own hand-over
        // orders them too, unless a peer forged it).
        m.compare_exchange(0, port + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Clears the mark of descriptor `i` if `port` holds it, and the mark
    /// of the buffer it had.
    pub(crate) fn release(&self, i: u32, port: u32) {
        if let Some(m) = self.marks.get(i as usize) {
            self.release_buffer(i);
            // SYNC POINT (held): Release, see `hold`. A CAS, so a port
            // never clears another port's mark.
            let _ = m.compare_exchange(port + 1, 0, Ordering::Release, Ordering::Relaxed);
        }
    }

    /// Marks buffer `index` of `class` as descriptor `d`'s in this process
    /// (a holder of `d` calls it before making a slice of the buffer);
    /// `false` if it is marked for another descriptor, `d` marked another
    /// buffer, or either is out of range.
    pub(crate) fn hold_buffer(&self, d: u32, class: usize, index: u32) -> bool {
        let (Some(m), Some(of)) = (
            self.buffers.get(class).and_then(|b| b.get(index as usize)),
            self.buffer_of.get(d as usize),
        ) else {
            return false;
        };
        let h = handle(class, index);
        // Relaxed: only `d`'s holder (us) writes its entry.
        let cur = of.load(Ordering::Relaxed);
        if cur != NO_BUFFER && cur != h {
            return false;
        }
        // SYNC POINT (held): Acquire pairs with the Release in
        // `release_buffer`: the previous user of the bytes in this process
        // is done with them.
        match m.compare_exchange(0, d + 1, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                // Relaxed: read only by `d`'s holder.
                of.store(h, Ordering::Relaxed);
                true
            }
            Err(v) => v == d + 1,
        }
    }

    /// Clears the mark of the buffer descriptor `d` marked, if any (its
    /// holder detaches or frees the buffer, or hands `d` on).
    pub(crate) fn release_buffer(&self, d: u32) {
        let Some(of) = self.buffer_of.get(d as usize) else {
            return;
        };
        // Relaxed: only `d`'s holder (us) writes its entry.
        let Some((class, index)) = decode(of.swap(NO_BUFFER, Ordering::Relaxed)) else {
            return;
        };
        if let Some(m) = self.buffers.get(class).and_then(|b| b.get(index as usize)) {
            // SYNC POINT (held): Release, see `hold_buffer`.
            let _ = m.compare_exchange(d + 1, 0, Ordering::Release, Ordering::Relaxed);
        }
    }

    /// Whether `port` has descriptor `i` marked.
    #[cfg(test)]
    pub(crate) fn is_held_by(&self, i: u32, port: u32) -> bool {
        // Relaxed: a test's snapshot.
        self.marks
            .get(i as usize)
            .is_some_and(|m| m.load(Ordering::Relaxed) == port + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_port_of_the_process_holds_a_descriptor_at_a_time() {
        let h = Held::for_file(u64::MAX, 1, 4, &[]);
        assert!(h.hold(2, 5));
        assert!(!h.hold(2, 6), "another port");
        assert!(!h.hold(2, 5), "the same port, a second time");
        h.release(2, 6);
        assert!(h.is_held_by(2, 5), "only the holder clears");
        h.release(2, 5);
        assert!(h.hold(2, 6));
        assert!(!h.hold(4, 1), "out of range");
        let again = Held::for_file(u64::MAX, 1, 4, &[]);
        assert!(!again.hold(2, 7), "shared by attachments of one file");
    }

    #[test]
    fn a_buffer_is_one_descriptors_in_this_process() {
        let h = Held::for_file(u64::MAX, 2, 4, &[2, 2]);
        assert!(h.hold(0, 1) && h.hold(1, 1));
        assert!(h.hold_buffer(0, 1, 1));
        assert!(h.hold_buffer(0, 1, 1), "again, the same");
        assert!(!h.hold_buffer(1, 1, 1), "another descriptor");
        assert!(
            !h.hold_buffer(0, 0, 0),
            "a second buffer for one descriptor"
        );
        assert!(
            !h.hold_buffer(0, 2, 0) && !h.hold_buffer(9, 0, 0),
            "out of range"
        );
        h.release(0, 1);
        assert!(h.hold_buffer(1, 1, 1), "free with its descriptor");
        h.release_buffer(1);
        assert!(h.hold_buffer(0, 1, 1));
    }
}
