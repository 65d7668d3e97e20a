//! `archipelago`: start, stop and watch this host's Archipelago peers
//! (blockerb, blockerm, mapperd, vlmcd) from one configuration file.
//!
//! ```text
//! archipelago [--config FILE] config [--json]
//! archipelago start [ROLE]        # ready when it returns 0
//! archipelago status [--json]     # 0 only when every role runs
//! archipelago stop [-f] [ROLE]
//! archipelago restart [ROLE]
//! ```
//!
//! `start` creates the segment if needed and launches a detached
//! supervisor (this binary's hidden `supervise` subcommand) that starts the
//! roles in order, waits for each to answer PING, and restarts a role that
//! dies. The peers' binaries are found next to this executable; their
//! output goes to `<log_dir>/<role>.log` (RUST_LOG is passed on).

mod control;
mod procs;
mod supervise;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use archipelago_config::Config;
use archipelago_protocol::Role;
use clap::{Parser, Subcommand};

/// Start, stop and watch the Archipelago peers of this host.
#[derive(Debug, Parser)]
#[command(name = "archipelago", version, about)]
pub struct Cli {
    /// Configuration file (default: $ARCHIPELAGO_CONFIG, else
    /// /etc/archipelago/archipelago.toml if it exists, else built-in
    /// defaults).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Print the effective configuration (TOML, or JSON with --json).
    Config {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create the segment if needed and start every role (or ROLE) under
    /// the supervisor; returns once they answer PING.
    Start {
        /// Only this role (blockerb, blockerm, mapperd, vlmcd or nbdd).
        #[arg(value_parser = procs::parse_role)]
        role: Option<Role>,
    },
    /// Stop the supervisor, then the roles (or ROLE) in reverse order,
    /// letting requests in flight finish. The segment stays. Refused while
    /// volumes are open for writing on this host (mapperd is asked).
    Stop {
        /// Stop even with volumes open.
        #[arg(short, long)]
        force: bool,
        /// Only this role.
        #[arg(value_parser = procs::parse_role)]
        role: Option<Role>,
    },
    /// Stop, then start.
    Restart {
        /// Only this role.
        #[arg(value_parser = procs::parse_role)]
        role: Option<Role>,
    },
    /// Show each role's pid, port, state, counters and restarts; exits 0
    /// only when every role runs.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// The supervisor itself (started by `start`).
    #[command(hide = true)]
    Supervise {
        /// The roles to supervise, in start order.
        #[arg(long, value_delimiter = ',', value_parser = procs::parse_role, required = true)]
        roles: Vec<Role>,
    },
}

/// Where the peers' binaries are: next to this executable.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    Ok(exe
        .parent()
        .context("this executable has no directory")?
        .to_path_buf())
}

fn run(cli: &Cli) -> Result<bool> {
    let config = Config::load(cli.config.as_deref())?;
    match &cli.command {
        Cmd::Config { json } => {
            if *json {
                control::emit(&format!("{}\n", serde_json::to_string_pretty(&config)?))?;
            } else {
                control::emit(&config.to_toml())?;
            }
            Ok(true)
        }
        Cmd::Start { role } => control::start(cli, &config, *role).map(|()| true),
        Cmd::Stop { force, role } => control::stop(cli, &config, *role, *force).map(|()| true),
        Cmd::Restart { role } => {
            control::stop(cli, &config, *role, true)?;
            control::start(cli, &config, *role).map(|()| true)
        }
        Cmd::Status { json } => control::status(&config, *json),
        Cmd::Supervise { roles } => supervise::run(&config, roles).map(|()| true),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("archipelago: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["archipelago", "start", "nbdd"]).is_ok());
        assert!(Cli::try_parse_from(["archipelago", "start", "nbd"]).is_err());
        let c = Cli::try_parse_from(["archipelago", "stop", "-f", "mapperd"]).unwrap();
        assert!(matches!(
            c.command,
            Cmd::Stop {
                force: true,
                role: Some(Role::Mapperd)
            }
        ));
    }
}
