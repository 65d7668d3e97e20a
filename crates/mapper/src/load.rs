//! Map loading: a volume's header and chunks as the mapper reads them, in
//! any format, with the rename marker resolved and chunks cached.
//!
//! Old maps (v0, v1, v2) are converted in memory to a format 3 header and
//! chunks ([`Vol`]) so that every read path works on one shape. Chunks are
//! immutable once a header names them, so the decoded ones are kept in an
//! LRU whatever the lock; a header is served from the cache only while
//! this host holds the volume's lock ([`Mapper::current`]).

use std::collections::HashMap;
use std::sync::Arc;

use archipelago_mapfmt::{
    detect, upgrade, v0, v1, v2, Chunk, ChunkRef, Detected, Entry, Header, LegacyMap,
};
use archipelago_protocol::{Error, ErrorCode};
use archipelago_store::StoreError;

use crate::locks::VolState;
use crate::{check_name, err, map_err, store_err, upgrade_hint, Mapper};

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
}

/// The rename intent marker of a volume id, in the map store:
/// `{id:016x}_0000000000000000`, the chunk name of serial 0, which no
/// chunk uses.
pub(crate) fn marker_name(volume_id: u64) -> String {
    format!("{volume_id:016x}_{:016x}", 0)
}

impl Mapper {
    pub(crate) fn read_whole(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let size = match self.maps.stat(name) {
            Ok(s) => s.size,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_err(name, e)),
        };
        let mut buf = vec![0u8; size as usize];
        match self.maps.read(name, 0, &mut buf) {
            Ok(_) => Ok(Some(buf)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(name, e)),
        }
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
        check_name(name)?;
        let bytes = self
            .read_whole(name)?
            .ok_or_else(|| Self::not_found(name))?;
        let first = &bytes[..bytes.len().min(archipelago_mapfmt::DETECT_LEN)];
        let detected = detect(first, assume_v0).map_err(|e| map_err(name, e))?;
        if detected == Detected::V3 {
            let header = Header::decode(&bytes).map_err(|e| map_err(name, e))?;
            if self.renamed_away(name, &header)? {
                return Err(Self::not_found(name));
            }
            return Ok(Vol {
                version: 3,
                header,
                legacy_chunks: None,
            });
        }
        let map = self.load_legacy(name, detected, &bytes, v0_size)?;
        let (header, chunks) = upgrade(&map, LEGACY_READ_ID).map_err(|e| map_err(name, e))?;
        Ok(Vol {
            version: detected.version(),
            header,
            legacy_chunks: Some(chunks.into_iter().map(|c| (c.id(), Arc::new(c))).collect()),
        })
    }

    pub(crate) fn load_legacy(
        &self,
        name: &str,
        detected: Detected,
        bytes: &[u8],
        v0_size: Option<u64>,
    ) -> Result<LegacyMap, Error> {
        let me = |e| map_err(name, e);
        match detected {
            Detected::V0 => v0::decode(bytes, v0_size).map_err(me),
            Detected::V1 => v1::decode(bytes).map_err(me),
            Detected::V2 => {
                let h = v2::decode_header(bytes).map_err(me)?;
                let per = v2::entries_per_object(h.blocksize);
                let total = h.nr_objects();
                let mut entries = Vec::with_capacity(total as usize);
                let mut block = 0;
                while (entries.len() as u64) < total {
                    let n = per.min(total - entries.len() as u64);
                    let obj = v2::map_object_name(name, block);
                    let mut buf = vec![0u8; (n as usize) * v2::ENTRY_LEN];
                    self.maps
                        .read(&obj, 0, &mut buf)
                        .map_err(|e| store_err(&obj, e))?;
                    entries.extend(v2::decode_entries(&buf).map_err(me)?);
                    block += 1;
                }
                v2::assemble(&h, entries).map_err(me)
            }
            Detected::V3 => unreachable!("handled by load"),
        }
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
        if let Some(c) = self
            .chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&r)
        {
            return Ok(c);
        }
        let name = r.object_name().expect("nonzero");
        let bytes = self
            .read_whole(&name)?
            .ok_or_else(|| err(ErrorCode::Io, format!("map chunk {name} is missing")))?;
        let c = Arc::new(Chunk::decode_as(&bytes, r).map_err(|e| map_err(&name, e))?);
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

    #[test]
    fn rename_markers_use_the_unused_serial_0() {
        assert_eq!(marker_name(0xab), "00000000000000ab_0000000000000000");
    }
}
