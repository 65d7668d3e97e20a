//! The benchmark runs end to end and reports every case it was asked for
//! (a check that it works, not a timing: no figure is asserted).

use std::process::Command;

#[test]
fn ring_benchmark_reports_each_selected_case_as_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_xseg-bench"))
        .args([
            "ring",
            "--cases",
            "a,ring,req,req-sleep,bulk,stream",
            "--iters",
            "500",
            "--no-pin",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().expect("an array of rows");
    let names: Vec<&str> = rows.iter().map(|r| r["case"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "ring", "req", "req-sleep", "bulk", "stream"]);
    for r in rows {
        assert_eq!(r["iters"], 500);
        assert!(r["one_way_ns"]["p50"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["rate_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    }
    // xseg rows carry their own adjacent baseline.
    assert!(rows[1]["adjacent_a_ns"].is_object());
}

#[test]
fn unknown_cases_are_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_xseg-bench"))
        .args(["ring", "--cases", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"unknown case "nope""#));
}
