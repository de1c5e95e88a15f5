//! End to end: the post-start hook and its condition (SPEC section 5).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

/// An executable shell script in the test's directory.
fn script(t: &TempDir, name: &str, body: &str) -> PathBuf {
    let p = t.file(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn count(path: &Path) -> usize {
    lines(path).len()
}

#[test]
fn post_start_gets_its_arguments_in_order() {
    let t = TempDir::new();
    let out = t.file("args");
    let ps = script(
        &t,
        "post-start",
        &format!(
            "printf '%s\\n' \"$@\" > {}.tmp && mv {0}.tmp {0}",
            out.display()
        ),
    );
    let run = Run::builder(t.path(), "job")
        .arg("--post-start-name")
        .arg(&ps)
        .args(["--post-start-arg", "one", "--post-start-arg", "two words"])
        .args(["--post-start-arg", "-x", "--post-start-arg=--flag=3"])
        .spawn([child()]);
    run.wait_running();
    wait_until("post-start ran", || out.exists());
    assert_eq!(lines(&out), ["one", "two words", "-x", "--flag=3"]);
    let s = run.wait_state("running");
    wait_until("post-start done", || run.status()["post_start"] == "done");
    assert_eq!(s["starts"], 1);
}

#[test]
fn condition_failing_twice_then_passing_runs_post_start_after_the_third_try() {
    let t = TempDir::new();
    let tries = t.file("tries");
    let seen = t.file("seen");
    let cond = script(
        &t,
        "condition",
        &format!(
            "echo try >> {0}; echo noise; [ $(wc -l < {0}) -ge 3 ]",
            tries.display()
        ),
    );
    let ps = script(
        &t,
        "post-start",
        &format!("wc -l < {} > {}", tries.display(), seen.display()),
    );
    let run = Run::builder(t.path(), "job")
        .arg("--post-start-name")
        .arg(&ps)
        .arg("--post-start-condition-name")
        .arg(&cond)
        .args(["--condition-interval", "50ms"])
        .spawn([child()]);
    run.wait_running();
    wait_until("post-start done", || run.status()["post_start"] == "done");
    assert_eq!(std::fs::read_to_string(&seen).unwrap().trim(), "3");
    assert_eq!(count(&tries), 3, "no try after the condition passed");
    assert!(
        !run.stderr_text().contains("noise"),
        "condition output is discarded"
    );
}

#[test]
fn condition_arguments_are_passed() {
    let t = TempDir::new();
    let done = t.file("done");
    let run = Run::builder(t.path(), "job")
        .args(["--post-start-name", "touch", "--post-start-arg"])
        .arg(&done)
        .args(["--post-start-condition-name", "test"])
        .args(["--post-start-condition-arg", "-d"])
        .arg("--post-start-condition-arg")
        .arg(t.path())
        .spawn([child()]);
    run.wait_running();
    wait_until("post-start (found on PATH) ran", || done.exists());
}

#[test]
fn missing_post_start_is_skipped_and_the_job_runs_on() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "job")
        .arg("--post-start-name")
        .arg(t.file("no-such-post-start"))
        .spawn([child()]);
    let pid = run.wait_running();
    wait_until("skipped", || run.status()["post_start"] == "skipped");
    assert!(run.errors().contains("not found: skipped"));
    let s = run.status();
    assert_eq!(s["state"], "running");
    assert_eq!(s["pid"], pid);
}

#[test]
fn failing_post_start_stops_the_job_and_exits_non_zero() {
    let t = TempDir::new();
    let rec = Recorder::new(&t, &[]);
    let ps = script(
        &t,
        "post-start",
        &format!(
            "while [ ! -e {} ]; do sleep 0.01; done; exit 3",
            rec.ready.display()
        ),
    );
    let mut run = Run::builder(t.path(), "job")
        .arg("--post-start-name")
        .arg(&ps)
        .spawn(&rec.command);
    // The post-start fails as soon as the job is ready: the job's files may
    // already be gone again, so the ready file names its pid.
    let pid = rec.wait_ready();
    assert_eq!(run.wait_exit(), 1);
    assert_eq!(rec.signals(), ["SIGTERM"]);
    assert!(!alive(pid));
    let err = run.errors();
    assert!(err.contains("post-start exited with status 3"), "{err}");
    assert!(!run.files.running.exists() && !run.files.socket.exists());
}

#[test]
fn post_start_timeout_kills_it_and_exits_non_zero() {
    let t = TempDir::new();
    let ps_pid = t.file("ps-pid");
    let ps = script(
        &t,
        "post-start",
        &format!("echo $$ > {}; exec sleep 1000", ps_pid.display()),
    );
    let rec = Recorder::new(&t, &[]);
    let mut run = Run::builder(t.path(), "job")
        .arg("--post-start-name")
        .arg(&ps)
        .args(["--post-start-timeout", "300ms"])
        .spawn(&rec.command);
    // The timeout may fire before either has set up (a loaded machine):
    // whatever of them started must be gone once container-run has exited.
    assert_eq!(run.wait_exit(), 1);
    for pid in [read_pid(&rec.ready), read_pid(&ps_pid)]
        .into_iter()
        .flatten()
    {
        run.track(pid);
        assert!(!alive(pid), "{pid} outlived container-run");
    }
    assert!(run.errors().contains("did not finish within"));
}

#[test]
fn stop_during_the_condition_loop_leaves_nothing_and_is_not_a_failure() {
    let t = TempDir::new();
    let tries = t.file("tries");
    let cond = script(
        &t,
        "condition",
        &format!("echo $$ >> {}; exec sleep 1000", tries.display()),
    );
    let mut run = Run::builder(t.path(), "job")
        .args(["--post-start-name", "true", "--post-start-condition-name"])
        .arg(&cond)
        .spawn([child()]);
    run.wait_running();
    let cond_pid: i32 = wait_for("condition running", || lines(&tries).first()?.parse().ok());
    assert_eq!(run.status()["post_start"], "pending");
    request(&run.files.socket, "STOP");
    let s = run.wait_state("stopped");
    assert_eq!(s["post_start"], "cancelled");
    assert!(!alive(cond_pid));
    assert!(descendants(run.pid()).is_empty());
    assert!(
        run.try_exit().is_none(),
        "a cancelled post-start is no failure"
    );
}

#[test]
fn stop_between_condition_tries_cancels_the_next_try() {
    let t = TempDir::new();
    let tries = t.file("tries");
    let cond = script(
        &t,
        "condition",
        &format!("echo x >> {}; exit 1", tries.display()),
    );
    let mut run = Run::builder(t.path(), "job")
        .args(["--post-start-name", "true", "--post-start-condition-name"])
        .arg(&cond)
        .args(["--condition-interval", "1h"])
        .spawn([child()]);
    run.wait_running();
    wait_until("first try failed", || {
        count(&tries) == 1 && descendants(run.pid()).len() == 1
    });
    request(&run.files.socket, "STOP");
    run.wait_state("stopped");
    assert!(run.try_exit().is_none());
    // START begins a new loop at once, with a new first try.
    request(&run.files.socket, "START");
    wait_until("second loop's first try", || count(&tries) == 2);
}

#[test]
fn stop_during_a_long_post_start_kills_its_whole_group_and_start_reruns_it() {
    let t = TempDir::new();
    let runs = t.file("runs");
    let ps = script(
        &t,
        "post-start",
        &format!(
            "echo $$ >> {}; sleep 1000 & exec sleep 1000",
            runs.display()
        ),
    );
    let mut run = Run::builder(t.path(), "job")
        .arg("--post-start-name")
        .arg(&ps)
        .spawn([child()]);
    let pid = run.wait_running();
    let hook: i32 = wait_for("post-start running", || lines(&runs).first()?.parse().ok());
    wait_until("post-start and its child", || {
        descendants(run.pid()).len() == 3
    });
    let s = run.status();
    assert_eq!(s["post_start"], "running");
    request(&run.files.socket, "STOP");
    let s = run.wait_state("stopped");
    assert_eq!(s["post_start"], "cancelled");
    assert!(!alive(pid) && !alive(hook));
    assert!(descendants(run.pid()).is_empty());

    request(&run.files.socket, "START");
    run.wait_running();
    wait_until("post-start ran again", || count(&runs) == 2);
    assert_eq!(run.status()["post_start"], "running");
    // The post-start's background sleep is no child of container-run, so
    // the parent-death signal that ends the others when the test kills
    // container-run does not reach it: kill it by pid too.
    wait_until("post-start and its child again", || {
        descendants(run.pid()).len() == 3
    });
    for pid in descendants(run.pid()) {
        run.track(pid);
    }
}

#[test]
fn sigterm_during_post_start_exits_zero_with_nothing_left() {
    let t = TempDir::new();
    let runs = t.file("runs");
    let ps = script(
        &t,
        "post-start",
        &format!("echo $$ >> {}; exec sleep 1000", runs.display()),
    );
    let mut run = Run::builder(t.path(), "job")
        .arg("--post-start-name")
        .arg(&ps)
        .spawn([child()]);
    let pid = run.wait_running();
    let hook: i32 = wait_for("post-start running", || lines(&runs).first()?.parse().ok());
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(), 0);
    assert!(!alive(pid) && !alive(hook));
}
