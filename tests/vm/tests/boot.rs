//! The harness itself: a guest boots, runs its script on a volume served
//! by nbdd, and its exit code and output come back.

use std::time::Duration;

use archipelago_vm::guest::Disk;
use archipelago_vm::system::{System, SystemOptions};
use archipelago_vm::Vm;

#[test]
fn a_guest_reports_its_script_exit_code_and_output() {
    let Some(vm) = Vm::get("a_guest_reports_its_script_exit_code_and_output") else {
        return;
    };
    let _machine = vm.exclusive();
    let mut sys = System::start(&SystemOptions::default()).unwrap();
    sys.vlmc(&["create", "boot", "--size", "64M"]).unwrap();
    sys.vlmc(&["map", "boot"]).unwrap();
    let disk = Disk::nbd("vol0", &sys.socket, "boot", 5);
    let script = "\
        echo size=$(blockdev --getsize64 /dev/disk/vol0)\n\
        echo hello | dd of=/dev/disk/vol0 bs=4096 conv=sync,fsync 2>/dev/null\n\
        echo head=$(dd if=/dev/disk/vol0 bs=6 count=1 2>/dev/null)\n\
        exit 3\n";
    let r = vm.run("boot", script, vec![disk], Duration::from_secs(180));
    assert_eq!(r.code, Some(3), "{}", r.output);
    assert_eq!(r.value("size"), Some("67108864"), "{}", r.output);
    assert_eq!(r.value("head"), Some("hello"), "{}", r.output);
    eprintln!("guest ran in {:.1} s", r.wall.as_secs_f64());
}
