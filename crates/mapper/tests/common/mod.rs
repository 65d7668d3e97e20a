//! A composer (what vlmcd does with extents) and a test setup.

#![allow(dead_code)]

use std::sync::Arc;

use archipelago_mapper::{read_extent, Mapper};
use archipelago_protocol::Error;
use archipelago_store::{MemoryStore, ObjectStore};

/// Small objects keep the tests fast.
pub const OS: u64 = 4096;

pub struct Env {
    pub maps: Arc<MemoryStore>,
    pub data: Arc<MemoryStore>,
    pub m: Mapper,
}

impl Env {
    pub fn new() -> Env {
        let maps = Arc::new(MemoryStore::new());
        let data = Arc::new(MemoryStore::new());
        let m = Mapper::new(maps.clone(), data.clone(), "host1".into());
        Env { maps, data, m }
    }

    /// Another host's mapper over the same stores.
    pub fn other(&self, host: &str) -> Mapper {
        Mapper::new(self.maps.clone(), self.data.clone(), host.into())
    }

    pub fn write(&self, name: &str, offset: u64, bytes: &[u8]) {
        write(&self.m, &*self.data, name, offset, bytes).unwrap()
    }

    pub fn read(&self, name: &str, offset: u64, len: u64) -> Vec<u8> {
        read(&self.m, &*self.data, name, offset, len).unwrap()
    }
}

/// map_write, then the data writes, then commit_writes of pending extents.
pub fn write(
    m: &Mapper,
    data: &dyn ObjectStore,
    name: &str,
    offset: u64,
    bytes: &[u8],
) -> Result<(), Error> {
    let extents = m.map_write(name, offset, bytes.len() as u64)?;
    let mut pos = 0usize;
    let mut pending = Vec::new();
    for e in &extents {
        let obj = e.object.as_ref().expect("write extents name objects");
        let part = &bytes[pos..pos + e.len as usize];
        data.write(obj, e.offset_in_object, part, true)?;
        pos += e.len as usize;
        if e.pending {
            pending.push(e.index);
        }
    }
    assert_eq!(pos, bytes.len());
    if !pending.is_empty() {
        m.commit_writes(name, &pending)?;
    }
    Ok(())
}

pub fn read(
    m: &Mapper,
    data: &dyn ObjectStore,
    name: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, Error> {
    let extents = m.map_read(name, offset, len)?;
    let mut out = vec![0xeeu8; len as usize];
    let mut pos = 0usize;
    for e in &extents {
        read_extent(data, e, &mut out[pos..pos + e.len as usize])?;
        pos += e.len as usize;
    }
    assert_eq!(pos as u64, len);
    Ok(out)
}

/// `n` bytes of a pattern seeded by `seed`.
pub fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| seed.wrapping_add((i % 251) as u8) | 1)
        .collect()
}
