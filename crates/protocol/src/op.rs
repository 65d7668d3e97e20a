//! Operation codes.

/// What a request asks for. Codes 0–21 are the original's; later ones are
/// ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Op {
    /// Liveness check; every peer answers it.
    Ping = 0,
    /// Read `size` bytes at `offset` of the target into the data buffer.
    Read = 1,
    /// Write the data buffer at `offset` of the target.
    Write = 2,
    /// Make everything written to the target durable.
    Sync = 3,
    /// Cut or extend the target to `size` bytes.
    Truncate = 4,
    /// Remove the target.
    Delete = 5,
    /// Take the lock named by the target (payload: [`payload::LockOwner`](crate::payload::LockOwner)).
    Acquire = 6,
    /// Release the lock named by the target (`FORCE` breaks another's).
    Release = 7,
    /// Copy from the object named in the payload into the target.
    Copy = 8,
    /// Create the target as a copy-on-write clone of a snapshot.
    Clone = 9,
    /// Size (and more) of the target.
    Info = 11,
    /// Translate a volume range into objects, for reading.
    MapRead = 12,
    /// Translate a volume range into objects, for writing (may copy up).
    MapWrite = 13,
    /// Open a volume for exclusive use.
    Open = 14,
    /// Close a volume.
    Close = 15,
    /// Snapshot the target volume under the name in the payload.
    Snapshot = 16,
    /// Store the target's content under its SHA-256 name.
    Hash = 17,
    /// Create the target.
    Create = 18,
    /// Rename the target to the name in the payload.
    Rename = 19,
    /// Flush a volume's writes to stable storage.
    Flush = 20,
    /// Rewrite a map in the current format.
    Update = 21,
    /// Release the space of a byte range (reads return zeros); target,
    /// `offset`, `size`, no data buffer. To a mapper: the extents still to
    /// be zero-filled (a map reply).
    Discard = 22,
    /// Change a volume's size.
    Resize = 23,
    /// A peer's counters (reply: [`payload::StatsReply`](crate::payload::StatsReply)).
    Stats = 24,
    /// Write a whole object atomically (replacing it, or creating it).
    WriteFull = 25,
    /// Names of objects with a prefix (reply: names separated by NUL).
    List = 26,
    /// Owner and fencing token of the lock named by the target (reply:
    /// [`payload::LockOwner`](crate::payload::LockOwner)); `NotFound` if free.
    LockInfo = 27,
    /// Commit a volume's pending writes (data: [`payload::encode_commit`](crate::payload::encode_commit)).
    MapCommit = 28,
    /// Make a byte range of the target read as zeros (like DISCARD, but
    /// the zeros are guaranteed; no data buffer).
    WriteZeroes = 29,
    /// To a mapper: the volumes open for writing on its host (reply: names
    /// separated by NUL, like LIST; `serviced` is the bytes used).
    OpenList = 30,
    /// To a mapper: every format 3 volume and snapshot with its parent
    /// link (reply: [`payload::encode_lineage`](crate::payload::encode_lineage)).
    Lineage = 40,
    /// To a mapper: one step of flattening the target volume, copying up
    /// to `size` shared objects from object index `offset` (`size` 0:
    /// report only; reply: [`payload::FlattenReply`](crate::payload::FlattenReply)).
    Flatten = 41,
    /// Roll the closed target volume back to its snapshot named in the
    /// payload ([`payload::NameField`](crate::payload::NameField)).
    Rollback = 42,
}

impl Op {
    /// Every op, in code order.
    pub const ALL: [Op; 33] = [
        Op::Ping,
        Op::Read,
        Op::Write,
        Op::Sync,
        Op::Truncate,
        Op::Delete,
        Op::Acquire,
        Op::Release,
        Op::Copy,
        Op::Clone,
        Op::Info,
        Op::MapRead,
        Op::MapWrite,
        Op::Open,
        Op::Close,
        Op::Snapshot,
        Op::Hash,
        Op::Create,
        Op::Rename,
        Op::Flush,
        Op::Update,
        Op::Discard,
        Op::Resize,
        Op::Stats,
        Op::WriteFull,
        Op::List,
        Op::LockInfo,
        Op::MapCommit,
        Op::WriteZeroes,
        Op::OpenList,
        Op::Lineage,
        Op::Flatten,
        Op::Rollback,
    ];

    /// The code carried in a request.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The op of a code read from a request, if it is one.
    pub fn from_code(code: u32) -> Option<Op> {
        Op::ALL.iter().copied().find(|op| op.code() == code)
    }

    /// Lower-case name, as tools print it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Ping => "ping",
            Op::Read => "read",
            Op::Write => "write",
            Op::Sync => "sync",
            Op::Truncate => "truncate",
            Op::Delete => "delete",
            Op::Acquire => "acquire",
            Op::Release => "release",
            Op::Copy => "copy",
            Op::Clone => "clone",
            Op::Info => "info",
            Op::MapRead => "map-read",
            Op::MapWrite => "map-write",
            Op::Open => "open",
            Op::Close => "close",
            Op::Snapshot => "snapshot",
            Op::Hash => "hash",
            Op::Create => "create",
            Op::Rename => "rename",
            Op::Flush => "flush",
            Op::Update => "update",
            Op::Discard => "discard",
            Op::Resize => "resize",
            Op::Stats => "stats",
            Op::WriteFull => "write-full",
            Op::List => "list",
            Op::LockInfo => "lock-info",
            Op::MapCommit => "map-commit",
            Op::WriteZeroes => "write-zeroes",
            Op::OpenList => "open-list",
            Op::Lineage => "lineage",
            Op::Flatten => "flatten",
            Op::Rollback => "rollback",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_the_original_ops_are_kept() {
        let original = [
            (Op::Ping, 0),
            (Op::Read, 1),
            (Op::Write, 2),
            (Op::Sync, 3),
            (Op::Truncate, 4),
            (Op::Delete, 5),
            (Op::Acquire, 6),
            (Op::Release, 7),
            (Op::Copy, 8),
            (Op::Clone, 9),
            (Op::Info, 11),
            (Op::MapRead, 12),
            (Op::MapWrite, 13),
            (Op::Open, 14),
            (Op::Close, 15),
            (Op::Snapshot, 16),
            (Op::Hash, 17),
            (Op::Create, 18),
            (Op::Rename, 19),
            (Op::Flush, 20),
            (Op::Update, 21),
        ];
        for (op, code) in original {
            assert_eq!(op.code(), code, "{op}");
        }
    }

    #[test]
    fn every_code_round_trips_and_unknown_codes_are_none() {
        for op in Op::ALL {
            assert_eq!(Op::from_code(op.code()), Some(op));
        }
        assert_eq!(Op::from_code(10), None, "COMMIT was never used");
        assert_eq!(Op::from_code(29), Some(Op::WriteZeroes));
        assert_eq!(Op::from_code(30), Some(Op::OpenList));
        assert_eq!(Op::from_code(31), None);
        assert_eq!(Op::from_code(40), Some(Op::Lineage));
        assert_eq!(Op::from_code(42), Some(Op::Rollback));
        assert_eq!(Op::from_code(43), None);
        assert_eq!(Op::from_code(9999), None);
        let mut names: Vec<_> = Op::ALL.iter().map(|o| o.name()).collect();
        names.dedup();
        assert_eq!(names.len(), Op::ALL.len());
    }
}
