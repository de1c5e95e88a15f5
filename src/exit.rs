//! How things end: how a child ended (`Exit`, a fact of its wait status),
//! and every exit code of container-run and its client modes (SPEC sections
//! 4, 6 and 7), named in one place, with the two conversions that decide most
//! of them: a child's end as a code, and why a child could not be started.
//! It depends on no other module of container-run.

use std::fmt;
use std::io;

use nix::sys::signal::Signal;

/// How a child ended: a fact of the wait status, kept whole so that logs
/// can say "killed by signal 9 (SIGKILL)" rather than guess from 137.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(u8),
    Signal(u8),
}

impl fmt::Display for Exit {
    /// "exited with status 3" or "was killed by signal 9 (SIGKILL)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Code(c) => write!(f, "exited with status {c}"),
            Exit::Signal(s) => {
                write!(f, "was killed by signal {s}")?;
                match Signal::try_from(i32::from(s)) {
                    Ok(sig) => write!(f, " ({})", sig.as_str()),
                    Err(_) => Ok(()),
                }
            }
        }
    }
}

/// Success; also what a SIGTERM'd container-run returns once all is gone.
pub const OK: u8 = 0;
/// container-run could not start, a post-start failed, a client's wait timed
/// out or its command failed.
pub const FAILURE: u8 = 1;
/// Bad flags, names, durations or paths: nothing has been started.
pub const USAGE: u8 = 2;
/// A client found no container-run answering at the socket.
pub const NO_ANSWER: u8 = 3;
/// A client's wait ended by Ctrl-C (SIGINT), as a shell reports it.
pub const INTERRUPTED: u8 = 128 + 2;
/// The command exists but cannot be executed.
pub const CANNOT_EXECUTE: u8 = 126;
/// The command does not exist.
pub const NOT_FOUND: u8 = 127;
/// What an errand that never ran reports when it is told to end: as if
/// SIGTERM had killed it, so that it is never counted as a success.
pub const ERRAND_NEVER_RAN: u8 = 128 + 15;

/// As a shell reports a child's end, and as container-run passes it on: the
/// code, or 128 + the signal.
pub fn from_wait(exit: Exit) -> u8 {
    match exit {
        Exit::Code(c) => c,
        Exit::Signal(s) => 128u8.wrapping_add(s),
    }
}

/// Why `exec` failed, as an exit code and the words an operator reads.
pub fn from_spawn_error(err: &io::Error) -> (u8, &'static str) {
    match err.raw_os_error() {
        Some(libc::ENOENT) => (NOT_FOUND, "command not found"),
        Some(libc::EACCES) => (CANNOT_EXECUTE, "permission denied"),
        Some(libc::ENOEXEC) => (CANNOT_EXECUTE, "not an executable format"),
        Some(libc::EISDIR) => (CANNOT_EXECUTE, "is a directory"),
        _ => (CANNOT_EXECUTE, "cannot execute"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_and_spawn_errors_map_as_a_shell_does() {
        assert_eq!(from_wait(Exit::Code(0)), 0);
        assert_eq!(from_wait(Exit::Code(3)), 3);
        assert_eq!(from_wait(Exit::Signal(15)), 143);
        assert_eq!(from_wait(Exit::Signal(9)), 137);
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(from_spawn_error(&e(libc::ENOENT)).0, NOT_FOUND);
        assert_eq!(from_spawn_error(&e(libc::EACCES)).0, CANNOT_EXECUTE);
        assert_eq!(from_spawn_error(&e(libc::ENOEXEC)).0, CANNOT_EXECUTE);
        assert_eq!(from_spawn_error(&e(libc::EIO)).0, CANNOT_EXECUTE);
    }
}
