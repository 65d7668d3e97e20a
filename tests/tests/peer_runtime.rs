//! The peer runtime embedded in the test process (`Peer::run_until`):
//! store faults reaching clients as protocol errors through a blocker, and
//! sub-requests to a peer that dies coming back as "peer died".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use archipelago_blockerd::Blocker;
use archipelago_client::Client;
use archipelago_e2e::{Peer as ChildPeer, TempSegment};
use archipelago_peer::{Ctx, Done, Handler, Peer, PeerArgs};
use archipelago_protocol::{Error, ErrorCode, Op, PROTOCOL_VERSION};
use archipelago_store::{Fault, FaultyStore, MemoryStore, ObjectStore, OpKind};
use clap::Parser;
use xseg_shm::{status, Request, Segment, SegmentConfig, SegmentName};

fn segment(tmp: &TempSegment) -> Arc<Segment> {
    let name = SegmentName::parse(&tmp.arg()).unwrap();
    let config = SegmentConfig {
        ports: 40,
        static_ports: 32,
        requests: 128,
        buffer_counts: vec![64, 8],
        protocol_version: PROTOCOL_VERSION,
        ..Default::default()
    };
    Arc::new(Segment::create(&name, &config).unwrap())
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    peer: PeerArgs,
}

fn peer_args(tmp: &TempSegment, port: u32) -> PeerArgs {
    Args::parse_from([
        "peer",
        "--segment",
        &tmp.arg(),
        "--port",
        &port.to_string(),
        "--drain-timeout",
        "5",
    ])
    .peer
}

/// Runs `handler` as a peer on `port` in a thread until `stop` is set.
fn spawn_peer<H: Handler + Send + 'static>(
    tmp: &TempSegment,
    port: u32,
    make: impl FnOnce() -> H + Send + 'static,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<bool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let args = peer_args(tmp, port);
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut peer = Peer::start(&args).unwrap();
        let mut handler = make();
        peer.run_until(&mut handler, || flag.load(Ordering::SeqCst))
            .unwrap()
    });
    (stop, handle)
}

/// Waits (at most 30 s) until the peer on `port`, run by `thread`, answers
/// PING; panics at once if the thread ended (the peer failed to start).
fn wait_ping(client: &Client, port: u32, thread: &std::thread::JoinHandle<bool>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.ping(port).is_err() {
        assert!(
            !thread.is_finished(),
            "the peer on port {port} stopped before answering PING"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the peer on port {port} did not answer PING within 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn store_faults_reach_the_client_as_protocol_errors_and_change_nothing() {
    let tmp = TempSegment::new("faults");
    let _seg = segment(&tmp);
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let inner = store.clone();
    let (stop, peer) = spawn_peer(&tmp, 1, move || {
        Blocker::new(inner as Arc<dyn ObjectStore>, 2)
    });
    let client = Client::connect(&tmp.arg()).unwrap();
    wait_ping(&client, 1, &peer);
    client.write_full(1, "obj", b"before").unwrap();
    store.fail_next(OpKind::WriteFull, Fault::NoSpace);
    let e = client.write_full(1, "obj", b"after!").unwrap_err();
    assert_eq!(e.code, ErrorCode::NoSpace);
    assert!(e.detail.contains("obj"), "the error names the object: {e}");
    store.fail_next(OpKind::Write, Fault::Io);
    assert_eq!(
        client
            .write(1, "obj", 0, b"AFTER!", false)
            .unwrap_err()
            .code,
        ErrorCode::Io
    );
    store.fail_next(OpKind::Copy, Fault::NoSpace);
    assert_eq!(
        client.copy(1, "obj", 0, "copy", 0, 6).unwrap_err().code,
        ErrorCode::NoSpace
    );
    assert_eq!(client.read(1, "obj", 0, 6).unwrap(), b"before");
    assert_eq!(
        client.info(1, "copy").unwrap_err().code,
        ErrorCode::NotFound
    );
    stop.store(true, Ordering::SeqCst);
    assert!(peer.join().unwrap(), "drained cleanly");
}

/// Forwards every request to port `backend` and completes it with the
/// backend's outcome.
struct Forwarder {
    backend: u32,
    kept: std::collections::HashMap<u64, Request>,
    next: u64,
}

impl Handler for Forwarder {
    fn handle(&mut self, ctx: &mut Ctx<'_>, op: Op, req: Request) -> Option<(Request, Done)> {
        let sub = match ctx.port().get(self.backend) {
            Ok(sub) => sub,
            Err(e) => {
                return Some((
                    req,
                    Done::Failed(Error::with(ErrorCode::Busy, e.to_string())),
                ))
            }
        };
        ctx.port().desc(&sub).set_op(op.code());
        self.next += 1;
        if let Err(rejected) = ctx.submit(sub, self.next) {
            ctx.port().put(rejected.request);
            return Some((req, Done::Failed(Error::new(ErrorCode::PeerDied))));
        }
        self.kept.insert(self.next, req);
        None
    }

    fn on_reply(&mut self, ctx: &mut Ctx<'_>, reply: Request, cookie: u64) {
        let d = ctx.port().desc(&reply);
        let done = if d.status() == status::SERVED {
            Done::Served(d.serviced())
        } else {
            Done::Failed(Error::new(ErrorCode::from_code(d.error())))
        };
        ctx.port().put(reply);
        let req = self
            .kept
            .remove(&cookie)
            .expect("a kept request per cookie");
        ctx.complete(req, done);
    }
}

#[test]
fn a_sub_request_to_a_peer_that_dies_comes_back_as_peer_died() {
    let tmp = TempSegment::new("subreq");
    let _seg = segment(&tmp);
    // The backend: a real process that accepts and holds two requests.
    let mut backend = ChildPeer::testpeer(&[
        "--segment",
        &tmp.arg(),
        "server",
        "--port",
        "3",
        "--hold",
        "2",
    ]);
    backend.expect_line("ready", Duration::from_secs(20));
    let (stop, peer) = spawn_peer(&tmp, 2, || Forwarder {
        backend: 3,
        kept: Default::default(),
        next: 0,
    });
    let client = Client::connect(&tmp.arg())
        .unwrap()
        .with_timeout(Duration::from_secs(20));
    wait_ping(&client, 2, &peer);
    // Three calls from three threads: two get accepted and held by the
    // backend, the third waits in its queue.
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let seg = tmp.arg();
            std::thread::spawn(move || {
                let c = Client::connect(&seg)
                    .unwrap()
                    .with_timeout(Duration::from_secs(20));
                c.call(&archipelago_client::Call::new(2, Op::Read, b"x"))
                    .unwrap_err()
                    .code
            })
        })
        .collect();
    backend.expect_line("held 2", Duration::from_secs(20));
    backend.kill9();
    for call in calls {
        assert_eq!(
            call.join().unwrap(),
            ErrorCode::PeerDied,
            "the forwarder's wait ends with peer died"
        );
    }
    stop.store(true, Ordering::SeqCst);
    assert!(peer.join().unwrap());
}
