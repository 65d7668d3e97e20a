//! Files under the run and log directories, process liveness, and the
//! supervisor's state file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use archipelago_config::Config;
use archipelago_protocol::Role;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use xseg_shm::Segment;

/// The roles this tool runs, in start order.
pub const ROLES: [Role; 5] = Role::ALL;

/// Parses a role name (for clap).
pub fn parse_role(s: &str) -> Result<Role, String> {
    ROLES.into_iter().find(|r| r.name() == s).ok_or_else(|| {
        format!("unknown role {s:?} (expected blockerb, blockerm, mapperd, vlmcd or nbdd)")
    })
}

/// `<run_dir>/<role>.pid`.
pub fn role_pidfile(c: &Config, role: Role) -> PathBuf {
    c.paths.run_dir.join(format!("{role}.pid"))
}

/// `<log_dir>/<role>.log`.
pub fn role_log(c: &Config, role: Role) -> PathBuf {
    c.paths.log_dir.join(format!("{role}.log"))
}

/// `<run_dir>/supervisor.pid`.
pub fn supervisor_pidfile(c: &Config) -> PathBuf {
    c.paths.run_dir.join("supervisor.pid")
}

/// Takes the exclusive `flock` of `<run_dir>/<name>.lock` (created if
/// missing), waiting for it if `wait`, else `None` while another process
/// holds it. Released when the returned value drops (or the process
/// dies).
pub fn lock_file(
    c: &Config,
    name: &str,
    wait: bool,
) -> std::io::Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    use nix::fcntl::{Flock, FlockArg};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(c.paths.run_dir.join(format!("{name}.lock")))?;
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    match Flock::lock(file, arg) {
        Ok(held) => Ok(Some(held)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// `<run_dir>/supervisor.json`: what the supervisor is doing.
pub fn state_file(c: &Config) -> PathBuf {
    c.paths.run_dir.join("supervisor.json")
}

/// `<log_dir>/supervisor.log`.
pub fn supervisor_log(c: &Config) -> PathBuf {
    c.paths.log_dir.join("supervisor.log")
}

/// Whether `pid` is a live process (zombies are dead).
pub fn alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    if kill(Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => true,
    }
}

/// Whether live process `pid` runs the executable `name`.
fn runs(pid: u32, name: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => {
            let comm = comm.trim_end();
            // comm is cut at 15 bytes.
            !comm.is_empty() && name.starts_with(comm)
        }
        Err(_) => true,
    }
}

/// The pid in `path`, if the file holds one of a live process running
/// `exe` (a stale file of a dead process is ignored).
pub fn read_pidfile(path: &Path, exe: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (alive(pid) && runs(pid, exe)).then_some(pid)
}

/// Writes `pid` to `path` (atomically).
pub fn write_pidfile(path: &Path, pid: u32) -> Result<()> {
    write_atomic(path, format!("{pid}\n").as_bytes())
}

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The pid of `role`'s peer if it runs: the live owner of its port, else
/// a live process named in its pid file (still starting, not bound yet).
pub fn role_pid(c: &Config, seg: Option<&Segment>, role: Role) -> Option<u32> {
    if let Some(pid) = seg.and_then(|s| s.live_owner(c.port(role))) {
        if alive(pid) {
            return Some(pid);
        }
    }
    read_pidfile(&role_pidfile(c, role), Config::binary(role))
}

/// The supervisor's pid if it runs.
pub fn supervisor_pid(c: &Config) -> Option<u32> {
    read_pidfile(&supervisor_pidfile(c), "archipelago")
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

/// Waits until `pid` is gone; false on timeout.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// SIGTERM, wait up to `timeout`, then SIGKILL. Returns false if it had
/// to be killed.
pub fn terminate(pid: u32, timeout: Duration) -> bool {
    signal(pid, Signal::SIGTERM);
    if wait_gone(pid, timeout) {
        return true;
    }
    signal(pid, Signal::SIGKILL);
    wait_gone(pid, Duration::from_secs(5));
    false
}

/// The last `n` lines of `path` (empty if unreadable).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut lines: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for line in BufReader::new(f).lines().map_while(Result::ok) {
        if lines.len() == n {
            lines.pop_front();
        }
        lines.push_back(line);
    }
    lines.into()
}

/// Where the supervisor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Starting the roles for the first time.
    Starting,
    /// Every role answered PING once.
    Ready,
    /// A role could not be started; the supervisor exited.
    Failed,
}

/// One supervised role.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleState {
    /// The role's name.
    pub role: String,
    /// Its current pid.
    pub pid: Option<u32>,
    /// How often the supervisor restarted it.
    pub restarts: u32,
    /// starting, running, waiting (to restart) or failed (gave up).
    pub status: String,
}

/// The supervisor's state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// The supervisor's pid.
    pub pid: u32,
    /// Where it is.
    pub phase: Phase,
    /// Why it failed (names the role).
    pub error: Option<String>,
    /// The role that failed to start.
    pub failed_role: Option<String>,
    /// Its roles, in start order.
    pub roles: Vec<RoleState>,
}

impl State {
    /// Reads the state file, if there is a valid one.
    pub fn read(c: &Config) -> Option<State> {
        let text = std::fs::read(state_file(c)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes the state file.
    pub fn write(&self, c: &Config) -> Result<()> {
        write_atomic(&state_file(c), &serde_json::to_vec_pretty(self)?)
    }

    /// The roles it supervises.
    pub fn supervised(&self) -> Vec<Role> {
        ROLES
            .into_iter()
            .filter(|r| self.roles.iter().any(|s| s.role == r.name()))
            .collect()
    }

    /// Restarts of `role`.
    pub fn restarts(&self, role: Role) -> u32 {
        self.roles
            .iter()
            .find(|s| s.role == role.name())
            .map_or(0, |s| s.restarts)
    }
}
