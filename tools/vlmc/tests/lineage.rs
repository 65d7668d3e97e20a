//! `vlmc tree`, `children`, `flatten` and `rollback` against the whole
//! pipeline (two blockerds, mapperd, vlmcd) on a private segment, with a
//! client writing through vlmcd meanwhile.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archipelago_e2e::pattern::mix;
use archipelago_e2e::pipeline::{Backend, Pipeline, VLMCD};
use common::Vlmc;
use serde_json::Value;

const KIB: u64 = 1 << 10;
const OBJECT: u64 = 64 * KIB;

/// Bytes that differ by offset and seed.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| mix(seed ^ (i / 8)) as u8 | 1)
        .collect()
}

fn start(name: &str) -> (Pipeline, Vlmc) {
    let p = Pipeline::start(name, "host-a", &Backend::Memory, &Backend::Memory);
    let vlmc = Vlmc {
        segment: p.tmp.arg(),
    };
    (p, vlmc)
}

/// `base` of `objects` objects, all written, snapshot `gold`; returns
/// its content.
fn gold(p: &Pipeline, vlmc: &Vlmc, objects: u64) -> Vec<u8> {
    let size = objects * OBJECT;
    vlmc.ok(&[
        "create",
        "base",
        "--size",
        &size.to_string(),
        "--object-size",
        "64K",
    ]);
    let c = p.client(Duration::from_secs(30));
    let content = bytes(size as usize, 1);
    for (i, piece) in content.chunks(256 * KIB as usize).enumerate() {
        c.volume_write(VLMCD, "base", i as u64 * 256 * KIB, piece, false)
            .unwrap();
    }
    vlmc.ok(&["close", "base"]);
    vlmc.ok(&["snapshot", "base", "gold"]);
    content
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

fn find<'a>(n: &'a Value, name: &str) -> Option<&'a Value> {
    if n["name"] == name {
        return Some(n);
    }
    n["children"].as_array()?.iter().find_map(|c| find(c, name))
}

fn read_all(p: &Pipeline, name: &str, size: u64) -> Vec<u8> {
    let c = p.client(Duration::from_secs(30));
    let mut out = Vec::with_capacity(size as usize);
    let mut at = 0;
    while at < size {
        let n = (size - at).min(MIB);
        out.extend(c.volume_read(VLMCD, name, at, n).unwrap());
        at += n;
    }
    out
}

const MIB: u64 = 1 << 20;

#[test]
fn tree_children_and_flatten_under_a_writer_free_the_parent() {
    let (p, vlmc) = start("vlmc-lineage");
    let objects = 96;
    let size = objects * OBJECT;
    let base = gold(&p, &vlmc, objects);
    vlmc.ok(&["create", "clone", "--snap", "gold"]);
    vlmc.ok(&["create", "other", "--snap", "gold"]);
    vlmc.ok(&["snapshot", "other", "other-s"]);
    vlmc.ok(&["create", "grandchild", "--snap", "other-s"]);

    // The tree, as JSON and as text.
    let tree = vlmc.json(&["tree"]);
    assert_eq!(names(&tree), ["base"], "{tree}");
    let b = &tree[0];
    assert_eq!(
        (b["kind"].as_str(), b["size"].as_u64()),
        (Some("volume"), Some(size))
    );
    assert_eq!(names(&b["children"]), ["gold"]);
    assert_eq!(names(&b["children"][0]["children"]), ["clone", "other"]);
    let other = find(b, "other").unwrap();
    assert_eq!(other["kind"], "clone");
    assert_eq!(names(&other["children"]), ["other-s"]);
    assert_eq!(names(&other["children"][0]["children"]), ["grandchild"]);
    let text = vlmc.ok(&["tree"]);
    let expect = "\
base  (volume, 6 MiB)
└── gold  (snapshot)
    ├── clone  (clone, 6 MiB)
    └── other  (clone, 6 MiB)
        └── other-s  (snapshot)
            └── grandchild  (clone, 6 MiB)
";
    assert_eq!(text, expect);
    assert_eq!(
        names(&vlmc.json(&["tree", "grandchild"])),
        ["base"],
        "the tree holding a name is its root's"
    );
    vlmc.fails(&["tree", "nothing"], "nothing", "not found");

    // children: exactly what keeps gold from being removed.
    let kids = vlmc.json(&["children", "gold"]);
    assert_eq!(
        names(&kids),
        ["base", "clone", "grandchild", "other", "other-s"]
    );
    let through_clones: Vec<bool> = kids
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["clone"] == true)
        .collect();
    assert_eq!(through_clones, [false, true, true, true, true], "{kids}");
    let text = vlmc.ok(&["children", "other-s"]);
    assert!(
        text.lines().nth(1).unwrap().starts_with("grandchild "),
        "{text}"
    );
    let own = vlmc.json(&["children", "other-s"]);
    assert_eq!(names(&own), ["grandchild", "other"]);
    assert_eq!(own[1]["clone"], false, "other-s is other's own snapshot");
    vlmc.fails(&["remove", "gold"], "gold", "clone");

    // Flatten `clone` while a client writes to it: every byte as the
    // model says afterwards.
    let mut model = base.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let c = p.client(Duration::from_secs(30));
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut done = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) || i < 20 {
                // Small writes, paced: the flatten does most of the copying.
                std::thread::sleep(Duration::from_millis(10));
                let len = 512 * (1 + mix(i) % 16);
                let off = (mix(i ^ 0xabc) % (size - len)) / 512 * 512;
                let data = bytes(len as usize, 1000 + i);
                c.volume_write(VLMCD, "clone", off, &data, false).unwrap();
                done.push((off, data));
                i += 1;
            }
            done
        })
    };
    let started = Instant::now();
    let r = vlmc.json(&["flatten", "clone", "--rate", "3MiB/s"]);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes.len() >= 20);
    for (off, data) in &writes {
        model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    assert_eq!(r["parent"], "gold", "{r}");
    assert_eq!(r["objects"], objects);
    let copied = r["objects_copied"].as_u64().unwrap();
    assert!(copied >= 10 && copied <= objects, "{r}");
    eprintln!("flatten: {r}, {} writes meanwhile, {took:?}", writes.len());
    // The throttle: what was copied took at least bytes / rate.
    let floor = Duration::from_secs_f64((copied * OBJECT) as f64 / (3 * MIB) as f64 * 0.9);
    assert!(took >= floor, "{copied} objects in {took:?}, rate 3 MiB/s");
    vlmc.ok(&["close", "clone"]);
    assert!(
        read_all(&p, "clone", size) == model,
        "the clone after flatten"
    );
    assert!(
        read_all(&p, "gold", size) == base,
        "the snapshot is untouched"
    );

    // The clone is a root now; gold only waits for `other` and its line.
    let tree = vlmc.json(&["tree"]);
    assert_eq!(names(&tree), ["base", "clone"], "{tree}");
    assert_eq!(tree[1]["kind"], "volume");
    assert_eq!(
        names(&vlmc.json(&["children", "gold"])),
        ["base", "grandchild", "other", "other-s"]
    );
    vlmc.fails(&["remove", "gold"], "gold", "other");
    // A removed volume stays in the tree while its snapshot has clones.
    vlmc.ok(&["remove", "base"]);
    let text = vlmc.ok(&["tree", "gold"]);
    assert!(
        text.starts_with("base  (volume, 6 MiB, removed)\n└── gold  (snapshot)\n"),
        "{text}"
    );
    for n in ["grandchild", "other-s", "other"] {
        vlmc.ok(&["remove", n]);
    }
    vlmc.ok(&["remove", "gold"]);
    assert_eq!(
        names(&vlmc.json(&["tree"])),
        ["clone"],
        "nothing removed is shown"
    );
    assert!(
        read_all(&p, "clone", size) == model,
        "the clone after its parent went"
    );
    let again = vlmc.json(&["flatten", "clone"]);
    assert_eq!(again["objects_copied"], 0, "nothing left to copy: {again}");
}

#[test]
fn a_killed_flatten_resumes_where_it_was() {
    let (p, vlmc) = start("vlmc-lineage-kill");
    let objects = 64;
    let size = objects * OBJECT;
    let base = gold(&p, &vlmc, objects);
    vlmc.ok(&["create", "clone", "--snap", "gold"]);
    let c = p.client(Duration::from_secs(30));
    assert_eq!(
        c.flatten_step(VLMCD, "clone", 0, 0).unwrap().remaining,
        objects
    );

    // 4 MiB at 256 KiB/s: 16 s unless killed.
    let mut child = vlmc
        .cmd(&["flatten", "clone", "--rate", "256K"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = c.flatten_step(VLMCD, "clone", 0, 0).unwrap().remaining;
        if left <= objects - 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the flatten never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = c.flatten_step(VLMCD, "clone", 0, 0).unwrap().remaining;
    assert!(left > 0 && left < objects, "{left} left");
    assert_eq!(vlmc.json(&["info", "clone"])["parent"], "gold");
    vlmc.fails(&["remove", "gold"], "gold", "clone");

    let r = vlmc.json(&["flatten", "clone"]);
    assert_eq!(r["shared_at_start"], left, "{r}");
    assert_eq!(r["objects_copied"], left, "{r}");
    assert_eq!(vlmc.json(&["info", "clone"])["parent"], Value::Null);
    vlmc.ok(&["remove", "gold"]);
    assert!(read_all(&p, "clone", size) == base);
}

#[test]
fn rollback_returns_a_closed_volume_to_its_snapshot() {
    let (p, vlmc) = start("vlmc-lineage-rollback");
    let objects = 32;
    let size = objects * OBJECT;
    let first = gold(&p, &vlmc, objects);
    let c = p.client(Duration::from_secs(30));
    let second = bytes(size as usize / 2, 2);
    c.volume_write(VLMCD, "base", 3 * OBJECT + 512, &second, false)
        .unwrap();
    let later = read_all(&p, "base", size);
    assert!(later != first);

    // Open (the writes opened it): refused, nothing changes.
    vlmc.fails(&["rollback", "base", "gold"], "base", "close");
    vlmc.ok(&["close", "base"]);
    // Only the volume's own snapshots.
    vlmc.ok(&["create", "stranger", "--size", "1M"]);
    vlmc.ok(&["snapshot", "stranger", "stranger-s"]);
    vlmc.fails(
        &["rollback", "base", "stranger-s"],
        "base",
        "not a snapshot of base",
    );
    vlmc.fails(&["rollback", "base", "stranger"], "base", "not a snapshot");
    vlmc.fails(&["rollback", "gold", "gold"], "gold", "only a volume");
    vlmc.fails(&["rollback", "base", "nothing"], "base", "not found");
    vlmc.ok(&["create", "clone", "--snap", "gold"]);
    vlmc.fails(
        &["rollback", "clone", "gold"],
        "clone",
        "not a snapshot of clone",
    );
    assert!(
        read_all(&p, "base", size) == later,
        "refusals change nothing"
    );

    vlmc.ok(&["snapshot", "base", "later"]);
    vlmc.ok(&["rollback", "base", "gold"]);
    assert!(read_all(&p, "base", size) == first, "back to gold");
    // gold is base's own snapshot, not a clone source: no parent shown.
    let info = vlmc.json(&["info", "base"]);
    assert_eq!(info["parent"], Value::Null);
    // Writing after the rollback leaves gold as it was.
    c.volume_write(VLMCD, "base", 0, &[7u8; 4096], false)
        .unwrap();
    vlmc.ok(&["close", "base"]);
    assert!(read_all(&p, "gold", size) == first);
    assert_eq!(read_all(&p, "base", size)[..4096], [7u8; 4096]);
    // And forward again.
    vlmc.ok(&["rollback", "base", "later"]);
    assert!(read_all(&p, "base", size) == later);
}

#[test]
fn a_flatten_survives_a_kill_9_of_the_mapper() {
    let (mut p, vlmc) = start("vlmc-lineage-mapper-kill");
    let objects = 64;
    let size = objects * OBJECT;
    let base = gold(&p, &vlmc, objects);
    vlmc.ok(&["create", "clone", "--snap", "gold"]);
    let child = vlmc
        .cmd(&["flatten", "clone", "--rate", "20obj/s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let c = p.client(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.flatten_step(VLMCD, "clone", 0, 0).unwrap().remaining > objects - 3 {
        assert!(Instant::now() < deadline, "the flatten never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    p.mapperd.kill9();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("vlmc: clone: "),
        "one line naming the clone: {err}"
    );
    p.mapperd.restart();
    let r = vlmc.json(&["flatten", "clone"]);
    let left = r["shared_at_start"].as_u64().unwrap();
    assert!(left > 0 && left < objects, "{r}");
    vlmc.ok(&["remove", "gold"]);
    assert!(read_all(&p, "clone", size) == base);
}
