//! The policy of `tools_present`, checked in child processes (the
//! environment is per process): a test needing an external program that is
//! missing fails under CI and skips, saying so, elsewhere, as the RADOS
//! tests do without a cluster.

use std::process::Command;

use archipelago_e2e::tools_present;

const CHILD: &str = "ARCHIPELAGO_TOOL_POLICY_CHILD";
const TOOL: &str = "ARCHIPELAGO_TOOL_POLICY_TOOL";

/// Runs in a child only: asks for the tool named in the environment.
#[test]
fn child_asks_for_a_tool() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let tool = std::env::var(TOOL).unwrap();
    let found = tools_present("policy child", &["true", &tool], "some-package");
    println!("child found the tools: {found}");
}

fn child(ci: bool, tool: &str) -> (bool, String) {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "child_asks_for_a_tool",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD, "1")
    .env(TOOL, tool)
    .env_remove("CI");
    if ci {
        c.env("CI", "true");
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_missing_tool_fails_under_ci_and_skips_elsewhere_saying_so() {
    let missing = "archipelago-no-such-tool";
    let (ok, text) = child(true, missing);
    assert!(!ok, "under CI a missing tool must fail: {text}");
    assert!(
        text.contains(missing) && text.contains("some-package"),
        "{text}"
    );

    let (ok, text) = child(false, missing);
    assert!(ok, "{text}");
    assert!(text.contains("SKIPPED"), "{text}");
    assert!(text.contains(missing), "{text}");
    assert!(text.contains("child found the tools: false"), "{text}");

    for ci in [true, false] {
        let (ok, text) = child(ci, "true");
        assert!(ok, "{text}");
        assert!(!text.contains("SKIPPED"), "{text}");
        assert!(text.contains("child found the tools: true"), "{text}");
    }
}
