//! End to end: faults that try to make container-run lose a process, leave
//! one behind, or lose its controls.

mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn sigstopped_child_that_ignores_sigterm_dies_at_the_stop_timeout() {
    let t = TempDir::new();
    let (run, pid) = Run::stubborn(&t, "300ms");
    kill(pid, libc::SIGSTOP);
    wait_until("child stopped", || proc_state(pid) == Some('T'));
    request(&run.files.socket, "STOP");
    let s = run.wait_state("stopped");
    assert_eq!(s["last_exit"], 137, "killed by SIGKILL");
    assert!(!alive(pid));
}

#[test]
fn job_that_forks_fifty_grandchildren_and_exits_leaves_nothing() {
    let t = TempDir::new();
    let pids_file = t.file("pids");
    let mut run = Run::builder(t.path(), "job").spawn([
        child().as_os_str(),
        os("--detach"),
        os("50"),
        pids_file.as_os_str(),
        os("--exit"),
        os("0"),
    ]);
    let s = run.wait_state("stopped");
    assert_eq!(s["last_exit"], 0);
    let pids: Vec<i32> = lines(&pids_file)
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 50);
    for &p in &pids {
        run.track(p);
    }
    for p in pids {
        assert!(proc_state(p).is_none(), "{p} left behind or unreaped");
    }
    assert!(descendants(run.pid()).is_empty());
    assert!(run.try_exit().is_none(), "exit 0 keeps container-run up");
}

#[test]
fn deleted_socket_is_bound_again() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "job").spawn([child()]);
    let pid = run.wait_running();
    std::fs::remove_file(&run.files.socket).unwrap();
    wait_until("socket re-created", || {
        try_request(&run.files.socket, "STATUS").is_some()
    });
    assert_eq!(run.status()["pid"], pid);
    assert!(run.errors().contains("was removed: binding it again"));

    // The whole data directory, too (sentinel and marker go with it). Moved
    // aside first, so that the removal cannot race with the re-creation.
    let aside = t.path().join("data.old");
    std::fs::rename(t.path().join("data"), &aside).unwrap();
    std::fs::remove_dir_all(&aside).unwrap();
    wait_until("socket re-created in a new directory", || {
        try_request(&run.files.socket, "STATUS").is_some()
    });
    request(&run.files.socket, "STOP");
    run.wait_stopped();
    assert!(run.files.stopped.exists());
}

#[test]
fn read_only_base_directory_is_a_clear_error_and_nothing_starts() {
    if !require_root("to mount a read-only file system") {
        return;
    }
    let t = TempDir::new();
    let base = t.file("ro");
    std::fs::create_dir(&base).unwrap();
    let started = t.file("started");
    // A private mount namespace with a read-only tmpfs at BASE: root's
    // permission bits cannot bypass EROFS.
    let script = format!(
        "mount -t tmpfs -o ro tmpfs {b} && exec {cr} --base-dir {b} --job-name j -- {c} --ready {s}",
        b = base.display(),
        cr = bin().display(),
        c = child().display(),
        s = started.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let (code, _, err) = output_with_deadline(cmd);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        err,
        format!(
            "container-run: cannot write under base directory {}: read-only file system\n",
            base.display()
        )
    );
    assert!(!started.exists());
}

#[test]
fn missing_base_directory_is_created() {
    let t = TempDir::new();
    let base = t.file("does/not/exist/yet");
    let run = Run::builder(&base, "job").spawn([child()]);
    run.wait_running();
    assert!(base.join("data/job").is_dir());
}

#[test]
fn sigkill_as_pid_1_leaves_no_process_of_the_tree() {
    if !require_root("for unshare --pid") {
        return;
    }
    let t = TempDir::new();
    let gc = t.file("gc");
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--mount", "--fork", "--mount-proc"])
        .arg(bin())
        .arg("--base-dir")
        .arg(t.path())
        .args(["--job-name", "job", "--"])
        .arg(child())
        .arg("--grandchild")
        .arg(&gc)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let outer = unshare.id() as i32;
    wait_until("grandchild started", || gc.exists());
    let sup = wait_for("container-run", || {
        descendants(outer)
            .into_iter()
            .find(|&p| ppid(p) == Some(outer))
    });
    // The double fork's middle process may not have exited yet when the
    // grandchild has written its file: wait for the settled tree.
    wait_until("job and escaped grandchild, nothing else", || {
        descendants(sup).len() == 2
    });
    let tree = descendants(sup);
    kill(sup, libc::SIGKILL);
    wait_for("unshare exits", || unshare.try_wait().unwrap());
    for p in tree {
        wait_until("tree gone", || !alive(p));
    }
}

#[test]
fn a_thousand_signals_in_a_burst() {
    let t = TempDir::new();
    let rec = Recorder::new(&t, &[]);
    let mut run = Run::builder(t.path(), "job").spawn(&rec.command);
    let pid = run.wait_running();
    rec.wait_ready();
    let sigs = [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];
    for i in 0..1000 {
        run.signal(sigs[i % sigs.len()]);
    }
    // Signals of one kind merge while pending; each kind arrives at least once.
    wait_until("every kind forwarded", || {
        let got = rec.signals();
        ["SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH"]
            .iter()
            .all(|s| got.iter().any(|g| g == s))
    });
    let s = run.status();
    assert_eq!(
        (s["state"].as_str(), s["pid"].as_i64()),
        (Some("running"), Some(pid as i64))
    );
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(), 0);
    assert!(!alive(pid));
}

/// Issue 10, finding 8: a STOP whose marker cannot be written (a full disk)
/// is no hold, and `ctl stop` says that a restart will run the job again.
#[test]
fn a_hold_that_cannot_be_written_is_reported_as_none() {
    if !require_root("to mount a small tmpfs in a mount namespace") {
        return;
    }
    let t = TempDir::new();
    let base = t.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=64k tmpfs {base}
{bin} --base-dir {base} --job-name job -- {child} &
cr=$!
for i in $(seq 2000); do [ -e {base}/sys/run/bpm/job/job.pid ] && break; sleep 0.01; done
dd if=/dev/zero of={base}/fill bs=4k 2>/dev/null
{bin} ctl stop job --base-dir {base}
echo "code=$?"
[ -e {base}/data/job/job_containerrun.stopped ] && echo marker || echo no-marker
kill -9 $cr
wait $cr 2>/dev/null
exit 0
"#,
        base = base.display(),
        bin = bin().display(),
        child = child().display()
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--fork", "sh", "-c", &script]);
    let (code, out, err) = output_with_deadline(cmd);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("code=1\n") && out.contains("no-marker"),
        "{out}{err}"
    );
    assert!(
        err.contains("job/job: stopped, but the STOP marker could not be written: a container restart will run the job again"),
        "{err}"
    );
}
