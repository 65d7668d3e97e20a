//! Two complete Archipelago instances ("hosts" A and B: two segments, two
//! host ids, each with its own blockerb, blockerm, mapperd and vlmcd) on
//! one RADOS pool, driven with `vlmc` and the client library as a user
//! would: exclusive opens across hosts, migration, snapshot on one host
//! and clone on the other, and `vlmc unlock -f` fencing the old owner.
//!
//! Needs a cluster: `CEPH_CONF` and `CEPH_POOL` (see
//! `archipelago_rados::testenv`); under CI their absence fails the test.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use archipelago_client::Client;
use archipelago_e2e::pipeline::{Backend, Pipeline, BLOCKERB, VLMCD};
use archipelago_protocol::ErrorCode;
use archipelago_rados::testenv;

const MIB: u64 = 1 << 20;

struct Host {
    name: &'static str,
    p: Pipeline,
}

impl Host {
    fn start(name: &'static str, conf: &Path, pool: &str, ns: &str) -> Host {
        let b = Backend::Rados {
            conf: conf.to_owned(),
            pool: pool.to_owned(),
            namespace: ns.to_owned(),
        };
        let p = Pipeline::start(&format!("rados-{name}"), name, &b, &b);
        Host { name, p }
    }

    fn client(&self) -> Client {
        self.p.client(Duration::from_secs(30))
    }

    fn vlmc(&self, args: &[&str]) -> Output {
        Command::new(archipelago_e2e::workspace_bin("vlmc"))
            .args(["--segment", &self.p.tmp.arg(), "--host-id", self.name])
            .args(args)
            .env_remove("ARCHIPELAGO_CONFIG")
            .output()
            .expect("run vlmc")
    }

    fn vlmc_ok(&self, args: &[&str]) {
        let o = self.vlmc(args);
        assert!(
            o.status.success(),
            "{}: vlmc {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `vlmc args` must fail with one line naming `why`.
    fn vlmc_fails(&self, args: &[&str], why: &str) -> String {
        let o = self.vlmc(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}: vlmc {args:?}: {err}",
            self.name
        );
        assert!(
            err.contains(why),
            "{}: vlmc {args:?}: {err:?} lacks {why:?}",
            self.name
        );
        err
    }

    fn read(&self, vol: &str, offset: u64, len: u64) -> Vec<u8> {
        self.client()
            .volume_read(VLMCD, vol, offset, len)
            .unwrap_or_else(|e| panic!("{}: read {vol}: {e}", self.name))
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) | 1)
        .collect()
}

#[test]
fn two_hosts_share_a_pool_with_exclusive_writers_and_fencing() {
    let Some((conf, pool)) = testenv::cluster("rados two hosts") else {
        return;
    };
    let ns = testenv::unique_namespace("hosts");
    let a = Host::start("host-a", &conf, &pool, &ns);
    let b = Host::start("host-b", &conf, &pool, &ns);

    // A creates and opens a volume and writes into two objects.
    a.vlmc_ok(&["create", "vol", "--size", "16M"]);
    a.vlmc_ok(&["open", "vol"]);
    let first = pattern(MIB as usize, 1);
    let second = pattern(100_000, 2);
    let ca = a.client();
    ca.volume_write(VLMCD, "vol", 0, &first, true).unwrap();
    ca.volume_write(VLMCD, "vol", 4 * MIB + 123, &second, true)
        .unwrap();

    // B cannot open it for writing while A holds it.
    b.vlmc_fails(&["open", "vol"], "locked by host-a");

    // A snapshot taken on A is cloned on B, which reads A's bytes.
    a.vlmc_ok(&["snapshot", "vol", "snap1"]);
    b.vlmc_ok(&["create", "clone1", "--snap", "snap1"]);
    assert!(b.read("clone1", 0, MIB) == first);
    assert!(b.read("clone1", 4 * MIB + 123, second.len() as u64) == second);

    // A writes more after the snapshot, then closes: B opens the volume
    // and reads every byte A acknowledged.
    let third = pattern(MIB as usize, 3);
    ca.volume_write(VLMCD, "vol", 8 * MIB, &third, true)
        .unwrap();
    a.vlmc_ok(&["close", "vol"]);
    b.vlmc_ok(&["open", "vol"]);
    assert!(b.read("vol", 0, MIB) == first);
    assert!(b.read("vol", 4 * MIB + 123, second.len() as u64) == second);
    assert!(b.read("vol", 8 * MIB, MIB) == third);
    assert!(b.read("clone1", 8 * MIB, MIB).iter().all(|&x| x == 0));
    b.vlmc_ok(&["close", "vol"]);

    // A takes the volume back, and B breaks A's lock while A is alive.
    a.vlmc_ok(&["open", "vol"]);
    let before = pattern(4096, 4);
    ca.volume_write(VLMCD, "vol", 0, &before, true).unwrap();
    b.vlmc_ok(&["unlock", "-f", "vol"]);
    b.vlmc_ok(&["open", "vol"]);
    let cb = b.client();
    let by_b = pattern(4096, 5);
    cb.volume_write(VLMCD, "vol", 0, &by_b, true).unwrap();

    // A still believes it holds the volume. Its next map write (a write
    // into an unwritten object changes the map) fails with "fenced"...
    let e = ca
        .volume_write(VLMCD, "vol", 12 * MIB, &pattern(4096, 6), true)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Fenced, "map write on A: {e}");
    // ...and so does its next data write, whatever object it names.
    let e = ca
        .write(BLOCKERB, "stale_data_by_a", 0, b"stale", true)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Fenced, "data write on A: {e}");
    // Neither landed: B sees its own data and nothing of A's.
    assert!(b.read("vol", 0, 4096) == by_b);
    assert!(b.read("vol", 12 * MIB, 4096).iter().all(|&x| x == 0));
    let e = cb.info(BLOCKERB, "stale_data_by_a").unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound, "{e}");
    // A cannot take the volume back while B holds it.
    a.vlmc_fails(&["open", "vol"], "locked by host-b");

    // A recovers: its blockers reconnect as new clients (at once to lock,
    // after the quarantine for data), and it works on its own volumes.
    a.vlmc_ok(&["create", "vol_a2", "--size", "8M"]);
    a.vlmc_ok(&["open", "vol_a2"]);
    let fresh = pattern(8192, 7);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ca.volume_write(VLMCD, "vol_a2", 0, &fresh, true) {
            Ok(()) => break,
            Err(e) if e.code == ErrorCode::Fenced && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("A did not recover: {e}"),
        }
    }
    assert!(a.read("vol_a2", 0, 8192) == fresh);
    a.vlmc_ok(&["close", "vol_a2"]);
    b.vlmc_ok(&["close", "vol"]);
    // And B's data is what it wrote.
    assert!(b.read("vol", 0, 4096) == by_b);
    assert!(b.read("vol", 8 * MIB, MIB) == third);
}
