//! The map journal: entry changes of a volume's writes, appended to one
//! object of the map store, `archip_journal_{volume id:016x}`, instead of
//! rewriting a chunk and the header for each.
//!
//! The journal is a sequence of records, each self-checking (a checksum
//! over the record), so that an append torn by a crash is seen and
//! ignored with everything after it. A record applies on top of the
//! header whose commit sequence it names (`base_seq`): once the header is
//! rewritten (a checkpoint: the chunks and header that hold every change
//! of the journal), its records no longer apply, and a late append by a
//! writer whose lock was broken (its `token` is older, its `base_seq`
//! stale) is ignored too.
//!
//! Record layout (little-endian):
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | 4 bytes | magic "AMJ." |
//! | 4 | u32 | entries `n` (at least 1) |
//! | 8 | u64 | writer's fencing token |
//! | 16 | u64 | `base_seq`: the header commit sequence it applies on |
//! | 24 | u64 | the volume's epoch |
//! | 32 | u32 | name table bytes `t` |
//! | 36 | u32 | reserved, 0 |
//! | 40 | `n` × 72 | per entry: u64 object index, then the 64-byte entry ([`crate::entry`]) |
//! | 40 + 72n | `t` bytes | name table, as a chunk's (legacy names the entries refer to) |
//! | 40 + 72n + t | 16 bytes | SHA-256 (first 16 bytes) of the record's bytes before it |

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::bytes::{to_usize, Fields};
use crate::entry::{self, Entry, ENTRY_LEN};
use crate::MapError;

/// Prefix of journal objects in the map store.
pub const JOURNAL_PREFIX: &str = "archip_journal_";
/// Record magic.
pub const RECORD_MAGIC: [u8; 4] = *b"AMJ.";
/// Bytes of a record before its entries.
pub const RECORD_HEADER_LEN: usize = 40;
/// Bytes per entry in a record: the index and the entry.
pub const RECORD_ENTRY_LEN: usize = 8 + ENTRY_LEN;
/// Checksum bytes at the end of a record.
pub const RECORD_CHECKSUM_LEN: usize = 16;

const WHAT: &str = "journal record";

/// The journal object of volume `volume_id`.
pub fn journal_name(volume_id: u64) -> String {
    format!("{JOURNAL_PREFIX}{volume_id:016x}")
}

/// One append: entry changes of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    /// The writer's fencing token.
    pub token: u64,
    /// The commit sequence of the header this record applies on.
    pub base_seq: u64,
    /// The volume's epoch.
    pub epoch: u64,
    /// The new entries, by object index, applied in order.
    pub entries: Vec<(u64, Entry)>,
}

impl JournalRecord {
    /// Encodes the record (entries validated first).
    pub fn encode(&self) -> Result<Vec<u8>, MapError> {
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut table = Vec::new();
        let mut raw = Vec::with_capacity(self.entries.len() * RECORD_ENTRY_LEN);
        for (i, e) in &self.entries {
            e.validate()?;
            let name_index = match e.legacy_name() {
                Some(name) => {
                    let next = index.len() as u32;
                    *index.entry(name).or_insert_with(|| {
                        table.extend_from_slice(&(name.len() as u16).to_le_bytes());
                        table.extend_from_slice(name.as_bytes());
                        next
                    })
                }
                None => 0,
            };
            raw.extend_from_slice(&i.to_le_bytes());
            raw.extend_from_slice(&e.encode(name_index));
        }
        let mut out = Vec::with_capacity(RECORD_HEADER_LEN + raw.len() + table.len() + 16);
        out.extend_from_slice(&RECORD_MAGIC);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.token.to_le_bytes());
        out.extend_from_slice(&self.base_seq.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&(table.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&raw);
        out.extend_from_slice(&table);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum[..RECORD_CHECKSUM_LEN]);
        Ok(out)
    }

    /// Decodes the record at the start of `bytes`: the record and its
    /// length, or an error if it is incomplete or damaged (a torn append
    /// reads as one).
    pub fn decode(bytes: &[u8]) -> Result<(JournalRecord, usize), MapError> {
        let f = Fields::new(bytes, WHAT);
        f.need(RECORD_HEADER_LEN as u64)?;
        let magic: [u8; 4] = f.array(0)?;
        if magic != RECORD_MAGIC {
            return Err(MapError::BadMagic {
                what: WHAT,
                found: magic,
                expected: RECORD_MAGIC,
            });
        }
        let n = to_usize(f.u32_le(4)?.into(), WHAT, bytes.len())?;
        let t = to_usize(f.u32_le(32)?.into(), WHAT, bytes.len())?;
        let entries_len = n.checked_mul(RECORD_ENTRY_LEN).ok_or(MapError::Truncated {
            what: WHAT,
            need: u64::MAX,
            have: bytes.len() as u64,
        })?;
        let body = RECORD_HEADER_LEN + entries_len + t;
        let total = body + RECORD_CHECKSUM_LEN;
        f.need(total as u64)?;
        let sum = Sha256::digest(&bytes[..body]);
        if sum[..RECORD_CHECKSUM_LEN] != bytes[body..total] {
            return Err(MapError::ChecksumMismatch { what: WHAT });
        }
        f.zeros(36, 4, 0)?;
        let names = crate::chunk::decode_names(f.slice(RECORD_HEADER_LEN + entries_len, t)?)?;
        let mut entries = Vec::with_capacity(n);
        for k in 0..n {
            let at = RECORD_HEADER_LEN + k * RECORD_ENTRY_LEN;
            let index = f.u64_le(at)?;
            let raw = f.slice(at + 8, ENTRY_LEN)?;
            let e = entry::decode_at(raw, &names, index, (at + 8) as u64, ENTRY_LEN)?;
            entries.push((index, e));
        }
        let record = JournalRecord {
            token: f.u64_le(8)?,
            base_seq: f.u64_le(16)?,
            epoch: f.u64_le(24)?,
            entries,
        };
        Ok((record, total))
    }
}

/// The records of a journal object, in order, up to the first one that
/// is incomplete or damaged (a torn append: it and anything after it are
/// ignored), and the bytes they take.
pub fn decode_journal(bytes: &[u8]) -> (Vec<JournalRecord>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match JournalRecord::decode(&bytes[at..]) {
            Ok((r, len)) => {
                out.push(r);
                at += len;
            }
            Err(_) => break,
        }
    }
    (out, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JournalRecord {
        JournalRecord {
            token: 7,
            base_seq: 3,
            epoch: 2,
            entries: vec![
                (5, Entry::Owned { owner: 9, epoch: 2 }),
                (
                    6,
                    Entry::partial(9, 2, 0b10, Entry::Legacy("archip_x".into()), u64::MAX),
                ),
                (7, Entry::Zero),
            ],
        }
    }

    #[test]
    fn records_round_trip_and_a_journal_reads_record_by_record() {
        let a = sample();
        let b = JournalRecord {
            token: 8,
            entries: vec![(1, Entry::Content([4; 32]))],
            ..sample()
        };
        let mut j = a.encode().unwrap();
        assert_eq!(j.len(), RECORD_HEADER_LEN + 3 * RECORD_ENTRY_LEN + 10 + 16);
        j.extend_from_slice(&b.encode().unwrap());
        let (records, len) = decode_journal(&j);
        assert_eq!(records, vec![a, b]);
        assert_eq!(len, j.len());
    }

    #[test]
    fn a_torn_or_damaged_append_ends_the_journal() {
        let a = sample().encode().unwrap();
        let b = JournalRecord {
            token: 8,
            ..sample()
        }
        .encode()
        .unwrap();
        let mut j = a.clone();
        j.extend_from_slice(&b);
        // Every cut inside the second record leaves the first alone.
        for cut in a.len()..j.len() {
            let (records, len) = decode_journal(&j[..cut]);
            assert_eq!((records.len(), len), (1, a.len()), "cut at {cut}");
        }
        // Every flipped bit of the second record is caught.
        for bit in 0..b.len() * 8 {
            let mut d = j.clone();
            d[a.len() + bit / 8] ^= 1 << (bit % 8);
            let (records, _) = decode_journal(&d);
            assert_eq!(records.len(), 1, "bit {bit}");
        }
        // Garbage after a good record (an older, longer torn append
        // overwritten by a shorter one) is ignored.
        let mut g = a.clone();
        g.extend_from_slice(&[0xee; 100]);
        assert_eq!(decode_journal(&g).0.len(), 1);
    }

    #[test]
    fn journal_names_are_reserved_map_store_names() {
        assert_eq!(journal_name(0xab), "archip_journal_00000000000000ab");
        assert!(
            archipelago_protocol::names::check_volume_name(journal_name(1).as_bytes()).is_err()
        );
    }
}
