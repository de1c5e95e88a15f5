//! End to end: `container-run ctl`, the `bpm` command and `probe` against
//! real container-runs (SPEC section 6).

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;

fn ctl(base: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&OsStr> = vec![os("ctl"), os("--base-dir"), base.as_os_str()];
    all.extend(args.iter().map(|a| os(a)));
    run_to_end(&all)
}

fn bpm(base: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&OsStr> = vec![os("bpm"), os("--base-dir"), base.as_os_str()];
    all.extend(args.iter().map(|a| os(a)));
    run_to_end(&all)
}

#[test]
fn ctl_stop_returns_once_files_are_gone_and_start_once_running() {
    let t = TempDir::new();
    let rec = Recorder::new(&t, &[]);
    let run = Run::builder(t.path(), "nats")
        .process_name("gnatsd")
        .spawn(&rec.command);
    let first = run.wait_running();
    rec.wait_ready();

    let (code, out, err) = ctl(t.path(), &["stop", "nats", "-p", "gnatsd"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "nats/gnatsd: stopped");
    // No waiting here: ctl returned only after the files were removed.
    assert!(!run.files.running.exists());
    assert!(!run.files.pidfile.exists());
    assert!(
        run.files.stopped.exists(),
        "ctl stop is the operator's hold"
    );
    assert!(!alive(first));
    assert_eq!(rec.signals(), ["SIGTERM"]);

    let (code, out, _) = ctl(t.path(), &["start", "nats", "-p", "gnatsd"]);
    assert_eq!(code, 0);
    let pid = read_pid(&run.files.pidfile).expect("pidfile written before ctl start returns");
    assert_eq!(out.trim(), format!("nats/gnatsd: running (pid {pid})"));
    assert!(run.files.running.exists());
    assert!(!run.files.stopped.exists());
}

#[test]
fn ctl_status_table_and_json() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "nats").spawn([child()]);
    let pid = run.wait_running();
    let (code, out, _) = ctl(t.path(), &["status", "nats"]);
    assert_eq!(code, 0);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 2, "{out}");
    let header: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "JOB",
            "PROCESS",
            "STATE",
            "PID",
            "STARTS",
            "UPTIME",
            "LAST-EXIT",
            "POST-START",
            "DRAIN",
            "HOLD"
        ]
    );
    let cells: Vec<&str> = rows[1].split_whitespace().collect();
    assert_eq!(
        cells[..5],
        ["nats", "nats", "running", &pid.to_string(), "1"]
    );
    assert_eq!(cells[6..], ["-", "none", "-", "no"]);

    let (code, out, _) = ctl(t.path(), &["status", "nats", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["pid"], pid);
    assert_eq!(v["state"], "running");

    let (code, out, _) = run_to_end(&[
        os("ctl"),
        os("status"),
        os("--json"),
        os("--socket"),
        run.files.socket.as_os_str(),
    ]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("\"pid\":{pid}")), "{out}");

    // The last exit status, once there is one, as --json says it.
    let (code, _, _) = ctl(t.path(), &["stop", "nats"]);
    assert_eq!(code, 0);
    let (_, out, _) = ctl(t.path(), &["status", "nats", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let last_exit = v["last_exit"].as_u64().expect("a last exit after a stop");
    let (_, out, _) = ctl(t.path(), &["status", "nats"]);
    let cells: Vec<String> = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(cells[2..4], ["stopped", "-"], "{out}");
    assert_eq!(cells[6], last_exit.to_string(), "{out}");
}

#[test]
fn ctl_term_restart_and_quit() {
    let t = TempDir::new();
    let rec = Recorder::new(&t, &[]);
    let run = Run::builder(t.path(), "job").spawn(&rec.command);
    let first = run.wait_running();
    rec.wait_ready();

    let (code, _, _) = ctl(t.path(), &["quit", "job"]);
    assert_eq!(code, 0);
    wait_until("SIGQUIT", || rec.signals() == ["SIGQUIT"]);

    let (code, out, _) = ctl(t.path(), &["restart", "job"]);
    assert_eq!(code, 0);
    let s = run.status();
    assert_eq!(s["state"], "running");
    assert_eq!(s["starts"], 2);
    assert_ne!(s["pid"], first);
    assert!(out.contains("running"), "{out}");
    assert!(!alive(first));

    let (code, _, _) = ctl(t.path(), &["term", "job"]);
    assert_eq!(code, 0);
    run.wait_state("stopped");
    assert!(!run.files.stopped.exists(), "term is no hold");

    // restart from an operator's hold brings the job back too.
    ctl(t.path(), &["stop", "job"]);
    let (code, _, _) = ctl(t.path(), &["restart", "job"]);
    assert_eq!(code, 0);
    assert_eq!(run.status()["state"], "running");
    assert!(!run.files.stopped.exists());
}

#[test]
fn ctl_no_wait_returns_while_stopping_and_timeout_says_so() {
    let t = TempDir::new();
    let (run, pid) = Run::stubborn(&t, "1h");
    let (code, _, err) = ctl(t.path(), &["stop", "job", "--no-wait"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run.status()["state"], "stopping");
    assert!(alive(pid));

    let (code, _, err) = ctl(t.path(), &["stop", "job", "--timeout", "200ms"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "container-run: job/job: timed out after 200ms, still stopping (STOP received)\n"
    );
    kill(pid, libc::SIGKILL);
    run.wait_state("stopped");
}

#[test]
fn ctl_reports_missing_and_stale_sockets_with_exit_3() {
    let t = TempDir::new();
    let (code, _, err) = ctl(t.path(), &["status", "nothing"]);
    assert_eq!(code, 3);
    assert!(err.contains("no socket at"), "{err}");

    let files = Files::new(t.path(), "stale", "stale");
    std::fs::create_dir_all(files.socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixDatagram::bind(&files.socket).unwrap());
    let (code, _, err) = ctl(t.path(), &["stop", "stale"]);
    assert_eq!(code, 3);
    assert!(err.contains("nothing listens"), "{err}");
    assert_eq!(err.lines().count(), 1);

    let (code, _, err) = ctl(t.path(), &["stop"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = ctl(t.path(), &["stop", "a/b/c"]);
    assert_eq!(code, 2, "PROCESS b/c is no name");
}

/// container-runs sharing one base directory, each as PID 1 of its own
/// namespace, as the containers of a pod share the data volume.
struct Pod {
    members: Vec<Child>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        for m in &mut self.members {
            kill(m.id() as i32, libc::SIGKILL);
            let _ = m.wait();
        }
    }
}

#[test]
fn ctl_all_over_ten_namespaced_container_runs() {
    if !require_root("for unshare --pid") {
        return;
    }
    let t = TempDir::new();
    let mut pod = Pod { members: vec![] };
    for i in 0..10 {
        let m = namespaced()
            .arg(bin())
            .arg("--base-dir")
            .arg(t.path())
            .args(["--job-name", &format!("job{i}"), "--"])
            .arg(child())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        pod.members.push(m);
    }
    let all_files: Vec<Files> = (0..10)
        .map(|i| Files::new(t.path(), &format!("job{i}"), &format!("job{i}")))
        .collect();
    wait_until("all running", || {
        all_files.iter().all(|f| f.pidfile.exists())
    });

    let (code, out, err) = ctl(t.path(), &["stop", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 10, "{out}");
    for f in &all_files {
        assert!(!f.running.exists() && !f.pidfile.exists() && f.stopped.exists());
    }

    let (code, out, _) = ctl(t.path(), &["status", "--all", "--json"]);
    assert_eq!(code, 0);
    let states: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(states.len(), 10);
    assert!(
        states
            .iter()
            .all(|s| s["state"] == "stopped" && s["hold"] == true)
    );

    let (code, _, err) = ctl(t.path(), &["start", "--all"]);
    assert_eq!(code, 0, "{err}");
    for f in &all_files {
        assert!(f.pidfile.exists() && !f.stopped.exists());
    }
    let (code, out, _) = ctl(t.path(), &["status", "--all"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().filter(|l| l.contains(" running ")).count(),
        10,
        "{out}"
    );
}

#[test]
fn bpm_commands_as_drain_scripts_use_them() {
    let t = TempDir::new();
    let rec = Recorder::new(&t, &[]);
    let run = Run::builder(t.path(), "nats").spawn(&rec.command);
    let pid = run.wait_running();
    rec.wait_ready();

    let (code, out, _) = bpm(t.path(), &["pid", "nats"]);
    assert_eq!((code, out.trim()), (0, pid.to_string().as_str()));
    let (code, out, _) = bpm(t.path(), &["running", "nats"]);
    assert_eq!((code, out.as_str()), (0, ""), "yes/no only on a terminal");
    let (code, _, _) = bpm(t.path(), &["quit", "nats"]);
    assert_eq!(code, 0);
    wait_until("SIGQUIT", || rec.signals() == ["SIGQUIT"]);

    let (code, _, err) = bpm(t.path(), &["stop", "nats"]);
    assert_eq!(code, 0, "{err}");
    assert!(!run.files.pidfile.exists(), "bpm stop waits");
    assert!(!run.files.stopped.exists(), "bpm stop is TERM, not a hold");
    let (code, out, _) = bpm(t.path(), &["pid", "nats"]);
    assert_eq!((code, out.trim()), (1, "Process is not running"));
    let (code, _, _) = bpm(t.path(), &["running", "nats"]);
    assert_eq!(code, 1);

    let (code, _, _) = bpm(t.path(), &["start", "nats"]);
    assert_eq!(code, 0);
    assert!(run.files.pidfile.exists());
    let (code, _, _) = bpm(t.path(), &["term", "nats"]);
    assert_eq!(code, 0);
    run.wait_state("stopped");
    assert!(!run.files.stopped.exists());

    let (code, _, err) = bpm(t.path(), &["stop", "nope"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = bpm(t.path(), &["explode", "nats"]);
    assert_eq!(code, 2);
}

#[test]
fn installed_bpm_link_works_under_its_own_base() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "nats").spawn([child()]);
    let pid = run.wait_running();
    let shim = t.path().join("jobs/bpm/bin/bpm");
    wait_until("bpm installed", || shim.exists());
    assert!(
        std::fs::symlink_metadata(&shim)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // No --base-dir: the base comes from the path bpm was invoked by.
    let mut cmd = Command::new(&shim);
    cmd.args(["pid", "nats"])
        .env_remove("CONTAINER_RUN_BASE_DIR");
    let (code, out, _) = output_with_deadline(cmd);
    assert_eq!((code, out.trim()), (0, pid.to_string().as_str()));
    let mut cmd = Command::new(&shim);
    cmd.args(["stop", "nats"])
        .env_remove("CONTAINER_RUN_BASE_DIR");
    let (code, _, err) = output_with_deadline(cmd);
    assert_eq!(code, 0, "{err}");
    assert!(!run.files.running.exists());
}

#[test]
fn probe_passes_during_an_operators_stop_and_follows_check_otherwise() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "job").spawn([child()]);
    run.wait_running();
    let marker = t.file("check-ran");
    let probe = |exit: &str| {
        let script = format!("touch {}; exit {exit}", marker.display());
        let _ = std::fs::remove_file(&marker);
        let (code, _, _) = run_to_end(&[
            os("probe"),
            os("job"),
            os("--base-dir"),
            t.path().as_os_str(),
            os("--"),
            os("sh"),
            os("-c"),
            os(&script),
        ]);
        (code, marker.exists())
    };
    let ready = || bpm(t.path(), &["running", "job"]).0;

    assert_eq!(probe("0"), (0, true));
    assert_eq!(probe("4"), (4, true), "CHECK's status");
    assert_eq!(ready(), 0);

    ctl(t.path(), &["stop", "job"]);
    assert_eq!(probe("4"), (0, false), "passes without running CHECK");
    assert_eq!(ready(), 1, "readiness fails while stopped");

    ctl(t.path(), &["start", "job"]);
    assert_eq!(probe("4"), (4, true));
    assert_eq!(probe("0"), (0, true));
    assert_eq!(ready(), 0);

    // A stop without a hold is not on purpose: CHECK decides.
    ctl(t.path(), &["term", "job"]);
    run.wait_state("stopped");
    assert_eq!(probe("1"), (1, true));

    let (code, _, _) = run_to_end(&[
        os("probe"),
        os("absent"),
        os("--base-dir"),
        t.path().as_os_str(),
        os("--"),
        os("true"),
    ]);
    assert_eq!(code, 1, "no container-run answers");
}
