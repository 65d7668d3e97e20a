//! Issue 19, the transport: regressions for the hardening items. Each test
//! failed on the code before its fix. Kills are simulated by writing the
//! shared state a killed process leaves behind (see `common::Raw`); race
//! windows are widened with the crate's test hooks, which act only on the
//! test's own segment.

#![allow(clippy::disallowed_types)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use xseg_shm::hooks::{self, Point};
use xseg_shm::{code, status, PortError, Segment, SegmentConfig};

mod common;
use common::{segment, Raw, Tmp};

/// Widens the window right after a recovery's claim, for segment `t` only.
fn widen_claim_window(t: &Tmp, by: Duration) {
    let mine = t.name();
    hooks::add(Point::RecoveryClaimed, move |name| {
        if *name == mine {
            std::thread::sleep(by);
        }
    });
}

#[test]
fn concurrent_recoverers_of_a_dead_port_never_both_clean_it_up() {
    let t = Tmp::new("i19-recoverers");
    let seg = segment(&t, 8, vec![8]);
    let raw = Raw::new(&t);
    let client = seg.bind_dynamic().unwrap();
    let server = seg.bind(1).unwrap();
    for _ in 0..3 {
        let mut r = client.get(1).unwrap();
        client.alloc_data(&mut r, 10).unwrap();
        client.submit(r).unwrap();
    }
    // The server accepted all three and was killed holding them.
    let held: Vec<_> = (0..3).map(|_| server.accept().unwrap()).collect();
    std::mem::forget(server);
    std::mem::forget(held);
    raw.kill_owner(&seg, 1);

    widen_claim_window(&t, Duration::from_millis(100));
    let n = 4;
    let go = Arc::new(Barrier::new(n));
    let recoverers: Vec<_> = (0..n)
        .map(|_| {
            let (seg, go) = (seg.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                seg.recover(1)
            })
        })
        .collect();
    let results: Vec<_> = recoverers.into_iter().map(|r| r.join().unwrap()).collect();
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "exactly one recoverer cleans up: {results:?}");
    assert_eq!(won[0].failed_back, 3, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, PortError::Recovering { .. }), "{e}");
        }
    }
    // The port is free again, with the dead binding's generation.
    let b = raw.binding(&seg, 1).load(Ordering::SeqCst);
    assert_eq!(b & 0xFFFF_FFFF, 0, "released");
    let mut replies = 0;
    while let Some(r) = client.receive() {
        assert_eq!(client.desc(&r).status(), status::FAILED);
        assert_eq!(client.desc(&r).error(), code::PEER_DIED);
        client.put(r);
        replies += 1;
    }
    assert_eq!(replies, 3, "each request failed back once");
    let report = seg.report();
    assert_eq!(report.requests_free, 8);
    assert_eq!(report.buffers[0].free, 8);
}

#[test]
fn a_request_token_that_outlived_its_port_reaches_nothing() {
    let t = Tmp::new("i19-token");
    let seg = segment(&t, 1, vec![1]);
    let p1 = seg.bind(1).unwrap();
    let mut stale = p1.get(3).unwrap();
    p1.alloc_data(&mut stale, 10).unwrap();
    drop(p1); // puts the descriptor and its buffer back; the token stays
    let p2 = seg.bind(2).unwrap();
    let mut live = p2.get(3).unwrap();
    assert_eq!(live.index(), stale.index(), "the only descriptor");
    p2.alloc_data(&mut live, 10).unwrap();
    p2.data_mut(&mut live).fill(0xAA);
    // The stale token, used with the port that holds the descriptor now:
    // no second `&mut` to the same bytes, no change to them, no free.
    assert!(p2.data_mut(&mut stale).is_empty());
    assert!(p2.data(&stale).is_empty());
    assert_eq!(
        p2.alloc_data(&mut stale, 10),
        Err(xseg_shm::TransportError::NotHeld(stale.index()))
    );
    assert!(p2.set_target(&mut stale, b"x").is_err());
    p2.desc(&stale).set_tag(7);
    assert_eq!(p2.desc(&live).tag(), 0, "writes through it reach no one");
    let det = p2.detach(stale);
    assert!(det.data().is_empty());
    let stale = det.into_request();
    p2.put(stale); // refused: p2 holds the descriptor by `live`
    assert!(p2.data(&live).iter().all(|&b| b == 0xAA));
    assert_eq!(seg.report().requests_free, 0);
    // The same port number bound again (a new generation) does not honour
    // its previous binding's tokens either.
    p2.put(live);
    drop(p2);
    let p1 = seg.bind(1).unwrap();
    let mut old = p1.get(3).unwrap();
    drop(p1);
    let p1 = seg.bind(1).unwrap();
    let mut new = p1.get(3).unwrap();
    assert_eq!(old.index(), new.index());
    p1.alloc_data(&mut new, 10).unwrap();
    assert!(p1.data_mut(&mut old).is_empty());
    p1.put(old);
    assert_eq!(
        seg.report().requests_free,
        0,
        "the old token put nothing back"
    );
    p1.put(new);
    assert_eq!(seg.report().requests_free, 1);
}

#[test]
fn a_forged_ticket_never_gives_two_ports_of_one_process_the_same_descriptor() {
    use xseg_shm::{Phase, Ticket};
    let t = Tmp::new("i19-forged");
    let seg = segment(&t, 2, vec![2]);
    let raw = Raw::new(&t);
    let a = seg.bind(1).unwrap();
    let b = seg.bind(2).unwrap();
    let mut held = a.get(3).unwrap();
    a.alloc_data(&mut held, 16).unwrap();
    a.data_mut(&mut held).fill(0x11);
    let i = held.index();
    // A peer forges a ticket saying descriptor `i` is queued to port b, and
    // pushes it into b's request ring.
    let ticket = raw.ticket(&seg, i);
    let serial = Ticket::from_word(ticket.load(Ordering::SeqCst)).serial;
    ticket.store(Ticket::word(Phase::Queued, 3, serial), Ordering::SeqCst);
    raw.effective_dst(&seg, i).store(2, Ordering::SeqCst);
    raw.ring(&seg, 2, 0).push(i).unwrap();
    match b.accept() {
        None => {}
        Some(mut r) => {
            let other = b.data_mut(&mut r);
            other.fill(0x22);
            panic!("port b took descriptor {i} that port a holds");
        }
    }
    // The same with a forged `Pooled` ticket and a get.
    ticket.store(Ticket::word(Phase::Pooled, 0, serial), Ordering::SeqCst);
    if let Ok(r) = b.get(3) {
        assert_ne!(r.index(), i, "port b got descriptor {i} that port a holds");
        b.put(r);
    }
    assert!(a.data(&held).iter().all(|&x| x == 0x11));
}

#[test]
fn a_forged_buffer_owner_never_gives_two_descriptors_of_one_process_the_same_bytes() {
    let t = Tmp::new("i19-forged-buffer");
    let seg = segment(&t, 2, vec![2]);
    let raw = Raw::new(&t);
    let a = seg.bind(1).unwrap();
    let b = seg.bind(2).unwrap();
    let mut first = a.get(3).unwrap();
    a.alloc_data(&mut first, 16).unwrap();
    a.data_mut(&mut first).fill(0x11);
    let mut second = b.get(3).unwrap();
    // A peer rewrites the first buffer's owner word and the second
    // descriptor's handle: the buffer now "belongs" to the second.
    let l = seg.layout();
    let handle = raw
        .u32(l.requests_off + u64::from(first.index()) * 384 + 64)
        .load(Ordering::SeqCst);
    let index = u64::from(handle & 0xFF_FFFF);
    raw.u32(l.owners_off[0] + 4 * index)
        .store(second.index() + 1, Ordering::SeqCst);
    raw.u32(l.requests_off + u64::from(second.index()) * 384 + 64)
        .store(handle, Ordering::SeqCst);
    raw.u64(l.requests_off + u64::from(second.index()) * 384 + 72)
        .store(16, Ordering::SeqCst); // data_len
    assert!(
        b.data_mut(&mut second).is_empty(),
        "the bytes of the first descriptor's slice, through the second"
    );
    let _ = a.data(&first);
    b.put(second);
    a.put(first);
}

#[test]
fn a_segment_shrunk_while_attaching_is_refused_not_mapped_short() {
    let t = Tmp::new("i19-shrunk");
    drop(segment(&t, 4, vec![4]));
    let path = t.0.clone();
    let mine = t.name();
    hooks::add(Point::AttachStatted, move |name| {
        if *name == mine {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(4096).unwrap(); // the header page only
        }
    });
    match Segment::attach(&t.name(), None) {
        Err(xseg_shm::SegmentError::Corrupt { .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(seg) => panic!(
            "attached, with {} bytes of layout over a 4096-byte file",
            seg.layout().total
        ),
    }
}

#[test]
fn binding_a_port_another_process_recovers_waits_for_the_recovery() {
    let t = Tmp::new("i19-bind-waits");
    let seg = segment(&t, 4, vec![]);
    let raw = Raw::new(&t);
    std::mem::forget(seg.bind(1).unwrap());
    raw.kill_owner(&seg, 1);
    widen_claim_window(&t, Duration::from_millis(300));
    let recoverer = {
        let seg = seg.clone();
        std::thread::spawn(move || seg.recover(1))
    };
    // Wait (with a watchdog) until the port shows "recovering".
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while raw.binding(&seg, 1).load(Ordering::SeqCst) & 0x8000_0000 == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "recovery never claimed"
        );
        std::thread::yield_now();
    }
    let port = seg.bind(1).expect("bind waits for the recovery to end");
    assert!(recoverer.join().unwrap().is_ok());
    assert_eq!(seg.live_owner(1), Some(std::process::id()));
    drop(port);
}

#[test]
fn a_full_reply_ring_during_recovery_delays_the_reply_instead_of_dropping_it() {
    let t = Tmp::new("i19-full-reply");
    let seg = segment(&t, 2, vec![]); // rings of 2 slots
    let raw = Raw::new(&t);
    let client = seg.bind_dynamic().unwrap();
    let server = seg.bind(1).unwrap();
    let r = client.get(1).unwrap();
    client.submit(r).unwrap();
    let accepted = server.accept().unwrap();
    std::mem::forget(server);
    let _held_by_the_killed_process = accepted;
    raw.kill_owner(&seg, 1);
    // The client's reply ring is full of stale entries it has not popped
    // yet (descriptor 1 is pooled: the client skips them).
    let ring = raw.ring(&seg, client.number(), 1);
    ring.push(1).unwrap();
    ring.push(1).unwrap();
    let recoverer = {
        let seg = seg.clone();
        std::thread::spawn(move || seg.recover(1))
    };
    // The client comes round to its ring a little later.
    std::thread::sleep(Duration::from_millis(200));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let reply = loop {
        if let Some(r) = client.receive() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reply: {:?}",
            recoverer.is_finished()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(client.desc(&reply).error(), code::PEER_DIED);
    client.put(reply);
    let report = recoverer.join().unwrap().unwrap();
    assert_eq!((report.failed_back, report.requests_freed), (1, 0));
    assert_eq!(seg.report().requests_free, 2);
}

#[test]
fn a_port_dropped_with_a_detached_request_out_unbinds_when_it_comes_back() {
    let t = Tmp::new("i19-detached");
    let seg = segment(&t, 4, vec![1]);
    let server = seg.bind(1).unwrap();
    let client = seg.bind_dynamic().unwrap();
    let mut r = client.get(1).unwrap();
    client.alloc_data(&mut r, 4096).unwrap();
    client.submit(r).unwrap();
    let r = server.accept().unwrap();
    let mut det = server.detach(r);
    drop(server);
    assert_eq!(seg.live_owner(1), Some(std::process::id()), "still bound");
    let worker = std::thread::spawn(move || {
        det.data_mut().fill(1); // still ours alone
        drop(det);
    });
    worker.join().unwrap();
    assert_eq!(
        seg.live_owner(1),
        None,
        "unbound once the request came back"
    );
    let back = client.receive().expect("failed back by the unbind");
    assert_eq!(client.desc(&back).error(), code::PEER_DIED);
    client.put(back);
    assert_eq!(seg.report().requests_free, 4);
    assert_eq!(seg.report().buffers[0].free, 1);
    seg.bind(1).unwrap();
}

#[test]
fn usage_counters_lose_no_update_when_another_port_puts_back() {
    let t = Tmp::new("i19-counters");
    let seg = segment(&t, 64, vec![64]);
    let client = seg.bind_dynamic().unwrap();
    let server = seg.bind(1).unwrap();
    let me = client.number();
    let rounds = 300_000u32;
    let server = {
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            let mut served = 0;
            while served < rounds {
                assert!(std::time::Instant::now() < deadline, "watchdog");
                match server.accept() {
                    // The server puts the client's request back itself
                    // (as for a request it cannot answer): the client's
                    // counts go down from this thread.
                    Some(r) => {
                        server.put(r);
                        served += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut sent = 0;
    while sent < rounds {
        assert!(std::time::Instant::now() < deadline, "watchdog");
        match client.get(1) {
            Ok(mut r) => {
                let _ = client.alloc_data(&mut r, 1);
                client.submit(r).unwrap();
                sent += 1;
            }
            Err(_) => std::thread::yield_now(),
        }
    }
    server.join().unwrap();
    let report = seg.report();
    let mine = report.port_list.iter().find(|p| p.port == me).unwrap();
    assert_eq!(
        (mine.requests_in_use, mine.buffers_in_use),
        (0, 0),
        "every request and buffer was put back"
    );
    assert_eq!(report.requests_free, 64);
}

#[test]
fn a_process_whose_main_thread_exited_is_alive_while_its_other_threads_run() {
    // A process whose main thread called pthread_exit shows its leader as
    // a zombie in /proc/PID/stat while its other threads still run.
    let script = "import threading, time, ctypes, sys\n\
                  threading.Thread(target=time.sleep, args=(30,)).start()\n\
                  sys.stdout.write('ready\\n'); sys.stdout.flush()\n\
                  ctypes.CDLL(None).pthread_exit(None)\n";
    let Ok(mut child) = std::process::Command::new("python3")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(std::env::var_os("CI").is_none(), "python3 is missing");
        println!("SKIPPED: no python3");
        return;
    };
    let pid = child.id();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    // Wait (with a watchdog) until the leader shows as a zombie.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        if stat[stat.rfind(')').unwrap() + 1..]
            .trim_start()
            .starts_with('Z')
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "leader never exited");
        std::thread::sleep(Duration::from_millis(5));
    }
    let alive = xseg_shm::sys::is_alive(pid, None);
    let start = xseg_shm::sys::process_start_time(pid);
    let _ = child.kill();
    let _ = child.wait();
    assert!(alive, "a live process taken for dead");
    assert!(start.is_some());
}

fn small_config() -> SegmentConfig {
    SegmentConfig {
        ports: 8,
        static_ports: 4,
        requests: 8,
        buffer_counts: vec![4],
        ..Default::default()
    }
}

#[test]
fn a_sealed_segment_cannot_be_resized_by_any_process_that_has_it() {
    let seg = Arc::new(Segment::create_sealed(&small_config()).unwrap());
    let total = seg.layout().total;
    // Any holder of the descriptor (another peer) tries to resize it.
    let other = std::fs::File::from(seg.sealed_fd().unwrap().try_clone_to_owned().unwrap());
    for len in [4096, 0, total * 2] {
        let e = other.set_len(len).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "set_len({len}): {e}");
    }
    assert_eq!(other.metadata().unwrap().len(), total);
    // It still works as a segment.
    let server = seg.bind(1).unwrap();
    let client = seg.bind_dynamic().unwrap();
    let mut r = client.get(1).unwrap();
    client.alloc_data(&mut r, 3).unwrap();
    client.data_mut(&mut r).copy_from_slice(b"abc");
    client.submit(r).unwrap();
    let r = server.accept().unwrap();
    assert_eq!(server.data(&r), b"abc");
    server.serve(r, 3).unwrap();
    let r = client.receive().unwrap();
    client.put(r);
}

#[test]
fn a_sealed_segment_passes_to_another_process_over_a_unix_socket() {
    use std::os::fd::AsFd;
    let seg = Arc::new(Segment::create_sealed(&small_config()).unwrap());
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    assert_eq!(
        xseg_shm::sys::peer_credentials(b.as_fd()).unwrap(),
        (std::process::id(), my_uid_gid().0, my_uid_gid().1),
        "the server checks who asks"
    );
    xseg_shm::sys::send_fd(a.as_fd(), seg.sealed_fd().unwrap()).unwrap();
    let fd = xseg_shm::sys::recv_fd(b.as_fd()).unwrap();
    let theirs = Arc::new(Segment::attach_fd(fd, Some(0)).unwrap());
    assert_eq!(theirs.layout(), seg.layout());
    let server = theirs.bind(1).unwrap();
    let client = seg.bind_dynamic().unwrap();
    let r = client.get(1).unwrap();
    client.desc(&r).set_tag(42);
    client.submit(r).unwrap();
    let r = server.accept().unwrap();
    assert_eq!(server.desc(&r).tag(), 42);
    server.serve(r, 0).unwrap();
    let r = client.receive().unwrap();
    client.put(r);
}

#[test]
fn attach_fd_refuses_a_segment_whose_size_is_not_sealed() {
    let t = Tmp::new("i19-unsealed");
    drop(segment(&t, 4, vec![]));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&t.0)
        .unwrap();
    match Segment::attach_fd(f.into(), None) {
        Err(xseg_shm::SegmentError::Corrupt { what, .. }) => assert!(what.contains("sealed")),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

/// This process's user and group (the owner of `/proc/self`).
fn my_uid_gid() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self").unwrap();
    (m.uid(), m.gid())
}

#[test]
fn an_inherited_sealed_segment_attaches_by_fd_number() {
    use std::os::fd::{AsRawFd, OwnedFd};
    let seg = Arc::new(Segment::create_sealed(&small_config()).unwrap());
    // As a child would have it: a descriptor number, given as `fd:N`.
    let inherited: OwnedFd = seg.sealed_fd().unwrap().try_clone_to_owned().unwrap();
    let name = xseg_shm::SegmentName::parse(&format!("fd:{}", inherited.as_raw_fd())).unwrap();
    assert_eq!(name.to_string(), format!("fd:{}", inherited.as_raw_fd()));
    let theirs = Arc::new(Segment::attach(&name, None).unwrap());
    drop(inherited); // the attachment has its own duplicate
    let port = theirs.bind(2).unwrap();
    assert_eq!(seg.live_owner(2), Some(std::process::id()));
    drop(port);
    assert!(xseg_shm::SegmentName::parse("fd:-1").is_err());
    assert!(xseg_shm::SegmentName::parse("fd:x").is_err());
}
