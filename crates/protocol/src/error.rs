//! Why a request failed.

use std::io;

/// The reason a peer failed a request: one enum every peer returns and
/// every tool prints. The last three share their values with the
/// transport's own codes (`xseg_shm::code`; `archipelago-wire` tests that they
/// match), so a request the transport failed (its peer
/// died) decodes the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// No such volume, snapshot or object.
    NotFound = 1,
    /// The name is taken.
    Exists = 2,
    /// Another owner holds the lock (the detail names it).
    Locked = 3,
    /// Our lock was broken and this instance fenced off: it must not write.
    Fenced = 4,
    /// Snapshots and old-format maps cannot be written.
    ReadOnly = 5,
    /// Offset or size past the end.
    OutOfRange = 6,
    /// A malformed request: bad name, size, flags or payload.
    InvalidArgument = 7,
    /// The backend is full.
    NoSpace = 8,
    /// The backend failed.
    Io = 9,
    /// The peer does not implement this op.
    Unsupported = 10,
    /// Something else depends on it (a snapshot with clones).
    InUse = 11,
    /// The peer holding the request died.
    PeerDied = 0xFFFF_FF01,
    /// Out of descriptors, buffers or queue room; retry later.
    Busy = 0xFFFF_FF02,
    /// The peer is stopping and takes no new work.
    ShuttingDown = 0xFFFF_FF03,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::NotFound,
        ErrorCode::Exists,
        ErrorCode::Locked,
        ErrorCode::Fenced,
        ErrorCode::ReadOnly,
        ErrorCode::OutOfRange,
        ErrorCode::InvalidArgument,
        ErrorCode::NoSpace,
        ErrorCode::Io,
        ErrorCode::Unsupported,
        ErrorCode::InUse,
        ErrorCode::PeerDied,
        ErrorCode::Busy,
        ErrorCode::ShuttingDown,
    ];

    /// The value carried in a failed request.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The code of a value read from a request; an unknown value is an I/O
    /// error (a newer peer, or garbage).
    pub fn from_code(code: u32) -> ErrorCode {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.code() == code)
            .unwrap_or(ErrorCode::Io)
    }

    /// The phrase tools print.
    pub fn describe(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not found",
            ErrorCode::Exists => "already exists",
            ErrorCode::Locked => "locked",
            ErrorCode::Fenced => "fenced (its lock was broken)",
            ErrorCode::ReadOnly => "read-only",
            ErrorCode::OutOfRange => "out of range",
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::NoSpace => "no space left",
            ErrorCode::Io => "I/O error",
            ErrorCode::Unsupported => "operation not supported",
            ErrorCode::InUse => "in use",
            ErrorCode::PeerDied => "peer died",
            ErrorCode::Busy => "busy, try again",
            ErrorCode::ShuttingDown => "shutting down",
        }
    }

    /// The errno an errno-speaking client (NBD) gets.
    pub fn errno(self) -> i32 {
        match self {
            ErrorCode::NotFound => libc_errno::ENOENT,
            ErrorCode::Exists => libc_errno::EEXIST,
            ErrorCode::Locked | ErrorCode::Busy | ErrorCode::InUse => libc_errno::EBUSY,
            ErrorCode::Fenced | ErrorCode::ReadOnly => libc_errno::EPERM,
            ErrorCode::OutOfRange | ErrorCode::InvalidArgument => libc_errno::EINVAL,
            ErrorCode::NoSpace => libc_errno::ENOSPC,
            ErrorCode::Unsupported => libc_errno::EOPNOTSUPP,
            ErrorCode::ShuttingDown => libc_errno::ESHUTDOWN,
            ErrorCode::Io | ErrorCode::PeerDied => libc_errno::EIO,
        }
    }
}

/// Linux errno values (the protocol is Linux-only, like the segment).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ESHUTDOWN: i32 = 108;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// A protocol error: a code and, where the peer gave one, a detail (the
/// lock's owner, the cause of an I/O error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    /// Why.
    pub code: ErrorCode,
    /// More, for people (may be empty).
    pub detail: String,
}

impl Error {
    /// An error without detail.
    pub fn new(code: ErrorCode) -> Error {
        Error {
            code,
            detail: String::new(),
        }
    }

    /// An error with a detail.
    pub fn with(code: ErrorCode, detail: impl Into<String>) -> Error {
        Error {
            code,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.detail.is_empty()) {
            (_, true) => write!(f, "{}", self.code),
            (ErrorCode::Locked, false) => write!(f, "locked by {}", self.detail),
            (_, false) => write!(f, "{}: {}", self.code, self.detail),
        }
    }
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Error {
        Error::new(code)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        let code = match e.raw_os_error() {
            Some(libc_errno::ENOENT) => ErrorCode::NotFound,
            Some(libc_errno::EEXIST) => ErrorCode::Exists,
            Some(libc_errno::ENOSPC) | Some(122 /* EDQUOT */) => ErrorCode::NoSpace,
            Some(30 /* EROFS */) => ErrorCode::ReadOnly,
            Some(libc_errno::EINVAL) => ErrorCode::InvalidArgument,
            Some(libc_errno::EOPNOTSUPP) => ErrorCode::Unsupported,
            _ => match e.kind() {
                io::ErrorKind::NotFound => ErrorCode::NotFound,
                io::ErrorKind::AlreadyExists => ErrorCode::Exists,
                io::ErrorKind::InvalidInput => ErrorCode::InvalidArgument,
                _ => ErrorCode::Io,
            },
        };
        Error::with(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_values_are_io_errors() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.code()), c);
        }
        assert_eq!(ErrorCode::from_code(0), ErrorCode::Io);
        assert_eq!(ErrorCode::from_code(77), ErrorCode::Io);
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            Error::with(ErrorCode::Locked, "host-a (pid 12)").to_string(),
            "locked by host-a (pid 12)"
        );
        assert_eq!(Error::new(ErrorCode::ReadOnly).to_string(), "read-only");
        assert_eq!(
            Error::with(ErrorCode::Io, "disk on fire").to_string(),
            "I/O error: disk on fire"
        );
    }

    #[test]
    fn os_errors_map_to_codes() {
        let e = |n| Error::from(io::Error::from_raw_os_error(n)).code;
        assert_eq!(e(2), ErrorCode::NotFound);
        assert_eq!(e(17), ErrorCode::Exists);
        assert_eq!(e(28), ErrorCode::NoSpace);
        assert_eq!(e(122), ErrorCode::NoSpace);
        assert_eq!(e(30), ErrorCode::ReadOnly);
        assert_eq!(e(5), ErrorCode::Io);
        assert_eq!(ErrorCode::NoSpace.errno(), 28);
        assert_eq!(ErrorCode::ReadOnly.errno(), 1);
    }
}
