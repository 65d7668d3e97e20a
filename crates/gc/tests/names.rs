//! A removed volume's name can be used again, and removed headers go once
//! nothing needs them. Each test failed before its fix.

use std::sync::Arc;

use archipelago_gc::{collect, GcOptions};
use archipelago_mapper::Mapper;
use archipelago_protocol::ErrorCode;
use archipelago_store::{MemoryStore, ObjectStore};

const OS: u64 = 4096;

fn setup() -> (Arc<MemoryStore>, Arc<MemoryStore>, Mapper) {
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(MemoryStore::new());
    let m = Mapper::new(maps.clone(), data.clone(), "h".into());
    (maps, data, m)
}

fn gc(maps: &MemoryStore, data: &MemoryStore) {
    let opts = GcOptions {
        host: "h".into(),
        ..GcOptions::default()
    };
    collect(maps, data, &opts, &mut |_, _, _| {}).unwrap();
}

fn write(m: &Mapper, data: &dyn ObjectStore, name: &str, byte: u8) {
    let exts = m.map_write(name, 0, OS).unwrap();
    for e in &exts {
        data.write(e.object.as_deref().unwrap(), 0, &[byte; OS as usize], true)
            .unwrap();
    }
    let pending: Vec<u64> = exts.iter().filter(|e| e.pending).map(|e| e.index).collect();
    if !pending.is_empty() {
        m.commit_writes(name, &pending).unwrap();
    }
}

/// `vlmc remove vm1; vlmc create vm1` works (and snapshot, clone and
/// rename onto a removed name too), keeping the removed lineage.
#[test]
fn a_removed_name_can_be_used_again() {
    let (_maps, data, m) = setup();
    m.create("vm1", OS, Some(OS)).unwrap();
    write(&m, &*data, "vm1", 1);
    m.snapshot("vm1", "s1").unwrap();
    m.clone_volume("s1", "c1", None).unwrap();
    m.close("vm1").unwrap();
    let old = m.info("vm1").unwrap().volume_id;
    m.remove("vm1").unwrap();
    m.create("vm1", 2 * OS, Some(OS)).unwrap();
    let info = m.info("vm1").unwrap();
    assert!(!info.removed && info.size == 2 * OS && info.volume_id != old);
    // The removed volume is still in the lineage (its id, removed).
    let lineage = m.lineage().unwrap();
    assert!(
        lineage
            .iter()
            .any(|r| r.node.volume_id == old && r.node.removed && !r.node.readonly),
        "{lineage:?}"
    );
    // Snapshot, clone and rename onto removed names.
    m.snapshot("vm1", "s2").unwrap();
    m.remove("s2").unwrap();
    m.snapshot("vm1", "s2").unwrap();
    m.remove("c1").unwrap();
    m.clone_volume("s1", "c1", None).unwrap();
    m.create("other", OS, Some(OS)).unwrap();
    m.remove("vm1").unwrap();
    m.rename("other", "vm1").unwrap();
    // A live name is still refused.
    assert_eq!(
        m.create("vm1", OS, Some(OS)).unwrap_err().code,
        ErrorCode::Exists
    );
}

/// A collection deletes a removed header once no clone, snapshot or
/// lineage record needs it: `vlmc list --all` stops growing.
#[test]
fn removed_headers_go_once_nothing_needs_them() {
    let (maps, data, m) = setup();
    m.create("v", OS, Some(OS)).unwrap();
    write(&m, &*data, "v", 1);
    m.snapshot("v", "s1").unwrap();
    m.snapshot("v", "s2").unwrap();
    m.close("v").unwrap();
    // s1 links s2 (and so v) to the past: kept while they live.
    m.remove("s1").unwrap();
    m.clone_volume("s2", "c", None).unwrap();
    // v's writable header: its snapshot s2 lives (and c through it).
    m.remove("v").unwrap();
    gc(&maps, &data);
    let names = maps.list("").unwrap();
    assert!(
        names.contains(&"v".to_owned()) && names.contains(&"s1".to_owned()),
        "{names:?}"
    );
    m.remove("c").unwrap();
    m.remove("s2").unwrap();
    gc(&maps, &data);
    // Nothing is left but the collector's own object.
    assert_eq!(maps.list("").unwrap(), ["archip_gc"]);
    assert!(data.list("").unwrap().is_empty());
    // A removed name reused, then removed again: both go.
    m.create("x", OS, Some(OS)).unwrap();
    m.remove("x").unwrap();
    m.create("x", OS, Some(OS)).unwrap();
    m.remove("x").unwrap();
    gc(&maps, &data);
    assert_eq!(maps.list("").unwrap(), ["archip_gc"]);
}
