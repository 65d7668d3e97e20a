//! [`StoreError`]: why a store operation failed, and its protocol code.

use std::io;

use archipelago_protocol::names::NameError;
use archipelago_protocol::ErrorCode;

/// `ENOSPC`: no space left on device.
const ENOSPC: i32 = 28;
/// `EDQUOT`: disk quota exceeded (Linux).
const EDQUOT: i32 = 122;

/// Why a store operation failed. Every variant that concerns one object
/// names it, so a message read in a log says which object and, for I/O
/// errors, which operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object (or, for `unlock`, the lock) does not exist.
    #[error("object {name} not found")]
    NotFound {
        /// The object or lock name.
        name: String,
    },
    /// The name is taken. No method of [`ObjectStore`](crate::ObjectStore)
    /// returns it today; it is reserved for exclusive creation.
    #[error("object {name} already exists")]
    Exists {
        /// The object name.
        name: String,
    },
    /// Another owner holds the lock.
    #[error("lock {name} is held by {owner}")]
    Locked {
        /// The lock name.
        name: String,
        /// The owner holding it, exactly as it was recorded.
        owner: String,
    },
    /// The name does not follow the store-name grammar
    /// ([`check_store_name`](archipelago_protocol::names::check_store_name)).
    #[error("invalid object name: {0}")]
    InvalidName(#[from] NameError),
    /// An argument other than a name is unusable: an offset range past
    /// `i64::MAX`, an empty or over-long lock owner.
    #[error("invalid argument for {name}: {why}")]
    InvalidArgument {
        /// The object or lock concerned.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The backend is full (`ENOSPC` or `EDQUOT`).
    #[error("no space left for object {name}")]
    NoSpace {
        /// The object being written.
        name: String,
    },
    /// The backend failed.
    #[error("I/O error on {name} during {op}: {source}")]
    Io {
        /// The object concerned (or the store's directory for operations
        /// on no single object).
        name: String,
        /// The operation: `read`, `write`, `write_full`, `copy`, ...
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// This store does not implement the operation.
    #[error("operation not supported by this store")]
    Unsupported,
    /// This client was fenced off: a lock it held was broken by another
    /// host, which blocklisted it (RADOS). Nothing it sends is applied
    /// until it reconnects as a new client.
    #[error("{name}: fenced (our lock was broken and this client blocklisted)")]
    Fenced {
        /// The object or lock concerned.
        name: String,
    },
    /// A fenced write ([`ObjectStore::write_fenced`](crate::ObjectStore::write_fenced))
    /// carried a token older than the one this store records for its lock:
    /// the writer's lock was broken or granted again since. Nothing was
    /// written.
    #[error("{name}: write refused: lock {lock} is at token {current}, the writer holds {token} (fenced)")]
    StaleToken {
        /// The object the write was for.
        name: String,
        /// The lock (the volume) the write claimed.
        lock: String,
        /// The token it carried.
        token: u64,
        /// The token the store records for the lock.
        current: u64,
    },
}

impl StoreError {
    /// The protocol error code a peer fails the request with.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::NotFound { .. } => ErrorCode::NotFound,
            StoreError::Exists { .. } => ErrorCode::Exists,
            StoreError::Locked { .. } => ErrorCode::Locked,
            StoreError::InvalidName(_) | StoreError::InvalidArgument { .. } => {
                ErrorCode::InvalidArgument
            }
            StoreError::NoSpace { .. } => ErrorCode::NoSpace,
            StoreError::Io { .. } => ErrorCode::Io,
            StoreError::Unsupported => ErrorCode::Unsupported,
            StoreError::Fenced { .. } | StoreError::StaleToken { .. } => ErrorCode::Fenced,
        }
    }

    /// Classifies an I/O error met while doing `op` on `name`: `ENOSPC`
    /// and `EDQUOT` become [`NoSpace`](StoreError::NoSpace), everything
    /// else [`Io`](StoreError::Io). `ENOENT` is *not* translated: whether
    /// it means "the object is missing" depends on the call, so drivers
    /// decide that themselves.
    pub fn io(name: &str, op: &'static str, source: io::Error) -> StoreError {
        match source.raw_os_error() {
            Some(ENOSPC) | Some(EDQUOT) => StoreError::NoSpace {
                name: name.to_owned(),
            },
            _ => StoreError::Io {
                name: name.to_owned(),
                op,
                source,
            },
        }
    }

    /// `NotFound` for `name`.
    pub fn not_found(name: &str) -> StoreError {
        StoreError::NotFound {
            name: name.to_owned(),
        }
    }

    /// Whether this is [`NotFound`](StoreError::NotFound).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

impl From<StoreError> for archipelago_protocol::Error {
    fn from(e: StoreError) -> Self {
        let code = e.code();
        match e {
            // The protocol prints `Locked` details as "locked by <detail>".
            StoreError::Locked { owner, .. } => archipelago_protocol::Error::with(code, owner),
            other => archipelago_protocol::Error::with(code, other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_and_quota_errors_become_no_space() {
        for errno in [ENOSPC, EDQUOT] {
            let e = StoreError::io("obj", "write", io::Error::from_raw_os_error(errno));
            assert!(matches!(&e, StoreError::NoSpace { name } if name == "obj"));
            assert_eq!(e.code(), ErrorCode::NoSpace);
        }
        let e = StoreError::io("obj", "write", io::Error::from_raw_os_error(5));
        assert_eq!(e.code(), ErrorCode::Io);
    }

    #[test]
    fn io_messages_name_the_object_and_the_operation() {
        let e = StoreError::io("vol_1", "copy", io::Error::from_raw_os_error(5));
        let msg = e.to_string();
        assert!(msg.contains("vol_1") && msg.contains("copy"), "{msg}");
    }

    #[test]
    fn every_variant_has_a_code() {
        let cases = [
            (StoreError::not_found("a"), ErrorCode::NotFound),
            (StoreError::Exists { name: "a".into() }, ErrorCode::Exists),
            (
                StoreError::Locked {
                    name: "a".into(),
                    owner: "h".into(),
                },
                ErrorCode::Locked,
            ),
            (
                StoreError::InvalidName(NameError::Empty),
                ErrorCode::InvalidArgument,
            ),
            (
                StoreError::InvalidArgument {
                    name: "a".into(),
                    why: "x",
                },
                ErrorCode::InvalidArgument,
            ),
            (StoreError::NoSpace { name: "a".into() }, ErrorCode::NoSpace),
            (StoreError::Unsupported, ErrorCode::Unsupported),
            (StoreError::Fenced { name: "a".into() }, ErrorCode::Fenced),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
        }
        let p: archipelago_protocol::Error = StoreError::Locked {
            name: "a".into(),
            owner: "host_10".into(),
        }
        .into();
        assert_eq!(p.to_string(), "locked by host_10");
    }
}
