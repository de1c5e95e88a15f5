//! What the operator reads in `kubectl logs`: every change of state is
//! confirmed at the default level, in the order it happened.

mod common;

use common::*;

/// The log without debug lines, with each pid in `pids` written as `PID`.
fn log_lines(run: &Run, pids: &[i32]) -> Vec<String> {
    run.errors()
        .lines()
        .map(|l| {
            let mut l = l.to_string();
            for p in pids {
                l = l.replace(&p.to_string(), "PID");
            }
            l
        })
        .collect()
}

#[test]
fn stop_start_term_and_a_crash_are_logged_in_order() {
    let t = TempDir::new();
    let mut run = Run::builder(t.path(), "web").spawn(["/bin/sh", "-c", "exec sleep 1000"]);
    let first = run.wait_running();
    let c = client(&run.files.socket);
    command_until(&c, "STOP", "stopped");
    command_until(&c, "START", "running");
    let second = run.wait_running();
    command_until(&c, "TERM", "stopped");
    command_until(&c, "START", "running");
    let third = run.wait_running();
    kill(third, libc::SIGKILL);
    assert_eq!(run.wait_exit(), 137);
    let marker = run.files.stopped.display().to_string();
    assert_eq!(
        log_lines(&run, &[first, second, third]),
        [
            "container-run: running /bin/sh as pid PID (job web, process web)",
            "container-run: received STOP",
            "container-run: the job's process PID was killed by signal 15 (SIGTERM)",
            "container-run: stopped (the job's process was killed by signal 15 (SIGTERM))",
            "container-run: received START",
            "container-run: running /bin/sh as pid PID (job web, process web)",
            "container-run: received TERM",
            "container-run: the job's process PID was killed by signal 15 (SIGTERM)",
            "container-run: stopped (the job's process was killed by signal 15 (SIGTERM))",
            "container-run: received START",
            "container-run: running /bin/sh as pid PID (job web, process web)",
            "container-run: error: process PID was killed by signal 9 (SIGKILL): stopping and exiting with 137",
            "container-run: stopped (the job's process was killed by signal 9 (SIGKILL)); exiting with 137",
        ]
    );
    assert!(!std::path::Path::new(&marker).exists());
}

#[test]
fn a_failed_post_start_and_a_stop_timeout_are_logged() {
    let t = TempDir::new();
    // The post-start fails only once the job ignores SIGTERM (its ready
    // file), so that the stop always runs into its timeout.
    let ready = t.file("ready");
    let fail_when_ready = format!(
        "for i in $(seq 2000); do [ -e {r} ] && exit 4; sleep 0.01; done; exit 5",
        r = ready.display()
    );
    let job = format!("trap '' TERM; touch {}; exec sleep 1000", ready.display());
    let mut run = Run::builder(t.path(), "web")
        .args(["--stop-timeout", "1s"])
        .args(["--post-start-name", "/bin/sh", "--post-start-arg", "-c"])
        .arg("--post-start-arg")
        .arg(&fail_when_ready)
        .spawn(["/bin/sh", "-c", &job]);
    let job = run.wait_running();
    assert_eq!(run.wait_exit(), 1);
    let lines = log_lines(&run, &[job]);
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in {lines:#?}"))
    };
    let order = [
        at("running /bin/sh as pid PID"),
        at("running post-start /bin/sh as pid"),
        at("post-start exited with status 4: stopping the job and exiting with 1"),
        at("stop timeout of 1s reached: killing what is left"),
        at("stopped (the job's process was killed by signal 9 (SIGKILL))"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{lines:#?}");
    assert!(
        lines.last().unwrap().ends_with("exiting with 1"),
        "{lines:#?}"
    );
}

#[test]
fn a_repeated_sigterm_says_how_long_until_sigkill_and_the_hold_names_its_file() {
    let t = TempDir::new();
    let (run, _) = Run::stubborn(&t, "30s");
    command_until(&client(&run.files.socket), "STOP", "stopping");
    run.signal(libc::SIGTERM);
    wait_until("repeat logged", || {
        run.errors().contains("already stopping: SIGKILL in ")
    });
    drop(run);
    // The next container-run finds the hold and says how to clear it.
    let rec = Recorder::new(&t, &[]);
    let run = Run::builder(t.path(), "job").spawn(&rec.command);
    run.wait_state("stopped");
    let want = format!(
        "container-run: STOP marker {} found: staying stopped until `",
        run.files.stopped.display()
    );
    let line = wait_for("hold logged", || {
        run.errors()
            .lines()
            .find(|l| l.starts_with(&want))
            .map(str::to_string)
    });
    // The command it names lifts the hold as written, from anywhere.
    let hint = line[want.len()..].trim_end_matches('`');
    assert!(hint.contains(" ctl start job --base-dir "), "{line}");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(hint)
        .current_dir("/")
        .env_remove("CONTAINER_RUN_BASE_DIR");
    let (code, _, err) = output_with_deadline(cmd);
    assert_eq!(code, 0, "{hint}: {err}");
    run.wait_state("running");
}
