//! `vlmc snapshot` of a volume a guest is writing to, with no pause of the
//! guest (issue 16): the snapshot is crash-consistent.

use std::time::Duration;

use archipelago_vm::guest::Disk;
use archipelago_vm::system::{System, SystemOptions};
use archipelago_vm::Vm;

/// ext4, then 1 MiB files one after the other, each synced and then its
/// checksum printed (`GT-SUM <sum>  f<i>`): a file whose line the host
/// saw before it took the snapshot was complete and durable by then.
const WRITER: &str = r#"
D=/dev/disk/vol0
mkfs.ext4 -q -F "$D"
mount -t ext4 "$D" /mnt
cd /mnt
echo GT-WRITING
i=0
while [ $i -lt 60 ]; do
    dd if=/dev/urandom of=f$i bs=64k count=16 2>/dev/null
    sync
    echo "GT-SUM $(sha256sum f$i)"
    i=$((i+1))
done
cd /
umount /mnt
"#;

/// On the clone of the snapshot (vol0) and the snapshot itself (vol1,
/// read-only): the snapshot mounts with `ro,noload`; on the clone
/// `e2fsck -fy` replays the journal (0 or 1), then `e2fsck -fn` is clean,
/// and every file listed in /tmp/sums verifies.
const CHECK: &str = r#"
mkdir -p /snap
mount -t ext4 -o ro,noload /dev/disk/vol1 /snap || fail "the snapshot does not mount ro,noload"
echo snapshot_files=$(ls /snap | grep -c '^f' || true)
umount /snap
rc=0; e2fsck -fy /dev/disk/vol0 > /tmp/fsck.out 2>&1 || rc=$?
echo fsck_fy=$rc
[ $rc -le 1 ] || { cat /tmp/fsck.out; fail "e2fsck -fy exited $rc"; }
e2fsck -fn /dev/disk/vol0 || fail "e2fsck -fn after the replay"
echo fsck_fn=0
mount -t ext4 /dev/disk/vol0 /mnt
(cd /mnt && sha256sum -c -s /tmp/sums) || fail "a file synced before the snapshot differs"
echo verified=$(wc -l < /tmp/sums)
umount /mnt
"#;

#[test]
fn a_snapshot_taken_while_a_guest_writes_is_crash_consistent() {
    const TEST: &str = "a_snapshot_taken_while_a_guest_writes_is_crash_consistent";
    let Some(vm) = Vm::get(TEST) else {
        return;
    };
    let _machine = vm.exclusive();
    let mut sys = System::start(&SystemOptions::default()).unwrap();
    sys.vlmc(&["create", "live", "--size", "256M"]).unwrap();
    sys.vlmc(&["map", "live"]).unwrap();
    let guest = vm.start(
        "snapshot-writer",
        WRITER,
        vec![Disk::nbd("vol0", &sys.socket, "live", 10)],
        Duration::from_secs(300),
    );
    guest
        .wait_line("GT-WRITING", Duration::from_secs(120))
        .unwrap();
    // Some files in: note what is synced, then snapshot at once.
    guest.wait_line("GT-SUM", Duration::from_secs(120)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let synced = guest.lines_starting("GT-SUM ");
    sys.vlmc(&["snapshot", "live", "mid"]).unwrap();
    let r = guest.wait();
    assert!(r.success(), "writer:\n{}", r.output);
    let written = r
        .output
        .lines()
        .filter(|l| l.starts_with("GT-SUM "))
        .count();
    assert!(
        synced.len() >= 2 && written > synced.len(),
        "the snapshot was not taken mid-run: {} synced before, {written} in all",
        synced.len()
    );

    sys.vlmc(&["create", "mid-clone", "--snap", "mid"]).unwrap();
    sys.vlmc(&["map", "mid-clone"]).unwrap();
    sys.vlmc(&["map", "mid"]).unwrap();
    let sums: String = synced
        .iter()
        .map(|l| format!("{}\n", &l["GT-SUM ".len()..]))
        .collect();
    let script = format!("cat > /tmp/sums <<'EOF'\n{sums}EOF\n{CHECK}");
    let r = vm.run(
        "snapshot-check",
        &script,
        vec![
            Disk::nbd("vol0", &sys.socket, "mid-clone", 10),
            Disk::nbd("vol1", &sys.socket, "mid", 10).read_only(),
        ],
        Duration::from_secs(300),
    );
    assert!(r.success(), "checker:\n{}", r.output);
    assert_eq!(r.value("fsck_fn"), Some("0"), "{}", r.output);
    assert_eq!(
        r.value("verified"),
        Some(synced.len().to_string().as_str()),
        "{}",
        r.output
    );
    eprintln!(
        "{} of {written} files synced before the snapshot; e2fsck -fy exited {}",
        synced.len(),
        r.value("fsck_fy").unwrap_or("?")
    );
}
