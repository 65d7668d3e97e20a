//! Old-format maps, content hashing, and a file store.

mod common;

use std::sync::Arc;

use archipelago_mapfmt::{v0, v1, v2, LegacyEntry, LEGACY_OBJECT_SIZE, ZERO_BLOCK_DIGEST};
use archipelago_mapper::Mapper;
use archipelago_protocol::names::is_content_name;
use archipelago_protocol::ErrorCode;
use archipelago_store::{FileStore, FileStoreOptions, ObjectStore};
use common::{pattern, Env, OS};

const MIB4: u64 = 4 << 20;

fn digest_of(name: &str) -> [u8; 32] {
    let mut d = [0u8; 32];
    for (i, p) in name.as_bytes().chunks(2).enumerate() {
        d[i] = u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap();
    }
    d
}

#[test]
fn hashing_a_snapshot_deduplicates_identical_blocks() {
    let e = Env::new();
    e.m.create("vol", 8 * MIB4, None).unwrap();
    let block = pattern(5, MIB4 as usize);
    for i in 0..3 {
        e.write("vol", i * MIB4, &block);
    }
    e.write("vol", 3 * MIB4, &vec![0u8; MIB4 as usize]); // written zeros
    e.write("vol", 4 * MIB4 + 7, b"tail"); // a different block
    let before = e.read("vol", 0, 8 * MIB4);
    e.m.snapshot("vol", "snap").unwrap();
    assert_eq!(
        e.m.hash("vol").unwrap_err().code,
        ErrorCode::InvalidArgument
    );

    let report = e.m.hash("snap").unwrap();
    assert_eq!(report.objects, 5);
    assert_eq!(report.zero_objects, 1);
    assert_eq!(report.distinct, 2);
    assert_eq!(report.bytes_saved, 3 * MIB4);
    let contents: Vec<_> = e
        .data
        .list("")
        .unwrap()
        .into_iter()
        .filter(|n| is_content_name(n.as_bytes()))
        .collect();
    assert_eq!(
        contents.len(),
        2,
        "one object for the 3 identical blocks, none for zeros"
    );
    let info = e.m.info("snap").unwrap();
    assert!(info.hashed && info.readonly);
    let ext = e.m.map_read("snap", 0, 5 * MIB4).unwrap();
    assert_eq!(ext[0].object, ext[2].object);
    assert!(ext[3].object.is_none(), "the zero block is a zero entry");
    assert_eq!(e.read("snap", 0, 8 * MIB4), before, "data unchanged");
    assert_eq!(e.read("vol", 0, 8 * MIB4), before);
    // Hashing again finds nothing to do, and the volume keeps working.
    assert_eq!(e.m.hash("snap").unwrap().distinct, 2);
    e.write("vol", 0, b"new");
    assert_eq!(e.read("snap", 0, 8 * MIB4), before);
    // A clone of the hashed snapshot reads it and copies up content objects.
    e.m.clone_volume("snap", "c", None).unwrap();
    e.write("c", MIB4 + 1, b"x");
    let mut expect = before.clone();
    expect[MIB4 as usize + 1] = b'x';
    assert_eq!(e.read("c", 0, 8 * MIB4), expect);
    assert_eq!(e.read("snap", 0, 8 * MIB4), before);
}

#[test]
fn v1_maps_open_read_only_read_and_update() {
    let e = Env::new();
    let a = e.data.store_content(b"hello v1", true).unwrap();
    let raw = [(0u8, digest_of(&a)), (0u8, ZERO_BLOCK_DIGEST)];
    let size = 2 * LEGACY_OBJECT_SIZE - 512;
    e.maps
        .write_full("old1", &v1::encode(size, &raw), true)
        .unwrap();

    let info = e.m.info("old1").unwrap();
    assert_eq!(
        (info.format_version, info.size, info.volume_id),
        (1, size, 0)
    );
    e.m.open("old1", false).unwrap();
    let err = e.m.open("old1", true).unwrap_err();
    assert_eq!(err.code, ErrorCode::ReadOnly);
    assert!(err.detail.contains("vlmc upgrade old1"), "{err}");
    assert_eq!(e.maps.lock_owner("old1").unwrap(), None);
    assert_eq!(
        e.m.map_write("old1", 0, 1).unwrap_err().code,
        ErrorCode::ReadOnly
    );
    let before = e.read("old1", 0, size);
    assert_eq!(&before[..8], b"hello v1");
    assert!(before[8..].iter().all(|&b| b == 0));

    e.m.update("old1").unwrap();
    let info = e.m.info("old1").unwrap();
    assert_eq!(info.format_version, 3);
    assert_ne!(info.volume_id, 0);
    assert_eq!(e.read("old1", 0, size), before);
    e.m.update("old1").unwrap(); // idempotent
    e.write("old1", 1, b"ELLO");
    assert_eq!(&e.read("old1", 0, 8)[..], b"hELLO v1");
    let mut buf = [0u8; 8];
    e.data.read(&a, 0, &mut buf).unwrap();
    assert_eq!(&buf, b"hello v1", "the content object is never written");
}

#[test]
fn v2_maps_open_read_only_read_and_update() {
    let e = Env::new();
    let legacy_obj = "old2_0000000000000004_0000000000000000";
    e.data
        .write(legacy_obj, 0, &pattern(9, OS as usize), true)
        .unwrap();
    let content = e.data.store_content(b"content", true).unwrap();
    let hdr = v2::V2Header {
        size: 3 * OS - 512,
        blocksize: OS as u32,
        readonly: false,
        deleted: false,
        epoch: 4,
    };
    let entries = [
        LegacyEntry {
            name: Some(legacy_obj.into()),
            writable: true,
            archip: true,
            deleted: false,
        },
        LegacyEntry::zero(),
        LegacyEntry::content(&digest_of(&content)),
    ];
    let mut header_obj = v2::encode_header(&hdr).to_vec();
    header_obj.resize(v2::HEADER_READ_LEN, 0);
    e.maps.write_full("old2", &header_obj, true).unwrap();
    let mut block = Vec::new();
    for en in &entries {
        block.extend_from_slice(&v2::encode_legacy_entry(en).unwrap());
    }
    e.maps
        .write_full(&v2::map_object_name("old2", 0), &block, true)
        .unwrap();

    let info = e.m.info("old2").unwrap();
    assert_eq!(
        (info.format_version, info.epoch, info.object_size),
        (2, 4, OS)
    );
    assert_eq!(
        e.m.open("old2", true).unwrap_err().code,
        ErrorCode::ReadOnly
    );
    let before = e.read("old2", 0, 3 * OS - 512);
    assert_eq!(before[..OS as usize], pattern(9, OS as usize));
    assert!(before[OS as usize..2 * OS as usize].iter().all(|&b| b == 0));
    assert_eq!(&before[2 * OS as usize..2 * OS as usize + 7], b"content");

    e.m.update("old2").unwrap();
    assert_eq!(e.m.info("old2").unwrap().format_version, 3);
    assert!(
        e.maps.stat(&v2::map_object_name("old2", 0)).is_err(),
        "old map data removed"
    );
    assert_eq!(e.read("old2", 0, 3 * OS - 512), before);
    e.write("old2", 0, b"W");
    assert_eq!(e.read("old2", 0, 1), b"W");
    let mut buf = [0u8; 1];
    e.data.read(legacy_obj, 0, &mut buf).unwrap();
    assert_eq!(
        buf[0],
        pattern(9, 1)[0],
        "copy-on-write: the legacy object is untouched"
    );
}

#[test]
fn v0_maps_are_read_only_when_asked() {
    let e = Env::new();
    let a = e.data.store_content(b"pithos", true).unwrap();
    e.maps
        .write_full("pithos", &v0::encode(&[digest_of(&a)]), true)
        .unwrap();
    assert!(e.m.info("pithos").is_err(), "v0 only when assumed");
    let info = e.m.info_assume_v0("pithos", Some(1 << 20)).unwrap();
    assert_eq!((info.format_version, info.size), (0, 1 << 20));
    let ext =
        e.m.map_read_assume_v0("pithos", Some(1 << 20), 0, 6)
            .unwrap();
    assert_eq!(ext[0].object.as_deref(), Some(a.as_str()));
    e.m.update_assume_v0("pithos", Some(1 << 20)).unwrap();
    let info = e.m.info("pithos").unwrap();
    assert_eq!(
        (info.format_version, info.size, info.readonly),
        (3, 1 << 20, true)
    );
    assert_eq!(&e.read("pithos", 0, 6)[..], b"pithos");
}

#[test]
fn everything_works_on_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || FileStoreOptions {
        sync: false,
        fd_cache: 16,
    };
    std::fs::create_dir(dir.path().join("maps")).unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let maps = Arc::new(FileStore::open(dir.path().join("maps"), opts()).unwrap());
    let data = Arc::new(FileStore::open(dir.path().join("data"), opts()).unwrap());
    let m = Mapper::new(maps.clone(), data.clone(), "host1".into());
    m.create("vol", 16 * OS, Some(OS)).unwrap();
    let a = pattern(4, 3 * OS as usize);
    common::write(&m, &*data, "vol", 100, &a).unwrap();
    m.snapshot("vol", "s").unwrap();
    common::write(&m, &*data, "vol", 0, &vec![1u8; 2 * OS as usize]).unwrap();
    m.clone_volume("s", "c", None).unwrap();
    assert_eq!(common::read(&m, &*data, "c", 100, 3 * OS).unwrap(), a);
    assert_eq!(
        common::read(&m, &*data, "vol", 0, 2 * OS).unwrap(),
        vec![1u8; 2 * OS as usize]
    );
    m.close("vol").unwrap();
    assert_eq!(maps.lock_owner("vol").unwrap(), None);
    // A restarted mapper sees everything.
    let m2 = Mapper::new(maps.clone(), data.clone(), "host1".into());
    assert_eq!(common::read(&m2, &*data, "s", 100, 3 * OS).unwrap(), a);
    m2.rename("c", "c2").unwrap();
    assert_eq!(common::read(&m2, &*data, "c2", 100, 3 * OS).unwrap(), a);
}

/// A Pithos hashmap is named by 64 hex digits: it opens read-only (as
/// v0), and an upgrade writes the new map under a volume name, leaving
/// the hashmap as Pithos wrote it.
#[test]
fn a_pithos_hashmap_opens_read_only_and_upgrades_under_a_volume_name() {
    let e = Env::new();
    let a = e.data.store_content(b"pithos", true).unwrap();
    let hashmap = "c0".repeat(32);
    let bytes = v0::encode(&[digest_of(&a)]);
    e.maps.write_full(&hashmap, &bytes, true).unwrap();
    let info = e.m.info_assume_v0(&hashmap, Some(1 << 20)).unwrap();
    assert_eq!((info.format_version, info.readonly), (0, true));
    let ext =
        e.m.map_read_assume_v0(&hashmap, Some(1 << 20), 0, 6)
            .unwrap();
    assert_eq!(ext[0].object.as_deref(), Some(a.as_str()));
    // Never writable, never upgraded in place.
    assert!(e.m.open(&hashmap, true).is_err());
    let in_place = e.m.update_assume_v0(&hashmap, Some(1 << 20)).unwrap_err();
    assert_eq!(in_place.code, ErrorCode::InvalidArgument, "{in_place}");
    e.m.upgrade_v0(&hashmap, "image", Some(1 << 20)).unwrap();
    let mut now = vec![0u8; bytes.len()];
    e.maps.read(&hashmap, 0, &mut now).unwrap();
    assert_eq!(now, bytes, "the hashmap is left as it was");
    let info = e.m.info("image").unwrap();
    assert_eq!((info.format_version, info.readonly), (3, true));
    assert_eq!(&e.read("image", 0, 6)[..], b"pithos");
    assert_eq!(
        e.m.upgrade_v0(&hashmap, "image", Some(1 << 20))
            .unwrap_err()
            .code,
        ErrorCode::Exists
    );
}
