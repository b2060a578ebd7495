//! Waiting on file descriptors with a deadline, via poll(2).
//!
//! A `multiprocessing.Queue` has a reader pipe (`queue._reader.fileno()`) and a
//! `multiprocessing.Process` has a `sentinel` fd that becomes readable when the process
//! ends. Polling them at once, with the GIL released, wakes us exactly when there is an
//! answer to read or a pipeline died, with no thread per call and no busy loop.
//! This module knows nothing about Python.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Convert a remaining duration to poll's millisecond timeout, rounding up so that we
/// never wake a hair early and spin.
pub fn poll_timeout_ms(remaining: Duration) -> libc::c_int {
    let ms = remaining.as_nanos().div_ceil(1_000_000);
    ms.min(libc::c_int::MAX as u128) as libc::c_int
}

/// Per-fd result of one poll.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Polled {
    /// `ready[i]`: fd i is readable or hung up (for a sentinel both mean "exited").
    pub ready: Vec<bool>,
    /// `broken[i]`: fd i is invalid or in error (e.g. closed under us).
    pub broken: Vec<bool>,
    /// poll(2) was interrupted by a signal. Callers holding Python must run the
    /// interpreter's signal handlers (`py.check_signals()`) before waiting again,
    /// otherwise a SIGTERM handler would wait for our deadline.
    pub interrupted: bool,
}

impl Polled {
    pub fn any(&self) -> bool {
        self.ready.iter().chain(self.broken.iter()).any(|b| *b)
    }
}

/// One poll(2) over `fds` until `deadline` (EINTR is reported, not retried).
pub fn poll_fds(fds: &[RawFd], deadline: Instant) -> std::io::Result<Polled> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let remaining = deadline.saturating_duration_since(Instant::now());
    // SAFETY: `polls` is a valid, initialised array of `polls.len()` pollfd structs.
    let rc = unsafe {
        libc::poll(
            polls.as_mut_ptr(),
            polls.len() as libc::nfds_t,
            poll_timeout_ms(remaining),
        )
    };
    let mut out = Polled {
        ready: vec![false; fds.len()],
        broken: vec![false; fds.len()],
        interrupted: false,
    };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            out.interrupted = true;
            return Ok(out);
        }
        return Err(err);
    }
    for (i, p) in polls.iter().enumerate() {
        if p.revents & (libc::POLLIN | libc::POLLHUP) != 0 {
            out.ready[i] = true;
        } else if p.revents & (libc::POLLNVAL | libc::POLLERR) != 0 {
            out.broken[i] = true;
        }
    }
    Ok(out)
}

/// What woke a command wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub data: bool,
    pub process_exited: bool,
    pub shutdown: bool,
    /// The data fd is invalid or in error (queue closed under us).
    pub data_broken: bool,
    pub interrupted: bool,
}

impl Readiness {
    pub fn any(&self) -> bool {
        self.data || self.process_exited || self.shutdown || self.data_broken
    }
}

/// The fds a command wait watches. Any may be absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct WaitSet {
    pub data: Option<RawFd>,
    pub process: Option<RawFd>,
    pub shutdown: Option<RawFd>,
}

/// Poll a `WaitSet` once until `deadline`.
pub fn wait(set: WaitSet, deadline: Instant) -> std::io::Result<Readiness> {
    let mut fds = Vec::with_capacity(3);
    let mut roles = Vec::with_capacity(3);
    for (role, fd) in [(0u8, set.data), (1, set.process), (2, set.shutdown)] {
        if let Some(fd) = fd {
            fds.push(fd);
            roles.push(role);
        }
    }
    let polled = poll_fds(&fds, deadline)?;
    let mut out = Readiness {
        interrupted: polled.interrupted,
        ..Default::default()
    };
    for (i, role) in roles.iter().enumerate() {
        let (ready, broken) = (polled.ready[i], polled.broken[i]);
        match role {
            0 => {
                out.data |= ready;
                out.data_broken |= broken;
            }
            1 => out.process_exited |= ready || broken,
            _ => out.shutdown |= ready || broken,
        }
    }
    Ok(out)
}

/// Wait until every fd in `sentinels` is ready (all processes exited), `stop` becomes
/// ready, or `deadline` passes. Returns the indices still not ready. Retries EINTR:
/// used with the GIL released where no Python signal handler can run anyway.
pub fn wait_all(sentinels: &[RawFd], stop: Option<RawFd>, deadline: Instant) -> Vec<usize> {
    let mut pending: Vec<usize> = (0..sentinels.len()).collect();
    while !pending.is_empty() {
        let mut fds: Vec<RawFd> = pending.iter().map(|&i| sentinels[i]).collect();
        if let Some(stop) = stop {
            fds.push(stop);
        }
        let Ok(polled) = poll_fds(&fds, deadline) else {
            break;
        };
        if let Some(stop_index) = stop.map(|_| fds.len() - 1) {
            if polled.ready[stop_index] {
                break;
            }
        }
        pending = pending
            .iter()
            .enumerate()
            .filter(|(slot, _)| !(polled.ready[*slot] || polled.broken[*slot]))
            .map(|(_, &i)| i)
            .collect();
        if !polled.interrupted && Instant::now() >= deadline {
            break;
        }
    }
    pending
}

/// Pipes for the unit tests of the modules that wait on fds.
#[cfg(test)]
pub(crate) mod test_fds {
    use std::os::fd::RawFd;

    pub fn pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: valid two-int array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    }

    pub fn close(fd: RawFd) {
        // SAFETY: closing an fd the test owns.
        unsafe { libc::close(fd) };
    }

    pub fn write_all(fd: RawFd, bytes: &[u8]) {
        // SAFETY: writing from a valid buffer of `bytes.len()` bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(n as usize, bytes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::test_fds::{close, pipe};
    use super::*;

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

    #[test]
    fn wait_all_returns_as_soon_as_every_sentinel_is_ready() {
        let pipes: Vec<_> = (0..4).map(|_| pipe()).collect();
        let sentinels: Vec<RawFd> = pipes.iter().map(|p| p.0).collect();
        for (_, w) in &pipes {
            close(*w);
        }
        let start = Instant::now();
        let pending = wait_all(&sentinels, None, start + Duration::from_secs(5));
        assert!(pending.is_empty());
        assert!(start.elapsed() < Duration::from_secs(1));
        for fd in sentinels {
            close(fd);
        }
    }

    #[test]
    fn wait_all_reports_survivors_after_the_deadline() {
        let (alive_r, alive_w) = pipe();
        let (dead_r, dead_w) = pipe();
        close(dead_w);
        let start = Instant::now();
        let pending = wait_all(&[alive_r, dead_r], None, start + Duration::from_millis(100));
        assert_eq!(pending, vec![0]);
        assert!(start.elapsed() >= Duration::from_millis(100));
        for fd in [alive_r, alive_w, dead_r] {
            close(fd);
        }
    }

    #[test]
    fn wait_all_stops_on_the_stop_fd() {
        let (alive_r, alive_w) = pipe();
        let (stop_r, stop_w) = pipe();
        // SAFETY: one byte from a static buffer.
        unsafe { libc::write(stop_w, b"x".as_ptr().cast(), 1) };
        let pending = wait_all(
            &[alive_r],
            Some(stop_r),
            Instant::now() + Duration::from_secs(5),
        );
        assert_eq!(pending, vec![0]);
        for fd in [alive_r, alive_w, stop_r, stop_w] {
            close(fd);
        }
    }
}
