//! The real `archipelago` binary on a private configuration: start,
//! status, the pipeline in use, a crashed role restarted by the
//! supervisor, stop; and configurations and starts that must fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use archipelago_client::Client;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_archipelago");
const VLMCD: u32 = 9;

/// A private installation: config, segment, data, run and log dirs in a
/// temporary directory. Drop kills every process it saw.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    pids: BTreeSet<u32>,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        let bin_dir = Path::new(EXE).parent().unwrap();
        for peer in ["blockerd", "mapperd", "vlmcd"] {
            assert!(
                bin_dir.join(peer).exists(),
                "{peer} is not built next to {EXE}: run `cargo build --workspace --bins` first"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let text = format!(
            r#"
[segment]
name = "{d}/segment"
ports = 64
static_ports = 16
requests = 1024
buffer_mib = 64
[host]
id = "test-host"
[paths]
data_dir = "{d}/data"
run_dir = "{d}/run"
log_dir = "{d}/log"
[blockerb]
port = 6
threads = 2
backend = "memory"
[blockerm]
port = 7
threads = 2
backend = "files"
[mapperd]
port = 8
threads = 2
[vlmcd]
port = {VLMCD}
threads = 2
[nbdd]
port = 10
listen = "127.0.0.1:0"
{extra}
"#
        );
        let config = dir.path().join("archipelago.toml");
        std::fs::write(&config, text).unwrap();
        Setup {
            dir,
            config,
            pids: BTreeSet::new(),
        }
    }

    fn run(&mut self, args: &[&str]) -> Output {
        let out = Command::new(EXE)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("ARCHIPELAGO_CONFIG")
            .output()
            .unwrap();
        self.note_pids();
        out
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn pid_of(&self, file: &str) -> Option<u32> {
        std::fs::read_to_string(self.path(&format!("run/{file}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Remembers every pid in the run directory, to kill on drop.
    fn note_pids(&mut self) {
        for f in [
            "supervisor",
            "blockerb",
            "blockerm",
            "mapperd",
            "vlmcd",
            "nbdd",
        ] {
            if let Some(pid) = self.pid_of(f) {
                self.pids.insert(pid);
            }
        }
    }

    fn status(&mut self) -> (bool, Value) {
        let out = self.run(&["status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&out)));
        for r in v["roles"].as_array().unwrap() {
            if let Some(pid) = r["pid"].as_u64() {
                self.pids.insert(pid as u32);
            }
        }
        (out.status.success(), v)
    }

    fn segment(&self) -> String {
        self.path("segment").display().to_string()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.note_pids();
        for &pid in &self.pids {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn role<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == name)
        .unwrap()
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..].trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ salt ^ (i >> 8) as u8)
        .collect()
}

#[test]
fn start_use_crash_restart_stop() {
    let mut s = Setup::new("");
    // [mapperd] cache_mib reaches mapperd's command line.
    let cfg = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("[mapperd]\n", "[mapperd]\ncache_mib = 1\n");
    std::fs::write(&s.config, cfg).unwrap();
    let out = s.run(&["start"]);
    assert!(out.status.success(), "start: {}", text(&out));

    let (ok, st) = s.status();
    assert!(ok, "status: {st:#}");
    for name in ["blockerb", "blockerm", "mapperd", "vlmcd", "nbdd"] {
        let r = role(&st, name);
        assert_eq!(r["alive"], true, "{st:#}");
        assert!(r["uptime_ms"].is_u64(), "no STATS for {name}: {st:#}");
        assert_eq!(
            r["pid"].as_u64().map(|p| p as u32),
            s.pid_of(name),
            "pid file of {name}"
        );
    }
    let before: Vec<Value> = ["blockerb", "blockerm", "mapperd", "vlmcd"]
        .iter()
        .map(|n| role(&st, n)["pid"].clone())
        .collect();
    let cmdline = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    let m = cmdline(s.pid_of("mapperd").unwrap());
    assert!(m.contains("\u{0}--cache-mib\u{0}1\u{0}"), "{m:?}");

    // Starting what runs is a no-op.
    let out = s.run(&["start"]);
    assert!(out.status.success(), "second start: {}", text(&out));
    let (ok, st) = s.status();
    assert!(ok);
    let after: Vec<Value> = ["blockerb", "blockerm", "mapperd", "vlmcd"]
        .iter()
        .map(|n| role(&st, n)["pid"].clone())
        .collect();
    assert_eq!(before, after, "a second start restarted something");

    // The pipeline works.
    let client = Client::connect(&s.segment())
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    client
        .create_volume(VLMCD, "volume-a", 16 << 20, None)
        .unwrap();
    let data = pattern(256 << 10, 7);
    client
        .volume_write(VLMCD, "volume-a", 1 << 20, &data, true)
        .unwrap();
    assert_eq!(
        client
            .volume_read(VLMCD, "volume-a", 1 << 20, data.len() as u64)
            .unwrap(),
        data
    );

    // A crashed mapperd comes back, and the data is still there.
    let old = s.pid_of("mapperd").expect("mapperd pid file");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, st) = s.status();
        let m = role(&st, "mapperd");
        if ok
            && m["alive"] == true
            && m["pid"].as_u64() != Some(u64::from(old))
            && m["restarts"].as_u64() >= Some(1)
        {
            break;
        }
        assert!(Instant::now() < deadline, "mapperd not restarted: {st:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let back = loop {
        match client.volume_read(VLMCD, "volume-a", 1 << 20, data.len() as u64) {
            Ok(b) => break b,
            Err(e) => {
                assert!(Instant::now() < deadline, "read after the restart: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(back, data);
    // The restarted mapperd has it too.
    let m = cmdline(s.pid_of("mapperd").unwrap());
    assert!(m.contains("\u{0}--cache-mib\u{0}1\u{0}"), "{m:?}");
    drop(client);

    // Volumes mapped for NBD: stop refuses, changing nothing.
    let mapped = s.path("run/nbd-mapped.json");
    std::fs::write(
        &mapped,
        r#"{"volumes":[{"name":"volume-a","readonly":false}]}"#,
    )
    .unwrap();
    let out = s.run(&["stop"]);
    assert!(
        !out.status.success(),
        "stop with a mapped volume: {}",
        text(&out)
    );
    assert!(text(&out).contains("mapped for NBD"), "{}", text(&out));
    let (ok, st) = s.status();
    assert!(ok, "status after a refused stop: {st:#}");
    std::fs::remove_file(&mapped).unwrap();

    // Stop: everything goes, status says so.
    let out = s.run(&["stop"]);
    assert!(out.status.success(), "stop: {}", text(&out));
    let (ok, st) = s.status();
    assert!(!ok, "status after stop: {st:#}");
    for name in ["blockerb", "blockerm", "mapperd", "vlmcd", "nbdd"] {
        assert_eq!(role(&st, name)["alive"], false, "{st:#}");
    }
    assert!(st["supervisor_pid"].is_null(), "{st:#}");
    let left: Vec<u32> = s.pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[test]
fn bad_configurations_name_the_key() {
    for (extra, expect) in [
        ("[colour]\nred = 1\n", "colour"),
        ("", "vlmcd.port: 8 is also mapperd.port"),
    ] {
        let mut s = Setup::new(extra);
        if extra.is_empty() {
            let text = std::fs::read_to_string(&s.config)
                .unwrap()
                .replace("port = 9", "port = 8");
            std::fs::write(&s.config, text).unwrap();
        }
        for args in [&["config"][..], &["start"], &["status"]] {
            let out = s.run(args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} accepted: {}", text(&out));
            assert!(err.contains(expect), "{args:?}: {err:?} lacks {expect:?}");
        }
    }
    // And the effective configuration prints and reloads.
    let mut s = Setup::new("");
    let out = s.run(&["config"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.contains("[mapperd]") && printed.contains("port = 8"),
        "{printed}"
    );
    std::fs::write(&s.config, &printed).unwrap();
    let again = s.run(&["config", "--json"]);
    assert!(again.status.success(), "{}", text(&again));
    let v: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["host"]["id"], "test-host");
}

#[test]
fn a_role_that_cannot_start_is_named_with_its_log() {
    // blockerm's data directory is a regular file: blockerd exits.
    let mut s = Setup::new("");
    let blocker_file = s.path("not-a-dir");
    std::fs::write(&blocker_file, "x").unwrap();
    let text_cfg = std::fs::read_to_string(&s.config).unwrap().replace(
        "backend = \"files\"",
        &format!(
            "backend = \"files\"\ndata_dir = \"{}\"",
            blocker_file.display()
        ),
    );
    std::fs::write(&s.config, text_cfg).unwrap();
    let out = s.run(&["start"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(err.contains("blockerm"), "{err}");
    assert!(err.contains("last lines of"), "{err}");
    assert!(err.contains("not-a-dir"), "the log is not shown: {err}");
    // Nothing was left running: blockerb was stopped again.
    let (ok, st) = s.status();
    assert!(!ok);
    assert_eq!(role(&st, "blockerb")["alive"], false, "{st:#}");

    // A RADOS blocker whose cluster cannot be reached (a configuration
    // naming a monitor nobody runs) fails to start, saying why.
    let mut s = Setup::new("");
    let conf = s.path("ceph.conf");
    std::fs::write(
        &conf,
        "[global]\nmon_host = 127.0.0.1:1\nclient_mount_timeout = 2\n",
    )
    .unwrap();
    let text_cfg = std::fs::read_to_string(&s.config).unwrap().replace(
        "backend = \"memory\"",
        &format!(
            "backend = \"rados\"\npool = \"blocks\"\nceph_conf = \"{}\"",
            conf.display()
        ),
    );
    std::fs::write(&s.config, text_cfg).unwrap();
    let out = s.run(&["start"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("blockerb") && err.contains("blocks") && err.contains("connect"),
        "{err}"
    );
}

/// Waits until `status` reports every role alive and `name` on a pid
/// other than `old`, restarted at least once.
fn wait_restarted(s: &mut Setup, name: &str, old: u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, st) = s.status();
        let r = role(&st, name);
        if ok
            && r["alive"] == true
            && r["pid"].as_u64().is_some_and(|p| p != u64::from(old))
            && r["restarts"].as_u64() >= Some(1)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{name} not restarted: {st:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads `len` bytes of `volume` at `offset`, retrying while the pipeline
/// comes back.
fn read_back(client: &Client, volume: &str, offset: u64, len: usize, after: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.volume_read(VLMCD, volume, offset, len as u64) {
            Ok(b) => return b,
            Err(e) => {
                assert!(Instant::now() < deadline, "read after {after}: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn stop_is_refused_while_a_volume_is_open() {
    let mut s = Setup::new("");
    let out = s.run(&["start"]);
    assert!(out.status.success(), "start: {}", text(&out));
    let (ok, st) = s.status();
    assert!(ok, "{st:#}");
    let pids: Vec<Value> = ["blockerb", "blockerm", "mapperd", "vlmcd"]
        .iter()
        .map(|n| role(&st, n)["pid"].clone())
        .collect();
    let supervisor = st["supervisor_pid"].clone();
    assert!(supervisor.is_u64(), "{st:#}");

    let client = Client::connect(&s.segment())
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    client
        .create_volume(VLMCD, "busy-volume", 4 << 20, None)
        .unwrap();
    client
        .create_volume(VLMCD, "idle-volume", 4 << 20, None)
        .unwrap();
    client.open_volume(VLMCD, "busy-volume", true).unwrap();
    // A read-only open is not an open that stops `stop`.
    client.open_volume(VLMCD, "idle-volume", false).unwrap();

    for args in [&["stop"][..], &["stop", "vlmcd"], &["stop", "blockerb"]] {
        let out = s.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted: {}", text(&out));
        assert!(err.contains("busy-volume"), "{args:?}: {err}");
        assert!(!err.contains("idle-volume"), "{args:?}: {err}");
        assert!(err.contains("-f"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        // Nothing changed.
        let (ok, st) = s.status();
        assert!(ok, "{args:?} stopped something: {st:#}");
        let now: Vec<Value> = ["blockerb", "blockerm", "mapperd", "vlmcd"]
            .iter()
            .map(|n| role(&st, n)["pid"].clone())
            .collect();
        assert_eq!(now, pids, "{args:?}");
        assert_eq!(st["supervisor_pid"], supervisor, "{args:?}: {st:#}");
    }

    // -f stops everything, the volume still open.
    let out = s.run(&["stop", "-f"]);
    assert!(out.status.success(), "stop -f: {}", text(&out));
    drop(client);
    let (ok, st) = s.status();
    assert!(!ok, "{st:#}");
    for name in ["blockerb", "blockerm", "mapperd", "vlmcd"] {
        assert_eq!(role(&st, name)["alive"], false, "{st:#}");
    }
    assert!(st["supervisor_pid"].is_null(), "{st:#}");

    // And once the volume is closed, a plain stop goes through.
    let out = s.run(&["start"]);
    assert!(out.status.success(), "start again: {}", text(&out));
    let client = Client::connect(&s.segment())
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    client.open_volume(VLMCD, "busy-volume", true).unwrap();
    assert!(!s.run(&["stop", "mapperd"]).status.success());
    client.close_volume(VLMCD, "busy-volume").unwrap();
    drop(client);
    let out = s.run(&["stop"]);
    assert!(out.status.success(), "stop after close: {}", text(&out));
    let (ok, _) = s.status();
    assert!(!ok);
}

/// A started installation (configuration `extra` added) with both
/// blockers on files, so that what they hold survives their restarts, and
/// a client of its segment.
fn start_on_files(extra: &str) -> (Setup, Client) {
    let mut s = Setup::new(extra);
    let cfg = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("backend = \"memory\"", "backend = \"files\"");
    std::fs::write(&s.config, cfg).unwrap();
    let out = s.run(&["start"]);
    assert!(out.status.success(), "start: {}", text(&out));
    let client = Client::connect(&s.segment())
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    (s, client)
}

#[test]
fn every_role_killed_comes_back_with_the_data() {
    let (mut s, client) = start_on_files("");
    client
        .create_volume(VLMCD, "volume-k", 16 << 20, None)
        .unwrap();
    let data = pattern(192 << 10, 11);
    client
        .volume_write(VLMCD, "volume-k", 3 << 20, &data, true)
        .unwrap();
    client.close_volume(VLMCD, "volume-k").unwrap();

    for name in ["blockerb", "blockerm", "mapperd", "vlmcd"] {
        let old = s.pid_of(name).unwrap_or_else(|| panic!("{name} pid file"));
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
        wait_restarted(&mut s, name, old);
        let back = read_back(&client, "volume-k", 3 << 20, data.len(), name);
        assert!(back == data, "data changed after {name} was killed");
    }

    // Still writable after it all, and nothing is left open.
    let more = pattern(64 << 10, 5);
    client
        .volume_write(VLMCD, "volume-k", 0, &more, true)
        .unwrap();
    client.close_volume(VLMCD, "volume-k").unwrap();
    assert_eq!(
        client
            .volume_read(VLMCD, "volume-k", 0, more.len() as u64)
            .unwrap(),
        more
    );
    drop(client);
    let out = s.run(&["stop"]);
    assert!(out.status.success(), "stop: {}", text(&out));
    let left: Vec<u32> = s.pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "processes left: {left:?}");
}

/// Both blockers on RADOS, from the configuration: the pipeline works, and
/// a blocker killed and restarted by the supervisor (a new librados
/// client) serves the same data; the map blocker takes its host's lock
/// back, so the open volume stays writable. Needs a cluster (see
/// `archipelago_rados::testenv`).
#[test]
fn both_blockers_on_rados_from_the_configuration() {
    let Some((conf, pool)) = archipelago_rados::testenv::cluster("archipelago rados") else {
        return;
    };
    let ns = archipelago_rados::testenv::unique_namespace("cli");
    let mut s = Setup::new("");
    let rados = format!(
        "backend = \"rados\"\npool = \"{pool}\"\nceph_conf = \"{}\"\nnamespace = \"{ns}\"",
        conf.display()
    );
    let text_cfg = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("backend = \"memory\"", &rados)
        .replace("backend = \"files\"", &rados);
    std::fs::write(&s.config, text_cfg).unwrap();
    let out = s.run(&["config"]);
    assert!(text(&out).contains(&ns), "{}", text(&out));
    let out = s.run(&["start"]);
    assert!(out.status.success(), "start: {}", text(&out));

    let client = Client::connect(&s.segment())
        .unwrap()
        .with_timeout(Duration::from_secs(20));
    client
        .create_volume(VLMCD, "vol-r", 16 << 20, None)
        .unwrap();
    let data = pattern(1 << 20, 3);
    client
        .volume_write(VLMCD, "vol-r", 3 << 20, &data, true)
        .unwrap();
    assert!(read_back(&client, "vol-r", 3 << 20, data.len(), "the write") == data);

    for blocker in ["blockerb", "blockerm"] {
        let old = s.pid_of(blocker).expect("pid file");
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
        wait_restarted(&mut s, blocker, old);
        assert!(read_back(&client, "vol-r", 3 << 20, data.len(), blocker) == data);
    }
    let more = pattern(4096, 9);
    client.volume_write(VLMCD, "vol-r", 0, &more, true).unwrap();
    assert!(read_back(&client, "vol-r", 0, 4096, "the last write") == more);
    drop(client);
    let out = s.run(&["stop", "-f"]);
    assert!(out.status.success(), "stop: {}", text(&out));
}

/// Polls `status --json` (at most `within`) until `cond` holds of it;
/// returns that status.
fn wait_status(
    s: &mut Setup,
    what: &str,
    within: Duration,
    cond: impl Fn(bool, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (ok, st) = s.status();
        if cond(ok, &st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {st:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The supervisor log's lines about `role`, as (milliseconds, text).
fn supervisor_log(s: &Setup, role: &str) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(s.path("log/supervisor.log")).unwrap();
    text.lines()
        .filter_map(|l| {
            let (stamp, rest) = l.strip_prefix('[')?.split_once("] ")?;
            let (secs, ms) = stamp.split_once('.')?;
            let t = secs.parse::<u64>().ok()? * 1000 + ms.parse::<u64>().ok()?;
            let rest = rest.strip_prefix(&format!("{role}: "))?;
            Some((t, rest.to_owned()))
        })
        .collect()
}

/// The supervisor's policy: a role killed is restarted after a back-off
/// that doubles (0.5 s, 1 s, 2 s, 4 s), showing "waiting" meanwhile; the
/// fifth crash within 60 s gives it up ("failed", `status` exits
/// non-zero) while the others keep running; the restart count is kept;
/// `start ROLE` brings it back under a new supervisor that adopts the
/// others (and restarts an adopted role that dies); `restart ROLE` and
/// `restart` replace exactly what they name.
#[test]
fn the_supervisor_backs_off_gives_up_and_restart_and_start_role_work() {
    let mut s = Setup::new("");
    let out = s.run(&["start"]);
    assert!(out.status.success(), "start: {}", text(&out));
    let others = ["blockerb", "blockerm", "mapperd", "nbdd"];
    let pids_of = |st: &Value, names: &[&str]| -> Vec<Value> {
        names.iter().map(|n| role(st, n)["pid"].clone()).collect()
    };
    let (ok, st) = s.status();
    assert!(ok, "{st:#}");
    let other_pids = pids_of(&st, &others);

    for crash in 1..=5u64 {
        let old = s.pid_of("vlmcd").expect("vlmcd pid file");
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
        if crash == 5 {
            break;
        }
        if crash >= 3 {
            // A back-off of 2 s and 4 s: long enough to be seen.
            wait_status(&mut s, "vlmcd waiting", Duration::from_secs(15), |_, st| {
                let r = role(st, "vlmcd");
                r["supervisor_status"] == "waiting" && r["alive"] == false
            });
        }
        wait_status(
            &mut s,
            "vlmcd restarted",
            Duration::from_secs(30),
            |ok, st| {
                let r = role(st, "vlmcd");
                ok && r["supervisor_status"] == "running"
                    && r["pid"].as_u64().is_some_and(|p| p != u64::from(old))
                    && r["restarts"] == crash
            },
        );
    }
    // Given up: failed, not restarted, and status says so with its code.
    let st = wait_status(
        &mut s,
        "vlmcd given up",
        Duration::from_secs(30),
        |_, st| role(st, "vlmcd")["supervisor_status"] == "failed",
    );
    let (ok, st2) = s.status();
    assert!(!ok, "status exits 0 with a role given up: {st2:#}");
    let v = role(&st, "vlmcd");
    assert_eq!(
        (v["alive"].clone(), v["restarts"].clone()),
        (false.into(), 4.into()),
        "{st:#}"
    );
    assert_eq!(
        pids_of(&st, &others),
        other_pids,
        "the other roles were touched"
    );
    let out = s.run(&["status"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("stopped"), "{}", text(&out));

    // The back-offs, from the supervisor's log: each restart came at
    // least its back-off after the crash (a lower bound only).
    let log = supervisor_log(&s, "vlmcd");
    let crashes: Vec<&(u64, String)> = log.iter().filter(|(_, l)| l.contains("exited")).collect();
    assert_eq!(crashes.len(), 5, "{log:?}");
    for (i, want) in ["500ms", "1s", "2s", "4s"].iter().enumerate() {
        let (t, line) = crashes[i];
        assert!(line.ends_with(&format!("restarting in {want}")), "{line}");
        let wait_ms = 500u64 << i;
        let (t2, _) = log
            .iter()
            .find(|(t2, l)| t2 >= t && l == "restarting")
            .unwrap_or_else(|| panic!("no restart after {line}: {log:?}"));
        assert!(t2 + 2 >= t + wait_ms, "restarted {}ms after {line}", t2 - t);
    }
    assert!(
        crashes[4].1.contains("5 crashes within 60s: giving up"),
        "{}",
        crashes[4].1
    );

    // start ROLE: vlmcd back under a new supervisor, the others adopted
    // (same pids), the restart count kept.
    let out = s.run(&["start", "vlmcd"]);
    assert!(out.status.success(), "start vlmcd: {}", text(&out));
    let (ok, st) = s.status();
    assert!(ok, "{st:#}");
    assert_eq!(
        pids_of(&st, &others),
        other_pids,
        "start vlmcd restarted others"
    );
    assert_eq!(role(&st, "vlmcd")["restarts"], 4, "{st:#}");
    assert_eq!(role(&st, "vlmcd")["supervisor_status"], "running", "{st:#}");
    // An adopted role that dies is restarted too.
    let old = s.pid_of("blockerm").unwrap();
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    wait_restarted(&mut s, "blockerm", old);
    let (ok, st) = s.status();
    assert!(ok, "{st:#}");
    assert_eq!(role(&st, "blockerm")["restarts"], 1, "{st:#}");

    // restart ROLE: that role only gets a new pid.
    let before = pids_of(&st, &["blockerb", "blockerm", "mapperd", "vlmcd", "nbdd"]);
    let out = s.run(&["restart", "mapperd"]);
    assert!(out.status.success(), "restart mapperd: {}", text(&out));
    let (ok, st) = s.status();
    assert!(ok, "{st:#}");
    let after = pids_of(&st, &["blockerb", "blockerm", "mapperd", "vlmcd", "nbdd"]);
    for (i, name) in ["blockerb", "blockerm", "mapperd", "vlmcd", "nbdd"]
        .iter()
        .enumerate()
    {
        if *name == "mapperd" {
            assert_ne!(after[i], before[i], "mapperd kept its pid");
            assert!(after[i].is_u64(), "{st:#}");
        } else {
            assert_eq!(after[i], before[i], "restart mapperd restarted {name}");
        }
    }
    // restart: every role a new pid, all running.
    let out = s.run(&["restart"]);
    assert!(out.status.success(), "restart: {}", text(&out));
    let (ok, st) = s.status();
    assert!(ok, "{st:#}");
    let again = pids_of(&st, &["blockerb", "blockerm", "mapperd", "vlmcd", "nbdd"]);
    for (i, name) in ["blockerb", "blockerm", "mapperd", "vlmcd", "nbdd"]
        .iter()
        .enumerate()
    {
        assert!(
            again[i].is_u64() && again[i] != after[i],
            "{name} not restarted: {st:#}"
        );
    }
    let out = s.run(&["stop"]);
    assert!(out.status.success(), "stop: {}", text(&out));
}

// ---- nbdd under the supervisor -------------------------------------------

/// A raw NBD connection (fixed newstyle, NO_ZEROES, GO): (socket, size,
/// transmission flags).
fn nbd_go(path: &Path, name: &str) -> (std::os::unix::net::UnixStream, u64, u16) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).unwrap();
    assert_eq!(&hello[..8], b"NBDMAGIC");
    s.write_all(&3u32.to_be_bytes()).unwrap();
    let mut opt = 0x4948_4156_454f_5054u64.to_be_bytes().to_vec();
    opt.extend_from_slice(&7u32.to_be_bytes());
    opt.extend_from_slice(&(4 + name.len() as u32 + 2).to_be_bytes());
    opt.extend_from_slice(&(name.len() as u32).to_be_bytes());
    opt.extend_from_slice(name.as_bytes());
    opt.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&opt).unwrap();
    let (mut size, mut flags) = (0, 0);
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).unwrap();
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let mut d = vec![0u8; u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize];
        s.read_exact(&mut d).unwrap();
        match kind {
            1 => return (s, size, flags),
            3 if d[..2] == [0, 0] => {
                size = u64::from_be_bytes(d[2..10].try_into().unwrap());
                flags = u16::from_be_bytes(d[10..12].try_into().unwrap());
            }
            3 => {}
            k => panic!("GO {name}: reply {k:#x}"),
        }
    }
}

/// One NBD command (READ 0 or WRITE 1): (errno, data read).
fn nbd_cmd(
    s: &mut std::os::unix::net::UnixStream,
    kind: u16,
    offset: u64,
    len: u32,
    data: &[u8],
) -> (u32, Vec<u8>) {
    use std::io::{Read, Write};
    let mut v = 0x2560_9513u32.to_be_bytes().to_vec();
    v.extend_from_slice(&0u16.to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(&99u64.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(data);
    s.write_all(&v).unwrap();
    let mut r = [0u8; 16];
    s.read_exact(&mut r).unwrap();
    assert_eq!(u32::from_be_bytes(r[..4].try_into().unwrap()), 0x6744_6698);
    assert_eq!(u64::from_be_bytes(r[8..16].try_into().unwrap()), 99);
    let err = u32::from_be_bytes(r[4..8].try_into().unwrap());
    let mut d = Vec::new();
    if kind == 0 && err == 0 {
        d = vec![0u8; len as usize];
        s.read_exact(&mut d).unwrap();
    }
    (err, d)
}

/// nbdd killed: the supervisor restarts it with its mapped set; the
/// read-only exports (a snapshot, a volume mapped --readonly) stay
/// read-only, the writable one writable, the data intact.
#[test]
fn nbdd_killed_comes_back_with_its_mapped_set() {
    let mut s = Setup::new("");
    let out = s.run(&["start"]);
    assert!(out.status.success(), "start: {}", text(&out));
    let client = Client::connect(&s.segment())
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let data = pattern(256 << 10, 17);
    for v in ["nv", "nro"] {
        client.create_volume(VLMCD, v, 4 << 20, None).unwrap();
        client.volume_write(VLMCD, v, 0, &data, true).unwrap();
        client.close_volume(VLMCD, v).unwrap();
    }
    client.snapshot(VLMCD, "nv", "nv-snap").unwrap();
    let config = s.config.clone();
    let vlmc = |args: &[&str]| {
        let o = Command::new(Path::new(EXE).parent().unwrap().join("vlmc"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "vlmc {args:?}: {}", text(&o));
    };
    vlmc(&["map", "nv"]);
    vlmc(&["map", "nv-snap"]);
    vlmc(&["map", "--readonly", "nro"]);
    let sock = s.path("run/nbd.sock");
    let check = |round: &str| {
        for (name, ro) in [("nv", false), ("nv-snap", true), ("nro", true)] {
            let (mut c, size, flags) = nbd_go(&sock, name);
            assert_eq!(size, 4 << 20, "{round}: {name}");
            assert_eq!(flags & 2 != 0, ro, "{round}: {name}: read-only flag");
            let (e, got) = nbd_cmd(&mut c, 0, 0, data.len() as u32, &[]);
            assert_eq!(e, 0, "{round}: {name}");
            assert!(got == data, "{round}: {name}: data changed");
            if ro {
                assert_eq!(
                    nbd_cmd(&mut c, 1, 0, 512, &[1; 512]).0,
                    1,
                    "{round}: {name}: EPERM"
                );
            }
        }
    };
    check("before");
    let old = s.pid_of("nbdd").expect("nbdd pid file");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    wait_restarted(&mut s, "nbdd", old);
    check("after nbdd was killed");
    // Still writable through the restarted nbdd.
    let (mut c, _, _) = nbd_go(&sock, "nv");
    assert_eq!(nbd_cmd(&mut c, 1, 4096, 512, &[9; 512]).0, 0);
    drop(c);
    assert_eq!(
        client.volume_read(VLMCD, "nv", 4096, 512).unwrap(),
        vec![9; 512]
    );
    drop(client);
    for v in ["nv", "nv-snap", "nro"] {
        vlmc(&["unmap", "-f", v]);
    }
    let out = s.run(&["stop"]);
    assert!(out.status.success(), "stop: {}", text(&out));
}

/// Processes whose command line contains `needle` (this test's private
/// directory), with their command lines.
fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && alive(pid) {
            out.push((pid, cmd));
        }
    }
    out
}

/// Issue 19: concurrent `archipelago start`s could each launch a
/// supervisor; a losing one removed the winner's pid file, so `status`
/// said not running and `stop -f` left the orphan restarting everything.
/// Now starts take turns and one supervisor runs per configuration: the
/// later starts find it running, and `stop -f` leaves nothing behind.
#[test]
fn concurrent_starts_leave_exactly_one_supervisor() {
    let mut s = Setup::new("");
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(EXE)
                .arg("--config")
                .arg(&s.config)
                .arg("start")
                .env_remove("ARCHIPELAGO_CONFIG")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    s.note_pids();
    let needle = s.dir.path().display().to_string();
    let supervisors: Vec<_> = processes_with(&needle)
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(" supervise "))
        .collect();
    for (pid, _) in &supervisors {
        s.pids.insert(*pid);
    }
    assert_eq!(supervisors.len(), 1, "{supervisors:?}");
    assert_eq!(s.pid_of("supervisor"), Some(supervisors[0].0));
    let (running, v) = s.status();
    assert!(running, "{v}");
    // A supervisor started by hand next to it refuses, naming it.
    let mut second = Command::new(EXE)
        .arg("--config")
        .arg(&s.config)
        .args(["supervise", "--roles", "blockerb"])
        .env_remove("ARCHIPELAGO_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second supervisor kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = second.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("another supervisor runs"),
        "{}",
        text(&out)
    );
    assert_eq!(s.pid_of("supervisor"), Some(supervisors[0].0));
    let out = s.run(&["stop", "-f"]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&needle).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        processes_with(&needle),
        vec![],
        "left running after stop -f"
    );
}

/// Issue 19: `archipelago status` panicked when its reader went away
/// (`| head`), and said "absent" for a segment that exists but cannot be
/// used (a corrupt header).
#[test]
fn status_survives_a_closed_pipe_and_names_an_unusable_segment() {
    let s = Setup::new("");
    for args in [&["status"][..], &["status", "--json"], &["config"]] {
        // A pipe whose reader is gone before anything is written.
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let out = Command::new(EXE)
            .arg("--config")
            .arg(&s.config)
            .args(args)
            .env_remove("ARCHIPELAGO_CONFIG")
            .stdout(std::process::Stdio::from(writer))
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
    }
    std::fs::write(s.path("segment"), vec![0x5a; 8192]).unwrap();
    let out = Command::new(EXE)
        .arg("--config")
        .arg(&s.config)
        .arg("status")
        .env_remove("ARCHIPELAGO_CONFIG")
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    assert!(first.contains("(unusable: "), "{first}");
    assert!(!first.contains("absent"), "{first}");
}

/// Issue 19: with mapperd stopped (`kill -STOP`), NBD I/O and `vlmc info`
/// blocked for as long as it stayed stopped. The supervisor PINGs its
/// roles and kills one silent for longer than `[supervisor]
/// hang_timeout` (3 s here); the restarted one serves the same data.
#[test]
fn a_hung_role_is_killed_and_restarted() {
    let (mut s, client) = start_on_files("[supervisor]\nhang_timeout = 3\n");
    client.create_volume(VLMCD, "hung", 8 << 20, None).unwrap();
    let data = pattern(64 << 10, 3);
    client
        .volume_write(VLMCD, "hung", 1 << 20, &data, true)
        .unwrap();
    client.close_volume(VLMCD, "hung").unwrap();

    let old = s.pid_of("mapperd").unwrap();
    kill(Pid::from_raw(old as i32), Signal::SIGSTOP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pid = s.pid_of("mapperd");
        if pid.is_some_and(|p| p != old && alive(p)) && !alive(old) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stopped mapperd (pid {old}) was not replaced: now {pid:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    s.note_pids();
    let back = read_back(&client, "hung", 1 << 20, data.len(), "a hung mapperd");
    assert!(
        back == data,
        "data changed after the hung mapperd was replaced"
    );
    let log = std::fs::read_to_string(s.path("log/supervisor.log")).unwrap();
    assert!(log.contains("mapperd: no answer to PING"), "{log}");
}
