//! Volumes end to end through `vlmcd` (port 4) over `mapperd` and two
//! `blockerd`s on the files backend: snapshots, clones of clones, resize,
//! two writers of one volume on one host (the storage lock), hashing a
//! snapshot with repeated and zero objects, v1 and v2 maps read, refused
//! for writing, updated and then written, and every peer stopped (SIGTERM)
//! and killed (SIGKILL) and restarted with nothing lost.

use std::collections::BTreeMap;
use std::time::Duration;

use archipelago_client::Client;
use archipelago_e2e::pipeline::{Backend, Pipeline, BLOCKERB, BLOCKERM, VLMCD};
use archipelago_mapfmt::{v1, v2, LEGACY_OBJECT_SIZE, ZERO_BLOCK_DIGEST, ZERO_BLOCK_NAME};
use archipelago_protocol::{names, ErrorCode};
use archipelago_store::content_name_of;

const OBJ: u64 = 64 << 10;
const SIZE: u64 = 1 << 20;
/// Largest single read or write the test sends.
const PIECE: u64 = 256 << 10;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8 | 1)
        .collect()
}

/// Expected contents of every volume.
#[derive(Default)]
struct Images(BTreeMap<String, Vec<u8>>);

impl Images {
    fn get(&mut self, vol: &str) -> &mut Vec<u8> {
        self.0
            .get_mut(vol)
            .unwrap_or_else(|| panic!("no image {vol}"))
    }

    /// Writes through vlmcd (in pieces) and records the write.
    fn write(&mut self, c: &Client, vol: &str, offset: u64, data: &[u8]) {
        for (i, piece) in data.chunks(PIECE as usize).enumerate() {
            let at = offset + i as u64 * PIECE;
            c.volume_write(VLMCD, vol, at, piece, false)
                .unwrap_or_else(|e| panic!("write {vol} at {at}: {e}"));
        }
        self.get(vol)[offset as usize..][..data.len()].copy_from_slice(data);
    }

    fn check(&self, c: &Client, vol: &str) {
        let expect = &self.0[vol];
        let got = read_all(c, vol, expect.len() as u64);
        if let Some(at) = (0..expect.len()).find(|&i| got[i] != expect[i]) {
            panic!("{vol}: first difference at byte {at}");
        }
    }

    fn check_all(&self, c: &Client) {
        for vol in self.0.keys() {
            self.check(c, vol);
        }
    }
}

fn read_all(c: &Client, vol: &str, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size as usize);
    let mut at = 0;
    while at < size {
        let n = PIECE.min(size - at);
        let piece = c
            .volume_read(VLMCD, vol, at, n)
            .unwrap_or_else(|e| panic!("read {vol} at {at}: {e}"));
        out.extend_from_slice(&piece);
        at += n;
    }
    out
}

/// Names on the data blocker that are content names (64 hex digits).
fn content_objects(c: &Client) -> Vec<String> {
    let mut all = c.list(BLOCKERB, "", 4 << 20).unwrap();
    all.retain(|n| names::is_content_name(n.as_bytes()));
    all
}

fn digest_of(content_name: &str) -> [u8; 32] {
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(&content_name[2 * i..2 * i + 2], 16).unwrap();
    }
    d
}

fn code(r: Result<impl std::fmt::Debug, archipelago_protocol::Error>) -> ErrorCode {
    r.expect_err("refused").code
}

/// Snapshot, overwrite, clone, clone of a clone, resize, range checks.
fn snapshots_clones_and_resize(c: &Client, img: &mut Images) {
    c.create_volume(VLMCD, "vol", SIZE, Some(OBJ)).unwrap();
    img.0.insert("vol".into(), vec![0; SIZE as usize]);
    img.write(c, "vol", 1000, &pattern(3 * OBJ as usize, 1));
    img.write(c, "vol", SIZE - 5000, &pattern(5000, 2));
    img.write(c, "vol", 7 * OBJ, &pattern(OBJ as usize, 3));
    img.check(c, "vol");

    c.snapshot(VLMCD, "vol", "snap1").unwrap();
    let snap = img.0["vol"].clone();
    img.0.insert("snap1".into(), snap);
    img.write(c, "vol", 500, &pattern(2 * OBJ as usize + 17, 4));
    img.write(c, "vol", 7 * OBJ + 100, &pattern(100, 5));
    assert_eq!(
        code(c.volume_write(VLMCD, "snap1", 0, &[1], false)),
        ErrorCode::ReadOnly
    );
    img.check(c, "vol");
    img.check(c, "snap1");

    c.clone_volume(VLMCD, "snap1", "clone1", None).unwrap();
    img.0.insert("clone1".into(), img.0["snap1"].clone());
    img.check(c, "clone1");
    img.write(c, "clone1", OBJ - 10, &pattern(OBJ as usize, 6));
    img.write(c, "clone1", 12 * OBJ, &pattern(OBJ as usize, 7));
    // Only snapshots are cloned.
    assert_eq!(
        code(c.clone_volume(VLMCD, "clone1", "nope", None)),
        ErrorCode::InvalidArgument
    );

    // A clone of the clone (through its snapshot).
    c.snapshot(VLMCD, "clone1", "clone1snap").unwrap();
    img.0.insert("clone1snap".into(), img.0["clone1"].clone());
    c.clone_volume(VLMCD, "clone1snap", "clone2", None).unwrap();
    img.0.insert("clone2".into(), img.0["clone1"].clone());
    img.write(c, "clone2", 3 * OBJ + 3, &pattern(5000, 8));
    img.write(c, "clone1", 3 * OBJ + 3, &pattern(5000, 9));
    for v in ["vol", "snap1", "clone1", "clone1snap", "clone2"] {
        img.check(c, v);
    }

    // Grow: the new tail reads as zeros and takes writes.
    c.resize_volume(VLMCD, "clone2", 2 * SIZE, false).unwrap();
    assert_eq!(c.volume_info(VLMCD, "clone2").unwrap().size, 2 * SIZE);
    img.get("clone2").resize(2 * SIZE as usize, 0);
    img.check(c, "clone2");
    img.write(c, "clone2", SIZE + OBJ / 2, &pattern(OBJ as usize, 10));
    // Shrink mid-object: needs force.
    let small = SIZE / 2 + 1024;
    assert_eq!(
        code(c.resize_volume(VLMCD, "clone2", small, false)),
        ErrorCode::InvalidArgument
    );
    c.resize_volume(VLMCD, "clone2", small, true).unwrap();
    img.get("clone2").truncate(small as usize);
    img.check(c, "clone2");
    // Past the end: refused.
    assert_eq!(
        code(c.volume_read(VLMCD, "clone2", small - 10, 20)),
        ErrorCode::OutOfRange
    );
    assert_eq!(
        code(c.volume_read(VLMCD, "clone2", small, 1)),
        ErrorCode::OutOfRange
    );
    assert_eq!(
        code(c.volume_write(VLMCD, "clone2", small, &[1], false)),
        ErrorCode::OutOfRange
    );
    assert_eq!(
        code(c.volume_write(VLMCD, "clone2", small - 1, &[1, 2], false)),
        ErrorCode::OutOfRange
    );
    // Grow back: the cut bytes come back as zeros.
    c.resize_volume(VLMCD, "clone2", SIZE, false).unwrap();
    img.get("clone2").resize(SIZE as usize, 0);
    img.check(c, "clone2");
    // The snapshot the clone came from is untouched.
    img.check(c, "clone1snap");
}

/// Two clients open one volume writable on one host: the storage lock is
/// held until the last close.
fn two_writers_share_the_lock(p: &Pipeline, c: &Client, img: &mut Images) {
    let a = p.client(Duration::from_secs(20));
    let b = p.client(Duration::from_secs(20));
    c.create_volume(VLMCD, "shared", SIZE, Some(OBJ)).unwrap();
    img.0.insert("shared".into(), vec![0; SIZE as usize]);
    assert_eq!(c.lock_owner(BLOCKERM, "shared").unwrap(), None);
    assert!(!a.open_volume(VLMCD, "shared", true).unwrap().readonly);
    b.open_volume(VLMCD, "shared", true).unwrap();
    img.write(&a, "shared", 10, &pattern(OBJ as usize, 11));
    img.write(&b, "shared", 5 * OBJ + 1, &pattern(OBJ as usize, 12));
    img.write(&a, "shared", 5 * OBJ + 100, &pattern(50, 13));
    img.check(&a, "shared");
    img.check(&b, "shared");
    let owner = |what: &str| {
        let o = c.lock_owner(BLOCKERM, "shared").unwrap();
        if let Some((host, _)) = &o {
            assert_eq!(host, "host-a", "{what}");
        }
        o.is_some()
    };
    assert!(owner("both open"), "the lock is held while both are open");
    a.close_volume(VLMCD, "shared").unwrap();
    assert!(owner("one open"), "the lock is held after the first close");
    img.write(&b, "shared", 9 * OBJ, &pattern(1000, 14));
    b.close_volume(VLMCD, "shared").unwrap();
    assert!(!owner("closed"), "the last close released the lock");
    img.check(c, "shared");
}

/// A snapshot of N identical objects, zero objects and one distinct one
/// hashes to exactly two content objects.
fn hashing_deduplicates(c: &Client, img: &mut Images) {
    const N: u64 = 4;
    const ZEROS: u64 = 2;
    let size = 8 * OBJ;
    c.create_volume(VLMCD, "dedup", size, Some(OBJ)).unwrap();
    img.0.insert("dedup".into(), vec![0; size as usize]);
    let same = pattern(OBJ as usize, 20);
    for i in 0..N {
        img.write(c, "dedup", i * OBJ, &same);
    }
    for i in N..N + ZEROS {
        img.write(c, "dedup", i * OBJ, &vec![0; OBJ as usize]);
    }
    img.write(c, "dedup", (N + ZEROS) * OBJ, &pattern(OBJ as usize, 21));
    // The last object stays unwritten.
    c.snapshot(VLMCD, "dedup", "dedupsnap").unwrap();
    img.0.insert("dedupsnap".into(), img.0["dedup"].clone());
    assert_eq!(content_objects(c), Vec::<String>::new());

    let report = c.hash_snapshot(VLMCD, "dedupsnap").unwrap();
    let content = content_objects(c);
    assert_eq!(content.len(), 2, "content objects: {content:?}; {report:?}");
    assert_eq!(
        (report.objects, report.distinct, report.zero_objects),
        (N + ZEROS + 1, 2, ZEROS),
        "{report:?}"
    );
    assert_eq!(report.bytes_saved, (N + ZEROS + 1 - 2) * OBJ, "{report:?}");
    assert!(c.volume_info(VLMCD, "dedupsnap").unwrap().hashed);
    img.check(c, "dedupsnap");
    img.check(c, "dedup");
    // Hashing again changes nothing.
    c.hash_snapshot(VLMCD, "dedupsnap").unwrap();
    assert_eq!(content_objects(c), content);
    img.check(c, "dedupsnap");
}

/// Stores `data` on the data blocker under its content name; returns the
/// name.
fn store_content(c: &Client, data: &[u8]) -> String {
    let name = content_name_of(data);
    c.write_full(BLOCKERB, &name, data).unwrap();
    name
}

/// The common part of the v1 and v2 checks: reads as built, writes are
/// refused until UPDATE, then written and read back.
fn legacy_update(c: &Client, img: &mut Images, vol: &str, version: u32, write_at: u64) {
    let info = c.volume_info(VLMCD, vol).unwrap();
    assert_eq!(info.format_version, version);
    assert_eq!(info.size, img.0[vol].len() as u64);
    img.check(c, vol);
    assert_eq!(
        code(c.volume_write(VLMCD, vol, 0, &[1], false)),
        ErrorCode::ReadOnly
    );
    // The mapper's detail reaches the client through vlmcd.
    let e = c.open_volume(VLMCD, vol, true).unwrap_err();
    assert_eq!(e.code, ErrorCode::ReadOnly);
    assert!(e.to_string().contains(&format!("upgrade {vol}")), "{e}");
    c.update_volume(VLMCD, vol).unwrap();
    let info = c.volume_info(VLMCD, vol).unwrap();
    assert_eq!((info.format_version, info.readonly), (3, false));
    img.check(c, vol);
    img.write(c, vol, write_at, &pattern(3000, 40 + version as u8));
    img.write(c, vol, 0, &pattern(100, 50 + version as u8));
    img.check(c, vol);
    // UPDATE of an updated map does nothing.
    c.update_volume(VLMCD, vol).unwrap();
    img.check(c, vol);
}

/// A v1 map: one archip object, one content object, one zero block.
fn v1_map(c: &Client, img: &mut Images) {
    let vol = "legacy1";
    let size = 2 * LEGACY_OBJECT_SIZE + 8192;
    let archip_digest = [0x11u8; 32];
    let d0 = pattern(100 << 10, 30);
    c.write_full(
        BLOCKERB,
        &format!("archip_{}", names::content_name(&archip_digest)),
        &d0,
    )
    .unwrap();
    let d1 = pattern(50 << 10, 31);
    let content = store_content(c, &d1);
    let map = v1::encode(
        size,
        &[
            (1, archip_digest),
            (0, digest_of(&content)),
            (0, ZERO_BLOCK_DIGEST),
        ],
    );
    c.write_full(BLOCKERM, vol, &map).unwrap();
    let mut image = vec![0u8; size as usize];
    image[..d0.len()].copy_from_slice(&d0);
    image[LEGACY_OBJECT_SIZE as usize..][..d1.len()].copy_from_slice(&d1);
    img.0.insert(vol.into(), image);
    legacy_update(c, img, vol, 1, LEGACY_OBJECT_SIZE - 1000);
}

/// A v2 map of 4 KiB objects over two map-data objects: writable archip
/// objects (full and short), content objects and zero blocks.
fn v2_map(c: &Client, img: &mut Images) {
    let vol = "legacy2";
    let bs: u32 = 4096;
    let nobj = 40u64;
    let size = nobj * u64::from(bs) - 512;
    let mut image = vec![0u8; size as usize];
    let mut entries = Vec::new();
    for i in 0..nobj {
        let at = (i * u64::from(bs)) as usize;
        let room = (size as usize - at).min(bs as usize);
        let entry = match i % 4 {
            0 | 3 => {
                let name = format!("archip_{i:064x}");
                let len = if i % 4 == 0 { bs as usize } else { 1000 };
                let data = pattern(len, 60 + i as u8);
                c.write_full(BLOCKERB, &name, &data).unwrap();
                image[at..at + room.min(len)].copy_from_slice(&data[..room.min(len)]);
                v2::encode_entry(v2::ENTRY_WRITABLE | v2::ENTRY_ARCHIP, name.as_bytes())
            }
            1 => {
                let data = pattern(bs as usize - 7 * i as usize, 100 + i as u8);
                let name = store_content(c, &data);
                image[at..at + room.min(data.len())].copy_from_slice(&data[..room.min(data.len())]);
                v2::encode_entry(0, name.as_bytes())
            }
            _ => v2::encode_entry(v2::ENTRY_ZERO, ZERO_BLOCK_NAME.as_bytes()),
        };
        entries.push(entry.unwrap());
    }
    let per = v2::entries_per_object(bs) as usize;
    assert_eq!(per, 32);
    for (block, group) in entries.chunks(per).enumerate() {
        let bytes: Vec<u8> = group.concat();
        c.write_full(BLOCKERM, &v2::map_object_name(vol, block as u64), &bytes)
            .unwrap();
    }
    let header = v2::encode_header(&v2::V2Header {
        size,
        blocksize: bs,
        readonly: false,
        deleted: false,
        epoch: 0,
    });
    c.write_full(BLOCKERM, vol, &header).unwrap();
    img.0.insert(vol.into(), image);
    assert_eq!(c.list(BLOCKERM, "legacy2_", 4096).unwrap().len(), 2);
    legacy_update(c, img, vol, 2, 31 * u64::from(bs) + 100);
}

#[test]
fn volumes_through_the_whole_pipeline_survive_restarts_and_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let maps = tempfile::tempdir().unwrap();
    let mut p = Pipeline::start(
        "volumes",
        "host-a",
        &Backend::Files(data.path().to_owned()),
        &Backend::Files(maps.path().to_owned()),
    );
    let c = p.client(Duration::from_secs(20));
    let mut img = Images::default();

    snapshots_clones_and_resize(&c, &mut img);
    two_writers_share_the_lock(&p, &c, &mut img);
    hashing_deduplicates(&c, &mut img);
    v1_map(&c, &mut img);
    v2_map(&c, &mut img);
    img.check_all(&c);

    // SIGTERM every peer, restart: everything reads back.
    p.terminate_all();
    p.restart_all();
    img.check_all(&c);
    // And takes writes again (the volumes opened before the restart too).
    img.write(&c, "vol", 3 * OBJ - 7, &pattern(OBJ as usize, 80));
    img.write(&c, "clone2", 0, &pattern(2 * OBJ as usize, 81));
    img.write(&c, "legacy2", 5000, &pattern(9000, 82));
    img.write(&c, "dedup", 0, &pattern(OBJ as usize, 83));

    // kill -9 every peer, restart: acknowledged writes are intact.
    p.kill9_all();
    p.restart_all();
    img.check_all(&c);
    img.write(&c, "vol", 0, &pattern(100, 84));
    img.write(&c, "legacy1", LEGACY_OBJECT_SIZE + 5, &pattern(100, 85));
    img.check_all(&c);
}
