//! The binding word: which process owns a port, in which generation, and
//! whether a process is recovering it.
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
//! Every change of hands is one CAS or store on this word:
//!
//! | step | from | to | function |
//! |---|---|---|---|
//! | bind | unbound, generation `g` | bound, `g + 1` (never 0) | [`bind`] |
//! | recovery claims | unbound, or an owner the caller judges dead | recovering, same generation | [`claim_for_recovery`] |
//! | the owner unbinds | bound by the caller, `g` | recovering, `g` | [`claim_own`] |
//! | cleanup done | recovering, `g` | unbound, `g` | [`release`] |
//!
//! Keeping the generation when a port is released makes the next bind's
//! generation new, so replies for an earlier binding are recognised as
//! stale. Whether a pid is alive is the caller's business (a closure), so
//! the same code runs on the kernel's process table and, in the loom
//! models, on a model of it. The recovery that [`claim_for_recovery`]
//! starts is in the `recovery` module.

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

/// Binds an unbound port for process `pid`, with the next generation
/// (never 0); returns it. If a process (owner or recoverer) holds the port,
/// returns the binding found.
pub fn bind(word: &AtomicU64, pid: u32) -> Result<u32, Binding> {
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
        // AcqRel: the CAS decides, against other binders and recoverers,
        // who holds the port; a failure (Relaxed) reloads with Acquire.
        if word
            .compare_exchange(w, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(gen);
        }
    }
}

/// Claims a port for recovery by process `me`, keeping its generation:
/// an unbound port, or one whose holder `alive` says is dead (`alive` is
/// asked only about a nonzero pid). Returns the binding it claimed over,
/// or the live holder's binding.
pub fn claim_for_recovery(
    word: &AtomicU64,
    me: u32,
    mut alive: impl FnMut(u32) -> bool,
) -> Result<Binding, Binding> {
    loop {
        // SYNC POINT (binding): as in `bind`: what the last releaser did is
        // visible to the recovery.
        let w = word.load(Ordering::Acquire);
        let b = Binding::from_word(w);
        if b.pid != 0 && alive(b.pid) {
            return Err(b);
        }
        let claim = Binding {
            gen: b.gen,
            pid: me,
            recovering: true,
        }
        .word();
        // AcqRel: as in `bind`, the CAS decides who holds the port.
        if word
            .compare_exchange(w, claim, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(b);
        }
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

/// Ends a recovery or an unbind: the port is unbound, its generation kept.
pub fn release(word: &AtomicU64, gen: u32) {
    // SYNC POINT (binding): Release publishes the cleanup to the next
    // binder's Acquire load.
    word.store(
        Binding {
            gen,
            pid: 0,
            recovering: false,
        }
        .word(),
        Ordering::Release,
    );
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
        let w = AtomicU64::new(0);
        assert_eq!(bind(&w, 10), Ok(1));
        assert_eq!(bind(&w, 11).unwrap_err().pid, 10);
        assert!(claim_for_recovery(&w, 12, |_| true).is_err());
        let dead = claim_for_recovery(&w, 12, |_| false).unwrap();
        assert_eq!((dead.pid, dead.gen), (10, 1));
        assert!(load(&w).recovering);
        assert!(!claim_own(&w, 1, 10), "the dead owner lost the port");
        release(&w, 1);
        assert_eq!(bind(&w, 11), Ok(2));
        assert!(claim_own(&w, 2, 11));
        release(&w, 2);
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
        assert_eq!(bind(&w, 13), Ok(1), "generation 0 is skipped");
    }
}
