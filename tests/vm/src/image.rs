//! The guest image: Debian's cloud kernel and an initramfs assembled from
//! this machine's Debian packages (busybox-static, e2fsprogs, fio and the
//! libraries `ldd` lists for them, the virtio modules in dependency
//! order), with `guest/init.sh` as `/init`. Built once and cached under
//! `target/vm-guest/<key>/`, where the key hashes everything that goes in
//! (kernel version, tools' sizes and times, the init script), so an
//! upgraded package or an edited init makes a new image.
//!
//! The initramfs is written directly as a `newc` cpio archive
//! ([`Cpio`]), uncompressed (the kernel unpacks it faster than it would
//! decompress it; fio's libraries make it about 85 MiB).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::VmError;

/// The guest's `/init`.
pub const INIT: &str = include_str!("../guest/init.sh");

/// Programs copied into the guest (host path, guest path).
const TOOLS: &[(&str, &str)] = &[
    ("/usr/sbin/mke2fs", "/sbin/mke2fs"),
    ("/usr/sbin/e2fsck", "/sbin/e2fsck"),
    ("/usr/bin/fio", "/usr/bin/fio"),
];
/// busybox-static's binary (every other command is an applet of it).
const BUSYBOX: &str = "/bin/busybox";
/// Modules the disks need (`=m` in the cloud kernel; ext4 is built in).
const MODULES: &[&str] = &["virtio_pci", "virtio_blk"];

/// A built guest image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The kernel.
    pub kernel: PathBuf,
    /// The initramfs (an uncompressed cpio archive).
    pub initramfs: PathBuf,
    /// The kernel's release (`6.1.0-…-cloud-amd64`).
    pub release: String,
}

/// The newest `/boot/vmlinuz-*-cloud-amd64` (linux-image-cloud-amd64).
pub fn cloud_kernel() -> Option<(PathBuf, String)> {
    let mut found: Vec<String> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| {
            n.strip_prefix("vmlinuz-")
                .filter(|r| r.ends_with("-cloud-amd64"))
                .map(str::to_owned)
        })
        .collect();
    found.sort_by_key(|r| version_key(r));
    let release = found.pop()?;
    Some((PathBuf::from(format!("/boot/vmlinuz-{release}")), release))
}

/// Numbers of a release string, for a version sort.
fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// What the image needs from the host that is missing (empty: nothing).
pub fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    if cloud_kernel().is_none() {
        missing.push("/boot/vmlinuz-*-cloud-amd64 (linux-image-cloud-amd64)".to_owned());
    }
    for (path, _) in TOOLS.iter().chain(&[(BUSYBOX, "")]) {
        if !Path::new(path).exists() {
            missing.push((*path).to_owned());
        }
    }
    for tool in ["modprobe", "ldd"] {
        if Command::new(tool).arg("--version").output().is_err() {
            missing.push(tool.to_owned());
        }
    }
    missing
}

/// Returns the cached image under `cache`, building it first if needed.
pub fn build(cache: &Path) -> Result<Image, VmError> {
    let (kernel, release) = cloud_kernel().ok_or_else(|| VmError::Missing {
        what: "a cloud kernel in /boot".into(),
    })?;
    let key = cache_key(&kernel, &release)?;
    let dir = cache.join(&key[..16]);
    let image = Image {
        kernel: dir.join("vmlinuz"),
        initramfs: dir.join("initramfs.cpio"),
        release: release.clone(),
    };
    if image.initramfs.exists() && image.kernel.exists() {
        return Ok(image);
    }
    std::fs::create_dir_all(cache).map_err(|e| VmError::io(cache, e))?;
    // Built beside, renamed into place: a concurrent or interrupted build
    // never leaves a half-written image under the key.
    let tmp = tempfile::tempdir_in(cache).map_err(|e| VmError::io(cache, e))?;
    let mut cpio = Cpio::default();
    for d in [
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/lib",
        "/lib64",
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/mnt",
        "/run",
        "/etc",
        "/root",
    ] {
        cpio.dir(d);
    }
    cpio.file("/init", INIT.as_bytes().to_vec(), 0o755);
    cpio.file("/bin/busybox", read(Path::new(BUSYBOX))?, 0o755);
    for applet in busybox_applets()? {
        let at = format!("/bin/{applet}");
        if !cpio.has(&at) {
            cpio.symlink(&at, "busybox");
        }
    }
    for (host, guest) in TOOLS {
        cpio.file(guest, read(Path::new(host))?, 0o755);
        for lib in libraries(Path::new(host))? {
            let at = lib.to_str().expect("utf-8 library path").to_owned();
            if !cpio.has(&at) {
                // 755: the loader must be executable.
                cpio.file(&at, read(&lib)?, 0o755);
            }
        }
    }
    cpio.symlink("/sbin/mkfs.ext4", "mke2fs");
    if let Ok(conf) = std::fs::read("/etc/mke2fs.conf") {
        cpio.file("/etc/mke2fs.conf", conf, 0o644);
    }
    let mut order = String::new();
    for m in modules(&release)? {
        let name = m
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
            .ok_or_else(|| VmError::Build {
                step: "modules".into(),
                detail: format!("{}: not a plain .ko", m.display()),
            })?
            .to_owned();
        if !cpio.has(&format!("/lib/modules/{name}.ko")) {
            cpio.file(&format!("/lib/modules/{name}.ko"), read(&m)?, 0o644);
            writeln!(order, "{name}").expect("a String");
        }
    }
    cpio.file("/etc/modules.order", order.into_bytes(), 0o644);

    let initramfs = tmp.path().join("initramfs.cpio");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&initramfs).map_err(|e| VmError::io(&initramfs, e))?,
    );
    cpio.write(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| VmError::io(&initramfs, e))?;
    drop(out);
    std::fs::copy(&kernel, tmp.path().join("vmlinuz")).map_err(|e| VmError::io(&kernel, e))?;
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, &dir).is_err() {
        // Someone else built it meanwhile.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if !image.initramfs.exists() {
        return Err(VmError::Build {
            step: "cache".into(),
            detail: format!("{} did not appear", image.initramfs.display()),
        });
    }
    Ok(image)
}

/// A hash of everything the image is made of.
fn cache_key(kernel: &Path, release: &str) -> Result<String, VmError> {
    let mut h = Sha256::new();
    h.update(INIT.as_bytes());
    h.update(release.as_bytes());
    for path in [kernel, Path::new(BUSYBOX)]
        .into_iter()
        .chain(TOOLS.iter().map(|(p, _)| Path::new(*p)))
    {
        let m = std::fs::metadata(path).map_err(|e| VmError::io(path, e))?;
        h.update(format!("{}:{}:{};", path.display(), m.len(), m.mtime()).as_bytes());
    }
    Ok(h.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

fn read(path: &Path) -> Result<Vec<u8>, VmError> {
    std::fs::read(path).map_err(|e| VmError::io(path, e))
}

/// Runs `cmd` and returns its standard output.
fn output(step: &str, cmd: &mut Command) -> Result<String, VmError> {
    let o = cmd.output().map_err(|e| VmError::Build {
        step: step.into(),
        detail: format!("{cmd:?}: {e}"),
    })?;
    if !o.status.success() {
        return Err(VmError::Build {
            step: step.into(),
            detail: format!(
                "{cmd:?}: {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn busybox_applets() -> Result<Vec<String>, VmError> {
    let list = output("busybox", Command::new(BUSYBOX).arg("--list"))?;
    Ok(list.split_whitespace().map(str::to_owned).collect())
}

/// The shared libraries `bin` loads (and the loader), as `ldd` resolves
/// them on this machine.
fn libraries(bin: &Path) -> Result<Vec<PathBuf>, VmError> {
    let text = output("ldd", Command::new("ldd").arg(bin))?;
    let mut libs = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let path = match words.as_slice() {
            [_, "=>", p, ..] if p.starts_with('/') => *p,
            [p, ..] if p.starts_with('/') => *p,
            _ => continue,
        };
        libs.push(PathBuf::from(path));
    }
    Ok(libs)
}

/// The module files `MODULES` need, dependencies first (as `modprobe`
/// would load them).
fn modules(release: &str) -> Result<Vec<PathBuf>, VmError> {
    let mut files = Vec::new();
    for m in MODULES {
        let text = output(
            "modprobe",
            Command::new("modprobe").args(["-S", release, "--show-depends", m]),
        )?;
        for line in text.lines() {
            if let Some(path) = line.strip_prefix("insmod ") {
                let path = PathBuf::from(path.trim());
                if !files.contains(&path) {
                    files.push(path);
                }
            }
        }
    }
    Ok(files)
}

/// What a cpio entry holds.
#[derive(Debug)]
enum Entry {
    Dir,
    File(Vec<u8>, u32),
    Symlink(String),
}

/// A `newc` ("070701") cpio archive in memory: the format the kernel
/// unpacks as an initramfs. Entries are written sorted by path, so every
/// directory precedes what it holds (missing parents are added).
#[derive(Debug, Default)]
pub struct Cpio {
    entries: BTreeMap<String, Entry>,
}

impl Cpio {
    /// Whether `path` has an entry.
    pub fn has(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    fn parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            self.entries.entry(parent.to_owned()).or_insert(Entry::Dir);
            at += i + 1;
        }
    }

    fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/');
        self.parents(path);
        self.entries.insert(path.to_owned(), entry);
    }

    /// A directory.
    pub fn dir(&mut self, path: &str) {
        self.add(path, Entry::Dir);
    }

    /// A regular file with `mode` (permission bits).
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.add(path, Entry::File(data, mode));
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.add(path, Entry::Symlink(target.to_owned()));
    }

    /// Writes the archive (with its trailer).
    pub fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut written = 0u64;
        for (ino, (name, entry)) in self.entries.iter().enumerate() {
            let (mode, data): (u32, &[u8]) = match entry {
                Entry::Dir => (0o040_755, &[]),
                Entry::File(d, m) => (0o100_000 | m, d),
                Entry::Symlink(t) => (0o120_777, t.as_bytes()),
            };
            let nlink = if matches!(entry, Entry::Dir) { 2 } else { 1 };
            written += header(out, ino as u32 + 1, mode, nlink, name, data)?;
        }
        written += header(out, 0, 0, 1, "TRAILER!!!", &[])?;
        // The kernel reads archives in 512-byte blocks.
        out.write_all(&vec![0u8; (512 - written % 512) as usize % 512])
    }
}

/// Writes one entry (header, name, data, each padded to 4 bytes);
/// returns the bytes written.
fn header(
    out: &mut impl std::io::Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
) -> std::io::Result<u64> {
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    let mut head = String::from("070701");
    for f in fields {
        let _ = write!(head, "{f:08x}");
    }
    let mut n = head.len() + name.len() + 1;
    out.write_all(head.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    let pad = (4 - n % 4) % 4;
    out.write_all(&[0u8; 4][..pad])?;
    n += pad;
    out.write_all(data)?;
    let pad = (4 - data.len() % 4) % 4;
    out.write_all(&[0u8; 4][..pad])?;
    n += data.len() + pad;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_puts_parents_first_and_pads_every_field() {
        let mut c = Cpio::default();
        c.file("/a/b/c", b"hello".to_vec(), 0o644);
        c.symlink("/a/l", "b/c");
        let mut out = Vec::new();
        c.write(&mut out).unwrap();
        assert_eq!(out.len() % 512, 0);
        let text = String::from_utf8_lossy(&out);
        let pos = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} missing"));
        // "a", "a/b", "a/b/c", "a/l", trailer: in that order.
        assert!(pos("a\0") < pos("a/b\0"));
        assert!(pos("a/b\0") < pos("a/b/c\0"));
        assert!(pos("a/b/c\0") < pos("a/l\0"));
        assert!(pos("a/l\0") < pos("TRAILER!!!"));
        // Every header starts on a 4-byte boundary.
        for (i, _) in text.match_indices("070701") {
            assert_eq!(i % 4, 0, "header at {i}");
        }
        // The file's header: mode 0100644, size 5.
        let h = pos("a/b/c\0") - 110;
        assert_eq!(&text[h + 14..h + 22], "000081a4");
        assert_eq!(&text[h + 54..h + 62], "00000005");
        // Name and NUL end on a 4-byte boundary (110 + 6): the data follows.
        assert_eq!(&text[pos("a/b/c\0") + 6..pos("a/b/c\0") + 11], "hello");
    }

    #[test]
    fn releases_sort_by_their_numbers() {
        let mut r = [
            "6.1.0-9-cloud-amd64",
            "6.1.0-57-cloud-amd64",
            "6.1.0-10-cloud-amd64",
        ];
        r.sort_by_key(|r| version_key(r));
        assert_eq!(r[2], "6.1.0-57-cloud-amd64");
    }
}
