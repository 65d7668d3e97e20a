//! Helpers shared by this crate's integration tests.

// Playing a killed or hostile process means writing the segment's words
// from outside the crate, with `std`'s atomics: the crate's rule (atomics
// from its `sync` module, see `clippy.toml`) is for the transport's own code.
#![allow(clippy::disallowed_types, dead_code)]

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use xseg_shm::{Segment, SegmentConfig, SegmentName};

/// A small segment at `t` (8 ports, 4 static) with `requests` descriptors
/// and `buffers` buffers per size class.
pub fn segment(t: &Tmp, requests: u32, buffers: Vec<u32>) -> Arc<Segment> {
    let config = SegmentConfig {
        ports: 8,
        static_ports: 4,
        requests,
        buffer_counts: buffers,
        ..Default::default()
    };
    Arc::new(Segment::create(&t.name(), &config).unwrap())
}

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

/// Raw access to the segment, to play a killed process.
pub struct Raw {
    map: memmap2::MmapRaw,
}

impl Raw {
    pub fn new(t: &Tmp) -> Raw {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&t.0)
            .unwrap();
        Raw {
            map: memmap2::MmapRaw::map_raw(&f).unwrap(),
        }
    }
    pub fn u64(&self, off: u64) -> &AtomicU64 {
        assert!(off as usize + 8 <= self.map.len() && off.is_multiple_of(8));
        // SAFETY: in bounds and aligned (checked above), the mapping lives
        // as long as `self`, and any bits are a valid AtomicU64.
        unsafe { &*self.map.as_mut_ptr().add(off as usize).cast() }
    }
    pub fn u32(&self, off: u64) -> &AtomicU32 {
        assert!(off as usize + 4 <= self.map.len() && off.is_multiple_of(4));
        // SAFETY: as in `u64`.
        unsafe { &*self.map.as_mut_ptr().add(off as usize).cast() }
    }
    /// Makes port `n` look owned by a process that died.
    pub fn kill_owner(&self, seg: &Segment, n: u32) {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        let binding = self.u64(seg.layout().ports_off + u64::from(n) * 768);
        let gen = binding.load(Ordering::SeqCst) >> 32;
        binding.store((gen << 32) | u64::from(pid), Ordering::SeqCst);
        // The owner's identity (pid and start time) as the dead process
        // left it: not this process's.
        self.u64(seg.layout().ports_off + u64::from(n) * 768 + 8)
            .store((u64::from(pid) << 32) | 1, Ordering::SeqCst);
    }

    /// `len` words from `off` on.
    pub fn u64s(&self, off: u64, len: usize) -> &[AtomicU64] {
        assert!(off as usize + 8 * len <= self.map.len() && off.is_multiple_of(8));
        // SAFETY: as in `u64`, for `len` words.
        unsafe { std::slice::from_raw_parts(self.map.as_mut_ptr().add(off as usize).cast(), len) }
    }

    /// Ring `which` (0 requests, 1 replies) of port `n`, to push into as a
    /// misbehaving peer would.
    pub fn ring(&self, seg: &Segment, n: u32, which: u32) -> xseg_shm::ring::Ring<'_> {
        let l = seg.layout();
        let port = l.ports_off + u64::from(n) * 768;
        let (head, tail) = if which == 0 { (256, 384) } else { (512, 640) };
        xseg_shm::ring::Ring {
            head: self.u64(port + head),
            tail: self.u64(port + tail),
            head_seen: self.u64(port + tail + 16),
            slots: self.u64s(l.ring_off(n, which), l.ring_capacity as usize),
        }
    }

    /// Descriptor `i`'s ticket word.
    pub fn ticket(&self, seg: &Segment, i: u32) -> &AtomicU64 {
        self.u64(seg.layout().requests_off + u64::from(i) * 384)
    }

    /// Descriptor `i`'s current destination.
    pub fn effective_dst(&self, seg: &Segment, i: u32) -> &AtomicU32 {
        self.u32(seg.layout().requests_off + u64::from(i) * 384 + 52)
    }

    /// Port `n`'s binding word.
    pub fn binding(&self, seg: &Segment, n: u32) -> &AtomicU64 {
        self.u64(seg.layout().ports_off + u64::from(n) * 768)
    }
}
