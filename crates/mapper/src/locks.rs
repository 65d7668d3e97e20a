//! Per-volume state on this host, storage locks and fencing.
//!
//! Every operation on a volume works under its `VolState` mutex (two
//! volumes: in name order, `Mapper::two`) and holds the volume's storage
//! lock, either the one its writable opens keep or one taken for the call
//! (`Mapper::locked`). A lock can be broken by another host; before a
//! change to the data store, and before each header commit of a held
//! volume, the lock's owner and token are checked (fencing), and a broken
//! lock forgets the volume's state. Kept together because the state's
//! cached header and pending writes are only as good as the lock behind
//! them (the caching rule in the crate docs).
//!
//! The checks here are made by this host; they cannot stop a request it
//! already sent. So the token also travels with the writes: map chunks and
//! headers are written with `write_full_fenced` (commit.rs), and
//! `map_write_fenced` / `discard_fenced` / `map_cached_fenced` hand the
//! token to the composer, which puts it in each data write; the stores
//! refuse a token older than the one they record for the volume (see
//! "What fencing guarantees" in `archipelago-store`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use archipelago_mapfmt::Header;
use archipelago_protocol::{Error, ErrorCode};

use crate::{err, store_err, Mapper};

/// Per-volume state on this host.
#[derive(Default)]
pub(crate) struct VolState {
    /// Writable opens on this host; the storage lock is held iff > 0.
    pub(crate) opens: u32,
    /// The fencing token of the held lock.
    pub(crate) token: u64,
    /// The header, cached while the lock is held.
    pub(crate) header: Option<Header>,
    /// Indexes returned as pending by `map_write`, not yet committed,
    /// each with the granules the volume's own object will hold once it
    /// commits (every granule for a first write or a full overwrite; see
    /// `io.rs`).
    pub(crate) pending: HashMap<u64, u64>,
    /// Pending indexes whose copy-up is in flight with this state
    /// unlocked (`io.rs`): writes to them wait until it is done.
    pub(crate) copying: HashSet<u64>,
    /// Bytes of the volume's journal written by this open (0: none yet,
    /// the next append starts it afresh; see `journal.rs`).
    pub(crate) journal_len: u64,
    /// Bytes of records in the volume's write-back journal (the volatile
    /// tier of a write-back mapper, `journal.rs`): acknowledged, not yet
    /// durable.
    pub(crate) volatile_len: u64,
    /// Bumped whenever a checkpoint empties the write-back journal, so
    /// that a FLUSH that measured it before does not move records twice.
    pub(crate) volatile_gen: u64,
    /// When the lock was last found still ours (see `check_fence`).
    pub(crate) fence_checked: Option<std::time::Instant>,
    /// The object a flatten step is copying with this state unlocked
    /// (see `lineage.rs`): writes to it wait.
    pub(crate) flattening: Option<u64>,
    /// Held by an exclusive open (an export): no other open, no write.
    pub(crate) exclusive: bool,
    /// No object of the volume's current epoch exists that no entry
    /// names and no pending write will: the volume was created by this
    /// mapper, nobody held its lock since, and no round of this open was
    /// abandoned. A first write then needs no delete of an orphan
    /// (`io.rs`), and is mapped on the loop thread. False whenever not
    /// known (a reset state is false).
    pub(crate) orphan_free: bool,
}

/// How long a writer trusts its lock without asking the map store again:
/// a host whose lock was broken stops mapping writes within this time
/// (what it changes in the data store meanwhile, copy-ups, deletes of
/// orphans and data writes, is fenced there, and map changes are fenced
/// in the map store).
pub(crate) const FENCE_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A use of a volume's state. Dropping the last use of an idle state
/// (no writable open, no pending write) removes it from the mapper, so
/// names never touched again cost nothing.
pub(crate) struct StateRef<'a> {
    volumes: &'a Mutex<HashMap<String, Arc<Mutex<VolState>>>>,
    name: String,
    state: Option<Arc<Mutex<VolState>>>,
}

impl std::ops::Deref for StateRef<'_> {
    type Target = Arc<Mutex<VolState>>;
    fn deref(&self) -> &Self::Target {
        self.state.as_ref().expect("taken only on drop")
    }
}

impl Drop for StateRef<'_> {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        // New uses are only handed out under this lock, and ours is dropped
        // under it too: a count of 2 (the map's and ours) is exact.
        let mut v = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&state) == 2 {
            let idle = match state.try_lock() {
                Ok(st) => st.opens == 0 && st.pending.is_empty(),
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    let st = p.into_inner();
                    st.opens == 0 && st.pending.is_empty()
                }
                Err(std::sync::TryLockError::WouldBlock) => false,
            };
            if idle {
                v.remove(&self.name);
            }
        }
        drop(state);
    }
}

/// A storage lock this call took (released by `release`), or one an open
/// holds.
pub(crate) struct Held {
    pub(crate) name: String,
    pub(crate) token: u64,
    pub(crate) took: bool,
}

impl VolState {
    /// Forgets every pending write.
    pub(crate) fn clear_pending(&mut self) {
        if !self.pending.is_empty() {
            // Rounds abandoned: their objects may be orphans.
            self.orphan_free = false;
        }
        self.pending.clear();
    }

    /// Forgets the pending write of `index`.
    pub(crate) fn drop_pending(&mut self, index: u64) {
        self.pending.remove(&index);
    }

    /// The fence of the volume `name`'s lock as held here.
    pub(crate) fn fence<'a>(&self, name: &'a str) -> archipelago_store::Fence<'a> {
        archipelago_store::Fence {
            lock: name,
            token: self.token,
        }
    }

    /// Whether journaled records (durable or in the write-back journal)
    /// are not yet checkpointed into the stored map.
    pub(crate) fn journaled(&self) -> bool {
        self.journal_len > 0 || self.volatile_len > 0
    }
}

impl Mapper {
    pub(crate) fn state(&self, name: &str) -> StateRef<'_> {
        let mut v = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        let state = v.entry(name.to_owned()).or_default().clone();
        StateRef {
            volumes: &self.volumes,
            name: name.to_owned(),
            state: Some(state),
        }
    }

    pub(crate) fn lock_state(s: &Arc<Mutex<VolState>>) -> MutexGuard<'_, VolState> {
        s.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn two<'a>(
        a: &'a Arc<Mutex<VolState>>,
        b: &'a Arc<Mutex<VolState>>,
        a_first: bool,
    ) -> (MutexGuard<'a, VolState>, MutexGuard<'a, VolState>) {
        if a_first {
            let ga = Self::lock_state(a);
            let gb = Self::lock_state(b);
            (ga, gb)
        } else {
            let gb = Self::lock_state(b);
            let ga = Self::lock_state(a);
            (ga, gb)
        }
    }

    /// Takes `name`'s storage lock unless this host's opens hold it.
    pub(crate) fn acquire(&self, name: &str, st: &VolState) -> Result<Held, Error> {
        if st.opens > 0 {
            return Ok(Held {
                name: name.to_owned(),
                token: st.token,
                took: false,
            });
        }
        let token = self
            .maps
            .try_lock(name, &self.host_id)
            .map_err(|e| store_err(name, e))?;
        Ok(Held {
            name: name.to_owned(),
            token,
            took: true,
        })
    }

    pub(crate) fn release(&self, held: Held) {
        if held.took {
            let _ = self.maps.unlock(&held.name, &self.host_id);
        }
    }

    /// Runs `f` holding `name`'s lock (taken for the call if no open holds
    /// it).
    pub(crate) fn locked<T>(
        &self,
        name: &str,
        st: &mut VolState,
        f: impl FnOnce(&mut VolState, &Held) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let held = self.acquire(name, st)?;
        let r = self
            .settle_if_closed(name, st, &held)
            .and_then(|()| f(st, &held));
        self.release(held);
        r
    }

    /// Checks that the volume's lock is still ours with our token, before a
    /// change to the data store: a host whose lock was broken must not
    /// delete or overwrite objects the new owner may be using. On a broken
    /// lock, forgets the volume's state and fails with `Fenced`.
    pub(crate) fn check_fence(&self, name: &str, st: &mut VolState) -> Result<(), Error> {
        let owner = self.lock_owner_or_forget(name, st)?;
        if owner != Some((self.host_id.clone(), st.token)) {
            *st = VolState::default();
            return Err(err(
                ErrorCode::Fenced,
                format!("{name}: our lock was broken"),
            ));
        }
        st.fence_checked = Some(std::time::Instant::now());
        Ok(())
    }

    /// The volume lock's owner and token. If the map store says this host
    /// was fenced (its client blocklisted after another host broke one of
    /// our locks), the volume's state is forgotten before failing: it is
    /// reopened, and so relocked through a new client, or not at all.
    pub(crate) fn lock_owner_or_forget(
        &self,
        name: &str,
        st: &mut VolState,
    ) -> Result<Option<(String, u64)>, Error> {
        match self.maps.lock_owner(name) {
            Ok(owner) => Ok(owner),
            Err(e) => {
                if e.code() == ErrorCode::Fenced {
                    *st = VolState::default();
                }
                Err(store_err(name, e))
            }
        }
    }
}
