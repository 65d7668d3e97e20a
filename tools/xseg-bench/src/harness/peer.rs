//! The peer process: this binary re-executed with a hidden subcommand.
//!
//! The parent builds a [`PeerCommand`] and spawns it, getting a [`Peer`];
//! the child parses the same flags as [`PeerArgs`]. The child gets
//! `PR_SET_PDEATHSIG(SIGKILL)`, its stdout goes to our stderr (so `--json`
//! output stays clean), and every wait on either side is bounded.

use std::os::fd::{AsFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::unistd::Pid;

use super::{pin_to_cpu, Watchdog};

/// Extra time the parent grants the child beyond the child's own deadline.
const GRACE: Duration = Duration::from_secs(2);

/// Flags of the hidden peer subcommand, as written by [`PeerCommand`].
#[derive(clap::Args, Debug, Clone)]
pub struct PeerArgs {
    /// Case to run the peer side of.
    #[arg(long)]
    pub case: String,
    /// CPU to pin to.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Number of round trips to serve (warm-up included).
    #[arg(long)]
    pub rounds: u64,
    /// Give up after this many milliseconds.
    #[arg(long)]
    pub timeout_ms: u64,
    /// Case-specific `key=value` arguments.
    #[arg(long = "arg", value_parser = parse_key_value)]
    pub args: Vec<(String, String)>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    Ok((k.to_owned(), v.to_owned()))
}

impl PeerArgs {
    /// The value of case argument `key`.
    pub fn get(&self, key: &str) -> Result<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| anyhow!("peer {}: missing --arg {key}=...", self.case))
    }

    /// The value of case argument `key`, parsed.
    pub fn parse<T: FromStr>(&self, key: &str) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let v = self.get(key)?;
        v.parse()
            .with_context(|| format!("peer {}: bad --arg {key}={v}", self.case))
    }

    /// Pins to `--cpu` (if given) and returns a watchdog on the parent
    /// bounded by `--timeout-ms`. Call first thing in a case's peer side.
    pub fn setup(&self) -> Watchdog {
        if let Some(cpu) = self.cpu {
            pin_to_cpu(cpu);
        }
        Watchdog::for_parent(Duration::from_millis(self.timeout_ms))
    }
}

/// Builder for the command line of a peer process.
#[derive(Debug, Clone)]
pub struct PeerCommand {
    subcommand: String,
    case: String,
    cpu: Option<usize>,
    rounds: u64,
    timeout: Duration,
    args: Vec<(String, String)>,
    inherit_fds: Vec<RawFd>,
}

impl PeerCommand {
    /// Peer running `<current_exe> <subcommand> --case <case>`; by default
    /// unpinned, 0 rounds, 60 s timeout.
    pub fn new(subcommand: &str, case: &str) -> PeerCommand {
        PeerCommand {
            subcommand: subcommand.to_owned(),
            case: case.to_owned(),
            cpu: None,
            rounds: 0,
            timeout: Duration::from_secs(60),
            args: Vec::new(),
            inherit_fds: Vec::new(),
        }
    }

    /// CPU the child pins itself to.
    pub fn cpu(mut self, cpu: Option<usize>) -> Self {
        self.cpu = cpu;
        self
    }

    /// Round trips the child serves.
    pub fn rounds(mut self, rounds: u64) -> Self {
        self.rounds = rounds;
        self
    }

    /// Bound on the child's lifetime (and on the parent's waits for it).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds case argument `key=value` (read with [`PeerArgs::get`]).
    pub fn arg(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.args.push((key.to_owned(), value.to_string()));
        self
    }

    /// Makes the child inherit `fd` (its `FD_CLOEXEC` is cleared in the child
    /// only). `fd` must stay open until [`spawn`](Self::spawn) returns; pass
    /// its number with [`arg`](Self::arg).
    pub fn inherit_fd(mut self, fd: RawFd) -> Self {
        self.inherit_fds.push(fd);
        self
    }

    /// Starts the child.
    pub fn spawn(self) -> Result<Peer> {
        let exe = std::env::current_exe().context("locating own executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg(&self.subcommand)
            .args(["--case", &self.case])
            .args(["--rounds", &self.rounds.to_string()])
            .args(["--timeout-ms", &self.timeout.as_millis().to_string()]);
        if let Some(cpu) = self.cpu {
            cmd.args(["--cpu", &cpu.to_string()]);
        }
        for (k, v) in &self.args {
            cmd.arg("--arg").arg(format!("{k}={v}"));
        }
        let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
        cmd.stdin(Stdio::null()).stdout(Stdio::from(stderr));
        let fds = self.inherit_fds;
        // SAFETY: the hook runs in the forked child before exec and only
        // makes async-signal-safe syscalls (prctl, fcntl) on plain integers;
        // it neither allocates nor takes locks.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for &fd in &fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning peer for case {}", self.case))?;
        Ok(Peer {
            child: Some(child),
            case: self.case,
            deadline: Instant::now() + self.timeout,
        })
    }
}

/// A running peer process. Dropping it kills and reaps the child.
#[derive(Debug)]
pub struct Peer {
    child: Option<Child>,
    case: String,
    deadline: Instant,
}

impl Peer {
    /// The child's pid.
    pub fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("peer not yet reaped");
        Pid::from_raw(child.id() as i32)
    }

    /// A watchdog on this child, expiring with its timeout.
    pub fn watchdog(&self) -> Watchdog {
        Watchdog::for_child(self.pid(), self.deadline)
    }

    /// Waits (bounded by the timeout plus a grace period) for the child to
    /// exit; errors, after killing it, if it does not, and errors if it
    /// exited unsuccessfully.
    pub fn wait(mut self) -> Result<()> {
        let mut child = self.child.take().expect("peer not yet reaped");
        let limit = self.deadline.max(Instant::now()) + GRACE;
        let mut nap = Duration::from_micros(100);
        loop {
            if let Some(status) = child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                bail!("peer for case {} failed: {status}", self.case);
            }
            if Instant::now() > limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!("peer for case {} did not exit in time; killed", self.case);
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
