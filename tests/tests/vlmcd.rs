//! `vlmcd` as its own process over `mapperd` and two `blockerd`s: volume
//! I/O at unaligned offsets across objects, zeros for unwritten space,
//! range checks, snapshots and clones through the composer, full-object
//! overwrites of shared objects (pending writes and MAP_COMMIT), barriers
//! ordering a snapshot between writes in flight, many requests in flight
//! from one port, and a kill -9 of the composer.

use std::time::Duration;

use archipelago_client::Client;
use archipelago_e2e::pipeline::{
    composer, mapper, memory_blocker, segment, Proc, BLOCKERB, BLOCKERM, MAPPER, VLMCD,
};
use archipelago_e2e::{receive_within, TempSegment};
use archipelago_protocol::payload::{NameField, Payload};
use archipelago_protocol::{ErrorCode, Flags, Op};
use xseg_shm::{status, Port};

const SIZE: u64 = 1 << 20;
const OBJ: u64 = 64 << 10;

fn start_mapperd(tmp: &TempSegment) -> Proc {
    Proc::start(mapper(&tmp.arg(), MAPPER, "host-a"))
}

fn start_vlmcd(tmp: &TempSegment) -> Proc {
    Proc::start(composer(&tmp.arg()))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8 | 1)
        .collect()
}

/// Writes through vlmcd and records the write in `expect`.
fn write(c: &Client, vol: &str, expect: &mut [u8], offset: u64, data: &[u8]) {
    c.volume_write(VLMCD, vol, offset, data, false).unwrap();
    expect[offset as usize..][..data.len()].copy_from_slice(data);
}

fn read_all(c: &Client, vol: &str) -> Vec<u8> {
    c.volume_read(VLMCD, vol, 0, SIZE).unwrap()
}

/// Submits a request on `port` without waiting.
#[allow(clippy::too_many_arguments)]
fn submit(
    port: &Port,
    op: Op,
    target: &str,
    offset: u64,
    size: u64,
    data: &[u8],
    room: u64,
    tag: u64,
) {
    let mut r = port.get(VLMCD).unwrap();
    port.set_target(&mut r, target.as_bytes()).unwrap();
    let len = (data.len() as u64).max(room);
    if len > 0 {
        port.alloc_data(&mut r, len).unwrap();
        port.data_mut(&mut r)[..data.len()].copy_from_slice(data);
    }
    let d = port.desc(&r);
    d.set_op(op.code());
    d.set_offset(offset);
    d.set_size(size);
    d.set_flags(Flags::NONE.0);
    d.set_tag(tag);
    port.submit(r).unwrap();
}

/// Receives `n` replies on `port`: tag → (served, data).
fn receive(port: &Port, n: usize) -> std::collections::HashMap<u64, (bool, Vec<u8>)> {
    let mut out = std::collections::HashMap::new();
    for _ in 0..n {
        let r = receive_within(port, Duration::from_secs(30));
        let d = port.desc(&r);
        let served = d.status() == status::SERVED;
        let data = port.data(&r)[..d.size().min(d.data_len()) as usize].to_vec();
        assert!(out.insert(d.tag(), (served, data)).is_none());
        port.put(r);
    }
    out
}

#[test]
fn volume_io_snapshots_clones_barriers_and_a_kill_9_of_the_composer() {
    let tmp = TempSegment::new("vlmcd");
    let _seg = segment(&tmp);
    let _b = Proc::start(memory_blocker(&tmp.arg(), BLOCKERB));
    let _m = Proc::start(memory_blocker(&tmp.arg(), BLOCKERM));
    let _mapperd = start_mapperd(&tmp);
    let mut vlmcd = start_vlmcd(&tmp);
    let c = Client::connect(&tmp.arg())
        .unwrap()
        .with_timeout(Duration::from_secs(20));

    // Management goes through vlmcd.
    c.create_volume(VLMCD, "vol", SIZE, Some(OBJ)).unwrap();
    assert_eq!(
        c.create_volume(VLMCD, "vol", SIZE, Some(OBJ))
            .unwrap_err()
            .code,
        ErrorCode::Exists
    );
    let info = c.volume_info(VLMCD, "vol").unwrap();
    assert_eq!((info.size, info.object_size), (SIZE, OBJ));

    // Unwritten space reads as zeros without touching storage.
    assert!(read_all(&c, "vol") == vec![0; SIZE as usize]);
    assert_eq!(
        c.list(BLOCKERB, "", 4096).unwrap(),
        Vec::<String>::new(),
        "no data object exists yet"
    );

    // Unaligned writes across object boundaries.
    let mut vol = vec![0u8; SIZE as usize];
    write(
        &c,
        "vol",
        &mut vol,
        60 * 1024 + 123,
        &pattern(140 * 1024 + 7, 1),
    );
    write(&c, "vol", &mut vol, 3, &pattern(5, 2));
    write(&c, "vol", &mut vol, SIZE - 1000, &pattern(1000, 3));
    assert!(read_all(&c, "vol") == vol);
    let piece = c.volume_read(VLMCD, "vol", OBJ - 10, 30).unwrap();
    assert_eq!(piece, vol[(OBJ - 10) as usize..][..30]);
    // FUA writes and a flush.
    c.volume_write(VLMCD, "vol", 500 * 1024 + 1, &pattern(2000, 4), true)
        .unwrap();
    vol[500 * 1024 + 1..][..2000].copy_from_slice(&pattern(2000, 4));
    c.volume_flush(VLMCD, "vol").unwrap();
    assert!(read_all(&c, "vol") == vol);

    // Past the end: the mapper's OutOfRange.
    for e in [
        c.volume_read(VLMCD, "vol", SIZE - 10, 20).unwrap_err(),
        c.volume_write(VLMCD, "vol", SIZE, &[1], false).unwrap_err(),
        c.volume_read(VLMCD, "nope", 0, 10).unwrap_err(),
    ] {
        assert!(
            matches!(e.code, ErrorCode::OutOfRange | ErrorCode::NotFound),
            "{e}"
        );
    }
    assert_eq!(
        c.volume_read(VLMCD, "vol", SIZE, 1).unwrap_err().code,
        ErrorCode::OutOfRange
    );
    // Ops the composer does not serve.
    assert_eq!(
        c.map_read(VLMCD, "vol", 0, 10).unwrap_err().code,
        ErrorCode::Unsupported
    );

    // Snapshot through vlmcd, overwrite: the snapshot keeps the old data.
    c.snapshot(VLMCD, "vol", "snap").unwrap();
    let snap = vol.clone();
    write(&c, "vol", &mut vol, 100 * 1024 + 77, &pattern(30 * 1024, 5));
    assert!(read_all(&c, "vol") == vol);
    assert!(read_all(&c, "snap") == snap);
    assert_eq!(
        c.volume_write(VLMCD, "snap", 0, &[1], false)
            .unwrap_err()
            .code,
        ErrorCode::ReadOnly
    );

    // A clone sees the snapshot; writes on either side stay there.
    c.clone_volume(VLMCD, "snap", "clone", None).unwrap();
    let mut clone = snap.clone();
    assert!(read_all(&c, "clone") == clone);
    write(
        &c,
        "clone",
        &mut clone,
        62 * 1024 + 5,
        &pattern(10 * 1024, 6),
    );
    write(&c, "vol", &mut vol, 20, &pattern(100, 7));
    assert!(read_all(&c, "clone") == clone);
    assert!(read_all(&c, "vol") == vol);
    assert!(read_all(&c, "snap") == snap);

    // Full-object overwrites of shared objects (pending, then committed):
    // objects 2 and 3 of the clone are the snapshot's, as is object 15.
    write(
        &c,
        "clone",
        &mut clone,
        2 * OBJ,
        &pattern(2 * OBJ as usize, 8),
    );
    write(
        &c,
        "clone",
        &mut clone,
        SIZE - OBJ,
        &pattern(OBJ as usize, 9),
    );
    // And one that is partly full: the full object pending, the rest
    // copied up.
    write(
        &c,
        "vol",
        &mut vol,
        7 * OBJ,
        &pattern(OBJ as usize + 100, 10),
    );
    assert!(read_all(&c, "clone") == clone);
    assert!(read_all(&c, "vol") == vol);
    assert!(read_all(&c, "snap") == snap);
    // Again over the now-owned objects: no longer pending.
    write(&c, "clone", &mut clone, 2 * OBJ, &pattern(OBJ as usize, 11));
    assert!(read_all(&c, "clone") == clone);

    // Barriers: a snapshot submitted between two waves of writes to the
    // same ranges sees exactly the first wave.
    let raw = Client::connect(&tmp.arg()).unwrap();
    let port = raw.port();
    let ranges: Vec<(u64, usize)> = (0..8u64)
        .map(|i| (i * 120 * 1024 + 3000 + i, 9000 + i as usize))
        .collect();
    for (i, &(off, len)) in ranges.iter().enumerate() {
        submit(
            port,
            Op::Write,
            "vol",
            off,
            len as u64,
            &pattern(len, 20 + i as u8),
            0,
            i as u64,
        );
        vol[off as usize..][..len].copy_from_slice(&pattern(len, 20 + i as u8));
    }
    let snap2_payload = NameField::new(b"snap2").unwrap().to_vec();
    submit(port, Op::Snapshot, "vol", 0, 0, &snap2_payload, 272, 100);
    let snap2 = vol.clone();
    for (i, &(off, len)) in ranges.iter().enumerate() {
        let data = pattern(len, 40 + i as u8);
        submit(
            port,
            Op::Write,
            "vol",
            off,
            len as u64,
            &data,
            0,
            200 + i as u64,
        );
        vol[off as usize..][..len].copy_from_slice(&data);
    }
    let replies = receive(port, 17);
    assert!(
        replies.values().all(|(served, _)| *served),
        "{:?}",
        replies.keys()
    );
    assert!(read_all(&c, "snap2") == snap2);
    assert!(read_all(&c, "vol") == vol);

    // 32 requests in flight from one port: 16 writes, then 32 reads.
    let spots: Vec<(u64, usize)> = (0..16u64)
        .map(|i| (i * 61 * 1024 + 17 * i, 3000 + 100 * i as usize))
        .collect();
    for (i, &(off, len)) in spots.iter().enumerate() {
        let data = pattern(len, 60 + i as u8);
        submit(
            port,
            Op::Write,
            "clone",
            off,
            len as u64,
            &data,
            0,
            300 + i as u64,
        );
        clone[off as usize..][..len].copy_from_slice(&data);
    }
    let replies = receive(port, 16);
    assert!(replies.values().all(|(served, _)| *served));
    for i in 0..32u64 {
        let (off, len) = spots[(i % 16) as usize];
        let (vol_name, off) = if i < 16 {
            ("clone", off)
        } else {
            ("snap", off + 5)
        };
        submit(
            port,
            Op::Read,
            vol_name,
            off,
            len as u64,
            &[],
            len as u64,
            400 + i,
        );
    }
    let replies = receive(port, 32);
    for i in 0..32u64 {
        let (off, len) = spots[(i % 16) as usize];
        let (expect, off) = if i < 16 {
            (&clone, off)
        } else {
            (&snap, off + 5)
        };
        let (served, data) = &replies[&(400 + i)];
        assert!(*served, "read {i}");
        assert!(data[..] == expect[off as usize..][..len], "read {i}");
    }
    // Concurrent writes to one shared object, mapped pending together:
    // full overwrites and partial ones of the same bytes (so any order
    // gives one result). One commit for them all, and none left pending
    // (a snapshot would be refused).
    c.snapshot(VLMCD, "vol", "snap3").unwrap();
    let snap3 = vol.clone();
    let full = pattern(OBJ as usize, 70);
    let base = 9 * OBJ;
    for i in 0..8u64 {
        let (off, data) = if i % 2 == 0 {
            (0, &full[..])
        } else {
            let at = (i * 5000) as usize;
            (at as u64, &full[at..at + 7000])
        };
        submit(
            port,
            Op::Write,
            "vol",
            base + off,
            data.len() as u64,
            data,
            0,
            500 + i,
        );
    }
    let replies = receive(port, 8);
    assert!(replies.values().all(|(served, _)| *served));
    vol[base as usize..][..OBJ as usize].copy_from_slice(&full);
    assert!(read_all(&c, "vol") == vol);
    assert!(read_all(&c, "snap3") == snap3);
    c.snapshot(VLMCD, "vol", "snap4").unwrap();
    assert!(read_all(&c, "snap4") == vol);

    // The composer's own count is back to this STATS alone.
    assert_eq!(c.stats(VLMCD).unwrap().in_flight, 1);

    // kill -9 the composer: nothing is lost, it serves again on restart.
    vlmcd.kill9();
    assert_eq!(c.ping(VLMCD).unwrap_err().code, ErrorCode::PeerDied);
    let _vlmcd = start_vlmcd(&tmp);
    assert!(read_all(&c, "vol") == vol);
    assert!(read_all(&c, "snap") == snap);
    assert!(read_all(&c, "snap2") == snap2);
    assert!(read_all(&c, "clone") == clone);
    write(&c, "vol", &mut vol, 5, &pattern(OBJ as usize * 2, 12));
    assert!(read_all(&c, "vol") == vol);

    // Barrier ops through vlmcd: close, rename, resize, remove.
    c.close_volume(VLMCD, "clone").unwrap();
    c.rename_volume(VLMCD, "clone", "clone2").unwrap();
    c.resize_volume(VLMCD, "clone2", 2 * SIZE, false).unwrap();
    assert_eq!(
        c.volume_read(VLMCD, "clone2", SIZE, 4096).unwrap(),
        vec![0; 4096]
    );
    assert!(c.volume_read(VLMCD, "clone2", 0, SIZE).unwrap() == clone);
    c.remove_volume(VLMCD, "clone2").unwrap();
    assert!(c.volume_info(VLMCD, "clone2").unwrap().removed);
}

/// A write round whose data failed is never committed, so the mapper
/// keeps its object pending; a snapshot through vlmcd (a barrier: the
/// volume's I/O drained) forgets it instead of refusing the volume until
/// it is closed. The same snapshot sent to the mapper directly, which
/// cannot know the I/O drained, is refused (any barrier is: issue 14).
#[test]
fn a_barrier_forgets_writes_abandoned_pending() {
    let tmp = TempSegment::new("vlmcd-abandoned");
    let _seg = segment(&tmp);
    let _b = Proc::start(memory_blocker(&tmp.arg(), BLOCKERB));
    let _m = Proc::start(memory_blocker(&tmp.arg(), BLOCKERM));
    let _mapperd = start_mapperd(&tmp);
    let _vlmcd = start_vlmcd(&tmp);
    let c = Client::connect(&tmp.arg())
        .unwrap()
        .with_timeout(Duration::from_secs(20));
    c.create_volume(VLMCD, "vol", SIZE, Some(OBJ)).unwrap();
    c.write(VLMCD, "vol", 0, b"kept", false).unwrap();
    // What vlmcd does for a first write, stopping where its data failed.
    let ext = c.map_write(MAPPER, "vol", 3 * OBJ, 16).unwrap();
    assert!(ext[0].pending);
    let direct = c.snapshot(MAPPER, "vol", "direct").unwrap_err();
    assert_eq!(direct.code, ErrorCode::InvalidArgument, "{direct}");
    assert!(direct.detail.contains("vlmcd"), "{direct}");
    c.snapshot(VLMCD, "vol", "snap").unwrap();
    assert_eq!(c.read(VLMCD, "snap", 0, 4).unwrap(), b"kept");
    assert_eq!(c.read(VLMCD, "snap", 3 * OBJ, 16).unwrap(), vec![0; 16]);
    // The abandoned object takes writes again.
    c.write(VLMCD, "vol", 3 * OBJ, b"again", false).unwrap();
    assert_eq!(c.read(VLMCD, "vol", 3 * OBJ, 5).unwrap(), b"again");
}
