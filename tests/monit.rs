//! End to end: `monit` and `bpm list` against real container-runs (SPEC
//! section 10): monit 5.2.5's layouts byte for byte, names, the control
//! verbs, the link at BASE/bosh/bin/monit.

mod common;

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;

use common::*;

fn monit(base: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&OsStr> = vec![os("monit"), os("--base-dir"), base.as_os_str()];
    all.extend(args.iter().map(|a| os(a)));
    run_to_end(&all)
}

fn bpm_list(base: &Path) -> (i32, String, String) {
    run_to_end(&[os("bpm"), os("list"), os("--base-dir"), base.as_os_str()])
}

/// C's `"%-35s %s"` row, written out independently of the binary's code.
fn row(kind: &str, name: &str, status: &str) -> String {
    let prefix = format!("{kind} '{name}'");
    format!("{prefix:<35} {status}\n")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the kernel's host name")
        .trim_end()
        .to_string()
}

/// monit's uptime text: `[Nd ][Nh ]Nm ` (hours whenever days are shown).
fn is_monit_uptime(text: &str) -> bool {
    let Some(body) = text.strip_suffix(' ') else {
        return false;
    };
    let parts: Vec<&str> = body.split(' ').collect();
    let units: &[char] = match parts.len() {
        1 => &['m'],
        2 => &['h', 'm'],
        3 => &['d', 'h', 'm'],
        _ => return false,
    };
    parts.iter().zip(units).all(|(part, unit)| {
        part.strip_suffix(*unit)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Split a summary into its header's uptime and the rest, checking the
/// header line and the blank line after it.
fn split_summary(out: &str) -> &str {
    let (header, rest) = out.split_once('\n').expect("a header line");
    let uptime = header
        .strip_prefix("The Monit daemon 5.2.5 uptime: ")
        .unwrap_or_else(|| panic!("header: {header:?}"));
    assert!(is_monit_uptime(uptime), "uptime text {uptime:?}");
    rest.strip_prefix('\n')
        .expect("a blank line after the header")
}

fn system_row() -> String {
    row("System", &format!("system_{}", hostname()), "running")
}

#[test]
fn uptime_pattern_checker() {
    for good in ["0m ", "1h 2m ", "1d 0h 5m ", "12d 23h 59m "] {
        assert!(is_monit_uptime(good), "{good}");
    }
    for bad in ["0m", "1h2m ", "1d 5m ", "m ", "1x ", "1h 2m  "] {
        assert!(!is_monit_uptime(bad), "{bad}");
    }
}

#[test]
fn summary_is_monits_layout_sorted_by_job_then_process() {
    let t = TempDir::new();
    // Started out of order; `nats-x` sorts before `web` and after `nats`.
    let web = Run::builder(t.path(), "web")
        .process_name("nginx")
        .spawn([child()]);
    let nats_x = Run::builder(t.path(), "nats-x")
        .process_name("a")
        .spawn([child()]);
    let nats = Run::builder(t.path(), "nats")
        .process_name("z")
        .spawn([child()]);
    for r in [&web, &nats_x, &nats] {
        r.wait_running();
    }

    let (code, out, err) = monit(t.path(), &["summary"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
    let body = split_summary(&out);
    let want = [
        row("Process", "z", "running"),
        row("Process", "a", "running"),
        row("Process", "nginx", "running"),
        system_row(),
    ]
    .concat();
    assert_eq!(body, want, "whole output:\n{out}");
    // Every status starts in column 37, as monit's "%-35s %s" puts it.
    for line in body.lines() {
        assert_eq!(&line[35..36], " ", "{line:?}");
        assert_ne!(&line[36..37], " ", "{line:?}");
    }

    // One service: the header and its row, no System row.
    let (code, out, _) = monit(t.path(), &["summary", "nginx"]);
    assert_eq!(code, 0);
    assert_eq!(split_summary(&out), row("Process", "nginx", "running"));

    // What BOSH scripts do with it.
    let (code, out, _) = output_with_deadline({
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#""$0" monit --base-dir "$1" summary | tail -n +3 | grep -c running"#)
            .arg(bin())
            .arg(t.path());
        c
    });
    assert_eq!((code, out.trim()), (0, "4"));
}

#[test]
fn status_blocks_show_pid_and_uptime_while_running() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "nats").spawn([child()]);
    let pid = run.wait_running();
    let stopped = Run::builder(t.path(), "uaa").spawn([child()]);
    stopped.wait_running();
    let (code, _, err) = monit(t.path(), &["stop", "uaa"]);
    assert_eq!(code, 0, "{err}");
    stopped.wait_state("stopped");

    let (code, out, err) = monit(t.path(), &["status"]);
    assert_eq!(code, 0, "{err}");
    let body = split_summary(&out);
    let blocks: Vec<&str> = body.split_terminator("\n\n").collect();
    assert_eq!(blocks.len(), 3, "{out}");
    assert!(body.ends_with("\n\n"), "every block ends with a blank line");

    let field = |k: &str, v: &str| format!("  {k:<33} {v}");
    let nats: Vec<&str> = blocks[0].lines().collect();
    assert_eq!(nats[0], "Process 'nats'");
    assert_eq!(nats[1], field("status", "running"));
    assert_eq!(nats[2], field("monitoring status", "monitored"));
    assert_eq!(nats[3], field("pid", &pid.to_string()));
    let uptime = nats[4]
        .strip_prefix(&field("uptime", ""))
        .expect("an uptime line");
    assert!(is_monit_uptime(uptime), "{uptime:?}");
    assert!(
        nats[5].starts_with(&field("data collected", "")),
        "{}",
        nats[5]
    );
    assert_eq!(nats.len(), 6);

    let uaa: Vec<&str> = blocks[1].lines().collect();
    assert_eq!(
        uaa[..3],
        [
            "Process 'uaa'".to_string(),
            field("status", "not monitored"),
            field("monitoring status", "not monitored"),
        ]
    );
    assert!(uaa[3].starts_with(&field("data collected", "")));
    assert_eq!(uaa.len(), 4, "no pid or uptime while stopped");

    let system: Vec<&str> = blocks[2].lines().collect();
    assert_eq!(system[0], format!("System 'system_{}'", hostname()));
    assert_eq!(system[1], field("status", "running"));
}

#[test]
fn a_socket_that_does_not_answer_does_not_exist() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "nats").spawn([child()]);
    run.wait_running();
    // A stale socket file: bound once, its owner gone.
    let stale = Files::new(t.path(), "gone", "gone").socket;
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    drop(UnixDatagram::bind(&stale).unwrap());
    assert!(stale.exists());
    // A socket bound by something that never reads it (a hung container-run).
    let hung = Files::new(t.path(), "hung", "hung").socket;
    std::fs::create_dir_all(hung.parent().unwrap()).unwrap();
    let _hung = UnixDatagram::bind(&hung).unwrap();

    let (code, out, err) = monit(t.path(), &["summary"]);
    assert_eq!(code, 0, "{err}");
    let want = [
        row("Process", "gone", "Does not exist"),
        row("Process", "hung", "Does not exist"),
        row("Process", "nats", "running"),
        system_row(),
    ]
    .concat();
    assert_eq!(split_summary(&out), want);

    let (code, out, _) = monit(t.path(), &["status", "gone"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = split_summary(&out).lines().collect();
    assert_eq!(lines[1], format!("  {:<33} Does not exist", "status"));
    assert_eq!(lines[2], format!("  {:<33} monitored", "monitoring status"));

    // A command to a container-run that does not answer fails within 2 s.
    let (code, _, err) = monit(t.path(), &["stop", "hung"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("monit: hung/hung: "), "{err}");

    // Regression: once the unread socket's queue is full, a send must not
    // block the client past its deadline (run_to_end fails the test if it
    // does).
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    let mut queued = 0;
    while queued < 100_000 && filler.send_to(b"STATUS", &hung).is_ok() {
        queued += 1;
    }
    assert!(queued < 100_000, "the queue never filled");
    let (code, _, err) = monit(t.path(), &["stop", "hung"]);
    assert_eq!(code, 1);
    assert!(err.contains("queue is full"), "{err}");
    let (code, out, _) = monit(t.path(), &["summary", "hung"]);
    assert_eq!(code, 0);
    assert_eq!(
        split_summary(&out),
        row("Process", "hung", "Does not exist")
    );
}

#[test]
fn stop_is_a_hold_and_start_all_lifts_it() {
    let t = TempDir::new();
    let rec = Recorder::new(&t, &[]);
    let nats = Run::builder(t.path(), "nats").spawn(&rec.command);
    let web = Run::builder(t.path(), "web")
        .process_name("nginx")
        .spawn([child()]);
    nats.wait_running();
    rec.wait_ready();
    web.wait_running();

    let (code, out, err) = monit(t.path(), &["stop", "nats"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    wait_until("the STOP marker", || nats.files.stopped.exists());
    let s = nats.wait_state("stopped");
    assert_eq!(s["hold"], true);
    assert_eq!(rec.signals(), ["SIGTERM"]);
    assert_eq!(web.status()["state"], "running", "only nats is stopped");
    let (_, out, _) = monit(t.path(), &["summary"]);
    assert_eq!(
        split_summary(&out),
        [
            row("Process", "nats", "not monitored"),
            row("Process", "nginx", "running"),
            system_row(),
        ]
        .concat()
    );

    let (code, _, err) = monit(t.path(), &["stop", "all"]);
    assert_eq!(code, 0, "{err}");
    web.wait_state("stopped");
    assert!(web.files.stopped.exists());

    let (code, _, err) = monit(t.path(), &["start", "all"]);
    assert_eq!(code, 0, "{err}");
    for r in [&nats, &web] {
        let s = r.wait_state("running");
        assert_eq!(s["hold"], false);
        assert!(!r.files.stopped.exists());
    }
}

#[test]
fn statuses_while_a_stop_runs() {
    let t = TempDir::new();
    // Its main process ignores SIGTERM: stopping, with the main process alive.
    let (stubborn, _) = Run::stubborn(&t, "60s");
    // Its main process exits on SIGTERM but leaves a grandchild that ignores
    // it: stopping, main process gone.
    let grandchild = t.file("grandchild");
    let mut leaver = Run::builder(t.path(), "leaver")
        .args(["--stop-timeout", "60s"])
        .spawn([
            child().as_os_str(),
            os("--grandchild"),
            grandchild.as_os_str(),
        ]);
    leaver.wait_running();
    let gc = wait_pid_file(&grandchild);
    leaver.track(gc);

    send(&stubborn.files.socket, "TERM");
    send(&leaver.files.socket, "TERM");
    wait_until("job stopping, its main process alive", || {
        let s = stubborn.status();
        s["state"] == "stopping" && !s["pid"].is_null()
    });
    wait_until("leaver stopping, its main process gone", || {
        let s = leaver.status();
        s["state"] == "stopping" && s["pid"].is_null()
    });
    let (code, out, _) = monit(t.path(), &["summary"]);
    assert_eq!(code, 0);
    assert_eq!(
        split_summary(&out),
        [
            row("Process", "job", "running"),
            row("Process", "leaver", "not monitored - stop pending"),
            system_row(),
        ]
        .concat()
    );
    let (_, out, _) = bpm_list(t.path());
    let cells: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(cells[1][0], "job");
    assert_eq!(cells[1][2], "running");
    assert_eq!(cells[2], ["leaver", "-", "stopped"]);

    send(&stubborn.files.socket, "START");
    wait_until("a start pending", || {
        stubborn.status()["pending_start"] == true
    });
    let (_, out, _) = monit(t.path(), &["summary", "job"]);
    assert_eq!(
        split_summary(&out),
        row("Process", "job", "not monitored - start pending")
    );
}

#[test]
fn restart_starts_the_process_again() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "nats").spawn([child()]);
    let first = run.wait_running();
    assert_eq!(run.status()["starts"], 1);

    let (code, _, err) = monit(t.path(), &["restart", "nats"]);
    assert_eq!(code, 0, "{err}");
    let s = wait_for("the second start", || {
        let s = run.status();
        (s["starts"] == 2 && s["state"] == "running").then_some(s)
    });
    assert_ne!(s["pid"], first);
    assert_eq!(s["hold"], false, "a restart is no hold");
    assert!(!run.files.stopped.exists());
}

#[test]
fn a_process_name_two_jobs_share_needs_job_slash_process() {
    let t = TempDir::new();
    let a = Run::builder(t.path(), "a")
        .process_name("worker")
        .spawn([child()]);
    let b = Run::builder(t.path(), "b")
        .process_name("worker")
        .spawn([child()]);
    a.wait_running();
    b.wait_running();

    let (code, out, err) = monit(t.path(), &["stop", "worker"]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(err.contains("ambiguous: use JOB/PROCESS"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!a.files.stopped.exists() && !b.files.stopped.exists());

    let (code, _, err) = monit(t.path(), &["stop", "b/worker"]);
    assert_eq!(code, 0, "{err}");
    b.wait_state("stopped");
    assert_eq!(a.status()["state"], "running");

    // Rows name what selects them.
    let (_, out, _) = monit(t.path(), &["summary"]);
    assert_eq!(
        split_summary(&out),
        [
            row("Process", "a/worker", "running"),
            row("Process", "b/worker", "not monitored"),
            system_row(),
        ]
        .concat()
    );
}

#[test]
fn unknown_names_bad_verbs_and_the_verbs_without_effect() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "nats").spawn([child()]);
    let pid = run.wait_running();

    for args in [
        &["start", "nope"][..],
        &["stop", "nats/nope"],
        &["summary", "nope"],
        &["status", "nope"],
        &["unmonitor", "nope"],
    ] {
        let (code, out, err) = monit(t.path(), args);
        assert_eq!(code, 1, "{args:?}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(err, "monit: There is no service by that name\n", "{args:?}");
    }

    for args in [
        &["unmonitor", "nats"][..],
        &["monitor", "nats"],
        &["unmonitor", "all"],
        &["monitor", "all"],
    ] {
        let (code, out, err) = monit(t.path(), args);
        assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""), "{args:?}");
    }
    let s = run.status();
    assert_eq!(
        (&s["state"], &s["pid"], &s["starts"]),
        (&"running".into(), &pid.into(), &1.into())
    );
    assert!(!run.files.stopped.exists());

    for args in [
        &["reload"][..],
        &[],
        &["start"],
        &["quit"],
        &["stop", "a", "b"],
    ] {
        let (code, out, _) = monit(t.path(), args);
        assert_eq!((code, out.as_str()), (2, ""), "{args:?}");
    }
}

#[test]
fn invoked_through_the_link_at_base_bosh_bin_monit() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "nats").spawn([child()]);
    run.wait_running();
    // container-run installs the link, at BOSH's path, to itself.
    let link = t.path().join("bosh/bin/monit");
    wait_until("monit link installed", || link.symlink_metadata().is_ok());
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        bin().canonicalize().unwrap()
    );

    let linked = |args: &[&str]| {
        let mut c = Command::new(&link);
        c.args(args).env_remove("CONTAINER_RUN_BASE_DIR");
        output_with_deadline(c)
    };
    let (code, out, err) = linked(&["summary"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        split_summary(&out),
        [row("Process", "nats", "running"), system_row()].concat()
    );
    let (code, _, err) = linked(&["stop", "nats"]);
    assert_eq!(code, 0, "{err}");
    run.wait_state("stopped");
    assert!(run.files.stopped.exists());
    let (code, _, _) = linked(&["start", "nats"]);
    assert_eq!(code, 0);
    run.wait_state("running");
}

#[test]
fn bpm_list_is_bpms_table() {
    let t = TempDir::new();
    let nats = Run::builder(t.path(), "nats").spawn([child()]);
    let nats_pid = nats.wait_running();
    let web = Run::builder(t.path(), "web")
        .process_name("nginx")
        .spawn([child()]);
    web.wait_running();
    let (code, _, err) = monit(t.path(), &["stop", "nginx"]);
    assert_eq!(code, 0, "{err}");
    web.wait_state("stopped");
    // A container-run killed outright leaves its socket file, and nothing
    // answers there: failed.
    let mut dead = Run::builder(t.path(), "dead").spawn([child()]);
    let dead_job = dead.wait_running();
    dead.track(dead_job);
    dead.signal(libc::SIGKILL);
    dead.wait_exit();
    assert!(dead.files.socket.exists());

    let (code, out, err) = bpm_list(t.path());
    assert_eq!(code, 0, "{err}");
    // Go's tabwriter (padding 1): columns as wide as their widest cell + 1.
    let pid = nats_pid.to_string();
    let pw = pid.len().max(3) + 1;
    let want = [
        ("Name", "Pid", "Status"),
        ("dead", "-", "failed"),
        ("nats", pid.as_str(), "running"),
        ("web.nginx", "-", "stopped"),
    ]
    .iter()
    .map(|(n, p, s)| format!("{n:<10}{p:<pw$}{s}\n"))
    .collect::<String>();
    assert_eq!(out, want);

    // No pod at all (no BASE/data): said on stderr, never an empty table
    // (SPEC section 6).
    let empty = TempDir::new();
    let (code, out, err) = bpm_list(empty.path());
    assert_eq!((code, out.as_str()), (3, ""));
    assert!(err.contains("no such directory"), "{err}");
    // A pod with no container-run in it: the header alone.
    std::fs::create_dir(empty.file("data")).unwrap();
    let (code, out, _) = bpm_list(empty.path());
    assert_eq!((code, out.as_str()), (0, "Name Pid Status\n"));
    let (code, _, _) = run_to_end(&[
        os("bpm"),
        os("list"),
        os("nats"),
        os("--base-dir"),
        t.path().as_os_str(),
    ]);
    assert_eq!(code, 2, "list takes no JOB");
}
