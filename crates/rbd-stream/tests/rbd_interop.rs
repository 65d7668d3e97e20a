//! Interoperability with the real `rbd` tool on a Ceph cluster, both
//! ways: what `rbd export-diff` and `rbd export --export-format 2` write
//! decodes to exactly the changes between the snapshots (checked against
//! `rbd export` of each), and what this crate writes is accepted by
//! `rbd import-diff` and `rbd import --export-format 2` and yields the
//! same bytes and snapshots.
//!
//! The cluster: `CEPH_CONF` and `CEPH_POOL`, as for the RADOS tests
//! (`scripts/test` starts a throwaway one). Without them, or without
//! `rbd`, a test fails when `CI` is set and prints `SKIPPED` otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use archipelago_rbd_stream::{DiffReader, DiffRecord, DiffVersion, DiffWriter};
use common::{apply, decode_diff, decode_image, encode_diff, encode_image, Diff, Extent, Image};

/// Every `rbd` command is bounded (a broken cluster fails the test
/// instead of hanging it).
const RBD_TIMEOUT_SECS: &str = "120";

struct Rbd {
    conf: PathBuf,
    pool: String,
}

/// The cluster and `rbd`, or `None` (after saying why) when the test
/// may skip. Panics under CI without them.
fn cluster(test: &str) -> Option<Rbd> {
    let conf = std::env::var_os("CEPH_CONF").filter(|v| !v.is_empty());
    let pool = std::env::var("CEPH_POOL").ok().filter(|v| !v.is_empty());
    let rbd_found = Command::new("rbd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let why = match (conf, pool, rbd_found) {
        (Some(conf), Some(pool), true) => {
            return Some(Rbd {
                conf: PathBuf::from(conf),
                pool,
            })
        }
        (Some(_), Some(_), false) => "`rbd` not found (apt-get install ceph-common)",
        _ => "no Ceph cluster (CEPH_CONF and CEPH_POOL unset)",
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}: under CI the rbd interop tests need a cluster and `rbd` (.ci/run provides them)");
    }
    eprintln!("{test}: SKIPPED: {why}; run: eval \"$(scripts/ceph-dev-cluster.sh start)\"");
    None
}

impl Rbd {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", RBD_TIMEOUT_SECS, "rbd"])
            .arg("-c")
            .arg(&self.conf)
            .args(["-p", &self.pool])
            .args(args);
        c
    }

    /// `rbd ARGS` with its stdin and stdout piped to the test.
    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run rbd")
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run rbd")
    }

    /// Runs `rbd ARGS`, returns its stdout; panics with its stderr.
    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "rbd {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn json(&self, args: &[&str]) -> String {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        String::from_utf8(self.run(&a)).unwrap()
    }

    /// The raw bytes of `spec` (`image` or `image@snap`).
    fn export_raw(&self, spec: &str) -> Vec<u8> {
        self.run(&["export", spec, "-"])
    }
}

/// An image of the test pool, removed with its snapshots on drop.
struct TestImage<'a> {
    rbd: &'a Rbd,
    name: String,
}

impl<'a> TestImage<'a> {
    fn name(rbd: &'a Rbd, tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "rbdstream-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // Leftovers of an earlier run with the same pid would fail `create`.
        let _ = TestImage {
            rbd,
            name: name.clone(),
        };
        TestImage { rbd, name }
    }

    fn at(&self, snap: &str) -> String {
        format!("{}@{snap}", self.name)
    }
}

impl Drop for TestImage<'_> {
    fn drop(&mut self) {
        let out = self
            .rbd
            .output(&["snap", "ls", &self.name, "--format", "json"]);
        if !out.status.success() {
            return; // no such image
        }
        for snap in json_strings(&String::from_utf8_lossy(&out.stdout), "name") {
            let _ = self.rbd.output(&["snap", "unprotect", &self.at(&snap)]);
        }
        let _ = self.rbd.output(&["snap", "purge", &self.name]);
        let _ = self.rbd.output(&["rm", &self.name]);
    }
}

/// The string values of `"key":"..."` in a JSON text (names here are
/// plain ASCII; a JSON parser would be one more dependency).
fn json_strings(json: &str, key: &str) -> Vec<String> {
    let pat = format!("\"{key}\":\"");
    json.match_indices(&pat)
        .map(|(i, _)| {
            let rest = &json[i + pat.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// The numbers of `"key":N` in a JSON text.
fn json_numbers(json: &str, key: &str) -> Vec<u64> {
    let pat = format!("\"{key}\":");
    json.match_indices(&pat)
        .map(|(i, _)| {
            let rest = &json[i + pat.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().unwrap()
        })
        .collect()
}

/// Deterministic bytes that compress badly, with zero runs.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    // A zero run inside every 1 MiB (sparse in the image).
    for mb in (0..len).step_by(1 << 20) {
        let end = (mb + (256 << 10)).min(len);
        out[mb + (128 << 10).min(end - mb)..end].fill(0);
    }
    out
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn assert_same_image(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: size");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i}: {} != {}",
            got[i], want[i]
        );
    }
}

/// Builds an RBD image with history: data imported, s1, random writes,
/// shrink and grow (a discarded range), s2, more random writes (HEAD).
fn image_with_history<'a>(rbd: &'a Rbd, tag: &str, dir: &Path) -> TestImage<'a> {
    let img = TestImage::name(rbd, tag);
    let base = write_file(dir, "base.raw", &pattern(12 << 20, 0x5eed));
    rbd.run(&["import", base.to_str().unwrap(), &img.name]);
    rbd.run(&["snap", "create", &img.at("s1")]);
    let bench = [
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4K",
        "--io-total",
        "256K",
        "--io-pattern",
        "rand",
    ];
    let mut args = bench.to_vec();
    args.push(&img.name);
    rbd.run(&args);
    rbd.run(&["resize", "--allow-shrink", "--size", "6M", &img.name]);
    rbd.run(&["resize", "--size", "20M", &img.name]);
    rbd.run(&["snap", "create", &img.at("s2")]);
    rbd.run(&args);
    img
}

#[test]
fn rbd_export_diff_decodes_to_the_changes_between_its_snapshots() {
    let Some(rbd) = cluster("rbd_export_diff_decodes_to_the_changes_between_its_snapshots") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = image_with_history(&rbd, "export-diff", dir.path());
    let s1 = rbd.export_raw(&img.at("s1"));
    let s2 = rbd.export_raw(&img.at("s2"));
    let head = rbd.export_raw(&img.name);

    // s1 → s2.
    let file = dir.path().join("s1-s2.diff");
    rbd.run(&[
        "export-diff",
        "--from-snap",
        "s1",
        &img.at("s2"),
        file.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&file).unwrap();
    let (diff, version) = decode_diff(&bytes, 64 << 10).unwrap();
    assert_eq!(version, DiffVersion::V1);
    assert_eq!(diff.from.as_deref(), Some("s1"));
    assert_eq!(diff.to.as_deref(), Some("s2"));
    assert_eq!(diff.size, 20 << 20);
    assert!(
        diff.extents.iter().any(|e| matches!(e, Extent::Write(..))),
        "{diff:?}"
    );
    assert!(
        diff.extents
            .iter()
            .any(|e| matches!(e, Extent::Zero(off, _) if *off >= 6 << 20)),
        "the range cut by the shrink comes as zeroes: {:?}",
        diff.extents
            .iter()
            .map(|e| match e {
                Extent::Write(o, d) => ('w', *o, d.len() as u64),
                Extent::Zero(o, l) => ('z', *o, *l),
            })
            .collect::<Vec<_>>()
    );
    let mut image = s1.clone();
    apply(&mut image, &diff);
    assert_same_image("s1 + diff(s1, s2)", &image, &s2);
    // The extents are those `rbd diff` lists; what it says is gone is a `z`.
    let listed = rbd.json(&["diff", "--from-snap", "s1", &img.at("s2")]);
    let listed: Vec<_> = json_numbers(&listed, "offset")
        .into_iter()
        .zip(json_numbers(&listed, "length"))
        .zip(json_strings(&listed, "exists"))
        .map(|((o, l), e)| (o, l, e == "true"))
        .collect();
    let decoded: Vec<_> = diff
        .extents
        .iter()
        .map(|e| match e {
            Extent::Write(o, d) => (*o, d.len() as u64, true),
            Extent::Zero(o, l) => (*o, *l, false),
        })
        .collect();
    assert_eq!(
        decoded.len(),
        listed.len(),
        "{decoded:?} vs rbd diff {listed:?}"
    );
    for (d, l) in decoded.iter().zip(&listed) {
        // Data that reads as zeroes may come as `z` (export-diff checks);
        // what rbd diff says is gone always does.
        let zeroes = s2[d.0 as usize..(d.0 + d.1) as usize]
            .iter()
            .all(|&b| b == 0);
        let kind_ok = d.2 == l.2 || (!d.2 && zeroes);
        assert!(
            d.0 == l.0 && d.1 == l.1 && kind_ok,
            "{d:?} vs rbd diff {l:?}"
        );
    }
    // Written back by this crate, the same stream byte for byte.
    assert!(
        encode_diff(&diff, DiffVersion::V1) == bytes,
        "re-encoding differs from rbd's"
    );

    // s2 → HEAD, no to-snapshot: streamed from rbd's stdout through a
    // pipe and applied as it comes, extent by extent.
    let mut child = rbd.spawn(&["export-diff", "--from-snap", "s2", &img.name, "-"]);
    drop(child.stdin.take());
    let mut r = DiffReader::new(child.stdout.take().unwrap()).unwrap();
    let mut image = s2.clone();
    let mut names = (None, None);
    while let Some(rec) = r.next_record().unwrap() {
        match rec {
            DiffRecord::FromSnap(f) => names.0 = Some(f),
            DiffRecord::ToSnap(t) => names.1 = Some(t),
            DiffRecord::Size(size) => image.resize(size as usize, 0),
            DiffRecord::Write { offset, len } => {
                let mut at = offset as usize;
                let end = at + len as usize;
                while at < end {
                    let n = r.read_data(&mut image[at..end.min(at + 5000)]).unwrap();
                    assert!(n > 0);
                    at += n;
                }
            }
            DiffRecord::Zero { offset, len } => {
                image[offset as usize..(offset + len) as usize].fill(0)
            }
            DiffRecord::Protected(_) | DiffRecord::Skipped { .. } | DiffRecord::End => {}
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names, (Some("s2".to_owned()), None));
    assert_same_image("s2 + diff(s2, HEAD) through a pipe", &image, &head);

    // Nothing → s1 (a full diff).
    let file = dir.path().join("s1.diff");
    rbd.run(&["export-diff", &img.at("s1"), file.to_str().unwrap()]);
    let (diff, _) = decode_diff(&std::fs::read(&file).unwrap(), 1 << 20).unwrap();
    assert_eq!(
        (diff.from.as_deref(), diff.to.as_deref()),
        (None, Some("s1"))
    );
    let mut image = Vec::new();
    apply(&mut image, &diff);
    assert_same_image("diff(s1)", &image, &s1);
}

/// Three diffs to apply in turn, with writes across object boundaries,
/// unaligned ones, zeroes over earlier data, a grow and a shrink.
fn synthetic_diffs() -> Vec<Diff> {
    let mb = 1u64 << 20;
    vec![
        Diff {
            from: None,
            to: Some("one".into()),
            protected: Some(true),
            size: 8 * mb,
            extents: vec![
                Extent::Write(0, pattern(4096, 1)),
                Extent::Write(4 * mb - 1000, pattern(300_000, 2)),
                Extent::Zero(5 * mb, mb),
                Extent::Write(7 * mb + 3, pattern(12_345, 3)),
            ],
        },
        Diff {
            from: Some("one".into()),
            to: Some("two".into()),
            protected: Some(false),
            size: 12 * mb,
            extents: vec![
                Extent::Zero(0, 2048),
                Extent::Write(4 * mb - 500, pattern(1000, 4)),
                Extent::Zero(4 * mb + 500, 10_000),
                Extent::Write(11 * mb, pattern(mb as usize, 5)),
            ],
        },
        Diff {
            from: Some("two".into()),
            to: None,
            protected: None,
            size: 11 * mb + 4096,
            extents: vec![Extent::Write(mb, pattern(8192, 6))],
        },
    ]
}

#[test]
fn diffs_written_here_are_applied_by_rbd_import_diff() {
    let Some(rbd) = cluster("diffs_written_here_are_applied_by_rbd_import_diff") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = TestImage::name(&rbd, "import-diff");
    rbd.run(&["create", "--size", "1M", &img.name]);
    let mut model = Vec::new();
    for (i, mut d) in synthetic_diffs().into_iter().enumerate() {
        d.protected = None; // v1 has no protection record
        if d.to.is_some() {
            let file = write_file(
                dir.path(),
                &format!("{i}.diff"),
                &encode_diff(&d, DiffVersion::V1),
            );
            rbd.run(&["import-diff", file.to_str().unwrap(), &img.name]);
        } else {
            // HEAD's diff streamed into rbd's stdin as it is written.
            let mut child = rbd.spawn(&["import-diff", "-", &img.name]);
            let pipe = std::io::BufWriter::new(child.stdin.take().unwrap());
            let mut w = DiffWriter::new(pipe, DiffVersion::V1).unwrap();
            w.from_snap(d.from.as_deref().unwrap()).unwrap();
            w.size(d.size).unwrap();
            for e in &d.extents {
                match e {
                    Extent::Write(off, data) => {
                        w.begin_write(*off, data.len() as u64).unwrap();
                        for piece in data.chunks(777) {
                            w.write_data(piece).unwrap();
                        }
                    }
                    Extent::Zero(off, len) => w.zero(*off, *len).unwrap(),
                }
            }
            drop(w.finish().unwrap()); // flushed, then closed
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        apply(&mut model, &d);
        let spec = d.to.as_deref().map_or(img.name.clone(), |t| img.at(t));
        assert_same_image(
            &format!("rbd import-diff of diff {i}: {spec}"),
            &rbd.export_raw(&spec),
            &model,
        );
    }
    let snaps = json_strings(&rbd.json(&["snap", "ls", &img.name]), "name");
    assert_eq!(snaps, ["one", "two"]);
    // rbd refuses a diff whose from-snapshot the image lacks: the f record counts.
    let d = Diff {
        from: Some("missing".into()),
        to: Some("three".into()),
        size: 1 << 20,
        ..Diff::default()
    };
    let file = write_file(dir.path(), "bad.diff", &encode_diff(&d, DiffVersion::V1));
    assert!(!rbd
        .output(&["import-diff", file.to_str().unwrap(), &img.name])
        .status
        .success());
}

#[test]
fn rbd_export_format_2_decodes_to_every_snapshot_and_imports_back_when_rewritten_here() {
    let Some(rbd) = cluster(
        "rbd_export_format_2_decodes_to_every_snapshot_and_imports_back_when_rewritten_here",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = image_with_history(&rbd, "export2", dir.path());
    rbd.run(&["snap", "protect", &img.at("s1")]);
    rbd.run(&["image-meta", "set", &img.name, "owner", "archipelago"]);
    let exports = [
        rbd.export_raw(&img.at("s1")),
        rbd.export_raw(&img.at("s2")),
        rbd.export_raw(&img.name),
    ];
    let file = dir.path().join("image.rbd2");
    rbd.run(&[
        "export",
        "--export-format",
        "2",
        &img.name,
        file.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&file).unwrap();
    let decoded = decode_image(&bytes, 100_000).unwrap();

    assert_eq!(decoded.order, Some(22));
    let info = rbd.json(&["info", &img.name]);
    assert!(info.contains("\"order\":22"), "{info}");
    // The default features: layering, exclusive-lock, object-map, fast-diff, deep-flatten.
    assert_eq!(decoded.features, Some(0x3d));
    assert_eq!(
        (decoded.stripe_unit, decoded.stripe_count),
        (Some(4 << 20), Some(1))
    );
    assert_eq!(
        decoded.meta,
        [("owner".to_owned(), b"archipelago".to_vec())]
    );
    let names: Vec<_> = decoded
        .diffs
        .iter()
        .map(|d| (d.from.as_deref(), d.to.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            (None, Some("s1")),
            (Some("s1"), Some("s2")),
            (Some("s2"), None)
        ]
    );
    let protected: Vec<_> = decoded.diffs.iter().map(|d| d.protected).collect();
    assert_eq!(protected, [Some(true), Some(false), None]);
    let mut image = Vec::new();
    for (d, want) in decoded.diffs.iter().zip(&exports) {
        apply(&mut image, d);
        assert_same_image(&format!("after the diff to {:?}", d.to), &image, want);
    }

    // Rewritten by this crate, rbd imports it into the same image.
    let copy = TestImage::name(&rbd, "export2-copy");
    let ours = write_file(dir.path(), "ours.rbd2", &encode_image(&decoded));
    rbd.run(&[
        "import",
        "--export-format",
        "2",
        ours.to_str().unwrap(),
        &copy.name,
    ]);
    for (spec, want) in [copy.at("s1"), copy.at("s2"), copy.name.clone()]
        .iter()
        .zip(&exports)
    {
        assert_same_image(
            &format!("rbd import of our stream: {spec}"),
            &rbd.export_raw(spec),
            want,
        );
    }
    let info = rbd.json(&["info", &copy.at("s1")]);
    assert!(info.contains("\"protected\":\"true\""), "{info}");
    let meta = rbd.run(&["image-meta", "get", &copy.name, "owner"]);
    assert_eq!(String::from_utf8_lossy(&meta).trim(), "archipelago");
}

#[test]
fn a_full_image_written_here_is_imported_by_rbd_with_its_snapshots() {
    let Some(rbd) = cluster("a_full_image_written_here_is_imported_by_rbd_with_its_snapshots")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = Image {
        order: Some(22),
        features: Some(1), // layering: needed to protect a snapshot
        stripe_unit: Some(4 << 20),
        stripe_count: Some(1),
        meta: vec![
            ("a.key".into(), b"a value".to_vec()),
            ("empty".into(), Vec::new()),
        ],
        diffs: synthetic_diffs(),
    };
    let img = TestImage::name(&rbd, "import2");
    let file = write_file(dir.path(), "model.rbd2", &encode_image(&model));
    rbd.run(&[
        "import",
        "--export-format",
        "2",
        file.to_str().unwrap(),
        &img.name,
    ]);

    let mut want = Vec::new();
    for d in &model.diffs {
        apply(&mut want, d);
        let spec = d.to.as_deref().map_or(img.name.clone(), |t| img.at(t));
        assert_same_image(
            &format!("rbd import of our stream: {spec}"),
            &rbd.export_raw(&spec),
            &want,
        );
    }
    let info = rbd.json(&["info", &img.name]);
    assert!(info.contains("\"features\":[\"layering\"]"), "{info}");
    assert!(rbd
        .json(&["info", &img.at("one")])
        .contains("\"protected\":\"true\""));
    assert!(rbd
        .json(&["info", &img.at("two")])
        .contains("\"protected\":\"false\""));
    assert_eq!(
        String::from_utf8_lossy(&rbd.run(&["image-meta", "get", &img.name, "a.key"])).trim(),
        "a value"
    );

    // And rbd's own export of it decodes to the same history.
    let back = dir.path().join("back.rbd2");
    rbd.run(&[
        "export",
        "--export-format",
        "2",
        &img.name,
        back.to_str().unwrap(),
    ]);
    let decoded = decode_image(&std::fs::read(&back).unwrap(), 1 << 16).unwrap();
    assert_eq!(decoded.meta.len(), 2);
    let mut image = Vec::new();
    let mut expect = Vec::new();
    for (got, d) in decoded.diffs.iter().zip(&model.diffs) {
        assert_eq!((&got.from, &got.to, got.size), (&d.from, &d.to, d.size));
        apply(&mut image, got);
        apply(&mut expect, d);
        assert_same_image("rbd's export of our import", &image, &expect);
    }
}
