//! What the tree follows: its root, its depth, which names, from where in
//! the files found at start, and the bounds on what it may hold. Keeps:
//! the bounds fit within the process's fd limit, so a planted tree can
//! exhaust neither fds nor memory.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Which names in a directory are followed.
#[derive(Debug, Clone)]
pub enum Select {
    /// Every name ending in `.log` (the agent's globs, dotfiles too).
    AllLogs,
    /// These names only (`bpm logs JOB`).
    Names(Vec<OsString>),
}

impl Select {
    pub fn wants(&self, name: &OsStr) -> bool {
        match self {
            Select::AllLogs => name.as_bytes().ends_with(b".log"),
            Select::Names(names) => names.iter().any(|n| n == name),
        }
    }
}

/// Where the files found at start are streamed from (later ones: 0).
#[derive(Debug, Clone, Copy)]
pub enum Start {
    End,
    Beginning,
    LastLines(usize),
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The root, relative to BASE.
    pub root: PathBuf,
    /// Directory levels below the root that are watched too.
    pub depth: u8,
    pub select: Select,
    pub start: Start,
    /// Create the root when it is missing (the logs mode may start before
    /// any job has written a log).
    pub create: bool,
}

/// Bounds on what the tree holds, whatever is planted in it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub dirs: usize,
    pub files: usize,
}

impl Limits {
    /// Within the fd limit, raised to its hard value (up to 8192) first: a
    /// fifth of the fds for directories, the rest for files, 64 spare.
    pub fn for_this_process() -> Limits {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
        let want = hard.min(8192);
        let n = if soft < want && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() {
            want
        } else {
            soft
        };
        let spare = (n as usize).saturating_sub(64).max(10);
        Limits {
            dirs: (spare / 5).min(1024),
            files: (spare * 4 / 5).min(4096),
        }
    }
}
