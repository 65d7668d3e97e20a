//! Dedup that saves space (issue 14), end to end: two hosts (two complete
//! pipelines, host-a and host-b, on one pair of files-backend stores), a
//! golden image with clones made before the hash, some open and written
//! on either host while `vlmc hash` runs. After `vlmc hash` and `vlmc gc`
//! the data store holds at most the image's objects plus the objects the
//! clones overwrote; `vlmc du` shows the saving; every volume reads the
//! same before and after.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use archipelago_client::Client;
use archipelago_e2e::pipeline::{Backend, Pipeline, BLOCKERB, VLMCD};
use common::Vlmc;

const OBJ: u64 = 64 << 10;
/// Objects in the golden image.
const N: u64 = 16;
const SIZE: u64 = N * OBJ;

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(31).wrapping_add(seed * 7) ^ (i as u64 >> 9)) as u8 | 1)
        .collect()
}

fn read_all(c: &Client, vol: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < SIZE {
        let n = (256 << 10).min(SIZE - at);
        out.extend(
            c.volume_read(VLMCD, vol, at, n)
                .unwrap_or_else(|e| panic!("read {vol}: {e}")),
        );
        at += n;
    }
    out
}

fn data_objects(c: &Client) -> usize {
    c.list(BLOCKERB, "", 4 << 20).unwrap().len()
}

/// Writes `d` at `off` of `vol` through `c` and into its model.
fn write(c: &Client, vol: &str, model: &mut [u8], off: u64, d: &[u8]) {
    c.volume_write(VLMCD, vol, off, d, false)
        .unwrap_or_else(|e| panic!("write {vol}: {e}"));
    model[off as usize..off as usize + d.len()].copy_from_slice(d);
}

/// A writer on `vol` while the hash runs: first a partial write to object
/// `fresh` (still shared with the image: a copy-up racing the move), then
/// writes inside the objects it already overwrote (`own`), until `stop`.
fn writer(
    seg: String,
    vol: &'static str,
    mut model: Vec<u8>,
    fresh: u64,
    own: [u64; 2],
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<u8>, u64)> {
    std::thread::spawn(move || {
        let c = Client::connect(&seg)
            .unwrap()
            .with_timeout(Duration::from_secs(60));
        write(&c, vol, &mut model, fresh * OBJ + 333, &pattern(5000, 900));
        let mut n = 1;
        while !stop.load(Ordering::Relaxed) {
            let at = own[(n % 2) as usize] * OBJ + (n * 4096) % (OBJ - 512);
            write(&c, vol, &mut model, at, &pattern(512, 1000 + n));
            n += 1;
        }
        (model, n)
    })
}

#[test]
fn hashing_a_golden_image_frees_what_its_clones_share_while_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let (data, maps) = (
        Backend::SharedFiles(dir.path().join("data")),
        Backend::SharedFiles(dir.path().join("maps")),
    );
    let a = Pipeline::start("dedup-a", "host-a", &data, &maps);
    let b = Pipeline::start("dedup-b", "host-b", &data, &maps);
    let ca = a.client(Duration::from_secs(60));
    let cb = b.client(Duration::from_secs(60));
    let vlmc = Vlmc {
        segment: a.tmp.arg(),
    };

    // The golden image: N objects, 10 distinct contents.
    ca.create_volume(VLMCD, "gold", SIZE, Some(OBJ)).unwrap();
    let mut image = vec![0u8; SIZE as usize];
    for i in 0..N {
        write(
            &ca,
            "gold",
            &mut image,
            i * OBJ,
            &pattern(OBJ as usize, i % 10),
        );
    }
    ca.close_volume(VLMCD, "gold").unwrap();
    vlmc.ok(&["snapshot", "gold", "gold-s"]);
    assert_eq!(data_objects(&ca), N as usize);

    // Clones made before the hash, each overwriting two objects (one
    // whole, one in part: a copy-up): c0 open on host a, c1 open on host
    // b, c2 closed with a snapshot c2-s.
    let mut overwritten = BTreeSet::new();
    let mut models = Vec::new();
    for (k, (vol, c)) in [("c0", &ca), ("c1", &cb), ("c2", &ca)]
        .into_iter()
        .enumerate()
    {
        vlmc.ok(&["create", vol, "--snap", "gold-s"]);
        let k = k as u64;
        let mut m = image.clone();
        write(c, vol, &mut m, 3 * k * OBJ, &pattern(OBJ as usize, 50 + k));
        write(
            c,
            vol,
            &mut m,
            (3 * k + 1) * OBJ + 17,
            &pattern(100, 60 + k),
        );
        overwritten.insert((vol, 3 * k));
        overwritten.insert((vol, 3 * k + 1));
        models.push((vol, m));
    }
    ca.close_volume(VLMCD, "c2").unwrap();
    vlmc.ok(&["snapshot", "c2", "c2-s"]);
    let c2 = models[2].1.clone();
    models.push(("c2-s", c2));
    models.push(("gold", image.clone()));
    models.push(("gold-s", image.clone()));
    for (v, m) in &models {
        assert!(read_all(&ca, v) == *m, "{v} before the hash");
    }
    let before_hash = data_objects(&ca);

    // The hash, with c0 (host a) and c1 (host b) written meanwhile; each
    // writer overwrites one more object shared with the image.
    let stop = Arc::new(AtomicBool::new(false));
    overwritten.insert(("c0", 10));
    overwritten.insert(("c1", 12));
    let w0 = writer(
        a.tmp.arg(),
        "c0",
        models[0].1.clone(),
        10,
        [0, 1],
        stop.clone(),
    );
    let w1 = writer(
        b.tmp.arg(),
        "c1",
        models[1].1.clone(),
        12,
        [3, 4],
        stop.clone(),
    );
    let report = vlmc.json(&["hash", "gold-s"]);
    stop.store(true, Ordering::Relaxed);
    let (m0, n0) = w0.join().expect("writer c0");
    let (m1, n1) = w1.join().expect("writer c1");
    models[0].1 = m0;
    models[1].1 = m1;
    assert!(
        n0 > 1 && n1 > 1,
        "writes went on during the hash: {n0}, {n1}"
    );

    let gc = vlmc.json(&["gc"]);
    let after = data_objects(&ca);
    let bound = N as usize + overwritten.len();
    println!(
        "data objects: {before_hash} before the hash, {after} after hash and gc \
         (bound N + overwritten = {N} + {} = {bound}); hash {report}; gc {gc}",
        overwritten.len()
    );
    assert!(
        after <= bound,
        "{after} data objects after hash and gc, more than {bound}: {report} {gc}"
    );
    assert_eq!(report["maps_left_count"], 0, "{report}");
    assert_eq!(report["maps_left"], serde_json::json!([]), "{report}");
    for (v, m) in &models {
        assert!(
            read_all(&ca, v) == *m,
            "{v} reads differently after hash and gc"
        );
    }
    // du: every map that shared the image now refers to its content
    // objects, stored once.
    let du = vlmc.json(&["du"]);
    for v in ["gold", "gold-s", "c0", "c1", "c2", "c2-s"] {
        let u = du
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == v)
            .unwrap_or_else(|| panic!("{v} in {du}"));
        assert!(
            u["dedup_saved_bytes"].as_u64().unwrap() > 0,
            "{v} saves nothing: {u}"
        );
    }
    assert_eq!(vlmc.json(&["gc", "--dry-run"])["freed_objects"], 0);
    drop(b);
}

/// A map whose holder does not move it (here a lock `vlmc lock` took for
/// another owner, no mapper behind it) is listed by `vlmc hash` after its
/// wait, in JSON and in text; once free, hashing again moves it.
#[test]
fn vlmc_hash_lists_the_maps_still_naming_old_objects_and_a_rerun_moves_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::start(
        "dedup-left",
        "host-a",
        &Backend::Files(dir.path().join("data")),
        &Backend::Files(dir.path().join("maps")),
    );
    let c = p.client(Duration::from_secs(60));
    let vlmc = Vlmc {
        segment: p.tmp.arg(),
    };
    c.create_volume(VLMCD, "gold", SIZE, Some(OBJ)).unwrap();
    let mut image = vec![0u8; SIZE as usize];
    for i in 0..N {
        write(
            &c,
            "gold",
            &mut image,
            i * OBJ,
            &pattern(OBJ as usize, i % 4),
        );
    }
    c.close_volume(VLMCD, "gold").unwrap();
    vlmc.ok(&["snapshot", "gold", "gold-s"]);
    vlmc.ok(&["create", "held", "--snap", "gold-s"]);
    vlmc.ok(&["--host-id", "elsewhere", "lock", "held"]);

    let r = vlmc.json(&["hash", "gold-s", "--wait", "1"]);
    assert_eq!(r["maps_left"], serde_json::json!(["held"]), "{r}");
    assert_eq!(r["maps_left_count"], 1, "{r}");
    assert_eq!(r["maps_moved"], 1, "gold: {r}");
    let text = vlmc.ok(&["hash", "gold-s", "--wait", "0"]);
    assert!(
        text.lines()
            .any(|l| l.contains("still name replaced objects") && l.ends_with(": held")),
        "{text}"
    );
    // Nothing is lost meanwhile: gold's old objects stay for "held".
    vlmc.json(&["gc"]);
    assert!(read_all(&c, "held") == image);

    vlmc.ok(&["--host-id", "elsewhere", "unlock", "held"]);
    let r = vlmc.json(&["hash", "gold-s"]);
    assert_eq!(r["maps_left_count"], 0, "{r}");
    assert_eq!(r["maps_moved"], 1, "held: {r}");
    vlmc.json(&["gc"]);
    // Four distinct contents are all that is left.
    assert_eq!(data_objects(&c), 4);
    for v in ["gold", "gold-s", "held"] {
        assert!(read_all(&c, v) == image, "{v}");
    }
}
