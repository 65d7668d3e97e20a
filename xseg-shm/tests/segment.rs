//! The segment and port API in one process: creation and attach errors,
//! port ownership, routing, pools running dry, stale replies.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use xseg_shm::{
    code, status, PortError, Segment, SegmentConfig, SegmentError, SegmentName, TransportError,
};

mod common;
use common::Tmp;

fn small() -> SegmentConfig {
    SegmentConfig {
        ports: 8,
        static_ports: 4,
        requests: 16,
        buffer_counts: vec![4, 2],
        ..Default::default()
    }
}

fn create(tmp: &Tmp) -> Arc<Segment> {
    Arc::new(Segment::create(&tmp.name(), &small()).unwrap())
}

#[test]
fn names_without_a_slash_are_shm_objects_and_paths_are_files() {
    assert_eq!(
        SegmentName::parse("archipelago").unwrap(),
        SegmentName::Shm("archipelago".into())
    );
    assert!(matches!(
        SegmentName::parse("/tmp/x").unwrap(),
        SegmentName::File(_)
    ));
    assert!(SegmentName::parse("").is_err());
}

#[test]
fn shm_segment_round_trip_under_dev_shm() {
    let name = SegmentName::parse(&format!("xseg-unit-{}", std::process::id())).unwrap();
    let seg = Segment::create(&name, &small()).unwrap();
    let path = format!("/dev/shm/xseg-unit-{}", std::process::id());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    drop(seg);
    Segment::attach(&name, None).unwrap();
    Segment::destroy(&name, false).unwrap();
    assert!(!std::path::Path::new(&path).exists());
    assert!(matches!(
        Segment::attach(&name, None),
        Err(SegmentError::NotFound { .. })
    ));
}

#[test]
fn create_sets_the_mode_and_refuses_to_overwrite() {
    let tmp = Tmp::new("mode");
    let config = SegmentConfig {
        mode: 0o600,
        ..small()
    };
    Segment::create(&tmp.name(), &config).unwrap();
    assert_eq!(
        std::fs::metadata(&tmp.0).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(matches!(
        Segment::create(&tmp.name(), &config),
        Err(SegmentError::Exists { .. })
    ));
    let tmp2 = Tmp::new("mode-world");
    let open = SegmentConfig {
        mode: 0o666,
        ..small()
    };
    assert!(matches!(
        Segment::create(&tmp2.name(), &open),
        Err(SegmentError::Config(_))
    ));
    assert!(!tmp2.0.exists(), "a refused create leaves nothing behind");
}

#[test]
fn attach_tells_not_ready_incompatible_and_not_a_segment_apart() {
    let tmp = Tmp::new("attach");
    // An empty file: a creator that has not sized it yet.
    std::fs::File::create(&tmp.0).unwrap();
    assert!(matches!(
        Segment::attach(&tmp.name(), None),
        Err(SegmentError::NotReady { .. })
    ));
    // Junk.
    std::fs::File::create(&tmp.0)
        .unwrap()
        .write_all(&[7u8; 8192])
        .unwrap();
    assert!(matches!(
        Segment::attach(&tmp.name(), None),
        Err(SegmentError::NotASegment { .. })
    ));
    std::fs::remove_file(&tmp.0).unwrap();

    let config = SegmentConfig {
        protocol_version: 3,
        ..small()
    };
    drop(Segment::create(&tmp.name(), &config).unwrap());
    assert_eq!(
        Segment::attach(&tmp.name(), Some(3))
            .unwrap()
            .protocol_version(),
        3
    );
    assert!(matches!(
        Segment::attach(&tmp.name(), Some(4)),
        Err(SegmentError::ProtocolVersion {
            found: 3,
            expected: 4,
            ..
        })
    ));
    let mut bytes = std::fs::read(&tmp.0).unwrap();
    // Half-initialised: magic present, ready word (offset 12) not set.
    bytes[12..16].copy_from_slice(&[0; 4]);
    std::fs::write(&tmp.0, &bytes).unwrap();
    assert!(matches!(
        Segment::attach(&tmp.name(), None),
        Err(SegmentError::NotReady { .. })
    ));
    // Restore ready, change the layout version (offset 8).
    bytes[12..16].copy_from_slice(&0x5245_4459u32.to_ne_bytes());
    bytes[8..12].copy_from_slice(&99u32.to_ne_bytes());
    std::fs::write(&tmp.0, &bytes).unwrap();
    assert!(matches!(
        Segment::attach(&tmp.name(), None),
        Err(SegmentError::LayoutVersion { found: 99, .. })
    ));
    // Sizes that do not match the file.
    bytes[8..12].copy_from_slice(&xseg_shm::layout::LAYOUT_VERSION.to_ne_bytes());
    bytes[40..44].copy_from_slice(&17u32.to_ne_bytes()); // nr_requests
    std::fs::write(&tmp.0, &bytes).unwrap();
    assert!(matches!(
        Segment::attach(&tmp.name(), None),
        Err(SegmentError::Corrupt { .. })
    ));
    bytes.truncate(bytes.len() - 4096);
    bytes[40..44].copy_from_slice(&16u32.to_ne_bytes());
    std::fs::write(&tmp.0, &bytes).unwrap();
    assert!(matches!(
        Segment::attach(&tmp.name(), None),
        Err(SegmentError::Corrupt { .. })
    ));
}

#[test]
fn header_golden_bytes() {
    let tmp = Tmp::new("golden");
    let config = SegmentConfig {
        protocol_version: 0x0102_0304,
        ..small()
    };
    drop(Segment::create(&tmp.name(), &config).unwrap());
    let b = std::fs::read(&tmp.0).unwrap();
    assert_eq!(&b[0..8], b"ARCHXSEG");
    assert_eq!(b[8..12], 2u32.to_ne_bytes(), "layout version");
    assert_eq!(b[12..16], 0x5245_4459u32.to_ne_bytes(), "ready word");
    assert_eq!(b[16..20], 0x0102_0304u32.to_ne_bytes(), "protocol version");
    assert_eq!(b[20..24], 0o660u32.to_ne_bytes(), "mode");
    assert_eq!(
        u64::from_ne_bytes(b[24..32].try_into().unwrap()),
        b.len() as u64,
        "size"
    );
    assert_eq!(
        b[32..48],
        [8, 0, 0, 0, 4, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0, 0],
        "ports, static, requests, ring"
    );
    assert_eq!(
        b[48..56],
        [2, 0, 0, 0, 12, 0, 0, 0],
        "buffer classes from 4 KiB"
    );
    assert_eq!(b[56..64], [4, 0, 0, 0, 2, 0, 0, 0], "buffer counts");
    assert_eq!(b[64..120], [0; 56], "unused classes");
    assert_eq!(b[120..124], std::process::id().to_ne_bytes(), "creator pid");
    let clock_khz = u64::from_ne_bytes(b[136..144].try_into().unwrap());
    let seg = Segment::attach(&tmp.name(), None).unwrap();
    assert_eq!(seg.clock().khz(), clock_khz, "timestamp clock");
}

#[test]
fn a_port_owned_by_a_live_process_cannot_be_bound_or_recovered() {
    let tmp = Tmp::new("owned");
    let seg = create(&tmp);
    let p = seg.bind(2).unwrap();
    let me = std::process::id();
    assert_eq!(
        seg.bind(2).unwrap_err(),
        PortError::Owned { port: 2, pid: me }
    );
    assert_eq!(
        seg.recover(2).unwrap_err(),
        PortError::OwnerAlive { port: 2, pid: me }
    );
    assert!(matches!(
        seg.bind(8),
        Err(PortError::NoSuchPort { port: 8, .. })
    ));
    assert!(matches!(
        Segment::destroy(&tmp.name(), false),
        Err(SegmentError::InUse { port: 2, .. })
    ));
    let gen = p.generation();
    drop(p);
    let p = seg.bind(2).unwrap();
    assert_eq!(p.generation(), gen + 1, "each bind is a new generation");
}

#[test]
fn dynamic_ports_are_handed_out_until_none_is_left() {
    let tmp = Tmp::new("dynamic");
    let seg = create(&tmp);
    let ports: Vec<_> = (0..4).map(|_| seg.bind_dynamic().unwrap()).collect();
    let mut numbers: Vec<_> = ports.iter().map(|p| p.number()).collect();
    numbers.sort();
    assert_eq!(numbers, vec![4, 5, 6, 7]);
    assert_eq!(
        seg.bind_dynamic().unwrap_err(),
        PortError::NoFreePort { count: 4 }
    );
}

#[test]
fn request_round_trip_carries_every_field_and_forward_keeps_the_source() {
    let tmp = Tmp::new("roundtrip");
    let seg = create(&tmp);
    let (composer, blocker, client) = (
        seg.bind(1).unwrap(),
        seg.bind(2).unwrap(),
        seg.bind_dynamic().unwrap(),
    );
    let mut r = client.get(1).unwrap();
    let d = client.desc(&r);
    d.set_op(7);
    d.set_flags(3);
    d.set_offset(1 << 40);
    d.set_size(6000);
    d.set_tag(42);
    client.set_target(&mut r, &[b'x'; 256]).unwrap();
    assert!(matches!(
        client.set_target(&mut r, &[b'x'; 257]),
        Err(TransportError::TargetTooLong(257))
    ));
    client.alloc_data(&mut r, 6000).unwrap();
    client.data_mut(&mut r).fill(0xAB);
    client.submit(r).unwrap();

    let r = composer.accept().unwrap();
    assert!(composer.accept().is_none());
    composer.forward(r, 2).unwrap();
    let mut r = blocker.accept().unwrap();
    let d = blocker.desc(&r);
    assert_eq!(
        (d.op(), d.flags(), d.offset(), d.size(), d.tag()),
        (7, 3, 1 << 40, 6000, 42)
    );
    assert_eq!(
        (d.src_port(), d.dst_port(), d.effective_dst()),
        (client.number(), 1, 2)
    );
    assert_eq!(d.target().as_bytes(), &[b'x'; 256][..]);
    assert!(d.t_submit() > 0 && d.t_accept() >= d.t_submit());
    assert!(blocker.data(&r).iter().all(|&b| b == 0xAB));
    assert_eq!(blocker.data(&r).len(), 6000);
    blocker.data_mut(&mut r)[0] = 1;
    blocker.serve(r, 6000).unwrap();

    assert!(
        composer.receive().is_none(),
        "the reply goes to the source, not the forwarder"
    );
    let r = client.receive().unwrap();
    let d = client.desc(&r);
    assert_eq!((d.status(), d.serviced()), (status::SERVED, 6000));
    assert!(d.t_complete() >= d.t_accept());
    assert_eq!(client.data(&r)[0], 1);
    client.put(r);
    assert_eq!(seg.report().requests_free, 16);
}

#[test]
fn a_fresh_descriptor_carries_nothing_from_its_last_use() {
    let tmp = Tmp::new("zeroed");
    let seg = Arc::new(
        Segment::create(
            &tmp.name(),
            &SegmentConfig {
                requests: 1,
                ..small()
            },
        )
        .unwrap(),
    );
    let p = seg.bind(1).unwrap();
    let mut r = p.get(1).unwrap();
    let d = p.desc(&r);
    d.set_op(9);
    d.set_offset(9);
    d.set_size(9);
    d.set_tag(9);
    d.set_error(9);
    p.set_target(&mut r, b"old").unwrap();
    p.alloc_data(&mut r, 10).unwrap();
    p.put(r);
    let r = p.get(1).unwrap();
    let d = p.desc(&r);
    assert_eq!(
        (
            d.op(),
            d.offset(),
            d.size(),
            d.tag(),
            d.error(),
            d.data_len()
        ),
        (0, 0, 0, 0, 0, 0)
    );
    assert_eq!(d.target().as_bytes(), b"");
    assert!(p.data(&r).is_empty());
    p.put(r);
}

#[test]
fn empty_pools_are_busy_errors_not_hangs() {
    let tmp = Tmp::new("busy");
    let seg = create(&tmp);
    let p = seg.bind(1).unwrap();
    let mut held: Vec<_> = (0..16).map(|_| p.get(1).unwrap()).collect();
    assert_eq!(
        p.get(1).unwrap_err(),
        TransportError::Busy("no free request descriptor")
    );
    // Six buffers: four of 4 KiB, two of 8 KiB; small requests spill over
    // into the larger class once the smaller is empty.
    for r in held.iter_mut().take(6) {
        p.alloc_data(r, 100).unwrap();
    }
    assert_eq!(
        p.alloc_data(&mut held[6], 100).unwrap_err(),
        TransportError::Busy("no free data buffer")
    );
    assert!(matches!(
        p.alloc_data(&mut held[6], 8193),
        Err(TransportError::TooLarge(8193, 8192))
    ));
    assert!(matches!(
        p.get(99),
        Err(TransportError::NoSuchPort { port: 99, .. })
    ));
    let report = seg.report();
    let me = report.port_list.iter().find(|x| x.port == 1).unwrap();
    assert_eq!(
        (
            me.requests_in_use,
            me.requests_high_water,
            me.buffers_in_use
        ),
        (16, 16, 6)
    );
    assert!(me.busy_events >= 2);
    assert!(report.buffers.iter().all(|c| c.free == 0));
    for r in held {
        p.put(r);
    }
    let report = seg.report();
    assert_eq!(report.requests_free, 16);
    assert!(report.buffers.iter().all(|c| c.free == c.count));
}

#[test]
fn submitting_to_an_unbound_port_is_an_error_that_returns_the_request() {
    let tmp = Tmp::new("unbound");
    let seg = create(&tmp);
    let p = seg.bind(1).unwrap();
    let r = p.get(3).unwrap();
    let rejected = p.submit(r).unwrap_err();
    assert_eq!(rejected.error, TransportError::NotBound(3));
    p.put(rejected.request);
}

#[test]
fn replies_for_an_earlier_binding_are_dropped_not_delivered() {
    let tmp = Tmp::new("stale");
    let seg = create(&tmp);
    let server = seg.bind(1).unwrap();
    let client = seg.bind(2).unwrap();
    let r = client.get(1).unwrap();
    client.submit(r).unwrap();
    let r = server.accept().unwrap();
    drop(client); // the client goes away with its request in flight
    let client = seg.bind(2).unwrap();
    server.fail(r, code::BUSY).unwrap();
    assert!(client.receive().is_none());
    assert_eq!(seg.report().requests_free, 16);
}

#[test]
fn unbinding_fails_back_accepted_requests_and_puts_back_held_ones() {
    let tmp = Tmp::new("unbind");
    let seg = create(&tmp);
    let client = seg.bind_dynamic().unwrap();
    let server = seg.bind(1).unwrap();
    for _ in 0..3 {
        let mut r = client.get(1).unwrap();
        client.alloc_data(&mut r, 10).unwrap();
        client.submit(r).unwrap();
    }
    // Accepted, and one of its own taken, neither given back.
    let _accepted = server.accept().unwrap();
    let _own = server.get(1).unwrap();
    drop(server);
    let r = client.receive().expect("the accepted request comes back");
    assert_eq!(
        (client.desc(&r).status(), client.desc(&r).error()),
        (status::FAILED, code::PEER_DIED)
    );
    client.put(r);
    let server = seg.bind(1).unwrap();
    let mut n = 0;
    while let Some(r) = server.accept() {
        server.serve(r, 0).unwrap();
        n += 1;
    }
    assert_eq!(n, 2, "queued requests wait for the next owner");
    while let Some(r) = client.receive() {
        client.put(r);
    }
    let report = seg.report();
    assert_eq!(report.requests_free, 16);
    assert!(report.buffers.iter().all(|c| c.free == c.count));
}

#[test]
fn report_serialises_to_json() {
    let tmp = Tmp::new("json");
    let seg = create(&tmp);
    let _p = seg.bind(1).unwrap();
    let v: serde_json::Value = serde_json::to_value(seg.report()).unwrap();
    assert_eq!(v["requests"], 16);
    assert_eq!(v["port_list"][0]["state"], "bound");
    assert_eq!(v["buffers"][1]["size"], 8192);
}

#[test]
fn destroy_leaves_a_segment_being_created_alone_unless_forced() {
    let tmp = Tmp::new("destroy-not-ready");
    std::fs::File::create(&tmp.0).unwrap();
    assert!(matches!(
        Segment::destroy(&tmp.name(), false),
        Err(SegmentError::NotReady { .. })
    ));
    assert!(tmp.0.exists());
    Segment::destroy(&tmp.name(), true).unwrap();
    assert!(!tmp.0.exists());
    assert!(matches!(
        Segment::destroy(&tmp.name(), true),
        Err(SegmentError::NotFound { .. })
    ));
}

#[test]
fn larger_max_buffers_add_classes_of_bounded_size() {
    let c = SegmentConfig::default().with_max_buffer(16 << 20).unwrap();
    assert_eq!(c.max_buffer(), 16 << 20);
    assert_eq!(&c.buffer_counts[10..], &[32, 16, 8]);
    let c = SegmentConfig::default().with_max_buffer(64 << 10).unwrap();
    assert_eq!(c.buffer_counts.len(), 5);
    assert!(SegmentConfig::default().with_max_buffer(3 << 20).is_err());
}

#[test]
fn a_detached_request_is_served_from_another_thread() {
    let tmp = Tmp::new("detach");
    let seg = create(&tmp);
    let server = seg.bind(1).unwrap();
    let client = seg.bind_dynamic().unwrap();
    let mut r = client.get(1).unwrap();
    client.alloc_data(&mut r, 4096).unwrap();
    client.desc(&r).set_tag(5);
    client.submit(r).unwrap();
    let r = server.accept().unwrap();
    let mut detached = server.detach(r);
    let (tx, rx) = std::sync::mpsc::channel();
    let seg2 = seg.clone();
    std::thread::spawn(move || {
        assert_eq!(detached.desc().tag(), 5);
        detached.data_mut().fill(7);
        tx.send(detached).unwrap();
        seg2.wake(1);
    });
    // Sleep until the worker wakes us; the channel is the other work.
    while !server.sleep_unless(|| false) {}
    let r = rx.recv().unwrap().into_request();
    server.serve(r, 4096).unwrap();
    let reply = client.receive().unwrap();
    assert!(client.data(&reply).iter().all(|&b| b == 7));
    client.put(reply);
}

#[test]
fn a_submitted_request_can_be_taken_back_until_accepted() {
    let tmp = Tmp::new("cancel");
    let seg = create(&tmp);
    let server = seg.bind(1).unwrap();
    let client = seg.bind_dynamic().unwrap();
    let r = client.get(1).unwrap();
    let first = r.index();
    client.submit(r).unwrap();
    let back = client.cancel(first).expect("still queued");
    assert!(server.accept().is_none(), "the withdrawn entry is skipped");
    client.submit(back).unwrap();
    let accepted = server.accept().unwrap();
    assert!(
        client.cancel(first).is_none(),
        "accepted: the reply will come"
    );
    assert!(
        server.cancel(first).is_none(),
        "not the server's to take back"
    );
    server.serve(accepted, 0).unwrap();
    let reply = client.receive().unwrap();
    client.put(reply);
    assert_eq!(seg.report().requests_free, 16);
}
