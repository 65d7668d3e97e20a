//! Error types, one per family of operations.

use std::io;

/// Creating, attaching or destroying a segment failed.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The operating system refused.
    #[error("segment {name}: {cause}")]
    Io {
        /// Segment name or path.
        name: String,
        /// Cause (in the message, not a `source()`, so it prints once).
        cause: io::Error,
    },
    /// Create found a segment of that name.
    #[error("segment {name} already exists")]
    Exists {
        /// Segment name or path.
        name: String,
    },
    /// Attach or destroy found nothing of that name.
    #[error("segment {name} does not exist")]
    NotFound {
        /// Segment name or path.
        name: String,
    },
    /// The ready word is not set: the creator is still at work or died.
    #[error("segment {name} is not initialised yet (being created, or its creator crashed)")]
    NotReady {
        /// Segment name or path.
        name: String,
    },
    /// No xseg magic at the start.
    #[error("{name} is not an xseg segment")]
    NotASegment {
        /// Segment name or path.
        name: String,
    },
    /// Made by a program with another layout.
    #[error(
        "segment {name} has layout version {found}; this program uses {expected}: recreate it"
    )]
    LayoutVersion {
        /// Segment name or path.
        name: String,
        /// In the segment.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// Made for another protocol version.
    #[error("segment {name} speaks protocol version {found}; this program speaks {expected}: recreate it")]
    ProtocolVersion {
        /// Segment name or path.
        name: String,
        /// In the segment.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// The header's sizes do not match the file.
    #[error("segment {name} is corrupt: {what}")]
    Corrupt {
        /// Segment name or path.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// The requested sizes are invalid.
    #[error("invalid segment configuration: {0}")]
    Config(String),
    /// Destroy found a port with a live owner.
    #[error("segment {name} is in use: port {port} is owned by live process {pid} (use --force to destroy anyway)")]
    InUse {
        /// Segment name or path.
        name: String,
        /// The port.
        port: u32,
        /// Its owner.
        pid: u32,
    },
}

/// Binding, recovering or addressing a port failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Port number past the segment's ports.
    #[error("port {port} does not exist (the segment has {nr_ports} ports)")]
    NoSuchPort {
        /// The port.
        port: u32,
        /// Ports in the segment.
        nr_ports: u32,
    },
    /// A live process owns it.
    #[error("port {port} is owned by live process {pid}")]
    Owned {
        /// The port.
        port: u32,
        /// The owner.
        pid: u32,
    },
    /// Its owner died and nobody recovered it yet.
    #[error("port {port}: its owner (pid {pid}) died; recover it first (xseg recover {port})")]
    OwnerDied {
        /// The port.
        port: u32,
        /// The dead owner.
        pid: u32,
    },
    /// Another process is recovering it.
    #[error("port {port} is being recovered by process {pid}")]
    Recovering {
        /// The port.
        port: u32,
        /// The recovering process.
        pid: u32,
    },
    /// Recovery refused: the owner is alive.
    #[error("port {port} is owned by live process {pid}; refusing to recover it")]
    OwnerAlive {
        /// The port.
        port: u32,
        /// The owner.
        pid: u32,
    },
    /// A recovery or unbind stopped: the port was no longer claimed by us
    /// (someone else took it meanwhile, which exclusive claims rule out
    /// unless a peer wrote the segment's words).
    #[error("port {port}: lost the recovery claim; cleanup stopped")]
    LostClaim {
        /// The port.
        port: u32,
    },
    /// Every dynamic port is bound.
    #[error("no free dynamic port (all {count} are bound)")]
    NoFreePort {
        /// Dynamic ports in the segment.
        count: u32,
    },
}

/// A data-path operation could not proceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No free descriptor, no free buffer of the size, or a full ring:
    /// back off and retry.
    #[error("busy: {0}")]
    Busy(&'static str),
    /// The destination port has no owner.
    #[error("port {0} has no owner")]
    NotBound(u32),
    /// The destination port does not exist.
    #[error("port {port} does not exist (the segment has {nr_ports} ports)")]
    NoSuchPort {
        /// The port.
        port: u32,
        /// Ports in the segment.
        nr_ports: u32,
    },
    /// A target name longer than a descriptor holds.
    #[error("target name of {0} bytes is longer than {max}", max = crate::layout::MAX_TARGET_LEN)]
    TargetTooLong(usize),
    /// The request is not held by this port (used with another port, or
    /// after its port unbound).
    #[error("descriptor {0} is not held by this port")]
    NotHeld(u32),
    /// A data length larger than the largest buffer.
    #[error("{0} bytes is more than the largest buffer ({1} bytes)")]
    TooLarge(u64, u64),
}
