//! `vlmc`: manage Archipelago volumes.
//!
//! ```text
//! vlmc [global flags] create NAME --size SIZE [--object-size SIZE]
//! vlmc [global flags] create NAME --snap SNAP [--size SIZE]
//! vlmc [global flags] snapshot VOLUME SNAP | remove NAME | rename OLD NEW
//! vlmc [global flags] resize NAME --size SIZE [--allow-shrink]
//! vlmc [global flags] list [--all] | info NAME | children SNAP
//! vlmc [global flags] open NAME | close NAME | lock NAME | unlock [-f] NAME
//! vlmc [global flags] tree [NAME] | flatten NAME [--rate RATE] | rollback VOLUME SNAP
//! vlmc [global flags] hash SNAP | upgrade NAME
//! vlmc [global flags] import NAME FILE | export NAME FILE
//! vlmc [global flags] map NAME [--readonly] | unmap [-f] NAME | showmapped
//! vlmc [global flags] gc [--dry-run] | du [NAME]
//! ```
//!
//! Global flags: `--segment`, `--vlmcd-port`, `--mapperd-port`,
//! `--blockerm-port`, `--blockerb-port`, `--host-id`, `--config`, `--json`.
//! Errors are one line on stderr, `vlmc: <volume>: <cause>`, exit code 1;
//! usage errors exit with 2.
//!
//! Modules: [`cli`] parses the arguments, [`target`] resolves where the
//! peers are, [`commands`] runs the verbs, [`transfer`] moves images,
//! [`nbd`] maps volumes for nbdd, [`lineage`] shows and changes the lineage, [`gc`] collects garbage and accounts space, [`progress`] shows progress on a terminal, [`failure`] is the error.

mod cli;
mod commands;
mod failure;
mod gc;
mod lineage;
mod nbd;
mod progress;
mod target;
mod transfer;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let mut stdout = io::stdout().lock();
    let result = commands::run(&cli, &mut stdout);
    let _ = stdout.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vlmc: {e}");
            ExitCode::FAILURE
        }
    }
}
