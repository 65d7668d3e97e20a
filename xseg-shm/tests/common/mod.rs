//! Helpers shared by this crate's integration tests.

use std::path::PathBuf;

use xseg_shm::SegmentName;

/// A private segment path for one test, removed on drop.
pub struct Tmp(pub PathBuf);

impl Tmp {
    /// A fresh path for test `test`.
    pub fn new(test: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("xseg-unit-{}-{test}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Tmp(p)
    }

    /// The path as a segment name.
    pub fn name(&self) -> SegmentName {
        SegmentName::parse(self.0.to_str().unwrap()).unwrap()
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
