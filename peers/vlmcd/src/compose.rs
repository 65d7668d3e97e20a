//! The composer's pure pieces, kept apart from the transport so they can be
//! unit-tested: how a request is classed, how a map reply becomes pieces of
//! the client's buffer, and the per-volume gate that holds barriers until
//! the volume's I/O has drained.

use std::collections::{HashMap, VecDeque};

use archipelago_protocol::payload::MapExtent;
use archipelago_protocol::{Error, ErrorCode, Flags, Op, Route};

/// How a client request goes through the composer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Volume I/O: counted as active on its volume, held while a barrier
    /// is pending or running.
    Io(Io),
    /// Waits until the volume's I/O has drained, and holds new requests to
    /// the volume until it completes.
    Barrier(Action),
    /// Passes through at once, outside the volume's accounting.
    Free(Action),
    /// Completes at once with nothing done (zero-length I/O).
    Nothing,
    /// Refused.
    Unsupported,
}

/// Volume I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// READ: MAP_READ, then blocker reads.
    Read,
    /// WRITE: MAP_WRITE, blocker writes, MAP_COMMIT of pending extents.
    Write,
    /// DISCARD, WRITE_ZEROES: DISCARD to the mapper (whole objects get zero
    /// entries), then zeros written as WRITE does to the extents it
    /// returns (the partly covered objects). No data buffer.
    Zero,
}

/// What a barrier or free request does once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SYNC the data blocker.
    Sync,
    /// Copy the request to the mapper and its reply back.
    Forward,
}

/// Classes a client request by op, flags, size and target.
pub fn class(op: Op, flags: Flags, size: u64, target: &[u8]) -> Class {
    match op.spec().composer {
        Route::Read if size == 0 => Class::Nothing,
        Route::Read => Class::Io(Io::Read),
        // A zero-length write with FLUSH is a flush (as in the original).
        Route::Write if size == 0 && flags.contains(Flags::FLUSH) => Class::Barrier(Action::Sync),
        Route::Write if size == 0 => Class::Nothing,
        Route::Write => Class::Io(Io::Write),
        Route::Zero if size == 0 => Class::Nothing,
        Route::Zero => Class::Io(Io::Zero),
        Route::Sync if target.is_empty() => Class::Free(Action::Sync),
        Route::Sync => Class::Barrier(Action::Sync),
        Route::Barrier => Class::Barrier(Action::Forward),
        // A flatten step is not a barrier: the mapper serialises its copy
        // of an object with the writes to it, and I/O goes on meanwhile.
        Route::Forward => Class::Free(Action::Forward),
        Route::Refused => Class::Unsupported,
    }
}

/// A piece of a client request inside one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Position in the client's buffer.
    pub pos: u64,
    /// Bytes.
    pub len: u64,
    /// The object (`None`: reads as zeros, no I/O).
    pub object: Option<Vec<u8>>,
    /// Offset inside the object.
    pub offset_in_object: u64,
    /// Object index in the volume.
    pub index: u64,
    /// Commit the index with MAP_COMMIT once written.
    pub pending: bool,
    /// A missing object reads as zeros.
    pub missing_reads_zero: bool,
}

/// Turns a map reply for `size` bytes into pieces of the client's buffer,
/// checking the mapper's arithmetic: the extents must cover exactly `size`
/// bytes, and a write must name an object for every extent.
pub fn plan(extents: &[MapExtent], size: u64, write: bool) -> Result<Vec<Piece>, Error> {
    let bad = |what: String| Error::with(ErrorCode::Io, format!("bad map reply: {what}"));
    let mut pos = 0u64;
    let mut pieces = Vec::with_capacity(extents.len());
    for e in extents {
        let zero = e.flags & MapExtent::ZERO != 0;
        if e.len == 0 {
            return Err(bad(format!("empty extent for object {}", e.index)));
        }
        if write && zero {
            return Err(bad(format!("write extent {} names no object", e.index)));
        }
        if write && e.object.as_bytes().is_empty() {
            return Err(bad(format!("write extent {} has an empty name", e.index)));
        }
        let end = pos
            .checked_add(e.len)
            .filter(|&end| end <= size)
            .ok_or_else(|| bad(format!("extents cover more than {size} bytes")))?;
        pieces.push(Piece {
            pos,
            len: e.len,
            object: (!zero).then(|| e.object.as_bytes().to_vec()),
            offset_in_object: e.offset_in_object,
            index: e.index,
            pending: e.flags & MapExtent::PENDING != 0,
            missing_reads_zero: e.flags & MapExtent::MISSING_READS_ZERO != 0,
        });
        pos = end;
    }
    if pos != size {
        return Err(bad(format!("extents cover {pos} of {size} bytes")));
    }
    Ok(pieces)
}

/// Turns the mapper's reply to a DISCARD of `size` bytes into the pieces to
/// fill with zeros (the partly covered objects; `pos` counts the bytes of
/// the pieces before). Checks that every extent names an object, and that
/// they cover at most `size` bytes.
pub fn plan_zeroes(extents: &[MapExtent], size: u64) -> Result<Vec<Piece>, Error> {
    let bad = |what: String| Error::with(ErrorCode::Io, format!("bad discard reply: {what}"));
    let mut pos = 0u64;
    let mut pieces = Vec::with_capacity(extents.len());
    for e in extents {
        if e.len == 0 {
            return Err(bad(format!("empty extent for object {}", e.index)));
        }
        if e.flags & MapExtent::ZERO != 0 || e.object.as_bytes().is_empty() {
            return Err(bad(format!("extent {} names no object", e.index)));
        }
        let end = pos
            .checked_add(e.len)
            .filter(|&end| end <= size)
            .ok_or_else(|| bad(format!("extents cover more than {size} bytes")))?;
        pieces.push(Piece {
            pos,
            len: e.len,
            object: Some(e.object.as_bytes().to_vec()),
            offset_in_object: e.offset_in_object,
            index: e.index,
            pending: e.flags & MapExtent::PENDING != 0,
            missing_reads_zero: e.flags & MapExtent::MISSING_READS_ZERO != 0,
        });
        pos = end;
    }
    Ok(pieces)
}

/// One volume's admission state.
#[derive(Debug)]
struct Volume<T> {
    /// I/O requests running.
    active: usize,
    /// A barrier is waiting for `active` to drain, or running.
    frozen: bool,
    /// The barrier waiting for the drain.
    waiting: Option<T>,
    /// Requests that arrived while frozen, in order, with whether each is
    /// a barrier.
    queue: VecDeque<(bool, T)>,
}

impl<T> Default for Volume<T> {
    fn default() -> Self {
        Volume {
            active: 0,
            frozen: false,
            waiting: None,
            queue: VecDeque::new(),
        }
    }
}

impl<T> Volume<T> {
    fn enter(&mut self, barrier: bool, item: T, start: &mut Vec<T>) {
        if barrier {
            self.frozen = true;
            if self.active == 0 {
                start.push(item);
            } else {
                self.waiting = Some(item);
            }
        } else {
            self.active += 1;
            start.push(item);
        }
    }

    fn idle(&self) -> bool {
        self.active == 0 && !self.frozen && self.queue.is_empty()
    }
}

/// Per-volume admission (the original's `volume_info`): I/O runs
/// concurrently; a barrier freezes the volume, waits until its I/O has
/// drained, runs alone, and then lets what queued up behind it go in
/// order (one of which may freeze it again).
#[derive(Debug)]
pub struct Gate<T> {
    volumes: HashMap<Vec<u8>, Volume<T>>,
}

impl<T> Default for Gate<T> {
    fn default() -> Self {
        Gate {
            volumes: HashMap::new(),
        }
    }
}

impl<T> Gate<T> {
    /// Admits `item` (a barrier or I/O) to `volume`; returns what to start
    /// now (`item`, or nothing if it has to wait).
    pub fn admit(&mut self, volume: &[u8], barrier: bool, item: T) -> Vec<T> {
        let v = self.volumes.entry(volume.to_vec()).or_default();
        let mut start = Vec::new();
        if v.frozen || !v.queue.is_empty() {
            v.queue.push_back((barrier, item));
        } else {
            v.enter(barrier, item, &mut start);
        }
        start
    }

    /// An I/O request admitted to `volume` finished; returns what to start
    /// now (a barrier whose wait ended).
    pub fn io_done(&mut self, volume: &[u8]) -> Vec<T> {
        let mut start = Vec::new();
        if let Some(v) = self.volumes.get_mut(volume) {
            v.active = v.active.saturating_sub(1);
            if v.active == 0 {
                start.extend(v.waiting.take());
            }
        }
        self.tidy(volume);
        start
    }

    /// The running barrier of `volume` finished; returns the queued
    /// requests to start now.
    pub fn barrier_done(&mut self, volume: &[u8]) -> Vec<T> {
        let mut start = Vec::new();
        if let Some(v) = self.volumes.get_mut(volume) {
            v.frozen = false;
            while !v.frozen {
                let Some((barrier, item)) = v.queue.pop_front() else {
                    break;
                };
                v.enter(barrier, item, &mut start);
            }
        }
        self.tidy(volume);
        start
    }

    /// Volumes with state kept (busy, frozen or with a queue).
    #[cfg(test)]
    pub fn volumes(&self) -> usize {
        self.volumes.len()
    }

    fn tidy(&mut self, volume: &[u8]) {
        if self.volumes.get(volume).is_some_and(Volume::idle) {
            self.volumes.remove(volume);
        }
    }
}

/// What to do after a write finished its data for a pending index.
#[derive(Debug, PartialEq)]
pub enum Step<T> {
    /// Nothing yet: other writes to the index are still writing, or its
    /// commit is in flight.
    Wait,
    /// Send MAP_COMMIT for the index now (the writes waiting on it are
    /// resolved by [`Commits::committed`]).
    Commit,
    /// These writes learnt the index's outcome.
    Resolved(Vec<(T, Result<(), Error>)>),
}

#[derive(Debug)]
enum SlotState {
    /// Writes are landing; none has committed.
    Open,
    /// The commit is in flight.
    Committing,
    /// The round ended (kept while writes that joined it still write).
    Done(Result<(), Error>),
}

#[derive(Debug)]
struct Slot<T> {
    /// Writes that joined and have not finished their data.
    writers: usize,
    state: SlotState,
    /// The first data failure of the round.
    failed: Option<Error>,
    /// Writes whose data is done, waiting for the outcome.
    waiters: Vec<T>,
}

/// The commits of pending objects (full overwrites of shared data): the
/// mapper keeps an index pending for every write it maps to it until the
/// index is committed, and the index may be committed only once *every*
/// such write succeeded. So writes to one pending index form a round: the
/// last one to finish its data commits (unless one failed: then none
/// does, and every write of the round fails, its data being invisible),
/// and they all complete with the commit's outcome. A write that joins
/// while the commit is in flight was mapped before it (after a commit the
/// index is no longer pending), so it waits for that commit's outcome.
#[derive(Debug)]
pub struct Commits<T> {
    slots: HashMap<(Vec<u8>, u64), Slot<T>>,
}

impl<T> Default for Commits<T> {
    fn default() -> Self {
        Commits {
            slots: HashMap::new(),
        }
    }
}

impl<T> Commits<T> {
    /// A write's map reply names `index` of `volume` pending.
    pub fn join(&mut self, volume: &[u8], index: u64) {
        self.slots
            .entry((volume.to_vec(), index))
            .or_insert_with(|| Slot {
                writers: 0,
                state: SlotState::Open,
                failed: None,
                waiters: Vec::new(),
            })
            .writers += 1;
    }

    /// Write `item`, which joined `index`, finished its data with `result`.
    pub fn written(
        &mut self,
        volume: &[u8],
        index: u64,
        item: T,
        result: Result<(), Error>,
    ) -> Step<T> {
        let key = (volume.to_vec(), index);
        let Some(slot) = self.slots.get_mut(&key) else {
            return Step::Resolved(vec![(item, Err(never_joined(index)))]);
        };
        slot.writers = slot.writers.saturating_sub(1);
        let step = match &slot.state {
            SlotState::Done(outcome) => {
                let outcome = match (outcome, result) {
                    (Err(e), _) => Err(e.clone()),
                    (Ok(()), r) => r,
                };
                Step::Resolved(vec![(item, outcome)])
            }
            SlotState::Committing => {
                slot.waiters.push(item);
                Step::Wait
            }
            SlotState::Open => {
                if let Err(e) = result {
                    slot.failed.get_or_insert(e);
                }
                slot.waiters.push(item);
                match (slot.writers, &slot.failed) {
                    (0, None) => {
                        slot.state = SlotState::Committing;
                        Step::Commit
                    }
                    (0, Some(e)) => {
                        let e = e.clone();
                        Step::Resolved(
                            slot.waiters
                                .drain(..)
                                .map(|w| (w, Err(e.clone())))
                                .collect(),
                        )
                    }
                    _ => Step::Wait,
                }
            }
        };
        self.tidy(key);
        step
    }

    /// The commit of `index` came back with `result`; returns the writes
    /// resolved.
    pub fn committed(
        &mut self,
        volume: &[u8],
        index: u64,
        result: Result<(), Error>,
    ) -> Vec<(T, Result<(), Error>)> {
        let key = (volume.to_vec(), index);
        let Some(slot) = self.slots.get_mut(&key) else {
            return Vec::new();
        };
        let resolved = slot
            .waiters
            .drain(..)
            .map(|w| (w, result.clone()))
            .collect();
        slot.state = SlotState::Done(result);
        self.tidy(key);
        resolved
    }

    /// Indexes with a round in progress.
    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    fn tidy(&mut self, key: (Vec<u8>, u64)) {
        let over = self.slots.get(&key).is_some_and(|s| {
            s.writers == 0 && s.waiters.is_empty() && !matches!(s.state, SlotState::Committing)
        });
        if over {
            self.slots.remove(&key);
        }
    }
}

fn never_joined(index: u64) -> Error {
    Error::with(
        ErrorCode::Io,
        format!("object {index}: a write finished a round it never joined"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipelago_protocol::payload::NameField;

    fn ext(index: u64, off: u64, len: u64, flags: u32, name: &str) -> MapExtent {
        MapExtent {
            index,
            offset_in_object: off,
            len,
            flags,
            reserved: 0,
            object: NameField::new(name.as_bytes()).unwrap(),
        }
    }

    #[test]
    fn classes() {
        let c = |op, flags, size, target: &[u8]| class(op, flags, size, target);
        assert_eq!(c(Op::Read, Flags::NONE, 1, b"v"), Class::Io(Io::Read));
        assert_eq!(c(Op::Read, Flags::NONE, 0, b"v"), Class::Nothing);
        assert_eq!(c(Op::Write, Flags::FUA, 1, b"v"), Class::Io(Io::Write));
        assert_eq!(
            c(Op::Write, Flags::FLUSH, 0, b"v"),
            Class::Barrier(Action::Sync)
        );
        assert_eq!(c(Op::Write, Flags::NONE, 0, b"v"), Class::Nothing);
        assert_eq!(
            c(Op::Flush, Flags::NONE, 0, b"v"),
            Class::Barrier(Action::Sync)
        );
        assert_eq!(c(Op::Sync, Flags::NONE, 0, b""), Class::Free(Action::Sync));
        for op in [
            Op::Close,
            Op::Snapshot,
            Op::Delete,
            Op::Rename,
            Op::Resize,
            Op::Rollback,
        ] {
            assert_eq!(c(op, Flags::NONE, 0, b"v"), Class::Barrier(Action::Forward));
        }
        for op in [
            Op::Create,
            Op::Info,
            Op::Open,
            Op::Clone,
            Op::Hash,
            Op::Update,
            Op::Lineage,
            Op::Flatten,
        ] {
            assert_eq!(c(op, Flags::NONE, 0, b"v"), Class::Free(Action::Forward));
        }
        for op in [Op::Discard, Op::WriteZeroes] {
            assert_eq!(c(op, Flags::NONE, 1, b"v"), Class::Io(Io::Zero));
            assert_eq!(c(op, Flags::NONE, 0, b"v"), Class::Nothing);
        }
        for op in [Op::MapRead, Op::MapCommit, Op::Copy, Op::Acquire, Op::List] {
            assert_eq!(c(op, Flags::NONE, 0, b"v"), Class::Unsupported);
        }
    }

    #[test]
    fn plans_cover_the_buffer_in_order() {
        let extents = [
            ext(0, 4000, 96, MapExtent::MISSING_READS_ZERO, "a"),
            ext(1, 0, 4096, MapExtent::ZERO, ""),
            ext(2, 0, 8, MapExtent::PENDING, "c"),
        ];
        let p = plan(&extents, 4200, false).unwrap();
        assert_eq!(
            p.iter().map(|p| (p.pos, p.len)).collect::<Vec<_>>(),
            [(0, 96), (96, 4096), (4192, 8)]
        );
        assert!(p[0].missing_reads_zero && !p[0].pending);
        assert_eq!(p[1].object, None);
        assert_eq!(p[2].object.as_deref(), Some(&b"c"[..]));
        assert!(p[2].pending);
        // A write may not get a zero extent.
        assert_eq!(plan(&extents, 4200, true).unwrap_err().code, ErrorCode::Io);
        // Short, long and empty covers are the mapper's bugs, not panics.
        assert!(plan(&extents, 4201, false).is_err());
        assert!(plan(&extents, 4199, false).is_err());
        assert!(plan(&[ext(0, 0, 0, 0, "a")], 0, false).is_err());
        assert!(plan(
            &[ext(0, 0, u64::MAX, 0, "a"), ext(1, 0, 2, 0, "b")],
            1,
            false
        )
        .is_err());
        assert_eq!(plan(&[], 0, true).unwrap(), vec![]);
    }

    #[test]
    fn zero_plans_name_objects_within_the_range() {
        let extents = [
            ext(0, 4000, 96, MapExtent::MISSING_READS_ZERO, "a"),
            ext(2, 0, 8, MapExtent::PENDING, "c"),
        ];
        let p = plan_zeroes(&extents, 4200).unwrap();
        assert_eq!(
            p.iter().map(|p| (p.index, p.len)).collect::<Vec<_>>(),
            [(0, 96), (2, 8)]
        );
        assert!(p[1].pending && p[0].missing_reads_zero);
        assert_eq!(plan_zeroes(&[], 4200).unwrap(), vec![]);
        assert!(plan_zeroes(&extents, 100).is_err());
        assert!(plan_zeroes(&[ext(1, 0, 4096, MapExtent::ZERO, "")], 8192).is_err());
        assert!(plan_zeroes(&[ext(1, 0, 0, 0, "a")], 8192).is_err());
    }

    #[test]
    fn io_runs_concurrently() {
        let mut g = Gate::default();
        assert_eq!(g.admit(b"v", false, 1), [1]);
        assert_eq!(g.admit(b"v", false, 2), [2]);
        assert_eq!(g.admit(b"w", false, 3), [3]);
        assert!(g.io_done(b"v").is_empty());
        assert!(g.io_done(b"v").is_empty());
        assert!(g.io_done(b"w").is_empty());
        assert_eq!(g.volumes(), 0);
    }

    #[test]
    fn a_barrier_waits_for_io_and_holds_what_follows_in_order() {
        let mut g = Gate::default();
        assert_eq!(g.admit(b"v", false, 1), [1]);
        assert_eq!(g.admit(b"v", false, 2), [2]);
        // The barrier waits for 1 and 2; 4, 5, 6 wait for it.
        assert!(g.admit(b"v", true, 3).is_empty());
        assert!(g.admit(b"v", false, 4).is_empty());
        assert!(g.admit(b"v", false, 5).is_empty());
        assert!(g.admit(b"v", true, 6).is_empty());
        assert!(g.admit(b"v", false, 7).is_empty());
        // Other volumes go on.
        assert_eq!(g.admit(b"w", false, 8), [8]);
        assert!(g.io_done(b"v").is_empty());
        assert_eq!(g.io_done(b"v"), [3]);
        // Barrier 3 done: 4 and 5 start; barrier 6 freezes again and waits.
        assert_eq!(g.barrier_done(b"v"), [4, 5]);
        assert!(g.io_done(b"v").is_empty());
        assert_eq!(g.io_done(b"v"), [6]);
        assert_eq!(g.barrier_done(b"v"), [7]);
        assert!(g.io_done(b"v").is_empty());
        assert!(g.io_done(b"w").is_empty());
        assert_eq!(g.volumes(), 0);
    }

    #[test]
    fn a_barrier_on_an_idle_volume_starts_at_once_and_barriers_queue() {
        let mut g = Gate::default();
        assert_eq!(g.admit(b"v", true, 1), [1]);
        assert!(g.admit(b"v", true, 2).is_empty());
        assert_eq!(g.barrier_done(b"v"), [2]);
        assert!(g.barrier_done(b"v").is_empty());
        assert_eq!(g.volumes(), 0);
    }

    fn err() -> Error {
        Error::with(ErrorCode::Io, "x")
    }

    #[test]
    fn the_last_writer_of_a_round_commits_for_all() {
        let mut c = Commits::default();
        c.join(b"v", 3);
        c.join(b"v", 3);
        assert_eq!(c.written(b"v", 3, 1, Ok(())), Step::Wait);
        assert_eq!(c.written(b"v", 3, 2, Ok(())), Step::Commit);
        // A write mapped before the commit joins late and waits for it.
        c.join(b"v", 3);
        assert_eq!(c.written(b"v", 3, 3, Ok(())), Step::Wait);
        let done = c.committed(b"v", 3, Ok(()));
        assert_eq!(done, vec![(1, Ok(())), (2, Ok(())), (3, Ok(()))]);
        assert_eq!(c.slots(), 0);
    }

    #[test]
    fn a_late_writer_still_writing_gets_the_outcome_when_done() {
        let mut c = Commits::default();
        c.join(b"v", 0);
        assert_eq!(c.written(b"v", 0, 1, Ok(())), Step::Commit);
        c.join(b"v", 0);
        assert_eq!(c.committed(b"v", 0, Err(err())), vec![(1, Err(err()))]);
        assert_eq!(
            c.written(b"v", 0, 2, Ok(())),
            Step::Resolved(vec![(2, Err(err()))])
        );
        assert_eq!(c.slots(), 0);
        // A new round after that.
        c.join(b"v", 0);
        c.join(b"v", 0);
        assert_eq!(c.committed(b"v", 0, Ok(())), vec![]);
        assert_eq!(
            c.written(b"v", 0, 3, Err(err())),
            Step::Resolved(vec![(3, Err(err()))])
        );
        assert_eq!(
            c.written(b"v", 0, 4, Ok(())),
            Step::Resolved(vec![(4, Ok(()))])
        );
        assert_eq!(c.slots(), 0);
    }

    #[test]
    fn a_failed_write_fails_its_round_without_a_commit() {
        let mut c = Commits::default();
        c.join(b"v", 1);
        c.join(b"v", 1);
        c.join(b"w", 1);
        assert_eq!(c.written(b"v", 1, 1, Err(err())), Step::Wait);
        assert_eq!(
            c.written(b"v", 1, 2, Ok(())),
            Step::Resolved(vec![(1, Err(err())), (2, Err(err()))])
        );
        assert_eq!(c.written(b"w", 1, 3, Ok(())), Step::Commit);
        assert_eq!(c.committed(b"w", 1, Ok(())), vec![(3, Ok(()))]);
        assert_eq!(c.slots(), 0);
        assert!(matches!(
            c.written(b"v", 9, 5, Ok(())),
            Step::Resolved(r) if r[0].1.is_err()
        ));
    }
}
