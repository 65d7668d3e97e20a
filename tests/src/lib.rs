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

/// Path of a binary built from this workspace (`cargo test --workspace`
/// builds them all next to the test executables' parent directory).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
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
