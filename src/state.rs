//! Process-wide state: one record per pipeline, plus the shutdown signal.
//!
//! Upstream keeps this kind of bookkeeping in module-level dicts mutated from several
//! threads without a lock. Here one mutex guards the map; every critical section is a
//! few field updates, never a wait and never a call into Python, so contention is
//! bounded by design.
//! The shutdown signal is both an atomic flag (cheap to test) and a pipe whose read end
//! becomes readable on shutdown, so a `poll(2)` on pipeline fds wakes at once.
//!
//! `fork()`: the manager forks pipeline processes while our worker threads run. A child
//! inherits this memory but not the threads, so a mutex a worker held at that instant
//! would stay locked in the child forever. `install_fork_handlers` registers
//! `pthread_atfork` handlers that take the table's mutex before the fork and release it
//! on both sides, and give the child its own shutdown pipe (sharing the parent's would
//! let a child's shutdown wake the parent's waits).

use once_cell::sync::Lazy;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant, SystemTime};

/// What we know about one pipeline, beyond what upstream's table holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PipelineRecord {
    /// Consecutive failed health checks (reset by a success).
    pub failures: u32,
    /// Monotonic time of the last completed health check.
    pub last_check: Option<Instant>,
    /// Wall-clock time of the last completed health check, for humans.
    pub last_check_wall: Option<SystemTime>,
    /// Set when the pipeline is being removed: no new command may reach it.
    pub marked_for_removal: bool,
    /// Set while this library terminates the pipeline.
    pub terminating: bool,
    /// Consecutive successful health checks (reset by a failure).
    pub successes: u32,
    /// When the next STATUS probe is due (`None`: at once).
    pub next_probe: Option<Instant>,
    /// A probe for this pipeline is running on a worker.
    pub probe_in_flight: bool,
}

/// Thread-safe table of `PipelineRecord`s keyed by pipeline id.
///
/// `std::sync::Mutex`, not parking_lot's: on Linux it is one futex word, so releasing it
/// in a forked child is an atomic store plus at most a `futex` wake, with no global
/// parking table whose locks another (vanished) thread could have held.
#[derive(Default)]
pub struct PipelineStates {
    records: Mutex<HashMap<String, PipelineRecord>>,
}

type Records = HashMap<String, PipelineRecord>;

impl PipelineStates {
    pub fn new() -> Self {
        Self::default()
    }

    /// The map. No critical section panics, so a poisoned lock still holds a
    /// consistent map: take it rather than propagate the poison.
    fn lock(&self) -> MutexGuard<'_, Records> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Testing aid for fork safety: hold the lock for `duration`, as a worker thread
    /// might at the instant the manager forks.
    pub fn hold_lock_for(&self, duration: Duration) {
        let _records = self.lock();
        std::thread::sleep(duration);
    }

    /// Apply `update` to the record of `pipeline_id`, creating it if needed.
    pub fn update<R>(&self, pipeline_id: &str, update: impl FnOnce(&mut PipelineRecord) -> R) -> R {
        let mut records = self.lock();
        let record = records.entry(pipeline_id.to_string()).or_default();
        update(record)
    }

    pub fn get(&self, pipeline_id: &str) -> Option<PipelineRecord> {
        self.lock().get(pipeline_id).cloned()
    }

    pub fn is_marked_for_removal(&self, pipeline_id: &str) -> bool {
        self.lock()
            .get(pipeline_id)
            .is_some_and(|r| r.marked_for_removal)
    }

    pub fn mark_for_removal(&self, pipeline_id: &str) {
        self.update(pipeline_id, |r| r.marked_for_removal = true);
    }

    pub fn set_terminating(&self, pipeline_id: &str, terminating: bool) {
        self.update(pipeline_id, |r| r.terminating = terminating);
    }

    /// Record the outcome of a health check; returns the consecutive failure count.
    pub fn record_check(&self, pipeline_id: &str, success: bool) -> u32 {
        self.update(pipeline_id, |r| {
            r.last_check = Some(Instant::now());
            r.last_check_wall = Some(SystemTime::now());
            if success {
                r.failures = 0;
                r.successes = r.successes.saturating_add(1);
            } else {
                r.failures = r.failures.saturating_add(1);
                r.successes = 0;
            }
            r.failures
        })
    }

    /// Claim the next probe of `pipeline_id` if it is due and none is running.
    pub fn claim_probe(&self, pipeline_id: &str, now: Instant) -> bool {
        self.update(pipeline_id, |r| {
            let due = r.next_probe.is_none_or(|t| t <= now);
            if due && !r.probe_in_flight && !r.terminating && !r.marked_for_removal {
                r.probe_in_flight = true;
                true
            } else {
                false
            }
        })
    }

    /// Finish a probe and schedule the next one.
    pub fn finish_probe(&self, pipeline_id: &str, next: Instant) {
        self.update(pipeline_id, |r| {
            r.probe_in_flight = false;
            r.next_probe = Some(next);
        });
    }

    /// Mark `pipeline_id` as being terminated by us; false if it already was.
    pub fn begin_termination(&self, pipeline_id: &str) -> bool {
        self.update(pipeline_id, |r| {
            !std::mem::replace(&mut r.terminating, true)
        })
    }

    /// Forget a pipeline (after it was reaped and removed from upstream's table).
    pub fn remove(&self, pipeline_id: &str) -> Option<PipelineRecord> {
        self.lock().remove(pipeline_id)
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// A consistent copy of every record, sorted by pipeline id.
    pub fn snapshot(&self) -> Vec<(String, PipelineRecord)> {
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// The one table used by every patched function in this process.
pub static PIPELINES: Lazy<PipelineStates> = Lazy::new(PipelineStates::new);

/// Shutdown signal: a flag plus a self-pipe for waking `poll(2)` callers.
pub struct Shutdown {
    requested: AtomicBool,
    /// Read and write ends of the pipe; -1 if pipe2 failed, in which case waiters fall
    /// back to the flag, checked at least every `FALLBACK_SLICE`. Atomics because a
    /// forked child replaces them (see `renew_after_fork`).
    read_fd: AtomicI32,
    write_fd: AtomicI32,
}

/// A fresh non-blocking, close-on-exec pipe, or (-1, -1).
fn new_pipe() -> (i32, i32) {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array on success (async-signal-safe).
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if rc == 0 {
        (fds[0], fds[1])
    } else {
        (-1, -1)
    }
}

impl Shutdown {
    fn new() -> Self {
        let (read, write) = new_pipe();
        Shutdown {
            requested: AtomicBool::new(false),
            read_fd: AtomicI32::new(read),
            write_fd: AtomicI32::new(write),
        }
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Fd that becomes readable once shutdown is requested.
    pub fn wake_fd(&self) -> Option<i32> {
        Some(self.read_fd.load(Ordering::Acquire)).filter(|fd| *fd >= 0)
    }

    fn wake_pipe(&self) {
        let write = self.write_fd.load(Ordering::Acquire);
        if write >= 0 {
            // One byte is enough: nobody reads it until `reset`, so the read end stays
            // readable for every present and future poller.
            // SAFETY: writing one byte from a valid buffer to our own pipe.
            unsafe {
                libc::write(write, b"x".as_ptr().cast(), 1);
            }
        }
    }

    pub fn request(&self) {
        if !self.requested.swap(true, Ordering::AcqRel) {
            self.wake_pipe();
        }
    }

    /// Undo a shutdown (tests, and a manager restarted inside one interpreter).
    pub fn reset(&self) {
        let read = self.read_fd.load(Ordering::Acquire);
        if read >= 0 {
            let mut buf = [0u8; 64];
            // SAFETY: reading into a local buffer from our own non-blocking pipe.
            while unsafe { libc::read(read, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        }
        self.requested.store(false, Ordering::Release);
    }

    /// In a forked child: stop sharing the parent's pipe. Only async-signal-safe calls
    /// (close, pipe2, write), as the child of a multi-threaded process requires.
    fn renew_after_fork(&self) {
        let (read, write) = new_pipe();
        for old in [
            self.read_fd.swap(read, Ordering::AcqRel),
            self.write_fd.swap(write, Ordering::AcqRel),
        ] {
            if old >= 0 {
                // SAFETY: closing the child's copies of our own fds.
                unsafe { libc::close(old) };
            }
        }
        if self.is_requested() {
            self.wake_pipe();
        }
    }
}

pub static SHUTDOWN: Lazy<Shutdown> = Lazy::new(Shutdown::new);

thread_local! {
    /// The table's guard, held by the forking thread from `prepare` to `parent`/`child`.
    static HELD_ACROSS_FORK: RefCell<Option<MutexGuard<'static, Records>>> =
        const { RefCell::new(None) };
}

extern "C" fn before_fork() {
    // Waits for a worker to leave its critical section. Never a deadlock: critical
    // sections take no other lock and never wait for the GIL the forking thread holds.
    if let Some(states) = Lazy::get(&PIPELINES) {
        let guard = states.lock();
        HELD_ACROSS_FORK.with(|held| *held.borrow_mut() = Some(guard));
    }
}

extern "C" fn after_fork_in_parent() {
    HELD_ACROSS_FORK.with(|held| drop(held.borrow_mut().take()));
}

extern "C" fn after_fork_in_child() {
    HELD_ACROSS_FORK.with(|held| drop(held.borrow_mut().take()));
    if let Some(shutdown) = Lazy::get(&SHUTDOWN) {
        shutdown.renew_after_fork();
    }
}

/// Register the `fork()` handlers once per process (at module import).
pub fn install_fork_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handlers are plain `extern "C"` functions that live forever.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn records_are_created_on_first_update() {
        let states = PipelineStates::new();
        assert!(states.get("a").is_none());
        assert!(!states.is_marked_for_removal("a"));
        states.mark_for_removal("a");
        assert!(states.is_marked_for_removal("a"));
        assert_eq!(states.get("a").unwrap().failures, 0);
    }

    #[test]
    fn failures_count_up_and_reset_on_success() {
        let states = PipelineStates::new();
        assert_eq!(states.record_check("p", false), 1);
        assert_eq!(states.record_check("p", false), 2);
        assert!(states.get("p").unwrap().last_check.is_some());
        assert_eq!(states.record_check("p", true), 0);
    }

    #[test]
    fn probes_are_claimed_once_until_finished() {
        let states = PipelineStates::new();
        let now = Instant::now();
        assert!(states.claim_probe("p", now));
        assert!(!states.claim_probe("p", now));
        states.finish_probe("p", now + std::time::Duration::from_secs(1));
        assert!(!states.claim_probe("p", now));
        assert!(states.claim_probe("p", now + std::time::Duration::from_secs(2)));
    }

    #[test]
    fn terminating_or_removed_pipelines_are_not_probed() {
        let states = PipelineStates::new();
        assert!(states.begin_termination("t"));
        assert!(!states.begin_termination("t"));
        assert!(!states.claim_probe("t", Instant::now()));
        states.mark_for_removal("r");
        assert!(!states.claim_probe("r", Instant::now()));
    }

    #[test]
    fn successes_and_failures_reset_each_other() {
        let states = PipelineStates::new();
        states.record_check("p", true);
        states.record_check("p", true);
        assert_eq!(states.get("p").unwrap().successes, 2);
        states.record_check("p", false);
        let r = states.get("p").unwrap();
        assert_eq!((r.successes, r.failures), (0, 1));
    }

    #[test]
    fn remove_forgets_everything() {
        let states = PipelineStates::new();
        states.set_terminating("p", true);
        assert!(states.remove("p").unwrap().terminating);
        assert!(states.get("p").is_none());
    }

    #[test]
    fn snapshot_is_sorted() {
        let states = PipelineStates::new();
        for id in ["c", "a", "b"] {
            states.record_check(id, true);
        }
        let ids: Vec<_> = states.snapshot().into_iter().map(|(k, _)| k).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        let states = Arc::new(PipelineStates::new());
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let states = Arc::clone(&states);
                thread::spawn(move || {
                    for _ in 0..1000 {
                        states.record_check("shared", false);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(states.get("shared").unwrap().failures, 8000);
    }

    #[test]
    fn shutdown_wakes_the_pipe_and_resets() {
        let shutdown = Shutdown::new();
        let fd = shutdown.wake_fd().unwrap();
        let readable = |fd| {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, zero timeout.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        assert!(!shutdown.is_requested());
        assert!(!readable(fd));
        shutdown.request();
        shutdown.request();
        assert!(shutdown.is_requested());
        assert!(readable(fd));
        shutdown.reset();
        assert!(!shutdown.is_requested());
        assert!(!readable(fd));
    }
}
