//! The flags of `nbdd`, parsed by its binary (and by the tests that check the
//! launch descriptions of `archipelago_peer::launch` against them).

use std::path::PathBuf;

use archipelago_peer::PeerArgs;
use clap::Parser;

/// Serve mapped Archipelago volumes over NBD.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The flags every peer takes.
    #[command(flatten)]
    pub peer: PeerArgs,

    /// Port of the composer (volume I/O).
    #[arg(long, default_value_t = 4)]
    pub vlmcd_port: u32,

    /// Port of the mapper (block status).
    #[arg(long, default_value_t = 3)]
    pub mapperd_port: u32,

    /// The mapped set (see `vlmc map`).
    #[arg(long, value_name = "FILE")]
    pub mapped_file: PathBuf,

    /// Publish connected clients here (for `vlmc unmap`).
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,

    /// Unix socket to serve on.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// TCP address to serve on (e.g. 127.0.0.1:10809).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Requests in flight per connection.
    #[arg(long, default_value_t = 64)]
    pub queue_depth: usize,

    /// Seconds a reply may take to write before its client is cut off.
    #[arg(long, default_value_t = crate::WRITE_TIMEOUT.as_secs())]
    pub write_timeout: u64,

    /// Seconds a client may take over its handshake.
    #[arg(long, default_value_t = crate::HANDSHAKE_TIMEOUT.as_secs())]
    pub handshake_timeout: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipelago_peer::launch::{Common, Launch, Nbd};

    /// Parses the command line `n` makes with nbdd's own flags and checks
    /// every value is the one described (or the default where the
    /// description leaves it out).
    fn check(n: &Nbd) {
        let cli = Cli::try_parse_from(Launch::from(n.clone()).argv())
            .unwrap_or_else(|e| panic!("{n:?}: {e}"));
        assert_eq!(Common::parsed(&cli.peer), n.common.resolved(), "{n:?}");
        assert_eq!(
            (cli.vlmcd_port, cli.mapperd_port),
            (n.vlmcd_port, n.mapperd_port)
        );
        assert_eq!(cli.mapped_file, n.mapped_file);
        assert_eq!(cli.status_file, n.status_file);
        assert_eq!(cli.socket, n.socket);
        assert_eq!(cli.listen, n.listen);
        assert_eq!(cli.queue_depth, n.queue_depth.unwrap_or(64));
        assert_eq!(
            cli.write_timeout,
            n.write_timeout.unwrap_or(crate::WRITE_TIMEOUT.as_secs())
        );
        assert_eq!(
            cli.handshake_timeout,
            n.handshake_timeout
                .unwrap_or(crate::HANDSHAKE_TIMEOUT.as_secs())
        );
    }

    #[test]
    fn launch_descriptions_parse_as_described() {
        let minimal = Nbd {
            common: Common::new("seg", 5),
            vlmcd_port: 4,
            mapperd_port: 3,
            mapped_file: "/run/a/nbd-mapped.json".into(),
            status_file: None,
            socket: None,
            listen: None,
            queue_depth: None,
            write_timeout: None,
            handshake_timeout: None,
        };
        check(&minimal);
        check(&Nbd {
            common: Common {
                host_id: Some("h".into()),
                pidfile: Some("/run/a/nbdd.pid".into()),
                ..Common::new("/tmp/seg", 15)
            },
            vlmcd_port: 14,
            mapperd_port: 13,
            mapped_file: "/r9/nbd-mapped.json".into(),
            status_file: Some("/r9/nbd-clients.json".into()),
            socket: Some("/r9/nbd.sock".into()),
            listen: Some("127.0.0.1:1234".into()),
            queue_depth: Some(8),
            write_timeout: Some(3),
            handshake_timeout: Some(2),
        });
    }
}
