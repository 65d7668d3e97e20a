//! The NBD mapped set and nbdd's client list: two small JSON files in the
//! run directory shared by `vlmc map`/`unmap`/`showmapped`, `nbdd` and
//! `archipelago stop`.
//!
//! - `<run_dir>/nbd-mapped.json` ([`MappedSet`]): the volumes nbdd may
//!   serve. `vlmc` changes it under an exclusive `flock` of
//!   `<run_dir>/nbd-mapped.lock` ([`MappedSet::update`]: concurrent maps
//!   and unmaps never lose one another's change) and writes it
//!   atomically (a temporary file of its own renamed over it); nbdd
//!   re-reads it on every new connection and on SIGHUP, so the set
//!   survives nbdd restarts.
//! - `<run_dir>/nbd-clients.json` ([`NbdClients`]): written by nbdd on
//!   every connect and disconnect: its pid and the number of connected
//!   clients per export. Stale (nbdd is not running) when its pid is dead.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use serde::{Deserialize, Serialize};

/// One mapped volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedVolume {
    /// The volume (or snapshot) name, which is also the NBD export name.
    pub name: String,
    /// Exported read-only (a snapshot).
    #[serde(default)]
    pub readonly: bool,
}

/// The mapped set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedSet {
    /// The volumes, in mapping order.
    #[serde(default)]
    pub volumes: Vec<MappedVolume>,
}

/// Writes `path` through a temporary file renamed over it. The temporary
/// is unique to the process and the call, so threads (nbdd's) and
/// processes writing at once never write into each other's.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    // Relaxed: only distinct values are needed.
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    if let Err(e) = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

fn read_json<T: Default + for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e),
    }
}

impl MappedSet {
    /// Reads the set (a missing file is an empty set).
    pub fn load(path: &Path) -> io::Result<MappedSet> {
        read_json(path)
    }

    /// Writes the set atomically.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("serialises");
        write_atomic(path, &text)
    }

    /// Reads the set at `path` under an exclusive lock (the file `path`
    /// with the extension `lock`, created if missing), lets `change`
    /// change it, and saves it if `change` succeeded, then unlocks: the
    /// read-modify-write of concurrent callers (several `vlmc map` at
    /// once) never loses one's change. The outer error is the set's
    /// (lock, read, write), the inner one `change`'s (nothing saved).
    pub fn update<R, E>(
        path: &Path,
        change: impl FnOnce(&mut MappedSet) -> Result<R, E>,
    ) -> io::Result<Result<R, E>> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.with_extension("lock"))?;
        let _held =
            Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
        let mut set = Self::load(path)?;
        let r = change(&mut set);
        if r.is_ok() {
            set.save(path)?;
        }
        Ok(r)
    }

    /// The entry of `name`.
    pub fn get(&self, name: &str) -> Option<&MappedVolume> {
        self.volumes.iter().find(|v| v.name == name)
    }
}

/// nbdd's connected clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NbdClients {
    /// nbdd's process id.
    pub pid: u32,
    /// Connected clients per export (exports without clients omitted).
    #[serde(default)]
    pub clients: BTreeMap<String, u32>,
}

impl NbdClients {
    /// Reads the file (missing: no clients, pid 0).
    pub fn load(path: &Path) -> io::Result<NbdClients> {
        read_json(path)
    }

    /// Writes the file atomically.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("serialises");
        write_atomic(path, &text)
    }

    /// Clients connected to `name`, if nbdd (the recorded pid) still runs.
    pub fn connected(&self, name: &str) -> u32 {
        let alive = self.pid != 0
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), None).is_ok();
        if alive {
            self.clients.get(name).copied().unwrap_or(0)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19: nbdd's threads wrote the clients file through one
    /// temporary file shared by the process, so a reader could find it
    /// empty or half-written. Writers at once, a reader throughout: every
    /// read parses.
    #[test]
    fn concurrent_writers_never_show_a_reader_a_partial_file() {
        let dir = tempfile_dir("clients-race");
        let path = dir.join("nbd-clients.json");
        NbdClients::default().save(&path).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..4u32)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..300u32 {
                        let c = NbdClients {
                            pid: t,
                            clients: (0..20).map(|k| (format!("export-{k}"), i)).collect(),
                        };
                        c.save(&path).unwrap();
                    }
                })
            })
            .collect();
        let reader = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    NbdClients::load(&path).expect("a complete file");
                    reads += 1;
                }
                reads
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Concurrent updates of the mapped set (several `vlmc map` at once)
    /// all take effect.
    #[test]
    fn concurrent_updates_all_take_effect() {
        let dir = tempfile_dir("mapped-race");
        let path = dir.join("nbd-mapped.json");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        MappedSet::update(&path, |set| {
                            set.volumes.push(MappedVolume {
                                name: format!("v{t}-{i}"),
                                readonly: false,
                            });
                            Ok::<(), ()>(())
                        })
                        .unwrap()
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(MappedSet::load(&path).unwrap().volumes.len(), 160);
        // A failed change saves nothing.
        let r = MappedSet::update(&path, |set| {
            set.volumes.clear();
            Err::<(), _>("refused")
        });
        assert_eq!(r.unwrap(), Err("refused"));
        assert_eq!(MappedSet::load(&path).unwrap().volumes.len(), 160);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn sets_round_trip_and_missing_is_empty() {
        let dir = std::env::temp_dir().join(format!("mapped-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("nbd-mapped.json");
        assert_eq!(MappedSet::load(&p).unwrap(), MappedSet::default());
        let s = MappedSet {
            volumes: vec![MappedVolume {
                name: "v".into(),
                readonly: true,
            }],
        };
        s.save(&p).unwrap();
        assert_eq!(MappedSet::load(&p).unwrap(), s);
        assert!(s.get("v").unwrap().readonly);
        let c = NbdClients {
            pid: std::process::id(),
            clients: [("v".to_owned(), 2)].into(),
        };
        let cp = dir.join("nbd-clients.json");
        c.save(&cp).unwrap();
        assert_eq!(NbdClients::load(&cp).unwrap().connected("v"), 2);
        assert_eq!(NbdClients::load(&cp).unwrap().connected("w"), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
