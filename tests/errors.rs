//! Every error an operator meets in the first hour (issue 14, issue 10
//! finding 9), as the exact line on stderr and the exit code: one line,
//! `container-run: MESSAGE` in every mode (`bpm: MESSAGE` invoked as bpm),
//! naming what is wrong; help and version on stdout with exit 0.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<&OsStr> = args.iter().map(|a| os(a)).collect();
    run_to_end(&args)
}

/// Exactly one line on stderr, nothing on stdout.
fn assert_error(got: (i32, String, String), code: i32, line: &str) {
    let (got_code, out, err) = got;
    assert_eq!(err, format!("{line}\n"), "stderr");
    assert_eq!(out, "", "stdout");
    assert_eq!(got_code, code, "exit code; stderr: {err}");
}

/// The binary invoked under the name `bpm`, as the installed link is.
fn as_bpm(t: &TempDir, args: &[&str]) -> (i32, String, String) {
    let link = t.file("bpm");
    if !link.exists() {
        std::os::unix::fs::symlink(bin(), &link).unwrap();
    }
    let mut cmd = Command::new(&link);
    cmd.args(args).env_remove("CONTAINER_RUN_BASE_DIR");
    output_with_deadline(cmd)
}

fn base_arg(t: &TempDir) -> String {
    t.path().display().to_string()
}

#[test]
fn no_arguments_names_both_missing_arguments() {
    assert_error(
        run(&[]),
        2,
        "container-run: missing required arguments: --job-name <JOB>, <COMMAND>... \
         (see container-run --help)",
    );
}

#[test]
fn a_job_without_a_command_names_the_command() {
    assert_error(
        run(&["--job-name", "x"]),
        2,
        "container-run: missing required argument: <COMMAND>... (see container-run --help)",
    );
}

#[test]
fn ctl_alone_and_ctl_status_name_what_is_missing() {
    assert_error(
        run(&["ctl"]),
        2,
        "container-run: missing required argument: <VERB> (see container-run ctl --help)",
    );
    assert_error(
        run(&["ctl", "status"]),
        2,
        "container-run: missing TARGET: name one or more, or use --all or --socket PATH \
         (see container-run ctl --help)",
    );
}

#[test]
fn bpm_alone_names_what_is_missing_under_the_name_it_was_invoked_by() {
    assert_error(
        run(&["bpm"]),
        2,
        "container-run: missing required argument: <VERB> (see container-run bpm --help)",
    );
    let t = TempDir::new();
    assert_error(
        as_bpm(&t, &[]),
        2,
        "bpm: missing required argument: <VERB> (see bpm --help)",
    );
}

#[test]
fn probe_without_a_check_names_it() {
    assert_error(
        run(&["probe", "web"]),
        2,
        "container-run: missing required argument: <CHECK>... (see container-run probe --help)",
    );
}

#[test]
fn an_invalid_verb_lists_the_valid_ones() {
    assert_error(
        run(&["ctl", "stat", "web"]),
        2,
        "container-run: invalid value 'stat' for <VERB>: did you mean 'start'? (one of start, \
         stop, term, quit, status, restart, wait) (see container-run ctl --help)",
    );
    let t = TempDir::new();
    assert_error(
        as_bpm(&t, &["explode", "web"]),
        2,
        "bpm: invalid value 'explode' for <VERB>: expected one of start, stop, term, quit, \
         pid, running, list, logs (see bpm --help)",
    );
}

#[test]
fn a_ctl_verb_without_ctl_says_which_command_was_meant() {
    assert_error(
        run(&["status", "web"]),
        2,
        "container-run: 'status' is a verb of ctl: container-run ctl status web \
         (see container-run --help)",
    );
}

#[test]
fn a_bad_duration_says_why() {
    assert_error(
        run(&["--job-name", "x", "--stop-timeout", "5x", "true"]),
        2,
        "container-run: invalid value '5x' for --stop-timeout <DURATION>: invalid unit \"x\" \
         in duration \"5x\" (use ms, s, m or h) (see container-run --help)",
    );
}

#[test]
fn help_as_a_word_and_as_a_flag_prints_help_and_exits_0() {
    let t = TempDir::new();
    let cases: Vec<((i32, String, String), &str)> = vec![
        (
            run(&["help"]),
            "Usage: container-run [OPTIONS] --job-name JOB",
        ),
        (
            run(&["--help"]),
            "Usage: container-run [OPTIONS] --job-name JOB",
        ),
        (
            run(&["help", "ctl"]),
            "Usage: container-run ctl VERB TARGET... [-p PROCESS] [OPTIONS]",
        ),
        (
            run(&["ctl", "help"]),
            "Usage: container-run ctl VERB TARGET... [-p PROCESS] [OPTIONS]",
        ),
        (
            run(&["ctl", "--help"]),
            "Usage: container-run ctl VERB TARGET... [-p PROCESS] [OPTIONS]",
        ),
        (
            run(&["bpm", "help"]),
            "Usage: container-run bpm [OPTIONS] <VERB> [JOB]",
        ),
        (as_bpm(&t, &["help"]), "Usage: bpm [OPTIONS] <VERB> [JOB]"),
        (as_bpm(&t, &["--help"]), "Usage: bpm [OPTIONS] <VERB> [JOB]"),
        (
            run(&["probe", "--help"]),
            "Usage: container-run probe [OPTIONS] <JOB> -- <CHECK>...",
        ),
        (
            run(&["help", "probe"]),
            "Usage: container-run probe [OPTIONS] <JOB> -- <CHECK>...",
        ),
    ];
    for ((code, out, err), usage) in cases {
        assert_eq!((code, err.as_str()), (0, ""), "{usage}");
        assert!(
            out.lines()
                .any(|l| l == usage || l.starts_with(&format!("{usage} "))),
            "{usage:?} not in:\n{out}"
        );
    }
    let (code, out, err) = run(&["--version"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.starts_with(&format!("container-run {}", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn help_shows_an_env_value_only_when_the_variable_is_set() {
    let (_, out, _) = run(&["ctl", "--help"]);
    assert!(out.contains("[env: CONTAINER_RUN_BASE_DIR]"), "{out}");
    assert!(!out.contains("CONTAINER_RUN_BASE_DIR="), "{out}");
    let mut cmd = Command::new(bin());
    cmd.args(["ctl", "--help"])
        .env("CONTAINER_RUN_BASE_DIR", "/srv/vcap");
    let (_, out, _) = output_with_deadline(cmd);
    assert!(
        out.contains("[env: CONTAINER_RUN_BASE_DIR=/srv/vcap]"),
        "{out}"
    );
    let (_, out, _) = run(&["--help"]);
    assert!(!out.contains("=]"), "{out}");
}

#[test]
fn a_missing_socket_given_by_path_is_named_once_without_a_hint() {
    let t = TempDir::new();
    let sock = t.file("x/nope.sock");
    let sock = sock.to_str().unwrap();
    assert_error(
        run(&["ctl", "stop", "--socket", sock]),
        3,
        &format!("container-run: {sock}: no such file"),
    );
}

#[test]
fn ctl_status_of_a_job_that_is_not_running_prints_the_error_only() {
    let t = TempDir::new();
    let base = base_arg(&t);
    assert_error(
        run(&["ctl", "status", "web", "--base-dir", &base]),
        3,
        &format!(
            "container-run: web/web: no socket at {base}/data/web/web_containerrun.sock: \
             is container-run running with this job and process?"
        ),
    );
}

#[test]
fn status_all_without_sockets_exits_3_naming_the_directory_searched() {
    let t = TempDir::new();
    let base = base_arg(&t);
    assert_error(
        run(&["ctl", "status", "--all", "--base-dir", &base]),
        3,
        &format!("container-run: no container-run socket under {base}/data: no such directory"),
    );
    std::fs::create_dir(t.file("data")).unwrap();
    assert_error(
        run(&["ctl", "status", "--all", "--base-dir", &base]),
        3,
        &format!("container-run: no container-run socket under {base}/data"),
    );
}

/// A FIFO, a regular file and a directory where the socket should be.
fn not_sockets(t: &TempDir) -> Vec<(PathBuf, &'static str)> {
    let fifo = t.file("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let file = t.file("file");
    std::fs::write(&file, "").unwrap();
    let dir = t.file("dir");
    std::fs::create_dir(&dir).unwrap();
    vec![
        (fifo, "a FIFO"),
        (file, "a regular file"),
        (dir, "a directory"),
    ]
}

#[test]
fn ctl_and_probe_say_what_is_there_when_it_is_not_a_socket() {
    let t = TempDir::new();
    for (path, what) in not_sockets(&t) {
        let p = path.to_str().unwrap();
        assert_error(
            run(&["ctl", "stop", "--socket", p]),
            3,
            &format!("container-run: {p}: not a socket: {what}"),
        );
    }
    // By name: the socket's path in the message.
    let files = Files::new(t.path(), "job", "job");
    std::fs::create_dir_all(files.socket.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(
        &files.socket,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let base = base_arg(&t);
    let sock = files.socket.display();
    assert_error(
        run(&["ctl", "status", "job", "--base-dir", &base]),
        3,
        &format!("container-run: job/job: not a socket: {sock} is a FIFO"),
    );
    assert_error(
        run(&["probe", "job", "--base-dir", &base, "--", "true"]),
        1,
        &format!("container-run: job/job: not a socket: {sock} is a FIFO"),
    );
}

#[test]
fn bpm_errors_start_with_bpm_when_invoked_as_bpm() {
    let t = TempDir::new();
    let base = base_arg(&t);
    assert_error(
        as_bpm(&t, &["stop", "nope", "--base-dir", &base]),
        1,
        &format!(
            "bpm: nope/nope: no socket at {base}/data/nope/nope_containerrun.sock: \
             is container-run running with this job and process?"
        ),
    );
}

#[test]
fn stop_with_a_zero_timeout_reports_the_state_it_got_back() {
    let t = TempDir::new();
    let (run_, pid) = Run::stubborn(&t, "1h");
    let base = base_arg(&t);
    assert_error(
        run(&["ctl", "stop", "job", "--base-dir", &base, "--timeout", "0s"]),
        1,
        "container-run: job/job: timed out after 0s, still stopping (STOP received)",
    );
    assert!(run_.files.stopped.exists(), "the STOP was carried out");
    kill(pid, libc::SIGKILL);
    run_.wait_state("stopped");
}

/// The job's command that cannot run: one line worded once, no `error:`
/// prefix and no Rust `(os error 13)`, then exit 126.
#[test]
fn a_command_that_is_not_executable_is_one_plain_line() {
    let t = TempDir::new();
    let mut run_ = Run::builder(t.path(), "job").spawn(["/etc/passwd"]);
    assert_eq!(run_.wait_exit(), 126);
    let err = run_.errors();
    assert!(
        err.lines()
            .any(|l| l == "container-run: /etc/passwd: permission denied"),
        "{err}"
    );
    assert!(
        !err.contains("os error") && !err.contains("error: "),
        "{err}"
    );
}

/// Only main ends the process: help and version come back to it as values.
#[test]
fn nothing_but_main_calls_process_exit() {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.ends_with("src/main.rs")
                && std::fs::read_to_string(&path)
                    .unwrap()
                    .contains("process::exit")
            {
                found.push(path.display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    assert!(found.is_empty(), "process::exit in {found:?}");
}

#[test]
fn a_base_directory_that_cannot_be_made_says_so_once() {
    let t = TempDir::new();
    let file = t.file("file");
    std::fs::write(&file, "").unwrap();
    let base = file.join("base");
    let base = base.to_str().unwrap();
    assert_error(
        run(&["--job-name", "j", "--base-dir", base, "--", "true"]),
        1,
        &format!("container-run: cannot write under base directory {base}: not a directory"),
    );
}
