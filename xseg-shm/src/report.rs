//! A snapshot of a segment for `xseg report`.

use crate::layout::{LAYOUT_VERSION, MIN_BUFFER_SHIFT};
use crate::pool::Phase;
use crate::segment::Segment;
use crate::sync::Ordering;
use crate::{binding, buffers, pool, sys};

/// One buffer size class.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BufferClassReport {
    /// Bytes per buffer.
    pub size: u64,
    /// Buffers in the class.
    pub count: u32,
    /// Buffers free now.
    pub free: u32,
}

/// One port.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PortReport {
    /// Port number.
    pub port: u32,
    /// `static` or `dynamic`.
    pub kind: &'static str,
    /// `bound`, `dead` (owner died, needs recovery), `recovering` or `free`.
    pub state: &'static str,
    /// Owner pid (0 when free).
    pub pid: u32,
    /// Binding generation.
    pub generation: u32,
    /// Requests waiting in its request ring.
    pub requests_queued: u64,
    /// High-water mark of the request ring.
    pub requests_queued_high_water: u64,
    /// Replies waiting in its reply ring.
    pub replies_queued: u64,
    /// High-water mark of the reply ring.
    pub replies_queued_high_water: u64,
    /// Descriptors it holds as source.
    pub requests_in_use: u32,
    /// High-water mark of that.
    pub requests_high_water: u32,
    /// Buffers attached to its descriptors.
    pub buffers_in_use: u32,
    /// High-water mark of that.
    pub buffers_high_water: u32,
    /// Times an operation found a pool empty or a ring full.
    pub busy_events: u64,
    /// Times it was recovered.
    pub recoveries: u64,
}

/// The whole segment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentReport {
    /// Name or path.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Layout version.
    pub layout_version: u32,
    /// Protocol version.
    pub protocol_version: u32,
    /// Ports in all.
    pub ports: u32,
    /// Static ports.
    pub static_ports: u32,
    /// Descriptors in all.
    pub requests: u32,
    /// Descriptors free now.
    pub requests_free: u32,
    /// Descriptors by phase: owned, queued, replied.
    pub requests_owned: u32,
    /// In request rings.
    pub requests_queued: u32,
    /// In reply rings.
    pub requests_replied: u32,
    /// Buffer classes.
    pub buffers: Vec<BufferClassReport>,
    /// Ports that were ever bound or hold queued work.
    pub port_list: Vec<PortReport>,
}

impl Segment {
    /// Takes a snapshot (racy while peers run, exact when they are idle).
    pub fn report(&self) -> SegmentReport {
        let l = self.layout();
        let mut counts = [0u32; 4];
        for i in 0..l.nr_requests {
            let t = pool::peek(&self.request(i).expect("in range").ticket);
            if let Some(phase) = t.phase {
                counts[phase as usize] += 1;
            }
        }
        let buffers = l
            .buffer_counts
            .iter()
            .enumerate()
            .map(|(class, &count)| BufferClassReport {
                size: 1 << (MIN_BUFFER_SHIFT as usize + class),
                count,
                free: (0..count)
                    .filter(|&i| buffers::is_free(self.buffer_owner(class, i).expect("in range")))
                    .count() as u32,
            })
            .collect();
        let mut port_list = Vec::new();
        for n in 0..l.nr_ports {
            let p = self.port(n).expect("in range");
            let (b, start) = binding::load_with_start(&p.binding, &p.owner_id);
            let (rq, rp) = (self.ring(n, 0).len(), self.ring(n, 1).len());
            if b.gen == 0 && b.pid == 0 && rq == 0 && rp == 0 {
                continue;
            }
            let alive = b.pid != 0 && sys::is_alive(b.pid, start);
            let state = match (b.pid, b.recovering, alive) {
                (0, _, _) => "free",
                (_, true, true) => "recovering",
                (_, _, true) => "bound",
                _ => "dead",
            };
            port_list.push(PortReport {
                port: n,
                kind: if n < l.static_ports {
                    "static"
                } else {
                    "dynamic"
                },
                state,
                pid: b.pid,
                generation: b.gen,
                requests_queued: rq,
                requests_queued_high_water: p.request_tail.0.high_water.load(Ordering::Relaxed),
                replies_queued: rp,
                replies_queued_high_water: p.reply_tail.0.high_water.load(Ordering::Relaxed),
                requests_in_use: p.requests_in_use.load(Ordering::Relaxed),
                requests_high_water: p.requests_high_water.load(Ordering::Relaxed),
                buffers_in_use: p.buffers_in_use.load(Ordering::Relaxed),
                buffers_high_water: p.buffers_high_water.load(Ordering::Relaxed),
                busy_events: p.busy_events.load(Ordering::Relaxed),
                recoveries: p.recoveries.load(Ordering::Relaxed),
            });
        }
        SegmentReport {
            name: self.name().to_string(),
            size: l.total,
            layout_version: LAYOUT_VERSION,
            protocol_version: self.protocol_version(),
            ports: l.nr_ports,
            static_ports: l.static_ports,
            requests: l.nr_requests,
            requests_free: counts[Phase::Pooled as usize],
            requests_owned: counts[Phase::Owned as usize],
            requests_queued: counts[Phase::Queued as usize],
            requests_replied: counts[Phase::Replied as usize],
            buffers,
            port_list,
        }
    }
}
