//! Issue 15, "a map journal": the entry changes of first writes and
//! copy-ups are appended to the volume's journal (one small durable
//! append per group commit) instead of rewriting a chunk and the header;
//! checkpoints (close, snapshot, any other header commit, a size bound)
//! store the map; a crash loses no acknowledged write, a torn append is
//! ignored, and a fenced owner's late append never mixes in.

mod common;

use std::sync::Arc;

use archipelago_mapfmt::journal::journal_name;
use archipelago_mapper::Mapper;
use archipelago_protocol::ErrorCode;
use archipelago_store::{Fault, FaultyStore, MemoryStore, ObjectStore, OpKind, Rule};
use common::{pattern, read, write};

const OS: u64 = 64 << 10;

struct Env {
    maps: Arc<FaultyStore<MemoryStore>>,
    data: Arc<MemoryStore>,
    m: Mapper,
}

impl Env {
    fn new() -> Env {
        let maps = Arc::new(FaultyStore::new(MemoryStore::new()));
        let data = Arc::new(MemoryStore::new());
        let m = Mapper::new(maps.clone(), data.clone(), "host1".into());
        Env { maps, data, m }
    }

    /// This host after a crash: nothing cached, the lock still ours.
    fn restarted(&self) -> Mapper {
        Mapper::new(self.maps.clone(), self.data.clone(), "host1".into())
    }

    fn writes(&self) -> usize {
        self.maps.inner().list("").unwrap().len()
    }
}

fn id_of(m: &Mapper, name: &str) -> u64 {
    m.info(name).unwrap().volume_id
}

#[test]
fn first_writes_append_to_the_journal_and_write_no_chunk_or_header() {
    let e = Env::new();
    e.m.create("vol", 8 * OS, Some(OS)).unwrap();
    let header = e.maps.inner().stat("vol").unwrap();
    let objects = e.writes();
    for i in 0..4 {
        write(&e.m, &*e.data, "vol", i * OS + 100, &pattern(i as u8, 300)).unwrap();
    }
    // One object more (the journal), and the header as it was.
    assert_eq!(e.writes(), objects + 1);
    assert_eq!(e.maps.inner().stat("vol").unwrap(), header);
    let journal = journal_name(id_of(&e.m, "vol"));
    assert!(e.maps.inner().stat(&journal).unwrap().size > 0);
    // Every write reads back, here and from storage (another host).
    let mut expect = vec![0u8; 8 * OS as usize];
    for i in 0..4u64 {
        expect[(i * OS + 100) as usize..(i * OS + 400) as usize]
            .copy_from_slice(&pattern(i as u8, 300));
    }
    assert!(read(&e.m, &*e.data, "vol", 0, 8 * OS).unwrap() == expect);
    let other = Mapper::new(e.maps.clone(), e.data.clone(), "host2".into());
    assert!(read(&other, &*e.data, "vol", 0, 8 * OS).unwrap() == expect);
    // The close checkpoints: the journal is gone, the header holds it all.
    e.m.close("vol").unwrap();
    assert!(e.maps.inner().stat(&journal).is_err());
    assert!(read(&e.restarted(), &*e.data, "vol", 0, 8 * OS).unwrap() == expect);
}

#[test]
fn a_crash_after_the_append_loses_no_acknowledged_write() {
    let e = Env::new();
    e.m.create("vol", 4 * OS, Some(OS)).unwrap();
    write(&e.m, &*e.data, "vol", 0, &pattern(1, OS as usize)).unwrap();
    e.m.snapshot("vol", "snap").unwrap();
    // A first write and a copy-up (partial), both acknowledged.
    write(&e.m, &*e.data, "vol", 2 * OS + 5, &pattern(2, 10)).unwrap();
    write(&e.m, &*e.data, "vol", 7, &pattern(3, 10)).unwrap();
    let mut expect = vec![0u8; 4 * OS as usize];
    expect[..OS as usize].copy_from_slice(&pattern(1, OS as usize));
    expect[(2 * OS + 5) as usize..(2 * OS + 15) as usize].copy_from_slice(&pattern(2, 10));
    expect[7..17].copy_from_slice(&pattern(3, 10));
    // The host crashes (no close): after a restart the open replays the
    // journal, and checkpoints it.
    let m2 = e.restarted();
    let journal = journal_name(id_of(&m2, "vol"));
    m2.open("vol", true).unwrap();
    assert!(e.maps.inner().stat(&journal).is_err(), "checkpointed");
    assert!(read(&m2, &*e.data, "vol", 0, 4 * OS).unwrap() == expect);
    assert!(read(&m2, &*e.data, "snap", 0, OS).unwrap() == pattern(1, OS as usize));
    // And it keeps working.
    write(&m2, &*e.data, "vol", 3 * OS, b"later").unwrap();
    expect[(3 * OS) as usize..(3 * OS + 5) as usize].copy_from_slice(b"later");
    m2.close("vol").unwrap();
    assert!(read(&e.restarted(), &*e.data, "vol", 0, 4 * OS).unwrap() == expect);
}

#[test]
fn a_torn_append_is_ignored_and_the_write_it_carried_is_not_acknowledged() {
    let e = Env::new();
    e.m.create("vol", 4 * OS, Some(OS)).unwrap();
    write(&e.m, &*e.data, "vol", 0, b"kept").unwrap();
    // The second append tears (a crash in the middle of it): the commit
    // fails, so the write is not acknowledged.
    e.maps.add_rule(
        Rule::new(OpKind::Write, Fault::Torn { keep: 20 })
            .names_with_prefix("archip_journal_")
            .times(1),
    );
    let err = write(&e.m, &*e.data, "vol", OS, b"lost").unwrap_err();
    assert_eq!(err.code, ErrorCode::Io);
    // After a restart the first record applies, the torn one does not.
    let m2 = e.restarted();
    let got = read(&m2, &*e.data, "vol", 0, 2 * OS).unwrap();
    assert_eq!(&got[..4], b"kept");
    assert_eq!(&got[OS as usize..OS as usize + 4], &[0; 4]);
}

#[test]
fn a_failed_checkpoint_keeps_the_journal_for_the_next_owner() {
    let e = Env::new();
    e.m.create("vol", 4 * OS, Some(OS)).unwrap();
    write(&e.m, &*e.data, "vol", OS + 1, b"journaled").unwrap();
    // The close's checkpoint cannot write the header.
    e.maps.add_rule(
        Rule::new(OpKind::WriteFull, Fault::Io)
            .names_with_prefix("vol")
            .times(1),
    );
    e.m.close("vol").unwrap();
    let m2 = e.restarted();
    let got = read(&m2, &*e.data, "vol", OS, 10).unwrap();
    assert_eq!(&got[1..], b"journaled");
}

#[test]
fn a_late_append_of_a_fenced_owner_never_applies() {
    let e = Env::new();
    e.m.create("vol", 4 * OS, Some(OS)).unwrap();
    write(&e.m, &*e.data, "vol", 0, b"before").unwrap();
    // Host 2 breaks host 1's lock and opens the volume: it replays and
    // checkpoints host 1's journal.
    let b = Mapper::new(e.maps.clone(), e.data.clone(), "host2".into());
    e.maps.inner().break_lock("vol").unwrap();
    b.open("vol", true).unwrap();
    write(&b, &*e.data, "vol", 2 * OS, b"host2").unwrap();
    // Host 1's late append (its lock check passed before the break) lands
    // in the journal object: replay ignores it (its records apply on a
    // header that is gone, and its token is older).
    let stale = archipelago_mapfmt::journal::JournalRecord {
        token: 1,
        base_seq: 1,
        epoch: 1,
        entries: vec![(
            3,
            archipelago_mapfmt::Entry::Owned {
                owner: id_of(&b, "vol"),
                epoch: 1,
            },
        )],
    }
    .encode()
    .unwrap();
    let journal = journal_name(id_of(&b, "vol"));
    let len = e.maps.inner().stat(&journal).map_or(0, |s| s.size);
    e.maps.inner().write(&journal, len, &stale, true).unwrap();
    let other = Mapper::new(e.maps.clone(), e.data.clone(), "host3".into());
    let ext = other.map_read("vol", 3 * OS, OS).unwrap();
    assert_eq!(ext[0].object, None, "the late record applied: {ext:?}");
    assert_eq!(&read(&other, &*e.data, "vol", 0, 6).unwrap(), b"before");
    assert_eq!(&read(&other, &*e.data, "vol", 2 * OS, 5).unwrap(), b"host2");
}

#[test]
fn a_long_journal_is_checkpointed() {
    let e = Env::new();
    e.m.create("vol", 10_000 * OS, Some(OS)).unwrap();
    let journal = journal_name(id_of(&e.m, "vol"));
    let mut checkpointed = false;
    let mut last = 0;
    for i in 0..10_000u64 {
        write(&e.m, &*e.data, "vol", i * OS, b"x").unwrap();
        let now = e.maps.inner().stat(&journal).map_or(0, |s| s.size);
        if now < last {
            checkpointed = true;
            break;
        }
        last = now;
    }
    assert!(checkpointed, "the journal grew to {last} bytes");
    assert!(last <= (1 << 20) + 4096, "{last}");
}

/// Write-back mode: both stores acknowledge from a cache (`crash()`
/// loses what was not made durable), and the mapper keeps its records in
/// a write-back journal store that outlives the mapper but not the host.
/// A clone `vm` of a snapshot of a two-object volume, everything durable
/// so far.
struct WriteBack {
    maps: Arc<archipelago_store::VolatileStore>,
    data: Arc<archipelago_store::VolatileStore>,
    journals: Arc<MemoryStore>,
    m: Mapper,
    old: Vec<u8>,
}

impl WriteBack {
    fn new() -> WriteBack {
        use archipelago_store::VolatileStore;
        let maps = Arc::new(VolatileStore::new());
        let data = Arc::new(VolatileStore::new());
        let journals = Arc::new(MemoryStore::new());
        let m = Mapper::new(maps.clone(), data.clone(), "host1".into())
            .with_write_back(journals.clone());
        m.create("base", 2 * OS, Some(OS)).unwrap();
        let old = pattern(4, 2 * OS as usize);
        write(&m, &*data, "base", 0, &old).unwrap();
        m.snapshot("base", "gold").unwrap();
        m.clone_volume("gold", "vm", None).unwrap();
        maps.sync().unwrap();
        data.sync().unwrap();
        WriteBack {
            maps,
            data,
            journals,
            m,
            old,
        }
    }

    /// A write into `vm` as vlmcd does it in write-back mode: the data
    /// without FUA, then the commit.
    fn write(&self, off: u64, bytes: &[u8]) {
        let ext = self.m.map_write("vm", off, bytes.len() as u64).unwrap();
        let mut pending = Vec::new();
        let mut pos = 0;
        for e in &ext {
            let n = e.len as usize;
            self.data
                .write(
                    e.object.as_ref().unwrap(),
                    e.offset_in_object,
                    &bytes[pos..pos + n],
                    false,
                )
                .unwrap();
            pos += n;
            if e.pending {
                pending.push(e.index);
            }
        }
        for r in self.m.commit_batch("vm", &[&pending]) {
            r.unwrap();
        }
    }

    /// The composer's FLUSH: the data store, then the maps.
    fn flush(&self) {
        self.data.sync().unwrap();
        self.m.sync_maps().unwrap();
    }

    /// A mapper of this host restarted after the mapper crashed (the
    /// write-back journals kept).
    fn restarted(&self) -> Mapper {
        Mapper::new(self.maps.clone(), self.data.clone(), "host1".into())
            .with_write_back(self.journals.clone())
    }

    /// `vm` as a restarted host reads it after a power loss (the
    /// write-back journals, in memory, lost).
    fn after_power_loss(&self) -> Vec<u8> {
        self.maps.crash();
        self.data.crash();
        let m2 = Mapper::new(self.maps.clone(), self.data.clone(), "host1".into())
            .with_write_back(Arc::new(MemoryStore::new()));
        read(&m2, &*self.data, "vm", 0, 2 * OS).unwrap()
    }

    /// What `vm` reads after the writes of the tests below.
    fn expected(&self) -> Vec<u8> {
        let mut expect = self.old.clone();
        expect[5000..5009].copy_from_slice(b"new bytes");
        expect[(OS + 7) as usize..(OS + 11) as usize].copy_from_slice(b"more");
        expect
    }
}

/// Write-back mode (issue 15: "with `sync = false` the journal is made
/// durable at FLUSH and FUA only", as qcow2 under `cache=writeback`):
/// first writes and copy-ups into a clone sync nothing and write nothing
/// to the map store until the composer's FLUSH; one after it loses
/// nothing.
#[test]
fn in_write_back_mode_nothing_is_synced_or_stored_before_flush() {
    let w = WriteBack::new();
    // Two writes into the clone, each copying up a granule.
    w.write(5000, b"new bytes");
    w.write(OS + 7, b"more");
    let journal = journal_name(id_of(&w.m, "vm"));
    assert!(
        w.maps.dirty_objects().is_empty(),
        "the map store was written before FLUSH: {:?}",
        w.maps.dirty_objects()
    );
    assert_eq!(
        w.data.dirty_objects().len(),
        2,
        "a copy-up was synced before FLUSH"
    );
    assert!(w.journals.stat(&journal).is_ok());
    assert!(read(&w.m, &*w.data, "vm", 0, 2 * OS).unwrap() == w.expected());
    w.flush();
    assert!(w.maps.dirty_objects().is_empty());
    assert!(w.data.dirty_objects().is_empty());
    assert!(w.maps.stat(&journal).is_ok(), "the records moved");
    assert!(
        w.journals.stat(&journal).is_err(),
        "and left the write-back journal"
    );
    assert!(
        w.after_power_loss() == w.expected(),
        "a flushed write was lost"
    );
}

/// A crash of the mapper alone (not of the host) loses no acknowledged
/// write in write-back mode: the restarted mapper replays the write-back
/// journal, and its open stores them (after syncing their data).
#[test]
fn in_write_back_mode_a_mapper_crash_loses_no_acknowledged_write() {
    let w = WriteBack::new();
    w.write(5000, b"new bytes");
    w.write(OS + 7, b"more");
    let m2 = w.restarted();
    assert!(read(&m2, &*w.data, "vm", 0, 2 * OS).unwrap() == w.expected());
    m2.open("vm", true).unwrap();
    assert!(w.data.dirty_objects().is_empty(), "stored before its data");
    assert!(w.after_power_loss() == w.expected());
}

/// A power loss before FLUSH loses the writes but never the old data
/// under them, whatever the map store's cache had written.
#[test]
fn in_write_back_mode_a_power_loss_before_flush_keeps_the_old_data() {
    let w = WriteBack::new();
    // Whole granules over the base's data, and a partial one.
    w.write(0, &[0xab; 2 * 4096]);
    w.write(OS + 100, &[0xab; 50]);
    // The worst case: the map store's cache reached the disk (nothing
    // orders it after the data store's), the data store's did not.
    w.maps.sync().unwrap();
    let got = w.after_power_loss();
    // Each byte is the old one or the new one: never a zero.
    for (i, (g, o)) in got.iter().zip(&w.old).enumerate() {
        assert!(
            *g == *o || *g == 0xab,
            "byte {i}: {g:#x}, neither old nor new"
        );
    }
}

/// A FLUSH moves the records, a later write goes to the write-back
/// journal again, and a snapshot (a header commit) stores everything,
/// its data first.
#[test]
fn in_write_back_mode_a_snapshot_stores_the_records_after_their_data() {
    let w = WriteBack::new();
    w.write(5000, b"new bytes");
    w.flush();
    w.write(OS + 7, b"more");
    assert_eq!(w.data.dirty_objects().len(), 1);
    w.m.snapshot("vm", "vm-snap").unwrap();
    assert!(w.data.dirty_objects().is_empty(), "the snapshot's data");
    // Only the delete of the journal may be volatile (its records no
    // longer apply on the new header).
    let journal = journal_name(id_of(&w.m, "vm"));
    assert!(w.maps.dirty_objects().iter().all(|o| *o == journal));
    assert!(w.after_power_loss() == w.expected());
    let m2 = w.restarted();
    assert!(read(&m2, &*w.data, "vm-snap", 0, 2 * OS).unwrap() == w.expected());
}

/// Each journaled commit makes a new in-memory copy of the chunk it
/// changes; the copy it replaces is dropped, so a volume between
/// checkpoints holds one in-memory chunk per slot, not one per commit.
#[test]
fn in_memory_chunks_do_not_pile_up_between_checkpoints() {
    let e = Env::new();
    e.m.create("vol", 300 * OS, Some(OS)).unwrap();
    for i in 0..300u64 {
        write(&e.m, &*e.data, "vol", i * OS, b"x").unwrap();
        // Concurrent readers of the map are unaffected.
        assert_eq!(&read(&e.m, &*e.data, "vol", i * OS, 1).unwrap(), b"x");
    }
    assert_eq!(e.m.memory_chunks(), 1);
    e.m.close("vol").unwrap();
    assert_eq!(e.m.memory_chunks(), 0);
}

/// A crash between a FLUSH's durable append and its rewrite of the
/// write-back journal leaves the records in both journals: replay
/// applies them twice, in order, and ends in the same map.
#[test]
fn in_write_back_mode_records_in_both_journals_apply_once_in_effect() {
    let w = WriteBack::new();
    w.write(5000, b"new bytes");
    w.write(OS + 7, b"more");
    let journal = journal_name(id_of(&w.m, "vm"));
    let len = w.journals.stat(&journal).unwrap().size;
    let mut before = vec![0; len as usize];
    w.journals.read(&journal, 0, &mut before).unwrap();
    w.flush();
    // The rewrite "never happened": the write-back journal as before.
    w.journals.write_full(&journal, &before, false).unwrap();
    let m2 = w.restarted();
    assert!(read(&m2, &*w.data, "vm", 0, 2 * OS).unwrap() == w.expected());
    m2.open("vm", true).unwrap();
    m2.close("vm").unwrap();
    assert!(w.after_power_loss() == w.expected());
}

/// A record torn in the write-back journal (the mapper died in the middle
/// of the append, before the write was acknowledged) is ignored, and the
/// records before it apply.
#[test]
fn in_write_back_mode_a_torn_record_is_ignored() {
    let w = WriteBack::new();
    w.write(5000, b"new bytes");
    let journal = journal_name(id_of(&w.m, "vm"));
    let kept = w.journals.stat(&journal).unwrap().size;
    w.write(OS + 7, b"more");
    let full = w.journals.stat(&journal).unwrap().size;
    let mut bytes = vec![0; full as usize];
    w.journals.read(&journal, 0, &mut bytes).unwrap();
    // Cut the second record in half.
    let cut = (kept + (full - kept) / 2) as usize;
    w.journals
        .write_full(&journal, &bytes[..cut], false)
        .unwrap();
    let m2 = w.restarted();
    let got = read(&m2, &*w.data, "vm", 0, 2 * OS).unwrap();
    let mut expect = w.old.clone();
    expect[5000..5009].copy_from_slice(b"new bytes");
    assert!(
        got == expect,
        "the torn record applied, or the first did not"
    );
}

/// A FLUSH whose append to the map store fails keeps the records in the
/// write-back journal (the FLUSH fails: the guest sees it); the next
/// FLUSH moves them, and a power loss then loses nothing.
#[test]
fn in_write_back_mode_a_failed_flush_keeps_the_records_for_the_next() {
    use archipelago_store::VolatileStore;
    let maps = Arc::new(FaultyStore::new(VolatileStore::new()));
    let data = Arc::new(VolatileStore::new());
    let journals = Arc::new(MemoryStore::new());
    let m =
        Mapper::new(maps.clone(), data.clone(), "host1".into()).with_write_back(journals.clone());
    m.create("vol", 4 * OS, Some(OS)).unwrap();
    write(&m, &*data, "vol", 100, b"first").unwrap();
    maps.add_rule(
        Rule::new(OpKind::WriteFull, Fault::Io)
            .names_with_prefix("archip_journal_")
            .times(1),
    );
    data.sync().unwrap();
    assert!(m.sync_maps().is_err(), "the failed append was not reported");
    let journal = journal_name(id_of(&m, "vol"));
    assert!(journals.stat(&journal).is_ok(), "the records were dropped");
    m.sync_maps().unwrap();
    assert!(journals.stat(&journal).is_err());
    maps.inner().crash();
    data.crash();
    let after = Mapper::new(maps.clone(), data.clone(), "host1".into())
        .with_write_back(Arc::new(MemoryStore::new()));
    assert_eq!(&read(&after, &*data, "vol", 100, 5).unwrap(), b"first");
}
