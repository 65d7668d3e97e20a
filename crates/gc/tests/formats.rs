//! Maps of the original formats in the map store: the collector
//! classifies map-store objects by reading them, not by their names, and
//! deletes nothing while one it does not understand is there. Each test
//! failed before its fix.

use std::sync::Arc;

use archipelago_gc::{collect, GcError, GcOptions};
use archipelago_mapfmt::{v0, v1, v2};
use archipelago_store::{MemoryStore, ObjectStore};

fn opts() -> GcOptions {
    GcOptions {
        host: "h".into(),
        ..GcOptions::default()
    }
}

fn nothing(_: archipelago_gc::Phase, _: u64, _: u64) {}

fn stores() -> (Arc<MemoryStore>, Arc<MemoryStore>) {
    (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()))
}

fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A v1 map under a legacy `archip_<volume>` name names `archip_…`
/// objects of the data store: the run refuses before any delete.
#[test]
fn a_legacy_named_v1_map_stops_the_run() {
    let (maps, data) = stores();
    let d = [0x11u8; 32];
    let obj = format!("archip_{}", hex(&d));
    data.write_full(&obj, b"block", true).unwrap();
    maps.write_full("archip_oldvol", &v1::encode(4 << 20, &[(1, d)]), true)
        .unwrap();
    let e = collect(&*maps, &*data, &opts(), &mut nothing).unwrap_err();
    assert!(matches!(e, GcError::OldFormat { .. }), "{e}");
    assert!(e.to_string().contains("archip_oldvol"), "{e}");
    assert!(
        data.stat(&obj).is_ok(),
        "the block of the v1 map was deleted"
    );
}

/// A Pithos (v0) hashmap, named by 64 hex digits, names content blocks:
/// they are not deleted (a pool shared with Pithos keeps every content
/// object while a hashmap is there).
#[test]
fn a_pithos_hashmap_keeps_its_blocks() {
    let (maps, data) = stores();
    let block = data.store_content(b"pithos block", true).unwrap();
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(&block[2 * i..2 * i + 2], 16).unwrap();
    }
    let map_name = "ab".repeat(32);
    maps.write_full(&map_name, &v0::encode(&[d]), true).unwrap();
    let r = collect(&*maps, &*data, &opts(), &mut nothing).unwrap();
    assert!(data.stat(&block).is_ok(), "the hashmap's block was deleted");
    assert!(maps.stat(&map_name).is_ok());
    assert_eq!(r.freed_objects, 0, "{r:?}");
}

/// A v2 map of a volume named by 16 hex digits: its map-data objects
/// `{volume}_{block:016x}` look like chunks of an unknown owner. With
/// the map, the run refuses; a map-data object left alone (a failed
/// best-effort delete after an upgrade) is not a chunk either: refused,
/// not deleted.
#[test]
fn v2_map_data_objects_are_not_chunks() {
    let (maps, data) = stores();
    let vol = "00000000000000ab";
    let block1 = v2::map_object_name(vol, 1);
    maps.write_full(&block1, &[0u8; 2 * v2::ENTRY_LEN], true)
        .unwrap();
    // Left alone: not a chunk (no chunk magic), so not the collector's.
    let e = collect(&*maps, &*data, &opts(), &mut nothing).unwrap_err();
    assert!(e.to_string().contains(&block1), "{e}");
    assert!(
        maps.stat(&block1).is_ok(),
        "a v2 map-data object was deleted"
    );
    // With its map: the map is an old format.
    let h = v2::V2Header {
        size: 32769 * (4 << 20),
        blocksize: 4 << 20,
        readonly: false,
        deleted: false,
        epoch: 0,
    };
    maps.write_full(vol, &v2::encode_header(&h), true).unwrap();
    let e = collect(&*maps, &*data, &opts(), &mut nothing).unwrap_err();
    assert!(matches!(e, GcError::OldFormat { .. }), "{e}");
    assert!(maps.stat(&block1).is_ok());
}
