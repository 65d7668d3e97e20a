//! Several real processes pass many requests through one segment: every
//! request arrives exactly once with its payload intact, and the pools are
//! full again at the end.

use std::sync::Arc;
use std::time::Duration;

use archipelago_e2e::{assert_nothing_leaked, stop_server, Peer, TempSegment};
use xseg_shm::{Segment, SegmentConfig, SegmentName};

/// Requests per client: over a million in all.
fn per_client() -> u64 {
    if cfg!(debug_assertions) {
        350_000
    } else {
        400_000
    }
}

#[test]
fn three_clients_two_servers_every_request_exactly_once() {
    let tmp = TempSegment::new("mp");
    let name = SegmentName::parse(&tmp.arg()).unwrap();
    let config = SegmentConfig {
        requests: 1024,
        ..Default::default()
    };
    let seg = Arc::new(Segment::create(&name, &config).unwrap());
    let mut servers: Vec<Peer> = [1, 2]
        .iter()
        .map(|p| Peer::testpeer(&["--segment", &tmp.arg(), "server", "--port", &p.to_string()]))
        .collect();
    for s in &servers {
        s.expect_line("ready", Duration::from_secs(20));
    }
    let count = per_client().to_string();
    let mut clients: Vec<Peer> = (0..3)
        .map(|id| {
            Peer::testpeer(&[
                "--segment",
                &tmp.arg(),
                "client",
                "--dst",
                "1,2",
                "--count",
                &count,
                "--in-flight",
                "32",
                "--max-len",
                "8192",
                "--id",
                &id.to_string(),
            ])
        })
        .collect();
    for c in &mut clients {
        let line = c.expect_line("done", Duration::from_secs(300));
        assert_eq!(line, format!("done {count} retried 0"));
        assert!(c.wait_success(Duration::from_secs(20)), "client failed");
    }
    let me = seg.bind_dynamic().unwrap();
    for port in [1, 2] {
        stop_server(&me, port);
    }
    drop(me);
    for s in &mut servers {
        assert!(s.wait_success(Duration::from_secs(20)), "server failed");
    }
    assert_nothing_leaked(&seg);
    let report = seg.report();
    assert!(
        report.port_list.iter().all(|p| p.state == "free"),
        "{:?}",
        report.port_list
    );
}
