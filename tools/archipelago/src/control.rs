//! `start`, `stop` and `status`.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use archipelago_client::Client;
use archipelago_config::Config;
use archipelago_protocol::{Role, PROTOCOL_VERSION};
use serde::Serialize;
use xseg_shm::{Segment, SegmentError, SegmentName};

use crate::procs::{self, Phase, State, ROLES};
use crate::Cli;
use archipelago_config::mapped::MappedSet;

/// How long `start` waits for the supervisor to report.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a role may drain after SIGTERM before SIGKILL (its own drain
/// timeout is 30 s by default).
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

fn create_dirs(c: &Config) -> Result<()> {
    for d in [&c.paths.run_dir, &c.paths.log_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    if let SegmentName::File(p) = c.segment_name() {
        if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
    }
    Ok(())
}

/// Creates the segment, or recreates one of another layout or protocol
/// if no port has a live owner.
fn ensure_segment(c: &Config) -> Result<()> {
    let name = c.segment_name();
    let want = c.segment_config()?;
    let mismatch = match Segment::attach(&name, None) {
        Ok(seg) => {
            let l = seg.layout();
            let why = if seg.protocol_version() != PROTOCOL_VERSION {
                Some(format!(
                    "protocol {} (this build speaks {PROTOCOL_VERSION})",
                    seg.protocol_version()
                ))
            } else if l.nr_ports != want.ports
                || l.static_ports != want.static_ports
                || l.nr_requests != want.requests
                || l.buffer_counts != want.buffer_counts
            {
                Some(format!(
                    "{} ports ({} static), {} requests, buffers {:?}; the configuration asks for \
                     {} ports ({} static), {} requests, buffers {:?}",
                    l.nr_ports,
                    l.static_ports,
                    l.nr_requests,
                    l.buffer_counts,
                    want.ports,
                    want.static_ports,
                    want.requests,
                    want.buffer_counts
                ))
            } else {
                None
            };
            let Some(why) = why else { return Ok(()) };
            if let Some((port, pid)) =
                (0..l.nr_ports).find_map(|p| seg.live_owner(p).map(|pid| (p, pid)))
            {
                bail!(
                    "segment {name} has {why}; it cannot be recreated while port {port} is \
                     in use by pid {pid} (stop its peers first)"
                );
            }
            why
        }
        Err(SegmentError::NotFound { .. }) => {
            Segment::create(&name, &want).map_err(|e| anyhow!("{e}"))?;
            return Ok(());
        }
        Err(
            e @ (SegmentError::LayoutVersion { .. }
            | SegmentError::NotASegment { .. }
            | SegmentError::Corrupt { .. }),
        ) => e.to_string(),
        Err(e) => return Err(anyhow!("{e}")),
    };
    eprintln!("archipelago: recreating segment {name}: {mismatch}");
    Segment::destroy(&name, true).map_err(|e| anyhow!("{e}"))?;
    Segment::create(&name, &want).map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// The lock `start` and `stop` hold while they run.
fn control_lock(c: &Config) -> Result<nix::fcntl::Flock<std::fs::File>> {
    procs::lock_file(c, "control", true)
        .with_context(|| format!("cannot lock {}", c.paths.run_dir.display()))?
        .ok_or_else(|| anyhow!("the control lock was not granted"))
}

/// Stops the supervisor (it leaves the roles running).
fn stop_supervisor(c: &Config) {
    if let Some(pid) = procs::supervisor_pid(c) {
        procs::terminate(pid, Duration::from_secs(10));
    }
    let _ = std::fs::remove_file(procs::supervisor_pidfile(c));
}

/// Launches a supervisor for `roles` and waits until they are ready.
fn launch_supervisor(cli: &Cli, c: &Config, roles: &[Role]) -> Result<()> {
    // An old state file stays: the new supervisor takes its restart counts
    // from it, and the wait below ignores it (another pid).
    let log_path = procs::supervisor_log(c);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    if let Some(f) = &cli.config {
        cmd.arg("--config").arg(f);
    }
    let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
    let mut child = cmd
        .arg("supervise")
        .arg("--roles")
        .arg(names.join(","))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the supervisor")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let state = State::read(c).filter(|s| s.pid == child.id());
        match state.as_ref().map(|s| s.phase) {
            Some(Phase::Ready) => return Ok(()),
            Some(Phase::Failed) => {
                let s = state.expect("read");
                let _ = child.wait();
                let role = s.failed_role.clone().unwrap_or_default();
                let mut msg = s.error.unwrap_or_else(|| format!("{role} failed"));
                if let Some(r) = ROLES.into_iter().find(|r| r.name() == role) {
                    let path = procs::role_log(c, r);
                    msg.push_str(&format!("\nlast lines of {}:", path.display()));
                    for line in procs::tail(&path, 20) {
                        msg.push_str("\n  ");
                        msg.push_str(&line);
                    }
                }
                bail!("{msg}");
            }
            _ => {}
        }
        if let Some(status) = child.try_wait()? {
            let mut msg = format!("the supervisor exited ({status})");
            for line in procs::tail(&log_path, 20) {
                msg.push_str("\n  ");
                msg.push_str(&line);
            }
            bail!("{msg}");
        }
        if Instant::now() > deadline {
            bail!(
                "the roles were not ready within {START_TIMEOUT:?}; see {}",
                log_path.display()
            );
        }
    }
}

/// `start [ROLE]`.
pub fn start(cli: &Cli, c: &Config, role: Option<Role>) -> Result<()> {
    let wanted: Vec<Role> = match role {
        Some(r) => vec![r],
        None => ROLES.to_vec(),
    };
    create_dirs(c)?;
    // Starts and stops one at a time: a concurrent start waits, then
    // finds the system running.
    let _serial = control_lock(c)?;
    let supervisor = procs::supervisor_pid(c);
    let supervised = supervisor
        .and_then(|_| State::read(c))
        .filter(|s| s.phase == Phase::Ready)
        .map(|s| s.supervised())
        .unwrap_or_default();
    if supervisor.is_some() && wanted.iter().all(|r| supervised.contains(r)) {
        let seg = Segment::attach(&c.segment_name(), Some(PROTOCOL_VERSION)).ok();
        if wanted
            .iter()
            .all(|&r| procs::role_pid(c, seg.as_ref(), r).is_some())
        {
            println!("already running");
            return Ok(());
        }
    }
    ensure_segment(c)?;
    // A new supervisor for the union of what runs and what is asked for;
    // it adopts the roles that run.
    stop_supervisor(c);
    let all: Vec<Role> = ROLES
        .into_iter()
        .filter(|r| wanted.contains(r) || supervised.contains(r))
        .collect();
    launch_supervisor(cli, c, &all)?;
    println!(
        "started {}",
        all.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// How long `stop` waits for mapperd to list its open volumes.
const OPEN_LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Refuses (changing nothing) while mapperd runs and holds volumes open
/// for writing: every role is in their I/O path (vlmcd and mapperd serve
/// them, the blockers store their maps and data).
fn check_no_open_volumes(c: &Config, seg: Option<&Segment>) -> Result<()> {
    if procs::role_pid(c, seg, Role::Mapperd).is_none() {
        return Ok(());
    }
    let port = c.port(Role::Mapperd);
    let open = Client::connect(&c.segment.name)
        .and_then(|cl| cl.with_timeout(OPEN_LIST_TIMEOUT).open_volumes(port))
        .map_err(|e| {
            anyhow!(
                "cannot ask mapperd (port {port}) which volumes are open: {e}; nothing was \
                 stopped (use -f to stop anyway)"
            )
        })?;
    if !open.is_empty() {
        bail!(
            "{} volume{} open on this host: {}; nothing was stopped (close {}, or use -f)",
            open.len(),
            if open.len() == 1 { " is" } else { "s are" },
            open.join(", "),
            if open.len() == 1 { "it" } else { "them" },
        );
    }
    Ok(())
}

/// Refuses (changing nothing) while volumes are mapped for NBD (`vlmc
/// map`): stopping nbdd or anything below it cuts their clients off.
fn check_no_mapped_volumes(c: &Config) -> Result<()> {
    let path = c.nbd_mapped_file();
    let set = MappedSet::load(&path).map_err(|e| {
        anyhow!(
            "cannot read {}: {e}; nothing was stopped (use -f to stop anyway)",
            path.display()
        )
    })?;
    if !set.volumes.is_empty() {
        let names: Vec<&str> = set.volumes.iter().map(|v| v.name.as_str()).collect();
        bail!(
            "{} volume{} mapped for NBD: {}; nothing was stopped (vlmc unmap {}, or use -f)",
            names.len(),
            if names.len() == 1 { " is" } else { "s are" },
            names.join(", "),
            if names.len() == 1 { "it" } else { "them" },
        );
    }
    Ok(())
}

/// `stop [-f] [ROLE]`. Unless `force`, refuses while volumes are mapped
/// for NBD or mapperd holds volumes open for writing; the peers drain
/// their requests in flight.
pub fn stop(cli: &Cli, c: &Config, role: Option<Role>, force: bool) -> Result<()> {
    let _serial = if c.paths.run_dir.is_dir() {
        Some(control_lock(c)?)
    } else {
        None
    };
    if !force {
        check_no_mapped_volumes(c)?;
        let seg = Segment::attach(&c.segment_name(), None).ok();
        check_no_open_volumes(c, seg.as_ref())?;
    }
    let supervised = procs::supervisor_pid(c)
        .and_then(|_| State::read(c))
        .map(|s| s.supervised())
        .unwrap_or_default();
    stop_supervisor(c);
    let targets: Vec<Role> = match role {
        Some(r) => vec![r],
        None => ROLES.to_vec(),
    };
    let seg = Segment::attach(&c.segment_name(), None).ok();
    let mut failed = Vec::new();
    for &r in targets.iter().rev() {
        if let Some(pid) = procs::role_pid(c, seg.as_ref(), r) {
            if procs::terminate(pid, STOP_TIMEOUT) {
                println!("stopped {r} (pid {pid})");
            } else {
                eprintln!(
                    "archipelago: {r} (pid {pid}) did not stop within {STOP_TIMEOUT:?}: killed"
                );
                failed.push(r);
            }
        }
        let _ = std::fs::remove_file(procs::role_pidfile(c, r));
    }
    // Keep supervising what still runs (its restart counts kept).
    let rest: Vec<Role> = supervised
        .into_iter()
        .filter(|r| !targets.contains(r))
        .collect();
    if rest.is_empty() {
        let _ = std::fs::remove_file(procs::state_file(c));
    } else {
        launch_supervisor(cli, c, &rest)?;
    }
    if !failed.is_empty() {
        bail!(
            "{} had to be killed",
            failed
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// One row of `status`.
#[derive(Debug, Serialize)]
struct RoleStatus {
    role: &'static str,
    port: u32,
    pid: Option<u32>,
    alive: bool,
    in_flight: Option<u64>,
    served: Option<u64>,
    failed: Option<u64>,
    uptime_ms: Option<u64>,
    restarts: u32,
    supervisor_status: Option<String>,
}

#[derive(Debug, Serialize)]
struct Status {
    segment: String,
    supervisor_pid: Option<u32>,
    roles: Vec<RoleStatus>,
}

/// `status`: true when every role runs.
pub fn status(c: &Config, json: bool) -> Result<bool> {
    let attached = Segment::attach(&c.segment_name(), None);
    // Why the segment cannot be used, unless it simply does not exist.
    let unusable = match &attached {
        Err(e) if !matches!(e, SegmentError::NotFound { .. }) => Some(e.to_string()),
        _ => None,
    };
    let seg = attached.ok();
    let client = seg.as_ref().and_then(|_| {
        Client::connect(&c.segment.name)
            .ok()
            .map(|cl| cl.with_timeout(Duration::from_secs(2)))
    });
    let supervisor_pid = procs::supervisor_pid(c);
    let state = supervisor_pid.and_then(|_| State::read(c));
    let roles: Vec<RoleStatus> = ROLES
        .into_iter()
        .map(|r| {
            let pid = procs::role_pid(c, seg.as_ref(), r);
            let stats = pid
                .and(client.as_ref())
                .and_then(|cl| cl.stats(c.port(r)).ok());
            RoleStatus {
                role: r.name(),
                port: c.port(r),
                pid,
                alive: pid.is_some(),
                in_flight: stats.as_ref().map(|s| s.in_flight),
                served: stats.as_ref().map(|s| s.served),
                failed: stats.as_ref().map(|s| s.failed),
                uptime_ms: stats.as_ref().map(|s| s.uptime_ms),
                restarts: state.as_ref().map_or(0, |s| s.restarts(r)),
                supervisor_status: state.as_ref().and_then(|s| {
                    s.roles
                        .iter()
                        .find(|x| x.role == r.name())
                        .map(|x| x.status.clone())
                }),
            }
        })
        .collect();
    let all = roles.iter().all(|r| r.alive);
    let st = Status {
        segment: c.segment.name.clone(),
        supervisor_pid,
        roles,
    };
    let mut out = String::new();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&st)?)?;
    } else {
        let segment_state = match (&seg, &unusable) {
            (Some(_), _) => String::new(),
            (None, Some(why)) => format!(" (unusable: {why})"),
            (None, None) => " (absent)".to_owned(),
        };
        writeln!(
            out,
            "segment {}{segment_state}; supervisor {}",
            st.segment,
            st.supervisor_pid
                .map_or("not running".to_owned(), |p| format!("pid {p}"))
        )?;
        writeln!(
            out,
            "{:<9} {:>5} {:>8} {:<7} {:>9} {:>10} {:>8} {:>10} {:>8}",
            "ROLE", "PORT", "PID", "STATE", "INFLIGHT", "SERVED", "FAILED", "UPTIME", "RESTARTS"
        )?;
        let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        for r in &st.roles {
            writeln!(
                out,
                "{:<9} {:>5} {:>8} {:<7} {:>9} {:>10} {:>8} {:>10} {:>8}",
                r.role,
                r.port,
                r.pid.map_or("-".to_owned(), |p| p.to_string()),
                if r.alive { "running" } else { "stopped" },
                opt(r.in_flight),
                opt(r.served),
                opt(r.failed),
                r.uptime_ms
                    .map_or("-".to_owned(), |ms| format!("{}s", ms / 1000)),
                r.restarts
            )?;
        }
    }
    emit(&out)?;
    Ok(all)
}

/// Writes `text` to standard output. A reader that went away (`| head`)
/// is not an error: nothing more is to be said.
pub fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
