//! The binding word: which process owns a port, in which generation, and
//! whether a process is recovering it; and the identity word beside it
//! that tells a live holder from a dead one whose pid was reused.
//!
//! Each port's `binding` word packs `generation << 32 | recovering bit |
//! pid` ([`Binding`]):
//!
//! | pid | recovering | the port is |
//! |---|---|---|
//! | 0 | 0 | unbound; the generation is the last binding's |
//! | `p` | 0 | bound by process `p` |
//! | `p` | 1 | being recovered by process `p` (or unbound by its owner `p`) |
//!
//! Every change of hands is one CAS on this word:
//!
//! | step | from | to | function |
//! |---|---|---|---|
//! | bind | unbound, generation `g` | bound, `g + 1` (never 0) | [`bind`] |
//! | recovery claims | unbound, or an owner the caller judges dead | recovering, same generation | [`claim_for_recovery`] |
//! | the owner unbinds | bound by the caller, `g` | recovering, `g` | [`claim_own`] |
//! | cleanup done | recovering by the caller, `g` | unbound, `g` | [`release`] |
//!
//! Keeping the generation when a port is released makes the next bind's
//! generation new, so replies for an earlier binding are recognised as
//! stale. The recovery that [`claim_for_recovery`] starts is in the
//! `recovery` module.
//!
//! # Identity: who holds the port, for the liveness check
//!
//! A pid alone does not name a process for good (pids are reused), so the
//! port has a second word, `identity` = `pid << 32 | start` ([`identity`]),
//! `start` being the low 32 bits of the process's start time (0: unknown).
//! It cannot be part of the binding CAS (64 bits hold no start time), so
//! it is written **before** the CAS, by a process that saw the port unbound
//! or judged its holder dead, and put back as found if the CAS then fails.
//! Several claimants may write it; the last writer need not be the CAS's
//! winner. So a judge trusts the start time only when the identity's pid is
//! the binding's pid ([`judge`]); otherwise it judges by the pid alone,
//! which never takes a live process for dead (it can take a dead one whose
//! pid was reused for alive, and the port then waits for an operator).
//!
//! Why that is exclusive: a claimant's identity write is sequenced before
//! its binding CAS, and a judge loads the binding (Acquire, synchronising
//! with that CAS) before the identity, so it sees the winner's identity or
//! a later write. A later write is a loser's (its pid is not the winner's:
//! the judge falls back to the pid, which is alive) or the winner's own
//! clearing at [`release`] (0: the pid again). The identity of a *dead*
//! process with the winner's pid was written before the winner existed,
//! and the winner's own write came after it. Before issue 19 the start time
//! was stored after the claim, and a second recoverer in that window judged
//! the first by the dead owner's start time, took it for dead and cleaned
//! up the same port at the same time.
//!
//! Whether a process lives is the caller's business (a closure given the
//! pid and the start time to check, if any), so the same code runs on the
//! kernel's process table and, in the loom models, on a model of it.

use crate::sync::{AtomicU64, Ordering};

const RECOVERING: u32 = 0x8000_0000;

/// A decoded port owner record: `generation << 32 | recovering bit | pid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// Bumped on every bind; replies for an older generation are stale.
    pub gen: u32,
    /// Owner pid (or recovering process), 0 when unbound.
    pub pid: u32,
    /// A process is recovering the port.
    pub recovering: bool,
}

impl Binding {
    /// Decodes.
    pub fn from_word(w: u64) -> Binding {
        let low = w as u32;
        Binding {
            gen: (w >> 32) as u32,
            pid: low & !RECOVERING,
            recovering: low & RECOVERING != 0,
        }
    }

    /// Encodes.
    pub fn word(self) -> u64 {
        (u64::from(self.gen) << 32)
            | u64::from(self.pid & !RECOVERING)
            | if self.recovering {
                u64::from(RECOVERING)
            } else {
                0
            }
    }

    /// Bound by a process and not being recovered (or unbound by it).
    pub fn is_bound(self) -> bool {
        self.pid != 0 && !self.recovering
    }
}

/// Reads a binding word.
pub fn load(word: &AtomicU64) -> Binding {
    // SYNC POINT (binding): Acquire pairs with the Release store of
    // `release`: the cleanup of the last unbind or recovery is visible to
    // whatever the caller does after seeing the port released.
    Binding::from_word(word.load(Ordering::Acquire))
}

/// Reads a binding word as a hint.
pub fn peek(word: &AtomicU64) -> Binding {
    // Relaxed: for a decision that reads nothing the binder published
    // (whether to push to the port at all); a binding that changes right
    // after is caught by the generation checks on the reply path.
    Binding::from_word(word.load(Ordering::Relaxed))
}

/// An identity word: `pid << 32 | start`, `start` the low 32 bits of the
/// process's start time (0 when unknown).
pub fn identity(pid: u32, start: Option<u64>) -> u64 {
    (u64::from(pid) << 32) | start.map_or(0, |s| u64::from(s as u32))
}

/// The start time to check the binding's holder against, given the
/// identity word read after it: `Some` only if the identity is the
/// holder's (same pid) and names a start time; `None` means "judge by the
/// pid alone".
pub fn judge(b: Binding, id: u64) -> Option<u32> {
    let (pid, start) = ((id >> 32) as u32, id as u32);
    (b.pid != 0 && pid == b.pid && start != 0).then_some(start)
}

/// Loads a binding and its holder's identity, in that order (see the
/// module docs): the start time to judge the holder by, if any.
pub fn load_with_start(word: &AtomicU64, id_word: &AtomicU64) -> (Binding, Option<u32>) {
    // SYNC POINT (binding): Acquire, as in `load`: pairs with the CAS that
    // made the binding, after which its claimant's identity write is
    // visible to the load below.
    let b = Binding::from_word(word.load(Ordering::Acquire));
    // Relaxed: ordered after the binding load, which synchronised with the
    // claim; a newer value than the claimant's is a loser's or the
    // release's, which `judge` does not trust.
    let id = id_word.load(Ordering::Relaxed);
    (b, judge(b, id))
}

/// Writes our identity before a binding CAS; returns what it replaced.
fn announce(id_word: &AtomicU64, me: u64) -> u64 {
    // Relaxed: published by the binding CAS (Release) sequenced after it.
    id_word.swap(me, Ordering::Relaxed)
}

/// Puts back the identity `prev` we replaced, if nobody wrote since.
fn withdraw(id_word: &AtomicU64, me: u64, prev: u64) {
    // Relaxed: a hint for judges, who trust it only when its pid matches
    // the binding's. If another claimant wrote meanwhile, its value stays.
    let _ = id_word.compare_exchange(me, prev, Ordering::Relaxed, Ordering::Relaxed);
}

/// Binds an unbound port for the process whose identity is `me` (see
/// [`identity`]), with the next generation (never 0); returns it. If a
/// process (owner or recoverer) holds the port, returns the binding found
/// (and does not touch the identity word).
pub fn bind(word: &AtomicU64, id_word: &AtomicU64, me: u64) -> Result<u32, Binding> {
    let pid = (me >> 32) as u32;
    loop {
        // SYNC POINT (binding): Acquire pairs with the Release that unbound
        // or recovered the port: its cleanup is visible to us.
        let w = word.load(Ordering::Acquire);
        let b = Binding::from_word(w);
        if b.pid != 0 {
            return Err(b);
        }
        let gen = b.gen.wrapping_add(1).max(1);
        let new = Binding {
            gen,
            pid,
            recovering: false,
        }
        .word();
        let prev = announce(id_word, me);
        // AcqRel: the CAS decides, against other binders and recoverers,
        // who holds the port, and publishes our identity (Release); a
        // failure (Relaxed) reloads with Acquire.
        if word
            .compare_exchange(w, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(gen);
        }
        withdraw(id_word, me, prev);
    }
}

/// Claims a port for recovery by the process whose identity is `me`,
/// keeping its generation: an unbound port, or one whose holder `alive`
/// says is dead (`alive` is asked only about a nonzero pid, with the start
/// time [`judge`] trusts). Returns the binding it claimed over, or the
/// live holder's binding.
pub fn claim_for_recovery(
    word: &AtomicU64,
    id_word: &AtomicU64,
    me: u64,
    mut alive: impl FnMut(u32, Option<u32>) -> bool,
) -> Result<Binding, Binding> {
    let pid = (me >> 32) as u32;
    loop {
        // SYNC POINT (binding): as in `bind`: what the last releaser did is
        // visible to the recovery; the identity is read after the binding
        // (see `load_with_start`).
        let w = word.load(Ordering::Acquire);
        let b = Binding::from_word(w);
        // Relaxed: as in `load_with_start`.
        let start = judge(b, id_word.load(Ordering::Relaxed));
        if b.pid != 0 && alive(b.pid, start) {
            return Err(b);
        }
        let claim = Binding {
            gen: b.gen,
            pid,
            recovering: true,
        }
        .word();
        let prev = announce(id_word, me);
        // AcqRel: as in `bind`, the CAS decides who holds the port and
        // publishes our identity.
        if word
            .compare_exchange(w, claim, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(b);
        }
        withdraw(id_word, me, prev);
    }
}

/// The owner `me` of generation `gen` starts unbinding: marks the port
/// recovering by itself. `false` if the word says otherwise (a recoverer
/// took the port, judging the owner dead).
pub fn claim_own(word: &AtomicU64, gen: u32, me: u32) -> bool {
    let mine = Binding {
        gen,
        pid: me,
        recovering: false,
    }
    .word();
    let claim = Binding {
        gen,
        pid: me,
        recovering: true,
    }
    .word();
    // AcqRel: as in `bind`, the CAS decides who holds the port.
    word.compare_exchange(mine, claim, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Whether the port is still claimed (recovering) by `me` in generation
/// `gen`: a cleanup checks it before each step and stops when it is not.
pub fn still_claimed(word: &AtomicU64, gen: u32, me: u32) -> bool {
    // Relaxed: a check of our own claim; only a CAS from it (none, while
    // claims are exclusive) could change it.
    word.load(Ordering::Relaxed)
        == Binding {
            gen,
            pid: me,
            recovering: true,
        }
        .word()
}

/// Ends a recovery or an unbind by the process whose identity is `me`
/// (pid `me >> 32`): the port is unbound, its generation `gen` kept. A
/// CAS from our claim: `false` (and nothing changed) if the port is not
/// claimed by us any more.
pub fn release(word: &AtomicU64, id_word: &AtomicU64, gen: u32, me: u64) -> bool {
    let claim = Binding {
        gen,
        pid: (me >> 32) as u32,
        recovering: true,
    }
    .word();
    let unbound = Binding {
        gen,
        pid: 0,
        recovering: false,
    }
    .word();
    // Relaxed: a judge who sees our claim with identity 0 falls back to the
    // pid (ours, alive); the Release below orders this before the next
    // binder's identity write.
    let _ = id_word.compare_exchange(me, 0, Ordering::Relaxed, Ordering::Relaxed);
    // SYNC POINT (binding): Release publishes the cleanup to the next
    // binder's Acquire load.
    word.compare_exchange(claim, unbound, Ordering::Release, Ordering::Relaxed)
        .is_ok()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for b in [
            Binding {
                gen: 7,
                pid: 1234,
                recovering: true,
            },
            Binding {
                gen: u32::MAX,
                pid: 0x7FFF_FFFF,
                recovering: false,
            },
        ] {
            assert_eq!(Binding::from_word(b.word()), b);
        }
    }

    #[test]
    fn bind_recover_release_bind_gets_a_new_generation() {
        let (w, id) = (AtomicU64::new(0), AtomicU64::new(0));
        let me = |pid| identity(pid, Some(u64::from(pid) * 100));
        assert_eq!(bind(&w, &id, me(10)), Ok(1));
        assert_eq!(id.load(Ordering::Relaxed), me(10));
        assert_eq!(bind(&w, &id, me(11)).unwrap_err().pid, 10);
        assert_eq!(
            id.load(Ordering::Relaxed),
            me(10),
            "a failed bind writes nothing"
        );
        assert_eq!(load_with_start(&w, &id).1, Some(1000));
        assert!(claim_for_recovery(&w, &id, me(12), |_, _| true).is_err());
        let dead = claim_for_recovery(&w, &id, me(12), |_, _| false).unwrap();
        assert_eq!((dead.pid, dead.gen), (10, 1));
        assert!(load(&w).recovering);
        assert_eq!(load_with_start(&w, &id).1, Some(1200), "the claimant's");
        assert!(!claim_own(&w, 1, 10), "the dead owner lost the port");
        assert!(!release(&w, &id, 1, me(13)), "only the claimant releases");
        assert!(release(&w, &id, 1, me(12)));
        assert_eq!(id.load(Ordering::Relaxed), 0);
        assert_eq!(bind(&w, &id, me(11)), Ok(2));
        assert!(claim_own(&w, 2, 11));
        assert!(still_claimed(&w, 2, 11));
        assert!(release(&w, &id, 2, me(11)));
        assert_eq!(load(&w).gen, 2);
        w.store(
            Binding {
                gen: u32::MAX,
                pid: 0,
                recovering: false,
            }
            .word(),
            Ordering::Relaxed,
        );
        assert_eq!(bind(&w, &id, me(13)), Ok(1), "generation 0 is skipped");
    }

    #[test]
    fn a_start_time_is_trusted_only_from_the_holders_own_identity() {
        let b = Binding {
            gen: 1,
            pid: 7,
            recovering: true,
        };
        assert_eq!(judge(b, identity(7, Some(0x1_0000_0042))), Some(0x42));
        assert_eq!(judge(b, identity(8, Some(42))), None, "another's");
        assert_eq!(judge(b, identity(7, None)), None, "unknown");
        assert_eq!(judge(b, 0), None);
    }
}
