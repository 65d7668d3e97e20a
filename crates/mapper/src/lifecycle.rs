//! Volume lifecycle: create, info, open/close, snapshot, clone, remove,
//! rename and update (old formats to format 3). Each operation checks
//! its names, takes the volume's state and lock, reads the current header
//! and commits a new one; the rows of the crate docs' operation table say
//! what each writes and refuses. Resizing, which also changes data, is in
//! `resize.rs`; flatten and rollback in `lineage.rs`.

use archipelago_mapfmt::{
    clone_from, gcmeta, snapshot, upgrade, v2, Detected, Header, MapError,
    DEFAULT_OBJECT_SIZE_LOG2, MAX_OBJECT_SIZE_LOG2, MIN_OBJECT_SIZE_LOG2,
};
use archipelago_protocol::names::is_content_name;
use archipelago_protocol::sizes::check_volume_size;
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::StoreError;

use crate::load::{load_err, marker_name, read_map, read_old_map, LoadError, MapObject, Vol};
use crate::locks::VolState;
use crate::{check_name, err, map_err, random_id, store_err, upgrade_hint, Mapper};

pub use archipelago_protocol::payload::VolumeInfo;

/// How many created, not yet opened volumes a mapper remembers
/// (`Mapper::created`).
const MAX_CREATED_NOTED: usize = 4096;

impl Mapper {
    fn info_of(vol: &Vol) -> VolumeInfo {
        let h = &vol.header;
        VolumeInfo {
            size: h.size,
            object_size: h.object_size(),
            readonly: h.flags.readonly,
            removed: h.flags.removed,
            hashed: h.flags.hashed,
            epoch: h.epoch,
            volume_id: if vol.version == 3 { h.volume_id } else { 0 },
            parent: h.parent.as_ref().map(|p| p.name.clone()),
            format_version: vol.version,
        }
    }

    /// Creates the volume `name` of `size` bytes with objects of
    /// `object_size` bytes (default 4 MiB).
    pub fn create(&self, name: &str, size: u64, object_size: Option<u64>) -> Result<(), Error> {
        check_name(name)?;
        check_volume_size(size)
            .map_err(|e| err(ErrorCode::InvalidArgument, format!("{name}: {e}")))?;
        let log2 = match object_size {
            None => DEFAULT_OBJECT_SIZE_LOG2,
            Some(os)
                if os.is_power_of_two()
                    && (MIN_OBJECT_SIZE_LOG2..=MAX_OBJECT_SIZE_LOG2)
                        .contains(&os.trailing_zeros()) =>
            {
                os.trailing_zeros()
            }
            Some(os) => {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!("{name}: object size {os} is not a power of two from 4 KiB to 1 GiB"),
                ))
            }
        };
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        if st.opens > 0 {
            return Err(err(ErrorCode::Exists, format!("volume {name} exists")));
        }
        self.locked(name, &mut st, |st, held| {
            if self.taken(name)? {
                return Err(err(ErrorCode::Exists, format!("volume {name} exists")));
            }
            let h = Header::new(random_id(), size, log2).map_err(|e| map_err(name, e))?;
            self.check_header_fits(&h)?;
            self.commit(name, Some(st), Some(held), vec![], &h)?;
            self.note_created(name, h.volume_id, held.token);
            Ok(())
        })
    }

    /// What `name` is (any format but v0).
    pub fn info(&self, name: &str) -> Result<VolumeInfo, Error> {
        Ok(Self::info_of(&self.load(name, false, None)?))
    }

    /// [`info`](Self::info), reading a map without a header as v0 (a
    /// Pithos hashmap) of `size_hint` bytes if given.
    pub fn info_assume_v0(&self, name: &str, size_hint: Option<u64>) -> Result<VolumeInfo, Error> {
        Ok(Self::info_of(&self.load(name, true, size_hint)?))
    }

    /// Opens `name`. Writable: takes its storage lock (shared by every
    /// writable open on this host, released by the last
    /// [`close`](Self::close)). Read-only: checks it can be read and takes
    /// nothing (there is nothing to close).
    pub fn open(&self, name: &str, writable: bool) -> Result<VolumeInfo, Error> {
        if !writable {
            let vol = self.load(name, false, None)?;
            if vol.header.flags.removed {
                return Err(err(
                    ErrorCode::NotFound,
                    format!("volume {name} was removed"),
                ));
            }
            return Ok(Self::info_of(&vol));
        }
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        self.open_locked(name, &mut st)
    }

    /// Opens `name` for writing and holds it unchanged for one reader (an
    /// export): refused (`Busy`) while it is open for writing on this
    /// host; until [`close`](Self::close), every other open and every
    /// write of it is refused (`Busy`). Other hosts are kept out by the
    /// storage lock, as for any writable open.
    pub fn open_exclusive(&self, name: &str) -> Result<VolumeInfo, Error> {
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        if st.opens > 0 {
            return Err(err(
                ErrorCode::Busy,
                format!("{name} is in use on this host (open for writing)"),
            ));
        }
        let info = self.open_locked(name, &mut st)?;
        st.exclusive = true;
        Ok(info)
    }

    pub(crate) fn open_locked(&self, name: &str, st: &mut VolState) -> Result<VolumeInfo, Error> {
        refuse_exclusive(name, st)?;
        if st.opens > 0 {
            let h = st.header.clone().expect("a held volume is cached");
            st.opens += 1;
            return Ok(Self::info_of(&Vol {
                version: 3,
                header: h,
                legacy_chunks: None,
                overlay: None,
            }));
        }
        check_name(name)?;
        let held = self.acquire(name, st)?;
        let r = (|| {
            let vol = self.load(name, false, None)?;
            if vol.version != 3 {
                return Err(upgrade_hint(name));
            }
            if vol.header.flags.removed {
                return Err(err(
                    ErrorCode::NotFound,
                    format!("volume {name} was removed"),
                ));
            }
            if vol.header.flags.readonly {
                return Err(err(
                    ErrorCode::ReadOnly,
                    format!("{name} is a snapshot: clone it to write"),
                ));
            }
            Ok(vol)
        })();
        match r {
            Ok(vol) => {
                st.opens = 1;
                st.token = held.token;
                st.header = Some(vol.header.clone());
                st.clear_pending();
                st.orphan_free = vol.overlay.is_none()
                    && self.orphan_free_at_open(name, &vol.header, held.token);
                st.journal_len = 0;
                st.volatile_len = 0;
                // A journal left by the last owner: its records are in
                // the header now (replayed); they become the stored map
                // before this open appends its own.
                if vol.overlay.is_some() {
                    if let Err(e) = self.settle_journal(name, Some(st), &held, &vol) {
                        *st = VolState::default();
                        self.release(held);
                        return Err(e);
                    }
                }
                Ok(Self::info_of(&vol))
            }
            Err(e) => {
                self.release(held);
                Err(e)
            }
        }
    }

    /// Closes one writable open of `name`; the last one releases the lock
    /// (the close completes even if the release fails, which is then
    /// reported).
    pub fn close(&self, name: &str) -> Result<(), Error> {
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        if st.opens == 0 {
            return Err(err(
                ErrorCode::NotFound,
                format!("{name} is not open for writing on this host"),
            ));
        }
        if st.opens == 1 && st.journaled() {
            // The last close checkpoints the journal. Should that fail,
            // the journal stays and the next owner replays it.
            if let Err(e) = self.checkpoint(name, &mut st) {
                log::warn!("{name}: checkpoint at close: {e}");
            }
            if st.opens == 0 {
                return Ok(()); // fenced: forgotten already
            }
        }
        st.opens -= 1;
        if st.opens > 0 {
            return Ok(());
        }
        *st = VolState::default();
        match self.maps.unlock(name, &self.host_id) {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(name, e)),
        }
    }

    /// Whether this host holds `name` open for writing (test and peer
    /// introspection).
    pub fn is_open(&self, name: &str) -> bool {
        let s = self.state(name);
        let st = Self::lock_state(&s);
        st.opens > 0
    }

    /// The volumes this host holds open for writing (explicitly or by an
    /// implicit open of a write), sorted.
    pub fn open_volumes(&self) -> Vec<String> {
        // Names first, then each through a use of its state (never a state
        // lock under the map's lock, and idle states still go away).
        let mut names: Vec<String> = self
            .volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names.retain(|n| self.is_open(n));
        names
    }

    /// Snapshots `volume` as `snap_name` (the volume must be open for
    /// writing here, or unlocked).
    pub fn snapshot(&self, volume: &str, snap_name: &str) -> Result<(), Error> {
        check_name(volume)?;
        check_name(snap_name)?;
        if volume == snap_name {
            return Err(err(ErrorCode::Exists, format!("volume {snap_name} exists")));
        }
        let (sv, ss) = (self.state(volume), self.state(snap_name));
        let (mut vst, mut sst) = Self::two(&sv, &ss, volume < snap_name);
        if sst.opens > 0 {
            return Err(err(ErrorCode::Exists, format!("volume {snap_name} exists")));
        }
        if !vst.pending.is_empty() {
            return Err(err(
                ErrorCode::Busy,
                format!("{volume} has uncommitted writes"),
            ));
        }
        self.locked(volume, &mut vst, |vst, vheld| {
            let h = self.current(volume, vst)?;
            self.locked(snap_name, &mut sst, |_, sheld| {
                if self.taken(snap_name)? {
                    return Err(err(ErrorCode::Exists, format!("volume {snap_name} exists")));
                }
                // What the snapshot freezes must be stable before it
                // exists: the composer drained the volume's writes, but a
                // write-back data store may hold them in its cache.
                self.data.sync().map_err(|e| store_err(volume, e))?;
                let (snap, going_on) = snapshot(&h, snap_name).map_err(|e| map_err(volume, e))?;
                // The volume first: it freezes the old epoch.
                self.commit(volume, Some(vst), Some(vheld), vec![], &going_on)?;
                self.commit(snap_name, None, Some(sheld), vec![], &snap)
            })
        })
    }

    /// Clones the snapshot `snap` as `new_name`, `size` bytes (default:
    /// the snapshot's; never smaller).
    pub fn clone_volume(&self, snap: &str, new_name: &str, size: Option<u64>) -> Result<(), Error> {
        check_name(snap)?;
        check_name(new_name)?;
        if snap == new_name {
            return Err(err(ErrorCode::Exists, format!("volume {new_name} exists")));
        }
        let (sa, sb) = (self.state(snap), self.state(new_name));
        let (mut sst, mut nst) = Self::two(&sa, &sb, snap < new_name);
        if nst.opens > 0 {
            return Err(err(ErrorCode::Exists, format!("volume {new_name} exists")));
        }
        // The source's lock, for the whole clone: a remove of the
        // snapshot (on any host) takes it too, so it cannot mark the
        // snapshot removed while the clone commits references to it.
        self.locked(snap, &mut sst, |_, _| {
            let src = self.load_v3(snap)?;
            if src.flags.removed {
                return Err(err(ErrorCode::NotFound, format!("{snap} was removed")));
            }
            if !src.flags.readonly {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!("{snap} is not a snapshot"),
                ));
            }
            let size = size.unwrap_or(src.size);
            if size < src.size {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!(
                        "{new_name}: a clone cannot be smaller than {snap} ({size} < {})",
                        src.size
                    ),
                ));
            }
            self.locked(new_name, &mut nst, |nst, held| {
                if self.taken(new_name)? {
                    return Err(err(ErrorCode::Exists, format!("volume {new_name} exists")));
                }
                // The clone's base must be stable before anything can be
                // written over it (a snapshot syncs what it freezes; this
                // covers a source whose data arrived otherwise).
                self.data.sync().map_err(|e| store_err(snap, e))?;
                let mut tries = 0;
                let h = loop {
                    match clone_from(&src, snap, random_id(), size) {
                        Err(MapError::BadVolumeId { .. }) if tries < 8 => tries += 1,
                        r => break r.map_err(|e| map_err(new_name, e))?,
                    }
                };
                self.check_header_fits(&h)?;
                self.commit(new_name, Some(nst), Some(held), vec![], &h)?;
                self.note_created(new_name, h.volume_id, held.token);
                Ok(())
            })
        })
    }

    /// Refuses a header the map store could not take in one write (a
    /// volume too large for its object size: the header lists a chunk
    /// per 4,096 objects), naming the limit, instead of letting the
    /// store refuse it vaguely.
    pub(crate) fn check_header_fits(&self, h: &Header) -> Result<(), Error> {
        let Some(max) = self.maps.max_object_bytes() else {
            return Ok(());
        };
        let len = h.encoded_len();
        if len <= max {
            return Ok(());
        }
        // The fixed part, then one chunk reference per chunk.
        let per_chunk = archipelago_mapfmt::header::CHUNK_REF_LEN as u64;
        let fixed = len - h.chunks.len() as u64 * per_chunk;
        let most = (max.saturating_sub(fixed) / per_chunk)
            .saturating_mul(archipelago_mapfmt::ENTRIES_PER_CHUNK as u64)
            .saturating_mul(h.object_size());
        Err(err(
            ErrorCode::InvalidArgument,
            format!(
                "{} with {} objects is too large: its map header would be {} bytes, more \
                 than the {} bytes the map store takes in one write; with these objects a \
                 volume may have at most {} (larger objects allow larger volumes)",
                human(h.size),
                human(h.object_size()),
                len,
                max,
                human(most)
            ),
        ))
    }

    /// Notes that `name` (volume id `id`) was just created under the lock
    /// token `token` (see `Mapper::created`).
    fn note_created(&self, name: &str, id: u64, token: u64) {
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        // Volumes created and never opened here: forgetting them only
        // costs their first writes a delete each.
        if created.len() >= MAX_CREATED_NOTED {
            created.clear();
        }
        created.insert(name.to_owned(), (id, token));
    }

    /// Whether an open of `name` (header `h`) that took its lock with
    /// `token` finds no orphan possible: `name` was created here, with
    /// this id, under the token just before. Consumes the note.
    fn orphan_free_at_open(&self, name: &str, h: &Header, token: u64) -> bool {
        let noted = self
            .created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        noted.is_some_and(|(id, t)| id == h.volume_id && t.checked_add(1) == Some(token))
    }

    /// Names of the live volumes and snapshots that depend on the
    /// snapshot `snap` (header `h`) through a clone: the exact rule is
    /// [`archipelago_mapfmt::lineage::dependents`], which `vlmc children`
    /// shows too.
    fn clones_of(&self, _snap: &str, h: &Header) -> Result<Vec<String>, Error> {
        self.dependents_of(h)
    }

    /// Whether `name` is taken by a volume or snapshot, for an operation
    /// about to create it (holding its lock). A REMOVED header there is
    /// moved out of the way first ([`retire`](Self::retire)): a removed
    /// name can be used again.
    pub(crate) fn taken(&self, name: &str) -> Result<bool, Error> {
        match read_map(&*self.maps, name, false) {
            Ok(None) => Ok(false),
            Ok(Some(MapObject::V3(h))) if h.flags.removed => {
                self.retire(name, &h)?;
                Ok(false)
            }
            _ => self.exists(name),
        }
    }

    /// Moves the REMOVED header `h` of `name` to its tombstone
    /// ([`gcmeta::tombstone_name`]), keeping its lineage, then deletes
    /// `name`. Either crash point leaves the header under one name or
    /// both (the same identity, removed): nothing to undo.
    fn retire(&self, name: &str, h: &Header) -> Result<(), Error> {
        let tomb = gcmeta::tombstone_name(h.volume_id, h.epoch);
        let bytes = h.encode().map_err(|e| map_err(name, e))?;
        self.maps
            .write_full(&tomb, &bytes, true)
            .map_err(|e| store_err(&tomb, e))?;
        match self.maps.delete(name) {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(name, e)),
        }
    }

    /// Marks `name` REMOVED (frees nothing; garbage collection is later
    /// work). The name can be used again at once (the removed header then
    /// moves to a tombstone); a collection deletes the removed header
    /// once no live header needs it. Refused for a snapshot with clones and for a volume locked
    /// by another host. An open on this host is closed.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        check_name(name)?;
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        let was_open = st.opens > 0;
        self.locked(name, &mut st, |st, held| {
            let mut h = self.current(name, st)?;
            if h.flags.removed {
                return Err(err(ErrorCode::NotFound, format!("{name} was removed")));
            }
            if h.flags.readonly {
                let clones = self.clones_of(name, &h)?;
                if !clones.is_empty() {
                    return Err(err(
                        ErrorCode::InUse,
                        format!("snapshot {name} still has clones: {}", clones.join(", ")),
                    ));
                }
            }
            h.flags.removed = true;
            h.commit_seq += 1;
            self.commit(name, Some(st), Some(held), vec![], &h)
        })?;
        if was_open {
            *st = VolState::default();
            let _ = self.maps.unlock(name, &self.host_id);
        }
        Ok(())
    }

    /// Removes `name` whose header cannot be decoded (corrupt): deletes
    /// the header object under the volume's lock, so that the name can be
    /// used again and a garbage collection (which a corrupt map stops)
    /// can run; it then frees what only that map named. Refused for a
    /// readable map (remove it as usual), a missing one, one whose store
    /// fails (a corrupt map is certain, an I/O error is not), and while
    /// it is open here.
    pub fn remove_corrupt(&self, name: &str) -> Result<(), Error> {
        check_name(name)?;
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        if st.opens > 0 {
            return Err(err(ErrorCode::Busy, format!("{name} is open on this host")));
        }
        self.locked(name, &mut st, |_, held| {
            match read_map(&*self.maps, name, false) {
                Err(LoadError::Corrupt { .. } | LoadError::Unrecognised { .. }) => {}
                Ok(Some(_)) => {
                    return Err(err(
                        ErrorCode::InvalidArgument,
                        format!("the map of {name} reads fine: remove it without force"),
                    ))
                }
                Ok(None) => return Err(err(ErrorCode::NotFound, format!("no volume {name}"))),
                Err(e) => return Err(load_err(e)),
            }
            log::warn!("{name}: removing its corrupt map (forced)");
            let fence = archipelago_store::Fence {
                lock: name,
                token: held.token,
            };
            self.maps
                .delete_fenced(name, fence)
                .map_err(|e| store_err(name, e))
        })
    }

    /// Renames `old` to `new` (not while open on this host).
    ///
    /// Order: a marker `{id}_0000000000000000` recording `old\nnew`, the
    /// header under `new`, delete `old`, delete the marker. While the
    /// marker names both and `new` holds the same volume id, `old` loads as
    /// not found: a crash anywhere leaves exactly one live name.
    pub fn rename(&self, old: &str, new: &str) -> Result<(), Error> {
        check_name(old)?;
        check_name(new)?;
        if old == new {
            return Err(err(ErrorCode::Exists, format!("volume {new} exists")));
        }
        let (sa, sb) = (self.state(old), self.state(new));
        let (mut ost, mut nst) = Self::two(&sa, &sb, old < new);
        if ost.opens > 0 {
            return Err(err(
                ErrorCode::Busy,
                format!("{old} is open on this host: close it first"),
            ));
        }
        if nst.opens > 0 {
            return Err(err(ErrorCode::Exists, format!("volume {new} exists")));
        }
        self.locked(old, &mut ost, |_, _| {
            self.locked(new, &mut nst, |_, nheld| {
                let mut h = self.load_v3(old)?;
                if h.flags.removed {
                    return Err(err(ErrorCode::NotFound, format!("{old} was removed")));
                }
                if self.taken(new)? {
                    return Err(err(ErrorCode::Exists, format!("volume {new} exists")));
                }
                let marker = marker_name(h.volume_id);
                self.maps
                    .write_full(&marker, format!("{old}\n{new}").as_bytes(), true)
                    .map_err(|e| store_err(old, e))?;
                h.commit_seq += 1;
                self.commit(new, None, Some(nheld), vec![], &h)?;
                match self.maps.delete(old) {
                    Ok(()) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(store_err(old, e)),
                }
                let _ = self.maps.delete(&marker);
                Ok(())
            })
        })
    }

    /// Converts an old-format map (v1, v2) to format 3 in place.
    /// Already format 3: nothing to do.
    pub fn update(&self, name: &str) -> Result<(), Error> {
        self.update_impl(name, false, None)
    }

    /// [`update`](Self::update), reading a map without a header as v0 of
    /// `size_hint` bytes if given.
    pub fn update_assume_v0(&self, name: &str, size_hint: Option<u64>) -> Result<(), Error> {
        self.update_impl(name, true, size_hint)
    }

    /// Writes the Pithos (v0) hashmap `hashmap` (64 hex digits) as the
    /// format 3 snapshot `name` (`size_hint`: its size, which v0 does not
    /// record), leaving the hashmap as it is: Pithos still reads it, and
    /// the objects both name are content objects, shared.
    pub fn upgrade_v0(
        &self,
        hashmap: &str,
        name: &str,
        size_hint: Option<u64>,
    ) -> Result<(), Error> {
        check_name(name)?;
        let vol = self.load(hashmap, true, size_hint)?;
        if vol.version != 0 {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("{hashmap} is not a v0 (Pithos) map"),
            ));
        }
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        if st.opens > 0 {
            return Err(err(ErrorCode::Exists, format!("volume {name} exists")));
        }
        self.locked(name, &mut st, |st, held| {
            if self.taken(name)? {
                return Err(err(ErrorCode::Exists, format!("volume {name} exists")));
            }
            let (detected, bytes) = match read_map(&*self.maps, hashmap, true) {
                Ok(Some(MapObject::Old { format, bytes })) => (format, bytes),
                Ok(_) => return Err(Self::not_found(hashmap)),
                Err(e) => return Err(load_err(e)),
            };
            let map = read_old_map(&*self.maps, hashmap, detected, &bytes, size_hint)
                .map_err(load_err)?;
            let (h, chunks) = upgrade(&map, random_id()).map_err(|e| map_err(name, e))?;
            self.commit(name, Some(st), Some(held), chunks, &h)
        })
    }

    fn update_impl(&self, name: &str, assume_v0: bool, hint: Option<u64>) -> Result<(), Error> {
        if assume_v0 && is_content_name(name.as_bytes()) {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!(
                    "{name} is a Pithos hashmap, which stays as it is: upgrade it to a volume name (Mapper::upgrade_v0)"
                ),
            ));
        }
        check_name(name)?;
        let s = self.state(name);
        let mut st = Self::lock_state(&s);
        if st.opens > 0 {
            return Ok(()); // only format 3 volumes open for writing
        }
        self.locked(name, &mut st, |st, held| {
            let (detected, bytes) = match read_map(&*self.maps, name, assume_v0) {
                Ok(Some(MapObject::Old { format, bytes })) => (format, bytes),
                // Format 3 already, decodable or not (only a format 3
                // header is decoded by read_map): nothing to convert.
                Ok(Some(MapObject::V3(_))) | Err(LoadError::Corrupt { .. }) => return Ok(()),
                Ok(None) => return Err(Self::not_found(name)),
                Err(e) => return Err(load_err(e)),
            };
            let map = read_old_map(&*self.maps, name, detected, &bytes, hint).map_err(load_err)?;
            let (h, chunks) = upgrade(&map, random_id()).map_err(|e| map_err(name, e))?;
            self.commit(name, Some(st), Some(held), chunks, &h)?;
            if detected == Detected::V2 {
                // Best effort: the old map-data objects are garbage now.
                let per = v2::entries_per_object(map.object_size as u32).max(1);
                for block in 0..map.nr_objects().div_ceil(per) {
                    let _ = self.maps.delete(&v2::map_object_name(name, block));
                }
            }
            Ok(())
        })
    }
}

/// Refuses a volume held by an exclusive open (an export in progress).
pub(crate) fn refuse_exclusive(name: &str, st: &VolState) -> Result<(), Error> {
    if st.exclusive {
        return Err(err(
            ErrorCode::Busy,
            format!("{name} is held by an export on this host (vlmc close {name} if none runs)"),
        ));
    }
    Ok(())
}

/// `n` bytes in the largest binary unit it reaches, rounded down to a
/// tenth (`8 PiB`, `3.9 PiB`, `4 MiB`).
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["PiB", "TiB", "GiB", "MiB", "KiB"];
    for (i, unit) in UNITS.iter().enumerate() {
        let scale = 1u64 << (10 * (5 - i));
        if n >= scale {
            let tenths = (n as u128 * 10 / scale as u128) as u64;
            return if tenths % 10 == 0 {
                format!("{} {unit}", tenths / 10)
            } else {
                format!("{}.{} {unit}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{n} bytes")
}
