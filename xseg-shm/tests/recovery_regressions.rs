//! Regressions found in review: each test reproduces a kill window or an
//! API misuse that once left a descriptor or a buffer with two owners.
//! Kills are simulated by writing the shared state a killed process leaves
//! behind, with a dead pid as the port's owner.

// Playing a killed process means writing the segment's words from outside
// the crate, with `std`'s atomics: the crate's rule (atomics from its
// `sync` module, see `clippy.toml`) is for the transport's own code.
#![allow(clippy::disallowed_types)]

use std::sync::atomic::Ordering;

use xseg_shm::TransportError;

mod common;
use common::{segment, Raw, Tmp};

#[test]
fn a_clean_unbind_never_takes_a_reply_meant_for_another_port() {
    let t = Tmp::new("steal");
    let seg = segment(&t, 1, vec![]);
    let c = seg.bind_dynamic().unwrap();
    let s = seg.bind_dynamic().unwrap();
    let (d, d2) = (seg.bind(1).unwrap(), seg.bind(2).unwrap());
    let r = c.get(1).unwrap();
    c.submit(r).unwrap();
    let a = d.accept().unwrap();
    d.serve(a, 1).unwrap();
    drop(d); // its clean unbind must not send the reply a second time
    let rep = c.receive().unwrap();
    c.put(rep);
    let r = s.get(2).unwrap();
    s.submit(r).unwrap();
    let a = d2.accept().unwrap();
    d2.serve(a, 7).unwrap();
    drop(c);
    let rep = s.receive().expect("the reply addressed to s reaches s");
    assert_eq!(s.desc(&rep).serviced(), 7);
    s.put(rep);
}

#[test]
fn a_kill_inside_get_sends_no_reply_for_the_descriptors_previous_life() {
    let t = Tmp::new("get");
    let seg = segment(&t, 1, vec![]);
    let raw = Raw::new(&t);
    let s = seg.bind_dynamic().unwrap();
    let d = seg.bind(1).unwrap();
    let r = s.get(1).unwrap();
    s.desc(&r).set_tag(0xDEAD);
    s.submit(r).unwrap();
    let a = d.accept().unwrap();
    d.serve(a, 1).unwrap();
    let rep = s.receive().unwrap();
    s.put(rep);
    // Port 2's process took descriptor 0 (Pooled -> Owned(2)) and was
    // killed before resetting its fields.
    let ticket = raw.u64(seg.layout().requests_off);
    let w = ticket.load(Ordering::SeqCst);
    ticket.store(1 | (2 << 4) | (((w >> 20) + 1) << 20), Ordering::SeqCst);
    raw.kill_owner(&seg, 2);
    let report = seg.recover(2).unwrap();
    assert_eq!(
        (report.failed_back, report.requests_freed),
        (0, 1),
        "{report:?}"
    );
    assert!(
        s.receive().is_none(),
        "a reply for a request already completed"
    );
    assert_eq!(seg.report().requests_free, 1);
}

#[test]
fn a_kill_inside_a_buffer_free_never_fails_back_someone_elses_buffer() {
    let t = Tmp::new("buf");
    let seg = segment(&t, 4, vec![1]);
    let raw = Raw::new(&t);
    let s = seg.bind_dynamic().unwrap();
    let d = seg.bind(1).unwrap();
    let x = seg.bind(2).unwrap();
    let mut r = s.get(1).unwrap();
    s.alloc_data(&mut r, 100).unwrap();
    s.submit(r).unwrap();
    let a = d.accept().unwrap();
    // d's process freed the buffer's owner word and was killed before
    // detaching the handle (the order the code no longer uses, but a
    // corrupt or old peer may leave it so).
    raw.u32(seg.layout().owners_off[0])
        .store(0, Ordering::SeqCst);
    let _accepted = a; // held until the end, as by the killed process
    std::mem::forget(d); // no clean unbind
    raw.kill_owner(&seg, 1);
    let mut xr = x.get(3).unwrap();
    x.alloc_data(&mut xr, 100).unwrap();
    x.data_mut(&mut xr).fill(0xAA);
    seg.recover(1).unwrap();
    let back = s.receive().unwrap();
    assert!(
        s.data(&back).is_empty(),
        "the failed-back request reaches x's buffer"
    );
    assert!(x.data(&xr).iter().all(|&b| b == 0xAA));
    s.put(back);
    x.put(xr);
}

#[test]
fn a_port_with_detached_requests_out_is_left_for_recovery_not_unbound() {
    let t = Tmp::new("det");
    let seg = segment(&t, 4, vec![1]);
    let server = seg.bind(1).unwrap();
    let client = seg.bind_dynamic().unwrap();
    let mut r = client.get(1).unwrap();
    client.alloc_data(&mut r, 4096).unwrap();
    client.submit(r).unwrap();
    let r = server.accept().unwrap();
    let mut det = server.detach(r);
    drop(server);
    assert!(
        client.receive().is_none(),
        "failed back while a worker holds its buffer"
    );
    det.data_mut().fill(1); // still ours alone
    assert_eq!(seg.report().buffers[0].free, 0);
    assert_eq!(seg.live_owner(1), Some(std::process::id()));
}

#[test]
fn a_request_used_with_another_port_is_refused() {
    let t = Tmp::new("wrong-port");
    let seg = segment(&t, 4, vec![]);
    let a = seg.bind(1).unwrap();
    let b = seg.bind(2).unwrap();
    let r = a.get(2).unwrap();
    let index = r.index();
    let rejected = b.submit(r).unwrap_err();
    assert_eq!(rejected.error, TransportError::NotHeld(index));
    b.put(rejected.request); // refused too: a still holds it
    assert_eq!(seg.report().requests_free, 3);
}
