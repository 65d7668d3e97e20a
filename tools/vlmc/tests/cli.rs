//! The `vlmc` binary against the whole pipeline (two blockerds, mapperd,
//! vlmcd) on a private segment: a volume's life from import to removal,
//! and every refused input leaving everything as it was.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use archipelago_e2e::pipeline::{Backend, Pipeline};
use common::Vlmc;
use serde_json::Value;

const MIB: u64 = 1 << 20;

impl Vlmc {
    fn info(&self, name: &str) -> Value {
        self.json(&["info", name])
    }

    /// Names listed (live ones, or all with `--all`).
    fn names(&self, all: bool) -> Vec<String> {
        let v = if all {
            self.json(&["list", "--all"])
        } else {
            self.json(&["list"])
        };
        v.as_array()
            .expect("an array")
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A pattern that is never all zeros in any 512-byte block.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// An image with data, holes and data at the very end.
fn make_image(path: &Path, size: u64) -> Vec<u8> {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut img = vec![0u8; size as usize];
    for (off, len, seed) in [
        (0, 300 << 10, 1u8),
        (2 * MIB + 4096, 100 << 10, 2),
        (size - 512, 512, 3),
    ] {
        let data = pattern(len as usize, seed);
        f.write_all_at(&data, off).unwrap();
        img[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
    img
}

fn check_export(vlmc: &Vlmc, name: &str, path: &Path, expect: &[u8]) {
    vlmc.ok(&["export", name, path.to_str().unwrap()]);
    let got = std::fs::read(path).unwrap();
    assert!(got == expect, "{name}: the export differs from the image");
    let meta = std::fs::metadata(path).unwrap();
    assert_eq!(meta.len(), expect.len() as u64);
    assert!(
        meta.blocks() * 512 < meta.len(),
        "{name}: the export is not sparse ({} blocks for {} bytes)",
        meta.blocks(),
        meta.len()
    );
}

#[test]
fn volume_lifecycle_and_refusals() {
    let p = Pipeline::start("vlmc-cli", "host-a", &Backend::Memory, &Backend::Memory);
    let vlmc = Vlmc {
        segment: p.tmp.arg(),
    };
    let dir = std::env::temp_dir().join(format!("vlmc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image_path = dir.join("image.raw");
    let export_path = dir.join("export.raw");
    let size = 6 * MIB + 1024;
    let image = make_image(&image_path, size);

    // Import, then export: identical and sparse.
    let r = vlmc.json(&["import", "vol", image_path.to_str().unwrap()]);
    assert_eq!(r["size"], size);
    assert!(r["chunks_skipped"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["bytes_written"].as_u64().unwrap() < size, "{r}");
    let info = vlmc.info("vol");
    assert_eq!(info["size"], size);
    assert_eq!(info["readonly"], false);
    assert_eq!(info["lock_owner"], Value::Null, "import closed the volume");
    check_export(&vlmc, "vol", &export_path, &image);
    assert_eq!(vlmc.names(false), ["vol"], "the export's snapshot is gone");

    // Snapshot and clone.
    vlmc.ok(&["snapshot", "vol", "snap1"]);
    vlmc.ok(&["create", "clone1", "--snap", "snap1"]);
    let snap = vlmc.info("snap1");
    assert_eq!(snap["readonly"], true);
    let clone = vlmc.info("clone1");
    assert_eq!(clone["parent"], "snap1");
    assert_eq!(clone["size"], size);
    check_export(&vlmc, "clone1", &export_path, &image);
    check_export(&vlmc, "snap1", &export_path, &image);
    let kids = vlmc.json(&["children", "snap1"]);
    let clones: Vec<&str> = kids
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["clone"] == true)
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(clones, ["clone1"], "{kids}");
    let mut names = vlmc.names(false);
    names.sort();
    assert_eq!(names, ["clone1", "snap1", "vol"]);
    let text = vlmc.ok(&["list"]);
    assert!(
        text.lines().count() == 4 && text.contains("snapshot"),
        "{text}"
    );

    // Hash the snapshot.
    let h = vlmc.json(&["hash", "snap1"]);
    assert!(h["objects"].as_u64().unwrap() >= 2, "{h}");
    assert!(h["distinct"].as_u64().unwrap() >= 1, "{h}");
    assert_eq!(vlmc.info("snap1")["hashed"], true);
    check_export(&vlmc, "snap1", &export_path, &image);

    // Resize: grow; shrinking needs --allow-shrink.
    vlmc.ok(&["resize", "clone1", "--size", "8M"]);
    assert_eq!(vlmc.info("clone1")["size"], 8 * MIB);
    vlmc.fails(
        &["resize", "clone1", "--size", "1M"],
        "clone1",
        "--allow-shrink",
    );
    assert_eq!(vlmc.info("clone1")["size"], 8 * MIB);
    vlmc.ok(&["resize", "clone1", "--size", "7M", "--allow-shrink"]);
    assert_eq!(vlmc.info("clone1")["size"], 7 * MIB);

    // Rename.
    vlmc.ok(&["rename", "clone1", "clone2"]);
    vlmc.fails(&["info", "clone1"], "clone1", "not found");
    assert_eq!(vlmc.info("clone2")["parent"], "snap1");

    // Refusals, each changing nothing.
    let before = vlmc.json(&["list", "--all"]);
    vlmc.fails(&["remove", "snap1"], "snap1", "clone2");
    vlmc.ok(&["open", "vol"]);
    assert_eq!(vlmc.info("vol")["lock_owner"], "host-a");
    vlmc.fails(&["remove", "vol"], "vol", "close");
    vlmc.fails(&["rename", "vol", "vol2"], "vol", "close");
    vlmc.ok(&["close", "vol"]);
    vlmc.fails(&["rename", "vol", "snap1"], "snap1", "exists");
    vlmc.fails(&["create", "vol", "--size", "1M"], "vol", "exists");
    vlmc.fails(&["create", "new", "--size", "1000"], "new", "512");
    vlmc.fails(&["create", "new", "--size", "0"], "new", "512");
    vlmc.fails(&["create", "new", "--size", "1X"], "new", "not a size");
    vlmc.fails(
        &["create", "new", "--size", "1M", "--object-size", "3K"],
        "new",
        "power of two",
    );
    vlmc.fails(&["create", "new", "--snap", "vol"], "new", "snapshot");
    for bad in [
        "bad/name",
        ".x",
        "archip_x",
        "x_lock",
        "x_hash",
        "0123456789abcdef",
    ] {
        vlmc.fails(&["create", bad, "--size", "1M"], bad, "name");
        vlmc.fails(&["snapshot", "vol", bad], bad, "name");
        vlmc.fails(&["rename", "vol", bad], bad, "name");
        vlmc.fails(&["import", bad, image_path.to_str().unwrap()], bad, "name");
    }
    let long = "a".repeat(167);
    vlmc.fails(&["create", &long, "--size", "1M"], &long, "more than 166");
    vlmc.fails(&["info", "nosuch"], "nosuch", "not found");
    vlmc.fails(&["remove", "nosuch"], "nosuch", "not found");
    vlmc.fails(
        &["import", "vol", image_path.to_str().unwrap()],
        "vol",
        "exists",
    );
    vlmc.fails(
        &["import", "new", "/nonexistent/file"],
        "/nonexistent/file",
        "",
    );
    assert_eq!(vlmc.json(&["list", "--all"]), before, "nothing changed");
    assert_eq!(vlmc.info("vol")["size"], size);

    // Usage errors are clap's.
    assert_eq!(vlmc.run(&["create", "x"]).status.code(), Some(2));
    assert_eq!(vlmc.run(&["frobnicate"]).status.code(), Some(2));

    // The configuration file gives the defaults; a bad one is an error.
    let config = dir.join("archipelago.toml");
    std::fs::write(
        &config,
        format!(
            "[segment]\nname = {:?}\n[host]\nid = \"cfg-host\"\n",
            vlmc.segment
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vlmc"))
        .args(["--config", config.to_str().unwrap(), "lock", "vol"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(vlmc.info("vol")["lock_owner"], "cfg-host");
    vlmc.ok(&["--host-id", "cfg-host", "unlock", "vol"]);
    std::fs::write(&config, "[segment]\nnoise = 1\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vlmc"))
        .args(["--config", config.to_str().unwrap(), "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("vlmc: configuration: "), "{err}");

    // Storage locks.
    vlmc.ok(&["--host-id", "h1", "lock", "vol"]);
    assert_eq!(vlmc.info("vol")["lock_owner"], "h1");
    vlmc.fails(&["--host-id", "h2", "lock", "vol"], "vol", "locked");
    vlmc.fails(&["remove", "vol"], "vol", "h1");
    vlmc.ok(&["--host-id", "h2", "unlock", "-f", "vol"]);
    assert_eq!(vlmc.info("vol")["lock_owner"], Value::Null);

    // Remove everything: the clone, then the snapshot, then the volume.
    vlmc.ok(&["remove", "clone2"]);
    vlmc.ok(&["remove", "snap1"]);
    vlmc.ok(&["remove", "vol"]);
    assert!(vlmc.names(false).is_empty());
    let all = vlmc.json(&["list", "--all"]);
    assert!(all.as_array().unwrap().iter().all(|v| v["removed"] == true));

    // Issue 14: a removed name can be used again, and a collection drops
    // the removed headers nothing needs (`list --all` stops growing).
    vlmc.ok(&["create", "vol", "--size", "1M"]);
    assert_eq!(vlmc.names(false), ["vol"]);
    vlmc.ok(&["gc"]);
    assert_eq!(vlmc.names(true), ["vol"]);

    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 14: `vlmc list` and `info` show lineage as an operator reads it:
/// a clone's parent is the snapshot it was cloned from; a volume's own
/// snapshots (the epoch chain the map records as its parent link) are not
/// its parents.
#[test]
fn the_parent_is_the_clone_source_not_a_volume_s_own_snapshot() {
    let p = Pipeline::start("vlmc-parent", "host-a", &Backend::Memory, &Backend::Memory);
    let vlmc = Vlmc {
        segment: p.tmp.arg(),
    };
    vlmc.ok(&["create", "vol", "--size", "4M"]);
    vlmc.ok(&["snapshot", "vol", "s1"]);
    vlmc.ok(&["create", "c1", "--snap", "s1"]);
    vlmc.ok(&["snapshot", "vol", "s2"]);
    vlmc.ok(&["snapshot", "c1", "c1s"]);
    let listed = vlmc.json(&["list"]);
    let parent_of = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"))["parent"]
            .clone()
    };
    for (name, parent) in [
        ("vol", Value::Null),
        ("s1", Value::Null),
        ("s2", Value::Null),
        ("c1", Value::from("s1")),
        ("c1s", Value::from("s1")),
    ] {
        assert_eq!(parent_of(name), parent, "{name}: {listed}");
        assert_eq!(vlmc.info(name)["parent"], parent, "{name}");
    }
}

/// Issue 14: `vlmc export` of a writable volume must not change it (it
/// used to snapshot it under a temporary name: a removed header left
/// behind, the volume moved to a new epoch, its parent pointed at the
/// removed snapshot). The volume is held for the export instead, and a
/// volume in use on this host is refused with a clear error.
#[test]
fn export_of_a_writable_volume_changes_nothing() {
    let p = Pipeline::start("vlmc-export", "host-a", &Backend::Memory, &Backend::Memory);
    let vlmc = Vlmc {
        segment: p.tmp.arg(),
    };
    let dir = std::env::temp_dir().join(format!("vlmc-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image_path = dir.join("image.raw");
    let export_path = dir.join("export.raw");
    let image = make_image(&image_path, 6 * MIB);
    vlmc.ok(&["import", "vol", image_path.to_str().unwrap()]);
    let before = vlmc.json(&["list", "--all"]);
    check_export(&vlmc, "vol", &export_path, &image);
    assert_eq!(
        vlmc.json(&["list", "--all"]),
        before,
        "the export changed the volume or left something behind"
    );
    // In use (open for writing on this host): refused, nothing changed.
    let c = archipelago_client::Client::connect(&p.tmp.arg()).unwrap();
    c.volume_write(archipelago_e2e::pipeline::VLMCD, "vol", 0, b"busy", false)
        .unwrap();
    vlmc.fails(
        &["export", "vol", export_path.to_str().unwrap()],
        "vol",
        "in use",
    );
    vlmc.ok(&["close", "vol"]);
    let mut expect = image.clone();
    expect[..4].copy_from_slice(b"busy");
    check_export(&vlmc, "vol", &export_path, &expect);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 19: `vlmc create big --size 8P` passed the size check and then
/// failed with a vague, repeated "refused by the blocker" (its map header
/// does not fit one request). Refused up front, naming the limit; a
/// grow past it too, the volume unchanged.
#[test]
fn a_volume_too_large_for_its_map_is_refused_naming_the_limit() {
    let p = Pipeline::start(
        "vlmc-too-large",
        "host-a",
        &Backend::Memory,
        &Backend::Memory,
    );
    let vlmc = Vlmc {
        segment: p.tmp.arg(),
    };
    vlmc.fails(&["create", "big", "--size", "8P"], "big", "at most");
    assert!(vlmc.names(false).is_empty());
    vlmc.ok(&["create", "v", "--size", "1G"]);
    vlmc.fails(
        &["resize", "v", "--size", "8P"],
        "v",
        "larger objects allow larger volumes",
    );
    assert_eq!(vlmc.info("v")["size"], 1u64 << 30);
}

/// Issue 19: "snapshot has clones" came back under "already exists", and
/// a non-ASCII name was reported with a mis-decoded character.
#[test]
fn refusals_name_their_real_cause() {
    let p = Pipeline::start("vlmc-causes", "host-a", &Backend::Memory, &Backend::Memory);
    let vlmc = Vlmc {
        segment: p.tmp.arg(),
    };
    vlmc.ok(&["create", "v", "--size", "1M"]);
    vlmc.ok(&["snapshot", "v", "s"]);
    vlmc.ok(&["create", "c", "--snap", "s"]);
    vlmc.fails(
        &["remove", "s"],
        "s",
        "in use: snapshot s still has clones: c",
    );
    vlmc.fails(&["create", "völ", "--size", "1M"], "völ", "contains 'ö'");
}

/// Issue 19: one corrupt map header made `vlmc list` fail for every
/// volume, and nothing could remove it. The others are listed; the
/// command names the broken one and fails; `vlmc remove -f` removes it.
#[test]
fn list_shows_the_readable_volumes_and_names_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::start(
        "vlmc-corrupt-list",
        "host-a",
        &Backend::Memory,
        &Backend::Files(dir.path().join("maps")),
    );
    let vlmc = Vlmc {
        segment: p.tmp.arg(),
    };
    vlmc.ok(&["create", "good", "--size", "1M"]);
    vlmc.ok(&["create", "bad", "--size", "1M"]);
    // Bytes of the header's body flipped: its checksum fails.
    let header = walk(&dir.path().join("maps/objects"))
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "bad"))
        .expect("the header file of bad");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&header)
        .unwrap();
    f.write_all_at(&[0xa5; 16], 40).unwrap();
    drop(f);
    for json in [false, true] {
        let mut args = vec!["list"];
        if json {
            args.insert(0, "--json");
        }
        let o = vlmc.run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.starts_with("vlmc: bad: map not listed"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let shown = String::from_utf8_lossy(&o.stdout);
        assert!(shown.contains("good"), "{shown}");
        assert!(!shown.contains("bad"), "{shown}");
    }
    // Removed only when forced, and then for good: the name is free and
    // the list clean. A readable map is not removed that way.
    vlmc.fails(&["remove", "bad"], "bad", "checksum");
    vlmc.ok(&["remove", "-f", "bad"]);
    assert_eq!(vlmc.names(false), ["good"]);
    vlmc.ok(&["create", "bad", "--size", "1M"]);
    assert_eq!(vlmc.info("bad")["size"], 1 << 20);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
