//! `mapperd` as its own process over two `blockerd`s (maps on port 2, data
//! on port 1), driven through the client the way the composer will: the
//! write protocol (map_write, data writes, map_commit), snapshots, clones,
//! hashing, locks between two mapper hosts, and a kill -9 of the mapper.
//! Also: [`RemoteStore`] passes the store conformance suite against a real
//! `blockerd`.

use std::sync::Arc;
use std::time::Duration;

use archipelago_client::{Client, RemoteStore, VolumeExtent};
use archipelago_e2e::pipeline::{mapper, memory_blocker, Proc, BLOCKERB, BLOCKERM, MAPPER};
use archipelago_e2e::TempSegment;
use archipelago_peer::launch::Mapper;
use archipelago_protocol::{ErrorCode, PROTOCOL_VERSION};
use archipelago_store::{ObjectStat, ObjectStore, StoreError};
use xseg_shm::{Segment, SegmentConfig, SegmentName};

const MAPPER_B: u32 = 4;

fn segment(tmp: &TempSegment) -> Arc<Segment> {
    let name = SegmentName::parse(&tmp.arg()).unwrap();
    let config = SegmentConfig {
        ports: 64,
        static_ports: 16,
        requests: 512,
        buffer_counts: vec![512, 64, 64, 32, 32, 16, 16, 8, 8, 4, 4],
        protocol_version: PROTOCOL_VERSION,
        ..Default::default()
    };
    Arc::new(Segment::create(&name, &config).unwrap())
}

/// A mapper on `port` as `host` (killed on drop).
fn start_mapperd(tmp: &TempSegment, port: u32, host: &str) -> Proc {
    Proc::start(mapper(&tmp.arg(), port, host))
}

// --- RemoteStore conformance ---------------------------------------------

/// A [`RemoteStore`] over its own segment and `blockerd`, torn down on drop.
struct Served {
    store: RemoteStore,
    _blockerd: Proc,
    _seg: Arc<Segment>,
    _tmp: TempSegment,
}

fn served() -> Served {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = TempSegment::new(&format!("remote-store-{n}"));
    let seg = segment(&tmp);
    let blockerd = Proc::start(memory_blocker(&tmp.arg(), BLOCKERB));
    Served {
        store: RemoteStore::new(&tmp.arg(), BLOCKERB),
        _blockerd: blockerd,
        _seg: seg,
        _tmp: tmp,
    }
}

impl ObjectStore for Served {
    fn read(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<u64, StoreError> {
        self.store.read(name, offset, buf)
    }
    fn write(&self, name: &str, offset: u64, data: &[u8], durable: bool) -> Result<(), StoreError> {
        self.store.write(name, offset, data, durable)
    }
    fn write_full(&self, name: &str, data: &[u8], durable: bool) -> Result<(), StoreError> {
        self.store.write_full(name, data, durable)
    }
    fn write_fenced(
        &self,
        name: &str,
        offset: u64,
        data: &[u8],
        durable: bool,
        fence: archipelago_store::Fence<'_>,
    ) -> Result<(), StoreError> {
        self.store.write_fenced(name, offset, data, durable, fence)
    }
    fn write_full_fenced(
        &self,
        name: &str,
        data: &[u8],
        durable: bool,
        fence: archipelago_store::Fence<'_>,
    ) -> Result<(), StoreError> {
        self.store.write_full_fenced(name, data, durable, fence)
    }
    fn raise_fence(&self, lock: &str, token: u64) -> Result<u64, StoreError> {
        self.store.raise_fence(lock, token)
    }
    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.store.delete(name)
    }
    fn stat(&self, name: &str) -> Result<ObjectStat, StoreError> {
        self.store.stat(name)
    }
    fn copy(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        durable: bool,
    ) -> Result<(), StoreError> {
        self.store
            .copy(src, src_offset, dst, dst_offset, len, durable)
    }
    fn store_content(&self, data: &[u8], durable: bool) -> Result<String, StoreError> {
        self.store.store_content(data, durable)
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.store.sync()
    }
    fn try_lock(&self, name: &str, owner: &str) -> Result<u64, StoreError> {
        self.store.try_lock(name, owner)
    }
    fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.store.unlock(name, owner)
    }
    fn break_lock(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.store.break_lock(name)
    }
    fn lock_owner(&self, name: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.store.lock_owner(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.store.list(prefix)
    }
}

mod remote_store_conformance {
    archipelago_store::conformance_tests!(super::served);
}

// --- mapperd end to end -----------------------------------------------------

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) | 1)
        .collect()
}

/// The composer's write: map, write every extent to blockerb, commit the
/// pending ones.
fn write_volume(c: &Client, mapper: u32, vol: &str, offset: u64, data: &[u8]) {
    let extents = c.map_write(mapper, vol, offset, data.len() as u64).unwrap();
    assert_eq!(
        extents.iter().map(|e| e.len).sum::<u64>(),
        data.len() as u64
    );
    let mut at = 0usize;
    let mut pending = Vec::new();
    for e in &extents {
        let obj = e.object.as_deref().expect("write extents name an object");
        c.write(
            BLOCKERB,
            obj,
            e.offset_in_object,
            &data[at..at + e.len as usize],
            false,
        )
        .unwrap();
        at += e.len as usize;
        if e.pending {
            pending.push(e.index);
        }
    }
    if !pending.is_empty() {
        c.map_commit(mapper, vol, &pending).unwrap();
    }
}

fn read_extent(c: &Client, e: &VolumeExtent) -> Vec<u8> {
    let Some(obj) = &e.object else {
        return vec![0; e.len as usize];
    };
    match c.read(BLOCKERB, obj, e.offset_in_object, e.len) {
        Ok(d) => d,
        Err(err) if err.code == ErrorCode::NotFound && e.missing_reads_zero => {
            vec![0; e.len as usize]
        }
        Err(err) => panic!("read {obj}: {err}"),
    }
}

/// The composer's read.
fn read_volume(c: &Client, mapper: u32, vol: &str, offset: u64, len: u64) -> Vec<u8> {
    let extents = c.map_read(mapper, vol, offset, len).unwrap();
    let out: Vec<u8> = extents.iter().flat_map(|e| read_extent(c, e)).collect();
    assert_eq!(out.len() as u64, len);
    out
}

const SIZE: u64 = 1 << 20;
const OBJ: u64 = 64 << 10;

#[test]
fn volumes_snapshots_clones_and_a_kill_9_of_the_mapper() {
    let tmp = TempSegment::new("mapperd");
    let _seg = segment(&tmp);
    let _b = Proc::start(memory_blocker(&tmp.arg(), BLOCKERB));
    let _m = Proc::start(memory_blocker(&tmp.arg(), BLOCKERM));
    let mut mapperd = start_mapperd(&tmp, MAPPER, "host-a");
    // This test plays the composer: nothing is in flight at its barriers.
    let c = Client::connect(&tmp.arg())
        .unwrap()
        .with_timeout(Duration::from_secs(10))
        .drained();

    // A volume: fresh, it reads as zeros.
    c.create_volume(MAPPER, "vol", SIZE, Some(OBJ)).unwrap();
    assert_eq!(
        c.create_volume(MAPPER, "vol", SIZE, Some(OBJ))
            .unwrap_err()
            .code,
        ErrorCode::Exists
    );
    let info = c.volume_info(MAPPER, "vol").unwrap();
    assert_eq!((info.size, info.object_size), (SIZE, OBJ));
    assert!(!info.readonly && info.parent.is_none());
    assert_eq!(read_volume(&c, MAPPER, "vol", 0, 4096), vec![0; 4096]);

    // Write across object boundaries, read back.
    let mut expect_vol = vec![0u8; SIZE as usize];
    let a = pattern(140 << 10, 1);
    write_volume(&c, MAPPER, "vol", 60 << 10, &a);
    expect_vol[60 << 10..][..a.len()].copy_from_slice(&a);
    assert!(read_volume(&c, MAPPER, "vol", 0, SIZE) == expect_vol);

    // Snapshot, then overwrite: the snapshot keeps the old data.
    c.snapshot(MAPPER, "vol", "snap").unwrap();
    let expect_snap = expect_vol.clone();
    let b = pattern(30 << 10, 2);
    write_volume(&c, MAPPER, "vol", 100 << 10, &b);
    expect_vol[100 << 10..][..b.len()].copy_from_slice(&b);
    assert!(read_volume(&c, MAPPER, "vol", 0, SIZE) == expect_vol);
    assert!(read_volume(&c, MAPPER, "snap", 0, SIZE) == expect_snap);
    assert_eq!(
        c.map_write(MAPPER, "snap", 0, 10).unwrap_err().code,
        ErrorCode::ReadOnly
    );

    // A clone of the snapshot: its own writes, nobody else's.
    c.clone_volume(MAPPER, "snap", "clone", None).unwrap();
    let mut expect_clone = expect_snap.clone();
    assert!(read_volume(&c, MAPPER, "clone", 0, SIZE) == expect_clone);
    let d = pattern(10 << 10, 3);
    write_volume(&c, MAPPER, "clone", 62 << 10, &d);
    expect_clone[62 << 10..][..d.len()].copy_from_slice(&d);
    assert!(read_volume(&c, MAPPER, "clone", 0, SIZE) == expect_clone);
    assert!(read_volume(&c, MAPPER, "snap", 0, SIZE) == expect_snap);
    assert!(read_volume(&c, MAPPER, "vol", 0, SIZE) == expect_vol);

    // Info: parents and read-only.
    let snap = c.volume_info(MAPPER, "snap").unwrap();
    assert!(snap.readonly, "{snap:?}");
    let clone = c.volume_info(MAPPER, "clone").unwrap();
    assert_eq!(clone.parent.as_deref(), Some("snap"), "{clone:?}");
    assert!(!clone.readonly);
    assert_eq!(
        c.volume_info(MAPPER, "vol").unwrap().parent.as_deref(),
        Some("snap")
    );

    // A snapshot with clones cannot go.
    assert_eq!(
        c.remove_volume(MAPPER, "snap").unwrap_err().code,
        ErrorCode::InUse
    );

    // Hashing the snapshot (content objects stored through blockerb's
    // HASH of request data) changes none of its bytes.
    let h = c.hash_snapshot(MAPPER, "snap").unwrap();
    assert!(h.objects >= 3, "{h:?}");
    assert!(c.volume_info(MAPPER, "snap").unwrap().hashed);
    assert!(read_volume(&c, MAPPER, "snap", 0, SIZE) == expect_snap);
    assert!(read_volume(&c, MAPPER, "clone", 0, SIZE) == expect_clone);

    // Another host: the volume host-a writes is locked, named by owner.
    {
        let _other = start_mapperd(&tmp, MAPPER_B, "host-b");
        let e = c.open_volume(MAPPER_B, "vol", true).unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        assert!(e.detail.contains("host-a"), "{e}");
        assert_eq!(
            c.map_write(MAPPER_B, "vol", 0, 10).unwrap_err().code,
            ErrorCode::Locked
        );
        // Reading needs no lock.
        assert!(read_volume(&c, MAPPER_B, "vol", 0, SIZE) == expect_vol);
        c.open_volume(MAPPER, "vol", true).unwrap();
    }

    // Rename (refused while open here: the writes opened it) and resize.
    assert_eq!(
        c.rename_volume(MAPPER, "clone", "clone2").unwrap_err().code,
        ErrorCode::Busy
    );
    c.close_volume(MAPPER, "clone").unwrap();
    c.rename_volume(MAPPER, "clone", "clone2").unwrap();
    assert_eq!(
        c.volume_info(MAPPER, "clone").unwrap_err().code,
        ErrorCode::NotFound
    );
    c.resize_volume(MAPPER, "clone2", 2 * SIZE, false).unwrap();
    assert_eq!(c.volume_info(MAPPER, "clone2").unwrap().size, 2 * SIZE);
    assert_eq!(read_volume(&c, MAPPER, "clone2", SIZE, 4096), vec![0; 4096]);

    // kill -9 the mapper: everything committed survives its restart.
    mapperd.kill9();
    assert_eq!(c.ping(MAPPER).unwrap_err().code, ErrorCode::PeerDied);
    let _mapperd = start_mapperd(&tmp, MAPPER, "host-a");
    assert!(read_volume(&c, MAPPER, "vol", 0, SIZE) == expect_vol);
    assert!(read_volume(&c, MAPPER, "snap", 0, SIZE) == expect_snap);
    assert!(read_volume(&c, MAPPER, "clone2", 0, SIZE) == expect_clone);
    // Same host id: it can write the volume again.
    let e = pattern(8 << 10, 4);
    write_volume(&c, MAPPER, "vol", 0, &e);
    expect_vol[..e.len()].copy_from_slice(&e);
    assert!(read_volume(&c, MAPPER, "vol", 0, SIZE) == expect_vol);
    c.close_volume(MAPPER, "vol").unwrap();
}

/// Issue 14: "The mapper trusts vlmcd's gate". A SNAPSHOT, ROLLBACK or
/// RESIZE (any barrier) sent straight to mapperd would capture writes
/// still in flight in vlmcd; the mapper refuses a barrier that did not
/// pass vlmcd's drain (no DRAINED mark).
#[test]
fn barriers_sent_straight_to_mapperd_are_refused() {
    let tmp = TempSegment::new("mapperd-gate");
    let _seg = segment(&tmp);
    let _b = Proc::start(memory_blocker(&tmp.arg(), BLOCKERB));
    let _m = Proc::start(memory_blocker(&tmp.arg(), BLOCKERM));
    let _mapperd = start_mapperd(&tmp, MAPPER, "host-a");
    let c = Client::connect(&tmp.arg())
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    c.create_volume(MAPPER, "vol", SIZE, Some(OBJ)).unwrap();
    let refused = [
        c.snapshot(MAPPER, "vol", "snap").unwrap_err(),
        c.resize_volume(MAPPER, "vol", 2 * SIZE, false).unwrap_err(),
        c.rename_volume(MAPPER, "vol", "vol2").unwrap_err(),
        c.remove_volume(MAPPER, "vol").unwrap_err(),
    ];
    for e in refused {
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
        assert!(e.detail.contains("vlmcd"), "{e}");
    }
    let info = c.volume_info(MAPPER, "vol").unwrap();
    assert_eq!(info.size, SIZE, "nothing changed");
    assert_eq!(
        c.volume_info(MAPPER, "snap").unwrap_err().code,
        ErrorCode::NotFound
    );
    // Marked as drained (what vlmcd does), the same barrier goes through.
    let composer = c.drained();
    composer.snapshot(MAPPER, "vol", "snap").unwrap();
    assert!(composer.volume_info(MAPPER, "snap").unwrap().readonly);
}

/// `--cache-mib` sizes the decoded map-chunk cache: with 0 every map
/// lookup reads the volume's chunk from the map blocker again, with 1 MiB
/// repeated lookups of an open volume are answered without it.
#[test]
fn cache_mib_sizes_the_chunk_cache() {
    const READS: u64 = 20;
    let lookups = |cache_mib: u64| -> u64 {
        let tmp = TempSegment::new(&format!("mapperd-cache-{cache_mib}"));
        let _seg = segment(&tmp);
        let _b = Proc::start(memory_blocker(&tmp.arg(), BLOCKERB));
        let _m = Proc::start(memory_blocker(&tmp.arg(), BLOCKERM));
        let _mapperd = Proc::start(Mapper {
            cache_mib: Some(cache_mib),
            ..mapper(&tmp.arg(), MAPPER, "host-a")
        });
        let c = Client::connect(&tmp.arg())
            .unwrap()
            .with_timeout(Duration::from_secs(10));
        c.create_volume(MAPPER, "vol", SIZE, Some(OBJ)).unwrap();
        let data = pattern(SIZE as usize, 3);
        // Written (and so open, its header held under its lock).
        write_volume(&c, MAPPER, "vol", 0, &data);
        assert!(read_volume(&c, MAPPER, "vol", 0, SIZE) == data);
        // The writes' entries are in the journal and their chunks in
        // memory until a checkpoint: a snapshot (the volume stays open)
        // writes them, and lookups go through the cache from then on.
        let c = c.drained();
        c.snapshot(MAPPER, "vol", "snap").unwrap();
        let before = c.stats(BLOCKERM).unwrap().accepted;
        for _ in 0..READS {
            let ext = c.map_read(MAPPER, "vol", 0, SIZE).unwrap();
            assert_eq!(ext.len() as u64, SIZE / OBJ);
        }
        // Minus our own STATS.
        c.stats(BLOCKERM).unwrap().accepted - before - 1
    };
    let uncached = lookups(0);
    assert!(
        uncached >= READS,
        "--cache-mib 0: {uncached} requests to the map blocker for {READS} lookups"
    );
    let cached = lookups(1);
    assert!(
        cached < READS / 4,
        "--cache-mib 1: {cached} requests to the map blocker for {READS} lookups"
    );
}
