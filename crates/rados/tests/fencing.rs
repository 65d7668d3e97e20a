//! Locks across hosts on a real cluster: breaking a lock fences every
//! client of the old owner's instance; a fenced store fails with `Fenced`
//! and comes back only as a new client. Also: a cluster that does not
//! answer is a clear error within the timeout, never a hang.

use std::time::{Duration, Instant};

use archipelago_protocol::ErrorCode;
use archipelago_rados::{testenv, Instance, RadosOptions, RadosStore};
use archipelago_store::{ObjectStore, StoreError};

/// A store of `host`'s instance playing `member`, in `ns`.
fn member(conf: &std::path::Path, pool: &str, ns: &str, host: &str, member: &str) -> RadosStore {
    let mut o = testenv::options(conf.to_owned(), pool.to_owned(), "fence");
    o.namespace = ns.to_owned();
    o.instance = Some(Instance {
        host: host.to_owned(),
        member: member.to_owned(),
    });
    o.fence_quarantine = Duration::from_secs(2);
    RadosStore::connect(o).unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn assert_fenced<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    match r {
        Err(e @ StoreError::Fenced { .. }) => assert_eq!(e.code(), ErrorCode::Fenced),
        other => panic!("expected Fenced, got {other:?}"),
    }
}

#[test]
fn breaking_a_lock_fences_every_client_of_the_old_owner() {
    let Some((conf, pool)) = testenv::cluster("fencing") else {
        return;
    };
    let ns = testenv::unique_namespace("fence");
    let a_maps = member(&conf, &pool, &ns, "host-a", "blockerm");
    let a_data = member(&conf, &pool, &ns, "host-a", "blockerb");
    let b_maps = member(&conf, &pool, &ns, "host-b", "blockerm");
    let b_data = member(&conf, &pool, &ns, "host-b", "blockerb");

    let t1 = a_maps.try_lock("vol", "host-a").unwrap();
    a_maps.write_full("vol", b"map by a", true).unwrap();
    a_data.write("vol_obj", 0, b"data by a", true).unwrap();
    match b_maps.try_lock("vol", "host-b") {
        Err(StoreError::Locked { owner, .. }) => assert_eq!(owner, "host-a"),
        other => panic!("expected Locked by host-a, got {other:?}"),
    }

    // vlmc unlock -f on host B.
    assert_eq!(b_maps.break_lock("vol").unwrap().as_deref(), Some("host-a"));
    let t2 = b_maps.try_lock("vol", "host-b").unwrap();
    assert!(t2 > t1);

    // Host A still believes it holds the volume: neither its map writes
    // nor its data writes land, through either of its clients.
    assert_fenced(a_maps.write_full("vol", b"stale map", true));
    assert_fenced(a_data.write("vol_obj", 0, b"stale data", true));
    assert_fenced(a_data.read("vol_obj", 0, &mut [0; 4]));
    assert!(a_maps.is_fenced() && a_data.is_fenced());
    let mut buf = [0u8; 9];
    b_data.read("vol_obj", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"data by a");
    let mut buf = [0u8; 8];
    b_maps.read("vol", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"map by a");

    // Host B is not hurt: both of its clients work.
    b_data.write("vol_obj", 0, b"data by b", true).unwrap();
    b_maps.write_full("vol", b"map by b", true).unwrap();
    assert_eq!(
        b_maps.lock_owner("vol").unwrap(),
        Some(("host-b".into(), t2))
    );

    // A fenced store refuses without asking the cluster...
    let old_addr = a_data.client_addr();
    assert_fenced(a_data.stat("vol_obj"));
    // ...until it reconnects: at once to take a lock (the volume is B's
    // now), after the quarantine for anything else.
    match a_maps.try_lock("vol", "host-a") {
        Err(StoreError::Locked { owner, .. }) => assert_eq!(owner, "host-b"),
        other => panic!("expected Locked by host-b, got {other:?}"),
    }
    assert_eq!(a_maps.reconnects(), 1);
    let other = a_maps.try_lock("vol2", "host-a").unwrap();
    assert!(other >= 1);
    // The quarantine (2 s) ends: the data client reconnects and works.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let stat = loop {
        match a_data.stat("vol_obj") {
            Err(StoreError::Fenced { .. }) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "host A's data client still fenced 30 s after the break"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(stat.size, 9);
    assert_ne!(
        a_data.client_addr(),
        old_addr,
        "a new client, a new address"
    );
    let mut buf = [0u8; 9];
    a_data.read("vol_obj", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"data by b", "host A's stale write never landed");
}

#[test]
fn the_same_owner_through_a_new_client_takes_its_lock_back() {
    let Some((conf, pool)) = testenv::cluster("fencing") else {
        return;
    };
    let ns = testenv::unique_namespace("relock");
    let before = member(&conf, &pool, &ns, "host-a", "blockerm");
    let t = before.try_lock("vol", "host-a").unwrap();
    drop(before); // blockerm restarted: a new client, the same owner.
    let after = member(&conf, &pool, &ns, "host-a", "blockerm");
    assert_eq!(after.try_lock("vol", "host-a").unwrap(), t, "idempotent");
    after.unlock("vol", "host-a").unwrap();
    assert!(after.try_lock("vol", "host-a").unwrap() > t);
}

#[test]
fn an_unreachable_cluster_is_a_clear_error_within_the_timeout() {
    let Some(_) = testenv::cluster("fencing") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ceph.conf");
    // Nothing listens on port 1.
    std::fs::write(
        &conf,
        "[global]\nmon_host = 127.0.0.1:1\nauth_client_required = none\n",
    )
    .unwrap();
    let mut o = RadosOptions::new("nopool");
    o.ceph_conf = Some(conf.clone());
    o.op_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = RadosStore::connect(o).err().expect("no cluster there");
    let msg = err.to_string();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(msg.contains("nopool") && msg.contains("connect"), "{msg}");
    assert!(msg.contains(&conf.display().to_string()), "{msg}");
}

/// Issue 14, fencing on the data path: host A's fenced write held in
/// flight while host B breaks the lock (`vlmc unlock -f`), takes it and
/// writes, then let go after A's client noticed the blocklisting and
/// reconnected (no quarantine here: the write goes out through the new
/// client at once). The store's token check refuses it; so does every
/// later write of A with its old token. Before the check, the held write
/// landed over B's data.
#[test]
fn a_held_write_of_the_old_owner_never_lands_after_a_break() {
    let Some((conf, pool)) = testenv::cluster("fencing") else {
        return;
    };
    let ns = testenv::unique_namespace("held");
    let mut a = {
        let mut o = testenv::options(conf.clone(), pool.clone(), "held");
        o.namespace = ns.clone();
        o.instance = Some(Instance {
            host: "host-a".into(),
            member: "blockerb".into(),
        });
        o.fence_quarantine = Duration::ZERO;
        Some(RadosStore::connect(o).unwrap_or_else(|e| panic!("{e}")))
    };
    let a = std::sync::Arc::new(archipelago_store::FaultyStore::new(a.take().unwrap()));
    let b = member(&conf, &pool, &ns, "host-b", "blockerm");
    archipelago_store::conformance::a_broken_owners_held_writes_never_land(a.clone(), b, |a| {
        // A notices it was blocklisted; its next operation reconnects.
        assert_fenced(a.stat("obj"));
    });
    assert!(
        a.inner().reconnects() >= 1,
        "the held write went out through a new client"
    );
}
