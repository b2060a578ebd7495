//! Reading one `multiprocessing.Queue` item natively, with the GIL released.
//!
//! `Queue.get()` takes the queue's `_rlock` (a POSIX semaphore behind
//! `multiprocessing.Lock`), reads one frame from the reader pipe with
//! `Connection.recv_bytes` and releases the lock. Done from Python, each of those steps
//! takes and gives back the GIL (the two `os.read`s of header and body each release it),
//! and the GIL hand-offs, not the work, are what a command pays for under concurrency.
//! Here the whole step runs in one GIL-released stretch: wait on the same semaphore
//! (through `_rlock._semlock.handle`, so Python readers and we still exclude each
//! other), check the pipe is still readable, read the frame, post the semaphore.
//!
//! The frame format is `Connection`'s: a 4-byte big-endian signed length, or `-1`
//! followed by an 8-byte big-endian length for payloads of 2 GiB and more, then the
//! payload (`multiprocessing/connection.py`, `_send_bytes` / `_recv_bytes`).
//!
//! Unlike `recv_bytes`, every read here is bounded: a writer that dies half-way through
//! a frame leaves the pipe open (the manager holds the write end too), and a plain read
//! would block for ever, holding the queue's lock. Given the writer's `sentinel`, a read
//! ends as soon as the writer is dead and nothing it wrote is left in the pipe; otherwise
//! at its deadline.
//!
//! This module knows nothing about Python.

use std::os::fd::RawFd;
use std::time::{Duration, Instant, SystemTime};

use crate::wait;

/// A `sem_t*` as `_multiprocessing.SemLock.handle` exposes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SemHandle(pub usize);

impl SemHandle {
    fn ptr(self) -> *mut libc::sem_t {
        self.0 as *mut libc::sem_t
    }

    /// Take the semaphore, waiting until `deadline`. `false` on timeout.
    ///
    /// # Safety
    /// The handle must point to a live semaphore for the whole call: the caller keeps
    /// the Python object that owns it alive.
    pub unsafe fn acquire(self, deadline: Instant) -> std::io::Result<bool> {
        // SAFETY (all calls below): `self.ptr()` is a live sem_t by this fn's contract.
        loop {
            if libc::sem_trywait(self.ptr()) == 0 {
                return Ok(true);
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                _ => return Err(err),
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(false);
            }
            // sem_timedwait wants an absolute CLOCK_REALTIME time; a wall-clock jump can
            // only shorten or lengthen one wait, and the monotonic check above ends it.
            let until = SystemTime::now() + remaining;
            let since_epoch = until
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            let ts = libc::timespec {
                tv_sec: since_epoch.as_secs() as libc::time_t,
                tv_nsec: since_epoch.subsec_nanos() as libc::c_long,
            };
            if libc::sem_timedwait(self.ptr(), &ts) == 0 {
                return Ok(true);
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ETIMEDOUT) | Some(libc::EINTR) => {}
                _ => return Err(err),
            }
        }
    }

    /// Give the semaphore back.
    ///
    /// # Safety
    /// As for `acquire`, and only after a successful `acquire`.
    pub unsafe fn release(self) {
        libc::sem_post(self.ptr());
    }
}

/// Most a frame's buffer grows ahead of the bytes actually read.
const READ_CHUNK: usize = 1 << 20;

/// What one read attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One whole payload.
    Bytes(Vec<u8>),
    /// Nothing to read (another reader took it before we got the lock).
    Empty,
    /// Part of a frame arrived and the rest did not by the deadline: the stream is
    /// out of step from here on.
    Torn,
    /// The lock was not free by the deadline.
    Busy,
}

/// Fill `buf` from `fd`, polling before each read so that no read blocks past
/// `deadline`. `Ok(false)` if the deadline passed first, or if the writer behind
/// `writer_exit` (a process sentinel) died with the rest of the frame unwritten.
fn read_exact_by(
    fd: RawFd,
    buf: &mut [u8],
    deadline: Instant,
    writer_exit: Option<RawFd>,
) -> std::io::Result<bool> {
    let mut fds = vec![fd];
    fds.extend(writer_exit);
    let mut filled = 0;
    while filled < buf.len() {
        let polled = wait::poll_fds(&fds, deadline)?;
        if polled.broken[0] {
            return Err(std::io::Error::from_raw_os_error(libc::EBADF));
        }
        if !polled.ready[0] {
            if polled.interrupted {
                continue;
            }
            let writer_gone = fds.len() > 1 && (polled.ready[1] || polled.broken[1]);
            // The writer may have written its last bytes between poll's look at the
            // pipe and its look at the sentinel: look at the pipe once more.
            if writer_gone && wait::poll_fds(&[fd], Instant::now())?.ready[0] {
                continue;
            }
            if writer_gone || Instant::now() >= deadline {
                return Ok(false);
            }
            continue;
        }
        let rest = &mut buf[filled..];
        // SAFETY: reading into the unfilled tail of our own buffer.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if n > 0 {
            filled += n as usize;
        } else if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        } else {
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) => {}
                _ => return Err(err),
            }
        }
    }
    Ok(true)
}

/// Read one frame from `fd`. The caller holds the queue's read lock.
/// `deadline` bounds the whole read; a frame cut short by it, or by the death of the
/// writer behind `writer_exit`, is `Torn`.
pub fn read_frame(
    fd: RawFd,
    deadline: Instant,
    writer_exit: Option<RawFd>,
) -> std::io::Result<Frame> {
    // Is anything there at all? Another reader may have emptied the pipe between our
    // poll and our lock.
    let now = wait::poll_fds(&[fd], Instant::now())?;
    if now.broken[0] {
        return Err(std::io::Error::from_raw_os_error(libc::EBADF));
    }
    if !now.ready[0] {
        return Ok(Frame::Empty);
    }
    let mut header = [0u8; 4];
    if !read_exact_by(fd, &mut header, deadline, writer_exit)? {
        // Readable but not even a header by the deadline: only a hang-up reads as ready
        // with nothing to read, and that is an EOF on the first read.
        return Ok(Frame::Torn);
    }
    let size = match i32::from_be_bytes(header) {
        -1 => {
            let mut long = [0u8; 8];
            if !read_exact_by(fd, &mut long, deadline, writer_exit)? {
                return Ok(Frame::Torn);
            }
            u64::from_be_bytes(long)
        }
        n if n >= 0 => n as u64,
        n => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("negative frame length {n}"),
            ))
        }
    };
    let size = usize::try_from(size)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large"))?;
    // Grow the buffer as bytes arrive rather than trusting the header: a stream that is
    // out of step (after a torn frame) can announce gigabytes that never come.
    let mut payload: Vec<u8> = Vec::new();
    while payload.len() < size {
        let filled = payload.len();
        let chunk = (size - filled).min(READ_CHUNK);
        payload.try_reserve_exact(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate a {size}-byte frame"),
            )
        })?;
        payload.resize(filled + chunk, 0);
        if !read_exact_by(fd, &mut payload[filled..], deadline, writer_exit)? {
            return Ok(Frame::Torn);
        }
    }
    Ok(Frame::Bytes(payload))
}

/// Take `lock` (waiting until `lock_deadline`), read one frame (until `read_deadline`
/// or the death of the writer behind `writer_exit`), give `lock` back.
///
/// # Safety
/// `lock` must point to a live semaphore for the whole call.
pub unsafe fn take_frame(
    lock: SemHandle,
    fd: RawFd,
    lock_deadline: Instant,
    read_deadline: Instant,
    writer_exit: Option<RawFd>,
) -> std::io::Result<Frame> {
    if !lock.acquire(lock_deadline)? {
        return Ok(Frame::Busy);
    }
    let read = read_frame(fd, read_deadline, writer_exit);
    lock.release();
    read
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::test_fds::{close, pipe, write_all};

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    struct Sem(Box<libc::sem_t>);

    impl Sem {
        fn new(value: u32) -> Self {
            let mut sem: Box<libc::sem_t> = Box::new(unsafe { std::mem::zeroed() });
            assert_eq!(unsafe { libc::sem_init(&mut *sem, 0, value) }, 0);
            Sem(sem)
        }
        fn handle(&mut self) -> SemHandle {
            SemHandle(&mut *self.0 as *mut libc::sem_t as usize)
        }
        fn value(&mut self) -> i32 {
            let mut v = 0;
            unsafe { libc::sem_getvalue(&mut *self.0, &mut v) };
            v
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(200)
    }

    #[test]
    fn reads_frames_in_order_and_reports_empty() {
        let (r, w) = pipe();
        write_all(w, &frame(b"first"));
        write_all(w, &frame(b""));
        write_all(w, &frame(b"third"));
        assert_eq!(
            read_frame(r, soon(), None).unwrap(),
            Frame::Bytes(b"first".to_vec())
        );
        assert_eq!(
            read_frame(r, soon(), None).unwrap(),
            Frame::Bytes(Vec::new())
        );
        assert_eq!(
            read_frame(r, soon(), None).unwrap(),
            Frame::Bytes(b"third".to_vec())
        );
        assert_eq!(read_frame(r, soon(), None).unwrap(), Frame::Empty);
    }

    #[test]
    fn reads_the_long_length_form() {
        let (r, w) = pipe();
        let mut bytes = (-1i32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&3u64.to_be_bytes());
        bytes.extend_from_slice(b"abc");
        write_all(w, &bytes);
        assert_eq!(
            read_frame(r, soon(), None).unwrap(),
            Frame::Bytes(b"abc".to_vec())
        );
    }

    #[test]
    fn a_frame_larger_than_the_pipe_is_read_while_the_writer_writes() {
        let (r, w) = pipe();
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let sent = frame(&payload);
        let writer = std::thread::spawn(move || write_all(w, &sent));
        // As in `take_ready`: read only once the pipe has polled readable (otherwise
        // `read_frame` rightly reports Empty before the writer has started).
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(wait::poll_fds(&[r], deadline).unwrap().ready[0]);
        let got = read_frame(r, deadline, None).unwrap();
        // Close the read end first, so a failed read makes the writer fail, not hang.
        close(r);
        let _ = writer.join();
        assert_eq!(got, Frame::Bytes(payload));
    }

    #[test]
    fn a_frame_cut_short_is_torn_by_the_deadline_not_a_hang() {
        let (r, w) = pipe();
        let mut bytes = 100i32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"only ten b");
        write_all(w, &bytes);
        let started = Instant::now();
        assert_eq!(read_frame(r, soon(), None).unwrap(), Frame::Torn);
        assert!(started.elapsed() < Duration::from_secs(2));
        let _ = w;
    }

    /// Write `bytes` to a pipe whose writer process has exited (its sentinel hung up),
    /// read one frame with a far deadline; the frame and how long the read took.
    fn read_after_the_writer_died(bytes: &[u8]) -> (Frame, Duration) {
        let (r, w) = pipe();
        let (sentinel_r, sentinel_w) = pipe();
        write_all(w, bytes);
        close(sentinel_w);
        let started = Instant::now();
        let far = started + Duration::from_secs(30);
        let frame = read_frame(r, far, Some(sentinel_r)).unwrap();
        let took = started.elapsed();
        for fd in [r, w, sentinel_r] {
            close(fd);
        }
        (frame, took)
    }

    #[test]
    fn a_frame_whose_writer_died_is_torn_at_once() {
        let mut bytes = 100i32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"only ten b");
        let (frame, took) = read_after_the_writer_died(&bytes);
        assert_eq!(frame, Frame::Torn);
        assert!(took < Duration::from_secs(1));
    }

    #[test]
    fn bytes_left_by_a_dead_writer_are_still_read() {
        let (got, _) = read_after_the_writer_died(&frame(b"last words"));
        assert_eq!(got, Frame::Bytes(b"last words".to_vec()));
    }

    #[test]
    fn a_huge_announced_length_allocates_only_what_arrives() {
        let mut bytes = i32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"tiny");
        // With the writer gone this is Torn at once; a 2 GiB zero-filled buffer up
        // front would take seconds and gigabytes.
        let (frame, took) = read_after_the_writer_died(&bytes);
        assert_eq!(frame, Frame::Torn);
        assert!(took < Duration::from_millis(500));
    }

    #[test]
    fn eof_and_bad_lengths_are_errors() {
        let (r, w) = pipe();
        write_all(w, &(-7i32).to_be_bytes());
        assert!(read_frame(r, soon(), None).is_err());
        close(w);
        assert!(read_frame(r, soon(), None).is_err());
    }

    #[test]
    fn the_lock_is_taken_released_and_honoured() {
        let (r, w) = pipe();
        write_all(w, &frame(b"x"));
        let mut sem = Sem::new(1);
        let lock = sem.handle();
        assert_eq!(
            unsafe { take_frame(lock, r, soon(), soon(), None) }.unwrap(),
            Frame::Bytes(b"x".to_vec())
        );
        assert_eq!(sem.value(), 1, "released after the read");
        // Held by someone else: Busy at the deadline, nothing read.
        write_all(w, &frame(b"y"));
        assert!(unsafe { lock.acquire(soon()) }.unwrap());
        let started = Instant::now();
        assert_eq!(
            unsafe { take_frame(lock, r, soon(), soon(), None) }.unwrap(),
            Frame::Busy
        );
        assert!(started.elapsed() >= Duration::from_millis(150));
        unsafe { lock.release() };
        assert_eq!(
            unsafe { take_frame(lock, r, soon(), soon(), None) }.unwrap(),
            Frame::Bytes(b"y".to_vec())
        );
    }
}
