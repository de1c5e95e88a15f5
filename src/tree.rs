//! The process tree (SPEC section 4): spawning a child in its own group with
//! a clean signal state, signalling groups, finding every descendant through
//! /proc, and reaping. Nothing else in container-run sends a signal or calls
//! waitpid.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid as NixPid;

use crate::machine::{Exit, Pid};

/// How a child's output is wired: the job and the post-start share
/// container-run's stdout/stderr; the condition's output is discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Inherit,
    Discard,
}

/// Why a spawn failed, as the exit code an operator expects (126/127).
#[derive(Debug)]
pub struct SpawnError {
    pub code: u8,
    pub message: String,
}

/// Start `program` in a new process group, with default signal dispositions,
/// an empty signal mask, stdin from /dev/null and a parent-death signal.
pub fn spawn(program: &OsString, args: &[OsString], output: Output) -> Result<Pid, SpawnError> {
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    match std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(null) => {
            let stdin = null.try_clone().map(Stdio::from).unwrap_or(Stdio::null());
            cmd.stdin(stdin);
            if output == Output::Discard {
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
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls, allocating nothing.
    unsafe {
        cmd.pre_exec(reset_child_signals);
    }
    match cmd.spawn() {
        // The child is reaped by the supervisor's waitpid(-1) loop, never
        // through `Child`, which is dropped here without waiting.
        Ok(child) => Ok(child.id() as Pid),
        Err(err) => {
            let name = program.to_string_lossy();
            let (code, what) = match err.raw_os_error() {
                Some(libc::ENOENT) => (127, "command not found"),
                Some(libc::EACCES) => (126, "permission denied"),
                Some(libc::ENOEXEC) => (126, "not an executable format"),
                _ => (126, "cannot execute"),
            };
            Err(SpawnError {
                code,
                message: format!("{name}: {what} ({err})"),
            })
        }
    }
}

/// The signals whose disposition container-run inherited as something other
/// than SIG_DFL (ignored, mostly; SIGPIPE by the Rust runtime). container-run
/// installs no handler of its own, so these are all a child has to reset.
static INHERITED: OnceLock<Vec<libc::c_int>> = OnceLock::new();

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
pub fn record_inherited_dispositions() {
    INHERITED.get_or_init(|| {
        (1..=libc::SIGRTMAX())
            .filter(|&sig| sig != libc::SIGKILL && sig != libc::SIGSTOP)
            .filter(|&sig| {
                let mut old: KernelSigaction = [0; 4];
                raw_sigaction(sig, None, Some(&mut old));
                old[0] != 0
            })
            .collect()
    });
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
fn reset_child_signals() -> io::Result<()> {
    let default_action: KernelSigaction = [0; 4];
    match INHERITED.get() {
        Some(signals) => {
            for &sig in signals {
                raw_sigaction(sig, Some(&default_action), None);
            }
        }
        None => {
            for sig in 1..=libc::SIGRTMAX() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    raw_sigaction(sig, Some(&default_action), None);
                }
            }
        }
    }
    // SAFETY: plain system calls on this process's own signal state.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        // If container-run is killed outright, the job must not run on
        // unsupervised.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
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
fn children_of(pid: Pid) -> Option<Vec<Pid>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut kids = Vec::new();
    for task in tasks.flatten() {
        let file = task.path().join("children");
        match std::fs::read_to_string(&file) {
            Ok(text) => kids.extend(
                text.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<Pid>().ok()),
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound && pid == own_pid() => return None,
            Err(_) => {}
        }
    }
    Some(kids)
}

fn own_pid() -> Pid {
    std::process::id() as Pid
}

/// Every descendant of `root` in `procs`, at any depth (pure, for tests).
pub fn descendants_in(procs: &[ProcEntry], root: Pid) -> Vec<ProcEntry> {
    let mut found: Vec<ProcEntry> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent && p.pid != root) {
            if !found.iter().any(|f| f.pid == p.pid) {
                found.push(*p);
                frontier.push(p.pid);
            }
        }
    }
    found
}

/// The live descendants of container-run. Orphans of the job are re-parented
/// to container-run (a subreaper or PID 1), so this finds whatever escaped
/// the job's process group with setsid or a double fork. Walks the tree
/// through the `children` files, so the cost follows the size of the job's
/// tree, not of the system.
pub fn descendants() -> Vec<ProcEntry> {
    let root = own_pid();
    let Some(first) = children_of(root) else {
        return descendants_in(&read_proc(), root);
    };
    let mut found: Vec<ProcEntry> = Vec::new();
    let mut frontier = first;
    while let Some(pid) = frontier.pop() {
        if found.iter().any(|f| f.pid == pid) {
            continue;
        }
        if let Some(entry) = read_entry(&pid.to_string()) {
            found.push(entry);
            frontier.extend(children_of(pid).unwrap_or_default());
        }
    }
    found
}

/// Send `signals` in order to the groups, then to every descendant outside
/// them. The groups come first: they are known without reading /proc.
fn signal_tree(groups: &[Pid], signals: &[Signal]) {
    for &g in groups {
        for &sig in signals {
            signal_group(g, sig);
        }
    }
    for p in descendants() {
        if !groups.contains(&p.pgrp) {
            for &sig in signals {
                signal_pid(p.pid, sig);
            }
        }
    }
}

/// The start of a stop: SIGTERM, then SIGCONT so that a process stopped
/// with SIGSTOP acts on it, to the groups and to everything that escaped.
pub fn terminate(groups: &[Pid]) {
    signal_tree(groups, &[Signal::SIGTERM, Signal::SIGCONT]);
}

/// SIGKILL to every descendant. Called again after each reap while a stop
/// is past its timeout, so that processes forked or re-parented during a
/// sweep are caught by the next one.
pub fn kill_tree(groups: &[Pid]) {
    for &g in groups {
        signal_group(g, Signal::SIGKILL);
    }
    // A process may fork between the walk and its SIGKILL; sweep again
    // until a walk finds nothing new (bounded: SIGKILLed processes cannot
    // fork, so each sweep can only find what the previous one raced with).
    let mut killed: Vec<Pid> = Vec::new();
    for _ in 0..8 {
        let fresh: Vec<Pid> = descendants()
            .into_iter()
            .map(|p| p.pid)
            .filter(|pid| !killed.contains(pid))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for &pid in &fresh {
            signal_pid(pid, Signal::SIGKILL);
        }
        killed.extend(fresh);
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
    fn descendants_at_any_depth() {
        let p = |pid, ppid| ProcEntry {
            pid,
            ppid,
            pgrp: pid,
        };
        let procs = [p(1, 0), p(10, 1), p(11, 10), p(12, 11), p(20, 2), p(13, 1)];
        let mut d: Vec<Pid> = descendants_in(&procs, 10).iter().map(|e| e.pid).collect();
        d.sort();
        assert_eq!(d, [11, 12]);
        let mut all: Vec<Pid> = descendants_in(&procs, 1).iter().map(|e| e.pid).collect();
        all.sort();
        assert_eq!(all, [10, 11, 12, 13]);
    }
}
