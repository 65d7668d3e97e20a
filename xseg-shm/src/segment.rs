//! The segment: create, attach, destroy, and bounds-checked access to what
//! lives in it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::binding;
use crate::error::SegmentError;
use crate::held::Held;
use crate::layout::{
    Layout, PortShm, RequestShm, SegmentHeader, HEADER_SIZE, LAYOUT_VERSION, MAGIC,
    MAX_BUFFER_CLASSES, MIN_BUFFER_SHIFT, READY,
};
use crate::ring::{self, Ring};
use crate::sync::shm::{AtomicU32, AtomicU64};
use crate::sync::Ordering;
use crate::sys::Clock;

/// Where a segment lives: a POSIX shared-memory object (a name without
/// `/`, under `/dev/shm`) or a file (a value containing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentName {
    /// `shm_open` name, without the leading slash.
    Shm(String),
    /// A file path (tests use private paths).
    File(std::path::PathBuf),
    /// A sealed segment (an anonymous memory file whose size cannot
    /// change, see [`Segment::create_sealed`]), known by its file
    /// descriptor in this process (`fd:N`): it has no name to open or
    /// remove. [`Segment::attach`] attaches a duplicate of the descriptor.
    Fd(i32),
}

impl SegmentName {
    /// Parses a name or path.
    ///
    /// `fd:N` names a sealed segment this process inherited as file
    /// descriptor `N` (see [`Segment::create_sealed`]).
    pub fn parse(s: &str) -> Result<SegmentName, SegmentError> {
        if s.is_empty() || s.len() > 255 || s.contains('\0') {
            return Err(SegmentError::Config(format!("bad segment name {s:?}")));
        }
        if let Some(n) = s.strip_prefix("fd:") {
            return match n.parse::<i32>() {
                Ok(fd) if fd >= 0 => Ok(SegmentName::Fd(fd)),
                _ => Err(SegmentError::Config(format!("bad descriptor in {s:?}"))),
            };
        }
        if s.contains('/') {
            Ok(SegmentName::File(s.into()))
        } else {
            Ok(SegmentName::Shm(s.to_owned()))
        }
    }
}

impl std::fmt::Display for SegmentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentName::Shm(n) => write!(f, "{n}"),
            SegmentName::File(p) => write!(f, "{}", p.display()),
            SegmentName::Fd(fd) => write!(f, "fd:{fd}"),
        }
    }
}

/// Sizes and options of a segment to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentConfig {
    /// Total ports.
    pub ports: u32,
    /// Ports `0..static_ports` are for peers bound by number; the rest are
    /// handed out by [`Segment::bind_dynamic`].
    pub static_ports: u32,
    /// Request descriptors.
    pub requests: u32,
    /// Buffers per size class, class `i` holding `4 KiB << i` bytes.
    pub buffer_counts: Vec<u32>,
    /// File mode (never world-accessible: `o` bits are refused).
    pub mode: u32,
    /// Protocol version the layer above speaks over the segment.
    pub protocol_version: u32,
}

impl Default for SegmentConfig {
    /// 128 ports (32 static), 4096 requests, buffers from 4 KiB to 4 MiB
    /// (256 MiB in all; a `/dev/shm` segment uses memory only where
    /// touched), mode 0660.
    fn default() -> Self {
        SegmentConfig {
            ports: 128,
            static_ports: 32,
            requests: 4096,
            //            4K    8K   16K  32K  64K 128K 256K 512K 1M  2M  4M
            buffer_counts: vec![1024, 512, 256, 128, 128, 64, 64, 32, 32, 16, 32],
            mode: 0o660,
            protocol_version: 0,
        }
    }
}

impl SegmentConfig {
    /// Drops the classes larger than `max` bytes (a power of two ≥ 4 KiB).
    pub fn with_max_buffer(mut self, max: u64) -> Result<Self, SegmentError> {
        if !max.is_power_of_two()
            || max < (1 << MIN_BUFFER_SHIFT)
            || max > (1 << (MIN_BUFFER_SHIFT as usize + MAX_BUFFER_CLASSES - 1))
        {
            return Err(SegmentError::Config(format!(
                "largest buffer {max} must be a power of two between 4 KiB and 128 MiB"
            )));
        }
        let classes = (max.trailing_zeros() - MIN_BUFFER_SHIFT + 1) as usize;
        // Classes past the defaults get 128 MiB each (at least two buffers).
        while self.buffer_counts.len() < classes {
            let size = 1u64 << (MIN_BUFFER_SHIFT as usize + self.buffer_counts.len());
            self.buffer_counts.push(((128 << 20) / size).max(2) as u32);
        }
        self.buffer_counts.truncate(classes);
        Ok(self)
    }

    /// Size of the largest buffer.
    pub fn max_buffer(&self) -> u64 {
        match self.buffer_counts.len() {
            0 => 0,
            n => 1 << (MIN_BUFFER_SHIFT as usize + n - 1),
        }
    }
}

/// A mapped segment. Cheap to share between threads (`Arc<Segment>`);
/// ports are bound from it.
pub struct Segment {
    name: SegmentName,
    map: MmapRaw,
    layout: Layout,
    protocol_version: u32,
    clock: Clock,
    /// Which port of this process holds each descriptor (see `held.rs`).
    held: Arc<Held>,
    /// A sealed segment's file, to hand on to other processes.
    sealed: Option<OwnedFd>,
}

// `Segment` is `Send` and `Sync` by its fields (`MmapRaw` is both): it
// hands out only references to atomics and raw pointers, and the ports
// that turn a buffer pointer into a slice carry their own SAFETY argument
// (`Port::data`).

fn io_err(name: &SegmentName, cause: io::Error) -> SegmentError {
    SegmentError::Io {
        name: name.to_string(),
        cause,
    }
}

fn open(name: &SegmentName, create: bool, mode: u32) -> Result<File, SegmentError> {
    let flags = if create {
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL
    } else {
        OFlag::O_RDWR
    };
    let result: Result<File, io::Error> = match name {
        SegmentName::Shm(n) => nix::sys::mman::shm_open(
            format!("/{n}").as_str(),
            flags,
            Mode::from_bits_truncate(mode),
        )
        .map(|fd: OwnedFd| File::from(fd))
        .map_err(io::Error::from),
        SegmentName::File(p) => {
            let mut o = std::fs::OpenOptions::new();
            o.read(true).write(true);
            if create {
                use std::os::unix::fs::OpenOptionsExt;
                o.create_new(true).mode(mode);
            }
            o.open(p)
        }
        SegmentName::Fd(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a sealed segment is attached by its file descriptor (Segment::attach_fd)",
        )),
    };
    result.map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => SegmentError::Exists {
            name: name.to_string(),
        },
        io::ErrorKind::NotFound => SegmentError::NotFound {
            name: name.to_string(),
        },
        _ => io_err(name, e),
    })
}

fn unlink(name: &SegmentName) -> io::Result<()> {
    match name {
        SegmentName::Shm(n) => {
            nix::sys::mman::shm_unlink(format!("/{n}").as_str()).map_err(io::Error::from)
        }
        SegmentName::File(p) => std::fs::remove_file(p),
        // Gone when the last process that has it closes it.
        SegmentName::Fd(_) => Ok(()),
    }
}

/// Maps exactly `len` bytes of `file`, shared, whatever the file's length
/// (the mapping's length is what every view of the segment is checked
/// against).
fn map_exact(name: &SegmentName, file: &File, len: u64) -> Result<MmapRaw, SegmentError> {
    let len_usize = usize::try_from(len).map_err(|_| {
        SegmentError::Config(format!(
            "a segment of {len} bytes does not fit the address space"
        ))
    })?;
    let map = MmapOptions::new()
        .len(len_usize)
        .map_raw(file)
        .map_err(|e| io_err(name, e))?;
    if map.len() != len_usize {
        return Err(SegmentError::Corrupt {
            name: name.to_string(),
            what: format!("mapped {} bytes, asked for {len}", map.len()),
        });
    }
    Ok(map)
}

/// This process's record of held descriptors for the segment in `file`.
fn held_record(
    name: &SegmentName,
    file: &File,
    layout: &Layout,
) -> Result<Arc<Held>, SegmentError> {
    let m = file.metadata().map_err(|e| io_err(name, e))?;
    Ok(Held::for_file(
        m.dev(),
        m.ino(),
        layout.nr_requests,
        &layout.buffer_counts,
    ))
}

impl Segment {
    /// Creates and initialises a new segment; fails if one exists.
    pub fn create(name: &SegmentName, config: &SegmentConfig) -> Result<Segment, SegmentError> {
        let layout = Self::checked_layout(config)?;
        let file = open(name, true, config.mode)?;
        let result = Self::init(name, &file, layout, config);
        if result.is_err() {
            let _ = unlink(name);
        }
        result
    }

    /// Creates and initialises a **sealed** segment: an anonymous memory
    /// file (`memfd_create`) whose size is then sealed (`F_SEAL_SHRINK |
    /// F_SEAL_GROW`), so no process, not even one that can write the
    /// segment, can `ftruncate` it and make every peer fault with
    /// `SIGBUS`. It has no name: other processes get it as a file
    /// descriptor, inherited or passed over a Unix socket
    /// ([`sealed_fd`](Self::sealed_fd), [`crate::sys::send_fd`]), and
    /// attach it with [`attach_fd`](Self::attach_fd). It goes away when
    /// the last process that has it closes it.
    pub fn create_sealed(config: &SegmentConfig) -> Result<Segment, SegmentError> {
        let layout = Self::checked_layout(config)?;
        let fd = crate::sys::memfd_sealable("xseg").map_err(|e| SegmentError::Io {
            name: "sealed segment".into(),
            cause: e,
        })?;
        let name = SegmentName::Fd(fd.as_raw_fd());
        let file = File::from(fd);
        let mut seg = Self::init(&name, &file, layout, config)?;
        crate::sys::seal_size(file.as_fd()).map_err(|e| io_err(&name, e))?;
        seg.sealed = Some(file.into());
        Ok(seg)
    }

    /// Attaches to a sealed segment handed over as a file descriptor (see
    /// [`create_sealed`](Self::create_sealed)); refuses one whose size is
    /// not sealed. With `protocol_version`, refuses a segment made for
    /// another protocol.
    pub fn attach_fd(fd: OwnedFd, protocol_version: Option<u32>) -> Result<Segment, SegmentError> {
        let name = SegmentName::Fd(fd.as_raw_fd());
        if !crate::sys::is_size_sealed(fd.as_fd()) {
            return Err(SegmentError::Corrupt {
                name: name.to_string(),
                what: "its size is not sealed (not a sealed segment)".into(),
            });
        }
        let file = File::from(fd);
        let mut seg = Self::attach_file(&name, &file, protocol_version)?;
        seg.sealed = Some(file.into());
        Ok(seg)
    }

    /// A sealed segment's file descriptor, to pass to another process;
    /// `None` for a named segment.
    pub fn sealed_fd(&self) -> Option<BorrowedFd<'_>> {
        self.sealed.as_ref().map(|fd| fd.as_fd())
    }

    fn checked_layout(config: &SegmentConfig) -> Result<Layout, SegmentError> {
        if config.mode & 0o007 != 0 || config.mode & !0o777 != 0 {
            return Err(SegmentError::Config(format!(
                "mode {:o}: a segment must not be accessible to others",
                config.mode
            )));
        }
        Layout::compute(
            config.ports,
            config.static_ports,
            config.requests,
            &config.buffer_counts,
        )
        .ok_or_else(|| {
            SegmentError::Config(format!(
                "ports {} (static {}), requests {}, {} buffer classes: out of bounds",
                config.ports,
                config.static_ports,
                config.requests,
                config.buffer_counts.len()
            ))
        })
    }

    fn init(
        name: &SegmentName,
        file: &File,
        layout: Layout,
        config: &SegmentConfig,
    ) -> Result<Segment, SegmentError> {
        // The umask may have narrowed the mode; set exactly what was asked.
        file.set_permissions(std::fs::Permissions::from_mode(config.mode))
            .map_err(|e| io_err(name, e))?;
        file.set_len(layout.total).map_err(|e| io_err(name, e))?;
        let map = map_exact(name, file, layout.total)?;
        let held = held_record(name, file, &layout)?;
        let seg = Segment {
            name: name.clone(),
            map,
            layout,
            protocol_version: config.protocol_version,
            clock: Clock::calibrate(),
            held,
            sealed: None,
        };
        let l = &seg.layout;
        let mut counts = [0u32; MAX_BUFFER_CLASSES];
        counts[..l.buffer_counts.len()].copy_from_slice(&l.buffer_counts);
        let header = SegmentHeader {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            ready: AtomicU32::new(0),
            protocol_version: config.protocol_version,
            mode: config.mode,
            segment_size: l.total,
            nr_ports: l.nr_ports,
            static_ports: l.static_ports,
            nr_requests: l.nr_requests,
            ring_capacity: l.ring_capacity,
            nr_buffer_classes: l.buffer_counts.len() as u32,
            min_buffer_shift: MIN_BUFFER_SHIFT,
            buffer_counts: counts,
            creator_pid: std::process::id(),
            reserved: 0,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            clock_khz: seg.clock.khz(),
        };
        // SAFETY: the mapping is `layout.total` ≥ HEADER_SIZE bytes
        // (`map_exact`), page-aligned, and nobody else uses it before the
        // ready word is set.
        unsafe { std::ptr::write(seg.map.as_mut_ptr().cast::<SegmentHeader>(), header) };
        // Zeroed memory is the right initial state for ports (unbound,
        // generation 0), descriptors (pooled, serial 0) and buffer owners
        // (free); ring slots need their initial stamps.
        for port in 0..l.nr_ports {
            for which in 0..2 {
                let r = seg.ring(port, which);
                for (i, slot) in r.slots.iter().enumerate() {
                    slot.store(ring::initial_slot(i as u64), Ordering::Relaxed);
                }
            }
        }
        // SYNC POINT (ready): Release publishes the whole initialised
        // segment to attachers that load the ready word with Acquire.
        seg.header_ready().store(READY, Ordering::Release);
        Ok(seg)
    }

    /// Attaches to an existing segment. With `protocol_version`, refuses a
    /// segment made for another protocol.
    pub fn attach(
        name: &SegmentName,
        protocol_version: Option<u32>,
    ) -> Result<Segment, SegmentError> {
        if let SegmentName::Fd(fd) = *name {
            // A duplicate, so the Segment owns its own descriptor and the
            // number stays the caller's.
            let dup = nix::unistd::dup(fd).map_err(|e| io_err(name, e.into()))?;
            // SAFETY: `dup` just returned this new descriptor; nothing else
            // owns it, so the OwnedFd closes it exactly once.
            let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) };
            return Self::attach_fd(owned, protocol_version);
        }
        let file = open(name, false, 0)?;
        Self::attach_file(name, &file, protocol_version)
    }

    fn attach_file(
        name: &SegmentName,
        file: &File,
        protocol_version: Option<u32>,
    ) -> Result<Segment, SegmentError> {
        let len = file.metadata().map_err(|e| io_err(name, e))?.len();
        if len == 0 {
            return Err(SegmentError::NotReady {
                name: name.to_string(),
            });
        }
        if len < HEADER_SIZE {
            return Err(SegmentError::NotASegment {
                name: name.to_string(),
            });
        }
        crate::hooks::run(crate::hooks::Point::AttachStatted, name);
        // The header page alone first, mapped by explicit length: the file
        // may change size at any time, and the mapping's length, not the
        // file's, is what bounds our pointers (a page past the end of the
        // file raises SIGBUS when touched, never reaches other memory).
        let head = map_exact(name, file, HEADER_SIZE)?;
        let base = head.as_mut_ptr();
        // SAFETY: the mapping is HEADER_SIZE bytes (`map_exact`), so the
        // magic's 8 bytes are in bounds; a volatile read because another
        // process may be writing them.
        let magic: [u8; 8] = unsafe { std::ptr::read_volatile(base.cast::<[u8; 8]>()) };
        if magic == [0; 8] {
            return Err(SegmentError::NotReady {
                name: name.to_string(),
            });
        }
        if magic != MAGIC {
            return Err(SegmentError::NotASegment {
                name: name.to_string(),
            });
        }
        // SAFETY: in bounds (offset 12 < HEADER_SIZE) and 4-aligned; any
        // bit pattern is a valid AtomicU32.
        let ready = unsafe { &*base.add(12).cast::<AtomicU32>() };
        // SYNC POINT (ready): pairs with the creator's Release store.
        if ready.load(Ordering::Acquire) != READY {
            return Err(SegmentError::NotReady {
                name: name.to_string(),
            });
        }
        // SAFETY: the header is inside the HEADER_SIZE-byte mapping,
        // aligned (page start), and after the Acquire above no longer
        // written; it holds only integers, so any byte pattern is a valid
        // value.
        let h: SegmentHeader = unsafe { std::ptr::read_volatile(base.cast::<SegmentHeader>()) };
        if h.layout_version != LAYOUT_VERSION {
            return Err(SegmentError::LayoutVersion {
                name: name.to_string(),
                found: h.layout_version,
                expected: LAYOUT_VERSION,
            });
        }
        if let Some(expected) = protocol_version {
            if h.protocol_version != expected {
                return Err(SegmentError::ProtocolVersion {
                    name: name.to_string(),
                    found: h.protocol_version,
                    expected,
                });
            }
        }
        let corrupt = |what: String| SegmentError::Corrupt {
            name: name.to_string(),
            what,
        };
        let classes = h.nr_buffer_classes as usize;
        if classes > MAX_BUFFER_CLASSES || h.min_buffer_shift != MIN_BUFFER_SHIFT {
            return Err(corrupt(format!(
                "{classes} buffer classes from 2^{}",
                h.min_buffer_shift
            )));
        }
        let layout = Layout::compute(
            h.nr_ports,
            h.static_ports,
            h.nr_requests,
            &h.buffer_counts[..classes],
        )
        .ok_or_else(|| corrupt("sizes out of bounds".into()))?;
        if layout.ring_capacity != h.ring_capacity
            || layout.total != h.segment_size
            || layout.total != len
        {
            return Err(corrupt(format!(
                "header says {} bytes, layout needs {}, file has {len}",
                h.segment_size, layout.total
            )));
        }
        // Now the whole segment, by the length the header describes, and
        // the file checked again: shrunk since the first look, it is
        // refused rather than mapped short (shrunk after this, touching
        // the lost pages raises SIGBUS: see the crate docs).
        drop(head);
        let map = map_exact(name, file, layout.total)?;
        let now = file.metadata().map_err(|e| io_err(name, e))?.len();
        if now < layout.total {
            return Err(corrupt(format!(
                "the file shrank to {now} bytes while attaching; the layout needs {}",
                layout.total
            )));
        }
        let held = held_record(name, file, &layout)?;
        Ok(Segment {
            name: name.clone(),
            map,
            layout,
            protocol_version: h.protocol_version,
            clock: Clock::from_khz(h.clock_khz),
            held,
            sealed: None,
        })
    }

    /// Removes the segment's name; refuses while a port has a live owner,
    /// unless `force`. Processes that have it mapped keep their mapping.
    pub fn destroy(name: &SegmentName, force: bool) -> Result<(), SegmentError> {
        if !force {
            match Segment::attach(name, None) {
                Ok(seg) => {
                    for port in 0..seg.layout.nr_ports {
                        if let Some(pid) = seg.live_owner(port) {
                            return Err(SegmentError::InUse {
                                name: name.to_string(),
                                port,
                                pid,
                            });
                        }
                    }
                }
                Err(e @ SegmentError::NotFound { .. }) => return Err(e),
                // Maybe being created right now: only --force removes it.
                Err(e @ SegmentError::NotReady { .. }) => return Err(e),
                // A broken or foreign-version segment has no live owners we
                // could know of; removing it is what the user wants.
                Err(_) => {}
            }
        }
        unlink(name).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => SegmentError::NotFound {
                name: name.to_string(),
            },
            _ => io_err(name, e),
        })
    }

    /// The name this segment was opened by.
    pub fn name(&self) -> &SegmentName {
        &self.name
    }

    /// Where everything lives.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The protocol version in the header.
    pub fn protocol_version(&self) -> u32 {
        self.protocol_version
    }

    /// The clock of descriptor timestamps (convert differences with
    /// [`Clock::to_ns`]).
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Size of the largest buffer.
    pub fn max_buffer(&self) -> u64 {
        match self.layout.buffer_counts.len() {
            0 => 0,
            n => self.layout.class_size(n - 1),
        }
    }

    fn header_ready(&self) -> &AtomicU32 {
        // SAFETY: offset 12 is inside the header page, 4-aligned; the
        // mapping outlives `&self`; any bit pattern is a valid AtomicU32.
        unsafe { &*self.map.as_mut_ptr().add(12).cast::<AtomicU32>() }
    }

    /// This process's record of which of its ports holds each descriptor.
    pub(crate) fn held(&self) -> &Held {
        &self.held
    }

    /// Port `n`, or `None` if out of range.
    pub(crate) fn port(&self, n: u32) -> Option<&PortShm> {
        if n >= self.layout.nr_ports {
            return None;
        }
        let off = self.layout.ports_off + u64::from(n) * std::mem::size_of::<PortShm>() as u64;
        // SAFETY: `n` is in range, so the port lies inside the mapping
        // (Layout::compute placed nr_ports ports below `layout.total`, and
        // create and attach map exactly `layout.total` bytes, `map_exact`);
        // the offset is 128-aligned on a page-aligned base; PortShm holds
        // only atomics, valid for any bits; the mapping outlives `&self`.
        Some(unsafe { &*self.map.as_mut_ptr().add(off as usize).cast::<PortShm>() })
    }

    /// Descriptor `i`, or `None` if out of range.
    pub(crate) fn request(&self, i: u32) -> Option<&RequestShm> {
        if i >= self.layout.nr_requests {
            return None;
        }
        let off =
            self.layout.requests_off + u64::from(i) * std::mem::size_of::<RequestShm>() as u64;
        // SAFETY: as for `port`: in range, aligned (page + multiple of
        // 384, a multiple of 64), atomics only.
        Some(unsafe { &*self.map.as_mut_ptr().add(off as usize).cast::<RequestShm>() })
    }

    /// Ring `which` (0 requests, 1 replies) of `port`, which must be in
    /// range (a port number we checked or computed ourselves).
    pub(crate) fn ring(&self, port: u32, which: u32) -> Ring<'_> {
        self.ring_checked(port, which)
            .expect("ring of a port in range")
    }

    /// Ring `which` of `port`, or `None` if `port` is out of range (for
    /// port numbers read from shared memory).
    pub(crate) fn ring_checked(&self, port: u32, which: u32) -> Option<Ring<'_>> {
        let p = self.port(port)?;
        let off = self.layout.ring_off(port, which);
        // SAFETY: ring_off places 2 × nr_ports rings of ring_capacity
        // 8-byte slots below `layout.total`, inside the mapping (as for
        // `port`), 8-aligned; AtomicU64 is valid for any bits.
        let slots = unsafe {
            std::slice::from_raw_parts(
                self.map.as_mut_ptr().add(off as usize).cast::<AtomicU64>(),
                self.layout.ring_capacity as usize,
            )
        };
        let (head, producers) = if which == 0 {
            (&p.request_head.0, &p.request_tail.0)
        } else {
            (&p.reply_head.0, &p.reply_tail.0)
        };
        Some(Ring {
            head,
            tail: &producers.tail,
            head_seen: &producers.head_seen,
            slots,
        })
    }

    /// The owner words of the buffers of `class`, or `None` if out of
    /// range.
    pub(crate) fn buffer_owners(&self, class: usize) -> Option<&[AtomicU32]> {
        let count = *self.layout.buffer_counts.get(class)?;
        let off = self.layout.owners_off[class];
        // SAFETY: `class` is in range (checked above), and Layout::compute
        // placed `count` 4-byte owner words of that class at `off`, below
        // `layout.total` and so inside the mapping (as for `port`), 4-aligned (a 64-
        // aligned start); the mapping outlives `&self`; AtomicU32 is valid
        // for any bits.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.map.as_mut_ptr().add(off as usize).cast::<AtomicU32>(),
                count as usize,
            )
        })
    }

    /// The owner word of buffer `index` of `class`, or `None` if out of range.
    pub(crate) fn buffer_owner(&self, class: usize, index: u32) -> Option<&AtomicU32> {
        self.buffer_owners(class)?.get(index as usize)
    }

    /// Start of buffer `index` of `class` (checked by the caller).
    pub(crate) fn buffer_ptr(&self, class: usize, index: u32) -> *mut u8 {
        assert!(index < self.layout.buffer_counts[class]);
        let off = self.layout.data_off[class] + self.layout.class_size(class) * u64::from(index);
        // SAFETY: in range by the assert, so `off + class_size` is at most
        // `layout.total`, the mapping's exact length (as for `port`).
        unsafe { self.map.as_mut_ptr().add(off as usize) }
    }

    /// Wakes port `n`'s owner if it sleeps on its doorbell (after making
    /// work visible to it by other means than its rings).
    pub fn wake(&self, n: u32) {
        if let Some(p) = self.port(n) {
            p.doorbell.0.ring(&crate::sys::KernelFutex::default());
        }
    }

    /// Pid of port `n`'s owner if it died (and nobody recovered the port
    /// yet); `None` if the port is unbound or its owner lives.
    pub fn dead_owner(&self, n: u32) -> Option<u32> {
        let p = self.port(n)?;
        let (b, start) = binding::load_with_start(&p.binding, &p.owner_id);
        (b.pid != 0 && !crate::sys::is_alive(b.pid, start)).then_some(b.pid)
    }

    /// Pid of port `n`'s owner if it is alive.
    pub fn live_owner(&self, n: u32) -> Option<u32> {
        let p = self.port(n)?;
        let (b, start) = binding::load_with_start(&p.binding, &p.owner_id);
        (b.pid != 0 && crate::sys::is_alive(b.pid, start)).then_some(b.pid)
    }
}
