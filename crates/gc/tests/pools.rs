//! Pools shared with the original or with Pithos, and accounting. Each
//! test failed before its fix.

use std::sync::Arc;

use archipelago_gc::{usage, GcError};
use archipelago_mapper::Mapper;
use archipelago_protocol::names::is_content_name;
use archipelago_store::{MemoryStore, ObjectStore};

const OS: u64 = 4096;

/// `vlmc du` of a volume naming a content object that is gone reports it
/// as an error naming the object (it used to count it as 0 bytes).
#[test]
fn du_reports_a_missing_data_object_by_name() {
    let maps = Arc::new(MemoryStore::new());
    let data = Arc::new(MemoryStore::new());
    let m = Mapper::new(maps.clone(), data.clone(), "h".into()).with_hash_threads(1);
    m.create("v", 2 * OS, Some(OS)).unwrap();
    let exts = m.map_write("v", 0, OS).unwrap();
    for e in &exts {
        data.write(e.object.as_deref().unwrap(), 0, &[5; OS as usize], true)
            .unwrap();
    }
    let pending: Vec<u64> = exts.iter().filter(|e| e.pending).map(|e| e.index).collect();
    m.commit_writes("v", &pending).unwrap();
    m.snapshot("v", "s").unwrap();
    m.hash("s").unwrap();
    let content = data
        .list("")
        .unwrap()
        .into_iter()
        .find(|n| is_content_name(n.as_bytes()))
        .unwrap();
    assert_eq!(
        usage(&*maps, &*data, Some("s")).unwrap()[0].referenced_bytes,
        OS
    );
    data.delete(&content).unwrap();
    let e = usage(&*maps, &*data, Some("s")).unwrap_err();
    assert!(matches!(e, GcError::MissingObject { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&content) && msg.contains('s'), "{msg}");
}
