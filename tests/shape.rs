//! Regression tests of issue 18 (the machine's shape) and issue 19's
//! finding 8, end to end: a missing post-start skips its condition, a
//! reaped hook's process group is never signalled again, the stop signal
//! is the first thing a STOP does, and a missing drain is said at start-up.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;

/// Processes a test started outside `Run`, SIGKILLed by pid (with every
/// descendant) and reaped when the test ends, whatever happened.
struct Started {
    child: Child,
    also: Vec<i32>,
}

impl Started {
    fn new(cmd: &mut Command) -> Started {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        Started {
            child,
            also: Vec::new(),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The child of the started process that runs `exe` (container-run
    /// under strace, which may fork a probe of its own first; the
    /// namespace's first process under unshare).
    fn child_running(&mut self, exe: &Path) -> i32 {
        let parent = self.pid();
        let exe = std::fs::canonicalize(exe).unwrap();
        let pid = wait_for("the started process's child", || {
            descendants(parent).into_iter().find(|&p| {
                ppid(p) == Some(parent)
                    && std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == exe)
            })
        });
        self.also.push(pid);
        pid
    }

    fn wait_exit(&mut self) -> i32 {
        exit_code(wait_for("exit", || self.child.try_wait().unwrap()))
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // Whatever it started too (container-run under strace outlives a
        // killed strace), by pid.
        let mut pids = descendants(self.pid());
        pids.extend(&self.also);
        for pid in pids {
            kill(pid, libc::SIGKILL);
        }
        if self.child.try_wait().unwrap().is_none() {
            kill(self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// STATUS while container-run runs; a test fails at once if it has exited.
fn status_while_up(run: &mut Run) -> serde_json::Value {
    if let Some(status) = run.try_exit() {
        panic!(
            "container-run exited ({}): {}",
            exit_code(status),
            run.errors()
        );
    }
    run.status()
}

#[test]
fn a_missing_post_start_skips_its_condition_and_the_job_runs_on() {
    let t = TempDir::new();
    let tried = t.file("condition-tried");
    let mut run = Run::builder(t.path(), "job")
        .args(["--post-start-name", "/nonexistent/post-start"])
        .args(["--post-start-condition-name", "/bin/sh"])
        .args(["--post-start-condition-arg", "-c"])
        .arg("--post-start-condition-arg")
        .arg(format!("touch {}; false", tried.display()))
        .args(["--post-start-timeout", "1s", "--condition-interval", "50ms"])
        .spawn([child()]);
    let pid = run.wait_running();
    wait_until("post-start skipped", || {
        status_while_up(&mut run)["post_start"] == "skipped"
    });
    // Past the post-start timeout, by container-run's own clock: nothing
    // was waiting for it.
    wait_until("uptime beyond twice the post-start timeout", || {
        status_while_up(&mut run)["uptime_ms"].as_u64() >= Some(2000)
    });
    let s = status_while_up(&mut run);
    assert_eq!(
        (s["state"].as_str(), s["pid"].as_i64()),
        (Some("running"), Some(pid.into()))
    );
    assert!(alive(pid));
    assert!(!tried.exists(), "the condition of a missing post-start ran");
    let said: Vec<String> = run
        .errors()
        .lines()
        .filter(|l| l.contains("post-start"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        said,
        ["container-run: post-start /nonexistent/post-start not found: skipped"]
    );
}

#[test]
fn a_missing_drain_is_said_once_at_start_up_and_still_looked_up_when_due() {
    let t = TempDir::new();
    let rec = Recorder::new(&t, &[]);
    let mut run = Run::builder(t.path(), "rep")
        .args(["--drain-name", "/nonexistent/drain"])
        .spawn_ready(&rec);
    let warning = "container-run: warning: drain /nonexistent/drain not found: \
                   the drain will be skipped unless it appears";
    wait_until("start-up warning", || run.errors().contains(warning));
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(), 0);
    let errors = run.errors();
    assert_eq!(errors.matches(warning).count(), 1, "{errors}");
    assert!(
        errors.contains("drain /nonexistent/drain not found: skipped"),
        "{errors}"
    );
}

/// A strace line's call name and return value.
fn call(line: &str) -> (&str, &str) {
    let name = line.split('(').next().unwrap_or("");
    let ret = line.rsplit(" = ").next().unwrap_or("");
    (name, ret.split_whitespace().next().unwrap_or(""))
}

/// container-run under strace (alone, no -f: the job is not traced), one
/// STOP, then SIGTERM; the trace's text and the job's pid.
fn trace_a_stop(t: &TempDir, strace: &Path) -> (String, i32) {
    let trace = t.file("trace");
    let rec = Recorder::new(t, &[]);
    let files = Files::new(t.path(), "job", "job");
    let mut traced = Started::new(
        Command::new(strace)
            .args(["-qq", "-s", "128", "-o"])
            .arg(&trace)
            .arg(bin())
            .arg("--base-dir")
            .arg(t.path())
            .args(["--job-name", "job", "--"])
            .args(&rec.command)
            .env_remove("CONTAINER_RUN_BASE_DIR"),
    );
    let supervisor = traced.child_running(&bin());
    let job = wait_pid_file(&files.pidfile);
    assert_eq!(rec.wait_ready(), job);
    send(&files.socket, "STOP");
    wait_until("stopped", || {
        !files.running.exists() && !files.pidfile.exists()
    });
    kill(supervisor, libc::SIGTERM);
    assert_eq!(traced.wait_exit(), 0);
    (std::fs::read_to_string(&trace).unwrap(), job)
}

#[test]
fn a_stop_sends_the_stop_signal_before_anything_else() {
    let strace = Path::new("/usr/bin/strace");
    if !strace.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs strace, and CI must install it"
        );
        eprintln!("skipped: needs strace");
        return;
    }
    let t = TempDir::new();
    let (text, job) = trace_a_stop(&t, strace);
    let lines: Vec<&str> = text.lines().collect();
    let at = |from: usize, what: &str, found: &dyn Fn(&str) -> bool| {
        from + lines[from..]
            .iter()
            .position(|l| found(l))
            .unwrap_or_else(|| panic!("no {what} after line {from} in\n{text}"))
    };
    let recv = at(0, "STOP received", &|l| {
        l.starts_with("recv") && l.contains("\"STOP\"") && call(l).1 == "4"
    });
    let next = lines.get(recv + 1).copied().unwrap_or_default();
    assert!(
        next.starts_with(&format!("kill(-{job}, SIGTERM)")) && call(next).1 == "0",
        "the first thing after receiving STOP:\n{}",
        lines[recv..(recv + 8).min(lines.len())].join("\n")
    );
    let logged = at(recv, "log line", &|l| {
        l.starts_with("write(2,") && l.contains("received STOP")
    });
    let marker = at(recv, "marker", &|l| l.contains("job_containerrun.stopped"));
    assert!(logged < marker, "the log line comes before the marker");
    let reaped = at(recv, "the job's reap", &|l| {
        call(l) == ("wait4", job.to_string().as_str())
    });
    let walked: Vec<&str> = lines[recv..reaped]
        .iter()
        .copied()
        .filter(|l| l.contains("\"/proc/"))
        .collect();
    assert!(
        walked.is_empty(),
        "/proc read while the job was stopping: {walked:#?}"
    );
}

/// Run `cmd` in the PID and mount namespaces of `init`; its exit code.
fn in_namespace(init: i32, cmd: &str) -> i32 {
    let mut c = Command::new("nsenter");
    c.args([
        "--target",
        &init.to_string(),
        "--pid",
        "--mount",
        "/bin/sh",
        "-c",
        cmd,
    ]);
    output_with_deadline(c).0
}

/// A new process-group leader of the namespace takes pid `pid`.
fn take_pid(t: &TempDir, pid: i32, in_ns: &dyn Fn(&str) -> i32) {
    let innocent = t.file("innocent");
    let take = format!(
        "echo {last} > /proc/sys/kernel/ns_last_pid; setsid sleep 1000 & echo $! > {file}",
        last = pid - 1,
        file = innocent.display()
    );
    assert_eq!(in_ns(&take), 0);
    assert_eq!(wait_pid_file(&innocent), pid, "the hook's pid was taken");
    wait_until("the innocent leads its group", || {
        in_ns(&format!(
            "[ \"$(ps -o pgid= -p {pid} | tr -d ' ')\" = {pid} ]"
        )) == 0
    });
}

#[test]
fn a_reaped_hooks_process_group_is_never_signalled_again() {
    if !require_root("for a PID namespace whose next pid can be chosen") {
        return;
    }
    let t = TempDir::new();
    let (hook_pid, ready, record, err) = (
        t.file("hook"),
        t.file("ready"),
        t.file("record"),
        t.file("err"),
    );
    let files = Files::new(t.path(), "job", "job");
    // container-run is not the namespace's PID 1, so that a process of the
    // namespace that is none of its descendants can take the hook's pid.
    let script = format!(
        "{bin} --debug --base-dir {base} --job-name job --stop-timeout 3s \
         --post-start-name /bin/sh --post-start-arg -c \
         --post-start-arg 'echo $$ > {hook}; exec sleep 1000' \
         -- {child} --ignore-term --record {record} --ready {ready} 2> {err} & wait",
        bin = bin().display(),
        base = t.path().display(),
        hook = hook_pid.display(),
        child = child().display(),
        record = record.display(),
        ready = ready.display(),
        err = err.display(),
    );
    let mut ns = Started::new(namespaced().args(["/bin/sh", "-c", &script]));
    let init = ns.child_running(Path::new("/bin/sh"));
    let hook: i32 = wait_pid_file(&hook_pid);
    wait_pid_file(&ready);
    // The stop reaches the hook, which dies of it and is reaped; the job
    // ignores SIGTERM and runs until the stop timeout.
    send(&files.socket, "TERM");
    let reaped = format!("reaped {hook} (was killed by signal 15");
    wait_until("hook reaped", || {
        std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains(&reaped)
    });
    // A new process group leader of the namespace takes the hook's pid.
    let in_ns = |cmd: &str| in_namespace(init, cmd);
    take_pid(&t, hook, &in_ns);
    // QUIT reaches the job's group; the stop timeout's SIGKILL the tree.
    send(&files.socket, "QUIT");
    wait_until("QUIT reached the job", || {
        lines(&record).contains(&"SIGQUIT".to_string())
    });
    wait_until("stopped", || {
        try_request(&files.socket, "STATUS").is_some_and(|s| s["state"] == "stopped")
    });
    assert_eq!(
        in_ns(&format!("kill -0 {hook}")),
        0,
        "the process that took the hook's pid was signalled: {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
}
