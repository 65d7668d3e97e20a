//! DISCARD and WRITE_ZEROES end to end through `vlmcd` over `mapperd` and
//! two `blockerd`s: zeros exactly in the range, data elsewhere, whole
//! objects' entries zero (the mapper's MAP_READ reports ZERO extents),
//! and a snapshot taken before still reads the old data.

use std::time::Duration;

use archipelago_client::Client;
use archipelago_e2e::pipeline::{Backend, Pipeline, MAPPER, VLMCD};
use archipelago_protocol::ErrorCode;

const OBJ: u64 = 64 << 10;
const SIZE: u64 = 1 << 20;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8 | 1)
        .collect()
}

fn read(c: &Client, vol: &str, len: u64) -> Vec<u8> {
    c.volume_read(VLMCD, vol, 0, len)
        .unwrap_or_else(|e| panic!("read {vol}: {e}"))
}

fn check(c: &Client, vol: &str, expect: &[u8]) {
    let got = read(c, vol, expect.len() as u64);
    if let Some(at) = (0..expect.len()).find(|&i| got[i] != expect[i]) {
        panic!("{vol}: first difference at byte {at}");
    }
}

/// Whether object `index` of `vol` has a zero entry, as the mapper says
/// (one extent, or one per run of granules of a partial entry, none
/// naming an object).
fn zero_entry(c: &Client, vol: &str, index: u64) -> bool {
    let e = c.map_read(MAPPER, vol, index * OBJ, OBJ).unwrap();
    assert!(!e.is_empty() && e.iter().all(|x| x.index == index));
    e.iter().all(|x| x.object.is_none())
}

#[test]
fn discard_and_write_zeroes_through_the_composer() {
    let p = Pipeline::start("discard", "host-a", &Backend::Memory, &Backend::Memory);
    let c = p.client(Duration::from_secs(30));
    c.create_volume(VLMCD, "vol", SIZE, Some(OBJ)).unwrap();
    let old = pattern(6 * OBJ as usize, 11);
    c.volume_write(VLMCD, "vol", 0, &old, false).unwrap();
    c.snapshot(VLMCD, "vol", "before").unwrap();
    let mut image = vec![0u8; SIZE as usize];
    image[..old.len()].copy_from_slice(&old);

    // DISCARD: object 0's tail, object 1 whole, object 2's head.
    let (off, len) = (OBJ / 2, 2 * OBJ);
    c.volume_discard(VLMCD, "vol", off, len).unwrap();
    image[off as usize..(off + len) as usize].fill(0);
    check(&c, "vol", &image);
    assert!(zero_entry(&c, "vol", 1));
    assert!(!zero_entry(&c, "vol", 0) && !zero_entry(&c, "vol", 2));

    // WRITE_ZEROES: object 3's tail, object 4 whole, object 5's head.
    let (off, len) = (3 * OBJ + 10, 2 * OBJ + 10);
    c.volume_write_zeroes(VLMCD, "vol", off, len).unwrap();
    image[off as usize..(off + len) as usize].fill(0);
    check(&c, "vol", &image);
    assert!(zero_entry(&c, "vol", 4));
    assert!(!zero_entry(&c, "vol", 3) && !zero_entry(&c, "vol", 5));

    // The snapshot taken before still reads the old data.
    check(&c, "before", &old);

    // Objects written after the snapshot (private to the volume's epoch):
    // a whole discard zeroes the entry; a later partial write shows no
    // stale byte.
    let fresh = pattern(2 * OBJ as usize, 77);
    c.volume_write(VLMCD, "vol", 8 * OBJ, &fresh, true).unwrap();
    image[8 * OBJ as usize..10 * OBJ as usize].copy_from_slice(&fresh);
    c.volume_discard(VLMCD, "vol", 8 * OBJ, OBJ + 5).unwrap();
    image[8 * OBJ as usize..(9 * OBJ + 5) as usize].fill(0);
    assert!(zero_entry(&c, "vol", 8));
    c.volume_write(VLMCD, "vol", 8 * OBJ + 100, b"new", false)
        .unwrap();
    image[(8 * OBJ + 100) as usize..][..3].copy_from_slice(b"new");
    check(&c, "vol", &image);

    // Discarding unwritten space and zero lengths cost nothing; errors.
    c.volume_discard(VLMCD, "vol", 12 * OBJ + 1, 3 * OBJ)
        .unwrap();
    c.volume_write_zeroes(VLMCD, "vol", 0, 0).unwrap();
    check(&c, "vol", &image);
    assert_eq!(
        c.volume_discard(VLMCD, "vol", SIZE - 1, 2)
            .unwrap_err()
            .code,
        ErrorCode::OutOfRange
    );
    assert_eq!(
        c.volume_discard(VLMCD, "before", 0, OBJ).unwrap_err().code,
        ErrorCode::ReadOnly
    );
    assert_eq!(
        c.volume_write_zeroes(VLMCD, "before", 0, OBJ)
            .unwrap_err()
            .code,
        ErrorCode::ReadOnly
    );
    check(&c, "before", &old);

    // A clone of the snapshot: discard there leaves the snapshot intact.
    c.clone_volume(VLMCD, "before", "clone", None).unwrap();
    c.volume_discard(VLMCD, "clone", OBJ / 3, 4 * OBJ).unwrap();
    let mut cimage = vec![0u8; SIZE as usize];
    cimage[..old.len()].copy_from_slice(&old);
    cimage[(OBJ / 3) as usize..(OBJ / 3 + 4 * OBJ) as usize].fill(0);
    check(&c, "clone", &cimage);
    check(&c, "before", &old);

    // Barriers see discards as writes: a snapshot after them has them.
    c.snapshot(VLMCD, "vol", "after").unwrap();
    check(&c, "after", &image);
    for v in ["vol", "clone"] {
        c.close_volume(VLMCD, v).unwrap();
    }
}
