//! `blockerd` as its own process, driven through the segment the way the
//! mapper and composer will: every op, its errors, a graceful stop with
//! requests in flight, and a kill -9 that must lose no acknowledged write.

use std::sync::Arc;
use std::time::Duration;

use archipelago_client::{Call, Client};
use archipelago_e2e::pipeline::{common, Proc};
use archipelago_e2e::{receive_within, TempSegment};
use archipelago_peer::launch::{Blocker, Files, Store};
use archipelago_protocol::{ErrorCode, Flags, Op, PROTOCOL_VERSION};
use xseg_shm::{status, Segment, SegmentConfig, SegmentName};

const PORT: u32 = 1;

fn segment(tmp: &TempSegment) -> Arc<Segment> {
    let name = SegmentName::parse(&tmp.arg()).unwrap();
    let config = SegmentConfig {
        ports: 40,
        static_ports: 32,
        requests: 256,
        buffer_counts: vec![256, 16, 16, 8, 8, 4, 4, 4, 4, 4, 4],
        protocol_version: PROTOCOL_VERSION,
        ..Default::default()
    };
    Arc::new(Segment::create(&name, &config).unwrap())
}

/// A blocker on [`PORT`] of `tmp` keeping its objects in `store`.
fn blockerd(tmp: &TempSegment, store: Store) -> Blocker {
    Blocker {
        common: common(&tmp.arg(), PORT),
        store,
    }
}

fn every_op(client: &Client) {
    client.ping(PORT).unwrap();
    // Write and read back; past the end reads zeros; missing is NotFound.
    client.write(PORT, "obj-1", 4096, b"hello", true).unwrap();
    let back = client.read(PORT, "obj-1", 4094, 9).unwrap();
    assert_eq!(back, b"\0\0hello\0\0");
    assert_eq!(client.info(PORT, "obj-1").unwrap().size, 4101);
    assert_eq!(
        client.read(PORT, "nothing", 0, 4).unwrap_err().code,
        ErrorCode::NotFound
    );
    // Atomic whole-object replace.
    client.write_full(PORT, "obj-1", b"short").unwrap();
    assert_eq!(client.info(PORT, "obj-1").unwrap().size, 5);
    // Copy honours both offsets and the length.
    client.write_full(PORT, "src", b"0123456789").unwrap();
    client.copy(PORT, "src", 2, "dst", 100, 5).unwrap();
    assert_eq!(
        client.read(PORT, "dst", 98, 9).unwrap(),
        b"\x00\x0023456\x00\x00"
    );
    client.copy(PORT, "src", 0, "dst", 100, 3).unwrap();
    assert_eq!(
        client.read(PORT, "dst", 100, 5).unwrap(),
        b"01256",
        "a second copy overwrites"
    );
    // Content hashing: trailing zeros do not change the name.
    client.write_full(PORT, "blk-a", b"same content").unwrap();
    client
        .write_full(PORT, "blk-b", b"same content\0\0\0")
        .unwrap();
    let a = client.hash(PORT, "blk-a", 0, 12).unwrap();
    let b = client.hash(PORT, "blk-b", 0, 15).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 64);
    assert_eq!(client.read(PORT, &a, 0, 12).unwrap(), b"same content");
    // Locks: exact owners, tokens, the owner named in the refusal.
    let t1 = client.acquire(PORT, "vol", "host_1").unwrap();
    assert_eq!(
        client.acquire(PORT, "vol", "host_1").unwrap(),
        t1,
        "re-acquire is idempotent"
    );
    let e = client.acquire(PORT, "vol", "host_10").unwrap_err();
    assert_eq!(
        (e.code, e.to_string()),
        (ErrorCode::Locked, "locked by host_1".to_owned())
    );
    assert_eq!(
        client
            .release(PORT, "vol", "host_10", false)
            .unwrap_err()
            .code,
        ErrorCode::Locked
    );
    client.release(PORT, "vol", "host_10", true).unwrap();
    let t2 = client.acquire(PORT, "vol", "host_10").unwrap();
    assert!(t2 > t1, "fencing tokens grow across a break");
    client.release(PORT, "vol", "host_10", false).unwrap();
    // Listing, deleting, syncing.
    assert_eq!(client.list(PORT, "blk-", 4096).unwrap(), ["blk-a", "blk-b"]);
    client.delete(PORT, "blk-a").unwrap();
    assert_eq!(
        client.delete(PORT, "blk-a").unwrap_err().code,
        ErrorCode::NotFound
    );
    client.sync(PORT).unwrap();
    // Bad input: a name escaping the directory, an op a blocker lacks, a
    // buffer smaller than the read.
    assert_eq!(
        client
            .write(PORT, "../etc", 0, b"x", false)
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        client
            .call(&Call::new(PORT, Op::Clone, b"x"))
            .unwrap_err()
            .code,
        ErrorCode::Unsupported
    );
    let short = Call {
        size: 100,
        reply_room: 10,
        ..Call::new(PORT, Op::Read, b"src")
    };
    assert_eq!(
        client.call(&short).unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    fenced_writes(client);
    let stats = client.stats(PORT).unwrap();
    assert!(stats.served > 20 && stats.failed >= 6, "{stats:?}");
}

/// Fenced writes (issue 14): the fence travels in the target
/// (`<object> NUL <lock> NUL <token>`); a stale token is `Fenced`, and a
/// malformed fenced target is refused as `InvalidArgument` (the blocker
/// lives on and writes nothing).
fn fenced_writes(client: &Client) {
    client
        .write_fenced(PORT, "fenced", 0, b"abc", false, "vol", 5)
        .unwrap();
    client
        .write_full_fenced(PORT, "fenced-full", b"def", "vol", 5)
        .unwrap();
    assert_eq!(client.read(PORT, "fenced", 0, 3).unwrap(), b"abc");
    assert_eq!(client.read(PORT, "fenced-full", 0, 3).unwrap(), b"def");
    assert_eq!(client.raise_fence(PORT, "vol", 7).unwrap(), 7);
    assert_eq!(
        client
            .write_fenced(PORT, "fenced", 0, b"x", false, "vol", 6)
            .unwrap_err()
            .code,
        ErrorCode::Fenced
    );
    // `|` stands for NUL.
    let bad: [&[u8]; 6] = [
        b"fenced",
        b"fenced|vol",
        b"fenced|vol|7",
        b"fenced|vol|000000000000000Z",
        b"|vol|0000000000000009",
        b"fenced|vol|0000000000000009|",
    ];
    for target in bad {
        let target: Vec<u8> = target
            .iter()
            .map(|&b| if b == b'|' { 0 } else { b })
            .collect();
        for op in [Op::Write, Op::WriteFull] {
            let call = Call {
                size: 1,
                flags: Flags::FENCED,
                data: b"y",
                ..Call::new(PORT, op, &target)
            };
            let e = client.call(&call).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{op} {target:?}: {e}");
        }
    }
    assert_eq!(client.read(PORT, "fenced", 0, 3).unwrap(), b"abc");
    client
        .write_fenced(PORT, "fenced", 0, b"ghi", false, "vol", 7)
        .unwrap();
    assert_eq!(client.read(PORT, "fenced", 0, 3).unwrap(), b"ghi");
}

#[test]
fn every_op_on_the_memory_backend() {
    let tmp = TempSegment::new("blockerd-mem");
    let _seg = segment(&tmp);
    let _b = Proc::start(blockerd(&tmp, Store::Memory));
    every_op(&Client::connect(&tmp.arg()).unwrap());
}

#[test]
fn every_op_on_the_files_backend() {
    let tmp = TempSegment::new("blockerd-files");
    let dir = tempdir("blockerd-files");
    let _seg = segment(&tmp);
    let _b = Proc::start(blockerd(&tmp, Store::Files(Files::new(&dir))));
    every_op(&Client::connect(&tmp.arg()).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("xseg-e2e-{}-{name}-data", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn sigterm_completes_what_is_in_flight_and_leaves_the_queue_for_the_next_owner() {
    let tmp = TempSegment::new("blockerd-term");
    let dir = tempdir("blockerd-term");
    let seg = segment(&tmp);
    let mut launch = blockerd(&tmp, Store::Files(Files::new(&dir)));
    launch.common.max_inflight = Some(4);
    launch.common.threads = Some(2);
    let mut b = Proc::start(launch.clone());
    let port = seg.bind_dynamic().unwrap();
    let n = 160;
    for i in 0..n {
        let mut r = port.get(PORT).unwrap();
        port.set_target(&mut r, format!("o-{i}").as_bytes())
            .unwrap();
        port.alloc_data(&mut r, 4096).unwrap();
        port.data_mut(&mut r).fill(i as u8);
        let d = port.desc(&r);
        d.set_op(Op::Write.code());
        d.set_size(4096);
        d.set_tag(i);
        port.submit(r).unwrap();
    }
    assert!(
        b.terminate(Duration::from_secs(30)).success(),
        "blockerd exits 0 after draining"
    );
    let mut done = 0;
    while let Some(r) = port.receive() {
        assert_eq!(
            port.desc(&r).status(),
            status::SERVED,
            "in-flight requests complete"
        );
        port.put(r);
        done += 1;
    }
    assert!(
        done < n,
        "the signal came before the last request was accepted"
    );
    // The rest waited in the port's queue for the next owner.
    let _b2 = Proc::start(launch);
    while done < n {
        let r = receive_within(&port, Duration::from_secs(30));
        assert_eq!(port.desc(&r).status(), status::SERVED);
        port.put(r);
        done += 1;
    }
    let client = Client::connect(&tmp.arg()).unwrap();
    for i in 0..n {
        assert_eq!(
            client.read(PORT, &format!("o-{i}"), 4095, 1).unwrap(),
            [i as u8]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_9_and_restart_loses_no_acknowledged_write() {
    let tmp = TempSegment::new("blockerd-kill");
    let dir = tempdir("blockerd-kill");
    let _seg = segment(&tmp);
    let launch = blockerd(&tmp, Store::Files(Files::new(&dir)));
    let mut b = Proc::start(launch.clone());
    let client = Client::connect(&tmp.arg())
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let mut acked = Vec::new();
    for i in 0..200u32 {
        let data = vec![(i % 251) as u8; 4096 + i as usize];
        client
            .write(PORT, &format!("k-{i}"), 0, &data, false)
            .unwrap();
        acked.push(data);
    }
    b.kill9();
    // A call now finds the peer dead: bounded, "peer died", no hang.
    assert_eq!(client.ping(PORT).unwrap_err().code, ErrorCode::PeerDied);
    let _b2 = Proc::start(launch);
    for (i, data) in acked.iter().enumerate() {
        let back = client
            .read(PORT, &format!("k-{i}"), 0, data.len() as u64)
            .unwrap();
        assert!(back == *data, "acknowledged write k-{i} lost");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A listing larger than any buffer of the segment (one LIST reply is
/// bounded by the largest, 4 MiB) still comes whole and sorted through
/// `RemoteStore::list`, page by page.
#[test]
fn a_listing_larger_than_any_buffer_comes_whole() {
    use archipelago_client::RemoteStore;
    use archipelago_store::ObjectStore;
    let tmp = TempSegment::new("blockerd-biglist");
    let _seg = segment(&tmp);
    let _b = Proc::start(blockerd(&tmp, Store::Memory));
    let client = Client::connect(&tmp.arg()).unwrap();
    let pad = "x".repeat(190);
    // 23,000 names of 201 bytes: 4.6 MB of names.
    let n = 23_000;
    let mut want: Vec<String> = (0..n).map(|i| format!("big-{i:06}-{pad}")).collect();
    for name in want.iter().rev() {
        client.write(PORT, name, 0, b"x", false).unwrap();
    }
    let got = RemoteStore::new(&tmp.arg(), PORT).list("big-").unwrap();
    want.sort();
    assert_eq!(got.len(), n);
    assert_eq!(got, want);
}
