//! Crash tests: peers are killed with SIGKILL at known points and at random
//! ones; recovery must fail back what the dead peer held, keep what was
//! queued to it, return its descriptors and buffers, and let the port be
//! bound again. Nothing may leak.

use std::sync::Arc;
use std::time::Duration;

use archipelago_e2e::{
    assert_nothing_leaked, pattern, receive_within, stop_server, workspace_bin, Peer, TempSegment,
};
use xseg_shm::{code, status, PortError, Segment, SegmentConfig, SegmentName};

const WAIT: Duration = Duration::from_secs(30);

fn small_segment(tmp: &TempSegment) -> Arc<Segment> {
    let name = SegmentName::parse(&tmp.arg()).unwrap();
    let config = SegmentConfig {
        ports: 16,
        static_ports: 8,
        requests: 256,
        buffer_counts: vec![64, 32],
        ..Default::default()
    };
    Arc::new(Segment::create(&name, &config).unwrap())
}

fn xseg(args: &[&str]) -> String {
    let out = std::process::Command::new(workspace_bin("xseg"))
        .args(args)
        .output()
        .expect("run xseg");
    assert!(
        out.status.success(),
        "xseg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn server_killed_holding_accepted_requests_fails_them_back_and_keeps_the_queued_ones() {
    let tmp = TempSegment::new("crash-server");
    let seg = small_segment(&tmp);
    let mut server = Peer::testpeer(&[
        "--segment",
        &tmp.arg(),
        "server",
        "--port",
        "1",
        "--hold",
        "8",
        "--own",
        "3",
    ]);
    server.expect_line("ready", WAIT);
    let client = seg.bind_dynamic().unwrap();
    for tag in 0..12u64 {
        let mut r = client.get(1).unwrap();
        client.desc(&r).set_tag(tag);
        client.desc(&r).set_size(4096);
        client.alloc_data(&mut r, 4096).unwrap();
        pattern::fill(client.data_mut(&mut r), tag, 0);
        client.submit(r).unwrap();
    }
    server.expect_line("held 8", WAIT);
    server.kill9();

    let dead = seg
        .report()
        .port_list
        .into_iter()
        .find(|p| p.port == 1)
        .unwrap();
    assert_eq!(dead.state, "dead");
    assert!(matches!(
        seg.bind(1),
        Err(PortError::OwnerDied { port: 1, .. })
    ));
    assert!(seg.report().buffers.iter().any(|c| c.free < c.count));

    let report = seg.recover(1).unwrap();
    assert_eq!(report.failed_back, 8, "{report:?}");
    assert_eq!(
        report.requests_freed, 3,
        "the server's own descriptors: {report:?}"
    );
    let mut failed = Vec::new();
    for _ in 0..8 {
        let r = receive_within(&client, WAIT);
        assert_eq!(client.desc(&r).status(), status::FAILED);
        assert_eq!(client.desc(&r).error(), code::PEER_DIED);
        failed.push(client.desc(&r).tag());
        client.put(r);
    }
    failed.sort();
    assert_eq!(
        failed,
        (0..8).collect::<Vec<_>>(),
        "the first eight were accepted"
    );
    let after = seg
        .report()
        .port_list
        .into_iter()
        .find(|p| p.port == 1)
        .unwrap();
    assert_eq!(
        (after.state, after.requests_queued),
        ("free", 4),
        "queued requests stay for the next owner"
    );

    // The next owner serves what was queued.
    let mut server = Peer::testpeer(&["--segment", &tmp.arg(), "server", "--port", "1"]);
    server.expect_line("ready", WAIT);
    let mut served = Vec::new();
    for _ in 0..4 {
        let r = receive_within(&client, WAIT);
        assert_eq!(client.desc(&r).status(), status::SERVED);
        let tag = client.desc(&r).tag();
        assert_eq!(pattern::check(client.data(&r), tag, 1), Ok(()));
        served.push(tag);
        client.put(r);
    }
    served.sort();
    assert_eq!(served, (8..12).collect::<Vec<_>>());
    stop_server(&client, 1);
    assert!(server.wait_success(WAIT));
    drop(client);
    assert_nothing_leaked(&seg);
}

#[test]
fn client_killed_with_requests_in_flight_leaks_nothing() {
    let tmp = TempSegment::new("crash-client");
    let seg = small_segment(&tmp);
    let server = seg.bind(1).unwrap();
    let mut client = Peer::testpeer(&[
        "--segment",
        &tmp.arg(),
        "client",
        "--dst",
        "1",
        "--count",
        "6",
        "--in-flight",
        "6",
        "--max-len",
        "4096",
        "--hold",
        "--own",
        "2",
    ]);
    client.expect_line("ready", WAIT);
    let accepted: Vec<_> = (0..3)
        .map(|_| server.accept().expect("a queued request"))
        .collect();
    client.kill9();

    // Recovery by hand, as an operator would.
    let out = xseg(&["--segment", &tmp.arg(), "recover", "--dead"]);
    assert!(out.contains("port"), "recover output: {out}");
    // Its queued requests stay in the server's ring; replies to the dead
    // client, for those and for the ones accepted before, go back to the
    // pool instead of to a port nobody reads.
    let mut served = 0;
    for r in accepted
        .into_iter()
        .chain(std::iter::from_fn(|| server.accept()))
    {
        server.serve(r, 0).unwrap();
        served += 1;
    }
    assert_eq!(served, 6);
    let report = seg.report();
    let client_port = report
        .port_list
        .iter()
        .find(|p| p.kind == "dynamic")
        .unwrap();
    assert_eq!((client_port.state, client_port.replies_queued), ("free", 0));
    drop(server);
    assert_nothing_leaked(&seg);
}

#[test]
fn servers_killed_at_random_under_load_lose_no_request() {
    let tmp = TempSegment::new("crash-random");
    let name = SegmentName::parse(&tmp.arg()).unwrap();
    let config = SegmentConfig {
        ports: 32,
        static_ports: 8,
        requests: 512,
        ..Default::default()
    };
    let seg = Arc::new(Segment::create(&name, &config).unwrap());
    let start_server = |port: u32| {
        let p = Peer::testpeer(&[
            "--segment",
            &tmp.arg(),
            "server",
            "--port",
            &port.to_string(),
        ]);
        p.expect_line("ready", WAIT);
        p
    };
    let mut servers = vec![start_server(1), start_server(2)];
    let count = if cfg!(debug_assertions) {
        300_000
    } else {
        1_000_000
    };
    let mut clients: Vec<Peer> = (0..2)
        .map(|id| {
            Peer::testpeer(&[
                "--segment",
                &tmp.arg(),
                "client",
                "--dst",
                "1,2",
                "--count",
                &count.to_string(),
                "--in-flight",
                "24",
                "--id",
                &id.to_string(),
                "--max-len",
                "4096",
                "--retry",
            ])
        })
        .collect();
    // Kill a server at pseudo-random moments, recover its port and restart
    // it while the clients keep going, three times. A random kill may find
    // the server between two requests; so each round also puts on the port
    // a server that accepts four requests and holds them, and kills it:
    // that kill hits four requests in flight for sure (failed back as
    // "peer died").
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let (mut kills, mut failed_back) = (0u64, 0u64);
    for round in 0..3 {
        // The pause before each kill is the randomness, not
        // synchronisation.
        seed = pattern::mix(seed);
        std::thread::sleep(Duration::from_millis(20 + seed % 80));
        for c in &mut clients {
            assert!(
                c.child.try_wait().unwrap().is_none(),
                "clients must still be running at each kill"
            );
        }
        let victim = round % 2;
        servers[victim].kill9();
        let port = victim as u32 + 1;
        let report = seg.recover(port).unwrap();
        assert!(report.dead_pid != 0, "{report:?}");
        failed_back += u64::from(report.failed_back);
        let mut holder = Peer::testpeer(&[
            "--segment",
            &tmp.arg(),
            "server",
            "--port",
            &port.to_string(),
            "--hold",
            "4",
        ]);
        holder.expect_line("ready", WAIT);
        holder.expect_line("held 4", WAIT);
        holder.kill9();
        let report = seg.recover(port).unwrap();
        assert_eq!(report.failed_back, 4, "the held requests: {report:?}");
        failed_back += 4;
        kills += 2;
        servers[victim] = start_server(port);
    }
    // Every request failed back was retried by its client, and only those.
    let mut retried = 0;
    for c in &mut clients {
        let line = c.expect_line("done", Duration::from_secs(300));
        let rest = line
            .strip_prefix(&format!("done {count} retried "))
            .unwrap_or_else(|| panic!("{line}"));
        retried += rest.trim().parse::<u64>().unwrap();
        assert!(c.wait_success(WAIT), "client failed");
    }
    assert_eq!(
        retried, failed_back,
        "requests retried by the clients vs failed back by the recoveries"
    );
    let me = seg.bind_dynamic().unwrap();
    for port in [1, 2] {
        stop_server(&me, port);
    }
    for s in &mut servers {
        assert!(s.wait_success(WAIT));
    }
    drop(me);
    assert_nothing_leaked(&seg);
    assert_eq!(
        seg.report()
            .port_list
            .iter()
            .map(|p| p.recoveries)
            .sum::<u64>(),
        kills
    );
}
