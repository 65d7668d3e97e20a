//! A file system in a guest, a snapshot and a clone of its volume on the
//! host, and a second guest booted on the clone (issue 16).

use std::process::Command;
use std::time::Duration;

use archipelago_vm::guest::Disk;
use archipelago_vm::system::{System, SystemOptions};
use archipelago_vm::Vm;

const SIZE: u64 = 256 << 20;
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// mkfs.ext4, 24 MiB in 12 files and 100 small ones, their checksums in
/// /SUMS, sync, umount, `e2fsck -fn`.
const WRITE: &str = r#"
D=/dev/disk/vol0
mkfs.ext4 -q -F "$D"
mount -t ext4 "$D" /mnt
mkdir -p /mnt/data/small
i=0; while [ $i -lt 12 ]; do dd if=/dev/urandom of=/mnt/data/f$i bs=1M count=2 2>/dev/null; i=$((i+1)); done
i=0; while [ $i -lt 100 ]; do dd if=/dev/urandom of=/mnt/data/small/s$i bs=1k count=$((i % 16 + 1)) 2>/dev/null; i=$((i+1)); done
(cd /mnt && find data -type f | sort | xargs sha256sum > SUMS)
sync
echo files=$(wc -l < /mnt/SUMS)
echo sums=$(sha256sum /mnt/SUMS | cut -d' ' -f1)
umount /mnt
e2fsck -fn "$D" || fail "e2fsck after writing"
echo e2fsck=clean
"#;

/// On the clone: every checksum of /SUMS (whose own checksum is
/// `$EXPECT`), then 16 MiB more (/SUMS.more) re-read from the disk,
/// umount, `e2fsck -fn`.
const VERIFY_AND_WRITE: &str = r#"
D=/dev/disk/vol0
mount -t ext4 "$D" /mnt
[ "$(sha256sum /mnt/SUMS | cut -d' ' -f1)" = "$EXPECT" ] || fail "SUMS differs"
echo 3 > /proc/sys/vm/drop_caches
(cd /mnt && sha256sum -c -s SUMS) || fail "a checksum differs on the clone"
echo verified=$(wc -l < /mnt/SUMS)
mkdir -p /mnt/more
i=0; while [ $i -lt 8 ]; do dd if=/dev/urandom of=/mnt/more/m$i bs=1M count=2 2>/dev/null; i=$((i+1)); done
(cd /mnt && sha256sum more/* > SUMS.more)
sync
echo 3 > /proc/sys/vm/drop_caches
(cd /mnt && sha256sum -c -s SUMS.more) || fail "the clone's new files differ"
echo more=$(wc -l < /mnt/SUMS.more)
umount /mnt
e2fsck -fn "$D" || fail "e2fsck on the clone"
echo e2fsck=clean
"#;

fn qemu_img_compare(a: &str, b: &str) -> i32 {
    let o = Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "raw", a, b])
        .output()
        .expect("qemu-img");
    o.status.code().unwrap_or(-1)
}

#[test]
fn a_clone_boots_with_every_file_and_the_original_and_snapshot_stay_unchanged() {
    const TEST: &str = "a_clone_boots_with_every_file_and_the_original_and_snapshot_stay_unchanged";
    let Some(vm) = Vm::get(TEST) else {
        return;
    };
    let _machine = vm.exclusive();
    let mut sys = System::start(&SystemOptions::default()).unwrap();
    sys.vlmc(&["create", "disk", "--size", "256M"]).unwrap();
    sys.vlmc(&["map", "disk"]).unwrap();

    let r = vm.run(
        "ext4-write",
        WRITE,
        vec![Disk::nbd("vol0", &sys.socket, "disk", 10)],
        GUEST_TIMEOUT,
    );
    assert!(r.success(), "writing guest:\n{}", r.output);
    assert_eq!(r.value("files"), Some("112"), "{}", r.output);
    assert_eq!(r.value("e2fsck"), Some("clean"), "{}", r.output);
    let sums = r.value("sums").expect("the checksum list's sum").to_owned();
    eprintln!("writing guest: {:.1} s", r.wall.as_secs_f64());

    let disk_before = sys.sha256("disk", SIZE).unwrap();
    sys.vlmc(&["snapshot", "disk", "gold"]).unwrap();
    sys.vlmc(&["create", "clone", "--snap", "gold"]).unwrap();
    sys.vlmc(&["map", "clone"]).unwrap();
    sys.vlmc(&["map", "gold"]).unwrap();
    assert_eq!(sys.sha256("gold", SIZE).unwrap(), disk_before);

    let r = vm.run(
        "ext4-clone",
        &format!("EXPECT={sums}\n{VERIFY_AND_WRITE}"),
        vec![Disk::nbd("vol0", &sys.socket, "clone", 10)],
        GUEST_TIMEOUT,
    );
    assert!(r.success(), "guest on the clone:\n{}", r.output);
    assert_eq!(r.value("verified"), Some("112"), "{}", r.output);
    assert_eq!(r.value("more"), Some("8"), "{}", r.output);
    assert_eq!(r.value("e2fsck"), Some("clean"), "{}", r.output);
    eprintln!("guest on the clone: {:.1} s", r.wall.as_secs_f64());

    // The clone's writes reached neither the original nor the snapshot.
    assert_eq!(sys.sha256("disk", SIZE).unwrap(), disk_before);
    assert_eq!(sys.sha256("gold", SIZE).unwrap(), disk_before);
    let (disk, gold, clone) = (sys.uri("disk"), sys.uri("gold"), sys.uri("clone"));
    assert_eq!(qemu_img_compare(&disk, &gold), 0, "disk and gold differ");
    assert_eq!(qemu_img_compare(&clone, &gold), 1, "the clone equals gold");
}
