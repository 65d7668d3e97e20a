//! A toy mapper over two in-memory stores, doing what mapperd will do with
//! this crate: every header and chunk goes through its bytes.

#![allow(dead_code)]

use archipelago_mapfmt::{set_entry, Chunk, ChunkRef, Entry, Header, MapError};
use std::collections::HashMap;

/// The map store and the data store.
#[derive(Default)]
pub struct Stores {
    /// Headers and chunks, encoded.
    pub maps: HashMap<String, Vec<u8>>,
    /// Data objects: one byte stands for the object's content.
    pub data: HashMap<String, u8>,
}

impl Stores {
    /// Writes chunks first, then the header: the commit point.
    pub fn commit(&mut self, volume: &str, header: &Header, chunks: &[Chunk]) {
        for c in chunks {
            let name = c.id().object_name().expect("a stored chunk");
            assert!(
                !self.maps.contains_key(&name),
                "chunk {name} is immutable once written"
            );
            self.maps.insert(name, c.encode().unwrap());
        }
        self.maps
            .insert(volume.to_owned(), header.encode().unwrap());
    }

    pub fn header(&self, volume: &str) -> Header {
        Header::decode(&self.maps[volume]).unwrap()
    }

    pub fn chunk(&self, r: ChunkRef) -> Chunk {
        match r.object_name() {
            None => Chunk::empty(ChunkRef::ZERO),
            Some(name) => Chunk::decode_as(&self.maps[&name], r).unwrap(),
        }
    }

    pub fn entry(&self, volume: &str, index: u64) -> Entry {
        let h = self.header(volume);
        let (slot, off) = h.chunk_for(index).unwrap();
        self.chunk(h.chunks[slot]).get(off).unwrap().clone()
    }

    /// What a read of object `index` returns (0 for zeros).
    pub fn read(&self, volume: &str, index: u64) -> u8 {
        match self.entry(volume, index).object_name(index) {
            None => 0,
            Some(name) => *self.data.get(&name).expect("the object exists"),
        }
    }

    /// A write of object `index`: in place if writable, else copy-up into
    /// the volume's own object and commit the entry. Returns the object
    /// written.
    pub fn write(&mut self, volume: &str, index: u64, value: u8) -> Result<String, MapError> {
        let h = self.header(volume);
        let (slot, _) = h.chunk_for(index)?;
        let entry = self.entry(volume, index);
        if h.is_writable(&entry) {
            let name = entry.object_name(index).unwrap();
            self.data.insert(name.clone(), value);
            return Ok(name);
        }
        let chunk = self.chunk(h.chunks[slot]);
        let (new_chunk, new_h) = set_entry(&h, &chunk, index, h.own_entry())?;
        let name = h.own_entry().object_name(index).unwrap();
        // Data first, then the chunk, then the header.
        self.data.insert(name.clone(), value);
        self.commit(volume, &new_h, &[new_chunk]);
        Ok(name)
    }
}
