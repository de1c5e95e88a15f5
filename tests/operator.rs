//! End to end, issue 19: the operator's commands for the seed's use case
//! (SPEC section 6): several targets at once, every one but some, a wait
//! that changes nothing, Ctrl-C, quit, gone container-runs, and the hints
//! for mistyped modes and flags. Every stop that must last is held open by
//! a job that ignores SIGTERM and ended by killing that job: no timing is
//! assumed.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use common::*;

fn ctl(base: &Path, args: &[&str]) -> (i32, String, String) {
    output_with_deadline(mode_command("ctl", base, args))
}

/// A client mode running in the background, output in files; killed by
/// pid if the test ends first.
struct Background {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Background {
    fn ctl(t: &TempDir, args: &[&str]) -> Background {
        let out = t.file(&format!("out-{}", args.join("-").replace('/', "_")));
        let err = out.with_extension("err");
        let child = spawn_to_files(&mut mode_command("ctl", t.path(), args), &out, &err);
        Background { child, out, err }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn finish(mut self) -> (i32, String, String) {
        let status = wait_for("the client exits", || self.child.try_wait().unwrap());
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        (exit_code(status), read(&self.out), read(&self.err))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            kill(self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// A job that stops at once, named `job`, in the pod of `t`.
fn quick(t: &TempDir, job: &str) -> Run {
    let run = Run::builder(t.path(), job).spawn([child()]);
    run.wait_running();
    run
}

/// A job that ignores SIGTERM, with a stop timeout of an hour: its stop
/// lasts until the test kills it. Returns the job's pid too.
fn slow(t: &TempDir, job: &str) -> (Run, i32) {
    let rec = Recorder::new(t, &["--ignore-term"]);
    let run = Run::builder(t.path(), job)
        .args(["--stop-timeout", "1h"])
        .spawn(&rec.command);
    run.wait_running();
    (run, rec.wait_ready())
}

#[test]
fn several_targets_are_served_at_once_not_one_after_another() {
    let t = TempDir::new();
    let (slow, slow_pid) = slow(&t, "slow");
    let a = quick(&t, "a");
    let b = quick(&t, "b");
    // The slow one first: one after another, a and b would wait for it.
    let stop = Background::ctl(&t, &["stop", "slow", "a", "b/b"]);
    a.wait_state("stopped");
    b.wait_state("stopped");
    assert_eq!(slow.status()["state"], "stopping", "slow still stops");
    kill(slow_pid, libc::SIGKILL);
    let (code, out, err) = stop.finish();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["slow/slow: stopped", "a/a: stopped", "b/b: stopped"],
        "one line per target, in the order given"
    );
    for run in [&slow, &a, &b] {
        assert_eq!(run.status()["hold"], true);
    }
    // `ctl status` takes the JOB/PROCESS it prints.
    let (code, out, _) = ctl(t.path(), &["status", "a/a"]);
    assert_eq!(code, 0);
    assert!(out.lines().nth(1).unwrap().starts_with("a "), "{out}");
}

#[test]
fn all_but_the_database_then_all_is_the_seed_use_case() {
    let t = TempDir::new();
    let db = quick(&t, "database");
    let db_pid = db.wait_running();
    let api = quick(&t, "api");
    let worker = quick(&t, "worker");

    let (code, out, err) = ctl(t.path(), &["stop", "--all", "--except", "database"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "api/api: stopped\nworker/worker: stopped\n");
    for run in [&api, &worker] {
        assert_eq!(run.status()["state"], "stopped");
        assert!(run.files.stopped.exists(), "a hold");
    }
    let s = db.status();
    assert_eq!(
        (s["state"].as_str(), s["pid"].as_i64()),
        (Some("running"), Some(db_pid as i64))
    );
    assert_eq!(s["starts"], 1, "the database was left alone");

    let (code, out, err) = ctl(t.path(), &["start", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    for run in [&api, &worker, &db] {
        assert_eq!(run.status()["state"], "running");
        assert!(!run.files.stopped.exists());
    }
    assert_eq!(
        db.status()["pid"],
        db_pid,
        "START to a running job changes nothing"
    );
}

#[test]
fn an_except_that_names_nothing_is_refused_before_anything_is_sent() {
    let t = TempDir::new();
    let db = quick(&t, "database");
    let api = quick(&t, "api");
    let (code, out, err) = ctl(t.path(), &["stop", "--all", "--except", "databse"]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(
        err.contains("--except databse: no container-run databse/databse"),
        "{err}"
    );
    assert!(err.contains("api/api, database/database"), "{err}");
    for run in [&db, &api] {
        assert_eq!(run.status()["state"], "running");
        assert_eq!(run.status()["starts"], 1);
    }
}

#[test]
fn wait_sends_nothing_and_returns_once_the_state_is_reached() {
    let t = TempDir::new();
    let run = quick(&t, "job");
    let (code, out, err) = ctl(t.path(), &["wait", "job", "--until", "running"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("job/job: running (pid "), "{out}");
    let waiting = Background::ctl(&t, &["wait", "job", "--until", "stopped"]);
    // It has asked (STATUS) and waits; nothing it sent stopped the job.
    wait_until("the waiter asked", || {
        run.stderr_text().matches("received STATUS").count() >= 2
    });
    assert_eq!(run.status()["state"], "running");
    assert_eq!(run.status()["starts"], 1);
    send(&run.files.socket, "TERM");
    let (code, out, err) = waiting.finish();
    assert_eq!((code, out.as_str()), (0, "job/job: stopped\n"), "{err}");
    // A state that does not come: a timeout, exit 1.
    let (code, _, err) = ctl(
        t.path(),
        &["wait", "job", "--until", "running", "--timeout", "1s"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("timed out after 1s, still stopped"), "{err}");
}

#[test]
fn ctrl_c_ends_the_wait_not_the_stop_and_says_what_goes_on() {
    let t = TempDir::new();
    let (run, pid) = slow(&t, "job");
    let stop = Background::ctl(&t, &["stop", "job"]);
    run.wait_state("stopping");
    wait_until("container-run got the STOP", || {
        run.errors().contains("received STOP")
    });
    kill(stop.pid(), libc::SIGINT);
    let (code, out, err) = stop.finish();
    assert_eq!((code, out.as_str()), (130, ""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("job/job: interrupted: STOP was sent and goes on in container-run"),
        "{err}"
    );
    // What ctl last heard: the answer to its STOP says stopping; on a
    // loaded machine the SIGINT may come before that answer was read.
    let seen = err.split("(last seen ").nth(1).unwrap_or_default();
    assert!(
        seen.starts_with("stopping ") || seen.starts_with("no answer yet)"),
        "{err}"
    );
    // The stop goes on: container-run still holds it, then ends it.
    assert_eq!(run.status()["state"], "stopping");
    kill(pid, libc::SIGKILL);
    run.wait_state("stopped");
}

#[test]
fn quit_says_when_the_job_died_of_it() {
    let t = TempDir::new();
    // sh dies of SIGQUIT (its default action): container-run then exits
    // with 131, as a crash.
    let mut dies = Run::builder(t.path(), "dies").spawn(["/bin/sh", "-c", "exec sleep 1000"]);
    dies.wait_running();
    let (code, out, err) = ctl(t.path(), &["quit", "dies"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("SIGQUIT sent: the job's process"), "{err}");
    assert!(err.contains("ended"), "{err}");
    assert_eq!(dies.wait_exit(), 131);
    // A job that survives SIGQUIT (a JVM prints a thread dump): running.
    let rec = Recorder::new(&t, &[]);
    let lives = Run::builder(t.path(), "lives").spawn(&rec.command);
    let pid = lives.wait_running();
    rec.wait_ready();
    let (code, out, err) = ctl(t.path(), &["quit", "lives"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("lives/lives: SIGQUIT sent; running (pid {pid})\n")
    );
    assert_eq!(rec.signals(), ["SIGQUIT"]);
}

#[test]
fn a_container_run_killed_outright_is_shown_as_gone_and_the_others_answer() {
    let t = TempDir::new();
    let live = quick(&t, "live");
    let mut dead = quick(&t, "dead");
    dead.signal(libc::SIGKILL);
    dead.wait_exit();
    assert!(dead.files.socket.exists(), "a stale socket file is left");

    let (code, out, err) = ctl(t.path(), &["status", "--all"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(rows[1][..3], ["dead", "dead", "gone"], "{out}");
    assert_eq!(rows[2][..3], ["live", "live", "running"], "{out}");
    // stop --all stops the live one; the gone one runs nothing to stop.
    let (code, out, err) = ctl(t.path(), &["stop", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "live/live: stopped\n");
    assert!(
        err.starts_with("container-run: dead/dead: gone: nothing listens"),
        "{err}"
    );
    assert_eq!(live.status()["state"], "stopped");
}

#[test]
fn mistyped_modes_and_flags_get_a_hint() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["ctrl", "status", "worker"],
            "unknown mode 'ctrl': did you mean ctl?",
        ),
        (
            &["CTL", "status", "worker"],
            "unknown mode 'CTL': did you mean ctl?",
        ),
        (&["help", "ctrl"], "unknown mode 'ctrl': did you mean ctl?"),
        (
            &["help", "nope"],
            "unknown mode 'nope': the modes are ctl, bpm, monit",
        ),
        (
            &["ctl", "status", "--base-dri", "/x"],
            "unexpected argument '--base-dri': did you mean '--base-dir'?",
        ),
        (
            &["monit", "sumary"],
            "unknown command 'sumary': did you mean",
        ),
        (
            &["bpm", "stop"],
            "missing required argument: <JOB> (see container-run bpm --help)",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&OsStr> = args.iter().map(|a| os(a)).collect();
        let (code, out, err) = run_to_end(&args);
        assert_eq!((code, out.as_str()), (2, ""), "{args:?}: {err}");
        assert!(err.starts_with("container-run: "), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    // Every mode has its help.
    for mode in ["ctl", "bpm", "monit", "probe", "install", "logs"] {
        let (code, out, err) = run_to_end(&[os("help"), os(mode)]);
        assert_eq!((code, err.as_str()), (0, ""), "{mode}");
        assert!(out.contains("Usage: "), "{mode}: {out}");
    }
}

#[test]
fn without_the_rights_to_ask_the_pod_is_never_shown_as_failed_or_empty() {
    if !require_root("to run clients as uid 65534") {
        return;
    }
    let t = TempDir::new();
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let worker = quick(&t, "worker");
    let as_nobody = |args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .args(args)
            .arg("--base-dir")
            .arg(t.path());
        output_with_deadline(cmd)
    };
    for args in [
        &["bpm", "list"][..],
        &["monit", "summary"],
        &["ctl", "status", "--all"],
    ] {
        let (code, out, err) = as_nobody(args);
        assert_ne!(code, 0, "{args:?}");
        assert!(
            !out.contains("failed") && !out.contains("Does not exist"),
            "{args:?}: {out}"
        );
        assert!(!out.contains("worker"), "{args:?}: {out}");
        assert!(err.contains("permission denied"), "{args:?}: {err}");
    }
    let (code, _, err) = as_nobody(&["bpm", "running", "worker"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("permission denied"),
        "bpm running says why: {err}"
    );
    assert_eq!(worker.status()["state"], "running");
}
