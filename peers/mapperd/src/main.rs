//! `mapperd`: serves volume maps over xseg (the `archipelago_mapperd`
//! library does the work). Maps and locks live on the
//! blocker at `--blockerm-port`, volume data on the one at
//! `--blockerb-port`; the mapper reaches both through the segment.
//!
//! ```text
//! mapperd --port 3 --blockerb-port 1 --blockerm-port 2 --host-id host-a
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use archipelago_client::RemoteStore;
use archipelago_mapper::Mapper;
use archipelago_mapperd::{Cli, MapperHandler, NullMapper};
use archipelago_peer::init_logging;
use archipelago_store::{FileStore, FileStoreOptions, ObjectStore};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.peer.log_level);
    if cli.null {
        return serve_null(&cli);
    }
    let maps = Arc::new(RemoteStore::new(&cli.peer.segment, cli.blockerm_port));
    let data = Arc::new(RemoteStore::new(&cli.peer.segment, cli.blockerb_port));
    let mut mapper = Mapper::new(maps, data, cli.peer.host_id());
    let mut write_back = None;
    if cli.write_back {
        let dir = write_back_dir(&cli.peer.segment);
        let options = FileStoreOptions {
            sync: false,
            ..FileStoreOptions::default()
        };
        match FileStore::open(&dir, options) {
            Ok(journals) => {
                let journals = Arc::new(journals);
                mapper = mapper.with_write_back(journals.clone());
                write_back = Some((dir, journals));
            }
            Err(e) => {
                eprintln!("mapperd: write-back journals in {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(mib) = cli.cache_mib {
        let bytes = mib.saturating_mul(1 << 20);
        mapper = mapper.with_cache_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    let mapper = Arc::new(mapper);
    let threads = cli.peer.threads as usize;
    let code =
        archipelago_peer::serve("mapperd", &cli.peer, || MapperHandler::new(mapper, threads));
    // A clean exit closed every volume (each close stores its journal):
    // the directory goes unless something is left to replay.
    if let Some((dir, journals)) = write_back {
        if journals.list("").is_ok_and(|l| l.is_empty()) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    code
}

/// Where the write-back journals of the instance on `segment` live: on
/// memory (`/dev/shm`), so that they outlive a crash of this process (the
/// restarted mapperd replays them) but never a crash of the host, where
/// they would describe data the host did not sync.
fn write_back_dir(segment: &str) -> PathBuf {
    let id: String = segment
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    let id = &id[id.len().saturating_sub(200)..];
    PathBuf::from(format!("/dev/shm/archipelago-write-back-{id}"))
}

/// Runs the null mapper.
fn serve_null(cli: &Cli) -> ExitCode {
    archipelago_peer::serve("mapperd", &cli.peer, NullMapper::default)
}
