//! Request flags.

/// Flags of a request (a bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(pub u32);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// Do not wait: a lock that is taken fails at once with `Locked`.
    pub const NO_WAIT: Flags = Flags(1);
    /// Flush before completing (a write with this and size 0 is a flush).
    pub const FLUSH: Flags = Flags(2);
    /// Force unit access: this write is durable when acknowledged, even in
    /// write-back mode.
    pub const FUA: Flags = Flags(4);
    /// Override ownership: break another owner's lock, force a close.
    pub const FORCE: Flags = Flags(8);
    /// Treat the target as a legacy v0 (Pithos) map.
    pub const ASSUME_V0: Flags = Flags(16);
    /// OPEN: open the volume writable (take its lock).
    pub const WRITABLE: Flags = Flags(32);
    /// LIST: one page. The request's data carries the cursor (`size`
    /// bytes; 0: from the start) and `offset` is the most names to
    /// return (at least 1). The reply is the next page's cursor, then the
    /// names, each NUL-terminated; an empty cursor means this was the
    /// last page. Cursors are opaque (the store's). A reply that does not
    /// fit the buffer fails `InvalidArgument`, as an unpaged LIST.
    pub const PAGED: Flags = Flags(64);
    /// Set by the composer on a volume operation it forwards as a
    /// barrier, once the volume's I/O has drained: no write of the volume
    /// is in flight, so writes the mapper still holds pending were
    /// abandoned (their data failed) and are forgotten before the
    /// operation, which would otherwise refuse them as uncommitted.
    pub const DRAINED: Flags = Flags(128);
    /// WRITE, WRITE_FULL: the write is fenced. The target is a
    /// [`FencedTarget`](crate::payload::FencedTarget) (the object, the
    /// volume's lock and the writer's token, NUL-separated); the data
    /// buffer holds the data only. The blocker refuses the write with
    /// `Fenced` if the store's token for that lock is newer.
    /// ACQUIRE: raise the lock's fence to the payload's token instead of
    /// taking the lock (what a lock breaker asks of a data blocker); the
    /// reply's token is the fence now recorded. Since protocol version 2.
    /// COPY: a copy-up ([`ObjectStore::copy_up`]-style: the target is a
    /// `FencedTarget` naming the destination; refused as a write would be;
    /// not synced, even by a write-through blocker, since the write it is
    /// for syncs its object). Since protocol version 3.
    pub const FENCED: Flags = Flags(256);
    /// OPEN with `WRITABLE`: hold the volume for a reader that needs it
    /// unchanged (an export): refused while the volume is open for
    /// writing on this host, and while held every other open and every
    /// write of it is refused (`Busy`). CLOSE releases it.
    pub const EXCLUSIVE: Flags = Flags(512);
    /// Reply-only: set by a peer in a failed reply whose target field it
    /// replaced by a message for people (see `archipelago_wire::reply`).
    /// Never valid in a request.
    pub const DETAIL: Flags = Flags(1 << 31);
    /// Every flag a request may carry.
    pub const ALL: Flags = Flags(1023);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Bits no flag defines (a request carrying any is invalid).
    pub fn unknown_bits(self) -> u32 {
        self.0 & !Flags::ALL.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_keep_the_original_values_and_combine() {
        assert_eq!(
            (
                Flags::NO_WAIT.0,
                Flags::FLUSH.0,
                Flags::FUA.0,
                Flags::FORCE.0,
                Flags::ASSUME_V0.0
            ),
            (1, 2, 4, 8, 16)
        );
        let f = Flags::FUA | Flags::FORCE;
        assert!(f.contains(Flags::FUA) && f.contains(Flags::FORCE) && !f.contains(Flags::NO_WAIT));
        assert_eq!(Flags(0x400 | 4).unknown_bits(), 0x400);
        assert_eq!(Flags::FENCED.0, 256);
        assert_eq!(Flags::EXCLUSIVE.0, 512);
        assert_eq!(Flags::PAGED.0, 64);
        assert_eq!(Flags::DRAINED.0, 128);
        assert_eq!(Flags::WRITABLE.0, 32);
        assert_eq!(f.unknown_bits(), 0);
    }
}
