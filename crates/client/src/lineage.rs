//! Lineage calls: LINEAGE (to the mapper), FLATTEN and ROLLBACK (through
//! the composer, like every management call).

use archipelago_protocol::payload::{
    decode_lineage, FlattenStep, LineageRecord, LockOwner, NameField, Payload,
};
use archipelago_protocol::{Error, ErrorCode, Op};

use crate::{Call, Client};

/// A volume or snapshot and its parent link, as LINEAGE reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageNode {
    /// Its name.
    pub name: String,
    /// Its volume id (a snapshot shares its volume's).
    pub volume_id: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Size in bytes.
    pub size: u64,
    /// A snapshot.
    pub readonly: bool,
    /// Removed (kept for its lineage).
    pub removed: bool,
    /// The parent: `(volume id, epoch, name when linked)`.
    pub parent: Option<(u64, u64, String)>,
}

impl From<LineageRecord> for LineageNode {
    fn from(r: LineageRecord) -> LineageNode {
        LineageNode {
            name: r.name.to_string_lossy(),
            volume_id: r.volume_id,
            epoch: r.epoch,
            size: r.size,
            readonly: r.flags & LineageRecord::READONLY != 0,
            removed: r.flags & LineageRecord::REMOVED != 0,
            parent: (r.flags & LineageRecord::HAS_PARENT != 0)
                .then(|| (r.parent_id, r.parent_epoch, r.parent_name.to_string_lossy())),
        }
    }
}

/// What one FLATTEN step did and what is left: the protocol's
/// [`FlattenStep`].
pub use archipelago_protocol::payload::FlattenStep as FlattenProgress;

impl Client {
    /// LINEAGE to a mapper: every format 3 volume and snapshot (removed
    /// ones included) with its parent link, sorted by name.
    pub fn lineage(&self, mapperd: u32) -> Result<Vec<LineageNode>, Error> {
        let mut room = 256 << 10;
        loop {
            match self.call(&Call {
                reply_room: room,
                ..Call::new(mapperd, Op::Lineage, b"")
            }) {
                Ok(r) => {
                    let used = &r.data[..(r.serviced as usize).min(r.data.len())];
                    return Ok(decode_lineage(used)?
                        .into_iter()
                        .map(LineageNode::from)
                        .collect());
                }
                // Many volumes: once more with the largest reply.
                Err(e) if e.code == ErrorCode::NoSpace && room < 4 << 20 => room = 4 << 20,
                Err(e) => return Err(e),
            }
        }
    }

    /// One FLATTEN step of `name`: copy at most `max_objects` shared
    /// objects from object index `start` (0: only report what is left).
    pub fn flatten_step(
        &self,
        dst: u32,
        name: &str,
        start: u64,
        max_objects: u64,
    ) -> Result<FlattenProgress, Error> {
        let r = self.call(&Call {
            offset: start,
            size: max_objects,
            reply_room: LockOwner::SIZE as u64,
            ..Call::new(dst, Op::Flatten, name.as_bytes())
        })?;
        FlattenStep::decode(&r.data)
    }

    /// ROLLBACK the closed volume `name` to its snapshot `snap`.
    pub fn rollback_volume(&self, dst: u32, name: &str, snap: &str) -> Result<(), Error> {
        let payload = NameField::new(snap.as_bytes())?.to_vec();
        self.call(&Call {
            data: &payload,
            reply_room: LockOwner::SIZE as u64,
            ..Call::new(dst, Op::Rollback, name.as_bytes())
        })
        .map(|_| ())
    }
}
