//! A small pool of native worker threads for health probes and reaps.
//!
//! Threads are created on demand, reused, and capped, so a sweep never waits for a
//! probe and no thread is started per call: K hung pipelines occupy K workers for one
//! probe timeout, concurrently, instead of costing the sweep K timeouts. Workers block on
//! a channel without the GIL and attach to Python only through `gate::with_python`.

use crossbeam_channel::{unbounded, Receiver, Sender};
use once_cell::sync::Lazy;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::gate;

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct Pool {
    sender: Sender<Job>,
    receiver: Receiver<Job>,
    threads: AtomicUsize,
    idle: AtomicUsize,
    max_threads: usize,
}

/// Upper bound on workers: more concurrent probes than this queue up.
pub const MAX_WORKERS: usize = 64;

impl Pool {
    pub fn new(max_threads: usize) -> Self {
        let (sender, receiver) = unbounded();
        Pool {
            sender,
            receiver,
            threads: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            max_threads: max_threads.max(1),
        }
    }

    /// Queue `job`; start a worker if none is idle and the cap allows.
    pub fn submit(&'static self, job: impl FnOnce() + Send + 'static) {
        if !gate::in_owner_process() {
            // A forked child has the pool's memory but none of its threads.
            return;
        }
        if self.idle.load(Ordering::Acquire) == 0 {
            let started = self.threads.fetch_add(1, Ordering::AcqRel);
            if started < self.max_threads {
                let spawned = std::thread::Builder::new()
                    .name(format!("smp-worker-{started}"))
                    .spawn(move || self.work());
                if spawned.is_err() {
                    self.threads.fetch_sub(1, Ordering::AcqRel);
                }
            } else {
                self.threads.fetch_sub(1, Ordering::AcqRel);
            }
        }
        // The receiver lives as long as the pool ('static), so send cannot fail.
        let _ = self.sender.send(Box::new(job));
    }

    fn work(&'static self) {
        loop {
            self.idle.fetch_add(1, Ordering::AcqRel);
            let job = self.receiver.recv();
            self.idle.fetch_sub(1, Ordering::AcqRel);
            match job {
                // A panic in one job must not take the worker (or the process) down.
                Ok(job) => {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
                Err(_) => return,
            }
        }
    }

    pub fn threads(&self) -> usize {
        self.threads.load(Ordering::Acquire)
    }
}

pub static POOL: Lazy<Pool> = Lazy::new(|| Pool::new(MAX_WORKERS));

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    #[test]
    fn blocked_jobs_do_not_delay_others() {
        static TEST_POOL: Lazy<Pool> = Lazy::new(|| Pool::new(16));
        let (done_tx, done_rx) = mpsc::channel();
        let start = Instant::now();
        for _ in 0..8 {
            let done = done_tx.clone();
            TEST_POOL.submit(move || {
                std::thread::sleep(Duration::from_millis(300));
                done.send(()).unwrap();
            });
        }
        for _ in 0..8 {
            done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        // Eight 300 ms jobs ran concurrently, not one after another.
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{:?}",
            start.elapsed()
        );
        assert!(TEST_POOL.threads() <= 16);
    }

    #[test]
    fn threads_are_capped_and_reused() {
        static SMALL: Lazy<Pool> = Lazy::new(|| Pool::new(2));
        let (done_tx, done_rx) = mpsc::channel();
        for i in 0..10 {
            let done = done_tx.clone();
            SMALL.submit(move || done.send(i).unwrap());
        }
        let mut got: Vec<i32> = (0..10)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert!(SMALL.threads() <= 2);
    }

    #[test]
    fn a_panicking_job_does_not_kill_the_worker() {
        static ONE: Lazy<Pool> = Lazy::new(|| Pool::new(1));
        ONE.submit(|| panic!("boom"));
        let (tx, rx) = mpsc::channel();
        ONE.submit(move || tx.send(7).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
    }
}
