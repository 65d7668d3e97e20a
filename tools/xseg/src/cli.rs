//! Command-line arguments.

use clap::{ArgGroup, Args, Parser, Subcommand};
use xseg_shm::SegmentName;

use crate::size::{self, BufferCount};

/// Create, inspect, recover and destroy xseg shared-memory segments.
///
/// A segment is a POSIX shared-memory object under /dev/shm (a name
/// without '/') or a file (a path containing '/'), in which peer processes
/// exchange request descriptors through numbered ports.
#[derive(Parser, Debug)]
#[command(name = "xseg", version, about, long_about)]
#[command(after_help = "Set RUST_LOG (e.g. RUST_LOG=info) for diagnostic logs on stderr.")]
pub struct Cli {
    /// The segment: a shared-memory name (under /dev/shm) or, if it
    /// contains '/', a file path [default: the configuration's segment,
    /// `archipelago` without a configuration file].
    #[arg(
        long,
        short = 's',
        global = true,
        display_order = 100,
        value_name = "NAME|PATH",
        value_parser = parse_segment_name
    )]
    pub segment: Option<SegmentName>,

    /// Configuration file (else $ARCHIPELAGO_CONFIG, else
    /// /etc/archipelago/archipelago.toml, else built-in defaults).
    #[arg(long, global = true, display_order = 101, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new segment (fails if one of that name exists).
    ///
    /// The sizes default to 128 ports (32 static), 4096 request
    /// descriptors and buffers from 4K to 4M (256 MiB of buffers). A
    /// segment under /dev/shm uses memory only where it is touched.
    Create(CreateArgs),
    /// Remove a segment.
    ///
    /// Refuses while a port is owned by a live process, unless --force.
    /// Processes that have the segment mapped keep using their mapping.
    Destroy(DestroyArgs),
    /// Show a segment's sizes, free descriptors and buffers, and its ports.
    ///
    /// Lists every port that was ever bound or holds queued work: its
    /// owner and whether it is alive, queue depths, requests and buffers
    /// in use, with high-water marks. A snapshot: exact only while the
    /// peers are idle.
    Report(ReportArgs),
    /// Recover a port whose owner died, or every such port.
    ///
    /// Requests the dead peer was serving fail back to their senders,
    /// replies it was sending are sent again, and its descriptors and
    /// buffers return to the pools, so the port can be bound again.
    Recover(RecoverArgs),
}

/// Flags of `xseg create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Number of ports, static and dynamic (at most 65535).
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub ports: u32,

    /// Ports 0..N are static (bound by number by servers); the others are
    /// handed out dynamically to clients.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub static_ports: u32,

    /// Number of request descriptors shared by all ports.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub requests: u32,

    /// Largest buffer: a power of two from 4K to 128M (suffixes K, M, G).
    /// Buffer classes run from 4K up to it, doubling.
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = size::parse_size)]
    pub max_buffer: u64,

    /// Buffers per size class, overriding the defaults, e.g.
    /// 4K=1024,8K=512. Sizes are powers of two from 4K up to the largest
    /// buffer; a count of 0 leaves the class empty. May be repeated.
    ///
    /// Defaults: 4K=1024, 8K=512, 16K=256, 32K=128, 64K=128, 128K=64,
    /// 256K=64, 512K=32, 1M=32, 2M=16, 4M=32, and 32 for each larger class.
    #[arg(
        long,
        value_name = "SIZE=COUNT,...",
        value_delimiter = ',',
        value_parser = size::parse_buffer_count
    )]
    pub buffers: Vec<BufferCount>,

    /// Permission bits of the segment, in octal. Bits for others are
    /// refused: a segment must not be world-accessible.
    #[arg(long, value_name = "OCTAL", default_value = "0660", value_parser = size::parse_mode)]
    pub mode: u32,

    /// Protocol version of the layer above, recorded in the segment;
    /// peers refuse a segment made for another version (default: the
    /// Archipelago protocol this build speaks).
    #[arg(long, value_name = "N", default_value_t = archipelago_protocol::PROTOCOL_VERSION)]
    pub protocol_version: u32,
}

/// Flags of `xseg destroy`.
#[derive(Args, Debug)]
pub struct DestroyArgs {
    /// Destroy even if ports are owned by live processes (or the segment
    /// cannot be read).
    #[arg(long)]
    pub force: bool,
}

/// Flags of `xseg report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `xseg recover`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("which").required(true).args(["port", "dead"])))]
pub struct RecoverArgs {
    /// The port to recover (its owner must be dead; an unowned port is
    /// tidied).
    #[arg(value_name = "PORT")]
    pub port: Option<u32>,

    /// Recover every port whose owner died.
    #[arg(long)]
    pub dead: bool,

    /// Print what was done as JSON (an object for PORT, an array for
    /// --dead).
    #[arg(long)]
    pub json: bool,
}

/// Parses `--segment`.
fn parse_segment_name(s: &str) -> Result<SegmentName, String> {
    SegmentName::parse(s).map_err(|_| {
        format!("{s:?} is not a segment name (1 to 255 bytes, no NUL; a path if it contains '/')")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use xseg_shm::SegmentConfig;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["xseg", "create"]).unwrap();
        let Command::Create(a) = cli.command else {
            panic!("not create")
        };
        let d = SegmentConfig::default();
        assert_eq!(a.ports, d.ports);
        assert_eq!(a.static_ports, d.static_ports);
        assert_eq!(a.requests, d.requests);
        assert_eq!(a.max_buffer, d.max_buffer());
        assert_eq!(a.mode, d.mode);
        assert_eq!(a.protocol_version, archipelago_protocol::PROTOCOL_VERSION);
        assert!(a.buffers.is_empty());
        assert_eq!(cli.segment, None);
    }

    #[test]
    fn segment_is_global_and_paths_are_files() {
        let cli = Cli::try_parse_from(["xseg", "report", "--segment", "/tmp/x"]).unwrap();
        assert_eq!(cli.segment, Some(SegmentName::File("/tmp/x".into())));
        assert!(Cli::try_parse_from(["xseg", "-s", "", "report"]).is_err());
    }

    #[test]
    fn recover_wants_exactly_one_of_port_and_dead() {
        assert!(Cli::try_parse_from(["xseg", "recover"]).is_err());
        assert!(Cli::try_parse_from(["xseg", "recover", "3", "--dead"]).is_err());
        assert!(Cli::try_parse_from(["xseg", "recover", "3"]).is_ok());
        assert!(Cli::try_parse_from(["xseg", "recover", "--dead", "--json"]).is_ok());
    }

    #[test]
    fn buffers_may_be_repeated() {
        let cli = Cli::try_parse_from([
            "xseg",
            "create",
            "--buffers",
            "4K=1,8K=2",
            "--buffers",
            "16K=3",
        ])
        .unwrap();
        let Command::Create(a) = cli.command else {
            panic!("not create")
        };
        assert_eq!(a.buffers.len(), 3);
        assert_eq!(
            a.buffers[2],
            BufferCount {
                size: 16384,
                count: 3
            }
        );
    }
}
