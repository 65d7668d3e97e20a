//! The shared-memory format: `#[repr(C)]` types and where each lives.
//!
//! Everything in the segment is addressed by offset from its start or by
//! index; nothing holds a pointer, so every process may map the segment at
//! a different address. All multi-byte fields are native-endian (the
//! segment never leaves the host). Offsets are *derived* from the sizes in
//! the header by [`Layout::compute`], the single source of truth, which the
//! creator and every attacher run alike; an attacher checks that the file
//! is exactly as long as the layout says, and maps exactly that length.
//!
//! `docs/design.md` (section 2) joins this format to the protocol carried
//! in a descriptor and to the map format, with the version history; its
//! diagrams of the header and the descriptor are checked against the
//! structs below by a test of this module.
//!
//! | region | offset | size |
//! |---|---|---|
//! | [`SegmentHeader`] | 0 | 4096 (page 0, rest reserved) |
//! | ports: [`PortShm`] × `nr_ports` | 4096 | 768 each |
//! | request descriptors: [`RequestShm`] × `nr_requests` | next 4096 | 384 each |
//! | ring slots: `u64` × `ring_capacity`, two rings per port (requests, replies) | next 4096 | 16 × capacity per port |
//! | buffer owners: `u32` per buffer, class by class | next 4096 | 4 per buffer |
//! | buffer data, class by class, each class 4096-aligned | next 4096 | size × count per class |
//!
//! Header (golden bytes in the tests pin it):
//!
//! | off | field | type |
//! |---|---|---|
//! | 0 | magic `ARCHXSEG` | `[u8; 8]` |
//! | 8 | layout version ([`LAYOUT_VERSION`]) | u32 |
//! | 12 | ready word, stored last ([`READY`]) | u32 |
//! | 16 | protocol version (set by the layer above) | u32 |
//! | 20 | file mode it was created with | u32 |
//! | 24 | segment size in bytes | u64 |
//! | 32 | number of ports | u32 |
//! | 36 | number of static ports (dynamic ones follow) | u32 |
//! | 40 | number of request descriptors | u32 |
//! | 44 | ring capacity (power of two ≥ requests) | u32 |
//! | 48 | number of buffer size classes | u32 |
//! | 52 | log2 of the smallest buffer size | u32 |
//! | 56 | buffer count per class | `[u32; 16]` |
//! | 120 | creator pid | u32 |
//! | 124 | reserved | u32 |
//! | 128 | creation time, Unix seconds | u64 |
//! | 136 | timestamp clock: TSC kHz, or 0 for monotonic ns | u64 |

use crate::sync::shm::{AtomicU32, AtomicU64};
use core::mem::{align_of, size_of};

use crate::doorbell::Doorbell;

/// First bytes of every segment.
pub const MAGIC: [u8; 8] = *b"ARCHXSEG";
/// Version of this layout; bumped on any change to the types below.
pub const LAYOUT_VERSION: u32 = 2;
/// Value of the ready word once the creator has finished.
pub const READY: u32 = 0x5245_4459; // "READY" in spirit
/// Bytes reserved for the header.
pub const HEADER_SIZE: u64 = 4096;
/// Most buffer size classes a segment can have.
pub const MAX_BUFFER_CLASSES: usize = 16;
/// Smallest buffer size, log2 (4 KiB).
pub const MIN_BUFFER_SHIFT: u32 = 12;
/// Longest target name a descriptor carries inline.
pub const MAX_TARGET_LEN: usize = 256;
/// Most ports a segment can have (port numbers fit the ticket's holder field).
pub const MAX_PORTS: u32 = 0xFFFF;
/// Most buffers in one class (indexes fit a buffer handle's 24 bits).
pub const MAX_BUFFERS_PER_CLASS: u32 = 0xFF_FFFF;
/// Most request descriptors (indexes fit a ring value).
pub const MAX_REQUESTS: u32 = crate::ring::MAX_VALUE;

const PAGE: u64 = 4096;

/// The segment header at offset 0.
#[repr(C)]
pub struct SegmentHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub layout_version: u32,
    /// [`READY`] once initialised; stored last with Release.
    pub ready: AtomicU32,
    /// Version of the protocol spoken over this segment (layer above).
    pub protocol_version: u32,
    /// File mode the segment was created with.
    pub mode: u32,
    /// Total bytes.
    pub segment_size: u64,
    /// Ports `0..nr_ports`.
    pub nr_ports: u32,
    /// Ports `0..static_ports` are bound by number; the rest are dynamic.
    pub static_ports: u32,
    /// Request descriptors.
    pub nr_requests: u32,
    /// Slots per ring.
    pub ring_capacity: u32,
    /// Buffer size classes in use.
    pub nr_buffer_classes: u32,
    /// log2 of the class-0 buffer size.
    pub min_buffer_shift: u32,
    /// Buffers per class.
    pub buffer_counts: [u32; MAX_BUFFER_CLASSES],
    /// Pid of the creating process (informational).
    pub creator_pid: u32,
    /// Zero.
    pub reserved: u32,
    /// Creation time in Unix seconds (informational).
    pub created_unix: u64,
    /// Timestamp clock: TSC frequency in kHz, or 0 for monotonic ns.
    pub clock_khz: u64,
}

/// A value alone on its own pair of cache lines (128 bytes: x86 prefetches
/// lines in pairs). Our own type rather than crossbeam's `CachePadded`
/// because a shared-memory layout needs `repr(C)`.
#[repr(C, align(128))]
pub struct Padded<T>(pub T);

/// The producer side of a ring: its tail and its high-water mark.
#[repr(C)]
pub struct RingTail {
    /// Next position to push.
    pub(crate) tail: AtomicU64,
    /// Deepest the ring has been (sampled).
    pub(crate) high_water: AtomicU64,
    /// The producers' copy of the ring's head (see `ring.rs`).
    pub(crate) head_seen: AtomicU64,
}

/// One port (mailbox) in the segment.
#[repr(C, align(128))]
pub struct PortShm {
    /// Owner record: `generation << 32 | flags_and_pid` (see `binding.rs`).
    pub(crate) binding: AtomicU64,
    /// Identity of the owner or recoverer, `pid << 32 | low 32 bits of
    /// its start time` (`/proc` clock ticks), written before the binding
    /// CAS; trusted only when its pid is the binding's (see `binding.rs`).
    pub(crate) owner_id: AtomicU64,
    /// Descriptors taken by this port and not yet put back.
    pub(crate) requests_in_use: AtomicU32,
    /// High-water mark of `requests_in_use`.
    pub(crate) requests_high_water: AtomicU32,
    /// Buffers held by this port's descriptors.
    pub(crate) buffers_in_use: AtomicU32,
    /// High-water mark of `buffers_in_use`.
    pub(crate) buffers_high_water: AtomicU32,
    /// Times a get, buffer allocation or push failed with `Busy`.
    pub(crate) busy_events: AtomicU64,
    /// Times this port was recovered after its owner died.
    pub(crate) recoveries: AtomicU64,
    /// The consumer's doorbell.
    pub(crate) doorbell: Padded<Doorbell>,
    /// Request ring: next position the owner accepts.
    pub(crate) request_head: Padded<AtomicU64>,
    /// Request ring: producers' side.
    pub(crate) request_tail: Padded<RingTail>,
    /// Reply ring: next position the owner receives.
    pub(crate) reply_head: Padded<AtomicU64>,
    /// Reply ring: producers' side.
    pub(crate) reply_tail: Padded<RingTail>,
}

/// A request descriptor. Fields are atomics so that a misbehaving peer can
/// corrupt values but never cause undefined behaviour in ours; only the
/// current holder (see the ticket) writes them, with Relaxed stores that
/// the Release store of the ticket (and the ring push) publishes to the
/// next holder's Acquire load of the ticket.
#[repr(C, align(64))]
pub struct RequestShm {
    /// Phase, holder port and serial (see `pool.rs`).
    pub(crate) ticket: AtomicU64,
    /// Operation code (defined by the layer above).
    pub(crate) op: AtomicU32,
    /// Flags (defined by the layer above).
    pub(crate) flags: AtomicU32,
    /// Byte offset in the target.
    pub(crate) offset: AtomicU64,
    /// Bytes requested.
    pub(crate) size: AtomicU64,
    /// Bytes serviced.
    pub(crate) serviced: AtomicU64,
    /// Port that got the descriptor; replies go there.
    pub(crate) src_port: AtomicU32,
    /// Generation of the source port's binding when it got the descriptor.
    pub(crate) src_gen: AtomicU32,
    /// Destination first submitted to.
    pub(crate) dst_port: AtomicU32,
    /// Current destination (changed by forward).
    pub(crate) effective_dst: AtomicU32,
    /// 0 pending, 1 served, 2 failed.
    pub(crate) status: AtomicU32,
    /// Error code when failed.
    pub(crate) error: AtomicU32,
    /// Buffer handle (`class << 24 | index`) or `u32::MAX`.
    pub(crate) buffer: AtomicU32,
    /// Length of the inline target name.
    pub(crate) target_len: AtomicU32,
    /// Bytes of the buffer that hold data.
    pub(crate) data_len: AtomicU64,
    /// Opaque value for the submitter.
    pub(crate) tag: AtomicU64,
    /// Segment clock ticks when submitted ([`crate::sys::Clock`]).
    pub(crate) t_submit: AtomicU64,
    /// Segment clock ticks when accepted.
    pub(crate) t_accept: AtomicU64,
    /// Segment clock ticks when responded.
    pub(crate) t_complete: AtomicU64,
    /// Zero.
    pub(crate) reserved: [AtomicU64; 2],
    /// Target name bytes, 8 per word.
    pub(crate) target: [AtomicU64; MAX_TARGET_LEN / 8],
}

impl RequestShm {
    /// A descriptor of zeros outside the segment: what a port shows for a
    /// request token it does not hold (its writes reach no one).
    pub(crate) const fn zeroed() -> RequestShm {
        // Each use of these constants is a fresh atomic, as intended.
        #[allow(clippy::declare_interior_mutable_const)]
        const Z64: AtomicU64 = AtomicU64::new(0);
        #[allow(clippy::declare_interior_mutable_const)]
        const Z32: AtomicU32 = AtomicU32::new(0);
        RequestShm {
            ticket: Z64,
            op: Z32,
            flags: Z32,
            offset: Z64,
            size: Z64,
            serviced: Z64,
            src_port: Z32,
            src_gen: Z32,
            dst_port: Z32,
            effective_dst: Z32,
            status: Z32,
            error: Z32,
            buffer: AtomicU32::new(u32::MAX),
            target_len: Z32,
            data_len: Z64,
            tag: Z64,
            t_submit: Z64,
            t_accept: Z64,
            t_complete: Z64,
            reserved: [Z64; 2],
            target: [Z64; MAX_TARGET_LEN / 8],
        }
    }
}

const _: () = {
    assert!(size_of::<SegmentHeader>() == 144);
    assert!(size_of::<SegmentHeader>() as u64 <= HEADER_SIZE);
    assert!(size_of::<Doorbell>() == 8);
    assert!(size_of::<PortShm>() == 768);
    assert!(align_of::<PortShm>() == 128);
    assert!(size_of::<RequestShm>() == 384);
    assert!(align_of::<RequestShm>() == 64);
};

/// Where everything lives, derived from the header's sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Ports.
    pub nr_ports: u32,
    /// Static ports.
    pub static_ports: u32,
    /// Request descriptors.
    pub nr_requests: u32,
    /// Slots per ring.
    pub ring_capacity: u32,
    /// Buffers per class (length = number of classes).
    pub buffer_counts: Vec<u32>,
    /// Offset of port 0.
    pub ports_off: u64,
    /// Offset of descriptor 0.
    pub requests_off: u64,
    /// Offset of the first ring slot.
    pub rings_off: u64,
    /// Offset of each class's owner array.
    pub owners_off: Vec<u64>,
    /// Offset of each class's data.
    pub data_off: Vec<u64>,
    /// Total bytes.
    pub total: u64,
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

impl Layout {
    /// Computes the layout; `None` if a size is out of bounds or the total
    /// overflows.
    pub fn compute(
        nr_ports: u32,
        static_ports: u32,
        nr_requests: u32,
        buffer_counts: &[u32],
    ) -> Option<Layout> {
        if nr_ports == 0
            || nr_ports > MAX_PORTS
            || static_ports > nr_ports
            || nr_requests == 0
            || nr_requests > MAX_REQUESTS
            || buffer_counts.len() > MAX_BUFFER_CLASSES
            || buffer_counts.iter().any(|&c| c > MAX_BUFFERS_PER_CLASS)
        {
            return None;
        }
        let ring_capacity = nr_requests.next_power_of_two().max(2);
        let ports_off = HEADER_SIZE;
        let requests_off = align_up(
            ports_off + u64::from(nr_ports) * size_of::<PortShm>() as u64,
            PAGE,
        );
        let rings_off = align_up(
            requests_off + u64::from(nr_requests) * size_of::<RequestShm>() as u64,
            PAGE,
        );
        let slots = 2u64 * u64::from(nr_ports) * u64::from(ring_capacity);
        let mut off = align_up(rings_off.checked_add(slots.checked_mul(8)?)?, PAGE);
        let mut owners_off = Vec::with_capacity(buffer_counts.len());
        for &c in buffer_counts {
            owners_off.push(off);
            off = align_up(off + 4 * u64::from(c), 64);
        }
        off = align_up(off, PAGE);
        let mut data_off = Vec::with_capacity(buffer_counts.len());
        for (class, &c) in buffer_counts.iter().enumerate() {
            data_off.push(off);
            let size = 1u64 << (MIN_BUFFER_SHIFT as usize + class);
            off = off.checked_add(size.checked_mul(u64::from(c))?)?;
            off = align_up(off, PAGE);
        }
        Some(Layout {
            nr_ports,
            static_ports,
            nr_requests,
            ring_capacity,
            buffer_counts: buffer_counts.to_vec(),
            ports_off,
            requests_off,
            rings_off,
            owners_off,
            data_off,
            total: off,
        })
    }

    /// Size in bytes of buffers of `class`.
    pub fn class_size(&self, class: usize) -> u64 {
        1u64 << (MIN_BUFFER_SHIFT as usize + class)
    }

    /// Offset of the first slot of ring `ring` (0 = requests, 1 = replies)
    /// of `port`.
    pub fn ring_off(&self, port: u32, ring: u32) -> u64 {
        self.rings_off + (2 * u64::from(port) + u64::from(ring)) * u64::from(self.ring_capacity) * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn header_field_offsets_match_the_documented_table() {
        assert_eq!(offset_of!(SegmentHeader, magic), 0);
        assert_eq!(offset_of!(SegmentHeader, layout_version), 8);
        assert_eq!(offset_of!(SegmentHeader, ready), 12);
        assert_eq!(offset_of!(SegmentHeader, protocol_version), 16);
        assert_eq!(offset_of!(SegmentHeader, mode), 20);
        assert_eq!(offset_of!(SegmentHeader, segment_size), 24);
        assert_eq!(offset_of!(SegmentHeader, nr_ports), 32);
        assert_eq!(offset_of!(SegmentHeader, static_ports), 36);
        assert_eq!(offset_of!(SegmentHeader, nr_requests), 40);
        assert_eq!(offset_of!(SegmentHeader, ring_capacity), 44);
        assert_eq!(offset_of!(SegmentHeader, nr_buffer_classes), 48);
        assert_eq!(offset_of!(SegmentHeader, min_buffer_shift), 52);
        assert_eq!(offset_of!(SegmentHeader, buffer_counts), 56);
        assert_eq!(offset_of!(SegmentHeader, creator_pid), 120);
        assert_eq!(offset_of!(SegmentHeader, created_unix), 128);
        assert_eq!(offset_of!(SegmentHeader, clock_khz), 136);
    }

    #[test]
    fn descriptor_and_port_offsets_are_pinned() {
        assert_eq!(offset_of!(RequestShm, ticket), 0);
        assert_eq!(offset_of!(RequestShm, offset), 16);
        assert_eq!(offset_of!(RequestShm, src_port), 40);
        assert_eq!(offset_of!(RequestShm, status), 56);
        assert_eq!(offset_of!(RequestShm, buffer), 64);
        assert_eq!(offset_of!(RequestShm, tag), 80);
        assert_eq!(offset_of!(RequestShm, t_complete), 104);
        assert_eq!(offset_of!(RequestShm, target), 128);
        assert_eq!(offset_of!(PortShm, doorbell), 128);
        assert_eq!(offset_of!(PortShm, request_head), 256);
        assert_eq!(offset_of!(PortShm, request_tail), 384);
        assert_eq!(offset_of!(PortShm, reply_head), 512);
        assert_eq!(offset_of!(PortShm, reply_tail), 640);
    }

    /// `docs/design.md`, read at compile time (editing it rebuilds this).
    const DESIGN: &str = include_str!("../../docs/design.md");

    /// The lines `OFFSET SIZE FIELD ...` of the diagram after
    /// `<!-- layout: TYPE -->` in the design document.
    fn documented(ty: &str) -> Vec<(usize, usize, String)> {
        let marker = format!("<!-- layout: {ty} -->");
        let start = DESIGN
            .find(&marker)
            .unwrap_or_else(|| panic!("docs/design.md has no `{marker}`"));
        let mut out = Vec::new();
        for line in DESIGN[start + marker.len()..].lines().skip(2) {
            if line.starts_with("```") {
                return out;
            }
            let mut t = line.split_whitespace();
            let (Some(off), Some(size), Some(field)) = (t.next(), t.next(), t.next()) else {
                continue;
            };
            let (Ok(off), Ok(size)) = (off.parse(), size.parse()) else {
                continue;
            };
            out.push((off, size, field.to_owned()));
        }
        panic!("{ty}: the diagram's fenced block is not closed");
    }

    /// Size of the field `f` selects, without a value of `S`.
    fn size_of_field<S, F>(_: fn(&S) -> &F) -> usize {
        size_of::<F>()
    }

    /// Checks the diagram of `ty` against `fields` (name, offset, size),
    /// all of the struct's fields in order, and the struct's size.
    fn check_diagram(ty: &str, fields: &[(&str, usize, usize)], total: usize) {
        let doc = documented(ty);
        let names: Vec<&str> = doc.iter().map(|(_, _, n)| n.as_str()).collect();
        let expected: Vec<&str> = fields.iter().map(|f| f.0).collect();
        assert_eq!(names, expected, "{ty}: the diagram's fields");
        for ((off, size, name), &(_, o, s)) in doc.iter().zip(fields) {
            assert_eq!((*off, *size), (o, s), "{ty}.{name}: (offset, size)");
        }
        let (o, s, _) = doc.last().expect("fields");
        assert_eq!(o + s, total, "{ty}: the last field ends the struct");
    }

    #[test]
    fn the_design_document_draws_the_header_and_the_descriptor_as_laid_out() {
        macro_rules! fields {
            ($t:ty: $($f:ident),* $(,)?) => {
                [$((
                    stringify!($f),
                    offset_of!($t, $f),
                    size_of_field::<$t, _>(|s| &s.$f),
                )),*]
            };
        }
        check_diagram(
            "SegmentHeader",
            &fields!(SegmentHeader: magic, layout_version, ready, protocol_version, mode,
                segment_size, nr_ports, static_ports, nr_requests, ring_capacity,
                nr_buffer_classes, min_buffer_shift, buffer_counts, creator_pid, reserved,
                created_unix, clock_khz),
            size_of::<SegmentHeader>(),
        );
        check_diagram(
            "RequestShm",
            &fields!(RequestShm: ticket, op, flags, offset, size, serviced, src_port, src_gen,
                dst_port, effective_dst, status, error, buffer, target_len, data_len, tag,
                t_submit, t_accept, t_complete, reserved, target),
            size_of::<RequestShm>(),
        );
    }

    #[test]
    fn layout_regions_do_not_overlap_and_are_aligned() {
        let l = Layout::compute(8, 4, 100, &[3, 0, 2]).unwrap();
        assert_eq!(l.ring_capacity, 128);
        assert_eq!(l.ports_off, 4096);
        assert!(l.requests_off >= l.ports_off + 8 * 768);
        assert_eq!(l.requests_off % 4096, 0);
        assert!(l.rings_off >= l.requests_off + 100 * 384);
        assert!(l.owners_off[0] >= l.ring_off(7, 1) + 128 * 8);
        for (c, &off) in l.data_off.iter().enumerate() {
            assert_eq!(off % 4096, 0);
            assert!(off + l.class_size(c) * u64::from(l.buffer_counts[c]) <= l.total);
        }
        assert_eq!(l.data_off[2] - l.data_off[0], 3 * 4096);
    }

    #[test]
    fn out_of_bounds_sizes_are_refused() {
        assert!(Layout::compute(0, 0, 1, &[]).is_none());
        assert!(Layout::compute(4, 5, 1, &[]).is_none());
        assert!(Layout::compute(4, 2, 0, &[]).is_none());
        assert!(Layout::compute(4, 2, MAX_REQUESTS + 1, &[]).is_none());
        assert!(Layout::compute(4, 2, 1, &[1; 17]).is_none());
        assert!(Layout::compute(MAX_PORTS + 1, 0, 1, &[]).is_none());
        assert!(Layout::compute(4, 2, 1, &[MAX_BUFFERS_PER_CLASS + 1]).is_none());
    }
}
