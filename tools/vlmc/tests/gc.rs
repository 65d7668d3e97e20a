//! `vlmc gc` and `vlmc du` against the whole pipeline (two blockerds on
//! the files backend, mapperd, vlmcd) on a private segment: what a
//! dry run reports is what a real run frees, live volumes read the same
//! afterwards, nothing unreferenced is left, accounting matches what a
//! removal frees, and a collection killed with SIGKILL midway is finished
//! by the next run.

mod common;

use std::time::{Duration, Instant};

use archipelago_client::Client;
use archipelago_e2e::pipeline::{Backend, Pipeline, BLOCKERB, BLOCKERM, VLMCD};
use common::Vlmc;

const OBJ: u64 = 64 << 10;

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(31).wrapping_add(seed * 7) ^ (i as u64 >> 9)) as u8 | 1)
        .collect()
}

fn read_all(c: &Client, vol: &str, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < size {
        let n = (256 << 10).min(size - at);
        out.extend(
            c.volume_read(VLMCD, vol, at, n)
                .unwrap_or_else(|e| panic!("read {vol}: {e}")),
        );
        at += n;
    }
    out
}

fn objects(c: &Client) -> (usize, usize) {
    let data = c.list(BLOCKERB, "", 4 << 20).unwrap().len();
    let maps = c.list(BLOCKERM, "", 4 << 20).unwrap().len();
    (data, maps)
}

fn start(name: &str) -> (tempfile::TempDir, Pipeline, Client, Vlmc) {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::start(
        name,
        "host-gc",
        &Backend::Files(dir.path().join("data")),
        &Backend::Files(dir.path().join("maps")),
    );
    let c = p.client(Duration::from_secs(60));
    let vlmc = Vlmc {
        segment: p.tmp.arg(),
    };
    (dir, p, c, vlmc)
}

#[test]
fn gc_frees_what_nothing_references_and_du_says_what_removal_frees() {
    let (_dir, _p, c, vlmc) = start("gc-e2e");
    let size = 16 * OBJ;
    c.create_volume(VLMCD, "vol", size, Some(OBJ)).unwrap();
    for i in 0..8 {
        c.volume_write(VLMCD, "vol", i * OBJ, &pattern(OBJ as usize, i % 3), false)
            .unwrap();
    }
    c.snapshot(VLMCD, "vol", "gold").unwrap();
    // Overwrites after the snapshot: copy-up, the old objects stay for gold.
    c.volume_write(VLMCD, "vol", 0, &pattern(2 * OBJ as usize, 9), false)
        .unwrap();
    c.clone_volume(VLMCD, "gold", "vm", None).unwrap();
    c.volume_write(VLMCD, "vm", 3 * OBJ + 5, &pattern(100, 11), false)
        .unwrap();
    // Hashing gold replaces its owned objects by content: the ones only
    // gold referred to become garbage.
    c.hash_snapshot(VLMCD, "gold").unwrap();
    // A volume removed: all its objects are garbage.
    c.create_volume(VLMCD, "tmp", size, Some(OBJ)).unwrap();
    for i in 0..4 {
        c.volume_write(VLMCD, "tmp", i * OBJ, &pattern(OBJ as usize, 20 + i), false)
            .unwrap();
    }
    c.close_volume(VLMCD, "tmp").unwrap();
    c.remove_volume(VLMCD, "tmp").unwrap();
    let live = ["vol", "gold", "vm"];
    let before: Vec<Vec<u8>> = live.iter().map(|v| read_all(&c, v, size)).collect();

    let listed = objects(&c);
    let dry = vlmc.json(&["gc", "--dry-run"]);
    assert_eq!(objects(&c), listed, "a dry run deletes nothing");
    assert_eq!(dry["dry_run"], true);
    let would = dry["freed_objects"].as_u64().unwrap();
    // tmp's 4 objects, gold's old objects (the hash moved vol and vm
    // onto the content objects too) and replaced chunks.
    assert!(would >= 4 + 8, "{dry}");
    let real = vlmc.json(&["gc"]);
    assert_eq!(
        real["freed_objects"], dry["freed_objects"],
        "{real} vs {dry}"
    );
    assert_eq!(real["freed_bytes"], dry["freed_bytes"]);
    let after = objects(&c);
    // The collector adds its generation object to the map store.
    assert_eq!(
        (listed.0 + listed.1 + 1) as u64 - would,
        (after.0 + after.1) as u64,
        "{listed:?} -> {after:?}"
    );
    for (v, b) in live.iter().zip(&before) {
        assert!(read_all(&c, v, size) == *b, "{v} changed after gc");
    }
    let again = vlmc.json(&["gc", "--dry-run"]);
    assert_eq!(again["freed_objects"], 0, "nothing left to free: {again}");

    // du: the clone alone refers to its copied-up object; the hash moved
    // it (and vol) onto gold's content objects, which they share.
    let du = vlmc.json(&["du", "vm"]);
    let vm = &du[0];
    assert_eq!(vm["name"], "vm");
    assert_eq!(vm["provisioned"], size);
    // One granule: the 100-byte write copied up 4 KiB of the object
    // (sub-object copy-on-write), not all of it.
    assert_eq!(vm["unique_bytes"], 4096, "{du}");
    let all = vlmc.json(&["du"]);
    let gold = all
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "gold")
        .unwrap();
    // Patterns 0, 1, 2 repeat over 8 objects: 5 duplicates saved.
    assert_eq!(gold["dedup_saved_bytes"], 5 * OBJ, "{gold}");
    // Removing the clone frees exactly that one (plus its chunks).
    c.close_volume(VLMCD, "vm").unwrap();
    c.remove_volume(VLMCD, "vm").unwrap();
    let data_before = c.list(BLOCKERB, "", 4 << 20).unwrap().len();
    vlmc.json(&["gc"]);
    assert_eq!(
        c.list(BLOCKERB, "", 4 << 20).unwrap().len(),
        data_before - 1
    );

    let text = vlmc.run(&["gc"]);
    assert!(text.status.success());
    let line = String::from_utf8_lossy(&text.stdout);
    assert!(line.starts_with("freed 0 objects"), "{line}");

    // Another host's collector holds the lock: refused in one line, until
    // --break-lock.
    c.acquire(BLOCKERM, "archip_gc", "gc@elsewhere").unwrap();
    let o = vlmc.run(&["gc"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("vlmc: gc: ") && err.contains("gc@elsewhere"),
        "{err}"
    );
    let r = vlmc.json(&["gc", "--break-lock"]);
    assert_eq!(r["freed_objects"], 0);
    assert_eq!(c.lock_owner(BLOCKERM, "archip_gc").unwrap(), None);
}

#[test]
fn gc_killed_midway_leaves_live_data_and_the_next_run_finishes() {
    let (_dir, _p, c, vlmc) = start("gc-kill");
    let small = 4096u64;
    let n = 1500u64;
    // One live volume, one large removed one.
    c.create_volume(VLMCD, "keep", 8 * small, Some(small))
        .unwrap();
    c.volume_write(VLMCD, "keep", 0, &pattern(8 * small as usize, 3), false)
        .unwrap();
    c.create_volume(VLMCD, "junk", n * small, Some(small))
        .unwrap();
    for i in 0..n / 16 {
        c.volume_write(
            VLMCD,
            "junk",
            i * 16 * small,
            &pattern(16 * small as usize, i),
            false,
        )
        .unwrap();
    }
    c.close_volume(VLMCD, "junk").unwrap();
    c.remove_volume(VLMCD, "junk").unwrap();
    let keep = read_all(&c, "keep", 8 * small);
    let start_count = c.list(BLOCKERB, "", 4 << 20).unwrap().len();

    let mut child = vlmc
        .cmd(&["gc"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut killed = false;
    loop {
        let now = c.list(BLOCKERB, "", 4 << 20).unwrap().len();
        if now < start_count - 50 {
            child.kill().unwrap(); // SIGKILL
            killed = true;
            break;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait().unwrap();
    assert!(
        killed,
        "gc finished before it could be killed: make the pool bigger"
    );
    let left = c.list(BLOCKERB, "", 4 << 20).unwrap().len();
    assert!(left > 8, "killed midway: {left} objects left");
    assert!(read_all(&c, "keep", 8 * small) == keep, "keep changed");

    // The next run takes the lock back (same host) and finishes.
    let r = vlmc.json(&["gc"]);
    assert!(r["freed_objects"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["generation"].as_u64().unwrap() % 2, 1, "{r}");
    assert_eq!(
        c.list(BLOCKERB, "", 4 << 20).unwrap().len(),
        8,
        "only keep's objects are left"
    );
    assert!(read_all(&c, "keep", 8 * small) == keep, "keep changed");
    assert_eq!(vlmc.json(&["gc", "--dry-run"])["freed_objects"], 0);
    // Hashing works again once a run finished.
    c.snapshot(VLMCD, "keep", "keep-s").unwrap();
    c.hash_snapshot(VLMCD, "keep-s").unwrap();
    assert!(read_all(&c, "keep-s", 8 * small) == keep);
}

/// `vlmc gc` in a loop while a writer, a cloner and a hasher work through
/// vlmcd, each checking its volumes against its model as it goes and at
/// the end; then a last collection leaves nothing to free.
#[test]
fn gc_runs_while_a_writer_a_cloner_and_a_hasher_work() {
    let (_dir, p, _c, vlmc) = start("gc-live");
    let seg = p.tmp.arg();
    let size = 16 * OBJ;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let stop = stop.clone();
        let seg = seg.clone();
        std::thread::spawn(move || {
            let vlmc = Vlmc { segment: seg };
            let mut runs = 0u32;
            let mut freed = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = vlmc.json(&["gc"]);
                freed += r["freed_objects"].as_u64().unwrap();
                runs += 1;
            }
            (runs, freed)
        })
    };
    let worker = |kind: u64| {
        let seg = seg.clone();
        std::thread::spawn(move || {
            let c = Client::connect(&seg)
                .unwrap()
                .with_timeout(Duration::from_secs(120));
            let vol = format!("w{kind}");
            c.create_volume(VLMCD, &vol, size, Some(OBJ)).unwrap();
            let mut model = vec![0u8; size as usize];
            let mut kept: Vec<(String, Vec<u8>)> = Vec::new();
            for i in 0..24u64 {
                let at = (i * 5 + kind) % 16 * OBJ;
                let (off, len) = if i % 2 == 0 {
                    (at, OBJ)
                } else {
                    (at + 100, 1000)
                };
                let d = pattern(len as usize, i + 100 * kind);
                c.volume_write(VLMCD, &vol, off, &d, false).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&d);
                if i % 4 == 3 {
                    let s = format!("{vol}-s{i}");
                    c.snapshot(VLMCD, &vol, &s).unwrap();
                    match kind {
                        1 => {
                            let cl = format!("{vol}-c{i}");
                            c.clone_volume(VLMCD, &s, &cl, None).unwrap();
                            let mut cm = model.clone();
                            let d = pattern(OBJ as usize, 7777 + i);
                            c.volume_write(VLMCD, &cl, 2 * OBJ, &d, false).unwrap();
                            cm[2 * OBJ as usize..3 * OBJ as usize].copy_from_slice(&d);
                            c.close_volume(VLMCD, &cl).unwrap();
                            kept.push((cl, cm));
                        }
                        2 => {
                            c.hash_snapshot(VLMCD, &s).unwrap();
                        }
                        _ => {}
                    }
                    kept.push((s, model.clone()));
                    // Remove the oldest, clones before their snapshots; a
                    // snapshot that later clones still descend from stays.
                    if kept.len() > 4 {
                        let (n, m) = kept.remove(0);
                        match c.remove_volume(VLMCD, &n) {
                            Ok(()) => {}
                            Err(e) if e.code == archipelago_protocol::ErrorCode::InUse => {
                                kept.push((n, m));
                            }
                            Err(e) => panic!("remove {n}: {e}"),
                        }
                    }
                }
                assert!(
                    read_all(&c, &vol, size) == model,
                    "{vol} differs at step {i}"
                );
                for (n, m) in &kept {
                    assert!(read_all(&c, n, size) == *m, "{n} differs at step {i}");
                }
            }
            c.close_volume(VLMCD, &vol).unwrap();
            kept.push((vol, model));
            kept
        })
    };
    let workers: Vec<_> = (0..3).map(worker).collect();
    let mut live = Vec::new();
    for w in workers {
        live.extend(w.join().expect("worker"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (runs, freed) = collector.join().unwrap();
    assert!(runs >= 2, "{runs} collections ran during the work");
    assert!(freed > 0, "the collections freed something");
    vlmc.json(&["gc"]);
    assert_eq!(vlmc.json(&["gc", "--dry-run"])["freed_objects"], 0);
    let c = p.client(Duration::from_secs(60));
    for (n, m) in &live {
        assert!(read_all(&c, n, size) == *m, "{n} differs after the last gc");
    }
}

/// `vlmc gc` stopped by SIGINT and by SIGTERM midway: it exits at once
/// (code 1, one line saying it was interrupted), releases its lock,
/// changes no live data, and the next run finishes the job.
#[test]
fn gc_stopped_by_sigint_or_sigterm_exits_cleanly_and_the_next_run_finishes() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let (_dir, _p, c, vlmc) = start("gc-signal");
    let small = 4096u64;
    let n = 1500u64;
    c.create_volume(VLMCD, "keep", 8 * small, Some(small))
        .unwrap();
    c.volume_write(VLMCD, "keep", 0, &pattern(8 * small as usize, 3), false)
        .unwrap();
    let keep = read_all(&c, "keep", 8 * small);
    for (round, sig) in [Signal::SIGINT, Signal::SIGTERM].into_iter().enumerate() {
        let junk = format!("junk{round}");
        c.create_volume(VLMCD, &junk, n * small, Some(small))
            .unwrap();
        for i in 0..n / 16 {
            c.volume_write(
                VLMCD,
                &junk,
                i * 16 * small,
                &pattern(16 * small as usize, i),
                false,
            )
            .unwrap();
        }
        c.close_volume(VLMCD, &junk).unwrap();
        c.remove_volume(VLMCD, &junk).unwrap();
        let start_count = c.list(BLOCKERB, "", 4 << 20).unwrap().len();

        let mut child = vlmc
            .cmd(&["gc"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut signalled = false;
        loop {
            let now = c.list(BLOCKERB, "", 4 << 20).unwrap().len();
            if now < start_count - 50 {
                kill(Pid::from_raw(child.id() as i32), sig).unwrap();
                signalled = true;
                break;
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(signalled, "gc finished before {sig} could stop it");
        // It stops at the next object: well before the deadline.
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "gc still running 30 s after {sig}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{sig}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("vlmc: gc: interrupted after") && last.contains("run it again"),
            "{sig}: {err}"
        );
        assert_eq!(
            c.lock_owner(BLOCKERM, "archip_gc").unwrap(),
            None,
            "{sig}: the gc lock was not released"
        );
        let left = c.list(BLOCKERB, "", 4 << 20).unwrap().len();
        assert!(left > 8, "{sig}: stopped midway, yet {left} objects left");
        assert!(
            read_all(&c, "keep", 8 * small) == keep,
            "{sig}: keep changed"
        );

        // The next run finishes.
        let r = vlmc.json(&["gc"]);
        assert!(r["freed_objects"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(
            c.list(BLOCKERB, "", 4 << 20).unwrap().len(),
            8,
            "{sig}: only keep's objects are left"
        );
        assert!(
            read_all(&c, "keep", 8 * small) == keep,
            "{sig}: keep changed"
        );
    }
    assert_eq!(vlmc.json(&["gc", "--dry-run"])["freed_objects"], 0);
}
