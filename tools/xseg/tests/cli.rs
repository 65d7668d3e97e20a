//! Drives the real `xseg` binary, each test on its own segment file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::Value;

/// Small sizes, so that every test's segment is quick to create.
const SMALL: &[&str] = &[
    "--ports",
    "8",
    "--static-ports",
    "2",
    "--requests",
    "64",
    "--max-buffer",
    "64K",
];

/// A private segment path for one test, removed on drop.
struct TestSegment {
    path: PathBuf,
}

impl TestSegment {
    fn new(test: &str) -> TestSegment {
        let path = std::env::temp_dir().join(format!("xseg-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TestSegment { path }
    }

    fn name(&self) -> &str {
        self.path.to_str().expect("UTF-8 temp path")
    }

    /// Runs `xseg --segment PATH ARGS...`.
    fn xseg(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_xseg"))
            .arg("--segment")
            .arg(&self.path)
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run xseg")
    }

    /// Runs it and insists on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.xseg(args);
        assert!(
            out.status.success(),
            "xseg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Runs it and insists on failure with `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.xseg(args);
        let stderr = String::from_utf8(out.stderr).expect("UTF-8 output");
        assert_eq!(
            out.status.code(),
            Some(code),
            "xseg {args:?}: stdout {:?}, stderr {stderr:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    /// Like `fails` with exit code 1, also checking the error is the one
    /// `xseg: ` line the tool promises.
    fn error(&self, args: &[&str]) -> String {
        let stderr = self.fails(args, 1);
        assert!(stderr.starts_with("xseg: "), "{stderr:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
        stderr
    }

    fn create_small(&self, extra: &[&str]) -> String {
        let args: Vec<&str> = ["create"]
            .iter()
            .chain(SMALL)
            .chain(extra)
            .copied()
            .collect();
        self.ok(&args)
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("valid JSON")
    }
}

impl Drop for TestSegment {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn exists(p: &Path) -> bool {
    p.try_exists().expect("stat")
}

#[test]
fn create_then_report_human_and_json() {
    let seg = TestSegment::new("create-report");
    let summary = seg.create_small(&["--buffers", "4K=16,16K=4", "--protocol-version", "3"]);
    assert!(
        summary.starts_with(&format!("created segment {}: ", seg.name())),
        "{summary}"
    );
    assert!(
        summary.contains("8 ports (2 static), 64 requests"),
        "{summary}"
    );
    assert!(summary.contains("MiB"), "{summary}");
    assert_eq!(summary.lines().count(), 1, "{summary}");

    let human = seg.ok(&["report"]);
    assert!(
        human.contains(&format!("segment   {}\n", seg.name())),
        "{human}"
    );
    assert!(human.contains("8 (2 static, 6 dynamic)"), "{human}");
    assert!(
        human.contains("64 free of 64 (owned 0, queued 0, replied 0)"),
        "{human}"
    );
    assert!(
        human.contains(&format!(
            "layout {}, protocol 3",
            xseg_shm::layout::LAYOUT_VERSION
        )),
        "{human}"
    );
    let row_16k = human
        .lines()
        .find(|l| l.trim_start().starts_with("16K"))
        .expect("16K row");
    assert_eq!(
        row_16k.split_whitespace().collect::<Vec<_>>(),
        ["16K", "4", "4", "0"]
    );
    assert!(human.contains("no port has been bound yet"), "{human}");

    let r = seg.json(&["report", "--json"]);
    assert_eq!(r["name"], seg.name());
    assert_eq!(r["ports"], 8);
    assert_eq!(r["static_ports"], 2);
    assert_eq!(r["requests"], 64);
    assert_eq!(r["requests_free"], 64);
    assert_eq!(r["protocol_version"], 3);
    let buffers = r["buffers"].as_array().expect("buffers");
    let sizes: Vec<u64> = buffers
        .iter()
        .map(|b| b["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10]);
    assert_eq!(
        (&buffers[0]["count"], &buffers[0]["free"]),
        (&16.into(), &16.into())
    );
    assert_eq!(
        (&buffers[2]["count"], &buffers[2]["free"]),
        (&4.into(), &4.into())
    );
    // Classes not named keep their defaults.
    assert_eq!(buffers[1]["count"], 512);
    assert_eq!(r["port_list"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        r["size"].as_u64(),
        Some(std::fs::metadata(&seg.path).unwrap().len())
    );
}

#[test]
fn default_sizes_are_the_documented_ones() {
    let seg = TestSegment::new("defaults");
    seg.ok(&["create"]);
    let r = seg.json(&["report", "--json"]);
    assert_eq!(r["ports"], 128);
    assert_eq!(r["static_ports"], 32);
    assert_eq!(r["requests"], 4096);
    let buffers = r["buffers"].as_array().expect("buffers");
    assert_eq!(buffers.len(), 11, "4K to 4M");
    assert_eq!(buffers[10]["size"], 4 << 20);
    let mode = std::fs::metadata(&seg.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
}

#[test]
fn create_twice_fails_clearly() {
    let seg = TestSegment::new("create-twice");
    seg.create_small(&[]);
    let e = seg.error(&["create"]);
    assert!(e.contains(seg.name()), "{e}");
    assert!(e.contains("already exists"), "{e}");
    // The first one is intact.
    assert_eq!(seg.json(&["report", "--json"])["ports"], 8);
}

#[test]
fn destroy_then_report_says_it_does_not_exist() {
    let seg = TestSegment::new("destroy");
    seg.create_small(&[]);
    let out = seg.ok(&["destroy"]);
    assert_eq!(out, format!("destroyed segment {}\n", seg.name()));
    assert!(!exists(&seg.path));
    let e = seg.error(&["report"]);
    assert!(
        e.contains(&format!("segment {} does not exist", seg.name())),
        "{e}"
    );
    let e = seg.error(&["destroy"]);
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn bad_max_buffer_is_a_clear_error() {
    let seg = TestSegment::new("max-buffer");
    let e = seg.error(&["create", "--max-buffer", "3M"]);
    assert!(e.contains(seg.name()), "{e}");
    assert!(e.contains("--max-buffer 3M"), "{e}");
    assert!(e.contains("power of two"), "{e}");
    assert!(!exists(&seg.path), "nothing is created");
    // Not a size at all: a usage error.
    let e = seg.fails(&["create", "--max-buffer", "lots"], 2);
    assert!(e.contains("\"lots\" is not a size"), "{e}");
    assert!(!exists(&seg.path));
}

#[test]
fn bad_buffers_are_clear_errors() {
    let seg = TestSegment::new("buffers");
    let e = seg.error(&["create", "--buffers", "4K=8,3K=4"]);
    assert!(
        e.contains("--buffers 3K=4: there is no 3K buffer class"),
        "{e}"
    );
    let e = seg.error(&["create", "--max-buffer", "1M", "--buffers", "2M=1"]);
    assert!(e.contains("no 2M buffer class"), "{e}");
    assert!(e.contains("--max-buffer 1M"), "{e}");
    let e = seg.error(&["create", "--buffers", "8K=1", "--buffers", "8K=2"]);
    assert!(e.contains("8K is given twice"), "{e}");
    let e = seg.fails(&["create", "--buffers", "4K"], 2);
    assert!(e.contains("SIZE=COUNT"), "{e}");
    assert!(!exists(&seg.path));
}

#[test]
fn world_accessible_mode_is_refused() {
    let seg = TestSegment::new("mode");
    let e = seg.error(&["create", "--mode", "0666"]);
    assert!(e.contains(seg.name()), "{e}");
    assert!(e.contains("must not be accessible to others"), "{e}");
    assert!(!exists(&seg.path));

    seg.create_small(&["--mode", "0640"]);
    let mode = std::fs::metadata(&seg.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn a_file_that_is_not_a_segment_is_named_as_such() {
    let seg = TestSegment::new("junk");
    let junk: Vec<u8> = b"this is not a segment\n"
        .iter()
        .copied()
        .cycle()
        .take(16384)
        .collect();
    std::fs::write(&seg.path, junk).unwrap();
    let e = seg.error(&["report"]);
    assert!(
        e.contains(&format!("{} is not an xseg segment", seg.name())),
        "{e}"
    );
    let e = seg.error(&["recover", "--dead"]);
    assert!(e.contains("not an xseg segment"), "{e}");
    // Removing a broken segment is allowed.
    seg.ok(&["destroy"]);
    assert!(!exists(&seg.path));
}

#[test]
fn recover_dead_on_a_fresh_segment_has_nothing_to_do() {
    let seg = TestSegment::new("recover-fresh");
    seg.create_small(&[]);
    let out = seg.ok(&["recover", "--dead"]);
    assert_eq!(
        out,
        format!(
            "segment {}: no port has a dead owner; nothing to do\n",
            seg.name()
        )
    );
    assert_eq!(
        seg.json(&["recover", "--dead", "--json"]),
        Value::Array(vec![])
    );
}

#[test]
fn recover_of_an_out_of_range_port_fails() {
    let seg = TestSegment::new("recover-range");
    seg.create_small(&[]);
    let e = seg.error(&["recover", "8"]);
    assert!(e.contains(seg.name()), "{e}");
    assert!(
        e.contains("port 8 does not exist (the segment has 8 ports)"),
        "{e}"
    );
    // The last port exists (never bound: it is only tidied).
    let out = seg.ok(&["recover", "7"]);
    assert!(out.starts_with("port 7: had no dead owner"), "{out}");
    // Exactly one of PORT and --dead.
    seg.fails(&["recover"], 2);
    seg.fails(&["recover", "1", "--dead"], 2);
}

#[test]
fn a_live_owner_is_reported_alive_and_protected() {
    let seg = TestSegment::new("live-owner");
    seg.create_small(&[]);
    let name = xseg_shm::SegmentName::parse(seg.name()).unwrap();
    let shm = Arc::new(xseg_shm::Segment::attach(&name, None).unwrap());
    let port = shm.bind(1).unwrap();
    let pid = std::process::id();

    let r = seg.json(&["report", "--json"]);
    let ports = r["port_list"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{r}");
    assert_eq!(ports[0]["port"], 1);
    assert_eq!(ports[0]["kind"], "static");
    assert_eq!(ports[0]["state"], "bound");
    assert_eq!(ports[0]["pid"], pid);
    let human = seg.ok(&["report"]);
    // PORT KIND STATE PID ...
    let pid_text = pid.to_string();
    let row: Vec<&str> = human
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.get(3) == Some(&pid_text.as_str()))
        .expect("port row");
    assert_eq!(row[..3], ["1", "static", "bound"], "{human}");

    let e = seg.error(&["recover", "1"]);
    assert!(
        e.contains(&format!("port 1 is owned by live process {pid}")),
        "{e}"
    );
    assert!(seg.ok(&["recover", "--dead"]).contains("nothing to do"));
    let e = seg.error(&["destroy"]);
    assert!(e.contains("in use") && e.contains("--force"), "{e}");
    assert!(exists(&seg.path));
    seg.ok(&["destroy", "--force"]);
    assert!(!exists(&seg.path));
    drop(port);
}

// A dead owner recovered through the CLI: tests/tests/xseg_cli_recover.rs
// (it needs the end-to-end test peer to die holding a port).

#[test]
fn the_segment_defaults_to_the_configurations() {
    let dir = std::env::temp_dir().join(format!("xseg-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seg = dir.join("seg");
    let config = dir.join("archipelago.toml");
    std::fs::write(
        &config,
        format!("[segment]\nname = \"{}\"\n", seg.display()),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xseg"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&[
        "create",
        "--ports",
        "8",
        "--static-ports",
        "4",
        "--requests",
        "16"
    ])
    .status
    .success());
    assert!(seg.exists(), "created where the configuration says");
    let report = run(&["report", "--json"]);
    assert!(report.status.success());
    assert!(String::from_utf8_lossy(&report.stdout).contains(&seg.display().to_string()));
    std::fs::write(&config, "[segment]\nbogus = 1\n").unwrap();
    let bad = run(&["report"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("bogus"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
