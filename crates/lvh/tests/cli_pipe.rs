//! A reader that closes standard output early (`lvh ... | head`): lvh ends quietly with status
//! 141 (128 + SIGPIPE, as a shell reports a writer killed by a closed pipe), with no panic
//! message or backtrace on standard error.

use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_lvh_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args(["constitution", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before lvh has started writing (process start-up takes far longer).
    drop(child.stdout.take());
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
