//! `IoQueue` against the whole pipeline as processes (memory backends):
//! many writes then many reads in flight, reads, writes, discards and a
//! flush interleaved, the queue's depth, and peers killed with requests in
//! flight (queued at the peer, or accepted by it): every request completes
//! with "peer died" within a bound, and the queue works again once the
//! peer restarts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use archipelago_client::{Completion, IoQueue};
use archipelago_e2e::pattern;
use archipelago_e2e::pipeline::{Backend, Pipeline, Proc, BLOCKERB, VLMCD};
use archipelago_protocol::{Error, ErrorCode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const SIZE: u64 = 8 << 20;
const OBJ: u64 = 64 << 10;
const LEN: usize = 12_000;

fn start(name: &str) -> Pipeline {
    let p = Pipeline::start(name, "host-q", &Backend::Memory, &Backend::Memory);
    let c = p.client(Duration::from_secs(20));
    c.create_volume(VLMCD, "vol", SIZE, Some(OBJ)).unwrap();
    p
}

fn queue(p: &Pipeline, depth: usize) -> IoQueue {
    IoQueue::connect(&p.tmp.arg())
        .unwrap()
        .with_depth(depth)
        .with_timeout(Duration::from_secs(20))
}

/// Region `i`: some inside one object, some across two.
fn offset(i: u64) -> u64 {
    i * 2 * OBJ + (i % 4) * 20_000
}

fn data(i: u64, salt: u64) -> Vec<u8> {
    let mut buf = vec![0; LEN];
    pattern::fill(&mut buf, i, salt);
    buf
}

/// Collects the completions of everything in flight (at most `bound`).
fn drain(q: &mut IoQueue, bound: Duration) -> HashMap<u64, Result<Vec<u8>, Error>> {
    let deadline = Instant::now() + bound;
    let mut out = HashMap::new();
    while q.in_flight() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} requests still in flight after {bound:?}",
            q.in_flight()
        );
        for Completion { user_tag, result } in q.complete(64, Duration::from_millis(500)) {
            let r = result.map(|d| d.data);
            assert!(out.insert(user_tag, r).is_none(), "tag {user_tag} twice");
        }
    }
    out
}

fn signal(p: &Proc, sig: Signal) {
    kill(Pid::from_raw(p.pid().expect("running") as i32), sig).unwrap();
}

#[test]
fn thirty_two_writes_then_thirty_two_reads_in_flight() {
    let p = start("queue-io");
    let mut q = queue(&p, 32);
    for i in 0..32 {
        q.submit_write(VLMCD, "vol", offset(i), &data(i, 0), false, i)
            .unwrap();
    }
    assert_eq!(q.in_flight(), 32);
    let done = drain(&mut q, Duration::from_secs(30));
    assert_eq!(done.len(), 32);
    for (tag, r) in &done {
        assert_eq!(r.as_ref().unwrap(), &Vec::<u8>::new(), "write {tag}");
    }

    for i in 0..32 {
        q.submit_read(VLMCD, "vol", offset(i), LEN as u64, 100 + i)
            .unwrap();
    }
    assert_eq!(q.in_flight(), 32);
    // Without copying: check the data in the shared buffer.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.in_flight() > 0 {
        assert!(Instant::now() < deadline, "reads did not complete");
        q.complete_with(32, Duration::from_millis(500), |tag, result| {
            let r = result.unwrap_or_else(|e| panic!("read {tag}: {e}"));
            assert_eq!(r.data.len(), LEN);
            assert_eq!(r.serviced, LEN as u64);
            assert_eq!(pattern::check(r.data, tag - 100, 0), Ok(()), "read {tag}");
            seen.push(tag);
        });
    }
    seen.sort_unstable();
    assert_eq!(seen, (100..132).collect::<Vec<_>>());

    // Nothing in flight: complete returns without waiting out its timeout
    // (60 s; half of it is the bound, not a measure of speed).
    let t = Instant::now();
    assert!(q.complete(8, Duration::from_secs(60)).is_empty());
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

#[test]
fn reads_writes_discards_and_a_flush_interleaved() {
    let p = start("queue-mixed");
    let c = p.client(Duration::from_secs(20));
    // Regions 0..16 written beforehand; the queue reads them while it
    // writes regions 16..32 and discards region 40.
    for i in 0..16 {
        c.volume_write(VLMCD, "vol", offset(i), &data(i, 0), false)
            .unwrap();
    }
    c.volume_write(VLMCD, "vol", offset(40), &data(40, 0), false)
        .unwrap();
    let mut q = queue(&p, 64);
    for i in 0..16 {
        q.submit_read(VLMCD, "vol", offset(i), LEN as u64, i)
            .unwrap();
        q.submit_write(
            VLMCD,
            "vol",
            offset(16 + i),
            &data(16 + i, 1),
            i % 3 == 0,
            16 + i,
        )
        .unwrap();
    }
    q.submit_discard(VLMCD, "vol", offset(40), LEN as u64, 40)
        .unwrap();
    // Unwritten space reads as zeros.
    q.submit_read(VLMCD, "vol", offset(50), LEN as u64, 50)
        .unwrap();
    assert_eq!(q.in_flight(), 34);
    let done = drain(&mut q, Duration::from_secs(30));
    assert_eq!(done.len(), 34);
    for i in 0..16 {
        let r = done[&i].as_ref().unwrap();
        assert_eq!(pattern::check(r, i, 0), Ok(()), "read {i}");
        assert!(done[&(16 + i)].as_ref().unwrap().is_empty());
    }
    assert!(done[&40].is_ok(), "discard: {:?}", done[&40]);
    assert_eq!(done[&50].as_ref().unwrap(), &vec![0; LEN]);

    q.submit_flush(VLMCD, "vol", 99).unwrap();
    let done = drain(&mut q, Duration::from_secs(30));
    assert!(done[&99].is_ok(), "flush: {:?}", done[&99]);

    // What the queue wrote and discarded, read back by a plain client.
    for i in 16..32 {
        let got = c.volume_read(VLMCD, "vol", offset(i), LEN as u64).unwrap();
        assert_eq!(pattern::check(&got, i, 1), Ok(()), "region {i}");
    }
    let got = c.volume_read(VLMCD, "vol", offset(40), LEN as u64).unwrap();
    assert!(got == vec![0; LEN], "discarded region reads as zeros");
}

#[test]
fn queue_depth_is_enforced() {
    let p = start("queue-depth");
    let mut q = queue(&p, 4);
    assert_eq!(q.depth(), 4);
    for i in 0..4 {
        q.submit_read(VLMCD, "vol", offset(i), 4096, i).unwrap();
    }
    let e = q.submit_read(VLMCD, "vol", 0, 4096, 9).unwrap_err();
    assert_eq!(e.code, ErrorCode::Busy);
    assert_eq!(q.in_flight(), 4);
    // Replies that arrived still count until they are collected.
    wait_for("the 4 replies to arrive on the queue's port", || {
        port_report(&q, q.port().number()).replies_queued == 4
    });
    assert_eq!(
        q.submit_flush(VLMCD, "vol", 9).unwrap_err().code,
        ErrorCode::Busy
    );
    let got = q.complete(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(q.in_flight(), 3);
    q.submit_read(VLMCD, "vol", 0, 4096, 5).unwrap();
    assert_eq!(
        q.submit_read(VLMCD, "vol", 0, 4096, 6).unwrap_err().code,
        ErrorCode::Busy
    );
    let done = drain(&mut q, Duration::from_secs(30));
    assert_eq!(done.len(), 4);
    assert!(done.values().all(|r| r.as_ref().unwrap() == &vec![0; 4096]));
    assert_eq!(q.in_flight(), 0);
}

/// Every request in flight completes with "peer died" (not by the
/// queue's 20 s timeout), within the bound.
fn all_peer_died(q: &mut IoQueue, n: usize) {
    let done = drain(q, Duration::from_secs(10));
    assert_eq!(done.len(), n);
    for (tag, r) in done {
        assert_eq!(r.unwrap_err().code, ErrorCode::PeerDied, "request {tag}");
    }
}

/// Waits (at most 30 s) until `cond` holds; panics naming `what`.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn port_report(q: &IoQueue, n: u32) -> xseg_shm::PortReport {
    let report = q.port().segment().report();
    report
        .port_list
        .into_iter()
        .find(|r| r.port == n)
        .expect("port")
}

/// Requests waiting in port `n`'s queue.
fn queued_at(q: &IoQueue, n: u32) -> u64 {
    port_report(q, n).requests_queued
}

fn reads_correct(q: &mut IoQueue, n: u64) {
    for i in 0..n {
        q.submit_read(VLMCD, "vol", offset(i), LEN as u64, i)
            .unwrap();
    }
    let done = drain(q, Duration::from_secs(30));
    for i in 0..n {
        let r = done[&i]
            .as_ref()
            .unwrap_or_else(|e| panic!("read {i}: {e}"));
        assert_eq!(pattern::check(r, i, 0), Ok(()), "read {i}");
    }
}

#[test]
fn killed_peers_complete_every_request_with_peer_died() {
    let mut p = start("queue-kill");
    let mut q = queue(&p, 64);
    for i in 0..16 {
        q.submit_write(VLMCD, "vol", offset(i), &data(i, 0), false, i)
            .unwrap();
    }
    assert!(drain(&mut q, Duration::from_secs(30))
        .values()
        .all(Result::is_ok));

    // 16 reads queued at a composer that never takes them: kill -9 it.
    signal(&p.vlmcd, Signal::SIGSTOP);
    for i in 0..16 {
        q.submit_read(VLMCD, "vol", offset(i), LEN as u64, i)
            .unwrap();
    }
    assert!(q.complete(16, Duration::from_millis(300)).is_empty());
    assert_eq!(queued_at(&q, VLMCD), 16);
    p.vlmcd.kill9();
    all_peer_died(&mut q, 16);
    p.vlmcd.restart();
    reads_correct(&mut q, 16);

    // 16 reads the composer accepted (the mapper and the data blocker are
    // stopped, so they wait there): kill -9 it.
    signal(&p.mapperd, Signal::SIGSTOP);
    signal(&p.blockerb, Signal::SIGSTOP);
    for i in 0..16 {
        q.submit_read(VLMCD, "vol", offset(i), LEN as u64, i)
            .unwrap();
    }
    wait_for("the composer to take all 16 reads", || {
        queued_at(&q, VLMCD) == 0
    });
    assert!(q.complete(16, Duration::ZERO).is_empty());
    p.vlmcd.kill9();
    all_peer_died(&mut q, 16);
    signal(&p.mapperd, Signal::SIGCONT);
    signal(&p.blockerb, Signal::SIGCONT);
    p.vlmcd.restart();
    reads_correct(&mut q, 16);

    // Straight to a data blocker, which dies with writes queued.
    signal(&p.blockerb, Signal::SIGSTOP);
    for i in 0..8 {
        let name = format!("obj{i}");
        q.submit_write(BLOCKERB, &name, 0, &data(i, 2), false, i)
            .unwrap();
    }
    p.blockerb.kill9();
    all_peer_died(&mut q, 8);
    p.blockerb.restart();
    q.submit_write(BLOCKERB, "obj0", 0, &data(0, 2), false, 0)
        .unwrap();
    assert!(drain(&mut q, Duration::from_secs(30))[&0].is_ok());
    q.submit_read(BLOCKERB, "obj0", 0, LEN as u64, 1).unwrap();
    let done = drain(&mut q, Duration::from_secs(30));
    assert_eq!(pattern::check(done[&1].as_ref().unwrap(), 0, 2), Ok(()));
}
