//! The subcommands.
//!
//! Each writes its normal output to `out` and returns an error for the
//! caller to print. Errors name the segment: the library's
//! [`SegmentError`]s already do (except [`SegmentError::Config`]); the
//! others get it as context.

use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use xseg_shm::layout::{MAX_BUFFER_CLASSES, MAX_PORTS, MAX_REQUESTS, MIN_BUFFER_SHIFT};
use xseg_shm::{Segment, SegmentConfig, SegmentError, SegmentName};

use crate::cli::{Cli, Command, CreateArgs, DestroyArgs, RecoverArgs, ReportArgs};
use crate::render;
use crate::size::short_size;

/// Runs the command `cli` names.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<()> {
    let name = &match &cli.segment {
        Some(name) => name.clone(),
        None => archipelago_config::Config::load(cli.config.as_deref())
            .context("configuration")?
            .segment_name(),
    };
    match &cli.command {
        Command::Create(args) => create(name, args, out),
        Command::Destroy(args) => destroy(name, args, out),
        Command::Report(args) => report(name, args, out),
        Command::Recover(args) => recover(name, args, out),
    }
}

/// Turns a library error into one that names the segment and `action`.
fn segment_error(e: SegmentError, action: &str, name: &SegmentName) -> anyhow::Error {
    match e {
        // The only variant that does not name the segment itself.
        SegmentError::Config(_) => anyhow!(e).context(format!("cannot {action} segment {name}")),
        _ => anyhow!(e),
    }
}

/// Smallest buffer size.
const MIN_BUFFER: u64 = 1 << MIN_BUFFER_SHIFT;
/// Largest buffer size the layout allows.
const MAX_BUFFER: u64 = 1 << (MIN_BUFFER_SHIFT as usize + MAX_BUFFER_CLASSES - 1);

/// Builds the configuration `create` asks for, checking each flag so that
/// an error names the flag at fault.
pub fn create_config(args: &CreateArgs) -> Result<SegmentConfig> {
    if args.ports == 0 || args.ports > MAX_PORTS {
        bail!("--ports {}: must be from 1 to {MAX_PORTS}", args.ports);
    }
    if args.static_ports > args.ports {
        bail!(
            "--static-ports {} is more than --ports {}",
            args.static_ports,
            args.ports
        );
    }
    if args.requests == 0 || args.requests > MAX_REQUESTS {
        bail!(
            "--requests {}: must be from 1 to {MAX_REQUESTS}",
            args.requests
        );
    }
    let max = args.max_buffer;
    if !max.is_power_of_two() || !(MIN_BUFFER..=MAX_BUFFER).contains(&max) {
        bail!(
            "--max-buffer {}: the largest buffer must be a power of two from {} to {}",
            short_size(max),
            short_size(MIN_BUFFER),
            short_size(MAX_BUFFER)
        );
    }
    let mut config = SegmentConfig {
        ports: args.ports,
        static_ports: args.static_ports,
        requests: args.requests,
        mode: args.mode,
        protocol_version: args.protocol_version,
        ..SegmentConfig::default()
    }
    .with_max_buffer(max)?;
    let mut seen = vec![false; config.buffer_counts.len()];
    for b in &args.buffers {
        let item = format!("{}={}", short_size(b.size), b.count);
        if !b.size.is_power_of_two() || !(MIN_BUFFER..=max).contains(&b.size) {
            bail!(
                "--buffers {item}: there is no {} buffer class (classes are the powers of two \
                 from {} to --max-buffer {})",
                short_size(b.size),
                short_size(MIN_BUFFER),
                short_size(max)
            );
        }
        let class = (b.size.trailing_zeros() - MIN_BUFFER_SHIFT) as usize;
        if std::mem::replace(&mut seen[class], true) {
            bail!("--buffers {item}: {} is given twice", short_size(b.size));
        }
        config.buffer_counts[class] = b.count;
    }
    Ok(config)
}

fn create(name: &SegmentName, args: &CreateArgs, out: &mut dyn Write) -> Result<()> {
    let config = create_config(args).with_context(|| format!("cannot create segment {name}"))?;
    log::debug!("creating segment {name} with {config:?}");
    let seg = Segment::create(name, &config).map_err(|e| segment_error(e, "create", name))?;
    let l = seg.layout();
    let buffer_bytes: u64 = (0..l.buffer_counts.len())
        .map(|c| l.class_size(c) * u64::from(l.buffer_counts[c]))
        .sum();
    let classes = match l.buffer_counts.len() {
        0 => "no buffers".to_string(),
        n => format!(
            "buffers {}..{}",
            short_size(l.class_size(0)),
            short_size(l.class_size(n - 1))
        ),
    };
    writeln!(
        out,
        "created segment {name}: {}, {} ports ({} static), {} requests, {classes} ({} of buffers)",
        crate::size::mib(l.total),
        l.nr_ports,
        l.static_ports,
        l.nr_requests,
        crate::size::mib(buffer_bytes),
    )?;
    Ok(())
}

fn destroy(name: &SegmentName, args: &DestroyArgs, out: &mut dyn Write) -> Result<()> {
    Segment::destroy(name, args.force).map_err(|e| segment_error(e, "destroy", name))?;
    writeln!(out, "destroyed segment {name}")?;
    Ok(())
}

fn report(name: &SegmentName, args: &ReportArgs, out: &mut dyn Write) -> Result<()> {
    let seg = Segment::attach(name, None).map_err(|e| segment_error(e, "attach to", name))?;
    let report = seg.report();
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        out.write_all(render::segment_report(&report).as_bytes())?;
    }
    Ok(())
}

fn recover(name: &SegmentName, args: &RecoverArgs, out: &mut dyn Write) -> Result<()> {
    let seg = Segment::attach(name, None).map_err(|e| segment_error(e, "attach to", name))?;
    if let Some(port) = args.port {
        let r = seg
            .recover(port)
            .with_context(|| format!("segment {name}"))?;
        if args.json {
            serde_json::to_writer_pretty(&mut *out, &r)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", render::recovery(&r))?;
        }
        return Ok(());
    }

    let results = seg.recover_dead();
    let mut done = Vec::new();
    let mut failed = 0;
    for result in results {
        match result {
            Ok(r) => done.push(r),
            Err(e) => {
                // Reported at once; the count becomes the error below.
                eprintln!("xseg: segment {name}: {e}");
                failed += 1;
            }
        }
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &done)?;
        writeln!(out)?;
    } else if done.is_empty() && failed == 0 {
        writeln!(
            out,
            "segment {name}: no port has a dead owner; nothing to do"
        )?;
    } else {
        for r in &done {
            writeln!(out, "{}", render::recovery(r))?;
        }
    }
    if failed > 0 {
        bail!(
            "segment {name}: {failed} port(s) with a dead owner could not be recovered \
             ({} recovered)",
            done.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(flags: &[&str]) -> Result<SegmentConfig> {
        let cli = Cli::try_parse_from(["xseg", "create"].iter().chain(flags)).unwrap();
        let Command::Create(args) = cli.command else {
            panic!("not create")
        };
        create_config(&args)
    }

    fn err(flags: &[&str]) -> String {
        format!("{:#}", config(flags).unwrap_err())
    }

    #[test]
    fn defaults_are_the_library_defaults_for_the_archipelago_protocol() {
        let expected = SegmentConfig {
            protocol_version: archipelago_protocol::PROTOCOL_VERSION,
            ..SegmentConfig::default()
        };
        assert_eq!(config(&[]).unwrap(), expected);
    }

    #[test]
    fn max_buffer_drops_or_adds_classes() {
        assert_eq!(
            config(&["--max-buffer", "16K"]).unwrap().buffer_counts,
            [1024, 512, 256]
        );
        let c = config(&["--max-buffer", "16M"]).unwrap();
        assert_eq!(c.buffer_counts.len(), 13);
        assert_eq!(c.max_buffer(), 16 << 20);
    }

    #[test]
    fn bad_max_buffers_name_the_flag() {
        for bad in ["3M", "2K", "256M", "0"] {
            let e = err(&["--max-buffer", bad]);
            assert!(e.starts_with("--max-buffer "), "{bad}: {e}");
            assert!(e.contains("power of two from 4K to 128M"), "{bad}: {e}");
        }
    }

    #[test]
    fn buffers_override_their_classes() {
        let c = config(&[
            "--max-buffer",
            "64K",
            "--buffers",
            "4K=7,64K=0",
            "--buffers",
            "16K=1",
        ])
        .unwrap();
        assert_eq!(c.buffer_counts, [7, 512, 1, 128, 0]);
    }

    #[test]
    fn bad_buffers_are_refused() {
        let e = err(&["--buffers", "3K=4"]);
        assert!(
            e.contains("--buffers 3K=4: there is no 3K buffer class"),
            "{e}"
        );
        let e = err(&["--max-buffer", "1M", "--buffers", "2M=1"]);
        assert!(e.contains("no 2M buffer class"), "{e}");
        assert!(e.contains("--max-buffer 1M"), "{e}");
        let e = err(&["--buffers", "2K=1"]);
        assert!(e.contains("no 2K buffer class"), "{e}");
        let e = err(&["--buffers", "8K=1,8K=2"]);
        assert!(e.contains("8K is given twice"), "{e}");
    }

    #[test]
    fn bad_sizes_name_the_flag() {
        assert!(err(&["--ports", "0"]).starts_with("--ports 0"));
        assert!(err(&["--ports", "70000"]).contains("65535"));
        assert!(err(&["--ports", "4", "--static-ports", "5"]).contains("more than --ports 4"));
        assert!(err(&["--requests", "0"]).starts_with("--requests 0"));
    }

    #[test]
    fn mode_and_protocol_pass_through() {
        let c = config(&["--mode", "0600", "--protocol-version", "3"]).unwrap();
        assert_eq!((c.mode, c.protocol_version), (0o600, 3));
    }
}
