//! End to end: the control protocol of SPEC section 3 and the bad input of
//! section 7.

mod common;

use std::os::unix::net::UnixDatagram;

use common::*;

#[test]
fn replies_are_one_json_line_and_only_to_recognised_commands() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "nats")
        .process_name("gnatsd")
        .spawn([child()]);
    let pid = run.wait_running();
    let c = client(&run.files.socket);
    // Junk first, from the same sender: the first reply must be STATUS's.
    for junk in [&b"stop"[..], b"", b"\xff\xfe", b"HELLO", b"STATUSX", b" \n"] {
        c.send(junk).unwrap();
    }
    c.send(b"  STATUS\r\n").unwrap();
    let s = recv_json(&c);
    assert_eq!(s["state"], "running");
    assert_eq!(s["pid"], pid);
    assert_eq!(s["job"], "nats");
    assert_eq!(s["process"], "gnatsd");
    assert_eq!(s["starts"], 1);
    assert_eq!(s["hold"], false);
    assert_eq!(s["post_start"], "none");
    // A path-bound sender (what netcat does) is answered too.
    let t2 = TempDir::new();
    let path = t2.file("c.sock");
    let p = UnixDatagram::bind(&path).unwrap();
    p.set_read_timeout(Some(DEADLINE)).unwrap();
    p.send_to(b"STATUS", &run.files.socket).unwrap();
    assert_eq!(recv_json(&p)["pid"], pid);
}

#[test]
fn oversized_datagram_is_ignored() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "job").spawn([child()]);
    let pid = run.wait_running();
    let c = client(&run.files.socket);
    // 64 KiB of padding around a STOP: over the limit, so ignored whole.
    let mut big = b"STOP".to_vec();
    big.resize(70_000, b' ');
    // The default send buffer (208 KiB) takes it: the send must succeed, or
    // this test would prove nothing.
    c.send(&big).unwrap();
    c.send(b"STATUS").unwrap();
    let s = recv_json(&c);
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["pid"], pid);
    let mut at_limit = b"STATUS".to_vec();
    at_limit.resize(64 * 1024, b'\n');
    c.send(&at_limit).unwrap();
    assert_eq!(recv_json(&c)["state"], "running");
}

#[test]
fn stop_and_start_replies_settle_with_a_second_datagram() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "job").spawn([child()]);
    run.wait_running();
    let c = client(&run.files.socket);
    command_until(&c, "STOP", "stopped");
    assert!(
        !run.files.running.exists(),
        "files gone when stopped is said"
    );
    c.send(b"START").unwrap();
    assert_eq!(recv_json(&c)["state"], "running");
}

#[test]
fn burst_of_200_alternating_commands_ends_in_the_last_state() {
    for (last, want) in [("STOP", "stopped"), ("START", "running")] {
        let t = TempDir::new();
        let run = Run::builder(t.path(), "job").spawn([child()]);
        run.wait_running();
        let s = UnixDatagram::unbound().unwrap();
        for i in 0..200 {
            let cmd = if i % 2 == 0 { "STOP" } else { "START" };
            s.send_to(cmd.as_bytes(), &run.files.socket).unwrap();
        }
        s.send_to(last.as_bytes(), &run.files.socket).unwrap();
        let st = run.wait_state(want);
        assert_eq!(st["hold"], last == "STOP");
        assert_eq!(run.files.stopped.exists(), last == "STOP");
        assert_eq!(run.files.running.exists(), last == "START");
        // Nothing but the current job process is left.
        let kids = descendants(run.pid());
        match want {
            "running" => assert_eq!(kids, [st["pid"].as_i64().unwrap() as i32]),
            _ => assert!(kids.is_empty(), "{kids:?}"),
        }
        assert!(run.stderr_text().lines().all(|l| !l.contains("error")));
    }
}

/// socat for the burst and the canonical `nc -w 1` for the last command:
/// `nc -w 0` itself drops about one datagram in twenty on a loaded machine
/// (it can quit before reading stdin), which would make this test flaky.
#[test]
fn burst_via_netcat_and_socat_is_not_lost() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "job").spawn([child()]);
    run.wait_running();
    let sock = run.files.socket.display().to_string();
    let script = format!(
        "for i in $(seq 20); do echo STOP | socat -t 0 - UNIX-SENDTO:{sock}; echo START | socat -t 0 - UNIX-SENDTO:{sock}; done; echo STOP | nc -w 1 -uU {sock}"
    );
    let (code, _, err) = output_with_deadline({
        let mut c = std::process::Command::new("sh");
        c.arg("-c").arg(script);
        c
    });
    assert_eq!(code, 0, "{err}");
    run.wait_state("stopped");
    assert!(run.files.stopped.exists());
}

#[test]
fn flood_of_garbage_with_a_stop_in_the_middle() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "job").spawn([child()]);
    let pid = run.wait_running();
    let s = UnixDatagram::unbound().unwrap();
    for i in 0..20_000u32 {
        if i == 10_000 {
            s.send_to(b"STOP\n", &run.files.socket).unwrap();
        }
        let junk = format!("junk {i} \u{0} {}", "x".repeat((i % 300) as usize));
        s.send_to(junk.as_bytes(), &run.files.socket).unwrap();
    }
    run.wait_state("stopped");
    assert!(!alive(pid));
    assert!(run.files.stopped.exists());
    let kb = rss_kb(run.pid());
    assert!(kb < 16 * 1024, "RSS grew to {kb} kB");
}

#[test]
fn start_during_a_long_stop_starts_once_the_stop_finished() {
    let t = TempDir::new();
    // A stop that lasts until the test ends it: no timing to race with.
    let (run, first) = Run::stubborn(&t, "1h");
    let c = client(&run.files.socket);
    c.send(b"STOP").unwrap();
    assert_eq!(recv_json(&c)["state"], "stopping");
    c.send(b"START").unwrap();
    let s = recv_json(&c);
    assert_eq!(s["state"], "stopping");
    assert_eq!(s["pending_start"], true);
    assert_eq!(s["hold"], false);
    kill(first, libc::SIGKILL);
    let s = run.wait_state("running");
    assert_ne!(s["pid"], first);
    assert!(!alive(first));
}

#[test]
fn bad_names_and_flags_are_usage_errors_with_nothing_created() {
    let t = TempDir::new();
    let base = t.file("base");
    let b = base.as_os_str();
    let long = "p".repeat(120);
    let cases: Vec<Vec<&std::ffi::OsStr>> = vec![
        vec![os("--base-dir"), b, os("--job-name"), os(""), os("true")],
        vec![os("--base-dir"), b, os("--job-name"), os(".."), os("true")],
        vec![os("--base-dir"), b, os("--job-name"), os("a/b"), os("true")],
        vec![
            os("--base-dir"),
            b,
            os("--job-name"),
            os("j"),
            os("--process-name"),
            os("."),
            os("true"),
        ],
        vec![
            os("--base-dir"),
            b,
            os("--job-name"),
            os("j"),
            os("--process-name"),
            os(&long),
            os("true"),
        ],
        vec![
            os("--base-dir"),
            b,
            os("--job-name"),
            os("j"),
            os("--stop-timeout"),
            os("ten"),
            os("true"),
        ],
        vec![
            os("--base-dir"),
            b,
            os("--job-name"),
            os("j"),
            os("--bogus"),
            os("true"),
        ],
        vec![os("--base-dir"), b, os("--job-name"), os("j")],
        vec![os("--base-dir"), b, os("true")],
    ];
    for args in cases {
        let (code, _, err) = run_to_end(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: one line, got {err}"
        );
        assert!(err.starts_with("container-run: "), "{err}");
        assert!(!err.contains("panicked"));
        assert!(!base.exists(), "{args:?} created files");
    }
}

#[test]
fn unusable_base_directory_is_a_clear_error_and_nothing_starts() {
    let t = TempDir::new();
    let file = t.file("a-file");
    std::fs::write(&file, "").unwrap();
    let started = t.file("started");
    let base = file.join("base");
    let (code, _, err) = run_to_end(&[
        os("--base-dir"),
        base.as_os_str(),
        os("--job-name"),
        os("j"),
        os("--"),
        child().as_os_str(),
        os("--ready"),
        started.as_os_str(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("base directory"), "{err}");
    assert!(!started.exists());
}

#[test]
fn help_lists_every_flag_and_exit_code() {
    let (code, out, _) = run_to_end(&[os("--help")]);
    assert_eq!(code, 0);
    for needle in [
        "--job-name",
        "--process-name",
        "--post-start-name",
        "--post-start-arg",
        "--post-start-condition-name",
        "--post-start-condition-arg",
        "--debug",
        "--base-dir",
        "CONTAINER_RUN_BASE_DIR",
        "--stop-timeout",
        "--post-start-timeout",
        "--condition-interval",
        "127",
        "126",
        "128+S",
    ] {
        assert!(out.contains(needle), "--help lacks {needle}");
    }
    let (code, out, _) = run_to_end(&[os("--version")]);
    assert_eq!(code, 0);
    assert!(out.starts_with("container-run "), "{out}");
}
