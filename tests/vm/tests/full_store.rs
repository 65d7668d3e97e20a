//! A data store that fills up under a writing guest (issue 16): the data
//! blocker's directory is a small tmpfs. With QEMU's default
//! `werror=enospc` the VM pauses and, once space is freed, `cont` resumes
//! it with nothing lost; with `werror=report` the guest gets the error and
//! what it was told is written reads back intact.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use archipelago_vm::guest::{Disk, WriteError};
use archipelago_vm::system::{System, SystemOptions};
use archipelago_vm::Vm;
use serde_json::json;

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir.path(),
        );
        Tmpfs { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    fn resize(&self, size: &str) {
        run(
            "mount",
            &["-o", &format!("remount,size={size}")],
            self.dir.path(),
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn run(cmd: &str, args: &[&str], path: &Path) {
    let o = Command::new(cmd).args(args).arg(path).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Mounting a tmpfs needs root: under CI a test without it fails,
/// elsewhere it is skipped (saying so).
fn root(test: &str) -> bool {
    // /proc/self belongs to the process's effective user.
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid());
    if uid.is_ok_and(|u| u == 0) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs root (to mount a tmpfs) under CI"
    );
    eprintln!("{test}: SKIPPED: needs root to mount a tmpfs");
    false
}

/// ext4, then 40 files of 1 MiB (more than the store holds) with their
/// checksums, sync, every file re-read from the disk, `e2fsck -fn`.
const FILL_FS: &str = r#"
D=/dev/disk/vol0
mkfs.ext4 -q -F "$D"
mount -t ext4 "$D" /mnt
echo GT-WRITING
i=0
while [ $i -lt 40 ]; do
    dd if=/dev/urandom of=/mnt/f$i bs=64k count=16 2>/dev/null
    i=$((i+1))
done
(cd /mnt && sha256sum f* > /tmp/sums)
sync
echo 3 > /proc/sys/vm/drop_caches
(cd /mnt && sha256sum -c -s /tmp/sums) || fail "a file differs after the pause"
echo verified=$(wc -l < /tmp/sums)
umount /mnt
e2fsck -fn "$D" || fail "e2fsck after the pause"
echo e2fsck=clean
"#;

#[test]
fn a_full_store_pauses_the_guest_and_cont_resumes_it_with_nothing_lost() {
    const TEST: &str = "a_full_store_pauses_the_guest_and_cont_resumes_it_with_nothing_lost";
    let Some(vm) = Vm::get(TEST) else {
        return;
    };
    if !root(TEST) {
        return;
    }
    let _machine = vm.exclusive();
    let store = Tmpfs::mount("24m");
    let mut sys = System::start(&SystemOptions {
        data_dir: Some(store.path()),
        ..SystemOptions::default()
    })
    .unwrap();
    sys.vlmc(&["create", "full", "--size", "128M"]).unwrap();
    sys.vlmc(&["map", "full"]).unwrap();
    let guest = vm.start(
        "full-enospc",
        FILL_FS,
        vec![Disk::nbd("vol0", &sys.socket, "full", 10)],
        Duration::from_secs(300),
    );
    let mut qmp = guest.qmp().unwrap();
    // The VM stops on the write the store refuses.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let status = qmp.status().unwrap();
        if status == "io-error" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the VM never paused on ENOSPC (status {status}); {:?}",
            guest.lines_starting("")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let paused = qmp.events.iter().any(|e| {
        e["event"] == "BLOCK_IO_ERROR"
            && e["data"]["nospace"] == true
            && e["data"]["action"] == "stop"
    });
    assert!(
        paused,
        "no BLOCK_IO_ERROR with nospace and stop: {:?}",
        qmp.events
    );
    // Stays paused: nothing was reported to the guest.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(qmp.status().unwrap(), "io-error");
    store.resize("256m");
    qmp.execute("cont", json!({})).unwrap();
    let r = guest.wait();
    assert!(r.success(), "guest:\n{}", r.output);
    assert_eq!(r.value("verified"), Some("40"), "{}", r.output);
    assert_eq!(r.value("e2fsck"), Some("clean"), "{}", r.output);
    assert!(!r.output.contains("I/O error"), "{}", r.output);
}

/// Raw 1 MiB blocks of one random pattern, each written with O_DIRECT
/// until a write fails; then every block that was acknowledged is read
/// back (O_DIRECT) and compared.
const FILL_RAW: &str = r#"
D=/dev/disk/vol0
dd if=/dev/urandom of=/tmp/blk bs=1M count=1 2>/dev/null
want=$(sha256sum /tmp/blk | cut -d' ' -f1)
i=0; err=none
while [ $i -lt 64 ]; do
    if ! dd if=/tmp/blk of="$D" bs=1M seek=$i count=1 oflag=direct conv=notrunc 2>/tmp/dd.err; then
        err=$(grep -m1 -i error /tmp/dd.err); break
    fi
    i=$((i+1))
done
echo written=$i
echo "write_error=$err"
j=0
while [ $j -lt $i ]; do
    got=$(dd if="$D" bs=1M skip=$j count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || fail "block $j differs"
    j=$((j+1))
done
echo verified=$j
"#;

#[test]
fn with_werror_report_the_guest_sees_the_error_and_no_corruption() {
    const TEST: &str = "with_werror_report_the_guest_sees_the_error_and_no_corruption";
    let Some(vm) = Vm::get(TEST) else {
        return;
    };
    if !root(TEST) {
        return;
    }
    let _machine = vm.exclusive();
    let store = Tmpfs::mount("24m");
    let mut sys = System::start(&SystemOptions {
        data_dir: Some(store.path()),
        ..SystemOptions::default()
    })
    .unwrap();
    sys.vlmc(&["create", "full", "--size", "128M"]).unwrap();
    sys.vlmc(&["map", "full"]).unwrap();
    let r = vm.run(
        "full-report",
        FILL_RAW,
        vec![Disk::nbd("vol0", &sys.socket, "full", 10).werror(WriteError::Report)],
        Duration::from_secs(300),
    );
    assert!(r.success(), "guest:\n{}", r.output);
    let written: u32 = r.value("written").unwrap().parse().unwrap();
    assert!((4..64).contains(&written), "{}", r.output);
    assert_ne!(r.value("write_error"), Some("none"), "{}", r.output);
    assert_eq!(r.value("verified"), Some(written.to_string().as_str()));
    eprintln!(
        "{written} MiB written before: {}",
        r.value("write_error").unwrap_or("?")
    );
}
