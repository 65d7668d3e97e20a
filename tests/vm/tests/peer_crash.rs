//! `kill -9` of each peer on a guest's I/O path while the guest writes
//! (issue 16): with QEMU's `reconnect-delay` and the supervisor restarting
//! the peer, the guest sees no error and every block verifies. The disk
//! is a clone of a snapshot of a prefilled volume, and the writes
//! straddle granules (issue 15): the peers die during copy-ups of
//! granules, journal appends and first writes alike.

use std::time::{Duration, Instant};

use archipelago_vm::guest::Disk;
use archipelago_vm::system::{System, SystemOptions};
use archipelago_vm::Vm;

/// Paced sequential writes (64 KiB, queue depth 4, 12 MiB/s: about 32 s
/// for 384 MiB), a CRC32C in every block, then every block read back and
/// verified; a heartbeat every second; I/O errors in the kernel log
/// counted.
const CRASH: &str = r#"
D=/dev/disk/vol0
dev=$(readlink "$D"); dev=${dev#/dev/}
cat > /tmp/crash.fio <<EOF
[crash]
filename=$D
direct=1
ioengine=libaio
iodepth=4
rw=write
bs=64k
offset=2k
size=384m
rate=12m
verify=crc32c
do_verify=1
verify_fatal=1
EOF
fio --eta=never /tmp/crash.fio > /tmp/fio.out 2>&1 &
P=$!
echo GT-WRITING
while kill -0 $P 2>/dev/null; do
    echo "GT-HB t=$(cut -d' ' -f1 /proc/uptime) writes=$(awk '{print $5}' /sys/block/$dev/stat)"
    sleep 1
done
rc=0; wait $P || rc=$?
grep -E 'err=|verify|WRITE:|READ:' /tmp/fio.out || true
dmesg | grep -iE 'I/O error|blk_update' | head -5 || true
echo io_errors=$(dmesg | grep -ciE 'I/O error|blk_update' || true)
echo fio_rc=$rc
[ $rc -eq 0 ] || fail "fio failed"
"#;

/// The roles killed, in order: the endpoint, the composer, the mapper,
/// the data blocker.
const VICTIMS: [&str; 4] = ["nbdd", "vlmcd", "mapperd", "blockerb"];

#[test]
fn every_peer_killed_under_a_writing_guest_is_invisible_to_it() {
    kill_each_peer_under_a_writing_guest(
        "every_peer_killed_under_a_writing_guest_is_invisible_to_it",
        false,
    );
}

/// The same in write-back mode (`sync = false`, issue 15): commits wait
/// in mapperd's write-back journals (under /dev/shm) for the guest's
/// FLUSH, data in the page cache; a killed mapperd's successor replays
/// them, a killed blocker's syncs what its predecessor left, and no
/// acknowledged write is lost.
#[test]
fn every_peer_killed_under_a_writing_guest_in_write_back_mode_is_invisible_to_it() {
    kill_each_peer_under_a_writing_guest(
        "every_peer_killed_under_a_writing_guest_in_write_back_mode_is_invisible_to_it",
        true,
    );
}

fn kill_each_peer_under_a_writing_guest(test: &str, no_sync: bool) {
    let Some(vm) = Vm::get(test) else {
        return;
    };
    let _machine = vm.exclusive();
    let options = SystemOptions {
        no_sync,
        ..SystemOptions::default()
    };
    let mut sys = System::start(&options).unwrap();
    // A golden image: 96 MiB of data (the first 24 objects), snapshotted
    // and cloned; the guest writes into the clone.
    let image = sys.dir().join("golden.raw");
    let mut bytes = vec![0u8; 96 << 20];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    std::fs::write(&image, &bytes).unwrap();
    drop(bytes);
    sys.vlmc(&["import", "golden", image.to_str().unwrap()])
        .unwrap();
    sys.vlmc(&["snapshot", "golden", "gold"]).unwrap();
    sys.vlmc(&["create", "crash", "--snap", "gold", "--size", "512M"])
        .unwrap();
    sys.vlmc(&["map", "crash"]).unwrap();
    let guest = vm.start(
        "peer-crash",
        CRASH,
        vec![Disk::nbd("vol0", &sys.socket, "crash", 10)],
        Duration::from_secs(420),
    );
    guest
        .wait_line("GT-WRITING", Duration::from_secs(120))
        .unwrap();
    let t0 = Instant::now();
    let mut kills = Vec::new();
    for role in VICTIMS {
        std::thread::sleep(Duration::from_secs(4));
        let at = t0.elapsed();
        let back = sys
            .kill_and_wait_restart(role, Duration::from_secs(30))
            .unwrap();
        kills.push(format!(
            "{role} killed {:.1} s into the writes, back after {:.2} s",
            at.as_secs_f64(),
            back.as_secs_f64()
        ));
    }
    let last_kill = t0.elapsed();
    let r = guest.wait();
    let kills = kills.join("; ");
    eprintln!("{kills}; guest ran {:.1} s", r.wall.as_secs_f64());
    let status = sys.status().unwrap();
    assert_eq!(r.value("fio_rc"), Some("0"), "{kills}\n{}", r.output);
    assert_eq!(r.value("io_errors"), Some("0"), "{kills}\n{}", r.output);
    assert!(r.success(), "{kills}\n{}", r.output);
    // The last kill came while fio was still running (a heartbeat a second).
    let heartbeats = r.output.lines().filter(|l| l.starts_with("GT-HB")).count();
    assert!(
        heartbeats as f64 > last_kill.as_secs_f64(),
        "fio ran for {heartbeats} heartbeats only, the last kill was at {last_kill:?}"
    );
    // The path under test was taken: nbdd sent again what a dead peer held.
    let nbdd_log = std::fs::read_to_string(sys.log("nbdd")).unwrap();
    let retried = nbdd_log.matches("retrying until the peer is back").count();
    assert!(retried > 0, "no request was retried: {nbdd_log}");
    eprintln!("nbdd retried after {retried} peer deaths");
    for role in VICTIMS {
        let r = status["roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["role"] == role)
            .unwrap();
        assert_eq!(r["restarts"], 1, "{role}: {status:#}");
    }
}
