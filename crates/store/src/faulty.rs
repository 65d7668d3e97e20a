//! [`FaultyStore`]: a wrapper injecting failures into chosen operations.
//!
//! Rules say which operations fail and how:
//!
//! ```
//! use archipelago_store::{Fault, FaultyStore, MemoryStore, ObjectStore, OpKind, Rule, StoreError};
//!
//! let store = FaultyStore::new(MemoryStore::new());
//! store.fail_next(OpKind::Write, Fault::NoSpace);
//! assert!(matches!(store.write("a", 0, b"x", false), Err(StoreError::NoSpace { .. })));
//! store.write("a", 0, b"x", false).unwrap(); // only the next one failed
//!
//! // A torn write stores a prefix, then fails (a crash mid-write).
//! store.add_rule(Rule::new(OpKind::Write, Fault::Torn { keep: 2 }).names_with_prefix("vol_").times(1));
//! assert!(store.write("vol_1", 0, b"abcd", false).is_err());
//! assert_eq!(store.inner().stat("vol_1").unwrap().size, 2);
//! ```
//!
//! A fault is always reported as an error, never as success. Names are
//! checked before rules are consulted, so an invalid name fails with
//! `InvalidName` as it would without the wrapper.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{check_name, content_name_of, Fence, ListPage, ObjectStat, ObjectStore, StoreError};

/// `EIO`.
const EIO: i32 = 5;

/// The operations of [`ObjectStore`], as targets of rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// [`ObjectStore::read`].
    Read,
    /// [`ObjectStore::write`].
    Write,
    /// [`ObjectStore::write_full`].
    WriteFull,
    /// [`ObjectStore::delete`].
    Delete,
    /// [`ObjectStore::stat`].
    Stat,
    /// [`ObjectStore::copy`].
    Copy,
    /// [`ObjectStore::store_content`].
    StoreContent,
    /// [`ObjectStore::sync`].
    Sync,
    /// [`ObjectStore::try_lock`].
    TryLock,
    /// [`ObjectStore::unlock`].
    Unlock,
    /// [`ObjectStore::break_lock`].
    BreakLock,
    /// [`ObjectStore::lock_owner`].
    LockOwner,
    /// [`ObjectStore::list`].
    List,
}

impl OpKind {
    /// The method's name, as used in [`StoreError::Io`] messages.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::WriteFull => "write_full",
            OpKind::Delete => "delete",
            OpKind::Stat => "stat",
            OpKind::Copy => "copy",
            OpKind::StoreContent => "store_content",
            OpKind::Sync => "sync",
            OpKind::TryLock => "try_lock",
            OpKind::Unlock => "unlock",
            OpKind::BreakLock => "break_lock",
            OpKind::LockOwner => "lock_owner",
            OpKind::List => "list",
        }
    }
}

/// What happens to an operation a rule catches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Fails with [`StoreError::Io`] (`EIO`), doing nothing.
    Io,
    /// Fails with [`StoreError::NoSpace`], doing nothing.
    NoSpace,
    /// A crash in the middle: `write` stores the first `keep` bytes of its
    /// data and `copy` into an existing object copies the first `keep`
    /// bytes of its range (into the inner store), then the operation fails
    /// with `EIO`. Operations that are atomic by contract (`write_full`,
    /// `store_content`, `copy` into a missing object, lock operations) and
    /// those that write nothing fail without effect, as a crash before
    /// their commit point would leave them.
    Torn {
        /// Bytes applied before the failure.
        keep: u64,
    },
    /// Sleeps, then runs the operation normally.
    Delay(Duration),
    /// Waits until the [`Gate`] is opened, then runs the operation
    /// normally: an operation held in flight for exactly as long as a test
    /// needs (no timing).
    Hold(Gate),
    /// Fails with [`StoreError::Fenced`], doing nothing: the client was
    /// blocklisted because another host broke one of our locks.
    Fenced,
}

/// A gate for [`Fault::Hold`]: operations caught by the rule wait at it
/// until [`Gate::open`]. Clones share the gate.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<(Mutex<GateState>, Condvar)>);

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    arrived: u64,
}

impl PartialEq for Gate {
    fn eq(&self, other: &Gate) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Gate {}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    fn state(&self) -> MutexGuard<'_, GateState> {
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the gate: every operation waiting goes on, and later ones
    /// pass.
    pub fn open(&self) {
        self.state().open = true;
        self.0 .1.notify_all();
    }

    /// Whether [`Gate::open`] was called.
    pub fn is_open(&self) -> bool {
        self.state().open
    }

    /// How many operations reached the gate (waiting or gone through).
    pub fn arrived(&self) -> u64 {
        self.state().arrived
    }

    /// Waits (at most `timeout`) until `n` operations reached the gate;
    /// whether they did.
    pub fn wait_arrived(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        while st.arrived < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .0
                 .1
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    fn pass(&self) {
        let mut st = self.state();
        st.arrived += 1;
        self.0 .1.notify_all();
        while !st.open {
            st = self.0 .1.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A fault injection rule: which operations (one kind, or all), which
/// names, how many times.
#[derive(Debug, Clone)]
pub struct Rule {
    op: Option<OpKind>,
    prefix: Option<String>,
    fault: Fault,
    remaining: Option<u64>,
}

impl Rule {
    /// `fault` on every `op`, forever (narrow it with the other methods).
    pub fn new(op: OpKind, fault: Fault) -> Rule {
        Rule {
            op: Some(op),
            prefix: None,
            fault,
            remaining: None,
        }
    }

    /// `fault` on every operation, forever.
    pub fn any_op(fault: Fault) -> Rule {
        Rule {
            op: None,
            prefix: None,
            fault,
            remaining: None,
        }
    }

    /// Only operations on a name starting with `prefix` (either name of a
    /// `copy`; the content name for `store_content`; never `sync` or
    /// `list`, which have no name).
    pub fn names_with_prefix(mut self, prefix: impl Into<String>) -> Rule {
        self.prefix = Some(prefix.into());
        self
    }

    /// Only the next `n` matching operations; the rule then disappears.
    pub fn times(mut self, n: u64) -> Rule {
        self.remaining = Some(n);
        self
    }

    /// The name this rule catches among `names`, or `None`.
    fn catches<'a>(&self, op: OpKind, names: &[&'a str]) -> Option<&'a str> {
        if self.op.is_some_and(|o| o != op) {
            return None;
        }
        match &self.prefix {
            None => Some(names.last().copied().unwrap_or("(store)")),
            Some(p) => names.iter().copied().find(|n| n.starts_with(p.as_str())),
        }
    }
}

/// An [`ObjectStore`] that forwards to `inner` except where a [`Rule`]
/// injects a [`Fault`].
#[derive(Debug)]
pub struct FaultyStore<S: ObjectStore> {
    inner: S,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    fired: u64,
}

/// What an operation does after consulting the rules.
enum Verdict {
    /// Run it normally.
    Run,
    /// Fail it with this error after applying `keep` bytes (torn).
    Torn(u64, StoreError),
    /// Fail it without effect.
    Fail(StoreError),
}

impl<S: ObjectStore> FaultyStore<S> {
    /// Wraps `inner`, injecting nothing until told to.
    pub fn new(inner: S) -> FaultyStore<S> {
        FaultyStore {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// The wrapped store (to look behind the faults).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a rule; rules are consulted in the order they were added and
    /// the first that catches an operation decides.
    pub fn add_rule(&self, rule: Rule) {
        self.lock().rules.push(rule);
    }

    /// Injects `fault` into the next `op` only.
    pub fn fail_next(&self, op: OpKind, fault: Fault) {
        self.add_rule(Rule::new(op, fault).times(1));
    }

    /// Injects `fault` into every `op` from now on.
    pub fn fail_always(&self, op: OpKind, fault: Fault) {
        self.add_rule(Rule::new(op, fault));
    }

    /// Injects `fault` into every `op` on a name starting with `prefix`.
    pub fn fail_names_with_prefix(&self, op: OpKind, prefix: &str, fault: Fault) {
        self.add_rule(Rule::new(op, fault).names_with_prefix(prefix));
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// How many faults have been injected (delays included).
    pub fn injected(&self) -> u64 {
        self.lock().fired
    }

    /// Consults the rules for `op` on `names` (already checked).
    fn verdict(&self, op: OpKind, names: &[&str]) -> Verdict {
        let (fault, name) = {
            let mut state = self.lock();
            let Some((i, name)) = state
                .rules
                .iter()
                .enumerate()
                .find_map(|(i, r)| r.catches(op, names).map(|n| (i, n)))
            else {
                return Verdict::Run;
            };
            state.fired += 1;
            let rule = &mut state.rules[i];
            let fault = rule.fault.clone();
            if let Some(n) = &mut rule.remaining {
                *n -= 1;
                if *n == 0 {
                    state.rules.remove(i);
                }
            }
            (fault, name.to_owned())
        };
        let eio = |name: String| StoreError::Io {
            name,
            op: op.as_str(),
            source: io::Error::from_raw_os_error(EIO),
        };
        match fault {
            Fault::Delay(d) => {
                std::thread::sleep(d);
                Verdict::Run
            }
            Fault::Hold(gate) => {
                gate.pass();
                Verdict::Run
            }
            Fault::Io => Verdict::Fail(eio(name)),
            Fault::NoSpace => Verdict::Fail(StoreError::NoSpace { name }),
            Fault::Fenced => Verdict::Fail(StoreError::Fenced { name }),
            Fault::Torn { keep } => Verdict::Torn(keep, eio(name)),
        }
    }

    /// For operations a tear cannot apply partially.
    fn check(&self, op: OpKind, names: &[&str]) -> Result<(), StoreError> {
        for n in names {
            check_name(n)?;
        }
        match self.verdict(op, names) {
            Verdict::Run => Ok(()),
            Verdict::Fail(e) | Verdict::Torn(_, e) => Err(e),
        }
    }
}

impl<S: ObjectStore> FaultyStore<S> {
    /// A COPY (or copy-up) of `len` bytes from `src` to `dst` under the
    /// rules: `copy(n)` copies the first `n` bytes through the inner
    /// store. Into a missing destination a copy is atomic (nothing is left
    /// on failure): only an existing one can be torn.
    fn faulty_copy(
        &self,
        src: &str,
        dst: &str,
        len: u64,
        copy: impl Fn(u64) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        check_name(src)?;
        check_name(dst)?;
        match self.verdict(OpKind::Copy, &[src, dst]) {
            Verdict::Run => copy(len),
            Verdict::Fail(e) => Err(e),
            Verdict::Torn(keep, e) => {
                if self.inner.stat(dst).is_ok() {
                    copy(keep.min(len))?;
                }
                Err(e)
            }
        }
    }
}

impl<S: ObjectStore> ObjectStore for FaultyStore<S> {
    /// Caught by the rules for [`OpKind::Write`]; a torn fenced write
    /// applies its prefix fenced too.
    fn write_fenced(
        &self,
        name: &str,
        offset: u64,
        data: &[u8],
        durable: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        check_name(name)?;
        check_name(fence.lock)?;
        match self.verdict(OpKind::Write, &[name]) {
            Verdict::Run => self.inner.write_fenced(name, offset, data, durable, fence),
            Verdict::Fail(e) => Err(e),
            Verdict::Torn(keep, e) => {
                let keep = keep.min(data.len() as u64) as usize;
                self.inner
                    .write_fenced(name, offset, &data[..keep], durable, fence)?;
                Err(e)
            }
        }
    }

    /// Caught by the rules for [`OpKind::WriteFull`].
    fn write_full_fenced(
        &self,
        name: &str,
        data: &[u8],
        durable: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        check_name(fence.lock)?;
        self.check(OpKind::WriteFull, &[name])?;
        self.inner.write_full_fenced(name, data, durable, fence)
    }

    /// Caught by the rules for [`OpKind::TryLock`] (it changes a lock).
    fn raise_fence(&self, lock: &str, token: u64) -> Result<u64, StoreError> {
        self.check(OpKind::TryLock, &[lock])?;
        self.inner.raise_fence(lock, token)
    }

    fn read(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<u64, StoreError> {
        self.check(OpKind::Read, &[name])?;
        self.inner.read(name, offset, buf)
    }

    fn write(&self, name: &str, offset: u64, data: &[u8], durable: bool) -> Result<(), StoreError> {
        check_name(name)?;
        match self.verdict(OpKind::Write, &[name]) {
            Verdict::Run => self.inner.write(name, offset, data, durable),
            Verdict::Fail(e) => Err(e),
            Verdict::Torn(keep, e) => {
                let keep = keep.min(data.len() as u64) as usize;
                self.inner.write(name, offset, &data[..keep], durable)?;
                Err(e)
            }
        }
    }

    fn write_full(&self, name: &str, data: &[u8], durable: bool) -> Result<(), StoreError> {
        self.check(OpKind::WriteFull, &[name])?;
        self.inner.write_full(name, data, durable)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.check(OpKind::Delete, &[name])?;
        self.inner.delete(name)
    }

    fn delete_fenced(&self, name: &str, fence: crate::Fence<'_>) -> Result<(), StoreError> {
        self.check(OpKind::Delete, &[name])?;
        self.inner.delete_fenced(name, fence)
    }

    fn stat(&self, name: &str) -> Result<ObjectStat, StoreError> {
        self.check(OpKind::Stat, &[name])?;
        self.inner.stat(name)
    }

    fn copy(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        durable: bool,
    ) -> Result<(), StoreError> {
        self.faulty_copy(src, dst, len, |n| {
            self.inner
                .copy(src, src_offset, dst, dst_offset, n, durable)
        })
    }

    /// A copy-up is a COPY to the rules.
    fn copy_up(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        fence: crate::Fence<'_>,
    ) -> Result<(), StoreError> {
        self.faulty_copy(src, dst, len, |n| {
            self.inner
                .copy_up(src, src_offset, dst, dst_offset, n, fence)
        })
    }

    fn store_content(&self, data: &[u8], durable: bool) -> Result<String, StoreError> {
        let name = content_name_of(data);
        self.check(OpKind::StoreContent, &[&name])?;
        self.inner.store_content(data, durable)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.check(OpKind::Sync, &[])?;
        self.inner.sync()
    }

    fn try_lock(&self, name: &str, owner: &str) -> Result<u64, StoreError> {
        self.check(OpKind::TryLock, &[name])?;
        self.inner.try_lock(name, owner)
    }

    fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.check(OpKind::Unlock, &[name])?;
        self.inner.unlock(name, owner)
    }

    fn break_lock(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.check(OpKind::BreakLock, &[name])?;
        self.inner.break_lock(name)
    }

    fn lock_owner(&self, name: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.check(OpKind::LockOwner, &[name])?;
        self.inner.lock_owner(name)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.check(OpKind::List, &[])?;
        self.inner.list(prefix)
    }

    fn list_page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.check(OpKind::List, &[])?;
        self.inner.list_page(prefix, cursor, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[test]
    fn rules_fire_in_order_and_expire() {
        let s = FaultyStore::new(MemoryStore::new());
        s.add_rule(Rule::new(OpKind::Stat, Fault::Io).times(2));
        s.write("a", 0, b"x", false).unwrap();
        assert!(s.stat("a").is_err());
        assert!(s.stat("a").is_err());
        assert!(s.stat("a").is_ok());
        assert_eq!(s.injected(), 2);
    }

    #[test]
    fn prefix_rules_only_catch_matching_names() {
        let s = FaultyStore::new(MemoryStore::new());
        s.fail_names_with_prefix(OpKind::Write, "bad", Fault::NoSpace);
        s.write("good", 0, b"x", false).unwrap();
        let e = s.write("bad1", 0, b"x", false).unwrap_err();
        assert!(e.to_string().contains("bad1"), "{e}");
        s.fail_names_with_prefix(OpKind::Copy, "bad", Fault::Io);
        let e = s.copy("good", 0, "bad2", 0, 1, false).unwrap_err();
        assert!(e.to_string().contains("bad2"), "{e}");
        s.clear();
        s.copy("good", 0, "bad2", 0, 1, false).unwrap();
    }

    #[test]
    fn a_gate_holds_operations_until_opened() {
        let s = std::sync::Arc::new(FaultyStore::new(MemoryStore::new()));
        let gate = Gate::new();
        s.fail_next(OpKind::Write, Fault::Hold(gate.clone()));
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || s.write("a", 0, b"x", false))
        };
        assert!(gate.wait_arrived(1, Duration::from_secs(30)));
        // Held: nothing written while the gate is closed.
        assert!(!writer.is_finished());
        assert!(s.inner().stat("a").is_err());
        gate.open();
        writer.join().unwrap().unwrap();
        assert_eq!(s.inner().stat("a").unwrap().size, 1);
        assert_eq!(gate.arrived(), 1);
        assert!(!gate.wait_arrived(2, Duration::ZERO));
    }

    #[test]
    fn delays_delay_and_do_not_fail() {
        let s = FaultyStore::new(MemoryStore::new());
        let delay = Duration::from_millis(50);
        s.add_rule(Rule::any_op(Fault::Delay(delay)).times(1));
        // A lower bound only: the delay happened (a slow machine only
        // makes the call longer).
        let t = std::time::Instant::now();
        s.write("a", 0, b"x", false).unwrap();
        assert!(t.elapsed() >= delay, "no delay: {:?}", t.elapsed());
        assert_eq!(s.injected(), 1);
        assert_eq!(s.inner().stat("a").unwrap().size, 1);
        // The rule is spent: the next call is not delayed by it.
        s.write("a", 1, b"y", false).unwrap();
        assert_eq!(s.injected(), 1);
    }
}
