//! Running `vlmc` against a private segment, for the CLI's tests.

#![allow(dead_code)] // each test file uses its own part

use std::process::{Command, Output};

use serde_json::Value;

/// `vlmc --segment SEGMENT ...`.
pub struct Vlmc {
    pub segment: String,
}

impl Vlmc {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vlmc"));
        c.args(["--segment", &self.segment]).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run vlmc")
    }

    /// Runs `args`, which must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "vlmc {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).expect("utf-8 output")
    }

    /// Runs `args --json`, which must succeed; returns the parsed output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Runs `args`, which must fail with exit code 1, nothing on stdout
    /// and one line on stderr `vlmc: <subject>: ...` mentioning `why`.
    pub fn fails(&self, args: &[&str], subject: &str, why: &str) {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "vlmc {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(
            err.starts_with(&format!("vlmc: {subject}: ")),
            "vlmc {args:?}: {err:?}"
        );
        assert!(err.contains(why), "vlmc {args:?}: {err:?} lacks {why:?}");
        assert!(o.stdout.is_empty(), "nothing printed on stdout");
    }
}
