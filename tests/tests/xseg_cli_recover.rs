//! `xseg report` and `xseg recover --dead` on a port whose owner was killed
//! holding a descriptor and a buffer.

use std::process::Command;
use std::time::Duration;

use archipelago_e2e::{workspace_bin, Peer, TempSegment};
use serde_json::Value;

fn xseg(seg: &TempSegment, args: &[&str]) -> String {
    let out = Command::new(workspace_bin("xseg"))
        .arg("--segment")
        .arg(seg.arg())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xseg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(seg: &TempSegment, args: &[&str]) -> Value {
    serde_json::from_str(&xseg(seg, args)).unwrap()
}

#[test]
fn a_dead_owner_is_reported_and_recovered_from_the_cli() {
    let seg = TempSegment::new("cli-recover");
    xseg(
        &seg,
        &[
            "create",
            "--ports",
            "8",
            "--static-ports",
            "4",
            "--requests",
            "64",
            "--max-buffer",
            "8K",
        ],
    );
    let mut peer = Peer::testpeer(&[
        "--segment",
        &seg.arg(),
        "server",
        "--port",
        "1",
        "--own",
        "1",
    ]);
    peer.expect_line("ready", Duration::from_secs(20));
    let dead_pid = peer.child.id();
    peer.kill9();

    let r = json(&seg, &["report", "--json"]);
    let p = &r["port_list"][0];
    assert_eq!(
        (&p["port"], &p["state"], &p["pid"]),
        (&1.into(), &"dead".into(), &dead_pid.into())
    );
    assert_eq!(
        (&p["requests_in_use"], &p["buffers_in_use"]),
        (&1.into(), &1.into())
    );
    assert_eq!(r["requests_free"], 63);
    assert!(xseg(&seg, &["report"]).contains("1 port(s) have a dead owner"));

    let done = json(&seg, &["recover", "--dead", "--json"]);
    let done = done.as_array().expect("array");
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(
        (&done[0]["port"], &done[0]["dead_pid"]),
        (&1.into(), &dead_pid.into())
    );
    assert_eq!(done[0]["requests_freed"], 1);

    let r = json(&seg, &["report", "--json"]);
    let p = &r["port_list"][0];
    assert_eq!((&p["state"], &p["recoveries"]), (&"free".into(), &1.into()));
    assert_eq!(r["requests_free"], 64);
    for b in r["buffers"].as_array().unwrap() {
        assert_eq!(b["free"], b["count"], "{b}");
    }
    assert!(xseg(&seg, &["recover", "--dead"]).contains("nothing to do"));
}
