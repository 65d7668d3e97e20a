//! The three reference cases xseg rows are compared against:
//!
//! * `a`: one shared cache line, both sides busy-spinning (hardware floor);
//! * `b`: `SOCK_SEQPACKET` Unix socket pair, blocking reads;
//! * `c`: bare futex doorbell where the waiter always sleeps.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Release};
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::{Case, RunCtx};
use crate::harness::{PeerArgs, ShmFile, Watchdog};
use crate::stats::Stats;

/// How long a blocking call sleeps before consulting the watchdog.
const POLL: Duration = Duration::from_millis(100);

/// Baseline A: shared cache line, busy spin.
pub const SPIN: Case = Case {
    name: "a",
    what: "shared cache line, busy spin",
    default_iters: 200_000,
    per_round: 1,
    parent: spin_parent,
    peer: spin_peer,
};

/// Baseline B: Unix socket pair.
pub const SOCKET: Case = Case {
    name: "b",
    what: "unix SOCK_SEQPACKET, blocking read",
    default_iters: 20_000,
    per_round: 1,
    parent: socket_parent,
    peer: socket_peer,
};

/// Baseline C: futex doorbell, waiter always sleeps.
pub const FUTEX: Case = Case {
    name: "c",
    what: "futex wake/wait doorbell",
    default_iters: 20_000,
    per_round: 1,
    parent: futex_parent,
    peer: futex_peer,
};

/// Parent writes 2k+1, peer answers 2k+2 in the same `AtomicU64`.
fn spin_parent(ctx: &RunCtx) -> Result<Stats> {
    let shm = ShmFile::create("spin", 4096)?;
    let word = shm.atomic_u64(0)?;
    let peer = ctx.peer().arg("shm", shm.path().display()).spawn()?;
    let wd = peer.watchdog();
    let mut k = 0u64;
    let stats = ctx.measure(|| {
        word.store(2 * k + 1, Release);
        k += 1;
        wd.spin_until(|| word.load(Acquire) == 2 * k)
    })?;
    peer.wait()?;
    Ok(stats)
}

fn spin_peer(args: &PeerArgs) -> Result<()> {
    let wd = args.setup();
    let shm = ShmFile::open(args.get("shm")?)?;
    let word: &AtomicU64 = shm.atomic_u64(0)?;
    for k in 0..args.rounds {
        wd.spin_until(|| word.load(Acquire) == 2 * k + 1)?;
        word.store(2 * k + 2, Release);
    }
    Ok(())
}

/// 8-byte messages over a `SOCK_SEQPACKET` pair; the peer echoes them.
fn socket_parent(ctx: &RunCtx) -> Result<Stats> {
    let (mine, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let fd = theirs.as_raw_fd();
    let peer = ctx.peer().arg("fd", fd).inherit_fd(fd).spawn()?;
    drop(theirs); // so that the peer's death gives us EOF
    let wd = peer.watchdog();
    let mut sock = seqpacket(mine)?;
    let mut k = 0u64;
    let stats = ctx.measure(|| {
        k += 1;
        send(&mut sock, k)?;
        let got = recv(&mut sock, &wd)?;
        ensure!(got == k, "socket: sent {k}, got {got}");
        Ok(())
    })?;
    peer.wait()?;
    Ok(stats)
}

fn socket_peer(args: &PeerArgs) -> Result<()> {
    let wd = args.setup();
    let fd: RawFd = args.parse("fd")?;
    // Reject a number that is not an open descriptor before owning it.
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)
        .map_err(|e| anyhow::anyhow!("inherited fd {fd}: {e}"))?;
    // SAFETY: `fd` is open (checked above), was inherited for exactly this
    // purpose and nothing else in this process refers to it.
    let mut sock = seqpacket(unsafe { OwnedFd::from_raw_fd(fd) })?;
    for _ in 0..args.rounds {
        let v = recv(&mut sock, &wd)?;
        send(&mut sock, v)?;
    }
    Ok(())
}

/// Wraps a seqpacket socket in `UnixStream` for its `read`/`write`
/// (plain read(2)/write(2), one message each) and `SO_RCVTIMEO` setter.
fn seqpacket(fd: OwnedFd) -> Result<UnixStream> {
    let sock = UnixStream::from(fd);
    sock.set_read_timeout(Some(POLL))?;
    Ok(sock)
}

fn send(sock: &mut UnixStream, v: u64) -> Result<()> {
    let n = sock.write(&v.to_le_bytes())?;
    ensure!(n == 8, "socket: short write of {n} bytes");
    Ok(())
}

fn recv(sock: &mut UnixStream, wd: &Watchdog) -> Result<u64> {
    let mut buf = [0u8; 8];
    loop {
        match sock.read(&mut buf) {
            Ok(8) => return Ok(u64::from_le_bytes(buf)),
            Ok(0) => bail!("socket: peer closed"),
            Ok(n) => bail!("socket: {n}-byte message"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                wd.check()?
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Byte offsets of the two futex words, on separate cache lines.
const PARENT_WORD: usize = 0;
const CHILD_WORD: usize = 64;

/// Each side bumps the other's word, FUTEX_WAKEs it, then FUTEX_WAITs on
/// its own word (no spinning first) until the answer arrives.
fn futex_parent(ctx: &RunCtx) -> Result<Stats> {
    let shm = ShmFile::create("futex", 4096)?;
    let (mine, theirs) = (shm.atomic_u32(PARENT_WORD)?, shm.atomic_u32(CHILD_WORD)?);
    let peer = ctx.peer().arg("shm", shm.path().display()).spawn()?;
    let wd = peer.watchdog();
    let mut k = 0u32;
    let stats = ctx.measure(|| {
        k = k.wrapping_add(1);
        theirs.store(k, Release);
        futex_wake(theirs)?;
        futex_wait_for(mine, k, &wd)
    })?;
    peer.wait()?;
    Ok(stats)
}

fn futex_peer(args: &PeerArgs) -> Result<()> {
    let wd = args.setup();
    let shm = ShmFile::open(args.get("shm")?)?;
    let (mine, theirs) = (shm.atomic_u32(CHILD_WORD)?, shm.atomic_u32(PARENT_WORD)?);
    let mut k = 0u32;
    for _ in 0..args.rounds {
        k = k.wrapping_add(1);
        futex_wait_for(mine, k, &wd)?;
        theirs.store(k, Release);
        futex_wake(theirs)?;
    }
    Ok(())
}

/// FUTEX_WAKE one waiter on `word` (shared, not FUTEX_PRIVATE_FLAG).
fn futex_wake(word: &AtomicU32) -> Result<()> {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE only uses its
    // address as a key. The unused timeout/uaddr2 arguments are null.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            1,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0,
        )
    };
    ensure!(r >= 0, "FUTEX_WAKE: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Sleeps in FUTEX_WAIT until `word == target`, consulting `wd` whenever a
/// wait times out.
fn futex_wait_for(word: &AtomicU32, target: u32, wd: &Watchdog) -> Result<()> {
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: POLL.as_nanos() as libc::c_long,
    };
    loop {
        let seen = word.load(Acquire);
        if seen == target {
            return Ok(());
        }
        // SAFETY: `word` is a live, aligned u32 in shared memory and
        // `timeout` a valid timespec; both outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                seen,
                &timeout as *const libc::timespec,
                std::ptr::null::<u32>(),
                0,
            )
        };
        if r != 0 {
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ETIMEDOUT) => wd.check()?,
                Some(libc::EAGAIN | libc::EINTR) => {}
                _ => bail!("FUTEX_WAIT: {err}"),
            }
        }
    }
}
