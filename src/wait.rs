//! Waiting on file descriptors with a deadline, via poll(2).
//!
//! A `multiprocessing.Queue` has a reader pipe (`queue._reader.fileno()`) and a
//! `multiprocessing.Process` has a `sentinel` fd that becomes readable when the process
//! ends. Polling both at once, with the GIL released, wakes us exactly when there is an
//! answer to read or the pipeline died, with no thread per call and no busy loop.
//! This module knows nothing about Python.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// What woke a wait. Several can be true at once; callers decide precedence
/// (we read data before declaring a process dead, so last words are not lost).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub data: bool,
    pub process_exited: bool,
    pub shutdown: bool,
    /// The data fd is invalid or hung up (queue closed under us).
    pub data_broken: bool,
}

impl Readiness {
    pub fn any(&self) -> bool {
        self.data || self.process_exited || self.shutdown || self.data_broken
    }
}

/// The fds a wait watches. Any may be absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct WaitSet {
    pub data: Option<RawFd>,
    pub process: Option<RawFd>,
    pub shutdown: Option<RawFd>,
}

/// Convert a remaining duration to poll's millisecond timeout, rounding up so that we
/// never wake a hair early and spin.
pub fn poll_timeout_ms(remaining: Duration) -> libc::c_int {
    let ms = remaining.as_nanos().div_ceil(1_000_000);
    ms.min(libc::c_int::MAX as u128) as libc::c_int
}

/// Block until one of the fds is ready or `deadline` passes. Retries on EINTR with the
/// remaining time. Returns an empty `Readiness` on timeout.
pub fn wait(set: WaitSet, deadline: Instant) -> std::io::Result<Readiness> {
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
    let mut roles: Vec<u8> = Vec::with_capacity(3);
    for (role, fd) in [(0u8, set.data), (1, set.process), (2, set.shutdown)] {
        if let Some(fd) = fd {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            roles.push(role);
        }
    }
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        for p in fds.iter_mut() {
            p.revents = 0;
        }
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd structs.
        let rc = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                poll_timeout_ms(remaining),
            )
        };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                if Instant::now() >= deadline {
                    return Ok(Readiness::default());
                }
                continue;
            }
            return Err(err);
        }
        let mut ready = Readiness::default();
        for (p, role) in fds.iter().zip(roles.iter()) {
            if p.revents == 0 {
                continue;
            }
            match role {
                0 => {
                    if p.revents & libc::POLLIN != 0 {
                        ready.data = true;
                    } else if p.revents & (libc::POLLNVAL | libc::POLLERR | libc::POLLHUP) != 0 {
                        ready.data_broken = true;
                    }
                }
                // A sentinel signals exit with POLLIN or POLLHUP (write end closed).
                1 => ready.process_exited = true,
                _ => ready.shutdown = true,
            }
        }
        return Ok(ready);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: valid two-int array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    }

    fn close(fd: RawFd) {
        // SAFETY: closing an fd this test owns.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn timeout_rounds_up() {
        assert_eq!(poll_timeout_ms(Duration::from_micros(1)), 1);
        assert_eq!(poll_timeout_ms(Duration::from_millis(5)), 5);
        assert_eq!(poll_timeout_ms(Duration::ZERO), 0);
        assert_eq!(
            poll_timeout_ms(Duration::from_secs(u64::MAX)),
            libc::c_int::MAX
        );
    }

    #[test]
    fn times_out_when_nothing_happens() {
        let (r, w) = pipe();
        let start = Instant::now();
        let ready = wait(
            WaitSet {
                data: Some(r),
                ..Default::default()
            },
            start + Duration::from_millis(50),
        )
        .unwrap();
        assert!(!ready.any());
        assert!(start.elapsed() >= Duration::from_millis(50));
        close(r);
        close(w);
    }

    #[test]
    fn reports_data_and_exit_together() {
        let (data_r, data_w) = pipe();
        let (proc_r, proc_w) = pipe();
        // SAFETY: writing one byte from a static buffer.
        unsafe { libc::write(data_w, b"x".as_ptr().cast(), 1) };
        close(proc_w); // like a child process exiting: the sentinel hangs up
        let ready = wait(
            WaitSet {
                data: Some(data_r),
                process: Some(proc_r),
                shutdown: None,
            },
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap();
        assert!(ready.data && ready.process_exited && !ready.shutdown);
        for fd in [data_r, data_w, proc_r] {
            close(fd);
        }
    }

    #[test]
    fn invalid_data_fd_is_reported_broken() {
        // An fd number nothing in this test binary opens; closing and reusing a real fd
        // would race with the other tests' pipes.
        let ready = wait(
            WaitSet {
                data: Some(65_000),
                ..Default::default()
            },
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap();
        assert!(ready.data_broken);
    }
}
