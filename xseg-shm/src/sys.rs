//! Thin wrappers over the few system calls the transport needs: the shared
//! futex, process identity and liveness, the monotonic clock, and sealed
//! segments (a sealable memory file, its seals, passing it over a Unix
//! socket and asking who is at the other end).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::sync::AtomicU32;

/// The kernel futex, shared between processes (no `FUTEX_PRIVATE_FLAG`),
/// with a bounded wait so a sleeper re-checks its shutdown conditions. It
/// implements [`Futex`](crate::doorbell::Futex) (in the doorbell module)
/// with [`futex_wait`] and [`futex_wake`].
#[derive(Debug, Clone, Copy)]
pub struct KernelFutex {
    /// Longest single wait; a safety net for dead peers, not for lost
    /// wake-ups (there are none, see [`crate::doorbell`]).
    pub timeout: Duration,
}

impl Default for KernelFutex {
    fn default() -> Self {
        KernelFutex {
            timeout: Duration::from_millis(200),
        }
    }
}

/// `futex(word, FUTEX_WAIT, expected, timeout)`, shared between processes:
/// sleeps while `*word == expected`, until woken or `timeout` passes; may
/// return spuriously.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the
    // call (it comes from a reference); FUTEX_WAIT only reads it and `ts`
    // outlives the call. EAGAIN/EINTR/ETIMEDOUT are all fine: the caller
    // re-checks its queues.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// `futex(word, FUTEX_WAKE, INT_MAX)`, shared between processes: wakes
/// every sleeper on `word`.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE does not dereference anything
    // but the futex word's address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

/// `memfd_create(label, MFD_CLOEXEC | MFD_ALLOW_SEALING)`: an anonymous
/// memory file that can be sealed ([`seal_size`]), for a sealed segment.
pub fn memfd_sealable(label: &str) -> std::io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let label = std::ffi::CString::new(label).map_err(std::io::Error::other)?;
    memfd_create(
        &label,
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .map_err(std::io::Error::from)
}

/// `fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)`: the
/// file's size is fixed for good, for every process that has it.
pub fn seal_size(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))
        .map(drop)
        .map_err(std::io::Error::from)
}

/// Whether `fcntl(fd, F_GET_SEALS)` says the file can neither shrink nor
/// grow (`false` for a file that cannot be sealed at all).
pub fn is_size_sealed(fd: BorrowedFd<'_>) -> bool {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS).is_ok_and(|bits| {
        SealFlag::from_bits_truncate(bits).contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW)
    })
}

/// `sendmsg(sock, "x", SCM_RIGHTS [fd])`: passes a file descriptor (a
/// sealed segment) to the process at the other end of a Unix socket.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"x")];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(std::io::Error::from)
}

/// `recvmsg(sock, MSG_CMSG_CLOEXEC)`: receives a file descriptor that
/// [`send_fd`] passed; an error if the message carried none.
pub fn recv_fd(sock: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut received = Vec::new();
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel installed `fd` in this process for this
                // message (SCM_RIGHTS); nothing else owns it, so taking
                // ownership here closes it exactly once.
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let mut received = received.into_iter();
    received
        .next()
        .ok_or_else(|| std::io::Error::other("no file descriptor in the message"))
}

/// `getsockopt(sock, SO_PEERCRED)`: the pid, uid and gid of the process at
/// the other end of a Unix socket, as the kernel recorded them (for a
/// server to check who asks for a segment before passing it).
pub fn peer_credentials(sock: BorrowedFd<'_>) -> std::io::Result<(u32, u32, u32)> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let c = getsockopt(&sock, PeerCredentials).map_err(std::io::Error::from)?;
    Ok((c.pid() as u32, c.uid(), c.gid()))
}

/// This process's id.
pub fn my_pid() -> u32 {
    std::process::id()
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` if no such process exists. Together with the
/// pid it names one process for good: a reused pid has a later start time.
pub fn process_start_time(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; the
    // fields after it start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // `rest` starts at field 3 (state); starttime is field 22.
    let field = fields.nth(22 - 3)?;
    let start = field.parse().ok()?;
    // A zombie has exited and holds nothing any more. But the leader of a
    // thread group whose main thread exited (`pthread_exit`) shows as a
    // zombie too while its other threads run: the process lives then.
    if rest.trim_start().starts_with('Z') && !has_live_thread(pid) {
        return None;
    }
    Some(start)
}

/// Whether a thread of process `pid` other than its (exited) leader runs.
fn has_live_thread(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        let name = task.file_name();
        if name.to_str() == Some(pid.to_string().as_str()) {
            return false;
        }
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            stat.rfind(')').is_some_and(|i| {
                let state = stat[i + 1..].trim_start();
                !(state.starts_with('Z') || state.starts_with('X'))
            })
        })
    })
}

/// This process's identity word for a port's binding (see
/// [`crate::binding::identity`]): the pid and its start time.
pub fn my_identity() -> u64 {
    let me = my_pid();
    crate::binding::identity(me, process_start_time(me))
}

/// Whether the process recorded as (`pid`, `start`) is still running.
/// `start` is the low 32 bits of its start time; `None` (the binding's
/// identity word does not vouch for one, see
/// [`crate::binding::judge`]) means the pid alone decides.
///
/// Only certain death counts: the pid does not exist (`kill(pid, 0)`
/// fails with ESRCH), is a zombie with no live thread (a leader that
/// exited while other threads run is alive), or runs a process started at
/// another time (the pid was reused). A process we may not signal (EPERM) or whose
/// `/proc` entry we may not read (`hidepid`) is alive. Peers sharing a
/// segment must share one pid namespace.
pub fn is_alive(pid: u32, start: Option<u32>) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    let pid_t = nix::unistd::Pid::from_raw(pid as i32);
    if let Err(nix::errno::Errno::ESRCH) = nix::sys::signal::kill(pid_t, None) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true, // exists (kill said so), but /proc is hidden from us
        Ok(_) => match process_start_time(pid) {
            None => false, // a zombie
            Some(s) => start.is_none_or(|start| s as u32 == start),
        },
    }
}

/// Nanoseconds on the monotonic clock (comparable across processes).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The clock of descriptor timestamps, fixed per segment at creation.
///
/// Reading `CLOCK_MONOTONIC` costs ~24 ns here (vDSO in a VM), three times
/// per request round trip; the CPU's time-stamp counter costs ~9 ns. The
/// TSC is used only where the kernel itself trusts it (its clocksource is
/// `tsc`: invariant and synchronised across CPUs, so values taken by
/// different processes compare), calibrated once against the monotonic
/// clock when the segment is created; elsewhere timestamps are monotonic
/// nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    tsc_khz: u64,
}

impl Clock {
    /// Timestamps in `CLOCK_MONOTONIC` nanoseconds.
    pub const MONOTONIC: Clock = Clock { tsc_khz: 0 };

    /// The clock whose frequency in kHz a segment header records (0 for
    /// monotonic nanoseconds).
    pub fn from_khz(tsc_khz: u64) -> Clock {
        if cfg!(target_arch = "x86_64") {
            Clock { tsc_khz }
        } else {
            Clock::MONOTONIC
        }
    }

    /// The TSC, calibrated, if the kernel uses it as its clocksource;
    /// otherwise [`Clock::MONOTONIC`]. Takes about 20 ms.
    pub fn calibrate() -> Clock {
        let source = std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        );
        if !cfg!(target_arch = "x86_64") || source.map_or(true, |s| s.trim() != "tsc") {
            return Clock::MONOTONIC;
        }
        // The tightest of a few (monotonic, tsc, monotonic) triples.
        let pair = || {
            (0..8)
                .map(|_| {
                    let a = now_ns();
                    let t = rdtsc();
                    let b = now_ns();
                    (b - a, a + (b - a) / 2, t)
                })
                .min()
                .map(|(_, ns, t)| (ns, t))
                .expect("eight samples")
        };
        let (ns0, t0) = pair();
        std::thread::sleep(Duration::from_millis(20));
        let (ns1, t1) = pair();
        let khz = (u128::from(t1 - t0) * 1_000_000 / u128::from((ns1 - ns0).max(1))) as u64;
        Clock::from_khz(khz)
    }

    /// Frequency in kHz, 0 for monotonic nanoseconds.
    pub fn khz(&self) -> u64 {
        self.tsc_khz
    }

    /// The current timestamp.
    #[inline]
    pub fn now(&self) -> u64 {
        if self.tsc_khz != 0 {
            rdtsc()
        } else {
            now_ns()
        }
    }

    /// A difference of two timestamps in nanoseconds.
    pub fn to_ns(&self, ticks: u64) -> u64 {
        if self.tsc_khz == 0 {
            ticks
        } else {
            (u128::from(ticks) * 1_000_000 / u128::from(self.tsc_khz)) as u64
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC exists on every x86_64 CPU and has no preconditions.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn rdtsc() -> u64 {
    now_ns()
}

/// Gives the CPU to another runnable thread.
pub fn yield_cpu() {
    // SAFETY: sched_yield has no arguments and cannot fail in a harmful way.
    unsafe { libc::sched_yield() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_pid_reuse_is_detected() {
        let me = my_pid();
        let start = process_start_time(me).expect("own /proc entry");
        assert!(is_alive(me, Some(start as u32)));
        assert!(is_alive(me, None));
        assert!(
            !is_alive(me, Some(start as u32 + 1)),
            "a different start time is another process"
        );
        assert!(!is_alive(0, None));
    }

    #[test]
    fn clocks_convert_ticks_to_nanoseconds() {
        let c = Clock::calibrate();
        let t0 = c.now();
        std::thread::sleep(Duration::from_millis(30));
        let ns = c.to_ns(c.now() - t0);
        assert!(
            (30_000_000..1_000_000_000).contains(&ns),
            "{ns} ns for a 30 ms sleep ({c:?})"
        );
        assert_eq!(Clock::MONOTONIC.to_ns(123), 123);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(Clock::from_khz(2_000_000).to_ns(2_000), 1_000);
        }
    }

    #[test]
    fn exited_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!is_alive(pid, None));
    }
}
