//! SPEC sections 8 and 9 end to end: real drain scripts run by the BOSH
//! agent's contract, the pod-wide barrier between two container-runs that
//! share a base directory, errands and the stop signal.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

/// A drain script in `dir`: `body` runs after the script has logged its
/// call (arguments, BOSH_JOB_STATE, BOSH_JOB_NEXT_STATE or `unset`, the
/// realtime clock in ns) to `calls`.
fn drain_script(t: &TempDir, body: &str) -> (PathBuf, PathBuf) {
    let calls = t.file("calls");
    let script = t.file("drain");
    let text = format!(
        "#!/bin/sh\n\
         echo \"$# $1 $2 $BOSH_JOB_STATE ${{BOSH_JOB_NEXT_STATE-unset}} $(date +%s%N)\" >> {calls}\n\
         {body}\n",
        calls = calls.display()
    );
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, calls)
}

/// A container-run for job `rep` with `--drain-name SCRIPT` and `extra`
/// flags, whose job records its signals; returns once the job has set up.
fn rep_draining(t: &TempDir, script: &Path, extra: &[&str]) -> (Recorder, Run) {
    let rec = Recorder::new(t, &[]);
    let run = Run::builder(t.path(), "rep")
        .arg("--drain-name")
        .arg(script)
        .args(extra)
        .spawn_ready(&rec);
    (rec, run)
}

fn calls(path: &Path) -> Vec<Vec<String>> {
    lines(path)
        .iter()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect()
}

fn ns(text: &str) -> u128 {
    text.trim().parse().unwrap()
}

#[test]
fn a_static_drain_runs_by_the_contract_before_the_jobs_sigterm() {
    let t = TempDir::new();
    let (script, calls_file) = drain_script(&t, "sleep 0.2; echo 1");
    let (stamp, ready) = (t.file("term"), t.file("ready"));
    let mut run = Run::builder(t.path(), "rep")
        .arg("--drain-name")
        .arg(&script)
        .env("BOSH_JOB_NEXT_STATE", "should-be-removed")
        .spawn(stamping_job(&stamp, &ready));
    run.wait_running();
    wait_pid_file(&ready);
    assert_eq!(run.status()["drain"], "ready");
    run.signal(libc::SIGTERM);
    let s = run.wait_state("draining");
    assert_eq!(s["drain"], "running");
    assert!(s["drain_left_ms"].as_u64().unwrap() > 0);
    assert!(s["pid"].is_number());
    assert!(!stamp.exists(), "the job got SIGTERM during its drain");
    assert_eq!(run.wait_exit(), 0);
    let c = calls(&calls_file);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        c[0][..5],
        [
            "2",
            "job_shutdown",
            "hash_unchanged",
            r#"{"persistent_disk":0}"#,
            "unset"
        ]
    );
    // The job's SIGTERM comes after the script's 1 s wait (a lower bound,
    // which no load can break).
    let drained_at = ns(&c[0][5]) + 1_000_000_000;
    assert!(ns(&std::fs::read_to_string(&stamp).unwrap()) >= drained_at);
    assert!(run.errors().contains("drain done"), "{}", run.errors());
}

#[test]
fn a_dynamic_drain_calls_job_check_status_until_it_prints_zero() {
    let t = TempDir::new();
    let count = t.file("count");
    let body = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); echo $((n + 1)) > {c}; \
         if [ $n -lt 3 ]; then echo -1; else echo 0; fi",
        c = count.display()
    );
    let (script, calls_file) = drain_script(&t, &body);
    let (stamp, ready) = (t.file("term"), t.file("ready"));
    let mut run = Run::builder(t.path(), "rep")
        .arg("--drain-name")
        .arg(&script)
        .spawn(stamping_job(&stamp, &ready));
    run.wait_running();
    wait_pid_file(&ready);
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(), 0);
    let c = calls(&calls_file);
    let verbs: Vec<&str> = c.iter().map(|l| l[1].as_str()).collect();
    assert_eq!(
        verbs,
        [
            "job_shutdown",
            "job_check_status",
            "job_check_status",
            "job_check_status"
        ]
    );
    for l in &c {
        assert_eq!(
            l[2..5],
            ["hash_unchanged", r#"{"persistent_disk":0}"#, "unset"]
        );
    }
    // Each call comes at least 1 s after the previous one, and the job's
    // SIGTERM after the last.
    for pair in c.windows(2) {
        assert!(
            ns(&pair[1][5]) >= ns(&pair[0][5]) + 1_000_000_000,
            "{pair:?}"
        );
    }
    assert!(ns(&std::fs::read_to_string(&stamp).unwrap()) >= ns(&c[3][5]));
}

#[test]
fn a_failed_drain_never_blocks_the_stop() {
    for (body, says) in [
        ("echo garbage", "not one integer"),
        ("echo 0; exit 3", "exited with status 3"),
        ("kill -9 $$", "killed by signal 9"),
        (
            "head -c 5000 /dev/zero | tr '\\0' 1",
            "more than 4096 bytes",
        ),
    ] {
        let t = TempDir::new();
        let (script, _) = drain_script(&t, body);
        let (rec, mut run) = rep_draining(&t, &script, &[]);
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_exit(), 0, "{body}");
        assert!(run.errors().contains(says), "{body}: {}", run.errors());
        assert_eq!(rec.signals(), ["SIGTERM"], "{body}");
    }
    // A missing script is skipped with a log line.
    let t = TempDir::new();
    let (_rec, mut run) = rep_draining(&t, Path::new("/nonexistent/drain"), &[]);
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(), 0);
    assert!(
        run.errors()
            .contains("drain /nonexistent/drain not found: skipped")
    );
}

#[test]
fn a_hanging_drain_that_forks_is_killed_at_its_deadline_with_its_children() {
    let t = TempDir::new();
    let pids = t.file("pids");
    let body = format!(
        "sleep 1000 & echo $! >> {p}; echo $$ >> {p}; wait",
        p = pids.display()
    );
    let (script, _) = drain_script(&t, &body);
    let (_rec, mut run) = rep_draining(&t, &script, &["--drain-timeout", "1s"]);
    run.signal(libc::SIGTERM);
    wait_until("the drain's pids", || lines(&pids).len() == 2);
    let drain_pids: Vec<i32> = lines(&pids).iter().map(|l| l.parse().unwrap()).collect();
    for &p in &drain_pids {
        run.track(p);
    }
    assert_eq!(run.wait_exit(), 0);
    for p in drain_pids {
        wait_until("drain process gone", || !alive(p));
    }
    assert!(
        run.errors()
            .contains("drain did not finish within its deadline")
    );
}

#[test]
fn stop_during_a_drain_ends_it_and_holds_and_a_second_sigterm_changes_nothing() {
    let t = TempDir::new();
    let pids = t.file("pids");
    let body = format!("echo $$ >> {p}; exec sleep 1000", p = pids.display());
    let (script, calls_file) = drain_script(&t, &body);
    let (rec, mut run) = rep_draining(&t, &script, &[]);
    run.signal(libc::SIGTERM);
    let drain_pid: i32 = wait_for("drain running", || lines(&pids).first()?.parse().ok());
    run.track(drain_pid);
    run.signal(libc::SIGTERM);
    wait_until("second SIGTERM logged", || {
        run.errors().contains("already draining")
    });
    assert_eq!(run.status()["state"], "draining");
    // START is answered and ignored: container-run is exiting.
    let s = request(&run.files.socket, "START");
    assert_eq!(
        (s["state"].as_str(), s["exiting"].as_bool()),
        (Some("draining"), Some(true))
    );
    let c = client(&run.files.socket);
    c.send(b"STOP").unwrap();
    assert_eq!(run.wait_exit(), 0);
    assert!(run.files.stopped.exists(), "STOP during a drain holds");
    wait_until("drain script killed", || !alive(drain_pid));
    assert_eq!(rec.signals(), ["SIGTERM"]);
    assert_eq!(calls(&calls_file).len(), 1);
}

#[test]
fn stop_and_term_never_drain() {
    for cmd in ["STOP", "TERM"] {
        let t = TempDir::new();
        let (script, calls_file) = drain_script(&t, "echo 0");
        let (rec, mut run) = rep_draining(&t, &script, &[]);
        command_until(&client(&run.files.socket), cmd, "stopped");
        assert_eq!(rec.signals(), ["SIGTERM"]);
        assert!(!calls_file.exists(), "{cmd} ran the drain");
        assert_eq!(run.status()["drain"], "ready");
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_exit(), 0);
        assert!(!calls_file.exists(), "SIGTERM while stopped ran the drain");
    }
}

#[test]
fn term_during_a_drain_stops_the_job_and_lets_the_script_finish() {
    let t = TempDir::new();
    let go = t.file("go");
    let done = t.file("done");
    // The script sends TERM itself (as `bpm stop` in a drain script does),
    // then waits for the test's go-ahead before it finishes.
    let body = format!(
        "touch {go}.asked; while [ ! -e {go} ]; do sleep 0.02; done; touch {done}; echo 0",
        go = go.display(),
        done = done.display()
    );
    let (script, _) = drain_script(&t, &body);
    let (rec, mut run) = rep_draining(&t, &script, &[]);
    run.signal(libc::SIGTERM);
    wait_until("drain running", || t.file("go.asked").exists());
    send(&run.files.socket, "TERM");
    wait_until("job stopped by TERM", || rec.signals() == ["SIGTERM"]);
    let s = run.status();
    assert_eq!(
        (s["state"].as_str(), s["drain"].as_str()),
        (Some("stopping"), Some("running"))
    );
    assert!(
        run.try_exit().is_none(),
        "exited before the drain script ended"
    );
    std::fs::write(&go, "").unwrap();
    assert_eq!(run.wait_exit(), 0);
    assert!(done.exists(), "the drain script was not let finish");
    assert!(!run.files.stopped.exists(), "TERM is no hold");
    assert!(
        run.errors().contains("drain script finished"),
        "{}",
        run.errors()
    );
}

#[test]
fn a_drain_script_that_calls_bpm_stop_is_not_kept_waiting_for_itself() {
    let t = TempDir::new();
    let bpm = t.path().join("jobs/bpm/bin/bpm");
    let rc = t.file("bpm-rc");
    // The pattern of BOSH drain scripts: stop the job, then report done.
    let body = format!(
        "{bpm} stop rep; echo $? > {rc}; echo 0",
        bpm = bpm.display(),
        rc = rc.display()
    );
    let (script, _) = drain_script(&t, &body);
    let (rec, mut run) = rep_draining(&t, &script, &[]);
    wait_until("bpm link installed", || bpm.exists());
    run.signal(libc::SIGTERM);
    // bpm's own wait (30 s) ends once the job is gone, not when the drain
    // script it runs in has ended; container-run's exit proves both.
    assert_eq!(run.wait_exit(), 0);
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "0");
    assert_eq!(rec.signals(), ["SIGTERM"]);
    assert!(
        run.errors().contains("drain script finished"),
        "{}",
        run.errors()
    );
}

#[test]
fn what_a_finishing_drain_leaves_behind_does_not_hold_the_stop() {
    let t = TempDir::new();
    let bpm = t.path().join("jobs/bpm/bin/bpm");
    let left = t.file("left");
    // TERM lets the script run on past the job's 1 s stop timeout; it then
    // leaves a process in its group that holds no pipe of container-run's.
    let body = format!(
        "{bpm} stop rep; sleep 2; sleep 300 >/dev/null 2>&1 & echo $! > {left}; echo 0",
        bpm = bpm.display(),
        left = left.display()
    );
    let (script, _) = drain_script(&t, &body);
    let (_rec, mut run) = rep_draining(&t, &script, &["--stop-timeout", "1s"]);
    wait_until("bpm link installed", || bpm.exists());
    run.signal(libc::SIGTERM);
    let leftover: i32 = wait_for("the leftover's pid", || {
        std::fs::read_to_string(&left).ok()?.trim().parse().ok()
    });
    run.track(leftover);
    assert_eq!(run.wait_exit(), 0);
    wait_until("the leftover is gone", || !alive(leftover));
}

#[test]
fn the_jobs_own_exit_during_a_drain_ends_it_with_the_jobs_status() {
    let t = TempDir::new();
    let (script, _) = drain_script(&t, "echo 600");
    let exit_now = t.file("exit");
    let ready = t.file("ready");
    let job = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!(
            "trap '' TERM; echo $$ > {r}; while [ ! -e {e} ]; do sleep 0.02; done; exit 7",
            r = ready.display(),
            e = exit_now.display()
        ),
    ];
    let mut run = Run::builder(t.path(), "rep")
        .arg("--drain-name")
        .arg(&script)
        .spawn(job);
    run.wait_running();
    wait_pid_file(&ready);
    run.signal(libc::SIGTERM);
    wait_until("the drain's 600 s wait", || {
        run.errors().contains("drain: waiting 600s")
    });
    std::fs::write(&exit_now, "").unwrap();
    assert_eq!(run.wait_exit(), 7);
}

/// Two container-runs of one pod, as a Diego cell: garden has no drain,
/// rep drains for about 2 s.
struct Cell {
    garden: Run,
    rep: Run,
    garden_term: PathBuf,
    rep_drained: PathBuf,
}

fn cell(t: &TempDir) -> Cell {
    let rep_drained = t.file("rep-drained");
    let (script, _) = drain_script(
        t,
        &format!("sleep 2; date +%s%N > {}; echo 0", rep_drained.display()),
    );
    let (garden_term, garden_ready) = (t.file("garden-term"), t.file("garden-ready"));
    let garden = Run::builder(t.path(), "garden").spawn(stamping_job(&garden_term, &garden_ready));
    let rep_rec = Recorder::new(t, &[]);
    let rep = Run::builder(t.path(), "rep")
        .arg("--drain-name")
        .arg(&script)
        .spawn(&rep_rec.command);
    garden.wait_running();
    wait_pid_file(&garden_ready);
    rep.wait_running();
    rep_rec.wait_ready();
    Cell {
        garden,
        rep,
        garden_term,
        rep_drained,
    }
}

#[test]
fn the_barrier_holds_gardens_stop_until_reps_drain_is_done() {
    let t = TempDir::new();
    let mut c = cell(&t);
    c.garden.signal(libc::SIGTERM);
    c.rep.signal(libc::SIGTERM);
    let s = c.garden.wait_state("draining");
    assert_eq!(s["drain"], "waiting");
    assert_eq!(c.garden.wait_exit(), 0);
    assert_eq!(c.rep.wait_exit(), 0);
    let garden_stopped = ns(&std::fs::read_to_string(&c.garden_term).unwrap());
    let rep_drained = ns(&std::fs::read_to_string(&c.rep_drained).unwrap());
    assert!(
        garden_stopped >= rep_drained,
        "garden's job got SIGTERM before rep's drain was done"
    );
    assert!(
        c.garden
            .errors()
            .contains("waiting for 1 draining container-run")
    );
}

#[test]
fn a_single_container_restart_does_not_wait_for_a_peer_that_runs_on() {
    let t = TempDir::new();
    let mut c = cell(&t);
    c.garden.signal(libc::SIGTERM);
    assert_eq!(c.garden.wait_exit(), 0);
    assert!(c.garden_term.exists());
    // It did wait for rep during the settling window (rep has a drain and
    // might have been signalled too), then went on without it.
    assert!(
        c.garden
            .errors()
            .contains("waiting for 1 draining container-run"),
        "{}",
        c.garden.errors()
    );
    let s = c.rep.status();
    assert_eq!(
        (s["state"].as_str(), s["drain"].as_str()),
        (Some("running"), Some("ready"))
    );
}

#[test]
fn a_fake_peer_that_claims_to_drain_is_no_peer() {
    // A socket that answers like a draining container-run but from another
    // uid: only root can play that other uid.
    if !require_root("to answer as another uid") {
        return;
    }
    let t = TempDir::new();
    let fake_dir = t.path().join("data/fake");
    std::fs::create_dir_all(&fake_dir).unwrap();
    // Bound where peers are found: a rendezvous name of the pod, which
    // anyone in the pod's network namespace can bind.
    let pod = container_run::rendezvous::pod_of(t.path()).unwrap();
    let name = String::from_utf8(pod.name_for("fake", "fake", "0123456789abcdef")).unwrap();
    let ready = fake_dir.join("ready");
    let line = r#"{"state":"draining","pid":1,"job":"fake","process":"fake","starts":1,"hold":false,"pending_start":false,"post_start":"none","uptime_ms":1,"last_exit":null,"drain":"running","drain_left_ms":600000,"age_ms":1}"#;
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind('\\0'+sys.argv[1])\n\
         open(sys.argv[3],'w').close()\n\
         while True:\n  d,a=s.recvfrom(100)\n  for j in [b'x',b'{}',b'junk',sys.argv[2].encode()]*2: s.sendto(j,a)\n";
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&fake_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fake = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(&name)
        .arg(line)
        .arg(&ready)
        .spawn()
        .unwrap();
    let _fake = KilledOnDrop(fake);
    wait_until("fake peer bound", || ready.exists());
    // Beside it, a real pod: the fake, answering eight times per question,
    // must neither hold garden nor end its round before rep has answered.
    let mut c = cell(&t);
    c.garden.signal(libc::SIGTERM);
    c.rep.signal(libc::SIGTERM);
    assert_eq!(c.garden.wait_exit(), 0);
    assert_eq!(c.rep.wait_exit(), 0);
    let garden_stopped = ns(&std::fs::read_to_string(&c.garden_term).unwrap());
    let rep_drained = ns(&std::fs::read_to_string(&c.rep_drained).unwrap());
    assert!(garden_stopped >= rep_drained, "garden did not wait for rep");
    assert!(
        c.garden.errors().contains("not from root"),
        "{}",
        c.garden.errors()
    );
}

#[test]
fn an_errand_ends_with_its_own_status() {
    for code in [0, 3] {
        let t = TempDir::new();
        let mut run = Run::builder(t.path(), "smoke").arg("--errand").spawn([
            child().to_str().unwrap(),
            "--exit",
            &code.to_string(),
        ]);
        assert_eq!(run.wait_exit(), code);
        assert!(!run.files.socket.exists());
    }
    // SIGTERM kills a plain sh errand: 143, never 0.
    let t = TempDir::new();
    let ready = t.file("ready");
    let job = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!("echo $$ > {}; exec sleep 1000", ready.display()),
    ];
    let mut run = Run::builder(t.path(), "smoke").arg("--errand").spawn(job);
    run.wait_running();
    wait_pid_file(&ready);
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(), 143);
    // Held stopped, never ran: told to end, 143.
    let t = TempDir::new();
    let files = Files::new(t.path(), "smoke", "smoke");
    std::fs::create_dir_all(files.stopped.parent().unwrap()).unwrap();
    std::fs::write(&files.stopped, "STOP\n").unwrap();
    let mut run = Run::builder(t.path(), "smoke").arg("--errand").spawn([
        child().to_str().unwrap(),
        "--exit",
        "0",
    ]);
    run.wait_state("stopped");
    send(&run.files.socket, "TERM");
    assert_eq!(run.wait_exit(), 143);
}

#[test]
fn the_stop_signal_is_sent_on_stop_and_on_sigterm() {
    for sig in ["INT", "quit", "SIGQUIT", "2"] {
        let want = match sig {
            "INT" | "2" => "SIGINT",
            _ => "SIGQUIT",
        };
        for how in ["STOP", "SIGTERM"] {
            let t = TempDir::new();
            let rec = Recorder::new(&t, &["--exit-on-quit"]);
            let mut run = Run::builder(t.path(), "pg")
                .args(["--stop-signal", sig])
                .spawn(&rec.command);
            run.wait_running();
            rec.wait_ready();
            if how == "STOP" {
                command_until(&client(&run.files.socket), "STOP", "stopped");
                run.signal(libc::SIGTERM);
            } else {
                run.signal(libc::SIGTERM);
            }
            assert_eq!(run.wait_exit(), 0);
            assert_eq!(rec.signals(), [want], "--stop-signal {sig} on {how}");
        }
    }
}

#[test]
fn a_bad_stop_signal_is_a_usage_error_before_anything_starts() {
    for bad in ["STOP", "KILL", "cont", "0", "32", "NOPE"] {
        let t = TempDir::new();
        let base = t.path().join("base");
        let (code, _, err) = run_to_end(&[
            "--base-dir".as_ref(),
            base.as_os_str(),
            "--job-name".as_ref(),
            "x".as_ref(),
            "--stop-signal".as_ref(),
            bad.as_ref(),
            "true".as_ref(),
        ]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!base.exists(), "{bad}: something was created");
    }
}
