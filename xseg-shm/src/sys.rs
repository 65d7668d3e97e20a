//! Thin wrappers over the few system calls the transport needs: the shared
//! futex, process identity and liveness, the monotonic clock.

use core::sync::atomic::AtomicU32;
use std::time::Duration;

use crate::doorbell::Futex;

/// The kernel futex, shared between processes (no `FUTEX_PRIVATE_FLAG`),
/// with a bounded wait so a sleeper re-checks its shutdown conditions.
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

impl Futex for KernelFutex {
    fn wait(&self, word: &AtomicU32, expected: u32) {
        let ts = libc::timespec {
            tv_sec: self.timeout.as_secs() as libc::time_t,
            tv_nsec: self.timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `word` is a valid, aligned u32 for the duration of the
        // call (it comes from a reference); FUTEX_WAIT only reads it and
        // `ts` outlives the call. EAGAIN/EINTR/ETIMEDOUT are all fine: the
        // caller re-checks its queues.
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

    fn wake(&self, word: &AtomicU32) {
        // SAFETY: as above; FUTEX_WAKE does not dereference anything but
        // the futex word's address.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
        }
    }
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
    // A zombie has exited: it holds nothing any more.
    if rest.trim_start().starts_with('Z') {
        return None;
    }
    Some(start)
}

/// Whether the process recorded as (`pid`, `start`) is still running.
/// `start == 0` means the owner was recorded before its start time was
/// (a bind in progress): then the pid alone decides.
pub fn is_alive(pid: u32, start: u64) -> bool {
    match process_start_time(pid) {
        None => false,
        Some(s) => start == 0 || s == start,
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
        assert!(is_alive(me, start));
        assert!(is_alive(me, 0));
        assert!(
            !is_alive(me, start + 1),
            "a different start time is another process"
        );
        assert!(!is_alive(0, 0));
    }

    #[test]
    fn exited_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!is_alive(pid, 0));
    }
}
