//! The supervisor: a detached process that starts the roles, waits for
//! each to answer PING, and restarts a role that dies (with back-off;
//! it gives up on a role after [`MAX_CRASHES`] crashes within
//! [`CRASH_WINDOW`]). It also PINGs every running role each
//! [`PING_EVERY`] and kills (then restarts, as any crash) one that has not
//! answered for `[supervisor] hang_timeout` seconds: a hung peer
//! (stopped, deadlocked) would otherwise hold every request sent to it
//! forever. SIGTERM (its default
//! action) stops it and leaves the roles running: `archipelago stop`
//! stops them afterwards.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use archipelago_client::Client;
use archipelago_config::Config;
use archipelago_protocol::{Role, PROTOCOL_VERSION};
use xseg_shm::Segment;

use crate::procs::{self, Phase, RoleState, State};

/// Crashes within [`CRASH_WINDOW`] after which a role is given up.
pub const MAX_CRASHES: usize = 5;
/// See [`MAX_CRASHES`].
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// How long a role may take to answer its first PING.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the supervisor looks at its roles.
const POLL: Duration = Duration::from_millis(100);
/// How often it PINGs each running role.
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long one PING may wait for its answer.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Logs a line to the supervisor's stderr (its log file).
fn log(msg: &str) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!("[{}.{:03}] {msg}", t.as_secs(), t.subsec_millis());
}

/// Back-off before restart number `crashes` (within the window): 0.5 s,
/// doubling, at most 8 s.
pub fn backoff(crashes: usize) -> Duration {
    let shift = crashes.saturating_sub(1).min(4) as u32;
    Duration::from_millis(500 << shift)
}

enum Proc {
    /// Started by this supervisor.
    Child(Child),
    /// Found running when the supervisor started.
    Adopted(u32),
}

struct Slot {
    role: Role,
    proc: Option<Proc>,
    restarts: u32,
    crashes: VecDeque<Instant>,
    restart_at: Option<Instant>,
    gave_up: bool,
    /// Since when its PINGs have gone unanswered.
    silent_since: Option<Instant>,
}

impl Slot {
    fn pid(&self) -> Option<u32> {
        match &self.proc {
            Some(Proc::Child(c)) => Some(c.id()),
            Some(Proc::Adopted(pid)) => Some(*pid),
            None => None,
        }
    }
}

/// Starts `role`'s peer with its output appended to its log file.
pub fn spawn(c: &Config, bin_dir: &Path, role: Role) -> Result<Child> {
    let log_path = procs::role_log(c, role);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("{role}: cannot open {}", log_path.display()))?;
    let err = out.try_clone()?;
    let mut command = c.launch(role).command(bin_dir);
    let bin = PathBuf::from(command.get_program());
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("{role}: cannot run {}", bin.display()))
}

/// Waits until `role` answers PING; fails if the child exits first.
fn wait_ready(c: &Config, role: Role, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let port = c.port(role);
    let mut client = None;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{role} exited ({status}) before answering PING");
        }
        if client.is_none() {
            client = Client::connect(&c.segment.name)
                .ok()
                .map(|cl| cl.with_timeout(Duration::from_secs(1)));
        }
        if let Some(cl) = &client {
            if cl.ping(port).is_ok() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{role} did not answer PING on port {port} within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `role` and waits until it is ready; writes its pid file.
fn start_role(c: &Config, bin_dir: &Path, seg: &Segment, role: Role) -> Result<Child> {
    let port = c.port(role);
    if let Some(pid) = seg.dead_owner(port) {
        match seg.recover(port) {
            Ok(r) => log(&format!(
                "{role}: recovered port {port} of dead pid {pid}: {r:?}"
            )),
            Err(e) => log(&format!("{role}: recovering port {port}: {e}")),
        }
    }
    let mut child = spawn(c, bin_dir, role)?;
    log(&format!("{role}: started pid {}", child.id()));
    wait_ready(c, role, &mut child)?;
    procs::write_pidfile(&procs::role_pidfile(c, role), child.id())?;
    log(&format!("{role}: ready (pid {})", child.id()));
    Ok(child)
}

fn write_state(c: &Config, phase: Phase, error: Option<(Role, String)>, slots: &[Slot]) {
    let state = State {
        pid: std::process::id(),
        phase,
        failed_role: error.as_ref().map(|(r, _)| r.name().to_owned()),
        error: error.map(|(_, e)| e),
        roles: slots
            .iter()
            .map(|s| RoleState {
                role: s.role.name().to_owned(),
                pid: s.pid(),
                restarts: s.restarts,
                status: if s.gave_up {
                    "failed"
                } else if s.proc.is_some() {
                    "running"
                } else if s.restart_at.is_some() {
                    "waiting"
                } else {
                    "starting"
                }
                .to_owned(),
            })
            .collect(),
    };
    if let Err(e) = state.write(c) {
        log(&format!("cannot write the state file: {e:#}"));
    }
}

/// Runs the supervisor for `roles` (never returns unless start-up fails).
pub fn run(c: &Config, roles: &[Role]) -> Result<()> {
    let _ = nix::unistd::setsid();
    let bin_dir = crate::bin_dir()?;
    // One supervisor per run directory, for its whole life: a second one
    // would start every role again and, failing, remove the first's pid
    // file.
    let _only = procs::lock_file(c, "supervisor", false)
        .with_context(|| format!("cannot lock {}", c.paths.run_dir.display()))?
        .ok_or_else(|| {
            let pid = procs::supervisor_pid(c)
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            anyhow!("another supervisor runs for this configuration{pid}; nothing was started")
        })?;
    procs::write_pidfile(&procs::supervisor_pidfile(c), std::process::id())?;
    log(&format!(
        "supervisor pid {} for {}",
        std::process::id(),
        roles
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let seg =
        Segment::attach(&c.segment_name(), Some(PROTOCOL_VERSION)).map_err(|e| anyhow!("{e}"))?;
    let mut slots: Vec<Slot> = roles
        .iter()
        .map(|&role| Slot {
            role,
            proc: None,
            restarts: 0,
            crashes: VecDeque::new(),
            restart_at: None,
            gave_up: false,
            silent_since: None,
        })
        .collect();
    // The restart counts survive a supervisor restart (start ROLE, stop ROLE).
    if let Some(old) = State::read(c) {
        for s in &mut slots {
            s.restarts = old.restarts(s.role);
        }
    }
    write_state(c, Phase::Starting, None, &slots);

    for i in 0..slots.len() {
        let role = slots[i].role;
        if let Some(pid) = procs::role_pid(c, Some(&seg), role) {
            log(&format!("{role}: already running (pid {pid})"));
            procs::write_pidfile(&procs::role_pidfile(c, role), pid)?;
            slots[i].proc = Some(Proc::Adopted(pid));
            continue;
        }
        match start_role(c, &bin_dir, &seg, role) {
            Ok(child) => slots[i].proc = Some(Proc::Child(child)),
            Err(e) => {
                let msg = format!("{e:#}");
                log(&format!(
                    "{role}: cannot start: {msg}; stopping what this start started"
                ));
                for s in slots[..i].iter_mut().rev() {
                    if let Some(Proc::Child(mut child)) = s.proc.take() {
                        procs::terminate(child.id(), Duration::from_secs(30));
                        let _ = child.wait();
                        let _ = std::fs::remove_file(procs::role_pidfile(c, s.role));
                    }
                }
                write_state(c, Phase::Failed, Some((role, msg.clone())), &slots);
                let _ = std::fs::remove_file(procs::supervisor_pidfile(c));
                bail!("{msg}");
            }
        }
        write_state(c, Phase::Starting, None, &slots);
    }
    write_state(c, Phase::Ready, None, &slots);
    log("all roles ready");

    let mut pinger: Option<Client> = None;
    let mut next_ping = Instant::now() + PING_EVERY;
    loop {
        std::thread::sleep(POLL);
        if Instant::now() >= next_ping {
            kill_hung(c, &mut slots, &mut pinger);
            next_ping = Instant::now() + PING_EVERY;
        }
        let mut changed = false;
        for s in &mut slots {
            let role = s.role;
            let died = match &mut s.proc {
                Some(Proc::Child(child)) => match child.try_wait() {
                    Ok(Some(status)) => Some(format!("exited ({status})")),
                    Ok(None) => None,
                    Err(e) => Some(format!("cannot be waited for ({e})")),
                },
                Some(Proc::Adopted(pid)) => {
                    (!procs::alive(*pid)).then(|| format!("pid {pid} is gone"))
                }
                None => None,
            };
            if let Some(how) = died {
                s.proc = None;
                s.silent_since = None;
                changed = true;
                let _ = std::fs::remove_file(procs::role_pidfile(c, role));
                crashed(s, &how);
            }
            if let Some(at) = s.restart_at {
                if Instant::now() >= at {
                    s.restart_at = None;
                    changed = true;
                    log(&format!("{role}: restarting"));
                    match start_role(c, &bin_dir, &seg, role) {
                        Ok(child) => {
                            s.restarts += 1;
                            s.proc = Some(Proc::Child(child));
                        }
                        Err(e) => crashed(s, &format!("restart failed: {e:#}")),
                    }
                }
            }
        }
        if changed {
            write_state(c, Phase::Ready, None, &slots);
        }
    }
}

/// PINGs every running role; kills one silent for the configured
/// `hang_timeout` (the
/// loop then sees it die and restarts it). `pinger` is the client used,
/// made anew after a PING that got no answer (its request may still be
/// queued at the silent peer).
fn kill_hung(c: &Config, slots: &mut [Slot], pinger: &mut Option<Client>) {
    let limit = Duration::from_secs(u64::from(c.supervisor.hang_timeout));
    if limit.is_zero() {
        return;
    }
    for s in slots.iter_mut() {
        let Some(pid) = s.pid() else {
            continue;
        };
        if pinger.is_none() {
            *pinger = Client::connect(&c.segment.name)
                .ok()
                .map(|cl| cl.with_timeout(PING_TIMEOUT));
        }
        let Some(client) = pinger.as_ref() else {
            // No client (the segment's ports are all taken): no verdict.
            return;
        };
        match client.ping(c.port(s.role)) {
            Ok(()) => s.silent_since = None,
            Err(e) => {
                *pinger = None;
                let since = *s.silent_since.get_or_insert_with(Instant::now);
                let silent = since.elapsed();
                if silent >= limit {
                    log(&format!(
                        "{}: no answer to PING for {silent:.1?} ({e}): killing pid {pid}",
                        s.role
                    ));
                    let target = nix::unistd::Pid::from_raw(pid as i32);
                    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
                    s.silent_since = None;
                }
            }
        }
    }
}

/// Records a crash of `s`'s role and schedules its restart, or gives up.
fn crashed(s: &mut Slot, how: &str) {
    let now = Instant::now();
    s.crashes.push_back(now);
    while s
        .crashes
        .front()
        .is_some_and(|&t| now.duration_since(t) > CRASH_WINDOW)
    {
        s.crashes.pop_front();
    }
    let n = s.crashes.len();
    if n >= MAX_CRASHES {
        s.gave_up = true;
        log(&format!(
            "{}: {how}; {n} crashes within {CRASH_WINDOW:?}: giving up",
            s.role
        ));
    } else {
        let wait = backoff(n);
        log(&format!("{}: {how}; restarting in {wait:?}", s.role));
        s.restart_at = Some(now + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_eight_seconds() {
        let waits: Vec<u64> = (1..=7).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
    }
}
