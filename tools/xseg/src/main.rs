//! `xseg`: create, inspect, recover and destroy xseg shared-memory
//! segments.
//!
//! ```text
//! xseg [--segment NAME|PATH] create [--ports N] [--static-ports N] [--requests N]
//!                                   [--max-buffer SIZE] [--buffers SIZE=COUNT,...]
//!                                   [--mode OCTAL] [--protocol-version N]
//! xseg [--segment NAME|PATH] destroy [--force]
//! xseg [--segment NAME|PATH] report [--json]
//! xseg [--segment NAME|PATH] recover (PORT | --dead) [--json]
//! ```
//!
//! The segment defaults to `archipelago`, a POSIX shared-memory object
//! under `/dev/shm`; a value containing `/` is a file path.
//!
//! Errors are one line on stderr, `xseg: ` followed by the segment and the
//! cause, with exit code 1; usage errors exit with 2. `RUST_LOG` enables
//! logs.
//!
//! Modules: [`cli`] parses the arguments, [`commands`] runs them,
//! [`render`] lays out human-readable reports, [`size`] parses sizes.

mod cli;
mod commands;
mod render;
mod size;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = cli::Cli::parse();
    let mut stdout = io::stdout().lock();
    let result = commands::run(&cli, &mut stdout).and_then(|()| Ok(stdout.flush()?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `xseg report | head`: the reader left; nothing to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xseg: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, `outer: inner: root`, skipping a
/// cause that its wrapper's message already ends with (several library
/// errors print their source themselves).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn causes_join_on_one_line_without_repeats() {
        let io = io::Error::new(io::ErrorKind::PermissionDenied, "Permission denied");
        let lib = xseg_shm::SegmentError::Io {
            name: "seg".into(),
            cause: io,
        };
        let e = Err::<(), _>(lib).context("while\nlooking").unwrap_err();
        assert_eq!(
            one_line(&e),
            "while looking: segment seg: Permission denied"
        );
    }

    #[test]
    fn broken_pipes_are_recognised_through_context() {
        let e = Err::<(), _>(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("writing")
            .unwrap_err();
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
