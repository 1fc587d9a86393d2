//! A reader that closes standard output early (`lvh ... | head`): lvh ends quietly with status
//! 141 (128 + SIGPIPE, as a shell reports a writer killed by a closed pipe), with no panic
//! message or backtrace on standard error.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_lvh_quietly() {
    // Standard output is a socket whose other end is closed before lvh starts, so its first
    // write fails with EPIPE (and SIGPIPE) whatever the scheduling. A pipe closed after the
    // spawn raced with lvh: on a busy machine lvh could write its few lines into the pipe's
    // buffer first and end with status 0.
    let (reader, writer) = UnixStream::pair().unwrap();
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args(["constitution", "list"])
        .stdout(Stdio::from(OwnedFd::from(writer)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
