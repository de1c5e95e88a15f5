//! End to end: the life cycle of SPEC section 4 and the files of section 2,
//! with the real binary, real signals and /proc.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use common::*;

/// A field of /proc/PID/status, read from outside the process.
fn proc_status(pid: i32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap()
}

#[test]
fn child_gets_own_group_clean_signals_and_dev_null_stdin() {
    let t = TempDir::new();
    let report = t.file("report");
    let mut b = Run::builder(t.path(), "job");
    // container-run itself starts with signals ignored and blocked, as it
    // may under a careless parent; the child must get none of that.
    unsafe {
        b.command().pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            libc::signal(libc::SIGRTMIN() + 3, libc::SIG_IGN);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    // `sleep` touches no signal: what /proc shows of it is what it was given.
    let run = b.spawn(["sleep", "1000"]);
    let pid = run.wait_running();
    assert_eq!(proc_status(pid, "SigBlk"), "0000000000000000");
    assert_eq!(proc_status(pid, "SigIgn"), "0000000000000000");
    let container_run_ignores = proc_status(run.pid(), "SigIgn");
    assert_ne!(
        container_run_ignores, "0000000000000000",
        "the test set some"
    );
    let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(stdin, std::path::Path::new("/dev/null"));
    assert_eq!(ppid(pid), Some(run.pid()));

    // The test child confirms its own group from the inside.
    let t2 = TempDir::new();
    let run2 = Run::builder(t2.path(), "job").spawn([
        child().as_os_str(),
        os("--status"),
        report.as_os_str(),
    ]);
    let pid2 = run2.wait_running();
    wait_until("status report", || report.exists());
    assert_eq!(report_field(&report, "pid"), pid2.to_string());
    assert_eq!(report_field(&report, "pgid"), pid2.to_string(), "own group");
    assert_eq!(report_field(&report, "SigBlk"), "0000000000000000");
}

#[test]
fn files_exist_exactly_while_running_and_socket_is_0660() {
    let t = TempDir::new();
    let mut run = Run::builder(t.path(), "nats")
        .process_name("gnatsd")
        .spawn([child()]);
    let pid = run.wait_running();
    let files = &run.files;
    assert!(files.socket.ends_with("data/nats/gnatsd_containerrun.sock"));
    let mode = std::fs::metadata(&files.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    assert_eq!(read_pid(&files.pidfile), Some(pid));
    assert!(files.pidfile.ends_with("sys/run/bpm/nats/gnatsd.pid"));

    send(&files.socket, "TERM");
    run.wait_stopped();
    assert!(!alive(pid));
    assert!(
        files.socket.exists(),
        "the socket stays while container-run runs"
    );
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(), 0);
    assert!(!run.files.socket.exists(), "socket removed at exit");
    // No temporary files left behind by the atomic writes.
    let data: Vec<_> = std::fs::read_dir(t.path().join("data/nats"))
        .unwrap()
        .collect();
    assert!(data.is_empty(), "{data:?}");
}

#[test]
fn stop_via_netcat_and_start_via_socat() {
    let t = TempDir::new();
    let rec = Recorder::new(&t, &[]);
    let mut run = Run::builder(t.path(), "job").spawn(&rec.command);
    let first = run.wait_running();
    assert_eq!(rec.wait_ready(), first);
    let sock = run.files.socket.clone();

    let nc = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo STOP | nc -w 1 -uU {}", sock.display()))
        .status()
        .unwrap();
    assert!(nc.success());
    run.wait_stopped();
    assert_eq!(rec.signals(), ["SIGTERM"]);
    assert!(!alive(first));
    assert!(run.files.stopped.exists(), "STOP writes the hold marker");
    assert!(run.try_exit().is_none(), "container-run stays up");
    let s = run.status();
    assert_eq!(s["state"], "stopped");
    assert_eq!(s["hold"], true);
    assert!(s["pid"].is_null());

    let socat = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo START | socat - UNIX-SENDTO:{}",
            sock.display()
        ))
        .status()
        .unwrap();
    assert!(socat.success());
    let second = run.wait_running();
    wait_until("second child ready", || {
        read_pid(&rec.ready) == Some(second)
    });
    assert_ne!(first, second);
    assert!(!run.files.stopped.exists(), "START removes the hold marker");
    let s = run.wait_state("running");
    assert_eq!(s["pid"], second);
    assert_eq!(s["starts"], 2);
    assert_eq!(s["hold"], false);
}

#[test]
fn term_stops_without_hold_and_quit_signals() {
    let t = TempDir::new();
    let rec = Recorder::new(&t, &[]);
    let run = Run::builder(t.path(), "job").spawn(&rec.command);
    run.wait_running();
    rec.wait_ready();
    let s = request(&run.files.socket, "QUIT");
    assert_eq!(s["state"], "running", "QUIT changes no state");
    wait_until("SIGQUIT recorded", || rec.signals() == ["SIGQUIT"]);
    request(&run.files.socket, "TERM");
    run.wait_stopped();
    assert!(!run.files.stopped.exists(), "TERM is not a hold");
    assert_eq!(run.status()["hold"], false);
}

#[test]
fn signals_are_forwarded_to_the_job() {
    let t = TempDir::new();
    let rec = Recorder::new(&t, &[]);
    let run = Run::builder(t.path(), "job").spawn(&rec.command);
    run.wait_running();
    rec.wait_ready();
    let sent = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGWINCH, "SIGWINCH"),
    ];
    let mut want = Vec::new();
    // One at a time, so that equal signals cannot merge while pending.
    for (sig, name) in sent {
        run.signal(sig);
        want.push(name.to_string());
        wait_until(&format!("{name} forwarded"), || rec.signals() == want);
    }
    assert_eq!(run.status()["state"], "running");
}

#[test]
fn sigterm_and_sigint_stop_everything_and_exit_zero() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let t = TempDir::new();
        let rec = Recorder::new(&t, &[]);
        let mut run = Run::builder(t.path(), "job").spawn(&rec.command);
        let pid = run.wait_running();
        assert_eq!(rec.wait_ready(), pid);
        run.signal(sig);
        assert_eq!(run.wait_exit(), 0);
        assert_eq!(rec.signals(), ["SIGTERM"], "the job gets SIGTERM");
        assert!(!alive(pid));
        assert!(!run.files.running.exists() && !run.files.pidfile.exists());
        assert!(!run.files.socket.exists());
        assert!(!run.files.stopped.exists(), "SIGTERM is not a hold");
    }
}

#[test]
fn main_exit_zero_stays_up_and_start_brings_it_back() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "job").spawn([child().as_os_str(), os("--exit"), os("0")]);
    let s = run.wait_state("stopped");
    assert_eq!(s["last_exit"], 0);
    assert_eq!(s["hold"], false);
    assert!(!run.files.running.exists() && !run.files.stopped.exists());
    let s = request(&run.files.socket, "START");
    assert!(s["starts"].as_u64().unwrap() >= 2, "{s}");
}

#[test]
fn exit_status_of_the_job_is_propagated() {
    for (args, want, why) in [
        (vec!["--exit", "3"], 3, "exited with status 3"),
        (vec!["--exit", "130"], 130, "exited with status 130"),
        (
            vec!["--raise", "9"],
            137,
            "was killed by signal 9 (SIGKILL)",
        ),
        (
            vec!["--raise", "15"],
            143,
            "was killed by signal 15 (SIGTERM)",
        ),
    ] {
        let t = TempDir::new();
        let mut cmd = vec![child().into_os_string()];
        cmd.extend(args.iter().map(Into::into));
        let mut run = Run::builder(t.path(), "job").spawn(cmd);
        assert_eq!(run.wait_exit(), want, "{args:?}");
        let err = run.errors();
        assert!(err.contains(why), "{args:?}: {err}");
        assert!(!run.files.socket.exists());
        assert!(!run.files.running.exists());
    }
}

#[test]
fn job_killed_from_outside_gives_128_plus_signal() {
    let t = TempDir::new();
    let mut run = Run::builder(t.path(), "job").spawn([child()]);
    let pid = run.wait_running();
    kill(pid, libc::SIGKILL);
    assert_eq!(run.wait_exit(), 137);
    assert!(run.stderr_text().contains("killed by signal 9"));
}

#[test]
fn missing_and_unexecutable_commands_are_127_and_126() {
    let t = TempDir::new();
    let script = t.file("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (cmd, want) in [
        (t.file("does-not-exist"), 127),
        ("no-such-command-on-path".into(), 127),
        (script.clone(), 126),
        (t.path().to_path_buf(), 126),
    ] {
        let mut run = Run::builder(t.path(), "job").spawn([&cmd]);
        assert_eq!(run.wait_exit(), want, "{}", cmd.display());
        let err = run.stderr_text();
        assert!(err.contains(&cmd.display().to_string()), "{err}");
        assert!(!run.files.socket.exists(), "nothing left bound");
        assert!(!run.files.running.exists());
        if want == 127 {
            assert!(!t.path().join("data").exists(), "nothing created");
        }
    }
}

#[test]
fn child_ignoring_sigterm_is_killed_after_the_stop_timeout() {
    let t = TempDir::new();
    let (run, pid) = Run::stubborn(&t, "300ms");
    request(&run.files.socket, "STOP");
    run.wait_stopped();
    assert!(!alive(pid));
    assert!(run.stderr_text().contains("stop timeout"));
    assert_eq!(run.status()["last_exit"], 137);
}

#[test]
fn sigstopped_child_still_acts_on_sigterm() {
    let t = TempDir::new();
    let rec = Recorder::new(&t, &[]);
    // A stop timeout far beyond the test's deadline: reaching `stopped`
    // proves the SIGTERM acted, not a SIGKILL.
    let run = Run::builder(t.path(), "job")
        .args(["--stop-timeout", "1h"])
        .spawn(&rec.command);
    let pid = run.wait_running();
    assert_eq!(rec.wait_ready(), pid);
    kill(pid, libc::SIGSTOP);
    wait_until("child stopped", || proc_state(pid) == Some('T'));
    request(&run.files.socket, "STOP");
    run.wait_stopped();
    assert_eq!(rec.signals(), ["SIGTERM"]);
}

#[test]
fn setsid_grandchild_that_escaped_the_group_is_killed() {
    let t = TempDir::new();
    let gc_file = t.file("grandchild");
    let mut run = Run::builder(t.path(), "job")
        .args(["--stop-timeout", "300ms"])
        .spawn([child().as_os_str(), os("--grandchild"), gc_file.as_os_str()]);
    let pid = run.wait_running();
    let gc = wait_pid_file(&gc_file);
    run.track(gc);
    wait_until("grandchild re-parented to container-run", || {
        ppid(gc) == Some(run.pid())
    });
    assert_ne!(report_sid(gc), pid, "it left the job's session and group");
    request(&run.files.socket, "STOP");
    run.wait_stopped();
    assert!(!alive(pid));
    assert!(!alive(gc), "the escaped grandchild is gone too");
    assert!(descendants(run.pid()).is_empty());
}

fn report_sid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(4)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn fifty_grandchildren_of_an_exiting_job_are_all_reaped() {
    let t = TempDir::new();
    let kids = t.file("kids");
    let run = Run::builder(t.path(), "job").spawn([
        child().as_os_str(),
        os("--children"),
        os("50"),
        kids.as_os_str(),
    ]);
    let pid = run.wait_running();
    let pids: Vec<i32> = wait_for("children listed", || {
        let l = lines(&kids);
        (l.len() == 50).then(|| l.iter().map(|p| p.parse().unwrap()).collect())
    });
    request(&run.files.socket, "TERM");
    run.wait_stopped();
    assert!(!alive(pid));
    for p in pids {
        assert!(proc_state(p).is_none(), "{p} left behind or unreaped");
    }
}

#[test]
fn stop_marker_outlives_a_restart_and_only_stop_writes_it() {
    let t = TempDir::new();
    let mut run = Run::builder(t.path(), "job").spawn([child()]);
    run.wait_running();
    request(&run.files.socket, "STOP");
    run.wait_stopped();
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(), 0);
    assert!(run.files.stopped.exists());

    // The "restarted container": comes up stopped, socket bound, no files.
    let started = t.file("started");
    let run2 = Run::builder(t.path(), "job").spawn([
        child().as_os_str(),
        os("--ready"),
        started.as_os_str(),
    ]);
    let s = run2.wait_state("stopped");
    assert_eq!(s["hold"], true);
    assert_eq!(s["starts"], 0);
    assert!(!run2.files.running.exists() && !run2.files.pidfile.exists());
    assert!(!started.exists(), "the job was not started");
    request(&run2.files.socket, "START");
    let pid = run2.wait_running();
    assert_eq!(wait_pid_file(&started), pid);
    assert!(!run2.files.stopped.exists());
}

#[test]
fn stale_socket_is_replaced() {
    let t = TempDir::new();
    let files = Files::new(t.path(), "job", "job");
    std::fs::create_dir_all(files.socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixDatagram::bind(&files.socket).unwrap());
    assert!(files.socket.exists());
    let run = Run::builder(t.path(), "job").spawn([child()]);
    run.wait_running();
    assert_eq!(run.status()["state"], "running");
}

#[test]
fn live_socket_is_not_stolen() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "job").spawn([child()]);
    let pid = run.wait_running();
    let started = t.file("second-started");
    let mut second = Run::builder(t.path(), "job").spawn([
        child().as_os_str(),
        os("--ready"),
        started.as_os_str(),
    ]);
    assert_eq!(second.wait_exit(), 1);
    let err = second.errors();
    assert!(err.contains("in use"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!started.exists(), "the second job never started");
    // The first still owns its socket and files.
    let s = run.status();
    assert_eq!(s["pid"], pid);
    assert_eq!(read_pid(&run.files.pidfile), Some(pid));
}

#[test]
fn sigkill_to_container_run_takes_the_job_with_it() {
    let t = TempDir::new();
    let mut run = Run::builder(t.path(), "job").spawn([child()]);
    let pid = run.wait_running();
    run.signal(libc::SIGKILL);
    assert_eq!(run.wait_exit(), 137);
    wait_until("job killed by the parent-death signal", || !alive(pid));
}
