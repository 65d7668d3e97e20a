//! Real QEMU guests on Archipelago volumes, for the tests in `tests/` and
//! the benchmark's guest rows.
//!
//! - [`image`] builds (once, cached under `target/vm-guest/`) the guest:
//!   Debian's cloud kernel and an initramfs of busybox, e2fsprogs and fio;
//! - [`guest`] boots it under QEMU with a script and disks, reads its
//!   console and returns the script's exit code and output; it also holds
//!   the accelerator probe (KVM when it boots the kernel, else TCG) and a
//!   QMP client;
//! - [`system`] runs a private `archipelago start` (supervisor included)
//!   whose nbdd serves the guests' volumes.
//!
//! [`Vm::get`] is the entry point of a test: it checks the prerequisites
//! under the NBD tests' rule (missing under `CI`: the test fails; elsewhere
//! it prints `SKIPPED` and the test returns), builds the image, probes the
//! accelerator, and serialises the guests of one test binary (a TCG guest
//! wants the machine's CPUs to itself).
//!
//! ```no_run
//! use std::time::Duration;
//! use archipelago_vm::{guest::Disk, system::{System, SystemOptions}, Vm};
//! let Some(vm) = Vm::get("example") else { return };
//! let mut sys = System::start(&SystemOptions::default()).unwrap();
//! sys.vlmc(&["create", "disk", "--size", "256M"]).unwrap();
//! sys.vlmc(&["map", "disk"]).unwrap();
//! let disk = Disk::nbd("vol0", &sys.socket, "disk", 10);
//! let r = vm.run("example", "mkfs.ext4 -q /dev/disk/vol0", vec![disk], Duration::from_secs(120));
//! assert!(r.success(), "{}", r.output);
//! ```

pub mod guest;
pub mod image;
pub mod system;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use guest::{Accel, Disk, Guest, GuestConfig, GuestResult};
use image::Image;

/// What went wrong preparing or running a guest.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A prerequisite is not installed.
    #[error("missing: {what}")]
    Missing {
        /// What.
        what: String,
    },
    /// Building the image failed at `step`.
    #[error("building the guest image ({step}): {detail}")]
    Build {
        /// The step.
        step: String,
        /// Why.
        detail: String,
    },
    /// A file operation failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A process could not be started.
    #[error("cannot start {detail}")]
    Launch {
        /// What and why.
        detail: String,
    },
    /// A command exited with an error.
    #[error("{command}: {detail}")]
    Command {
        /// The command.
        command: String,
        /// Its status and message.
        detail: String,
    },
    /// Something did not happen in time.
    #[error("no {what} within {after:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// The QMP session failed.
    #[error("QMP: {detail}")]
    Qmp {
        /// Why.
        detail: String,
    },
}

impl VmError {
    fn io(path: &Path, cause: std::io::Error) -> VmError {
        VmError::Io {
            path: path.to_owned(),
            cause,
        }
    }
}

/// The host programs a guest test needs, with the Debian package of each.
pub const HOST_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
];

/// Every missing prerequisite (host programs, the image's ingredients).
pub fn missing() -> Vec<String> {
    let mut missing: Vec<String> = HOST_TOOLS
        .iter()
        .filter(|(t, _)| Command::new(t).arg("--version").output().is_err())
        .map(|(t, p)| format!("{t} ({p})"))
        .collect();
    missing.extend(image::missing());
    missing
}

/// The guest image and accelerator, ready to boot guests.
pub struct Vm {
    /// The kernel and initramfs.
    pub image: Image,
    /// KVM or TCG.
    pub accel: Accel,
    /// Where logs of this run's guests go (`target/vm-guest/logs/`).
    pub logs: PathBuf,
    lock: Mutex<()>,
}

/// `target/vm-guest/`: the image cache, the probe's answer, guest logs.
pub fn cache_dir() -> PathBuf {
    archipelago_e2e::workspace_bin_dir()
        .parent()
        .expect("the target directory")
        .join("vm-guest")
}

impl Vm {
    /// The harness for `test`, or `None` (after printing `SKIPPED`) when a
    /// prerequisite is missing outside CI; under `CI` a missing
    /// prerequisite panics (`.ci/run` installs them).
    pub fn get(test: &str) -> Option<&'static Vm> {
        let missing = missing();
        if !missing.is_empty() {
            let what = missing.join(", ");
            if std::env::var_os("CI").is_some() {
                panic!("{test}: {what} not installed, required under CI (.ci/run installs them)");
            }
            eprintln!("{test}: SKIPPED: {what} not installed (see .ci/run for the packages)");
            return None;
        }
        static VM: OnceLock<Vm> = OnceLock::new();
        Some(VM.get_or_init(|| {
            let cache = cache_dir();
            let image = image::build(&cache).unwrap_or_else(|e| panic!("{test}: {e}"));
            let accel = guest::accel(&image, &cache);
            let logs = cache.join("logs");
            std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{test}: {e}"));
            eprintln!(
                "guest: kernel {}, accelerator {}",
                image.release,
                accel.name()
            );
            Vm {
                image,
                accel,
                logs,
                lock: Mutex::new(()),
            }
        }))
    }

    /// Holds the machine for one test's guests: one test at a time per
    /// test binary.
    pub fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A guest's configuration: 1 vCPU, 1 GiB, the console logged to
    /// `logs/<name>.log`.
    pub fn config(
        &self,
        name: &str,
        script: &str,
        disks: Vec<Disk>,
        timeout: Duration,
    ) -> GuestConfig {
        GuestConfig {
            image: self.image.clone(),
            accel: self.accel,
            script: format!("{PRELUDE}{script}"),
            disks,
            cpus: 1,
            memory_mib: 1024,
            timeout,
            log: self.logs.join(format!("{name}.log")),
        }
    }

    /// Boots a guest running `script` (after [`PRELUDE`]) with `disks`,
    /// waits for it, and returns its result.
    pub fn run(
        &self,
        name: &str,
        script: &str,
        disks: Vec<Disk>,
        timeout: Duration,
    ) -> GuestResult {
        self.start(name, script, disks, timeout).wait()
    }

    /// Boots a guest as [`run`](Vm::run) does, without waiting.
    pub fn start(&self, name: &str, script: &str, disks: Vec<Disk>, timeout: Duration) -> Guest {
        let config = self.config(name, script, disks, timeout);
        Guest::start(&config).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

/// Shell put before every guest script: stop at the first failing
/// command, and `fail MESSAGE`.
pub const PRELUDE: &str = r#"set -e
fail() { echo "GT-FAIL $*"; exit 1; }
"#;
