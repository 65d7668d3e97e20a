//! Volume operations end to end through encoded headers and chunks:
//! snapshots keep their view, shared chunks are copied on first change,
//! clones of clones read without walking parents, old maps upgrade.

mod common;

use archipelago_mapfmt::{
    clone_from, detect, resize, snapshot, upgrade, v1, v2, ChunkRef, Detected, Entry, Header,
    LegacyEntry, MapError, Parent, ENTRIES_PER_CHUNK,
};
use common::Stores;

const GIB: u64 = 1 << 30;
/// An object in the second chunk.
const FAR: u64 = ENTRIES_PER_CHUNK as u64 + 7;

fn new_volume(s: &mut Stores, name: &str, id: u64, size: u64) {
    s.commit(name, &Header::new(id, size, 22).unwrap(), &[]);
}

fn take_snapshot(s: &mut Stores, volume: &str, snap: &str) {
    let (sh, vh) = snapshot(&s.header(volume), snap).unwrap();
    // The volume's header first: it freezes the old epoch.
    s.commit(volume, &vh, &[]);
    s.commit(snap, &sh, &[]);
}

#[test]
fn a_snapshot_keeps_its_view_while_the_volume_changes() {
    let mut s = Stores::default();
    new_volume(&mut s, "vol", 0xa, 40 * GIB);
    assert_eq!(s.read("vol", 0), 0, "a new volume reads zeros");
    s.write("vol", 0, 1).unwrap();
    s.write("vol", FAR, 2).unwrap();
    let before = s.header("vol");

    take_snapshot(&mut s, "vol", "s1");
    let snap = s.header("s1");
    assert_eq!(snap.chunks, before.chunks, "no entry rewritten");
    assert!(snap.flags.readonly);

    // The first write after the snapshot copies the object and its chunk.
    let obj = s.write("vol", 0, 3).unwrap();
    assert_eq!(obj, "000000000000000a_0000000000000002_0000000000000000");
    let v = s.header("vol");
    assert_ne!(v.chunks[0], before.chunks[0], "the shared chunk was copied");
    assert_eq!(
        v.chunks[1], before.chunks[1],
        "the other chunk is still shared"
    );
    assert!(!v.is_chunk_private(&before.chunks[0]));
    assert!(v.is_chunk_private(&v.chunks[0]));
    assert!(s
        .maps
        .contains_key(&before.chunks[0].object_name().unwrap()));

    assert_eq!((s.read("s1", 0), s.read("vol", 0)), (1, 3));
    assert_eq!((s.read("s1", FAR), s.read("vol", FAR)), (2, 2));

    // Writing again in place changes no map.
    let seq = v.commit_seq;
    s.write("vol", 0, 4).unwrap();
    assert_eq!(s.header("vol").commit_seq, seq);
    assert_eq!((s.read("s1", 0), s.read("vol", 0)), (1, 4));

    // A second change of the now private chunk replaces it again: the old
    // one is garbage, not rewritten.
    let private = s.header("vol").chunks[0];
    s.write("vol", 1, 5).unwrap();
    let v = s.header("vol");
    assert_ne!(v.chunks[0], private);
    assert!(v.is_chunk_private(&private), "garbage for a collector");
    assert_eq!(s.header("s1"), snap, "the snapshot's header never moved");

    // A snapshot refuses writes.
    assert_eq!(s.write("s1", 0, 9), Err(MapError::ReadOnly));
}

#[test]
fn clones_of_clones_read_every_ancestor_without_walking_parents() {
    let mut s = Stores::default();
    new_volume(&mut s, "base", 0xb, 20 * GIB);
    s.write("base", 0, 1).unwrap();
    s.write("base", FAR, 2).unwrap();
    take_snapshot(&mut s, "base", "gold");

    let c = clone_from(&s.header("gold"), "gold", 0xc, 20 * GIB).unwrap();
    s.commit("c", &c, &[]);
    assert_eq!((s.read("c", 0), s.read("c", FAR)), (1, 2));
    s.write("c", 0, 10).unwrap();
    take_snapshot(&mut s, "c", "c-snap");

    let d = clone_from(&s.header("c-snap"), "c-snap", 0xd, 40 * GIB).unwrap();
    assert_eq!(d.chunks.len(), 3, "grown by a zero chunk ref");
    s.commit("d", &d, &[]);
    // d's chunks name the final objects: c's object 0, base's object FAR.
    assert_eq!(
        s.entry("d", 0),
        Entry::Owned {
            owner: 0xc,
            epoch: 1
        }
    );
    assert_eq!(
        s.entry("d", FAR),
        Entry::Owned {
            owner: 0xb,
            epoch: 1
        }
    );
    assert_eq!((s.read("d", 0), s.read("d", FAR)), (10, 2));
    assert_eq!(s.read("d", 2 * ENTRIES_PER_CHUNK as u64), 0);

    s.write("d", FAR, 20).unwrap();
    assert_eq!(
        (s.read("base", FAR), s.read("c", FAR), s.read("d", FAR)),
        (2, 2, 20)
    );
    assert_eq!(s.read("gold", 0), 1);

    // Lineage: d ← c-snap (c at epoch 1) ← gold (base at epoch 1).
    let p = |v: &str| s.header(v).parent.unwrap();
    assert_eq!(
        p("d"),
        Parent {
            volume_id: 0xc,
            epoch: 1,
            name: "c-snap".into()
        }
    );
    assert_eq!(p("c-snap").name, "gold");
    assert_eq!(p("c").name, "c-snap");
    assert_eq!(s.header("gold").parent, None);
    assert_eq!(p("base").name, "gold");
}

#[test]
fn resize_never_resurrects_old_entries() {
    let mut s = Stores::default();
    new_volume(&mut s, "v", 0xe, 32 * GIB);
    s.write("v", FAR, 7).unwrap();
    let h = s.header("v");
    let tail = s.chunk(h.chunks[1]);
    let (small, cut) = resize(&h, 16 * GIB + 4 * (4 << 20), Some(&tail)).unwrap();
    let cut: Vec<_> = cut.into_iter().collect();
    s.commit("v", &small, &cut);
    assert!(matches!(
        s.write("v", FAR, 1),
        Err(MapError::OutOfRange { .. })
    ));
    let (big, none) = resize(&s.header("v"), 32 * GIB, None).unwrap();
    assert!(none.is_none());
    s.commit("v", &big, &[]);
    assert_eq!(s.read("v", FAR), 0);
}

#[test]
fn a_v2_map_is_detected_decoded_and_upgraded() {
    let mut s = Stores::default();
    // Build a v2 map by the documented layout: 3 objects of 4 KiB, so one
    // 4 KiB map-data object holds 32 entries.
    let hdr = v2::V2Header {
        size: 3 * 4096 - 512,
        blocksize: 4096,
        readonly: false,
        deleted: false,
        epoch: 4,
    };
    let entries = [
        LegacyEntry {
            name: Some("old_0000000000000004_0000000000000000".into()),
            writable: true,
            archip: true,
            deleted: false,
        },
        LegacyEntry::zero(),
        LegacyEntry::content(&[0x3c; 32]),
    ];
    let mut header_obj = v2::encode_header(&hdr).to_vec();
    header_obj.resize(v2::HEADER_READ_LEN, 0);
    s.maps.insert("old".into(), header_obj);
    let mut block = Vec::new();
    for e in &entries {
        block.extend_from_slice(&v2::encode_legacy_entry(e).unwrap());
    }
    s.maps.insert(v2::map_object_name("old", 0), block);

    // Load it as a mapper would.
    let first = &s.maps["old"][..v2::HEADER_READ_LEN];
    assert_eq!(detect(first, false), Ok(Detected::V2));
    let h = v2::decode_header(first).unwrap();
    assert_eq!(h.nr_map_objects(), 1);
    let raw = &s.maps[&v2::map_object_name("old", 0)];
    let decoded = v2::decode_entries(&raw[..h.nr_objects() as usize * v2::ENTRY_LEN]).unwrap();
    assert_eq!(decoded, entries);
    let map = v2::assemble(&h, decoded).unwrap();

    let (v3, chunks) = upgrade(&map, 0xf).unwrap();
    s.commit("old", &v3, &chunks);
    assert_eq!(detect(&s.maps["old"], false), Ok(Detected::V3));
    assert_eq!(
        s.entry("old", 0),
        Entry::Legacy("old_0000000000000004_0000000000000000".into())
    );
    assert_eq!(s.entry("old", 1), Entry::Zero);
    assert_eq!(s.entry("old", 2), Entry::Content([0x3c; 32]));
    // The legacy object is copy-on-write now: the first write copies it.
    s.data
        .insert("old_0000000000000004_0000000000000000".into(), 6);
    assert_eq!(s.read("old", 0), 6);
    let obj = s.write("old", 0, 8).unwrap();
    assert_eq!(obj, "000000000000000f_0000000000000004_0000000000000000");
    assert_eq!(s.read("old", 0), 8);
}

#[test]
fn a_v1_map_is_detected_and_upgraded() {
    let bytes = v1::encode(4 << 20, &[(1, [0x42; 32])]);
    assert_eq!(detect(&bytes, false), Ok(Detected::V1));
    let (h, chunks) = upgrade(&v1::decode(&bytes).unwrap(), 5).unwrap();
    assert_eq!(
        h.chunks,
        vec![ChunkRef {
            owner: 5,
            serial: 1
        }]
    );
    assert_eq!(
        chunks[0].get(0).unwrap().object_name(0).unwrap(),
        format!("archip_{}", "42".repeat(32))
    );
}
