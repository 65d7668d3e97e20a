//! Where the peers are: built in one place, [`Target::resolve`], from the
//! configuration file and the global flags (flags win).

use std::path::PathBuf;

use archipelago_config::Config;

use crate::cli::Global;
use crate::failure::{Failure, On};

/// The segment and the peers' ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Segment name or path.
    pub segment: String,
    /// The composer.
    pub vlmcd: u32,
    /// The mapper.
    pub mapperd: u32,
    /// The map blocker (maps and storage locks).
    pub blockerm: u32,
    /// The data blocker.
    pub blockerb: u32,
    /// Owner name for storage locks taken by `vlmc lock`.
    pub host_id: String,
    /// nbdd's Unix socket.
    pub nbd_socket: PathBuf,
    /// The mapped set.
    pub mapped_file: PathBuf,
    /// nbdd's connected clients.
    pub clients_file: PathBuf,
}

impl Target {
    /// The configuration's values (`--config FILE`, else
    /// `$ARCHIPELAGO_CONFIG`, else the system file if it exists, else the
    /// built-in defaults), then `$ARCHIPELAGO_SEGMENT`, then the flags:
    /// each overrides the one before.
    pub fn resolve(g: &Global) -> Result<Target, Failure> {
        let cfg = Config::load(g.config.as_deref()).on("configuration")?;
        let segment = std::env::var("ARCHIPELAGO_SEGMENT")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| cfg.segment.name.clone());
        let nbd_socket = cfg.nbdd.socket.clone();
        let mapped_file = cfg.nbd_mapped_file();
        let clients_file = cfg.nbd_clients_file();
        Ok(Target {
            nbd_socket,
            mapped_file,
            clients_file,
            segment: g.segment.clone().unwrap_or(segment),
            vlmcd: g.vlmcd_port.unwrap_or(cfg.vlmcd.port),
            mapperd: g.mapperd_port.unwrap_or(cfg.mapperd.port),
            blockerm: g.blockerm_port.unwrap_or(cfg.blockerm.port),
            blockerb: g.blockerb_port.unwrap_or(cfg.blockerb.port),
            host_id: g.host_id.clone().unwrap_or(cfg.host.id),
        })
    }
}
