//! The policy of `testenv::cluster`, checked in child processes (the
//! environment is per process): without `CEPH_CONF`/`CEPH_POOL` a RADOS
//! test fails under CI and skips, saying so, elsewhere.

use std::process::Command;

use archipelago_rados::testenv;

const CHILD: &str = "ARCHIPELAGO_RADOS_POLICY_CHILD";

/// Runs in a child only: asks for the cluster, as every RADOS test does.
#[test]
fn child_asks_for_the_cluster() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let found = testenv::cluster("policy child");
    println!("child found a cluster: {}", found.is_some());
}

fn child(ci: bool, conf: Option<&str>) -> (bool, String) {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "child_asks_for_the_cluster",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD, "1")
    .env_remove("CEPH_CONF")
    .env_remove("CEPH_POOL")
    .env_remove("CI");
    if ci {
        c.env("CI", "true");
    }
    if let Some(conf) = conf {
        c.env("CEPH_CONF", conf).env("CEPH_POOL", "p");
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn without_a_cluster_ci_fails_and_elsewhere_the_test_skips_saying_so() {
    let (ok, text) = child(true, None);
    assert!(!ok, "under CI a missing cluster must fail: {text}");
    assert!(text.contains("CEPH_CONF and CEPH_POOL"), "{text}");

    let (ok, text) = child(false, None);
    assert!(ok, "{text}");
    assert!(text.contains("SKIPPED: no Ceph cluster"), "{text}");
    assert!(text.contains("child found a cluster: false"), "{text}");

    let (ok, text) = child(true, Some("/some/ceph.conf"));
    assert!(ok, "{text}");
    assert!(text.contains("child found a cluster: true"), "{text}");
}
