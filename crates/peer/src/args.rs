//! The flags every peer shares.

use std::path::PathBuf;

use clap::Args;
use xseg_shm::IdlePolicy;

/// Flags shared by all peers (flatten into a peer's own clap struct).
#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    /// Segment: a shared-memory name under /dev/shm, or a path containing '/'.
    #[arg(long, default_value = "archipelago", value_name = "NAME|PATH")]
    pub segment: String,

    /// Static port to serve (see `xseg report`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..65535))]
    pub port: u32,

    /// Worker threads for the peer's blocking work.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,

    /// Most requests served at once; more wait in the port's queue.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_inflight: u32,

    /// What to do when idle: spin, yield (then sleep) or sleep.
    #[arg(long, default_value_t = IdlePolicy::Yield)]
    pub idle_policy: IdlePolicy,

    /// Empty polls before sleeping on the doorbell.
    #[arg(long, default_value_t = xseg_shm::DEFAULT_IDLE_POLLS)]
    pub idle_polls: u32,

    /// Identity of this host as a lock owner (default: the host name).
    #[arg(long)]
    pub host_id: Option<String>,

    /// Write the process id to this file while running.
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides).
    #[arg(long, default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,

    /// Seconds to let requests in flight finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,
}

impl PeerArgs {
    /// The lock-owner identity: `--host-id`, else the host name.
    pub fn host_id(&self) -> String {
        self.host_id.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".to_owned())
        })
    }
}

/// Sets up `env_logger` at `level` unless `RUST_LOG` says otherwise.
pub fn init_logging(level: &str) {
    let env = env_logger::Env::default().default_filter_or(level);
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        peer: PeerArgs,
    }

    #[test]
    fn defaults_and_validation() {
        let c = Cli::try_parse_from(["p", "--port", "3"]).unwrap();
        assert_eq!(
            (c.peer.port, c.peer.threads, c.peer.max_inflight),
            (3, 4, 64)
        );
        assert_eq!(c.peer.idle_policy, IdlePolicy::Yield);
        assert_eq!(c.peer.segment, "archipelago");
        for bad in [
            vec!["p"],
            vec!["p", "--port", "x"],
            vec!["p", "--port", "1", "--threads", "0"],
            vec!["p", "--port", "1", "--idle-policy", "nap"],
            vec!["p", "--port", "1", "--log-level", "loud"],
            vec!["p", "--port", "1", "--bogus"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
        }
        let c = Cli::try_parse_from(["p", "--port", "1", "--host-id", "h1"]).unwrap();
        assert_eq!(c.peer.host_id(), "h1");
        let c = Cli::try_parse_from(["p", "--port", "1"]).unwrap();
        assert!(!c.peer.host_id().is_empty());
    }
}
