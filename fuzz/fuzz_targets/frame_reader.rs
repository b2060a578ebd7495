//! Arbitrary bytes on a responses-queue pipe, read back with `frame::read_frame` as the
//! command path does: it must never panic or block past its deadline, every frame it
//! returns must be exactly the payload its header announced, and it must never read
//! past what was written.
//!
//! Input layout: byte 0 says whether the writer is "dead" (bit 0: a closed sentinel is
//! passed) — the rest is written to the pipe as is (capped under the pipe's capacity,
//! so the write never blocks).
#![no_main]

use std::time::{Duration, Instant};

use _native::frame::{read_frame, Frame};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 60 * 1024;

fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

/// What a correct reader returns for `bytes`: the whole frames, then how it ends.
fn expected(bytes: &[u8]) -> (Vec<Vec<u8>>, &'static str) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        if at == bytes.len() {
            return (frames, "empty");
        }
        let Some(head) = bytes.get(at..at + 4) else {
            return (frames, "torn");
        };
        let mut size = i32::from_be_bytes(head.try_into().unwrap()) as i64;
        at += 4;
        if size == -1 {
            let Some(long) = bytes.get(at..at + 8) else {
                return (frames, "torn");
            };
            let long = u64::from_be_bytes(long.try_into().unwrap());
            at += 8;
            if long > CAP as u64 {
                return (frames, "torn-or-error");
            }
            size = long as i64;
        } else if size < 0 {
            return (frames, "error");
        }
        let size = size as usize;
        match bytes.get(at..at + size) {
            Some(payload) => frames.push(payload.to_vec()),
            None => return (frames, "torn"),
        }
        at += size;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let bytes = &rest[..rest.len().min(CAP)];
    let (r, w) = pipe();
    let (sentinel_r, sentinel_w) = pipe();
    if !bytes.is_empty() {
        let n = unsafe { libc::write(w, bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(n as usize, bytes.len());
    }
    let writer_dead = flags & 1 == 1;
    if writer_dead {
        unsafe { libc::close(sentinel_w) };
    }
    // A live writer that never finishes its frame costs the whole deadline: keep it short.
    let budget = Duration::from_millis(if writer_dead { 2_000 } else { 3 });

    let (frames, end) = expected(bytes);
    let mut got = Vec::new();
    let outcome = loop {
        let started = Instant::now();
        let read = read_frame(r, started + budget, Some(sentinel_r));
        assert!(started.elapsed() < budget + Duration::from_secs(1), "read past its deadline");
        match read {
            Ok(Frame::Bytes(payload)) => got.push(payload),
            Ok(Frame::Empty) => break "empty",
            Ok(Frame::Torn) => break "torn",
            Ok(Frame::Busy) => unreachable!("read_frame takes no lock"),
            Err(_) => break "error",
        }
        assert!(got.len() <= frames.len(), "more frames than were written");
    };
    assert_eq!(got, frames, "frames differ from what was written");
    match end {
        "torn-or-error" => assert!(outcome == "torn" || outcome == "error", "{outcome}"),
        _ => assert_eq!(outcome, end),
    }
    for fd in [r, w, sentinel_r] {
        unsafe { libc::close(fd) };
    }
    if !writer_dead {
        unsafe { libc::close(sentinel_w) };
    }
});
