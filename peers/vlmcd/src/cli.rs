//! The flags of `vlmcd`, parsed by its binary (and by the tests that check the
//! launch descriptions of `archipelago_peer::launch` against them).

use archipelago_peer::PeerArgs;
use clap::Parser;

/// Serve volume I/O over xseg, composed from the mapper and the data blocker.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The flags every peer takes.
    #[command(flatten)]
    pub peer: PeerArgs,

    /// Port of the mapper.
    #[arg(long, default_value_t = 3)]
    pub mapper_port: u32,

    /// Port of the blocker holding volume data.
    #[arg(long, default_value_t = 1)]
    pub blockerb_port: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipelago_peer::launch::{Common, Composer, Launch};

    /// Parses the command line `c` makes with vlmcd's own flags and checks
    /// every value is the one described.
    fn check(c: &Composer) {
        let cli = Cli::try_parse_from(Launch::from(c.clone()).argv())
            .unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert_eq!(Common::parsed(&cli.peer), c.common.resolved(), "{c:?}");
        assert_eq!(
            (cli.mapper_port, cli.blockerb_port),
            (c.mapper_port, c.blockerb_port)
        );
    }

    #[test]
    fn launch_descriptions_parse_as_described() {
        check(&Composer {
            common: Common::new("seg", 4),
            mapper_port: 3,
            blockerb_port: 1,
        });
        check(&Composer {
            common: Common {
                max_inflight: Some(7),
                idle_polls: Some(5),
                ..Common::new("/tmp/seg", 14)
            },
            mapper_port: 13,
            blockerb_port: 11,
        });
    }
}
