//! A private Archipelago installation for guests: `archipelago start`
//! on a configuration of its own in a temporary directory (segment, data,
//! run and log directories, nbdd's socket), so the supervisor restarts a
//! role that dies exactly as on a real host. `vlmc` runs on the same
//! configuration. Dropping a [`System`] stops it (`archipelago stop -f`)
//! and kills whatever it started that is left.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use archipelago_client::Client;
use archipelago_e2e::workspace_bin;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::VmError;

/// vlmcd's port in the installation's configuration.
pub const VLMCD: u32 = 4;

/// The roles `archipelago start` runs.
pub const ROLES: [&str; 5] = ["blockerb", "blockerm", "mapperd", "vlmcd", "nbdd"];

/// Options of a [`System`].
#[derive(Debug, Clone, Default)]
pub struct SystemOptions {
    /// The data blocker's directory (default: `data/` in the system's
    /// directory). A test of a full store puts it on a small tmpfs.
    pub data_dir: Option<PathBuf>,
    /// Write-back blockers (`sync = false`): FLUSH still reaches the disk.
    pub no_sync: bool,
}

/// A running private installation.
pub struct System {
    dir: tempfile::TempDir,
    config: PathBuf,
    /// nbdd's Unix socket.
    pub socket: PathBuf,
    pids: BTreeSet<u32>,
}

impl System {
    /// Writes the configuration and runs `archipelago start`.
    pub fn start(options: &SystemOptions) -> Result<System, VmError> {
        let dir = tempfile::tempdir().map_err(|e| VmError::io(Path::new("/tmp"), e))?;
        let d = dir.path().display();
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data/blocks"));
        let sync = !options.no_sync;
        let socket = dir.path().join("run/nbd.sock");
        let text = format!(
            r#"[segment]
name = "{d}/segment"
[host]
id = "vm-test-host"
[paths]
data_dir = "{d}/data"
run_dir = "{d}/run"
log_dir = "{d}/log"
[blockerb]
backend = "files"
data_dir = "{data}"
sync = {sync}
[blockerm]
backend = "files"
data_dir = "{d}/data/maps"
sync = {sync}
[vlmcd]
port = {VLMCD}
[nbdd]
socket = "{sock}"
listen = "127.0.0.1:0"
"#,
            data = data_dir.display(),
            sock = socket.display(),
        );
        let config = dir.path().join("archipelago.toml");
        std::fs::write(&config, text).map_err(|e| VmError::io(&config, e))?;
        let mut s = System {
            dir,
            config,
            socket,
            pids: BTreeSet::new(),
        };
        s.archipelago(&["start"])?;
        Ok(s)
    }

    /// The installation's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log file of `role`.
    pub fn log(&self, role: &str) -> PathBuf {
        self.dir.path().join(format!("log/{role}.log"))
    }

    fn run(&mut self, tool: &str, args: &[&str]) -> Result<Output, VmError> {
        let out = Command::new(workspace_bin(tool))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("ARCHIPELAGO_CONFIG")
            .output()
            .map_err(|e| VmError::Launch {
                detail: format!("{tool}: {e}"),
            })?;
        self.note_pids();
        Ok(out)
    }

    fn checked(&mut self, tool: &str, args: &[&str]) -> Result<String, VmError> {
        let out = self.run(tool, args)?;
        if !out.status.success() {
            return Err(VmError::Command {
                command: format!("{tool} {}", args.join(" ")),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `archipelago ARGS`; fails unless it exits 0.
    pub fn archipelago(&mut self, args: &[&str]) -> Result<String, VmError> {
        self.checked("archipelago", args)
    }

    /// Runs `vlmc ARGS`; fails unless it exits 0.
    pub fn vlmc(&mut self, args: &[&str]) -> Result<String, VmError> {
        self.checked("vlmc", args)
    }

    /// The NBD URI of export `name`.
    pub fn uri(&self, name: &str) -> String {
        format!("nbd+unix:///{name}?socket={}", self.socket.display())
    }

    /// SHA-256 (hex) of the first `size` bytes of volume or snapshot
    /// `name`, read through vlmcd.
    pub fn sha256(&self, name: &str, size: u64) -> Result<String, VmError> {
        let segment = self.dir.path().join("segment");
        let client = Client::connect(segment.to_str().expect("utf-8 path"))
            .map_err(|e| VmError::Command {
                command: format!("read {name}"),
                detail: e.to_string(),
            })?
            .with_timeout(Duration::from_secs(60));
        let mut h = Sha256::new();
        let mut at = 0;
        while at < size {
            let n = (size - at).min(4 << 20);
            let data = client
                .volume_read(VLMCD, name, at, n)
                .map_err(|e| VmError::Command {
                    command: format!("read {name} at {at}"),
                    detail: e.to_string(),
                })?;
            h.update(&data);
            at += n;
        }
        Ok(hex(&h.finalize()))
    }

    /// `archipelago status --json`.
    pub fn status(&mut self) -> Result<Value, VmError> {
        let out = self.run("archipelago", &["status", "--json"])?;
        serde_json::from_slice(&out.stdout).map_err(|e| VmError::Command {
            command: "archipelago status --json".into(),
            detail: e.to_string(),
        })
    }

    /// The pid of `role` from its pid file.
    pub fn pid(&self, role: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join(format!("run/{role}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn note_pids(&mut self) {
        for role in ROLES.iter().chain(&["supervisor"]) {
            if let Some(pid) = self.pid(role) {
                self.pids.insert(pid);
            }
        }
    }

    /// `kill -9` of `role`, then waits (at most `timeout`) until the
    /// supervisor has it running again as a new process; returns how long
    /// that took.
    pub fn kill_and_wait_restart(
        &mut self,
        role: &str,
        timeout: Duration,
    ) -> Result<Duration, VmError> {
        let old = self.pid(role).ok_or_else(|| VmError::Command {
            command: format!("kill {role}"),
            detail: "no pid file".into(),
        })?;
        let t0 = Instant::now();
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).map_err(|e| VmError::Command {
            command: format!("kill -9 {old} ({role})"),
            detail: e.to_string(),
        })?;
        loop {
            // The supervisor writes the pid file once the new one answers PING.
            if let Some(new) = self.pid(role).filter(|&p| p != old) {
                self.pids.insert(new);
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > timeout {
                return Err(VmError::Timeout {
                    what: format!("{role} restarted by the supervisor"),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for System {
    /// Stops the installation; with `ARCHIPELAGO_VM_KEEP` set its directory
    /// (logs, data) is kept and named on stderr.
    fn drop(&mut self) {
        if std::env::var_os("ARCHIPELAGO_VM_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept {}", self.dir.path().display());
        }
        let _ = self.run("archipelago", &["stop", "-f"]);
        self.note_pids();
        // Only processes of this installation: a pid seen earlier may
        // belong to someone else by now.
        let mine = self.dir.path().display().to_string();
        for &pid in &self.pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&mine) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
