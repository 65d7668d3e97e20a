//! `xseg-bench volume` drives a private pipeline (and the data blocker
//! alone) end to end with verification on, and reports every field (a
//! check that it works, not a timing: no figure is asserted). Needs the
//! peers built next to the benchmark (`cargo build --workspace --bins`).

use std::process::Command;

fn run(target: &str) -> serde_json::Value {
    run_on("memory", target)
}

fn run_on(spawn: &str, target: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_xseg-bench"))
        .args([
            "volume",
            "--spawn",
            spawn,
            "--create",
            "16M",
            "--prefill",
            "--verify",
            "--op",
            "mixed",
            "--pattern",
            "rand",
            "--total",
            "2000",
            "--json",
            "--target",
            target,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check(report: &serde_json::Value, target: &str) {
    check_run(report, target, 0);
}

/// Checks run `i` of `report`, of `target`.
fn check_run(report: &serde_json::Value, target: &str, i: usize) {
    assert_eq!(report["size"], 16 << 20);
    assert_eq!(report["bs"], 4096);
    assert_eq!(report["iodepth"], 32);
    assert_eq!(report["op"], "mixed");
    assert_eq!(report["pattern"], "rand");
    let runs = report["runs"].as_array().expect("an array of runs");
    let r = &runs[i];
    assert_eq!(r["target"], target);
    assert_eq!(r["ops"], 2000);
    assert_eq!(
        r["reads"].as_u64().unwrap() + r["writes"].as_u64().unwrap(),
        2000
    );
    assert!(r["reads"].as_u64().unwrap() > 0 && r["writes"].as_u64().unwrap() > 0);
    assert_eq!(r["errors"], 0);
    assert_eq!(r["verify_failures"], 0);
    // With --prefill every read is of a written block, so every one is
    // checked; the null pipeline stores nothing and checks none.
    if target == "null" {
        assert_eq!(r["verified"], 0);
    } else {
        assert_eq!(r["verified"], r["reads"]);
    }
    // Every peer of the target reports its share: at least the measured
    // requests went through it, with nonzero times.
    let stages = r["stages"].as_array().expect("stages");
    let peers: Vec<&str> = stages.iter().map(|s| s["peer"].as_str().unwrap()).collect();
    let want: &[&str] = match target {
        "blocker" => &["blockerb"],
        _ => &["vlmcd", "mapperd", "blockerb"],
    };
    assert_eq!(peers, want, "{r}");
    for st in stages {
        assert!(st["requests"].as_u64().unwrap() >= 2000, "{st}");
        assert!(st["service_ns"].as_f64().unwrap() > 0.0, "{st}");
    }
    if target != "blocker" {
        // vlmcd sends a map request and a data request per 4 KiB I/O.
        let v = &stages[0];
        assert!(v["sub_per_request"].as_f64().unwrap() >= 1.9, "{v}");
        assert!(v["sub_ns"].as_f64().unwrap() > 0.0, "{v}");
    }
    for k in ["iops", "bandwidth_mib_s", "elapsed_s", "prefill_s"] {
        assert!(r[k].as_f64().unwrap() > 0.0, "{k}: {r}");
    }
    for k in ["mean", "p50", "p90", "p99", "p99_9", "max"] {
        assert!(r["latency_ns"][k].as_f64().unwrap() > 0.0, "{k}: {r}");
    }
}

#[test]
fn volume_through_the_pipeline_mixed_random_verified() {
    check(&run("volume"), "volume");
}

#[test]
fn volume_then_null_pipeline_in_one_run() {
    let r = run("volume,null");
    assert_eq!(r["runs"].as_array().unwrap().len(), 2);
    check_run(&r, "volume", 0);
    check_run(&r, "null", 1);
}

#[test]
fn null_needs_spawn() {
    let out = Command::new(env!("CARGO_BIN_EXE_xseg-bench"))
        .args(["volume", "--segment", "nowhere", "--target", "null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--target null needs --spawn"));
}

#[test]
fn same_io_straight_to_the_blocker() {
    check(&run("blocker"), "blocker");
}

#[test]
fn spawn_needs_a_size() {
    let out = Command::new(env!("CARGO_BIN_EXE_xseg-bench"))
        .args(["volume", "--spawn", "memory"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--spawn needs --create"));
}

/// Both blockers on RADOS (the cluster of `CEPH_CONF`/`CEPH_POOL`, see
/// `archipelago_rados::testenv`): the blocker's asynchronous READ/WRITE
/// path end to end, every read verified, through the volume and straight
/// to the blocker.
#[test]
fn volume_on_rados_verified() {
    if archipelago_rados::testenv::cluster("xseg-bench volume --spawn rados").is_none() {
        return;
    }
    let r = run_on("rados", "volume,blocker");
    assert_eq!(r["spawn"], "rados");
    check_run(&r, "volume", 0);
    check_run(&r, "blocker", 1);
}

#[test]
fn spawn_rados_needs_a_pool() {
    let out = Command::new(env!("CARGO_BIN_EXE_xseg-bench"))
        .args(["volume", "--spawn", "rados", "--create", "8M"])
        .env_remove("CEPH_POOL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--spawn rados needs --pool or $CEPH_POOL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 15's clone workload: on a clone of a snapshot of the prefilled
/// volume, one 4 KiB block per 4 MiB object, mixed and verified: writes
/// are first writes into the clone (copy-ups), and reads of blocks the
/// clone never wrote check the base's stamps through it.
#[test]
fn first_writes_into_a_clone_verified() {
    let out = Command::new(env!("CARGO_BIN_EXE_xseg-bench"))
        .args([
            "volume",
            "--spawn",
            "files",
            "--create",
            "64M",
            "--prefill",
            "--clone",
            "--stride",
            "4M",
            "--verify",
            "--op",
            "mixed",
            "--total",
            "64",
            "--iodepth",
            "4",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["clone"], true);
    assert_eq!(r["stride"], 4 << 20);
    let run = &r["runs"][0];
    assert_eq!(run["ops"], 64);
    assert_eq!(run["errors"], 0);
    assert_eq!(run["verify_failures"], 0);
    assert!(run["verified"].as_u64().unwrap() > 0, "{run}");
    assert!(run["writes"].as_u64().unwrap() > 0, "{run}");
    // The stage times name the pipeline's peers.
    let stages = run["stages"].as_array().unwrap();
    assert!(stages.iter().any(|s| s["peer"] == "mapperd"), "{stages:?}");
}

#[test]
fn clone_needs_the_volume_target() {
    let out = Command::new(env!("CARGO_BIN_EXE_xseg-bench"))
        .args([
            "volume", "--spawn", "memory", "--create", "8M", "--clone", "--target", "blocker",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clone"));
}
