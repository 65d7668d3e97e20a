//! Helpers shared by the end-to-end tests: payload patterns, locating the
//! workspace's binaries, and child processes with watchdogs.

pub mod pattern {
    //! Self-checking payloads: every byte depends on the request's tag, the
    //! byte's position and a salt (0 for requests, 1 for replies).

    /// A cheap 64-bit mix (splitmix64's finaliser).
    pub fn mix(mut x: u64) -> u64 {
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn byte(seed: u64, i: usize) -> u8 {
        (seed.rotate_left((i % 64) as u32) ^ (i as u64 / 64)) as u8
    }

    /// Fills `buf` with the pattern of (`tag`, `salt`).
    pub fn fill(buf: &mut [u8], tag: u64, salt: u64) {
        let seed = mix(tag ^ (salt << 63));
        for (i, b) in buf.iter_mut().enumerate() {
            *b = byte(seed, i);
        }
    }

    /// Checks `buf`; the error is the first differing position.
    pub fn check(buf: &[u8], tag: u64, salt: u64) -> Result<(), usize> {
        let seed = mix(tag ^ (salt << 63));
        match buf.iter().enumerate().find(|&(i, &b)| b != byte(seed, i)) {
            Some((i, _)) => Err(i),
            None => Ok(()),
        }
    }
}

use std::io::{BufRead, BufReader};
use std::time::Instant;

use xseg_shm::{Port, Request, Segment};

/// Op code that asks an `xseg-testpeer` server to exit.
pub const OP_STOP: u32 = 0xDEAD;

/// Waits (at most `timeout`) for a reply on `port`; panics on timeout.
pub fn receive_within(port: &Port, timeout: Duration) -> Request {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = port.receive() {
            return r;
        }
        assert!(Instant::now() < deadline, "no reply within {timeout:?}");
        port.sleep();
    }
}

/// Asks the `xseg-testpeer` server on port `server` to exit, from `client`,
/// and waits for its answer.
pub fn stop_server(client: &Port, server: u32) {
    let r = client.get(server).expect("a free descriptor");
    client.desc(&r).set_op(OP_STOP);
    client.submit(r).expect("submit stop");
    let reply = receive_within(client, Duration::from_secs(30));
    client.put(reply);
}

/// Asserts every descriptor and buffer of `seg` is back in its pool.
pub fn assert_nothing_leaked(seg: &Segment) {
    let report = seg.report();
    assert_eq!(
        report.requests_free, report.requests,
        "descriptors leaked: {report:#?}"
    );
    for class in &report.buffers {
        assert_eq!(
            class.free, class.count,
            "buffers of {} bytes leaked",
            class.size
        );
    }
}
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The directory of the binaries built from this workspace (`cargo test
/// --workspace` builds them all next to the test executables' parent
/// directory).
pub fn workspace_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target profile dir")
        .to_path_buf()
}

/// Path of a binary built from this workspace (see [`workspace_bin_dir`]).
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = workspace_bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// Whether every one of `tools` (external programs a test drives, such as
/// the NBD clients) runs here. The rule is the RADOS tests' one
/// (`archipelago_rados::testenv::cluster`): when one is missing the test
/// **fails** under CI (`CI` set: `.ci/run` installs them), and elsewhere
/// it prints `SKIPPED` with what to install and the caller returns.
pub fn tools_present(test: &str, tools: &[&str], package: &str) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| Command::new(t).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: {} not installed, required under CI (.ci/run installs {package})",
            missing.join(", ")
        );
    }
    eprintln!(
        "{test}: SKIPPED: {} not installed (install {package})",
        missing.join(", ")
    );
    false
}

/// A unique private segment path for one test, removed on drop.
pub struct TempSegment {
    /// The path.
    pub path: PathBuf,
}

impl TempSegment {
    /// A fresh path for test `name`.
    pub fn new(name: &str) -> TempSegment {
        let path = std::env::temp_dir().join(format!("xseg-e2e-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempSegment { path }
    }

    /// The path as a string.
    pub fn arg(&self) -> String {
        self.path.to_str().expect("utf-8 temp path").to_owned()
    }
}

impl Drop for TempSegment {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A child process whose stdout lines arrive on a channel, killed on drop.
pub struct Peer {
    /// The child.
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    /// Starts `xseg-testpeer` with `args`.
    pub fn testpeer(args: &[&str]) -> Peer {
        let mut child = Command::new(workspace_bin("xseg-testpeer"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn xseg-testpeer");
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { child, lines }
    }

    /// Waits (at most `timeout`) for a line starting with `prefix`;
    /// returns it. Panics on timeout or exit.
    pub fn expect_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("waiting for {prefix:?} from pid {}: {e}", self.child.id()),
            }
        }
    }

    /// Kills with SIGKILL and reaps.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for exit (at most `timeout`, then kills) and returns whether it
    /// succeeded.
    pub fn wait_success(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            if std::time::Instant::now() > deadline {
                self.kill9();
                panic!("pid {} did not exit within {timeout:?}", self.child.id());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill9();
        }
    }
}

pub mod pipeline {
    //! The whole volume pipeline as processes on a private segment: two
    //! `blockerd`s (data on [`BLOCKERB`], maps and locks on [`BLOCKERM`]),
    //! `mapperd` on [`MAPPER`] and `vlmcd` on [`VLMCD`]. Every peer can be
    //! stopped (SIGTERM), killed (SIGKILL) and restarted with its original
    //! launch description ([`archipelago_peer::launch`]); [`common`],
    //! [`blocker`], [`memory_blocker`], [`mapper`] and [`composer`]
    //! describe the peers the tests start.

    use std::path::PathBuf;
    use std::process::{Child, ExitStatus};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use archipelago_client::Client;
    use archipelago_peer::launch::{
        Blocker, Common, Composer, Files, Launch, Mapper, Rados, Store,
    };
    use archipelago_protocol::PROTOCOL_VERSION;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use xseg_shm::{Segment, SegmentConfig, SegmentName};

    use crate::{workspace_bin, TempSegment};

    /// Port of the data blocker.
    pub const BLOCKERB: u32 = 1;
    /// Port of the map (and lock) blocker.
    pub const BLOCKERM: u32 = 2;
    /// Port of the mapper.
    pub const MAPPER: u32 = 3;
    /// Port of the composer.
    pub const VLMCD: u32 = 4;

    /// Creates the segment at `tmp` (buffers up to 4 MiB).
    pub fn segment(tmp: &TempSegment) -> Arc<Segment> {
        let name = SegmentName::parse(&tmp.arg()).unwrap();
        let config = SegmentConfig {
            ports: 64,
            static_ports: 16,
            requests: 1024,
            buffer_counts: vec![1024, 256, 128, 64, 64, 32, 16, 16, 8, 4, 4],
            protocol_version: PROTOCOL_VERSION,
            ..Default::default()
        };
        Arc::new(Segment::create(&name, &config).unwrap())
    }

    /// The options of a test's peer: `port` of `segment`, logging warnings
    /// and errors only.
    pub fn common(segment: &str, port: u32) -> Common {
        Common {
            log_level: Some(log::Level::Warn),
            ..Common::new(segment, port)
        }
    }

    /// A blocker on `port` keeping its objects in `backend`; on RADOS it
    /// registers as `member` of `host`.
    pub fn blocker(
        segment: &str,
        port: u32,
        backend: &Backend,
        host: &str,
        member: &str,
    ) -> Blocker {
        let mut common = common(segment, port);
        let store = match backend {
            Backend::Memory => Store::Memory,
            Backend::Files(dir) => Store::Files(Files::new(dir)),
            // Two hosts' blockers over one directory: no cached file
            // handles (one would keep serving a replaced header).
            Backend::SharedFiles(dir) => Store::Files(Files {
                fd_cache: Some(0),
                ..Files::new(dir)
            }),
            Backend::Rados {
                conf,
                pool,
                namespace,
            } => {
                common.host_id = Some(host.to_owned());
                Store::Rados(Rados {
                    ceph_conf: Some(conf.clone()),
                    namespace: Some(namespace.clone()),
                    member: Some(member.to_owned()),
                    op_timeout: Some(20),
                    // Tests of fencing wait for the reconnection.
                    fence_quarantine: Some(2),
                    ..Rados::new(pool)
                })
            }
        };
        Blocker { common, store }
    }

    /// A blocker on `port` keeping its objects in memory.
    pub fn memory_blocker(segment: &str, port: u32) -> Blocker {
        blocker(segment, port, &Backend::Memory, "localhost", "blocker")
    }

    /// A mapper on `port` as `host`, over the blockers on [`BLOCKERM`] and
    /// [`BLOCKERB`].
    pub fn mapper(segment: &str, port: u32, host: &str) -> Mapper {
        Mapper {
            common: Common {
                host_id: Some(host.to_owned()),
                ..common(segment, port)
            },
            blockerm_port: BLOCKERM,
            blockerb_port: BLOCKERB,
            cache_mib: None,
            null: false,
            write_back: false,
        }
    }

    /// The composer on [`VLMCD`] over the mapper on [`MAPPER`] and the
    /// data blocker on [`BLOCKERB`].
    pub fn composer(segment: &str) -> Composer {
        Composer {
            common: common(segment, VLMCD),
            mapper_port: MAPPER,
            blockerb_port: BLOCKERB,
        }
    }

    /// A peer process, killed on drop; restartable as it was launched.
    pub struct Proc {
        child: Option<Child>,
        launch: Launch,
    }

    impl Proc {
        /// Starts the peer `launch` describes and waits until it answers
        /// PING.
        pub fn start(launch: impl Into<Launch>) -> Proc {
            let mut p = Proc {
                child: None,
                launch: launch.into(),
            };
            p.restart();
            p
        }

        /// The peer's binary.
        pub fn bin(&self) -> &'static str {
            self.launch.binary()
        }

        /// Starts the process again (it must not be running).
        pub fn restart(&mut self) {
            assert!(self.child.is_none(), "{} is running", self.bin());
            let bin = workspace_bin(self.bin());
            let child = self
                .launch
                .command(bin.parent().expect("the binaries' directory"))
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin()));
            self.child = Some(child);
            self.wait_ready();
        }

        fn wait_ready(&mut self) {
            let bin = self.bin();
            let common = self.launch.common();
            let client = Client::connect(&common.segment)
                .unwrap()
                .with_timeout(Duration::from_secs(5));
            let deadline = Instant::now() + Duration::from_secs(30);
            while client.ping(common.port).is_err() {
                let child = self.child.as_mut().expect("running");
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("{bin} exited: {status}");
                }
                assert!(Instant::now() < deadline, "{bin} did not answer PING");
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// The process id, if running.
        pub fn pid(&self) -> Option<u32> {
            self.child.as_ref().map(Child::id)
        }

        /// Panics unless the process is still running (not merely
        /// started: a dead child is reaped and its exit status shown).
        pub fn assert_running(&mut self) {
            let bin = self.bin();
            let child = self
                .child
                .as_mut()
                .unwrap_or_else(|| panic!("{bin} was stopped"));
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{bin} is no longer running: {status}");
            }
        }

        /// Sends SIGTERM and waits (at most `timeout`) for the exit.
        pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
            let mut child = self.child.take().expect("running");
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{} did not exit within {timeout:?} of SIGTERM", self.bin());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// Kills with SIGKILL and reaps.
        pub fn kill9(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for Proc {
        fn drop(&mut self) {
            self.kill9();
        }
    }

    /// Where a blocker keeps its objects.
    #[derive(Debug, Clone)]
    pub enum Backend {
        /// In memory (lost when the process exits).
        Memory,
        /// One file per object under this directory.
        Files(PathBuf),
        /// The same, for a directory several blockers share (two "hosts"
        /// on one pool): no cached descriptors (`--fd-cache 0`), which
        /// would keep serving a file another process replaced.
        SharedFiles(PathBuf),
        /// A RADOS pool (see `archipelago_rados::testenv`).
        Rados {
            /// The cluster's `ceph.conf`.
            conf: PathBuf,
            /// The pool.
            pool: String,
            /// The namespace (one per test).
            namespace: String,
        },
    }

    /// The four peers on their own segment. Fields drop in order: the
    /// peers first, then the segment.
    pub struct Pipeline {
        /// The composer.
        pub vlmcd: Proc,
        /// The mapper.
        pub mapperd: Proc,
        /// The map blocker.
        pub blockerm: Proc,
        /// The data blocker.
        pub blockerb: Proc,
        _seg: Arc<Segment>,
        /// The segment's path.
        pub tmp: TempSegment,
    }

    impl Pipeline {
        /// Starts everything: data on `data`, maps on `maps`, the mapper
        /// as `host_id`.
        pub fn start(name: &str, host_id: &str, data: &Backend, maps: &Backend) -> Pipeline {
            let tmp = TempSegment::new(name);
            let seg = segment(&tmp);
            let s = tmp.arg();
            let blockerb = Proc::start(blocker(&s, BLOCKERB, data, host_id, "blockerb"));
            let blockerm = Proc::start(blocker(&s, BLOCKERM, maps, host_id, "blockerm"));
            let mapperd = Proc::start(mapper(&s, MAPPER, host_id));
            let vlmcd = Proc::start(composer(&s));
            Pipeline {
                vlmcd,
                mapperd,
                blockerm,
                blockerb,
                _seg: seg,
                tmp,
            }
        }

        /// A new client on the segment with a `timeout` per call.
        pub fn client(&self, timeout: Duration) -> Client {
            Client::connect(&self.tmp.arg())
                .unwrap()
                .with_timeout(timeout)
        }

        /// The peers from the top of the stack down.
        pub fn peers(&mut self) -> [&mut Proc; 4] {
            [
                &mut self.vlmcd,
                &mut self.mapperd,
                &mut self.blockerm,
                &mut self.blockerb,
            ]
        }

        /// SIGTERM to every peer, top down; each must exit successfully.
        pub fn terminate_all(&mut self) {
            for p in self.peers() {
                let bin = p.bin();
                let status = p.terminate(Duration::from_secs(30));
                assert!(status.success(), "{bin} exited with {status} on SIGTERM");
            }
        }

        /// SIGKILL to every peer.
        pub fn kill9_all(&mut self) {
            for p in self.peers() {
                p.kill9();
            }
        }

        /// Restarts every peer, bottom up.
        pub fn restart_all(&mut self) {
            let [v, m, bm, bb] = self.peers();
            for p in [bb, bm, m, v] {
                p.restart();
            }
        }
    }
}
