//! Test hooks: widen a race window from a test, in any build.
//!
//! Not part of the API (hidden from the docs). A hook is a closure the
//! crate calls at a named point with the segment's name, so a test acts
//! only on its own segment while other tests of the same binary run. The
//! points are on cold paths (recovery, attach), where one uncontended lock
//! costs nothing measurable.

use std::sync::{Arc, Mutex};

use crate::segment::SegmentName;

/// Where a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// In `Segment::recover`, right after the binding was claimed.
    RecoveryClaimed,
    /// In `Segment::attach`, after the file's length was read and before it
    /// is mapped.
    AttachStatted,
}

type Hook = Arc<dyn Fn(&SegmentName) + Send + Sync>;

static HOOKS: Mutex<Vec<(Point, Hook)>> = Mutex::new(Vec::new());

/// Adds a hook at `point` (several may be set; each runs).
pub fn add(point: Point, hook: impl Fn(&SegmentName) + Send + Sync + 'static) {
    HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((point, Arc::new(hook)));
}

/// Runs the hooks set at `point`.
pub(crate) fn run(point: Point, name: &SegmentName) {
    let hooks: Vec<Hook> = HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(p, _)| *p == point)
        .map(|(_, h)| h.clone())
        .collect();
    for h in hooks {
        h(name);
    }
}
