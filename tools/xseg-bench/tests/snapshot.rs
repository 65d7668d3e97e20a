//! `xseg-bench snapshot` runs and reports every size it was asked for (a
//! check that it works, not a timing: no figure is asserted).

use std::process::Command;

#[test]
fn snapshot_benchmark_reports_each_size_as_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_xseg-bench"))
        .args(["snapshot", "--sizes", "64M,256M", "--reps", "2", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["object_size"], 4 << 20);
    assert_eq!(report["reps"], 2);
    assert!(report["ratio_last_to_first"].as_f64().unwrap() > 0.0);
    let rows = report["sizes"].as_array().expect("an array of sizes");
    let sizes: Vec<u64> = rows.iter().map(|r| r["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [64 << 20, 256 << 20]);
    for (r, objects) in rows.iter().zip([16, 64]) {
        assert_eq!(r["objects"], objects, "{r}");
        assert!(r["fill_ms"].as_f64().unwrap() >= 0.0, "{r}");
        for k in ["snapshot_ns", "clone_ns", "total_ns"] {
            assert_eq!(r[k]["count"], 2, "{r}");
            assert!(r[k]["p50"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
}

#[test]
fn bad_sizes_are_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_xseg-bench"))
        .args(["snapshot", "--sizes", "12Q"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad size"));
}
