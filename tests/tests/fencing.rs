//! Fencing on the data path (issue 14): two hosts share one pool (two
//! complete instances on one machine, different host ids, the same files
//! directory or RADOS namespace). Host A's data write is held in flight in
//! its data blocker (an in-process blocker over a `FaultyStore`) while
//! `vlmc unlock -f` on host B breaks A's lock and B writes the same bytes;
//! let go, A's write must not land, whatever its timing.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use archipelago_blockerd::Blocker;
use archipelago_e2e::pipeline::{
    blocker, composer, mapper, segment, Backend, Pipeline, Proc, BLOCKERB, BLOCKERM, MAPPER, VLMCD,
};
use archipelago_e2e::{workspace_bin, TempSegment};
use archipelago_peer::{Peer, PeerArgs};
use archipelago_protocol::ErrorCode;
use archipelago_store::{Fault, FaultyStore, Gate, ObjectStore, OpKind};
use clap::Parser;

const OBJ: u64 = 64 << 10;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    peer: PeerArgs,
}

/// Host A: its data blocker runs in this process over `data` (so a test
/// can hold its writes); blockerm, mapperd and vlmcd are processes.
struct HostA {
    stop: Arc<AtomicBool>,
    blockerb: Option<std::thread::JoinHandle<bool>>,
    _procs: Vec<Proc>,
    _seg: Arc<xseg_shm::Segment>,
    tmp: TempSegment,
}

impl HostA {
    fn start(name: &str, data: Arc<dyn ObjectStore>, maps: &Backend) -> HostA {
        let tmp = TempSegment::new(name);
        let seg = segment(&tmp);
        let s = tmp.arg();
        let stop = Arc::new(AtomicBool::new(false));
        let args = Args::parse_from([
            "blockerb",
            "--segment",
            &s,
            "--port",
            &BLOCKERB.to_string(),
            "--drain-timeout",
            "5",
        ])
        .peer;
        let flag = stop.clone();
        let blockerb = std::thread::spawn(move || {
            let mut peer = Peer::start(&args).unwrap();
            let mut handler = Blocker::new(data, 4);
            peer.run_until(&mut handler, || flag.load(Ordering::SeqCst))
                .unwrap()
        });
        let procs = vec![
            Proc::start(blocker(&s, BLOCKERM, maps, "host-a", "blockerm")),
            Proc::start(mapper(&s, MAPPER, "host-a")),
            Proc::start(composer(&s)),
        ];
        HostA {
            stop,
            blockerb: Some(blockerb),
            _procs: procs,
            _seg: seg,
            tmp,
        }
    }

    fn client(&self) -> archipelago_client::Client {
        archipelago_client::Client::connect(&self.tmp.arg())
            .unwrap()
            .with_timeout(Duration::from_secs(60))
    }
}

impl Drop for HostA {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.blockerb.take() {
            let _ = t.join();
        }
    }
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..OBJ as usize)
        .map(|i| seed.wrapping_add((i % 251) as u8) | 1)
        .collect()
}

/// The scenario, on A's faulty data store and B's pipeline sharing pools.
/// `fenced` runs after B's write, before A's held write is let go.
fn held_write_never_lands<S: ObjectStore + 'static>(
    a_name: &str,
    a_data: Arc<FaultyStore<S>>,
    maps: &Backend,
    b: &Pipeline,
    fenced: impl FnOnce(&S),
) {
    let a = HostA::start(a_name, a_data.clone(), maps);
    let ca = a.client();
    ca.create_volume(VLMCD, "vm", 16 * OBJ, Some(OBJ)).unwrap();
    ca.open_volume(VLMCD, "vm", true).unwrap();
    ca.volume_write(VLMCD, "vm", 0, &pattern(1), true).unwrap();
    // Overwrites of an owned object take the mapper's fast path (no
    // worker, no I/O): they carry the token too, and land while A holds
    // the lock.
    ca.volume_write(VLMCD, "vm", 0, &pattern(5), true).unwrap();
    assert!(ca.volume_read(VLMCD, "vm", 0, OBJ).unwrap() == pattern(5));

    // A's next data write is held in its data blocker.
    let gate = Gate::new();
    // Whatever fails below, the held write is let go (else host A's
    // blocker could not drain and stop).
    struct Opens(Gate);
    impl Drop for Opens {
        fn drop(&mut self) {
            self.0.open();
        }
    }
    let _opens = Opens(gate.clone());
    a_data.fail_next(OpKind::Write, Fault::Hold(gate.clone()));
    let writer = {
        let ca = a.client();
        std::thread::spawn(move || ca.volume_write(VLMCD, "vm", 0, &pattern(2), true))
    };
    assert!(
        gate.wait_arrived(1, Duration::from_secs(60)),
        "A's data write never reached its blocker"
    );

    // vlmc unlock -f vm, on host B.
    let conf = tempfile::NamedTempFile::new().unwrap(); // empty: the defaults
    let out = Command::new(workspace_bin("vlmc"))
        .env("ARCHIPELAGO_CONFIG", conf.path())
        .args([
            "--segment",
            &b.tmp.arg(),
            "--blockerm-port",
            &BLOCKERM.to_string(),
            "--blockerb-port",
            &BLOCKERB.to_string(),
            "unlock",
            "-f",
            "vm",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vlmc unlock -f: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cb = b.client(Duration::from_secs(60));
    cb.open_volume(VLMCD, "vm", true).unwrap();
    cb.volume_write(VLMCD, "vm", 0, &pattern(3), true).unwrap();

    fenced(a_data.inner());
    gate.open();
    let r = writer.join().unwrap();
    let e = r.expect_err("A's write under the broken lock was acknowledged");
    assert_eq!(e.code, ErrorCode::Fenced, "{e}");
    assert!(
        cb.volume_read(VLMCD, "vm", 0, OBJ).unwrap() == pattern(3),
        "A's held write landed over B's after the break"
    );
    // Nor does a later write of A land.
    assert!(ca.volume_write(VLMCD, "vm", 0, &pattern(4), true).is_err());
    assert!(
        cb.volume_read(VLMCD, "vm", 0, OBJ).unwrap() == pattern(3),
        "a later write of A landed"
    );
    cb.close_volume(VLMCD, "vm").unwrap();
}

#[test]
fn files_a_held_data_write_of_the_old_owner_never_lands() {
    let root = tempfile::tempdir().unwrap();
    let (blocks, maps) = (root.path().join("blocks"), root.path().join("maps"));
    let b = Pipeline::start(
        "fence-b",
        "host-b",
        &Backend::Files(blocks.clone()),
        &Backend::Files(maps.clone()),
    );
    let store = archipelago_store::FileStore::open(
        &blocks,
        archipelago_store::FileStoreOptions {
            sync: false,
            fd_cache: 64,
        },
    )
    .unwrap();
    held_write_never_lands(
        "fence-a",
        Arc::new(FaultyStore::new(store)),
        &Backend::Files(maps),
        &b,
        |_| {},
    );
}

#[test]
fn rados_a_held_data_write_of_the_old_owner_never_lands() {
    let Some((conf, pool)) = archipelago_rados::testenv::cluster("fencing e2e") else {
        return;
    };
    let namespace = archipelago_rados::testenv::unique_namespace("e2e-fence");
    let backend = Backend::Rados {
        conf: conf.clone(),
        pool: pool.clone(),
        namespace: namespace.clone(),
    };
    let b = Pipeline::start("fence-rb", "host-b", &backend, &backend);
    let mut o = archipelago_rados::testenv::options(conf, pool, "e2e-fence");
    o.namespace = namespace;
    o.instance = Some(archipelago_rados::Instance {
        host: "host-a".into(),
        member: "blockerb".into(),
    });
    // No quarantine: the held write goes out through a reconnected client
    // as soon as A's blocker notices it was blocklisted.
    o.fence_quarantine = Duration::ZERO;
    let store = archipelago_rados::RadosStore::connect(o).unwrap();
    held_write_never_lands(
        "fence-ra",
        Arc::new(FaultyStore::new(store)),
        &backend,
        &b,
        |a| {
            // A's data blocker notices it was blocklisted; the held write then
            // goes out through a new client, which only the token check stops.
            assert_eq!(a.stat("x").unwrap_err().code(), ErrorCode::Fenced);
        },
    );
}

/// Issue 14 regression: a fenced write carries its fence in its target,
/// so its buffer holds the data only and a whole-object write of the
/// segment's largest buffer (4 MiB) fits. With the fence after the data
/// (fence-14 as first merged) it took 4 MiB + 272 bytes and was refused:
/// "4194576 bytes is more than the largest buffer". The volume's name is
/// the longest allowed, so the fenced targets of the data, chunk and
/// header writes are as long as they get.
#[test]
fn a_fenced_whole_object_write_of_the_largest_buffer_lands_and_reads_back() {
    const BIG: u64 = 4 << 20;
    let root = tempfile::tempdir().unwrap();
    let p = Pipeline::start(
        "fence-4m",
        "host-a",
        &Backend::Files(root.path().join("blocks")),
        &Backend::Files(root.path().join("maps")),
    );
    let c = p.client(Duration::from_secs(120));
    let vm = "v".repeat(archipelago_protocol::names::MAX_VOLUME_NAME);
    c.create_volume(VLMCD, &vm, 4 * BIG, Some(BIG)).unwrap();
    c.open_volume(VLMCD, &vm, true).unwrap();
    let data = |seed: u64| {
        let mut buf = vec![0u8; BIG as usize];
        archipelago_e2e::pattern::fill(&mut buf, seed, 14);
        buf
    };
    // A first write of a whole object (pending, then committed), an
    // overwrite in place (the mapper's fast path); an object never
    // written reads as zeros.
    c.volume_write(VLMCD, &vm, BIG, &data(1), true).unwrap();
    assert!(c.volume_read(VLMCD, &vm, BIG, BIG).unwrap() == data(1));
    c.volume_write(VLMCD, &vm, BIG, &data(2), false).unwrap();
    c.volume_write(VLMCD, &vm, 3 * BIG, &data(3), true).unwrap();
    assert!(c.volume_read(VLMCD, &vm, BIG, BIG).unwrap() == data(2));
    assert!(c.volume_read(VLMCD, &vm, 3 * BIG, BIG).unwrap() == data(3));
    assert!(c.volume_read(VLMCD, &vm, 0, BIG).unwrap() == vec![0u8; BIG as usize]);
    c.close_volume(VLMCD, &vm).unwrap();
}
