//! The sweep: merges each sorted candidate file with the sorted
//! references and deletes what the table in the crate docs allows,
//! checking the collectors' lock between batches (and before every
//! delete of a content or legacy object).

use super::*;

pub(crate) struct Sweeper<'a> {
    pub(crate) opts: &'a GcOptions,
    pub(crate) lock: Option<(&'a str, u64)>,
    pub(crate) maps: &'a dyn ObjectStore,
    pub(crate) writers: &'a HashMap<u64, Writer>,
    pub(crate) conservative: bool,
    /// A pass that only reads the chunks it would delete.
    pub(crate) verifying: bool,
    pub(crate) since_check: u64,
    pub(crate) done: u64,
    pub(crate) total: u64,
    pub(crate) report: &'a mut GcReport,
    pub(crate) progress: &'a mut dyn FnMut(Phase, u64, u64),
}

/// What to do with an unreferenced object.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Delete,
    KeepInFlight,
    Ignore,
}

impl Sweeper<'_> {
    fn verdict(&self, name: &str, in_data: bool) -> Verdict {
        match (names::kind(name), in_data) {
            (Kind::Owned { id, epoch }, true) => match self.writers.get(&id) {
                Some(w) if w.removed || epoch < w.epoch => Verdict::Delete,
                Some(_) => Verdict::KeepInFlight,
                // No volume header with this id: nothing we can argue
                // about (a header we could not see); keep it.
                None => Verdict::KeepInFlight,
            },
            (Kind::Content | Kind::Legacy, true) => {
                if self.conservative {
                    Verdict::KeepInFlight
                } else {
                    Verdict::Delete
                }
            }
            (Kind::Chunk { owner, serial }, false) => match self.writers.get(&owner) {
                Some(w) if !w.removed && serial >= w.next_serial => Verdict::KeepInFlight,
                Some(_) => Verdict::Delete,
                None if self.conservative => Verdict::KeepInFlight,
                None => Verdict::Delete,
            },
            _ => Verdict::Ignore,
        }
    }

    /// Checks the collectors' lock is still ours: once per
    /// [`DELETE_BATCH`] deletes, and before every delete when `now` (a
    /// content or legacy object, which a hash released by a newer
    /// collector's finished generation may have just chosen to reuse).
    fn check_lock(&mut self, now: bool) -> Result<(), GcError> {
        if stopped(self.opts) {
            return Err(GcError::Interrupted {
                freed: self.report.freed_objects,
            });
        }
        if let Some((owner, token)) = self.lock {
            if (now || self.since_check == 0)
                && self.maps.lock_owner(GC_STATE_OBJECT)? != Some((owner.to_owned(), token))
            {
                return Err(GcError::Fenced {
                    freed: self.report.freed_objects,
                });
            }
            self.since_check = (self.since_check + 1) % DELETE_BATCH;
        }
        Ok(())
    }

    pub(crate) fn sweep(
        &mut self,
        store: &dyn ObjectStore,
        in_data: bool,
        candidates: &std::path::Path,
        refs: &std::path::Path,
    ) -> Result<(), GcError> {
        let mut refs = extsort::read_names(refs)?.peekable();
        for c in extsort::read_names(candidates)? {
            let c = c?;
            if !self.verifying {
                self.done += 1;
            }
            if !self.verifying && self.done % 1024 == 0 {
                (self.progress)(Phase::Sweep, self.done, self.total);
            }
            // Advance the references to the first ≥ c.
            let mut referenced = false;
            while let Some(r) = refs.peek() {
                let r = match r {
                    Ok(r) => r,
                    Err(_) => return Err(refs.next().expect("peeked").unwrap_err().into()),
                };
                match r.as_str().cmp(c.as_str()) {
                    std::cmp::Ordering::Less => {
                        refs.next();
                    }
                    std::cmp::Ordering::Equal => {
                        referenced = true;
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            if referenced {
                continue;
            }
            match self.verdict(&c, in_data) {
                Verdict::Ignore => {}
                Verdict::KeepInFlight if self.verifying => {}
                Verdict::KeepInFlight => self.report.kept_in_flight += 1,
                Verdict::Delete if self.verifying => is_chunk(store, &c)?,
                Verdict::Delete => {
                    if stopped(self.opts) {
                        return Err(GcError::Interrupted {
                            freed: self.report.freed_objects,
                        });
                    }
                    let size = match store.stat(&c) {
                        Ok(s) => s.size,
                        Err(StoreError::NotFound { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    if !self.opts.dry_run {
                        let shared = matches!(names::kind(&c), Kind::Content | Kind::Legacy);
                        self.check_lock(in_data && shared)?;
                        match store.delete(&c) {
                            Ok(()) => {}
                            Err(StoreError::NotFound { .. }) => continue,
                            Err(e) => return Err(e.into()),
                        }
                        log::debug!("gc: freed {c} ({size} bytes)");
                    }
                    self.report.freed_objects += 1;
                    self.report.freed_bytes += size;
                    if !in_data {
                        self.report.freed_chunks += 1;
                    }
                }
            }
        }
        if !self.verifying {
            (self.progress)(Phase::Sweep, self.done, self.total);
        }
        Ok(())
    }
}

impl Sweeper<'_> {
    /// Deletes the removed header `name` of `key` (volume id, epoch) if it
    /// is still that: under a volume name, holding the name's lock, as
    /// every operation creating a header there does (a name used again
    /// meanwhile holds a live header, never deleted).
    ///
    /// A volume's writable header is its writer record, which lets a run
    /// free the volume's objects: it goes only once no object or chunk of
    /// its id is left (one created after this run's listing, by a write
    /// that committed just before the removal, is freed by the next run,
    /// which still has the record).
    pub(crate) fn delete_removed_header(
        &mut self,
        data: &dyn ObjectStore,
        name: &str,
        key: (u64, u64),
        writable: bool,
    ) -> Result<(), GcError> {
        if stopped(self.opts) {
            return Err(GcError::Interrupted {
                freed: self.report.freed_objects,
            });
        }
        // (A dry run deleted nothing: it counts the header as the real run
        // would after freeing the objects it counted.)
        if writable && !self.opts.dry_run {
            let prefix = format!("{:016x}_", key.0);
            let marker = format!("{prefix}{:016x}", 0);
            let left = !data.list_page(&prefix, None, 1)?.names.is_empty()
                || self
                    .maps
                    .list_page(&prefix, None, 2)?
                    .names
                    .iter()
                    .any(|n| *n != marker);
            if left {
                return Ok(());
            }
        }
        let tombstone = name.starts_with(TOMBSTONE_PREFIX);
        let owner = self.lock.map(|(o, _)| o.to_owned());
        if !self.opts.dry_run {
            self.check_lock(true)?;
            if !tombstone {
                let owner = owner.as_deref().expect("a real run holds the gc lock");
                match self.maps.try_lock(name, owner) {
                    Ok(_) => {}
                    Err(StoreError::Locked { .. }) => return Ok(()), // in use: next run
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let r = (|| {
            let Some(bytes) = read_all(self.maps, name)? else {
                return Ok(());
            };
            let same = Header::decode(&bytes)
                .is_ok_and(|h| h.flags.removed && (h.volume_id, h.epoch) == key);
            if !same {
                return Ok(());
            }
            if !self.opts.dry_run {
                match self.maps.delete(name) {
                    Ok(()) => {}
                    Err(StoreError::NotFound { .. }) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
                log::debug!("gc: freed the removed header {name}");
            }
            self.report.freed_objects += 1;
            self.report.freed_bytes += bytes.len() as u64;
            self.report.freed_headers += 1;
            Ok(())
        })();
        if !self.opts.dry_run && !tombstone {
            let _ = self.maps.unlock(name, owner.as_deref().expect("held"));
        }
        r
    }
}

/// Fails [`GcError::Unknown`] unless the map-store object `name` (named
/// like a chunk) is one, or is gone.
fn is_chunk(maps: &dyn ObjectStore, name: &str) -> Result<(), GcError> {
    let mut magic = [0u8; 4];
    match maps.read(name, 0, &mut magic) {
        Ok(_) if magic == archipelago_mapfmt::chunk::CHUNK_MAGIC => Ok(()),
        Ok(_) => Err(GcError::Unknown {
            name: name.into(),
            why: "named like a map chunk but not one".into(),
        }),
        Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
