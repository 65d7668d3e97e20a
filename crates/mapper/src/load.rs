//! Map loading: reading a map's header and chunks, in every format.
//!
//! The free functions read from any [`ObjectStore`] and keep no state:
//! the garbage collector (`archipelago-gc`) uses them too, so that what a
//! map refers to is read one way, with one retry rule. A store read is
//! not atomic with the stat that sized its buffer, so an object replaced
//! in between (a header committed by another host, say) can be read at
//! the wrong size: [`read_object`] reads again, at most [`READ_TRIES`]
//! times, whenever the size the read reports is not the one it read at.
//!
//! The `impl Mapper` block adds what only the mapper does: the rename
//! marker (a name renamed away loads as not found), old maps (v0, v1, v2)
//! converted in memory to a format 3 header and chunks (`Vol`) so that
//! every read path works on one shape, and the chunk cache. Chunks are
//! immutable once a header names them, so decoded ones are cached
//! whatever the lock; a header is served from the cache only while this
//! host holds the volume's lock (`Mapper::current`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use archipelago_mapfmt::{
    detect, upgrade, v0, v1, v2, Chunk, ChunkRef, Detected, Entry, Header, LegacyMap, MapError,
    DETECT_LEN, ENTRIES_PER_CHUNK,
};
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::{ObjectStore, StoreError};

use crate::locks::VolState;
use crate::{check_name, err, map_err, store_err, upgrade_hint, Mapper};

/// How many times [`read_object`] reads an object whose size changes
/// between the stat and the read before it gives up. A map object
/// changes size only when a commit changes its shape (a resize, a new
/// parent), so a second read almost always settles; the bound keeps a
/// reader from spinning on an object rewritten without pause.
pub const READ_TRIES: u32 = 8;

/// Why a map could not be loaded. Each variant names the object.
#[derive(Debug)]
pub enum LoadError {
    /// A store call on `name` failed. An object whose size changed on
    /// each of [`READ_TRIES`] reads is a [`StoreError::Io`] too.
    Store {
        /// The object.
        name: String,
        /// The store's error.
        error: StoreError,
    },
    /// `name` does not start as any map format ([`detect`] failed).
    Unrecognised {
        /// The object.
        name: String,
        /// What [`detect`] said.
        error: MapError,
    },
    /// `name` is a map in an old format (v0, v1, v2) where format 3 was
    /// asked for ([`read_header`]).
    OldFormat {
        /// The object.
        name: String,
        /// Its format.
        format: Detected,
    },
    /// The map `name` is of a known format but does not decode: corrupt,
    /// or not what it says it is.
    Corrupt {
        /// The object (the volume's name for an old map's parts).
        name: String,
        /// The decoder's error.
        error: MapError,
    },
    /// A header names the chunk `name`, which does not exist.
    MissingChunk {
        /// The chunk object.
        name: String,
    },
    /// The chunk `name` does not decode.
    CorruptChunk {
        /// The chunk object.
        name: String,
        /// The decoder's error.
        error: MapError,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Store { name, error } => write!(f, "{name}: {error}"),
            LoadError::Unrecognised { name, error } | LoadError::Corrupt { name, error } => {
                write!(f, "{name}: {error}")
            }
            LoadError::OldFormat { name, format } => {
                write!(f, "{name} is a format {} map", format.version())
            }
            LoadError::MissingChunk { name } => write!(f, "map chunk {name} is missing"),
            LoadError::CorruptChunk { name, error } => write!(f, "map chunk {name}: {error}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Store { error, .. } => Some(error),
            LoadError::Unrecognised { error, .. }
            | LoadError::Corrupt { error, .. }
            | LoadError::CorruptChunk { error, .. } => Some(error),
            LoadError::OldFormat { .. } | LoadError::MissingChunk { .. } => None,
        }
    }
}

fn store_error(name: &str) -> impl FnOnce(StoreError) -> LoadError + '_ {
    move |error| LoadError::Store {
        name: name.to_owned(),
        error,
    }
}

/// The whole of the object `name`, `None` if it does not exist. Read
/// again, at most [`READ_TRIES`] times, while the object's size at the
/// read is not the size its buffer was made for (it was replaced in
/// between, so the bytes may be a cut or a mix).
pub fn read_object(store: &dyn ObjectStore, name: &str) -> Result<Option<Vec<u8>>, LoadError> {
    read_settled(
        name,
        || store.stat(name).map(|s| s.size),
        |buf| store.read(name, 0, buf),
    )
}

/// [`read_object`] over its two store calls: `stat` gives the size,
/// `read` fills a buffer of that size and gives the size at the read.
fn read_settled(
    name: &str,
    stat: impl Fn() -> Result<u64, StoreError>,
    read: impl Fn(&mut [u8]) -> Result<u64, StoreError>,
) -> Result<Option<Vec<u8>>, LoadError> {
    for _ in 0..READ_TRIES {
        let size = match stat() {
            Ok(size) => size,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error(name)(e)),
        };
        let mut buf = vec![0u8; size as usize];
        match read(&mut buf) {
            Ok(read_at) if read_at == size => return Ok(Some(buf)),
            Ok(_) => {} // replaced meanwhile: again, at its new size
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error(name)(e)),
        }
    }
    Err(store_error(name)(StoreError::Io {
        name: name.to_owned(),
        op: "read",
        source: std::io::Error::other(format!("its size changed under each of {READ_TRIES} reads")),
    }))
}

/// A map object as stored: a format 3 header, or an old map's bytes (for
/// [`read_old_map`]).
#[derive(Debug)]
pub enum MapObject {
    /// Format 3.
    V3(Header),
    /// An old format.
    Old {
        /// Which one.
        format: Detected,
        /// The map object's bytes.
        bytes: Vec<u8>,
    },
}

/// The map object `name`, its format detected (`assume_v0`: an object
/// with no header is a v0 map, as [`detect`] says); `None` if it does not
/// exist. Reads only the header of a format 3 map, not its chunks.
pub fn read_map(
    store: &dyn ObjectStore,
    name: &str,
    assume_v0: bool,
) -> Result<Option<MapObject>, LoadError> {
    let Some(bytes) = read_object(store, name)? else {
        return Ok(None);
    };
    let first = &bytes[..bytes.len().min(DETECT_LEN)];
    let format = detect(first, assume_v0).map_err(|error| LoadError::Unrecognised {
        name: name.to_owned(),
        error,
    })?;
    if format != Detected::V3 {
        return Ok(Some(MapObject::Old { format, bytes }));
    }
    Header::decode(&bytes)
        .map(|h| Some(MapObject::V3(h)))
        .map_err(|error| LoadError::Corrupt {
            name: name.to_owned(),
            error,
        })
}

/// The format 3 header `name` (live or removed; rename markers are not
/// looked at), `None` if it does not exist; an old map is
/// [`LoadError::OldFormat`].
pub fn read_header(store: &dyn ObjectStore, name: &str) -> Result<Option<Header>, LoadError> {
    match read_map(store, name, false)? {
        None => Ok(None),
        Some(MapObject::V3(h)) => Ok(Some(h)),
        Some(MapObject::Old { format, .. }) => Err(LoadError::OldFormat {
            name: name.to_owned(),
            format,
        }),
    }
}

/// Decodes the old map `name` of `format` from its map object's `bytes`
/// ([`read_map`]), reading its map-data objects for v2. `v0_size`: the
/// size of a v0 map, which does not record it.
pub fn read_old_map(
    store: &dyn ObjectStore,
    name: &str,
    format: Detected,
    bytes: &[u8],
    v0_size: Option<u64>,
) -> Result<LegacyMap, LoadError> {
    let corrupt = |error| LoadError::Corrupt {
        name: name.to_owned(),
        error,
    };
    match format {
        Detected::V0 => v0::decode(bytes, v0_size).map_err(corrupt),
        Detected::V1 => v1::decode(bytes).map_err(corrupt),
        Detected::V2 => {
            let h = v2::decode_header(bytes).map_err(corrupt)?;
            let per = v2::entries_per_object(h.blocksize);
            let total = h.nr_objects();
            let mut entries = Vec::with_capacity(total as usize);
            let mut block = 0;
            while (entries.len() as u64) < total {
                let n = per.min(total - entries.len() as u64);
                let obj = v2::map_object_name(name, block);
                let mut buf = vec![0u8; (n as usize) * v2::ENTRY_LEN];
                store.read(&obj, 0, &mut buf).map_err(store_error(&obj))?;
                entries.extend(v2::decode_entries(&buf).map_err(corrupt)?);
                block += 1;
            }
            v2::assemble(&h, entries).map_err(corrupt)
        }
        Detected::V3 => Err(LoadError::Corrupt {
            name: name.to_owned(),
            error: MapError::UnsupportedVersion {
                what: "old map",
                version: format.version(),
            },
        }),
    }
}

/// The entries the journal of volume header `h` changes (see the
/// mapper's journal module): by object index, the last entry its
/// applicable records give (those from the start that name `h`'s commit
/// sequence and epoch and the first record's token, up to a torn one).
/// Empty for a snapshot or without a journal.
pub fn journal_entries(
    store: &dyn ObjectStore,
    h: &Header,
) -> Result<std::collections::BTreeMap<u64, Entry>, LoadError> {
    use archipelago_mapfmt::journal::{decode_journal, journal_name};
    let mut out = std::collections::BTreeMap::new();
    if h.flags.readonly {
        return Ok(out);
    }
    let Some(bytes) = read_object(store, &journal_name(h.volume_id))? else {
        return Ok(out);
    };
    let (records, _) = decode_journal(&bytes);
    let token = records.first().map(|r| r.token);
    for r in records {
        if r.base_seq != h.commit_seq || r.epoch != h.epoch || Some(r.token) != token {
            break;
        }
        out.extend(r.entries);
    }
    Ok(out)
}

/// The chunk `r` (nonzero) of a format 3 map. A header naming a chunk
/// that is missing or does not decode is a broken map:
/// [`LoadError::MissingChunk`], [`LoadError::CorruptChunk`].
pub fn read_chunk(store: &dyn ObjectStore, r: ChunkRef) -> Result<Chunk, LoadError> {
    let name = r.object_name().expect("a chunk to read is nonzero");
    let bytes =
        read_object(store, &name)?.ok_or_else(|| LoadError::MissingChunk { name: name.clone() })?;
    Chunk::decode_as(&bytes, r).map_err(|error| LoadError::CorruptChunk { name, error })
}

/// The entries of `chunk`, which a header names at `slot`, with their
/// object indexes in the volume.
pub fn chunk_entries(chunk: &Chunk, slot: usize) -> impl Iterator<Item = (u64, &Entry)> + '_ {
    let first = slot * ENTRIES_PER_CHUNK;
    chunk
        .entries()
        .iter()
        .enumerate()
        .map(move |(at, e)| ((first + at) as u64, e))
}

/// The mapper's error for a failed load: the codes and details its
/// callers have always seen (`Locked` with the owner, decode faults by
/// their map error's code, a missing chunk as `Io`).
pub(crate) fn load_err(e: LoadError) -> Error {
    match e {
        LoadError::Store { name, error } => store_err(&name, error),
        LoadError::Unrecognised { name, error }
        | LoadError::Corrupt { name, error }
        | LoadError::CorruptChunk { name, error } => map_err(&name, error),
        LoadError::OldFormat { name, .. } => upgrade_hint(&name),
        LoadError::MissingChunk { name } => {
            err(ErrorCode::Io, format!("map chunk {name} is missing"))
        }
    }
}

/// Estimated in-memory bytes of one decoded entry.
const ENTRY_BYTES: usize = 40;

/// Estimated in-memory bytes of a decoded chunk: its entries, the names of
/// its legacy entries, and a little for the chunk itself.
fn chunk_bytes(c: &Chunk) -> usize {
    let names: usize = c
        .entries()
        .iter()
        .map(|e| match e {
            Entry::Legacy(n) => n.len(),
            _ => 0,
        })
        .sum();
    c.entries().len() * ENTRY_BYTES + names + 64
}

/// The internal volume id given to an old-format map decoded for reading
/// (its entries name legacy or content objects, never owned ones).
const LEGACY_READ_ID: u64 = 1;

/// A loaded map: a version 3 header, or an old map converted in memory.
pub(crate) struct Vol {
    pub(crate) version: u32,
    pub(crate) header: Header,
    pub(crate) legacy_chunks: Option<HashMap<ChunkRef, Arc<Chunk>>>,
    /// Chunks made by replaying the volume's journal (`journal.rs`),
    /// which exist only here; `None` if it has no journal object.
    pub(crate) overlay: Option<HashMap<ChunkRef, Arc<Chunk>>>,
}

/// The rename intent marker of a volume id, in the map store:
/// `{id:016x}_0000000000000000`, the chunk name of serial 0, which no
/// chunk uses.
pub(crate) fn marker_name(volume_id: u64) -> String {
    format!("{volume_id:016x}_{:016x}", 0)
}

impl Mapper {
    /// The whole map-store object `name` ([`read_object`]).
    pub(crate) fn read_whole(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        read_object(&*self.maps, name).map_err(load_err)
    }

    pub(crate) fn not_found(name: &str) -> Error {
        err(ErrorCode::NotFound, format!("volume {name} not found"))
    }

    /// Reads and decodes `name`'s map, resolving an interrupted rename.
    pub(crate) fn load(
        &self,
        name: &str,
        assume_v0: bool,
        v0_size: Option<u64>,
    ) -> Result<Vol, Error> {
        // A Pithos hashmap is named by 64 hex digits, which no volume is:
        // readable (as v0, read-only), never opened for writing.
        if !(assume_v0 && archipelago_protocol::names::is_content_name(name.as_bytes())) {
            check_name(name)?;
        }
        let (format, bytes) = match read_map(&*self.maps, name, assume_v0)
            .map_err(load_err)?
            .ok_or_else(|| Self::not_found(name))?
        {
            MapObject::V3(header) => {
                if self.renamed_away(name, &header)? {
                    return Err(Self::not_found(name));
                }
                let (header, overlay) = self.replay_journal(name, header)?;
                return Ok(Vol {
                    version: 3,
                    header,
                    legacy_chunks: None,
                    overlay,
                });
            }
            MapObject::Old { format, bytes } => (format, bytes),
        };
        let map = read_old_map(&*self.maps, name, format, &bytes, v0_size).map_err(load_err)?;
        let (header, chunks) = upgrade(&map, LEGACY_READ_ID).map_err(|e| map_err(name, e))?;
        Ok(Vol {
            version: format.version(),
            header,
            legacy_chunks: Some(chunks.into_iter().map(|c| (c.id(), Arc::new(c))).collect()),
            overlay: None,
        })
    }

    /// Whether a rename marker says `name` was renamed away (the new
    /// header exists with the same id).
    pub(crate) fn renamed_away(&self, name: &str, header: &Header) -> Result<bool, Error> {
        let marker = marker_name(header.volume_id);
        let Some(bytes) = self.read_whole(&marker)? else {
            return Ok(false);
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut parts = text.split('\n');
        let (Some(old), Some(new)) = (parts.next(), parts.next()) else {
            return Ok(false);
        };
        if old != name {
            return Ok(false);
        }
        Ok(match self.read_whole(new)? {
            Some(b) => Header::decode(&b).is_ok_and(|h| h.volume_id == header.volume_id),
            None => false,
        })
    }

    /// `name`'s format 3 header as stored, without its journal (the view
    /// of garbage collection and of a hash waiting for holders).
    pub(crate) fn stored_header(&self, name: &str) -> Result<Header, Error> {
        check_name(name)?;
        match read_map(&*self.maps, name, false).map_err(load_err)? {
            Some(MapObject::V3(header)) if !self.renamed_away(name, &header)? => Ok(header),
            Some(MapObject::V3(_)) | None => Err(Self::not_found(name)),
            Some(MapObject::Old { .. }) => Err(upgrade_hint(name)),
        }
    }

    pub(crate) fn load_v3(&self, name: &str) -> Result<Header, Error> {
        let vol = self.load(name, false, None)?;
        if vol.version != 3 {
            return Err(upgrade_hint(name));
        }
        Ok(vol.header)
    }

    /// The current header of a volume this call may change: the cached
    /// one while held, else from storage.
    pub(crate) fn current(&self, name: &str, st: &VolState) -> Result<Header, Error> {
        match &st.header {
            Some(h) if st.opens > 0 => Ok(h.clone()),
            _ => self.load_v3(name),
        }
    }

    /// Whether `name` exists (a readable header, removed or not); errors
    /// other than "not found" are errors, never "absent" (bug 7.3.14).
    pub(crate) fn exists(&self, name: &str) -> Result<bool, Error> {
        match self.load(name, false, None) {
            Ok(_) => Ok(true),
            Err(e) if e.code == ErrorCode::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn chunk(&self, vol: &Vol, r: ChunkRef) -> Result<Arc<Chunk>, Error> {
        if r.is_zero() {
            return Ok(Arc::new(Chunk::empty(ChunkRef::ZERO)));
        }
        if let Some(l) = &vol.legacy_chunks {
            return l
                .get(&r)
                .cloned()
                .ok_or_else(|| err(ErrorCode::Io, "legacy chunk missing"));
        }
        if let Some(c) = vol.overlay.as_ref().and_then(|o| o.get(&r)) {
            return Ok(c.clone());
        }
        if let Some(c) = self.dirty_chunk(&r) {
            return Ok(c);
        }
        if let Some(c) = self
            .chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&r)
        {
            return Ok(c);
        }
        let c = Arc::new(read_chunk(&*self.maps, r).map_err(load_err)?);
        self.cache_chunk(c.clone());
        Ok(c)
    }

    pub(crate) fn cache_chunk(&self, c: Arc<Chunk>) {
        let size = chunk_bytes(&c);
        self.chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(c.id(), c, size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object that grows by one byte under each of its first `grows`
    /// reads (a commit replacing it between the stat and the read): the
    /// calls `read_settled` makes, and how many reads it made.
    fn growing(grows: u32) -> impl Fn(&str) -> (Result<Option<Vec<u8>>, LoadError>, u32) {
        use std::cell::Cell;
        move |name| {
            let (size, reads) = (Cell::new(10u64), Cell::new(0));
            let r = read_settled(
                name,
                || Ok(size.get()),
                |buf| {
                    reads.set(reads.get() + 1);
                    if reads.get() <= grows {
                        size.set(size.get() + 1);
                    }
                    buf.fill(7);
                    Ok(size.get())
                },
            );
            (r, reads.get())
        }
    }

    #[test]
    fn a_read_cut_by_a_replacement_is_read_again_at_the_new_size() {
        let (r, reads) = growing(2)("obj");
        assert_eq!(r.unwrap(), Some(vec![7; 12]));
        assert_eq!(reads, 3);
        let gone = read_settled(
            "obj",
            || Ok(4),
            |_| Err(StoreError::NotFound { name: "obj".into() }),
        );
        assert_eq!(gone.unwrap(), None, "deleted between the stat and the read");
    }

    #[test]
    fn an_object_that_never_settles_is_an_io_error_after_the_bound() {
        let (r, reads) = growing(u32::MAX)("obj");
        assert_eq!(reads, READ_TRIES);
        match r {
            Err(LoadError::Store {
                name,
                error: StoreError::Io { op: "read", .. },
            }) => assert_eq!(name, "obj"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rename_markers_use_the_unused_serial_0() {
        assert_eq!(marker_name(0xab), "00000000000000ab_0000000000000000");
    }
}
