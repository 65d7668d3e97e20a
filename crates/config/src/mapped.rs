//! The NBD mapped set and nbdd's client list: two small JSON files in the
//! run directory shared by `vlmc map`/`unmap`/`showmapped`, `nbdd` and
//! `archipelago stop`.
//!
//! - `<run_dir>/nbd-mapped.json` ([`MappedSet`]): the volumes nbdd may
//!   serve. `vlmc` writes it (atomically: a temporary file renamed over
//!   it); nbdd re-reads it on every new connection and on SIGHUP, so the
//!   set survives nbdd restarts.
//! - `<run_dir>/nbd-clients.json` ([`NbdClients`]): written by nbdd on
//!   every connect and disconnect: its pid and the number of connected
//!   clients per export. Stale (nbdd is not running) when its pid is dead.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

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

fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
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
