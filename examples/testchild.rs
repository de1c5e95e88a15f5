//! The job process of the end-to-end tests and benchmarks: it reports what
//! it was given (signal mask, dispositions, process group, stdin) and every
//! signal it receives, so that tests wait on facts instead of sleeping.
//!
//! Options, applied in this order:
//!   --status FILE          write pid, pgid, sid, SigBlk, SigIgn, stdin target
//!   --ignore-term          ignore SIGTERM
//!   --grandchild FILE      double-fork a grandchild that calls setsid,
//!                          ignores SIGTERM and sleeps; its pid goes to FILE
//!   --orphans N            double-fork N grandchildren that exit at once
//!   --detach N FILE        double-fork N grandchildren that sleep (default
//!                          SIGTERM); their pids go to FILE, one a line
//!   --children N FILE      fork N children in our group; pids go to FILE
//!   --notify SOCK          send the datagrams `start NS PID` now and
//!                          `term NS PID` on SIGTERM to the unix socket SOCK
//!                          (NS: CLOCK_MONOTONIC nanoseconds); also taken
//!                          from the environment as TESTCHILD_NOTIFY, for
//!                          supervisors whose run files take no arguments
//!   --record FILE          append the name of every signal received
//!   --ready FILE           write our pid once set up
//!   --exit-on-quit         with --record: exit 0 on SIGQUIT too (a job
//!                          whose stop signal is QUIT, as nginx's)
//!   --exit N               exit with N instead of waiting
//!   --raise SIG            kill ourselves with signal number SIG

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use nix::sys::signal::{SigHandler, SigSet, Signal, signal};
use nix::unistd::{ForkResult, fork, getpgrp, getpid, getsid, setsid};

const WATCHED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

fn notify(socket: &str, event: &str) {
    let line = format!("{event} {} {}", monotonic_ns(), std::process::id());
    // Never block: a listener that stopped reading must not keep this
    // process from acting on the signal it is reporting.
    if let Ok(s) = std::os::unix::net::UnixDatagram::unbound()
        && s.set_nonblocking(true).is_ok()
    {
        let _ = s.send_to(line.as_bytes(), socket);
    }
}

fn append(path: &str, line: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open record file");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write record file");
}

fn write_atomic(path: &str, text: &str) {
    let tmp = format!("{path}.tmp{}", std::process::id());
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn monotonic_ns() -> u128 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128
}

fn status_report() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let stdin = std::fs::read_link("/proc/self/fd/0")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!(
        "pid {}\npgid {}\nsid {}\nSigBlk {}\nSigIgn {}\nstdin {}\n",
        getpid(),
        getpgrp(),
        getsid(None).map(|s| s.as_raw()).unwrap_or(-1),
        field("SigBlk"),
        field("SigIgn"),
        stdin
    )
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Fork; the child runs `grandchild` after a second fork and the
/// intermediate process exits, so the grandchild is re-parented.
fn double_fork(grandchild: impl FnOnce()) {
    // SAFETY: single-threaded program; the children only make system calls.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                grandchild();
                std::process::exit(0);
            }
            ForkResult::Parent { .. } => std::process::exit(0),
        },
        ForkResult::Parent { child } => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
    }
}

/// `--grandchild`, `--orphans`, `--detach` and `--children`, in that order.
fn make_descendants(args: &[String], opt: &dyn Fn(&str) -> Option<String>) {
    if let Some(path) = opt("--grandchild") {
        double_fork(|| {
            setsid().expect("setsid");
            // SAFETY: as above.
            unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }.expect("ignore");
            write_atomic(&path, &getpid().to_string());
            sleep_forever();
        });
    }
    if let Some(n) = opt("--orphans") {
        for _ in 0..n.parse::<u32>().expect("--orphans N") {
            double_fork(|| {});
        }
    }
    if let Some(n) = opt("--detach") {
        let i = args.iter().position(|a| a == "--detach").unwrap();
        let file = args.get(i + 2).cloned().expect("--detach N FILE");
        let n = n.parse::<usize>().expect("--detach N");
        for _ in 0..n {
            let file = file.clone();
            double_fork(move || {
                append(&file, &getpid().to_string());
                sleep_forever();
            });
        }
        // Exit only once every grandchild has reported (bounded: 20 s).
        for _ in 0..4000 {
            let lines = std::fs::read_to_string(&file).unwrap_or_default();
            if lines.lines().count() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if let Some(n) = opt("--children") {
        let i = args.iter().position(|a| a == "--children").unwrap();
        let file = args.get(i + 2).cloned().expect("--children N FILE");
        let mut pids = Vec::new();
        for _ in 0..n.parse::<u32>().expect("--children N") {
            // SAFETY: single-threaded; the child only sleeps.
            match unsafe { fork() }.expect("fork") {
                ForkResult::Child => sleep_forever(),
                ForkResult::Parent { child } => pids.push(child.to_string()),
            }
        }
        write_atomic(&file, &pids.join("\n"));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args.get(i + 1).cloned().unwrap_or_default())
    };
    let flag = |name: &str| args.iter().any(|a| a == name);

    if let Some(path) = opt("--status") {
        write_atomic(&path, &status_report());
    }
    let ignore_term = flag("--ignore-term");
    if ignore_term {
        // SAFETY: installing SIG_IGN has no handler to run.
        unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }.expect("ignore SIGTERM");
    }
    make_descendants(&args, &opt);
    let stamp = opt("--notify").or_else(|| std::env::var("TESTCHILD_NOTIFY").ok());
    let record = opt("--record");
    let mut watched = SigSet::empty();
    if record.is_some() || stamp.is_some() {
        for sig in WATCHED {
            if !(ignore_term && sig == Signal::SIGTERM) {
                watched.add(sig);
            }
        }
        watched.thread_block().expect("block");
    }
    // Only now, with SIGTERM blocked for sigwait, can a stop be recorded.
    if let Some(socket) = &stamp {
        notify(socket, "start");
    }
    if let Some(path) = opt("--ready") {
        write_atomic(&path, &getpid().to_string());
    }
    if let Some(code) = opt("--exit") {
        std::process::exit(code.parse().expect("--exit N"));
    }
    if let Some(sig) = opt("--raise") {
        let sig = Signal::try_from(sig.parse::<i32>().expect("--raise N")).expect("signal");
        nix::sys::signal::raise(sig).expect("raise");
    }
    if record.is_none() && stamp.is_none() {
        sleep_forever();
    }
    record_signals(
        &watched,
        stamp.as_deref(),
        record.as_deref(),
        flag("--exit-on-quit"),
    );
}

/// Wait for each watched signal: report it, record it, and exit on the
/// ones that end the test child.
fn record_signals(
    watched: &SigSet,
    stamp: Option<&str>,
    record: Option<&str>,
    exit_on_quit: bool,
) -> ! {
    loop {
        let sig = watched.wait().expect("sigwait");
        if sig == Signal::SIGTERM
            && let Some(socket) = stamp
        {
            notify(socket, "term");
        }
        if let Some(path) = record {
            append(path, sig.as_str());
        }
        if sig == Signal::SIGTERM
            || sig == Signal::SIGINT
            || (sig == Signal::SIGQUIT && exit_on_quit)
        {
            std::process::exit(0);
        }
    }
}
