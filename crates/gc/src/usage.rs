//! Space accounting: what each live volume refers to, and what removing
//! it would free.

use std::collections::HashMap;

use archipelago_mapfmt::{granule_size, Entry};
use archipelago_mapper::load;
use archipelago_store::{ObjectStore, StoreError};

use crate::names::{self, Kind};
use crate::{load_error, read_chunk, read_header, GcError};

/// What [`usage`] reports for one live volume or snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VolumeUsage {
    /// The name.
    pub name: String,
    /// A snapshot.
    pub snapshot: bool,
    /// Provisioned size in bytes.
    pub provisioned: u64,
    /// Distinct data objects it refers to.
    pub objects: u64,
    /// Bytes of those objects.
    pub referenced_bytes: u64,
    /// Bytes of the objects no other live map refers to: what removing
    /// it frees (once collected).
    pub unique_bytes: u64,
    /// For content entries: bytes they would take stored once per entry,
    /// minus the bytes of their distinct content objects (0 unless
    /// hashed).
    pub dedup_saved_bytes: u64,
}

/// Accounts every live map (or only `only`, still counting the others
/// to know what is shared). Exact: every object is stat'ed once; memory
/// grows with the number of distinct objects referenced (unlike
/// [`collect`](crate::collect)), so it is meant for one volume or a pool
/// of moderate size.
pub fn usage(
    maps: &dyn ObjectStore,
    data: &dyn ObjectStore,
    only: Option<&str>,
) -> Result<Vec<VolumeUsage>, GcError> {
    let mut headers = Vec::new();
    for n in maps.list("")? {
        if names::kind(&n) != Kind::Header {
            continue;
        }
        if let Some(h) = read_header(maps, &n)? {
            if !h.flags.removed {
                headers.push((n, h));
            }
        }
    }
    if let Some(o) = only {
        if !headers.iter().any(|(n, _)| n == o) {
            return Err(GcError::Store(StoreError::NotFound { name: o.into() }));
        }
    }
    // Per map: its distinct objects with their entry counts, and whether
    // they are content; across maps: how many maps refer to each object.
    let mut per_map: Vec<HashMap<String, (u64, bool)>> = Vec::new();
    let mut maps_per_object: HashMap<String, u32> = HashMap::new();
    let mut chunk_cache = HashMap::new();
    // The most bytes a partial entry's own object holds (its granules).
    let mut caps: HashMap<String, u64> = HashMap::new();
    for (n, h) in &headers {
        let mut mine: HashMap<String, (u64, bool)> = HashMap::new();
        // Every nonzero entry: the chunks', then what the journal changed.
        let mut entries: std::collections::BTreeMap<u64, Entry> = std::collections::BTreeMap::new();
        for (slot, r) in h.chunks.iter().enumerate() {
            if r.is_zero() {
                continue;
            }
            let c = match chunk_cache.get(r) {
                Some(c) => c,
                None => {
                    let c = read_chunk(maps, n, *r)?;
                    chunk_cache.entry(*r).or_insert(c)
                }
            };
            for (index, e) in load::chunk_entries(c, slot) {
                if *e != Entry::Zero {
                    entries.insert(index, e.clone());
                }
            }
        }
        let journaled = load::journal_entries(maps, h).map_err(|e| load_error(n, e))?;
        entries.extend(journaled);
        for (index, e) in entries {
            if index >= h.size.div_ceil(h.object_size()) {
                break; // the tail past a shrink reads as nothing
            }
            // A partial entry uses its own object (at most its
            // granules: the rest of it is never written) and its
            // backing's.
            let mut uses: Vec<(String, bool)> = Vec::new();
            if let Entry::Partial {
                granules, backing, ..
            } = &e
            {
                if let Some(o) = e.object_name(index) {
                    let g = granule_size(h.object_size());
                    let cap = u64::from(granules.count_ones()) * g;
                    let c = caps.entry(o.clone()).or_insert(cap);
                    *c = (*c).max(cap);
                    uses.push((o, false));
                }
                uses.extend(
                    backing
                        .object_name(index)
                        .map(|o| (o, matches!(**backing, Entry::Content(_)))),
                );
            } else if let Some(o) = e.object_name(index) {
                uses.push((o, matches!(e, Entry::Content(_))));
            }
            for (o, content) in uses {
                let slot = mine.entry(o).or_insert((0, content));
                slot.0 += 1;
            }
        }
        for o in mine.keys() {
            *maps_per_object.entry(o.clone()).or_default() += 1;
        }
        per_map.push(mine);
    }
    let mut sizes: HashMap<&str, u64> = HashMap::new();
    for o in maps_per_object.keys() {
        let size = match data.stat(o) {
            Ok(s) => caps.get(o).map_or(s.size, |&c| s.size.min(c)),
            // An owned object never written reads as zeros: no bytes.
            Err(StoreError::NotFound { .. }) if matches!(names::kind(o), Kind::Owned { .. }) => 0,
            // A content or legacy object must exist: reads of it fail.
            Err(StoreError::NotFound { .. }) => {
                let volume = headers
                    .iter()
                    .zip(&per_map)
                    .find(|(_, mine)| mine.contains_key(o))
                    .map(|((n, _), _)| n.clone())
                    .unwrap_or_default();
                return Err(GcError::MissingObject {
                    volume,
                    object: o.clone(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        sizes.insert(o, size);
    }
    let mut out = Vec::new();
    for ((n, h), mine) in headers.iter().zip(&per_map) {
        if only.is_some_and(|o| o != n) {
            continue;
        }
        let mut u = VolumeUsage {
            name: n.clone(),
            snapshot: h.flags.readonly,
            provisioned: h.size,
            objects: mine.len() as u64,
            ..VolumeUsage::default()
        };
        let mut logical_content = 0;
        let mut stored_content = 0;
        for (o, &(count, content)) in mine {
            let size = sizes[o.as_str()];
            u.referenced_bytes += size;
            if maps_per_object[o] == 1 {
                u.unique_bytes += size;
            }
            if content {
                logical_content += size * count;
                stored_content += size;
            }
        }
        u.dedup_saved_bytes = logical_content - stored_content;
        out.push(u);
    }
    Ok(out)
}
