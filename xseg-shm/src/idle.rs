//! What a peer does when its poll finds nothing.
//!
//! Measured on this project's machines (`reference/measurements.md`): with
//! more peer processes than cores, busy-polling collapses (64 requests/s
//! with four peers on two cores), because spinners keep the CPU the peer
//! with work needs. The default, [`IdlePolicy::Yield`], gives the CPU away
//! after each empty poll and sleeps on the doorbell after `idle_polls`
//! empty polls in a row (≈3 M requests/s on the same pipeline).

use crate::port::Port;
use crate::sys;

/// How a peer idles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdlePolicy {
    /// Busy-poll, never sleep: only for a peer with a core of its own.
    Spin,
    /// `sched_yield` after an empty poll; sleep after `idle_polls`.
    #[default]
    Yield,
    /// Spin briefly, then sleep after `idle_polls` empty polls.
    Sleep,
}

impl std::str::FromStr for IdlePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spin" => Ok(IdlePolicy::Spin),
            "yield" => Ok(IdlePolicy::Yield),
            "sleep" => Ok(IdlePolicy::Sleep),
            _ => Err(format!(
                "unknown idle policy {s:?} (expected spin, yield or sleep)"
            )),
        }
    }
}

impl std::fmt::Display for IdlePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdlePolicy::Spin => "spin",
            IdlePolicy::Yield => "yield",
            IdlePolicy::Sleep => "sleep",
        })
    }
}

/// Default number of empty polls before sleeping.
pub const DEFAULT_IDLE_POLLS: u32 = 100;

/// The idle state of one polling loop.
#[derive(Debug, Clone)]
pub struct Idle {
    policy: IdlePolicy,
    idle_polls: u32,
    empty: u32,
}

impl Idle {
    /// A fresh idle state.
    pub fn new(policy: IdlePolicy, idle_polls: u32) -> Idle {
        Idle {
            policy,
            idle_polls,
            empty: 0,
        }
    }

    /// Call after a poll that found work.
    pub fn busy(&mut self) {
        self.empty = 0;
    }

    /// Call after a poll that found nothing: spins, yields or sleeps on
    /// `port`'s doorbell as the policy says.
    pub fn idle(&mut self, port: &Port) {
        self.idle_unless(port, || false)
    }

    /// Like [`idle`](Self::idle), but never sleeps while `other_work` says
    /// there is work outside the port's rings.
    pub fn idle_unless(&mut self, port: &Port, other_work: impl Fn() -> bool) {
        self.empty = self.empty.saturating_add(1);
        match self.policy {
            IdlePolicy::Spin => core::hint::spin_loop(),
            IdlePolicy::Yield | IdlePolicy::Sleep if self.empty >= self.idle_polls => {
                port.sleep_unless(other_work);
                self.empty = 0;
            }
            IdlePolicy::Yield => sys::yield_cpu(),
            IdlePolicy::Sleep => core::hint::spin_loop(),
        }
    }
}
