//! The process tree (SPEC section 4): spawning a child in its own group with
//! a clean signal state, signalling groups, finding every descendant through
//! /proc, and reaping. Nothing else in container-run sends a signal or calls
//! waitpid.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid as NixPid;

use crate::exit::{self, Exit};

pub type Pid = i32;

/// How a child's output is wired: the job and the post-start share
/// container-run's stdout/stderr; the condition's output is discarded; the
/// drain script's stdout is read by container-run (its stderr is shared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Inherit,
    Discard,
    Capture,
}

/// A child to start: the command, how its output is wired, and what its
/// environment adds to or removes from container-run's.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    pub program: &'a OsStr,
    pub args: Vec<&'a OsStr>,
    pub output: Output,
    pub env_add: &'a [(&'a str, &'a str)],
    pub env_remove: &'a [&'a str],
}

/// A started child; `stdout` is the read end of its stdout with `Capture`.
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    pub stdout: Option<OwnedFd>,
}

/// Why a spawn failed, as the exit code an operator expects (126/127).
#[derive(Debug)]
pub struct SpawnError {
    pub code: u8,
    pub message: String,
}

/// The signals whose disposition container-run inherited as something other
/// than SIG_DFL (ignored, mostly; SIGPIPE by the Rust runtime): all that a
/// child has to reset, since container-run installs no handler of its own.
#[derive(Debug, Clone, Default)]
pub struct Inherited(Vec<libc::c_int>);

/// Start a child in a new process group, with default signal dispositions,
/// an empty signal mask, stdin from /dev/null and a parent-death signal.
pub fn spawn(spec: &SpawnSpec, inherited: &Inherited) -> Result<Spawned, SpawnError> {
    let mut cmd = Command::new(spec.program);
    cmd.args(&spec.args).process_group(0);
    for (k, v) in spec.env_add {
        cmd.env(k, v);
    }
    for k in spec.env_remove {
        cmd.env_remove(k);
    }
    match std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(null) => {
            let stdin = null.try_clone().map(Stdio::from).unwrap_or(Stdio::null());
            cmd.stdin(stdin);
            if spec.output == Output::Discard {
                let out = null.try_clone().map(Stdio::from).unwrap_or(Stdio::null());
                cmd.stdout(out).stderr(Stdio::from(null));
            }
        }
        // A root without /dev (an image built FROM scratch run by hand):
        // stdin reads end-of-file from an empty pipe instead, and the
        // condition's output goes where container-run's goes.
        Err(_) => {
            cmd.stdin(empty_stdin());
        }
    }
    if spec.output == Output::Capture {
        cmd.stdout(Stdio::piped());
    }
    let signals = inherited.0.clone();
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls, allocating nothing.
    unsafe {
        cmd.pre_exec(move || reset_child_signals(&signals));
    }
    match cmd.spawn() {
        // The child is reaped by the supervisor's waitpid(-1) loop, never
        // through `Child`, which is dropped here without waiting.
        Ok(mut child) => Ok(Spawned {
            pid: child.id() as Pid,
            stdout: child.stdout.take().map(OwnedFd::from),
        }),
        Err(err) => {
            let (code, what) = exit::from_spawn_error(&err);
            Err(SpawnError {
                code,
                message: format!("{}: {what}", spec.program.to_string_lossy()),
            })
        }
    }
}

/// The kernel's `struct sigaction`, all zero: SIG_DFL, no flags, empty mask.
/// The raw system call also reaches the signals that the C library refuses
/// to touch (32 and 33 in glibc).
type KernelSigaction = [u64; 4];

fn raw_sigaction(
    sig: libc::c_int,
    new: Option<&KernelSigaction>,
    old: Option<&mut KernelSigaction>,
) {
    // SAFETY: rt_sigaction reads `new` and writes `old`, both of the size
    // the kernel expects for an 8-byte signal set, or takes null.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            new.map_or(std::ptr::null(), |n| n.as_ptr()),
            old.map_or(std::ptr::null_mut(), |o| o.as_mut_ptr()),
            8usize,
        );
    }
}

/// Read container-run's dispositions once, before the first spawn.
pub fn inherited_dispositions() -> Inherited {
    Inherited(
        (1..=libc::SIGRTMAX())
            .filter(|&sig| sig != libc::SIGKILL && sig != libc::SIGSTOP)
            .filter(|&sig| {
                let mut old: KernelSigaction = [0; 4];
                raw_sigaction(sig, None, Some(&mut old));
                old[0] != 0
            })
            .collect(),
    )
}

/// The read end of a pipe whose write end is closed: end-of-file at once.
fn empty_stdin() -> Stdio {
    match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok((read, _write)) => Stdio::from(read),
        Err(_) => Stdio::inherit(),
    }
}

/// Between fork and exec. container-run blocks the signals it reads through
/// its signalfd; the child must not inherit that mask (a blocked SIGTERM
/// would never stop the job), nor any disposition container-run inherited.
fn reset_child_signals(inherited: &[libc::c_int]) -> io::Result<()> {
    let default_action: KernelSigaction = [0; 4];
    for &sig in inherited {
        raw_sigaction(sig, Some(&default_action), None);
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    // If container-run is killed outright, the job must not run on
    // unsupervised.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    Ok(())
}

/// Signal a whole process group; a group that has just emptied is not an
/// error.
pub fn signal_group(pgid: Pid, sig: Signal) {
    match killpg(NixPid::from_raw(pgid), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => log::warn!("cannot send {} to group {pgid}: {e}", sig.as_str()),
    }
}

pub fn signal_pid(pid: Pid, sig: Signal) {
    match kill(NixPid::from_raw(pid), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => log::warn!("cannot send {} to {pid}: {e}", sig.as_str()),
    }
}

/// One line of /proc/PID/stat, the fields the tree needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: Pid,
    pub ppid: Pid,
    pub pgrp: Pid,
}

/// Parse `/proc/PID/stat`. The command name is in parentheses and may itself
/// contain spaces and parentheses, so fields are counted from the last ')'.
pub fn parse_stat(stat: &str) -> Option<ProcEntry> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let pid = stat[..open].trim().parse().ok()?;
    let mut fields = stat.get(close + 1..)?.split_ascii_whitespace();
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcEntry { pid, ppid, pgrp })
}

fn read_entry(pid: &str) -> Option<ProcEntry> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process of the system (the fallback when the kernel has no
/// `/proc/PID/task/TID/children`).
fn read_proc() -> Vec<ProcEntry> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let name = entry.ok()?.file_name();
        let name = name.to_str()?;
        name.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| read_entry(name))?
    })
    .collect()
}

/// The children of `pid`, from the `children` file of each of its threads;
/// `None` when the kernel does not provide them.
fn children_files(pid: Pid) -> Option<Vec<Pid>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut kids = Vec::new();
    for task in tasks.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(text) => kids.extend(
                text.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<Pid>().ok()),
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(_) => {}
        }
    }
    Some(kids)
}

/// Every descendant of `root` at any depth, given a source of children
/// (pure, for tests). A pid seen twice (a race with /proc) counts once.
pub fn walk(root: Pid, mut children: impl FnMut(Pid) -> Vec<Pid>) -> Vec<Pid> {
    let mut found: Vec<Pid> = Vec::new();
    let mut frontier = children(root);
    while let Some(pid) = frontier.pop() {
        if pid == root || found.contains(&pid) {
            continue;
        }
        found.push(pid);
        frontier.extend(children(pid));
    }
    found
}

/// The live descendants of container-run. Orphans of the job are re-parented
/// to container-run (a subreaper or PID 1), so this finds whatever escaped
/// the job's process group with setsid or a double fork. The `children`
/// files make the cost follow the size of the job's tree, not the system's.
pub fn descendants() -> Vec<ProcEntry> {
    if !has_children() {
        return Vec::new();
    }
    let root = std::process::id() as Pid;
    let pids = match children_files(root) {
        // The root's children, read once: `walk` asks for them first.
        Some(first) => {
            let mut first = Some(first);
            walk(root, |pid| {
                first
                    .take()
                    .unwrap_or_else(|| children_files(pid).unwrap_or_default())
            })
        }
        None => {
            let procs = read_proc();
            walk(root, |pid| {
                procs
                    .iter()
                    .filter(|p| p.ppid == pid)
                    .map(|p| p.pid)
                    .collect()
            })
        }
    };
    pids.iter()
        .filter_map(|pid| read_entry(&pid.to_string()))
        .collect()
}

/// Whether container-run has a child at all, alive or not yet reaped; one
/// system call that reaps nothing (the reap loop owns reaping). Without
/// one, nothing of the tree is left to walk: an orphan is re-parented here.
pub fn has_children() -> bool {
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: siginfo_t is plain data, all zero a valid value; waitid
    // writes only the siginfo it is given, and WNOWAIT leaves an exited
    // child to be reaped by the loop.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_ALL, 0, &mut info, flags)
    };
    r == 0 || Errno::last() != Errno::ECHILD
}

/// The start of a stop, before anything else is done: `signal` to the job's
/// group, SIGTERM to the hook's, and SIGCONT to both (a process stopped
/// with SIGSTOP must act on what it was sent). Groups only: finding what
/// escaped them means reading /proc, which waits for the job's exit
/// (`sweep`). Then the CPU is yielded: the kernel wakes a signalled process
/// on the signaller's CPU, where it would wait for the stop's bookkeeping
/// (its log line, the STOP marker, the reply) before it could act on its
/// signal.
pub fn terminate(job: Option<Pid>, hook: Option<Pid>, signal: Signal) {
    for (group, first) in [(job, signal), (hook, Signal::SIGTERM)] {
        if let Some(group) = group {
            signal_group(group, first);
            signal_group(group, Signal::SIGCONT);
        }
    }
    // SAFETY: sched_yield takes no argument and cannot fail on Linux.
    unsafe {
        libc::sched_yield();
    }
}

/// At the job's exit: `signal` and SIGCONT to what is left of the job's
/// group `job`, SIGTERM and SIGCONT to every other descendant (escaped with
/// setsid or a double fork), except the groups in `skip` (signalled already
/// while their leaders lived) and the group `spare`. Each process is found
/// by the walk and signalled by its pid: a group whose leader is gone is
/// never signalled by its id.
pub fn sweep(job: Pid, signal: Signal, skip: &[Pid], spare: Option<Pid>) {
    for p in descendants() {
        if skip.contains(&p.pgrp) || Some(p.pgrp) == spare {
            continue;
        }
        let first = if p.pgrp == job {
            signal
        } else {
            Signal::SIGTERM
        };
        signal_pid(p.pid, first);
        signal_pid(p.pid, Signal::SIGCONT);
    }
}

/// `signal` (and SIGCONT, unless it is SIGKILL) to the processes left in a
/// group whose leader was reaped, found by the walk.
pub fn signal_members(group: Pid, signal: Signal) {
    for p in descendants().iter().filter(|p| p.pgrp == group) {
        signal_pid(p.pid, signal);
        if signal != Signal::SIGKILL {
            signal_pid(p.pid, Signal::SIGCONT);
        }
    }
}

/// SIGKILL to the groups (whose leaders live) and to every descendant
/// outside the group `spare`. A process that forks between the walk and
/// its SIGKILL is not missed: its child is re-parented here when it dies,
/// and the machine asks for another sweep at every reap while children are
/// left.
pub fn kill_tree(groups: &[Pid], spare: Option<Pid>) {
    for &g in groups {
        signal_group(g, Signal::SIGKILL);
    }
    for p in descendants() {
        if Some(p.pgrp) != spare {
            signal_pid(p.pid, Signal::SIGKILL);
        }
    }
}

/// One exited child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub pid: Pid,
    pub exit: Exit,
}

/// Reap every exited child (`waitpid(-1, WNOHANG)` until nothing is left to
/// reap). Returns what was reaped and whether any child is still alive.
pub fn reap_all() -> (Vec<Reaped>, bool) {
    let mut reaped = Vec::new();
    loop {
        match waitpid(NixPid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => reaped.push(Reaped {
                pid: pid.as_raw(),
                exit: Exit::Code(code as u8),
            }),
            Ok(WaitStatus::Signaled(pid, sig, _)) => reaped.push(Reaped {
                pid: pid.as_raw(),
                exit: Exit::Signal(sig as i32 as u8),
            }),
            Ok(WaitStatus::StillAlive) => return (reaped, true),
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => return (reaped, false),
            Err(e) => {
                log::warn!("waitpid: {e}");
                return (reaped, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_names() {
        let e = parse_stat("123 (a b) c)) S 45 67 67 0 -1").unwrap();
        assert_eq!(
            e,
            ProcEntry {
                pid: 123,
                ppid: 45,
                pgrp: 67
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn walk_finds_descendants_at_any_depth_once() {
        // (pid, ppid); 14 appears under two parents, as a race with /proc
        // can show it.
        let table = [
            (10, 1),
            (11, 10),
            (12, 11),
            (20, 2),
            (13, 1),
            (14, 11),
            (14, 12),
        ];
        let source = |pid| {
            table
                .iter()
                .filter(|(_, ppid)| *ppid == pid)
                .map(|(p, _)| *p)
                .collect()
        };
        let mut d = walk(10, source);
        d.sort();
        assert_eq!(d, [11, 12, 14]);
        let mut all = walk(1, source);
        all.sort();
        assert_eq!(all, [10, 11, 12, 13, 14]);
        assert_eq!(walk(99, source), Vec::<Pid>::new());
    }
}
