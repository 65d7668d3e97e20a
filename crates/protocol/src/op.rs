//! Operation codes, and the op table: for every op, who serves it and how
//! a client treats it. Peers route by the table ([`Op::spec`]): the
//! runtime answers [`Spec::runtime`] ops, a blocker refuses what is not
//! [`Spec::blocker`], the mapper what is not [`Spec::mapper`], vlmcd routes
//! by [`Spec::composer`], and a client keeps waiting for a timed-out
//! request that [`Spec::mutates`]. A new op is one row of the table; the
//! row has every column, so an op nobody classed cannot compile.

/// What vlmcd does with an op a client sends it (before its size rules:
/// zero-length I/O does nothing; a zero-length WRITE with FLUSH is a
/// flush).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Not a client op for vlmcd: refused.
    Refused,
    /// Volume I/O: MAP_READ, then blocker reads.
    Read,
    /// Volume I/O: MAP_WRITE, blocker writes, MAP_COMMIT.
    Write,
    /// Volume I/O: zeros over a range (DISCARD to the mapper, zeros
    /// written to the partly covered objects).
    Zero,
    /// Make writes durable: a barrier on the named volume (its I/O drains
    /// first); with no target, at once.
    Sync,
    /// Forwarded to the mapper once the volume's I/O has drained; new I/O
    /// to the volume waits until it completes.
    Barrier,
    /// Forwarded to the mapper at once, alongside the volume's I/O.
    Forward,
}

/// One row of the op table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Every peer's runtime answers it (PING, STATS); handlers never see it.
    pub runtime: bool,
    /// A blocker serves it, on an object or a lock.
    pub blocker: bool,
    /// The mapper serves it.
    pub mapper: bool,
    /// What vlmcd does with it.
    pub composer: Route,
    /// It may change stored data or state: a client never reports it
    /// failed on a timeout while the peer holding it may still carry it
    /// out (a late write landing over newer data).
    pub mutates: bool,
}

impl Spec {
    /// Served by nobody, changes nothing: the start of every row.
    pub const NONE: Spec = Spec {
        runtime: false,
        blocker: false,
        mapper: false,
        composer: Route::Refused,
        mutates: false,
    };
    /// Answered by every peer's runtime.
    pub const RUNTIME: Spec = Spec {
        runtime: true,
        ..Spec::NONE
    };
    const fn blocker(self) -> Spec {
        Spec {
            blocker: true,
            ..self
        }
    }
    const fn mapper(self) -> Spec {
        Spec {
            mapper: true,
            ..self
        }
    }
    const fn composer(self, route: Route) -> Spec {
        Spec {
            composer: route,
            ..self
        }
    }
    const fn mutates(self) -> Spec {
        Spec {
            mutates: true,
            ..self
        }
    }
}

/// Declares [`Op`] from its table: doc, variant, code, name, spec.
macro_rules! op_table {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $spec:expr; )*) => {
        /// What a request asks for. Codes 0–21 are the original's; later
        /// ones are ours.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Op {
            $( $(#[$doc])* $variant = $code, )*
        }

        impl Op {
            /// Every op, in code order.
            pub const ALL: &'static [Op] = &[$(Op::$variant),*];

            /// Lower-case name, as tools print it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Op::$variant => $name,)*
                }
            }

            /// The op's row of the table: who serves it, how a client
            /// treats it.
            pub const fn spec(self) -> Spec {
                match self {
                    $(Op::$variant => $spec,)*
                }
            }
        }
    };
}

op_table! {
    /// Liveness check; every peer answers it.
    Ping = 0, "ping", Spec::RUNTIME;
    /// Read `size` bytes at `offset` of the target into the data buffer.
    Read = 1, "read", Spec::NONE.blocker().composer(Route::Read);
    /// Write the data buffer at `offset` of the target.
    Write = 2, "write", Spec::NONE.blocker().composer(Route::Write).mutates();
    /// Make everything written to the target durable.
    Sync = 3, "sync", Spec::NONE.blocker().mapper().composer(Route::Sync).mutates();
    /// Cut or extend the target to `size` bytes.
    Truncate = 4, "truncate", Spec::NONE.mutates();
    /// Remove the target.
    Delete = 5, "delete", Spec::NONE.blocker().mapper().composer(Route::Barrier).mutates();
    /// Take the lock named by the target (payload: [`payload::LockOwner`](crate::payload::LockOwner)).
    Acquire = 6, "acquire", Spec::NONE.blocker().mutates();
    /// Release the lock named by the target (`FORCE` breaks another's).
    Release = 7, "release", Spec::NONE.blocker().mutates();
    /// Copy from the object named in the payload into the target.
    Copy = 8, "copy", Spec::NONE.blocker().mutates();
    /// Create the target as a copy-on-write clone of a snapshot.
    Clone = 9, "clone", Spec::NONE.mapper().composer(Route::Forward).mutates();
    /// Size (and more) of the target.
    Info = 11, "info", Spec::NONE.blocker().mapper().composer(Route::Forward);
    /// Translate a volume range into objects, for reading.
    MapRead = 12, "map-read", Spec::NONE.mapper();
    /// Translate a volume range into objects, for writing (may copy up).
    MapWrite = 13, "map-write", Spec::NONE.mapper().mutates();
    /// Open a volume for exclusive use.
    Open = 14, "open", Spec::NONE.mapper().composer(Route::Forward).mutates();
    /// Close a volume.
    Close = 15, "close", Spec::NONE.mapper().composer(Route::Barrier).mutates();
    /// Snapshot the target volume under the name in the payload.
    Snapshot = 16, "snapshot", Spec::NONE.mapper().composer(Route::Barrier).mutates();
    /// Store the target's content under its SHA-256 name.
    Hash = 17, "hash", Spec::NONE.blocker().mapper().composer(Route::Forward).mutates();
    /// Create the target.
    Create = 18, "create", Spec::NONE.mapper().composer(Route::Forward).mutates();
    /// Rename the target to the name in the payload.
    Rename = 19, "rename", Spec::NONE.mapper().composer(Route::Barrier).mutates();
    /// Flush a volume's writes to stable storage.
    Flush = 20, "flush", Spec::NONE.blocker().composer(Route::Sync).mutates();
    /// Rewrite a map in the current format.
    Update = 21, "update", Spec::NONE.mapper().composer(Route::Forward).mutates();
    /// Release the space of a byte range (reads return zeros); target,
    /// `offset`, `size`, no data buffer. To a mapper: the extents still to
    /// be zero-filled (a map reply).
    Discard = 22, "discard", Spec::NONE.mapper().composer(Route::Zero).mutates();
    /// Change a volume's size.
    Resize = 23, "resize", Spec::NONE.mapper().composer(Route::Barrier).mutates();
    /// A peer's counters (reply: [`payload::StatsReply`](crate::payload::StatsReply)).
    Stats = 24, "stats", Spec::RUNTIME;
    /// Write a whole object atomically (replacing it, or creating it).
    WriteFull = 25, "write-full", Spec::NONE.blocker().mutates();
    /// Names of objects with a prefix (reply: names separated by NUL).
    List = 26, "list", Spec::NONE.blocker();
    /// Owner and fencing token of the lock named by the target (reply:
    /// [`payload::LockOwner`](crate::payload::LockOwner)); `NotFound` if free.
    LockInfo = 27, "lock-info", Spec::NONE.blocker();
    /// Commit a volume's pending writes (data: [`payload::encode_commit`](crate::payload::encode_commit)).
    MapCommit = 28, "map-commit", Spec::NONE.mapper().mutates();
    /// Make a byte range of the target read as zeros (like DISCARD, but
    /// the zeros are guaranteed; no data buffer).
    WriteZeroes = 29, "write-zeroes", Spec::NONE.mapper().composer(Route::Zero).mutates();
    /// To a mapper: the volumes open for writing on its host (reply: names
    /// separated by NUL, like LIST; `serviced` is the bytes used).
    OpenList = 30, "open-list", Spec::NONE.mapper();
    /// To a mapper: every format 3 volume and snapshot with its parent
    /// link (reply: [`payload::encode_lineage`](crate::payload::encode_lineage)).
    Lineage = 40, "lineage", Spec::NONE.mapper().composer(Route::Forward);
    /// To a mapper: one step of flattening the target volume, copying up
    /// to `size` shared objects from object index `offset` (`size` 0:
    /// report only; reply: [`payload::FlattenStep`](crate::payload::FlattenStep)).
    Flatten = 41, "flatten", Spec::NONE.mapper().composer(Route::Forward).mutates();
    /// Roll the closed target volume back to its snapshot named in the
    /// payload ([`payload::NameField`](crate::payload::NameField)).
    Rollback = 42, "rollback", Spec::NONE.mapper().composer(Route::Barrier).mutates();
}

impl Op {
    /// The code carried in a request.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The op of a code read from a request, if it is one.
    pub fn from_code(code: u32) -> Option<Op> {
        Op::ALL.iter().copied().find(|op| op.code() == code)
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
        for &op in Op::ALL {
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

    #[test]
    fn the_table_is_consistent() {
        for &op in Op::ALL {
            let s = op.spec();
            match s.composer {
                // vlmcd hands these to the mapper.
                Route::Forward | Route::Barrier => assert!(s.mapper, "{op}"),
                // Volume I/O lands on the data blocker; zeros go through the mapper.
                Route::Read | Route::Write | Route::Sync => assert!(s.blocker, "{op}"),
                Route::Zero => assert!(s.mapper, "{op}"),
                Route::Refused => {}
            }
            if s.runtime {
                assert!(!s.blocker && !s.mapper && !s.mutates, "{op}");
                assert_eq!(s.composer, Route::Refused, "{op}");
            }
        }
        assert!(Op::Write.spec().mutates && !Op::Read.spec().mutates);
        assert_eq!(Op::Snapshot.spec().composer, Route::Barrier);
        assert_eq!(Op::Flatten.spec().composer, Route::Forward, "not a barrier");
        assert_eq!(Op::MapRead.spec().composer, Route::Refused);
    }
}
