//! `vlmc upgrade` end to end: an old-format (v1) map written straight to
//! the map blocker is served read-only, `vlmc upgrade` converts it to the
//! current format from the command line, and the volume then reads the
//! same and takes writes.

mod common;

use std::time::Duration;

use archipelago_e2e::pattern::mix;
use archipelago_e2e::pipeline::{Backend, Pipeline, BLOCKERB, BLOCKERM, VLMCD};
use archipelago_mapfmt::{v1, LEGACY_OBJECT_SIZE, ZERO_BLOCK_DIGEST};
use archipelago_protocol::{names, ErrorCode};
use common::Vlmc;

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| mix(seed ^ (i / 8)) as u8 | 1)
        .collect()
}

#[test]
fn upgrade_converts_an_old_map_from_the_command_line() {
    let p = Pipeline::start("vlmc-upgrade", "host-a", &Backend::Memory, &Backend::Memory);
    let vlmc = Vlmc {
        segment: p.tmp.arg(),
    };
    let c = p.client(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();

    // A v1 map: two archip objects (one short) and a zero block.
    let vol = "old1";
    let size = 3 * LEGACY_OBJECT_SIZE;
    let (da, db) = ([0x11u8; 32], [0x22u8; 32]);
    let a = bytes(300 << 10, 1);
    let b = bytes(LEGACY_OBJECT_SIZE as usize, 2);
    for (d, data) in [(da, &a), (db, &b)] {
        c.write_full(
            BLOCKERB,
            &format!("archip_{}", names::content_name(&d)),
            data,
        )
        .unwrap();
    }
    let map = v1::encode(size, &[(1, da), (1, db), (0, ZERO_BLOCK_DIGEST)]);
    c.write_full(BLOCKERM, vol, &map).unwrap();
    let mut image = vec![0u8; size as usize];
    image[..a.len()].copy_from_slice(&a);
    image[LEGACY_OBJECT_SIZE as usize..][..b.len()].copy_from_slice(&b);

    let export = |name: &str| -> Vec<u8> {
        let f = dir.path().join(format!("{name}.raw"));
        let _ = std::fs::remove_file(&f);
        vlmc.ok(&["export", name, f.to_str().unwrap()]);
        std::fs::read(&f).unwrap()
    };

    // Before: the old format, readable; writes refused until upgraded
    // (its `readonly` says what the old map was: a volume, not a
    // snapshot).
    let info = vlmc.json(&["info", vol]);
    assert_eq!(info["format_version"], 1, "{info}");
    assert!(export(vol) == image, "the old map does not read as built");
    assert_eq!(
        c.volume_write(VLMCD, vol, 0, &[1], false).unwrap_err().code,
        ErrorCode::ReadOnly
    );

    // vlmc upgrade: the current format, writable, the same bytes.
    vlmc.ok(&["upgrade", vol]);
    let info = vlmc.json(&["info", vol]);
    assert_eq!(
        (info["format_version"].clone(), info["readonly"].clone()),
        (3.into(), false.into()),
        "{info}"
    );
    assert_eq!(info["size"], size, "{info}");
    assert!(export(vol) == image, "the upgraded map reads differently");
    let w = bytes(5000, 3);
    let at = LEGACY_OBJECT_SIZE - 1000;
    c.volume_write(VLMCD, vol, at, &w, true).unwrap();
    image[at as usize..][..w.len()].copy_from_slice(&w);
    c.close_volume(VLMCD, vol).unwrap();
    assert!(export(vol) == image, "a write after the upgrade");

    // Again: nothing to do, nothing changed.
    vlmc.ok(&["upgrade", vol]);
    assert_eq!(vlmc.json(&["info", vol])["format_version"], 3);
    assert!(export(vol) == image);

    // A name that does not exist: one line naming it.
    vlmc.fails(&["upgrade", "nope"], "nope", "");
}
