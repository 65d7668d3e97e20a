//! The public map loading (`archipelago_mapper::load`), which the garbage
//! collector shares: what it reads of a map the mapper wrote, and the
//! errors that tell an old map from a broken one. (The retry of torn
//! reads is tested beside it, in `src/load.rs`.)

mod common;

use archipelago_mapfmt::{ChunkRef, Entry};
use archipelago_mapper::load::{
    chunk_entries, read_chunk, read_header, read_map, read_object, LoadError, MapObject,
};
use archipelago_store::ObjectStore;
use common::{Env, OS};

#[test]
fn headers_chunks_and_entries_load_as_the_mapper_wrote_them() {
    let env = Env::new();
    env.m.create("v", 3 * OS, Some(OS)).unwrap();
    env.write("v", OS, &[9; OS as usize]);
    // The write is in the journal until a checkpoint: the close.
    env.m.close("v").unwrap();
    let h = read_header(&*env.maps, "v").unwrap().unwrap();
    assert!(matches!(
        read_map(&*env.maps, "v", false).unwrap(),
        Some(MapObject::V3(ref m)) if *m == h
    ));
    assert_eq!(read_header(&*env.maps, "nothing").unwrap(), None);
    let (slot, r) = h
        .chunks
        .iter()
        .enumerate()
        .find(|(_, r)| !r.is_zero())
        .expect("a written volume has a chunk");
    let chunk = read_chunk(&*env.maps, *r).unwrap();
    let named: Vec<(u64, String)> = chunk_entries(&chunk, slot)
        .filter_map(|(i, e)| e.object_name(i).map(|n| (i, n)))
        .collect();
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].0, 1);
    assert!(env.data.stat(&named[0].1).is_ok());
    assert!(chunk_entries(&chunk, slot).all(|(i, e)| i == 1 || *e == Entry::Zero));
}

#[test]
fn old_broken_and_missing_maps_are_told_apart() {
    let env = Env::new();
    // A v1 map (a little-endian 1, then its fields).
    env.maps
        .write_full("old", &[1, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0], true)
        .unwrap();
    assert!(matches!(
        read_header(&*env.maps, "old"),
        Err(LoadError::OldFormat { ref name, .. }) if name == "old"
    ));
    env.maps.write_full("junk", &[9; 64], true).unwrap();
    assert!(matches!(
        read_header(&*env.maps, "junk"),
        Err(LoadError::Unrecognised { .. })
    ));
    env.m.create("v", OS, Some(OS)).unwrap();
    let mut bytes = read_object(&*env.maps, "v").unwrap().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    env.maps.write_full("v", &bytes, true).unwrap();
    assert!(matches!(
        read_header(&*env.maps, "v"),
        Err(LoadError::Corrupt { .. })
    ));
    let r = ChunkRef {
        owner: 0x1234,
        serial: 1,
    };
    let e = read_chunk(&*env.maps, r).unwrap_err();
    assert!(matches!(e, LoadError::MissingChunk { .. }), "{e:?}");
    assert!(e.to_string().contains("is missing"), "{e}");
    env.maps
        .write_full(&r.object_name().unwrap(), b"not a chunk", true)
        .unwrap();
    assert!(matches!(
        read_chunk(&*env.maps, r),
        Err(LoadError::CorruptChunk { .. })
    ));
}
