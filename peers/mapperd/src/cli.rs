//! The flags of `mapperd`, parsed by its binary (and by the tests that check the
//! launch descriptions of `archipelago_peer::launch` against them).

use archipelago_peer::PeerArgs;
use clap::Parser;

/// Serve volume maps over xseg, stored on two blockers.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The flags every peer takes.
    #[command(flatten)]
    pub peer: PeerArgs,

    /// Port of the blocker holding maps and locks.
    #[arg(long, default_value_t = 2)]
    pub blockerm_port: u32,

    /// Port of the blocker holding volume data.
    #[arg(long, default_value_t = 1)]
    pub blockerb_port: u32,

    /// Size of the decoded map-chunk cache in MiB (0 disables it; default
    /// `archipelago_mapper::DEFAULT_CACHE_BYTES`).
    #[arg(long)]
    pub cache_mib: Option<u64>,

    /// Benchmark ceiling: keep no map and reach no blocker; answer map
    /// requests from arithmetic (`xseg-bench volume --target null`).
    #[arg(long)]
    pub null: bool,

    /// The data blocker acknowledges writes before they are durable (a
    /// files blocker with `--no-sync`): keep commits in write-back
    /// journals under /dev/shm (they outlive this process, not the host)
    /// and make them durable at the composer's FLUSH, after the data.
    /// Required with such a blocker: without it commits are durable at
    /// once, possibly before their data.
    #[arg(long)]
    pub write_back: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipelago_peer::launch::{Common, Launch, Mapper};

    /// Parses the command line `m` makes with mapperd's own flags and
    /// checks every value is the one described.
    fn check(m: &Mapper) {
        let cli = Cli::try_parse_from(Launch::from(m.clone()).argv())
            .unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert_eq!(Common::parsed(&cli.peer), m.common.resolved(), "{m:?}");
        assert_eq!(
            (cli.blockerm_port, cli.blockerb_port),
            (m.blockerm_port, m.blockerb_port)
        );
        assert_eq!(cli.cache_mib, m.cache_mib);
        assert_eq!(cli.null, m.null);
        assert_eq!(cli.write_back, m.write_back);
    }

    #[test]
    fn launch_descriptions_parse_as_described() {
        check(&Mapper {
            common: Common::new("seg", 3),
            blockerm_port: 2,
            blockerb_port: 1,
            cache_mib: None,
            null: false,
            write_back: false,
        });
        check(&Mapper {
            common: Common {
                host_id: Some("host-a".into()),
                threads: Some(6),
                drain_timeout: Some(1),
                ..Common::new("/tmp/seg", 13)
            },
            blockerm_port: 12,
            blockerb_port: 11,
            cache_mib: Some(0),
            null: true,
            write_back: true,
        });
    }
}
