//! nbdd end to end: the pipeline on a private segment, nbdd on its Unix
//! socket, volumes mapped with `vlmc map`, real NBD clients (qemu-img,
//! qemu-io, nbdinfo when installed) and a hostile raw-socket client.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archipelago_e2e::pattern::mix;
use archipelago_e2e::pipeline::{common, Backend, Pipeline, Proc, MAPPER, VLMCD};
use archipelago_e2e::{tools_present, workspace_bin};
use archipelago_peer::launch::Nbd as NbdLaunch;

const NBDD: u32 = 5;
const OBJ: u64 = 64 << 10;

struct Setup {
    p: Pipeline,
    nbdd: Proc,
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

fn setup(name: &str) -> Setup {
    setup_with(name, |_| {})
}

/// As [`setup`], with nbdd's launch changed by `tune`.
fn setup_with(name: &str, tune: impl FnOnce(&mut NbdLaunch)) -> Setup {
    let p = Pipeline::start(name, "host-a", &Backend::Memory, &Backend::Memory);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nbd.sock");
    let config = dir.path().join("archipelago.toml");
    let d = dir.path().display();
    std::fs::write(
        &config,
        format!(
            "[segment]\nname = \"{}\"\n[paths]\nrun_dir = \"{d}\"\nlog_dir = \"{d}\"\n\
             data_dir = \"{d}\"\n[nbdd]\nsocket = \"{}\"\n",
            p.tmp.arg(),
            socket.display()
        ),
    )
    .unwrap();
    let mut launch = NbdLaunch {
        common: common(&p.tmp.arg(), NBDD),
        vlmcd_port: VLMCD,
        mapperd_port: MAPPER,
        mapped_file: dir.path().join("nbd-mapped.json"),
        status_file: Some(dir.path().join("nbd-clients.json")),
        socket: Some(socket.clone()),
        listen: None,
        queue_depth: None,
        write_timeout: None,
        handshake_timeout: None,
    };
    tune(&mut launch);
    let nbdd = Proc::start(launch);
    Setup {
        p,
        nbdd,
        dir,
        config,
        socket,
    }
}

impl Setup {
    fn vlmc(&self, args: &[&str]) -> Output {
        Command::new(workspace_bin("vlmc"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn vlmc_ok(&self, args: &[&str]) -> String {
        let o = self.vlmc(args);
        assert!(
            o.status.success(),
            "vlmc {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn uri(&self, name: &str) -> String {
        format!("nbd+unix:///{name}?socket={}", self.socket.display())
    }
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| mix(seed ^ (i as u64 / 8)).to_le_bytes()[i % 8])
        .collect()
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The qemu clients (qemu-utils): present, or the test fails under CI and
/// skips (saying so) elsewhere.
fn qemu_clients(test: &str) -> bool {
    tools_present(test, &["qemu-img", "qemu-io"], "qemu-utils")
}

/// nbdinfo (libnbd-bin), under the same rule.
fn nbdinfo(test: &str) -> bool {
    tools_present(test, &["nbdinfo"], "libnbd-bin")
}

#[test]
fn qemu_clients_copy_compare_and_write_unaligned() {
    const TEST: &str = "qemu_clients_copy_compare_and_write_unaligned";
    if !qemu_clients(TEST) || !nbdinfo(TEST) {
        return;
    }
    let mut s = setup("nbd-qemu");
    let c = s.p.client(Duration::from_secs(30));
    // 40 objects: data, a 1 MiB hole (16 whole objects), data with a
    // small hole inside an object.
    let size = 40 * OBJ;
    let mut img = random(size as usize, 1);
    img[(16 * OBJ) as usize..(32 * OBJ) as usize].fill(0);
    img[(35 * OBJ + 100) as usize..(35 * OBJ + 9000) as usize].fill(0);
    let path = s.dir.path().join("img.raw");
    std::fs::write(&path, &img).unwrap();
    let img_path = path.to_str().unwrap();
    c.create_volume(VLMCD, "disk", size, Some(OBJ)).unwrap();

    let out = s.vlmc_ok(&["map", "disk"]);
    assert_eq!(out.trim(), s.uri("disk"));
    let uri = s.uri("disk");
    run(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", img_path, &uri],
    );
    run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", img_path, &uri],
    );
    // The data went through vlmcd.
    assert_eq!(
        c.volume_read(VLMCD, "disk", 0, 4096).unwrap(),
        img[..4096].to_vec()
    );

    // Block status: the whole objects left unwritten are holes.
    let o = run("qemu-img", &["map", "--output=json", "-f", "raw", &uri]);
    let map: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let hole_at = |off: u64| {
        map.as_array().unwrap().iter().any(|e| {
            let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            start <= off && off < start + len && e["data"] == false && e["zero"] == true
        })
    };
    assert!(hole_at(20 * OBJ), "{map}");
    assert!(!hole_at(0), "{map}");
    assert!(!hole_at(33 * OBJ), "{map}");

    // Unaligned I/O across object boundaries, zeroes and discards.
    let o = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xab 4095 12289",
            "-c",
            "read -P 0xab 4095 12289",
            "-c",
            "write -P 0xcd 65531 70001",
            "-c",
            "read -P 0xcd 65531 70001",
            "-c",
            "read -P 0xab 4095 12289",
            "-c",
            "write -z 131071 65539",
            "-c",
            "read -P 0 131071 65539",
            "-c",
            "discard 262144 131072",
            "-c",
            "read -P 0 262144 131072",
            "-c",
            "write -f -P 0x11 300001 5000",
            "-c",
            "flush",
            "-c",
            "read -P 0x11 300001 5000",
            "-c",
            "read -P 0 1048576 4096",
            &uri,
        ],
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    for bad in ["fail", "error", "Pattern verification"] {
        assert!(!text.to_lowercase().contains(&bad.to_lowercase()), "{text}");
    }
    let mut expect = img.clone();
    expect[4095..4095 + 12289].fill(0xab);
    expect[65531..65531 + 70001].fill(0xcd);
    expect[131071..131071 + 65539].fill(0);
    expect[262144..262144 + 131072].fill(0);
    expect[300001..305001].fill(0x11);
    assert!(c.volume_read(VLMCD, "disk", 0, size).unwrap() == expect);

    let o = run("nbdinfo", &["--size", &uri]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), size.to_string());
    let o = run("nbdinfo", &["--map", &uri]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("hole"), "nbdinfo --map shows no hole: {text}");

    // A snapshot is exported read-only.
    c.snapshot(VLMCD, "disk", "snap").unwrap();
    s.vlmc_ok(&["map", "snap"]);
    let snap = s.uri("snap");
    run(
        "qemu-io",
        &["-r", "-f", "raw", "-c", "read -P 0xab 4095 12289", &snap],
    );
    let o = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 1 0 512", &snap])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            || text.to_lowercase().contains("read-only")
            || text.contains("Operation not permitted"),
        "{text}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&s.vlmc_ok(&["--json", "showmapped"])).unwrap();
    assert_eq!(shown.as_array().unwrap().len(), 2, "{shown}");
    assert_eq!(shown[1]["readonly"], true);

    // Unmap: refused while a client is connected, unless -f.
    let mut held = Nbd::go(&s.socket, "disk");
    assert!(held.read(0, 512).is_ok());
    let o = s.vlmc(&["unmap", "disk"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("connected"));
    let shown: serde_json::Value =
        serde_json::from_str(&s.vlmc_ok(&["--json", "showmapped"])).unwrap();
    assert_eq!(shown[0]["name"], "disk", "{shown}");
    assert_eq!(shown[0]["clients"], 1, "{shown}");
    s.vlmc_ok(&["unmap", "-f", "disk"]);
    // -f cut the client off: its connection ends (EOF or a reset, within
    // the read timeout), and no client is counted any more.
    assert!(closed(&mut held.s), "unmap -f left the client connected");
    s.vlmc_ok(&["unmap", "snap"]);
    assert_eq!(s.vlmc_ok(&["showmapped"]).trim(), "");
    // Closed by the unmap: removable, the volume and then its snapshot.
    c.remove_volume(VLMCD, "disk").unwrap();
    c.remove_volume(VLMCD, "snap").unwrap();
    assert!(c.volume_info(VLMCD, "disk").unwrap().removed);
    s.nbdd.assert_running();
}

// ---- a small NBD client -------------------------------------------------

const IHAVEOPT: u64 = 0x4948_4156_454f_5054;

struct Nbd {
    s: UnixStream,
    size: u64,
    flags: u16,
}

fn hello(path: &Path) -> UnixStream {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut b = [0u8; 18];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b[..8], b"NBDMAGIC");
    assert_eq!(u64::from_be_bytes(b[8..16].try_into().unwrap()), IHAVEOPT);
    s.write_all(&3u32.to_be_bytes()).unwrap();
    s
}

fn send_opt(s: &mut UnixStream, opt: u32, data: &[u8]) {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    s.write_all(&v).unwrap();
}

fn opt_reply(s: &mut UnixStream) -> (u32, u32, Vec<u8>) {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).unwrap();
    let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
    let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
    let mut d = vec![0u8; len as usize];
    s.read_exact(&mut d).unwrap();
    (opt, kind, d)
}

/// EOF (or a reset) within the read timeout.
fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

impl Nbd {
    fn go(path: &Path, name: &str) -> Nbd {
        Nbd::go_on(hello(path), name)
    }

    fn go_on(mut s: UnixStream, name: &str) -> Nbd {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        send_opt(&mut s, 7, &d);
        let (mut size, mut flags) = (0, 0);
        loop {
            let (opt, kind, d) = opt_reply(&mut s);
            assert_eq!(opt, 7);
            match kind {
                1 => break,
                3 if d[..2] == [0, 0] => {
                    size = u64::from_be_bytes(d[2..10].try_into().unwrap());
                    flags = u16::from_be_bytes(d[10..12].try_into().unwrap());
                }
                3 => {}
                k => panic!("GO {name}: reply {k:#x}"),
            }
        }
        Nbd { s, size, flags }
    }

    fn send(&mut self, kind: u16, flags: u16, handle: u64, offset: u64, len: u32, data: &[u8]) {
        let mut v = 0x2560_9513u32.to_be_bytes().to_vec();
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&handle.to_be_bytes());
        v.extend_from_slice(&offset.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(data);
        self.s.write_all(&v).unwrap();
    }

    /// A simple reply: (error, handle).
    fn reply(&mut self) -> (u32, u64) {
        let mut b = [0u8; 16];
        self.s.read_exact(&mut b).unwrap();
        assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()), 0x6744_6698);
        (
            u32::from_be_bytes(b[4..8].try_into().unwrap()),
            u64::from_be_bytes(b[8..16].try_into().unwrap()),
        )
    }

    fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
        self.send(0, 0, 77, offset, len, &[]);
        let (e, h) = self.reply();
        assert_eq!(h, 77);
        if e != 0 {
            return Err(e);
        }
        let mut d = vec![0u8; len as usize];
        self.s.read_exact(&mut d).unwrap();
        Ok(d)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> u32 {
        self.send(1, 1, 78, offset, data.len() as u32, data);
        let (e, h) = self.reply();
        assert_eq!(h, 78);
        e
    }
}

#[test]
fn hostile_clients_never_disturb_a_well_behaved_one() {
    let mut s = setup("nbd-hostile");
    let c = s.p.client(Duration::from_secs(30));
    let size = 16 * OBJ;
    c.create_volume(VLMCD, "h", size, Some(OBJ)).unwrap();
    s.vlmc_ok(&["map", "h"]);
    let mut good = Nbd::go(&s.socket, "h");
    assert_eq!(good.size, size);
    assert_ne!(good.flags & (1 << 8), 0, "multi-conn");
    assert_eq!(good.flags & 2, 0, "writable");
    let tail = random(512, 9);
    assert_eq!(good.write(size - 512, &tail), 0);
    let mut round = 0u64;
    let mut check = |good: &mut Nbd| {
        round += 1;
        let d = random(5000, round);
        let off = (round * 7919) % (size - 10_000);
        assert_eq!(good.write(off, &d), 0);
        assert_eq!(good.read(off, 5000).unwrap(), d);
        assert_eq!(good.read(size - 512, 512).unwrap(), tail);
    };
    check(&mut good);

    // Bad option magic: closed.
    let mut h = hello(&s.socket);
    h.write_all(&[0x55; 16]).unwrap();
    assert!(closed(&mut h));
    check(&mut good);

    // Unknown option: refused, the handshake goes on.
    let mut h = hello(&s.socket);
    send_opt(&mut h, 99, b"junk");
    let (opt, kind, _) = opt_reply(&mut h);
    assert_eq!((opt, kind), (99, (1 << 31) + 1));
    // An unknown export: refused too.
    let mut d = 4u32.to_be_bytes().to_vec();
    d.extend_from_slice(b"nope");
    d.extend_from_slice(&0u16.to_be_bytes());
    send_opt(&mut h, 7, &d);
    assert_eq!(opt_reply(&mut h).1, (1 << 31) + 6);
    let mut bad = Nbd::go_on(h, "h");
    check(&mut good);

    // Reads and writes past the end: EINVAL, nothing written.
    assert_eq!(bad.read(size - 100, 200), Err(22));
    assert_eq!(bad.read(u64::MAX - 10, 100), Err(22));
    assert_eq!(bad.write(size - 256, &[0xee; 1024]), 22);
    // Larger than served in one piece (up to 32 MiB) is split; above
    // that, refused.
    assert_eq!(bad.read(0, 33 << 20), Err(75), "EOVERFLOW");
    assert_eq!(bad.read(0, size as u32).unwrap().len(), size as usize);
    // An unknown command, block status without a meta context: EINVAL.
    bad.send(42, 0, 5, 0, 0, &[]);
    assert_eq!(bad.reply(), (22, 5));
    bad.send(7, 0, 6, 0, 4096, &[]);
    assert_eq!(bad.reply(), (22, 6));
    check(&mut good);

    // Many requests in flight, replies matched by handle.
    for i in 0..48u64 {
        let d = random(4096, 100 + i);
        bad.send(1, 0, 1000 + i, i * 4096, 4096, &d);
    }
    let mut handles: Vec<u64> = (0..48)
        .map(|_| bad.reply())
        .map(|(e, h)| {
            assert_eq!(e, 0);
            h
        })
        .collect();
    handles.sort();
    assert_eq!(handles, (1000..1048).collect::<Vec<_>>());
    for i in 0..48u64 {
        bad.send(0, 0, 2000 + i, i * 4096, 4096, &[]);
    }
    for _ in 0..48 {
        let (e, h) = bad.reply();
        assert_eq!(e, 0);
        let mut d = vec![0u8; 4096];
        bad.s.read_exact(&mut d).unwrap();
        assert_eq!(d, random(4096, 100 + h - 2000), "handle {h}");
    }
    check(&mut good);

    // A write larger than allowed: the connection is closed.
    bad.send(1, 0, 9, 0, 64 << 20, &[1; 100]);
    assert!(closed(&mut bad.s));
    check(&mut good);

    // A bad request magic: closed.
    let mut bad = Nbd::go(&s.socket, "h");
    bad.s.write_all(&[0xde; 28]).unwrap();
    assert!(closed(&mut bad.s));
    check(&mut good);

    // Disconnecting mid-request (half a write's payload): nothing written.
    let mut bad = Nbd::go(&s.socket, "h");
    bad.send(1, 0, 1, 0, 8192, &[0x77; 100]);
    drop(bad);
    // Disconnecting with reads in flight.
    let mut bad = Nbd::go(&s.socket, "h");
    for i in 0..16 {
        bad.send(0, 0, i, 0, 65536, &[]);
    }
    drop(bad);
    // Silent mid-handshake client: holds only its own connection.
    let _silent = UnixStream::connect(&s.socket).unwrap();
    check(&mut good);
    assert_ne!(good.read(0, 100).unwrap(), vec![0x77; 100]);

    // A snapshot is read-only: writes get EPERM.
    c.snapshot(VLMCD, "h", "hs").unwrap();
    s.vlmc_ok(&["map", "hs"]);
    let mut ro = Nbd::go(&s.socket, "hs");
    assert_ne!(ro.flags & 2, 0);
    assert_eq!(ro.write(0, &[1; 512]), 1);
    ro.send(4, 0, 3, 0, 4096, &[]);
    assert_eq!(ro.reply(), (1, 3));
    assert_eq!(ro.read(size - 512, 512).unwrap(), tail);
    // Disconnect politely.
    ro.send(2, 0, 0, 0, 0, &[]);
    assert!(closed(&mut ro.s));
    check(&mut good);
    s.nbdd.assert_running();
}

/// A writer writes distinct patterns to distinct 4 KiB blocks, one at a
/// time (FUA), while `vlmc snapshot` runs. The snapshot holds every write
/// acknowledged before the call was issued, zeros in every block first
/// written after it returned, and either in between; the volume holds
/// every acknowledged write.
#[test]
fn snapshot_while_a_client_writes() {
    const BLOCK: u64 = 4096;
    let mut s = setup("nbd-snap-writes");
    let c = s.p.client(Duration::from_secs(30));
    let objects = 64;
    let size = objects * OBJ;
    let blocks = size / BLOCK;
    c.create_volume(VLMCD, "w", size, Some(OBJ)).unwrap();
    s.vlmc_ok(&["map", "w"]);

    // Every block once, in a scattered order (odd stride: a permutation).
    let order: Vec<u64> = (0..blocks).map(|i| (i * 389 + 17) % blocks).collect();
    let pattern = |block: u64| random(BLOCK as usize, 0x5eed_0000 + block);
    let acked = Arc::new(AtomicUsize::new(0));
    let snap_done = Arc::new(AtomicBool::new(false));
    let mut w = Nbd::go(&s.socket, "w");
    assert_eq!(w.size, size);
    let writer = {
        let (acked, snap_done) = (acked.clone(), snap_done.clone());
        std::thread::spawn(move || {
            // (block, sent, acknowledged)
            let mut log: Vec<(u64, Instant, Instant)> = Vec::new();
            let mut after = 0;
            for &block in &order {
                if snap_done.load(Ordering::SeqCst) {
                    after += 1;
                    if after > 250 {
                        break;
                    }
                }
                let sent = Instant::now();
                assert_eq!(w.write(block * BLOCK, &pattern(block)), 0, "block {block}");
                log.push((block, sent, Instant::now()));
                acked.fetch_add(1, Ordering::SeqCst);
            }
            log
        })
    };
    while acked.load(Ordering::SeqCst) < 300 {
        assert!(!writer.is_finished(), "the writer stopped early");
        std::thread::sleep(Duration::from_millis(1));
    }
    let issued = Instant::now();
    let o = s.vlmc(&["snapshot", "w", "ws"]);
    let returned = Instant::now();
    snap_done.store(true, Ordering::SeqCst);
    assert!(
        o.status.success(),
        "vlmc snapshot: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let log = writer.join().unwrap();
    let before = log.iter().filter(|e| e.2 < issued).count();
    let between = log
        .iter()
        .filter(|e| e.2 >= issued && e.1 <= returned)
        .count();
    let later = log.iter().filter(|e| e.1 > returned).count();
    eprintln!(
        "{} writes: {before} acknowledged before the snapshot, {between} overlapping it, \
         {later} after; snapshot took {:?}",
        log.len(),
        returned - issued
    );
    assert!(before >= 300 && later >= 200, "{before} {between} {later}");

    // The snapshot, read-only through NBD.
    s.vlmc_ok(&["map", "ws"]);
    let mut r = Nbd::go(&s.socket, "ws");
    assert_eq!(r.size, size);
    let mut snap = Vec::new();
    for o in 0..objects {
        snap.extend(r.read(o * OBJ, OBJ as u32).unwrap());
    }
    let zeros = vec![0u8; BLOCK as usize];
    let at = |img: &[u8], block: u64| img[(block * BLOCK) as usize..][..BLOCK as usize].to_vec();
    let mut written = vec![false; blocks as usize];
    let mut took = 0;
    for &(block, sent, ack) in &log {
        written[block as usize] = true;
        let got = at(&snap, block);
        if ack < issued {
            assert!(got == pattern(block), "snapshot: block {block} acknowledged before the snapshot was issued is missing its write");
        } else if sent > returned {
            assert!(
                got == zeros,
                "snapshot: block {block} written after the snapshot returned is not zeros"
            );
        } else {
            assert!(
                got == pattern(block) || got == zeros,
                "snapshot: block {block} (overlapping write) holds neither its write nor zeros"
            );
            took += usize::from(got != zeros);
        }
    }
    eprintln!("{took} of {between} overlapping writes are in the snapshot");
    for b in (0..blocks).filter(|&b| !written[b as usize]) {
        assert!(
            at(&snap, b) == zeros,
            "snapshot: block {b} never written is not zeros"
        );
    }

    // The volume holds every acknowledged write, through vlmcd and NBD.
    let mut live = Vec::new();
    for o in 0..objects {
        live.extend(c.volume_read(VLMCD, "w", o * OBJ, OBJ).unwrap());
    }
    let mut again = Nbd::go(&s.socket, "w");
    for b in 0..blocks {
        let expect = if written[b as usize] {
            pattern(b)
        } else {
            zeros.clone()
        };
        assert!(at(&live, b) == expect, "volume (vlmcd): block {b}");
    }
    for o in 0..objects {
        assert!(
            again.read(o * OBJ, OBJ as u32).unwrap() == live[(o * OBJ) as usize..][..OBJ as usize],
            "volume (NBD): object {o}"
        );
    }
    s.nbdd.assert_running();
}

/// A free loopback port (racy, but the window is short).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// qemu-io over nbdd's loopback TCP listener; the data lands in the volume.
#[test]
fn tcp_listener_serves_a_real_client() {
    const TEST: &str = "tcp_listener_serves_a_real_client";
    if !qemu_clients(TEST) || !nbdinfo(TEST) {
        return;
    }
    let port = free_port();
    let mut s = setup_with("nbd-tcp", |n| n.listen = Some(format!("127.0.0.1:{port}")));
    let c = s.p.client(Duration::from_secs(30));
    let size = 8 * OBJ;
    c.create_volume(VLMCD, "t", size, Some(OBJ)).unwrap();
    s.vlmc_ok(&["map", "t"]);
    let uri = format!("nbd://127.0.0.1:{port}/t");
    let o = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x5a 0 64k",
            "-c",
            "read -P 0x5a 0 64k",
            "-c",
            "write -P 0xa5 65000 70001",
            "-c",
            "read -P 0xa5 65000 70001",
            "-c",
            "read -P 0x5a 0 65000",
            "-c",
            "read -P 0 135001 100000",
            &uri,
        ],
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    for bad in ["fail", "error", "Pattern verification"] {
        assert!(!text.to_lowercase().contains(&bad.to_lowercase()), "{text}");
    }
    let mut expect = vec![0u8; size as usize];
    expect[..65536].fill(0x5a);
    expect[65000..65000 + 70001].fill(0xa5);
    assert!(c.volume_read(VLMCD, "t", 0, size).unwrap() == expect);
    // The size is advertised over TCP too.
    let o = run("nbdinfo", &["--size", &uri]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), size.to_string());
    // An unknown export over TCP: refused.
    let o = Command::new("qemu-io")
        .args(["-r", "-f", "raw", "-c", "read 0 512"])
        .arg(format!("nbd://127.0.0.1:{port}/nope"))
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    s.nbdd.assert_running();
}

// ---- options and limits of the handshake ----------------------------------

const REP_ACK: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_INFO: u32 = 3;
const REP_META_CONTEXT: u32 = 4;
const REP_ERR_INVALID: u32 = (1 << 31) + 3;
const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

/// The hello with `flags` as the client's flags.
fn hello_with(path: &Path, flags: u32) -> UnixStream {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut b = [0u8; 18];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b[..8], b"NBDMAGIC");
    // FIXED_NEWSTYLE and NO_ZEROES offered.
    assert_eq!(u16::from_be_bytes([b[16], b[17]]), 3);
    s.write_all(&flags.to_be_bytes()).unwrap();
    s
}

/// Every option reply up to the final one (ACK or an error).
fn opt_replies(s: &mut UnixStream, opt: u32) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let (o, kind, d) = opt_reply(s);
        assert_eq!(o, opt);
        out.push((kind, d));
        if kind != REP_SERVER && kind != REP_INFO && kind != REP_META_CONTEXT {
            return out;
        }
    }
}

fn name_and(name: &str, tail: &[u8]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(tail);
    d
}

/// `base:allocation` asked for `name`.
fn meta_query(name: &str) -> Vec<u8> {
    let q = b"base:allocation";
    let mut tail = 1u32.to_be_bytes().to_vec();
    tail.extend_from_slice(&(q.len() as u32).to_be_bytes());
    tail.extend_from_slice(q);
    name_and(name, &tail)
}

/// EXPORT_NAME with and without NO_ZEROES, LIST, INFO, ABORT,
/// SET_META_CONTEXT before STRUCTURED_REPLY, unknown client flags, and
/// block status with and without REQ_ONE.
#[test]
fn handshake_options_and_block_status() {
    let mut s = setup("nbd-options");
    let c = s.p.client(Duration::from_secs(30));
    let size = 16 * OBJ;
    c.create_volume(VLMCD, "o1", size, Some(OBJ)).unwrap();
    c.create_volume(VLMCD, "o2", size, Some(OBJ)).unwrap();
    s.vlmc_ok(&["map", "o1"]);
    s.vlmc_ok(&["map", "o2"]);
    // o1: data in objects 0-1 and 8, holes elsewhere.
    let data = random(2 * OBJ as usize, 5);
    c.volume_write(VLMCD, "o1", 0, &data, true).unwrap();
    c.volume_write(VLMCD, "o1", 8 * OBJ, &data[..4096], true)
        .unwrap();

    // EXPORT_NAME without NO_ZEROES: size, flags, 124 zero bytes; then
    // transmission.
    let mut h = hello_with(&s.socket, 1);
    send_opt(&mut h, 1, b"o1");
    let mut b = vec![0u8; 8 + 2 + 124];
    h.read_exact(&mut b).unwrap();
    assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), size);
    assert_eq!(u16::from_be_bytes([b[8], b[9]]) & 2, 0, "writable");
    assert!(b[10..].iter().all(|&z| z == 0));
    let mut n = Nbd {
        s: h,
        size,
        flags: 0,
    };
    assert_eq!(n.read(0, 4096).unwrap(), data[..4096]);

    // With NO_ZEROES: size and flags only; the next bytes are a reply.
    let mut h = hello_with(&s.socket, 3);
    send_opt(&mut h, 1, b"o1");
    let mut b = [0u8; 10];
    h.read_exact(&mut b).unwrap();
    assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), size);
    let mut n = Nbd {
        s: h,
        size,
        flags: 0,
    };
    assert_eq!(n.read(OBJ, 4096).unwrap(), data[OBJ as usize..][..4096]);

    // EXPORT_NAME of an unknown export: the connection is closed.
    let mut h = hello_with(&s.socket, 3);
    send_opt(&mut h, 1, b"nope");
    assert!(closed(&mut h));

    // LIST: every mapped export, then ACK; with data: invalid.
    let mut h = hello_with(&s.socket, 3);
    send_opt(&mut h, 3, &[]);
    let r = opt_replies(&mut h, 3);
    let mut names: Vec<Vec<u8>> = r
        .iter()
        .filter(|(k, _)| *k == REP_SERVER)
        .map(|(_, d)| {
            let n = u32::from_be_bytes(d[..4].try_into().unwrap()) as usize;
            d[4..4 + n].to_vec()
        })
        .collect();
    names.sort();
    assert_eq!(names, [b"o1".to_vec(), b"o2".to_vec()]);
    assert_eq!(r.last().unwrap().0, REP_ACK);
    send_opt(&mut h, 3, b"x");
    assert_eq!(opt_replies(&mut h, 3), [(REP_ERR_INVALID, vec![])]);

    // INFO: the export's size and flags, its name, block sizes; the
    // handshake goes on. Unknown: ERR_UNKNOWN.
    send_opt(&mut h, 6, &name_and("o2", &0u16.to_be_bytes()));
    let r = opt_replies(&mut h, 6);
    assert_eq!(r.last().unwrap().0, REP_ACK, "{r:?}");
    let infos: Vec<&Vec<u8>> = r
        .iter()
        .filter(|(k, _)| *k == REP_INFO)
        .map(|(_, d)| d)
        .collect();
    let export = infos
        .iter()
        .find(|d| d[..2] == [0, 0])
        .expect("INFO_EXPORT");
    assert_eq!(u64::from_be_bytes(export[2..10].try_into().unwrap()), size);
    let name = infos.iter().find(|d| d[..2] == [0, 1]).expect("INFO_NAME");
    assert_eq!(&name[2..], b"o2");
    let bs = infos
        .iter()
        .find(|d| d[..2] == [0, 3])
        .expect("INFO_BLOCK_SIZE");
    let at = |i: usize| u32::from_be_bytes(bs[2 + 4 * i..6 + 4 * i].try_into().unwrap());
    assert_eq!((at(0), at(1)), (1, 4096));
    assert!(at(2) >= 4096, "maximum block size {}", at(2));
    send_opt(&mut h, 6, &name_and("nope", &0u16.to_be_bytes()));
    assert_eq!(opt_replies(&mut h, 6), [(REP_ERR_UNKNOWN, vec![])]);

    // SET_META_CONTEXT before STRUCTURED_REPLY: invalid.
    send_opt(&mut h, 10, &meta_query("o1"));
    assert_eq!(opt_replies(&mut h, 10), [(REP_ERR_INVALID, vec![])]);

    // ABORT: acknowledged, then the connection closes.
    send_opt(&mut h, 2, &[]);
    assert_eq!(opt_replies(&mut h, 2), [(REP_ACK, vec![])]);
    assert!(closed(&mut h));

    // Unknown client flags: closed at once.
    let mut h = hello_with(&s.socket, 1 | (1 << 5));
    assert!(closed(&mut h));

    // Block status, structured: without REQ_ONE every extent of the range,
    // with it exactly one.
    let mut h = hello_with(&s.socket, 3);
    send_opt(&mut h, 8, &[]);
    assert_eq!(opt_replies(&mut h, 8), [(REP_ACK, vec![])]);
    send_opt(&mut h, 10, &meta_query("o1"));
    let r = opt_replies(&mut h, 10);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0].0, REP_META_CONTEXT);
    let ctx = u32::from_be_bytes(r[0].1[..4].try_into().unwrap());
    assert_eq!(&r[0].1[4..], b"base:allocation");
    let mut n = Nbd::go_on(h, "o1");
    let status = |n: &mut Nbd, flags: u16, handle: u64| -> Vec<(u32, u32)> {
        n.send(7, flags, handle, 0, (12 * OBJ) as u32, &[]);
        let mut hd = [0u8; 20];
        n.s.read_exact(&mut hd).unwrap();
        assert_eq!(u32::from_be_bytes(hd[..4].try_into().unwrap()), 0x668e_33ef);
        assert_eq!(u16::from_be_bytes([hd[4], hd[5]]) & 1, 1, "DONE");
        assert_eq!(u16::from_be_bytes([hd[6], hd[7]]), 5, "BLOCK_STATUS");
        assert_eq!(u64::from_be_bytes(hd[8..16].try_into().unwrap()), handle);
        let len = u32::from_be_bytes(hd[16..20].try_into().unwrap()) as usize;
        let mut d = vec![0u8; len];
        n.s.read_exact(&mut d).unwrap();
        assert_eq!(u32::from_be_bytes(d[..4].try_into().unwrap()), ctx);
        d[4..]
            .chunks(8)
            .map(|e| {
                (
                    u32::from_be_bytes(e[..4].try_into().unwrap()),
                    u32::from_be_bytes(e[4..].try_into().unwrap()),
                )
            })
            .collect()
    };
    let all = status(&mut n, 0, 41);
    let o = OBJ as u32;
    assert_eq!(all, [(2 * o, 0), (6 * o, 3), (o, 0), (3 * o, 3)], "{all:?}");
    let one = status(&mut n, 1 << 3, 42);
    assert_eq!(one, [(2 * o, 0)], "{one:?}");
    // Issue 19: errors on READ and BLOCK_STATUS refused before any I/O
    // (past the end) came back as simple replies, which the protocol
    // forbids once structured replies are negotiated: one final
    // NBD_REPLY_TYPE_ERROR chunk each (EINVAL), and the connection goes on.
    for (kind, handle) in [(0u16, 43u64), (7, 44)] {
        n.send(kind, 0, handle, size, 4096, &[]);
        let mut hd = [0u8; 20];
        n.s.read_exact(&mut hd).unwrap();
        assert_eq!(
            u32::from_be_bytes(hd[..4].try_into().unwrap()),
            0x668e_33ef,
            "command {kind}: a structured reply"
        );
        assert_eq!(u16::from_be_bytes([hd[4], hd[5]]) & 1, 1, "DONE");
        assert_eq!(u16::from_be_bytes([hd[6], hd[7]]), (1 << 15) + 1, "ERROR");
        assert_eq!(u64::from_be_bytes(hd[8..16].try_into().unwrap()), handle);
        let len = u32::from_be_bytes(hd[16..20].try_into().unwrap()) as usize;
        let mut d = vec![0u8; len];
        n.s.read_exact(&mut d).unwrap();
        assert_eq!(u32::from_be_bytes(d[..4].try_into().unwrap()), 22, "EINVAL");
    }
    assert_eq!(status(&mut n, 1 << 3, 45), [(2 * o, 0)]);
    s.nbdd.assert_running();
}

/// `vlmc map --readonly` of a writable volume: exported read-only (writes
/// get EPERM), no lock taken (not open on the mapper); and nbdd killed
/// and restarted serves the same mapped set: read-only exports stay
/// read-only, the writable one stays writable, the data intact.
#[test]
fn map_readonly_and_nbdd_restarted_with_its_mapped_set() {
    let mut s = setup("nbd-restart");
    let c = s.p.client(Duration::from_secs(30));
    let size = 8 * OBJ;
    c.create_volume(VLMCD, "rw", size, Some(OBJ)).unwrap();
    c.create_volume(VLMCD, "ro", size, Some(OBJ)).unwrap();
    let ro_data = random(size as usize, 21);
    c.volume_write(VLMCD, "ro", 0, &ro_data, true).unwrap();
    c.close_volume(VLMCD, "ro").unwrap();
    assert!(c.open_volumes(MAPPER).unwrap().is_empty());

    s.vlmc_ok(&["map", "--readonly", "ro"]);
    s.vlmc_ok(&["map", "rw"]);
    let shown: serde_json::Value =
        serde_json::from_str(&s.vlmc_ok(&["--json", "showmapped"])).unwrap();
    let row = |name: &str| {
        shown
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(row("ro")["readonly"], true, "{shown}");
    assert_eq!(row("rw")["readonly"], false, "{shown}");
    // Only the writable mapping opened its volume (took its lock).
    assert_eq!(c.open_volumes(MAPPER).unwrap(), ["rw".to_owned()]);
    assert!(!c.volume_info(VLMCD, "ro").unwrap().readonly);

    let check = |s: &Setup, w: &[u8]| {
        let mut ro = Nbd::go(&s.socket, "ro");
        assert_ne!(ro.flags & 2, 0, "ro exported read-only");
        assert_eq!(ro.write(0, &[1; 512]), 1, "EPERM");
        assert_eq!(ro.read(0, size as u32).unwrap(), ro_data);
        let mut rw = Nbd::go(&s.socket, "rw");
        assert_eq!(rw.flags & 2, 0, "rw exported writable");
        assert_eq!(rw.read(0, w.len() as u32).unwrap(), w);
    };
    let w = random(3 * OBJ as usize, 22);
    let mut rw = Nbd::go(&s.socket, "rw");
    assert_eq!(rw.write(100, &w), 0);
    drop(rw);
    let mut expect = vec![0u8; 100];
    expect.extend_from_slice(&w);
    check(&s, &expect);
    assert_eq!(c.volume_read(VLMCD, "ro", 0, size).unwrap(), ro_data);

    // kill -9 and a restart with the same arguments.
    s.nbdd.kill9();
    s.nbdd.restart();
    check(&s, &expect);
    let mut rw = Nbd::go(&s.socket, "rw");
    assert_eq!(rw.write(0, &[7; 100]), 0);
    expect[..100].fill(7);
    check(&s, &expect);
    assert_eq!(c.open_volumes(MAPPER).unwrap(), ["rw".to_owned()]);
    drop(rw);
    s.nbdd.assert_running();
}

/// The handshake and write timeouts (1 s here): a client silent in its
/// handshake, or one that stops reading its replies, is cut off, while a
/// well-behaved client on the same export goes on.
#[test]
fn handshake_and_write_timeouts_cut_off_only_the_stalled_client() {
    let s = setup_with("nbd-timeouts", |n| {
        n.write_timeout = Some(1);
        n.handshake_timeout = Some(1);
    });
    let c = s.p.client(Duration::from_secs(30));
    let size = 16 * OBJ;
    c.create_volume(VLMCD, "t", size, Some(OBJ)).unwrap();
    let data = random(size as usize, 31);
    c.volume_write(VLMCD, "t", 0, &data, true).unwrap();
    s.vlmc_ok(&["map", "t"]);
    let mut good = Nbd::go(&s.socket, "t");
    let check = |good: &mut Nbd, round: u64| {
        let off = (round * 7919) % (size - 4096);
        assert_eq!(
            good.read(off, 4096).unwrap(),
            data[off as usize..][..4096],
            "round {round}"
        );
    };
    check(&mut good, 0);

    // Silent after the hello, and silent mid-option: both closed by the
    // server (well within the 20 s read timeout of `closed`).
    let mut silent = hello(&s.socket);
    let mut partial = hello(&s.socket);
    partial.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
    assert!(closed(&mut silent), "a silent handshake was not cut off");
    assert!(closed(&mut partial), "a stalled option was not cut off");
    check(&mut good, 1);

    // A client that asks for 64 MiB of reads and reads none of it: its
    // replies fill the socket, and the server cuts it off.
    let clients = |s: &Setup| -> u64 {
        let shown: serde_json::Value =
            serde_json::from_str(&s.vlmc_ok(&["--json", "showmapped"])).unwrap();
        shown[0]["clients"].as_u64().unwrap()
    };
    let mut stalled = Nbd::go(&s.socket, "t");
    // (nbdd publishes a client just after its handshake.)
    let deadline = Instant::now() + Duration::from_secs(30);
    while clients(&s) != 2 {
        assert!(
            Instant::now() < deadline,
            "the second client is never counted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..64 {
        stalled.send(0, 0, i, 0, size as u32, &[]);
    }
    // Cut off: only the good client is counted (reading nothing meanwhile,
    // so nothing unblocks the server's writes).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 2;
    while clients(&s) != 1 {
        assert!(
            Instant::now() < deadline,
            "a client that reads nothing is still connected after 30 s"
        );
        check(&mut good, round);
        round += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its connection ends (after what was already buffered).
    assert!(
        closed(&mut stalled.s),
        "the stalled client's connection is open"
    );
    check(&mut good, round);
    assert_eq!(good.write(0, &data[..512]), 0);
}

/// The multi-connection promise: a FLUSH on one connection drains the
/// volume's writes in flight from every connection, so it completes only
/// after a write in flight on another connection has been acknowledged.
/// (Held in flight by stopping mapperd, which a first write to an object
/// needs and a FLUSH alone does not.)
#[test]
fn a_flush_on_one_connection_waits_for_writes_in_flight_on_another() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let mut s = setup("nbd-multi-conn");
    let c = s.p.client(Duration::from_secs(30));
    let size = 16 * OBJ;
    c.create_volume(VLMCD, "mc", size, Some(OBJ)).unwrap();
    s.vlmc_ok(&["map", "mc"]);
    let mut a = Nbd::go(&s.socket, "mc");
    let mut b = Nbd::go(&s.socket, "mc");
    assert_ne!(a.flags & (1 << 8), 0, "CAN_MULTI_CONN");
    let mapperd = Pid::from_raw(s.p.mapperd.pid().unwrap() as i32);
    kill(mapperd, Signal::SIGSTOP).unwrap();
    // Control: with no write in flight, a FLUSH completes without mapperd.
    b.send(3, 0, 10, 0, 0, &[]);
    assert_eq!(b.reply(), (0, 10), "a FLUSH alone needs no mapperd");

    // A first write on A, held at the stopped mapper.
    let d = random(8192, 41);
    a.send(1, 0, 1, 3 * OBJ, d.len() as u32, &d);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.stats(VLMCD).unwrap().in_flight < 2 {
        // (The STATS call itself is one of vlmcd's requests in flight.)
        assert!(Instant::now() < deadline, "vlmcd never got the write");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A FLUSH on B does not complete while A's write is in flight (a
    // window, not a measure: a slow machine can only hide a bug here).
    b.send(3, 0, 11, 0, 0, &[]);
    b.s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut one = [0u8; 1];
    let early = b.s.read(&mut one);
    if !matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    {
        let _ = kill(mapperd, Signal::SIGCONT);
        panic!("the FLUSH answered while a write was in flight: {early:?}");
    }
    b.s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    kill(mapperd, Signal::SIGCONT).unwrap();
    assert_eq!(a.reply(), (0, 1));
    assert_eq!(b.reply(), (0, 11));
    assert_eq!(b.read(3 * OBJ, 8192).unwrap(), d);
    s.nbdd.assert_running();
}

/// Issue 16: a request vlmcd held when it died is sent again once vlmcd is
/// back (the client sees no error), and a FLUSH received after a write is
/// answered only after that write, retried or not.
#[test]
fn requests_a_killed_vlmcd_held_are_retried_once_it_is_back() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let mut s = setup("nbd-retry");
    let c = s.p.client(Duration::from_secs(30));
    c.create_volume(VLMCD, "rt", 16 * OBJ, Some(OBJ)).unwrap();
    s.vlmc_ok(&["map", "rt"]);
    let mut a = Nbd::go(&s.socket, "rt");
    // A first write, held in vlmcd by the stopped mapper, then a FLUSH.
    let mapperd = Pid::from_raw(s.p.mapperd.pid().unwrap() as i32);
    kill(mapperd, Signal::SIGSTOP).unwrap();
    let d = random(8192, 43);
    a.send(1, 0, 1, 3 * OBJ, d.len() as u32, &d);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.stats(VLMCD).unwrap().in_flight < 2 {
        assert!(Instant::now() < deadline, "vlmcd never got the write");
        std::thread::sleep(Duration::from_millis(5));
    }
    a.send(3, 0, 2, 0, 0, &[]);
    // vlmcd dies holding the write ("peer died" to nbdd) and stays away
    // for a while (nbdd's sends find nobody on its port).
    s.p.vlmcd.kill9();
    kill(mapperd, Signal::SIGCONT).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    s.p.vlmcd.restart();
    a.s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(a.reply(), (0, 1), "the write");
    assert_eq!(a.reply(), (0, 2), "the FLUSH, after the write");
    assert_eq!(a.read(3 * OBJ, 8192).unwrap(), d);
    s.nbdd.assert_running();
}

/// Issue 15: after the same writes (random offsets and sizes, unaligned,
/// across granule and object boundaries), a clone of a snapshot reads
/// exactly like a qcow2 overlay on the same base, and so does a snapshot
/// of the clone taken halfway like the overlay copied at that point
/// (`qemu-img compare`).
#[test]
fn a_clone_reads_like_a_qcow2_overlay_after_the_same_writes() {
    const TEST: &str = "a_clone_reads_like_a_qcow2_overlay_after_the_same_writes";
    if !qemu_clients(TEST) {
        return;
    }
    let s = setup("nbd-overlay");
    let c = s.p.client(Duration::from_secs(30));
    let size = 16 * OBJ;
    let base_path = s.dir.path().join("base.raw");
    std::fs::write(&base_path, random(size as usize, 77)).unwrap();
    let base = base_path.to_str().unwrap();
    c.create_volume(VLMCD, "base", size, Some(OBJ)).unwrap();
    s.vlmc_ok(&["map", "base"]);
    run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            base,
            &s.uri("base"),
        ],
    );
    s.vlmc_ok(&["unmap", "base"]);
    c.snapshot(VLMCD, "base", "gold").unwrap();
    c.clone_volume(VLMCD, "gold", "vm", None).unwrap();
    s.vlmc_ok(&["map", "vm"]);
    let overlay_path = s.dir.path().join("overlay.qcow2");
    let overlay = overlay_path.to_str().unwrap();
    run(
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay,
        ],
    );
    // The same writes to both, in two halves.
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut halves: Vec<Vec<String>> = Vec::new();
    for _ in 0..2 {
        let mut cmds = Vec::new();
        for _ in 0..40 {
            let off = next(size - 1);
            let max = match next(3) {
                0 => 3 * OBJ,
                1 => 9000,
                _ => 700,
            };
            let len = (1 + next(max)).min(size - off);
            cmds.push(format!("write -P {} {off} {len}", 1 + next(254)));
        }
        halves.push(cmds);
    }
    let apply = |fmt: &str, target: &str, cmds: &[String]| {
        let mut args = vec!["-f", fmt];
        for c in cmds {
            args.push("-c");
            args.push(c);
        }
        args.push(target);
        run("qemu-io", &args);
    };
    apply("raw", &s.uri("vm"), &halves[0]);
    apply("qcow2", overlay, &halves[0]);
    // Halfway: a snapshot of the clone, and a copy of the overlay.
    c.snapshot(VLMCD, "vm", "vm-half").unwrap();
    let half_path = s.dir.path().join("half.qcow2");
    std::fs::copy(&overlay_path, &half_path).unwrap();
    apply("raw", &s.uri("vm"), &halves[1]);
    apply("qcow2", overlay, &halves[1]);
    run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", &s.uri("vm"), overlay],
    );
    s.vlmc_ok(&["map", "vm-half"]);
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            &s.uri("vm-half"),
            half_path.to_str().unwrap(),
        ],
    );
    // And the base is untouched.
    s.vlmc_ok(&["map", "gold"]);
    run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", &s.uri("gold"), base],
    );
}

/// Issue 19: concurrent `vlmc map` lost mappings (the mapped set was
/// read, changed and rewritten without a lock: volumes left open and
/// locked, `unmap` saying "not mapped"). Eight maps at once, then eight
/// unmaps at once: every one takes effect.
#[test]
fn concurrent_maps_and_unmaps_lose_nothing() {
    let s = setup("nbd-concurrent-map");
    let c = s.p.client(Duration::from_secs(30));
    let names: Vec<String> = (0..8).map(|i| format!("cm{i}")).collect();
    for n in &names {
        c.create_volume(VLMCD, n, 4 * OBJ, Some(OBJ)).unwrap();
    }
    assert!(c.open_volumes(MAPPER).unwrap().is_empty());
    let all_at_once = |verb: &str| {
        let children: Vec<_> = names
            .iter()
            .map(|n| {
                Command::new(workspace_bin("vlmc"))
                    .arg("--config")
                    .arg(&s.config)
                    .args([verb, n.as_str()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (n, child) in names.iter().zip(children) {
            let o = child.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "vlmc {verb} {n}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    };
    all_at_once("map");
    let shown: serde_json::Value =
        serde_json::from_str(&s.vlmc_ok(&["--json", "showmapped"])).unwrap();
    let mut mapped: Vec<String> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    mapped.sort();
    assert_eq!(mapped, names, "mappings lost");
    let mut open = c.open_volumes(MAPPER).unwrap();
    open.sort();
    assert_eq!(open, names);
    all_at_once("unmap");
    assert_eq!(s.vlmc_ok(&["showmapped"]), "");
    assert!(c.open_volumes(MAPPER).unwrap().is_empty());
}

/// Issue 19: `vlmc remove` removed a mapped snapshot under a connected
/// client, and `vlmc close` of a volume mapped read-write released its
/// storage lock while the export was live. Mapped names are refused for
/// remove, close and rename unless forced; the export goes on.
#[test]
fn mapped_volumes_are_refused_for_remove_close_and_rename() {
    let s = setup("nbd-mapped-refusals");
    let c = s.p.client(Duration::from_secs(30));
    c.create_volume(VLMCD, "vol", 4 * OBJ, Some(OBJ)).unwrap();
    c.volume_write(VLMCD, "vol", 0, b"data", true).unwrap();
    c.close_volume(VLMCD, "vol").unwrap();
    c.snapshot(VLMCD, "vol", "snap").unwrap();
    s.vlmc_ok(&["map", "vol"]);
    s.vlmc_ok(&["map", "snap"]);
    let mut client = Nbd::go(&s.socket, "snap");
    for args in [
        &["close", "vol"][..],
        &["remove", "snap"],
        &["remove", "vol"],
        &["rename", "vol", "other"],
    ] {
        let o = s.vlmc(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "vlmc {args:?}: {err}");
        assert!(err.contains("is mapped for NBD"), "vlmc {args:?}: {err}");
    }
    assert_eq!(c.open_volumes(MAPPER).unwrap(), ["vol".to_owned()]);
    assert_eq!(client.read(0, 4).unwrap(), b"data");
    let mut rw = Nbd::go(&s.socket, "vol");
    assert_eq!(rw.write(0, b"more"), 0);
    drop(rw);
    drop(client);
    // Forced, as asked; the unmap that follows still succeeds.
    s.vlmc_ok(&["close", "-f", "vol"]);
    assert!(c.open_volumes(MAPPER).unwrap().is_empty());
    s.vlmc_ok(&["unmap", "vol"]);
    s.vlmc_ok(&["unmap", "snap"]);
    assert_eq!(s.vlmc_ok(&["showmapped"]), "");
}

/// Issue 19: one NBD connection with many 4 MiB reads in flight got most
/// of them failed with EIO (vlmcd could not get sub-request buffers and
/// failed them as Busy, which nbdd passed on). A full pool is
/// back-pressure: every read completes with the right data.
#[test]
fn many_large_reads_in_flight_all_complete() {
    let mut s = setup("nbd-large-reads");
    let c = s.p.client(Duration::from_secs(30));
    const MIB4: u64 = 4 << 20;
    let size = 16 * MIB4;
    c.create_volume(VLMCD, "big", size, None).unwrap();
    let data = random(size as usize, 31);
    for i in 0..16 {
        let at = (i * MIB4) as usize;
        c.volume_write(VLMCD, "big", i * MIB4, &data[at..at + MIB4 as usize], true)
            .unwrap();
    }
    s.vlmc_ok(&["map", "big"]);
    let mut n = Nbd::go(&s.socket, "big");
    // Every 4 MiB block twice: 32 reads in flight on one connection.
    let reads: Vec<u64> = (0..32).map(|i| (i % 16) * MIB4).collect();
    for (handle, &offset) in reads.iter().enumerate() {
        n.send(0, 0, handle as u64, offset, MIB4 as u32, &[]);
    }
    let mut failed = 0;
    for _ in 0..reads.len() {
        let (error, handle) = n.reply();
        if error != 0 {
            failed += 1;
            continue;
        }
        let mut got = vec![0u8; MIB4 as usize];
        n.s.read_exact(&mut got).unwrap();
        let at = reads[handle as usize] as usize;
        assert!(
            got == data[at..at + MIB4 as usize],
            "read {handle}: wrong data"
        );
    }
    assert_eq!(failed, 0, "reads failed out of {}", reads.len());
    s.nbdd.assert_running();
}
