//! A peer that misses its drain deadline: vlmcd gets SIGTERM with reads in
//! flight that cannot finish (the mapper is stopped), exits 1 after its
//! `--drain-timeout` without unbinding its port, and the next vlmcd
//! recovers the port at its start: every request completes exactly once
//! (those the dead one had accepted with "peer died", those queued
//! meanwhile served by the next owner), and nothing arrives late.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use archipelago_client::{Completion, IoQueue};
use archipelago_e2e::pattern;
use archipelago_e2e::pipeline::{composer, Backend, Pipeline, Proc, VLMCD};
use archipelago_protocol::{Error, ErrorCode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const OBJ: u64 = 64 << 10;
const LEN: usize = 8192;

fn signal(p: &Proc, sig: Signal) {
    kill(Pid::from_raw(p.pid().expect("running") as i32), sig).unwrap();
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn port_state(q: &IoQueue, n: u32) -> (&'static str, u64) {
    let report = q.port().segment().report();
    let p = report.port_list.iter().find(|r| r.port == n).expect("port");
    (p.state, p.requests_queued)
}

#[test]
fn a_peer_past_its_drain_deadline_exits_1_and_the_next_owner_completes_everything_once() {
    let mut p = Pipeline::start("drain", "host-d", &Backend::Memory, &Backend::Memory);
    let c = p.client(Duration::from_secs(20));
    c.create_volume(VLMCD, "vol", 32 * OBJ, Some(OBJ)).unwrap();
    let data = |i: u64| {
        let mut b = vec![0u8; LEN];
        pattern::fill(&mut b, i, 0);
        b
    };
    for i in 0..16 {
        c.volume_write(VLMCD, "vol", i * OBJ, &data(i), false)
            .unwrap();
    }
    // vlmcd with a one-second drain deadline.
    let status = p.vlmcd.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let mut slow = composer(&p.tmp.arg());
    slow.common.drain_timeout = Some(1);
    let mut vlmcd = Proc::start(slow);

    let mut q = IoQueue::connect(&p.tmp.arg())
        .unwrap()
        .with_depth(64)
        .with_timeout(Duration::from_secs(60));
    // Eight reads accepted by vlmcd, stuck at the stopped mapper.
    signal(&p.mapperd, Signal::SIGSTOP);
    for i in 0..8 {
        q.submit_read(VLMCD, "vol", i * OBJ, LEN as u64, i).unwrap();
    }
    wait_for("vlmcd to accept the eight reads", || {
        port_state(&q, VLMCD).1 == 0
    });
    let status = vlmcd.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "past its drain deadline: {status}");
    // It did not unbind: the port waits, dead, for its next owner.
    assert_eq!(port_state(&q, VLMCD).0, "dead");
    // Eight more reads queue at the dead port.
    for i in 8..16 {
        q.submit_read(VLMCD, "vol", i * OBJ, LEN as u64, i).unwrap();
    }
    assert_eq!(port_state(&q, VLMCD).1, 8);
    // (Not a call to complete() before the next owner starts: the queue
    // would recover the dead port itself.)

    // The next owner recovers the port; the mapper goes on.
    signal(&p.mapperd, Signal::SIGCONT);
    let _next = Proc::start(composer(&p.tmp.arg()));
    let mut done: HashMap<u64, Result<Vec<u8>, Error>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.in_flight() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} requests still in flight",
            q.in_flight()
        );
        for Completion { user_tag, result } in q.complete(64, Duration::from_millis(200)) {
            let r = result.map(|d| d.data);
            assert!(
                done.insert(user_tag, r).is_none(),
                "request {user_tag} completed twice"
            );
        }
    }
    assert_eq!(done.len(), 16);
    for i in 0..8 {
        assert_eq!(
            done[&i].as_ref().unwrap_err().code,
            ErrorCode::PeerDied,
            "read {i}, accepted by the vlmcd that exited"
        );
    }
    for i in 8..16 {
        let got = done[&i]
            .as_ref()
            .unwrap_or_else(|e| panic!("read {i}, queued for the next owner: {e}"));
        assert!(got == &data(i), "read {i}");
    }
    // The stopped mapper's late replies went to the dead port's
    // generation: nothing more reaches the client.
    assert!(q.complete(16, Duration::from_millis(300)).is_empty());
    assert!(c.volume_read(VLMCD, "vol", 3 * OBJ, LEN as u64).unwrap() == data(3));
}
