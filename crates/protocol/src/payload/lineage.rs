//! Payloads of the lineage ops: LINEAGE (its records), FLATTEN (its
//! reply); ROLLBACK carries a [`NameField`].
//!
//! | payload | used by | size |
//! |---|---|---|
//! | [`LineageRecord`] | LINEAGE reply records (after an 8-byte header) | 576 |
//! | [`FlattenStep`] | FLATTEN: what one step did and what is left | 48 |
//!
//! LINEAGE reply ([`encode_lineage`], [`decode_lineage`]): `u32 count,
//! u32 reserved`, then `count` [`LineageRecord`]s.

use super::{list_count, short, NameField, Payload, Reader, Writer, LIST_HEADER};
use crate::{Error, ErrorCode};

/// One volume or snapshot header and its parent link (LINEAGE reply).
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(C)]
pub struct LineageRecord {
    /// Its volume id (a snapshot shares its volume's).
    pub volume_id: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Size in bytes.
    pub size: u64,
    /// [`LineageRecord::READONLY`], [`LineageRecord::REMOVED`],
    /// [`LineageRecord::HAS_PARENT`].
    pub flags: u32,
    /// Zero.
    pub reserved: u32,
    /// The parent's volume id (with `HAS_PARENT`).
    pub parent_id: u64,
    /// The parent's epoch (with `HAS_PARENT`).
    pub parent_epoch: u64,
    /// The header's name.
    pub name: NameField,
    /// The parent's name when the link was made (with `HAS_PARENT`).
    pub parent_name: NameField,
}
const _: () = assert!(core::mem::size_of::<LineageRecord>() == 576);

impl LineageRecord {
    /// A snapshot.
    pub const READONLY: u32 = 1;
    /// Removed (kept for its lineage).
    pub const REMOVED: u32 = 2;
    /// The parent fields are set.
    pub const HAS_PARENT: u32 = 4;
    /// Every defined flag.
    pub const ALL_FLAGS: u32 = 7;
}

impl Payload for LineageRecord {
    const SIZE: usize = 576;
    fn encode(&self, out: &mut [u8]) -> Result<(), Error> {
        if out.len() < Self::SIZE {
            return Err(short("lineage record", out.len(), Self::SIZE));
        }
        let mut w = Writer(out, 0);
        w.u64(self.volume_id);
        w.u64(self.epoch);
        w.u64(self.size);
        w.u32(self.flags);
        w.u32(0);
        w.u64(self.parent_id);
        w.u64(self.parent_epoch);
        self.name.write(&mut w);
        self.parent_name.write(&mut w);
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < Self::SIZE {
            return Err(short("lineage record", bytes.len(), Self::SIZE));
        }
        let mut r = Reader(bytes, 0);
        let (volume_id, epoch, size, flags) = (r.u64(), r.u64(), r.u64(), r.u32());
        let _reserved = r.u32();
        let (parent_id, parent_epoch) = (r.u64(), r.u64());
        let name = NameField::read(&mut r)?;
        let parent_name = NameField::read(&mut r)?;
        if flags & !LineageRecord::ALL_FLAGS != 0 {
            return Err(Error::with(
                ErrorCode::InvalidArgument,
                format!("unknown lineage record flags {flags:#x}"),
            ));
        }
        Ok(LineageRecord {
            volume_id,
            epoch,
            size,
            flags,
            reserved: 0,
            parent_id,
            parent_epoch,
            name,
            parent_name,
        })
    }
}

/// Bytes a LINEAGE reply of `count` records takes.
pub fn lineage_size(count: usize) -> usize {
    LIST_HEADER + count * LineageRecord::SIZE
}

/// Encodes a LINEAGE reply into `out`; returns the bytes used
/// (`NoSpace` if `out` is too small).
pub fn encode_lineage(records: &[LineageRecord], out: &mut [u8]) -> Result<usize, Error> {
    let need = lineage_size(records.len());
    if out.len() < need {
        return Err(Error::with(
            ErrorCode::NoSpace,
            format!(
                "{} lineage records need {need} bytes, the buffer has {}",
                records.len(),
                out.len()
            ),
        ));
    }
    let count = u32::try_from(records.len())
        .map_err(|_| Error::with(ErrorCode::InvalidArgument, "too many lineage records"))?;
    out[..4].copy_from_slice(&count.to_le_bytes());
    out[4..8].fill(0);
    for (i, r) in records.iter().enumerate() {
        r.encode(&mut out[LIST_HEADER + i * LineageRecord::SIZE..])?;
    }
    Ok(need)
}

/// Decodes a LINEAGE reply.
pub fn decode_lineage(bytes: &[u8]) -> Result<Vec<LineageRecord>, Error> {
    let count = list_count(bytes, "lineage reply", LineageRecord::SIZE)?;
    (0..count)
        .map(|i| LineageRecord::decode(&bytes[LIST_HEADER + i * LineageRecord::SIZE..]))
        .collect()
}

/// What one FLATTEN step did and what is left: the value type the
/// mapper returns and the tools read, with its codec (48 bytes: copied,
/// bytes, next, remaining, total, flags (`DONE` 1), zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlattenStep {
    /// Objects copied by this step.
    pub copied: u64,
    /// Bytes copied by this step (objects × object size).
    pub bytes: u64,
    /// Where the next step should start looking (an object index).
    pub next: u64,
    /// Shared entries left after this step (those with a write in flight
    /// included).
    pub remaining: u64,
    /// Objects in the volume.
    pub total: u64,
    /// The volume depends on no other volume any more: its parent link is
    /// gone.
    pub done: bool,
}

impl FlattenStep {
    const DONE: u32 = 1;
}

impl Payload for FlattenStep {
    const SIZE: usize = 48;
    fn encode(&self, out: &mut [u8]) -> Result<(), Error> {
        if out.len() < Self::SIZE {
            return Err(short("flatten", out.len(), Self::SIZE));
        }
        let mut w = Writer(out, 0);
        for v in [
            self.copied,
            self.bytes,
            self.next,
            self.remaining,
            self.total,
        ] {
            w.u64(v);
        }
        w.u32(if self.done { Self::DONE } else { 0 });
        w.u32(0);
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < Self::SIZE {
            return Err(short("flatten", bytes.len(), Self::SIZE));
        }
        let mut r = Reader(bytes, 0);
        Ok(FlattenStep {
            copied: r.u64(),
            bytes: r.u64(),
            next: r.u64(),
            remaining: r.u64(),
            total: r.u64(),
            done: r.u32() & Self::DONE != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn lineage_payloads_round_trip_and_refuse_hostile_bytes() {
        assert_eq!(offset_of!(LineageRecord, name), 48);
        assert_eq!(offset_of!(LineageRecord, parent_name), 312);
        let rec = LineageRecord {
            volume_id: 7,
            epoch: 3,
            size: 1 << 30,
            flags: LineageRecord::READONLY | LineageRecord::HAS_PARENT,
            reserved: 0,
            parent_id: 9,
            parent_epoch: 1,
            name: NameField::new(b"snap").unwrap(),
            parent_name: NameField::new(b"gold").unwrap(),
        };
        let mut buf = vec![0; lineage_size(2)];
        assert_eq!(
            encode_lineage(&[rec.clone(), rec.clone()], &mut buf).unwrap(),
            buf.len()
        );
        assert_eq!(decode_lineage(&buf).unwrap(), [rec.clone(), rec.clone()]);
        assert_eq!(buf[8..16], 7u64.to_le_bytes());
        assert_eq!(
            encode_lineage(std::slice::from_ref(&rec), &mut [0; 100])
                .unwrap_err()
                .code,
            ErrorCode::NoSpace
        );
        // A count past the bytes, unknown flags, a short record.
        assert!(decode_lineage(&[2, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut bad = rec.to_vec();
        bad[24] = 0x80;
        assert!(LineageRecord::decode(&bad).is_err());
        assert!(LineageRecord::decode(&bad[..100]).is_err());

        let f = FlattenStep {
            copied: 1,
            bytes: 4 << 20,
            next: 8,
            remaining: 5,
            total: 10,
            done: true,
        };
        let b = f.to_vec();
        assert_eq!(
            (b.len(), &b[40..44]),
            (48, &[1, 0, 0, 0][..]),
            "flags at 40"
        );
        assert_eq!(FlattenStep::decode(&b).unwrap(), f);
        assert!(FlattenStep::decode(&[0; 47]).is_err());
    }
}
