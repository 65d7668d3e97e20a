//! Booting a guest: QEMU with the [`Image`], a shell script to run, the
//! disks a test gives it, and the console read line by line.
//!
//! The script travels on a small read-only virtio disk (serial
//! `gt-script`); every other disk is named by its serial under
//! `/dev/disk/` in the guest (`vol0`, …). The guest's `/init` prints
//! `GT-BEGIN`, runs the script with `sh`, prints `GT-EXIT <code>` and
//! powers off; [`Guest::wait`] returns that code and the console.
//!
//! Each guest has a QMP socket ([`Guest::qmp`]) for the tests that stop
//! and continue it, and a watchdog: [`Guest::wait`] kills QEMU past its
//! timeout, and dropping a [`Guest`] kills it too.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::image::Image;
use crate::VmError;

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation (`-accel kvm -cpu host`).
    Kvm,
    /// QEMU's multi-threaded emulation (`-accel tcg,thread=multi -cpu max`).
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }
}

/// What QEMU does when a write fails (virtio-blk's `werror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// QEMU's default: pause the VM on ENOSPC, report anything else.
    Enospc,
    /// Report every error to the guest.
    Report,
}

/// Where a disk's blocks come from.
#[derive(Debug, Clone)]
pub enum Backing {
    /// An NBD export on a Unix socket (`-blockdev` driver `nbd`).
    Nbd {
        /// The server's socket.
        socket: PathBuf,
        /// The export (volume) name.
        export: String,
        /// Seconds QEMU keeps reconnecting a lost connection before it
        /// fails requests (`reconnect-delay`; 0: fail at once).
        reconnect_delay: u32,
    },
    /// A raw file opened with `O_DIRECT` (`cache.direct`, io_uring).
    RawFile(PathBuf),
}

/// A disk attached to the guest as virtio-blk.
#[derive(Debug, Clone)]
pub struct Disk {
    /// Its serial: the guest sees it as `/dev/disk/<serial>`.
    pub serial: String,
    /// Its blocks.
    pub backing: Backing,
    /// Read-only.
    pub read_only: bool,
    /// On a failed write.
    pub werror: WriteError,
}

impl Disk {
    /// A writable volume served by nbdd on `socket`, with `reconnect_delay`.
    pub fn nbd(serial: &str, socket: &Path, export: &str, reconnect_delay: u32) -> Disk {
        Disk {
            serial: serial.to_owned(),
            backing: Backing::Nbd {
                socket: socket.to_owned(),
                export: export.to_owned(),
                reconnect_delay,
            },
            read_only: false,
            werror: WriteError::Enospc,
        }
    }

    /// Read-only.
    pub fn read_only(self) -> Disk {
        Disk {
            read_only: true,
            ..self
        }
    }

    /// With `werror`.
    pub fn werror(self, werror: WriteError) -> Disk {
        Disk { werror, ..self }
    }

    fn args(&self, i: usize) -> Vec<String> {
        let node = format!("disk{i}");
        let blockdev = match &self.backing {
            Backing::Nbd {
                socket,
                export,
                reconnect_delay,
            } => json!({
                "driver": "nbd",
                "node-name": node,
                "server": {"type": "unix", "path": socket},
                "export": export,
                "reconnect-delay": reconnect_delay,
                "read-only": self.read_only,
            }),
            Backing::RawFile(path) => json!({
                "driver": "raw",
                "node-name": node,
                "read-only": self.read_only,
                "file": {
                    "driver": "file",
                    "filename": path,
                    "aio": "io_uring",
                    "cache": {"direct": true},
                    "read-only": self.read_only,
                },
            }),
        };
        let werror = match self.werror {
            WriteError::Enospc => "enospc",
            WriteError::Report => "report",
        };
        vec![
            "-blockdev".into(),
            blockdev.to_string(),
            "-device".into(),
            format!(
                "virtio-blk-pci,drive={node},serial={},werror={werror}",
                self.serial
            ),
        ]
    }
}

/// How to boot one guest.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// The kernel and initramfs.
    pub image: Image,
    /// The accelerator.
    pub accel: Accel,
    /// The shell script the guest runs (busybox `sh`).
    pub script: String,
    /// The disks.
    pub disks: Vec<Disk>,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory (MiB).
    pub memory_mib: u32,
    /// Watchdog: QEMU is killed if the guest runs longer.
    pub timeout: Duration,
    /// Where the console and QEMU's messages go (also kept in memory).
    pub log: PathBuf,
}

/// How a guest ended.
#[derive(Debug, Clone)]
pub struct GuestResult {
    /// The script's exit code (`None`: the guest never reported one).
    pub code: Option<i32>,
    /// The console (and QEMU's messages), every line.
    pub output: String,
    /// Wall time from launch to exit.
    pub wall: Duration,
}

impl GuestResult {
    /// Whether the script exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The value of the first console line `KEY=VALUE` with this key.
    pub fn value(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.output
            .lines()
            .find_map(|l| l.trim_end().strip_prefix(&prefix))
    }
}

/// Console lines so far, shared with the reader threads.
#[derive(Default)]
struct Console {
    lines: Mutex<Vec<String>>,
    more: Condvar,
}

/// A running guest; killed on drop.
pub struct Guest {
    child: Child,
    console: Arc<Console>,
    readers: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
    deadline: Instant,
    qmp_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Guest {
    /// Boots a guest as `config` says.
    pub fn start(config: &GuestConfig) -> Result<Guest, VmError> {
        let dir = tempfile::tempdir().map_err(|e| VmError::io(Path::new("/tmp"), e))?;
        let script = dir.path().join("script.img");
        let mut bytes = config.script.clone().into_bytes();
        bytes.resize(bytes.len().div_ceil(4096).max(1) * 4096, 0);
        std::fs::write(&script, bytes).map_err(|e| VmError::io(&script, e))?;
        let qmp_path = dir.path().join("qmp.sock");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(config.accel.args())
            .args(["-smp", &config.cpus.to_string()])
            .args(["-m", &config.memory_mib.to_string()])
            .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
            .args(["-no-reboot", "-nodefaults"])
            .arg("-kernel")
            .arg(&config.image.kernel)
            .arg("-initrd")
            .arg(&config.image.initramfs)
            .args([
                "-append",
                "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init",
            ])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .arg("-drive")
            .arg(format!(
                "if=none,id=gtscript,file={},format=raw,readonly=on",
                script.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=gtscript,serial=gt-script"]);
        for (i, d) in config.disks.iter().enumerate() {
            cmd.args(d.args(i));
        }
        let log = std::fs::File::create(&config.log).map_err(|e| VmError::io(&config.log, e))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| VmError::Launch {
                detail: format!("qemu-system-x86_64: {e}"),
            })?;
        let console = Arc::new(Console::default());
        let log = Arc::new(Mutex::new(log));
        let started = Instant::now();
        let mut readers = Vec::new();
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().expect("piped"));
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().expect("piped"));
        for (stream, tag) in [(out, ""), (err, "qemu: ")] {
            let console = console.clone();
            let log = log.clone();
            readers.push(std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match r.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&raw)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    let line = format!("{tag}{line}");
                    let t = started.elapsed().as_secs_f64();
                    let _ = writeln!(log.lock().expect("log"), "[{t:8.3}] {line}");
                    console.lines.lock().expect("console").push(line);
                    console.more.notify_all();
                }
            }));
        }
        Ok(Guest {
            child,
            console,
            readers,
            started,
            deadline: started + config.timeout,
            qmp_path,
            _dir: dir,
        })
    }

    /// The process id of QEMU.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most `timeout`) for a console line starting with
    /// `prefix`; returns it.
    pub fn wait_line(&self, prefix: &str, timeout: Duration) -> Result<String, VmError> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.console.lines.lock().expect("console");
        let mut seen = 0;
        loop {
            if let Some(l) = lines[seen..].iter().find(|l| l.starts_with(prefix)) {
                return Ok(l.clone());
            }
            seen = lines.len();
            let now = Instant::now();
            if now >= deadline {
                return Err(VmError::Timeout {
                    what: format!("a console line {prefix:?}"),
                    after: timeout,
                });
            }
            lines = self
                .console
                .more
                .wait_timeout(lines, deadline - now)
                .expect("console")
                .0;
        }
    }

    /// The console lines so far that start with `prefix`.
    pub fn lines_starting(&self, prefix: &str) -> Vec<String> {
        let lines = self.console.lines.lock().expect("console");
        lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// A QMP session with this guest.
    pub fn qmp(&self) -> Result<Qmp, VmError> {
        Qmp::connect(&self.qmp_path)
    }

    /// Waits for QEMU to exit (killing it past the guest's timeout) and
    /// returns the script's result.
    pub fn wait(mut self) -> GuestResult {
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < self.deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let mut lines = self.console.lines.lock().expect("console").clone();
        if status.is_none() {
            lines.push("harness: the guest timed out and was killed".to_owned());
        }
        let code = lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("GT-EXIT "))
            .and_then(|c| c.trim().parse().ok());
        GuestResult {
            code,
            output: lines.join("\n"),
            wall: self.started.elapsed(),
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A QMP (QEMU Machine Protocol) session: JSON commands, replies and
/// events over the guest's QMP socket.
pub struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
    /// Events received so far (oldest first).
    pub events: Vec<Value>,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Qmp, VmError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => return Err(VmError::io(path, e)),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| VmError::io(path, e))?;
        let w = s.try_clone().map_err(|e| VmError::io(path, e))?;
        let mut q = Qmp {
            r: BufReader::new(s),
            w,
            events: Vec::new(),
        };
        q.read()?; // the greeting
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value, VmError> {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => Err(VmError::Qmp {
                detail: "connection closed".into(),
            }),
            Ok(_) => serde_json::from_str(&line).map_err(|e| VmError::Qmp {
                detail: format!("{e}: {line}"),
            }),
            Err(e) => Err(VmError::Qmp {
                detail: e.to_string(),
            }),
        }
    }

    /// Runs `command` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, VmError> {
        let msg = json!({"execute": command, "arguments": arguments});
        writeln!(self.w, "{msg}").map_err(|e| VmError::Qmp {
            detail: e.to_string(),
        })?;
        loop {
            let v = self.read()?;
            if v.get("event").is_some() {
                self.events.push(v);
            } else if let Some(r) = v.get("return") {
                return Ok(r.clone());
            } else {
                return Err(VmError::Qmp {
                    detail: format!("{command}: {v}"),
                });
            }
        }
    }

    /// Waits (at most `timeout`) for event `name`; returns it.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Value, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
                return Ok(self.events.remove(i));
            }
            if Instant::now() > deadline {
                return Err(VmError::Timeout {
                    what: format!("QMP event {name}"),
                    after: timeout,
                });
            }
            // query-status is cheap and brings any pending events along.
            let _ = self.execute("query-status", json!({}))?;
            if !self.events.iter().any(|e| e["event"] == name) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The VM's run state (`running`, `io-error`, `paused`, …).
    pub fn status(&mut self) -> Result<String, VmError> {
        let r = self.execute("query-status", json!({}))?;
        Ok(r["status"].as_str().unwrap_or_default().to_owned())
    }
}

/// The accelerator to use: `ARCHIPELAGO_VM_ACCEL` (`kvm` or `tcg`) if
/// set; else the answer of an earlier probe cached in `cache`; else a
/// probe: a guest under KVM that must reach its script within
/// [`KVM_PROBE_TIMEOUT`], TCG otherwise. (A nested hypervisor that cannot
/// run a stock kernel, such as PVM, takes minutes to fail.)
pub fn accel(image: &Image, cache: &Path) -> Accel {
    match std::env::var("ARCHIPELAGO_VM_ACCEL").as_deref() {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => return Accel::Tcg,
        _ => {}
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let key = cache.join(format!(
        "accel-{}-{}",
        host.trim(),
        image.release.replace('/', "_")
    ));
    match std::fs::read_to_string(&key).as_deref() {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => return Accel::Tcg,
        _ => {}
    }
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let accel = if usable && kvm_boots(image, cache) {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    let _ = std::fs::create_dir_all(cache);
    let _ = std::fs::write(&key, accel.name());
    accel
}

/// How long a probing guest may take to run its script under KVM.
pub const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

fn kvm_boots(image: &Image, cache: &Path) -> bool {
    let config = GuestConfig {
        image: image.clone(),
        accel: Accel::Kvm,
        script: "echo probe-ok\n".into(),
        disks: Vec::new(),
        cpus: 1,
        memory_mib: 512,
        timeout: KVM_PROBE_TIMEOUT,
        log: cache.join("kvm-probe.log"),
    };
    match Guest::start(&config) {
        Ok(g) => g.wait().success(),
        Err(_) => false,
    }
}
