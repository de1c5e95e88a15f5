//! `ctl stop`/`start` while they wait: one line redrawn in place on a
//! terminal (run under a pseudo-terminal with util-linux `script`), and
//! nothing but the result when stdout is not a terminal. Each test holds a
//! stop open with a job that ignores SIGTERM, watches what ctl has shown so
//! far, and ends the stop by killing the job: no timing is assumed.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command};

use common::*;

/// A command running with stdout and stderr in files of `t`.
struct Watched {
    child: Child,
    out: PathBuf,
}

impl Watched {
    fn spawn(t: &TempDir, mut cmd: Command) -> Watched {
        let out = t.file("shown");
        cmd.env_remove("CONTAINER_RUN_BASE_DIR");
        let child = spawn_to_files(&mut cmd, &out, &t.file("stderr"));
        Watched { child, out }
    }

    fn shown(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait_shown(&self, what: &str) {
        wait_until(&format!("{what:?} shown"), || self.shown().contains(what));
    }

    /// Exit code and everything shown.
    fn finish(mut self) -> (i32, String) {
        let status = wait_for("ctl exits", || self.child.try_wait().unwrap());
        (exit_code(status), self.shown())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            kill(self.child.id() as i32, libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// `container-run ARGS` under a pseudo-terminal (stdout and stderr both go
/// to it, as on an operator's screen).
fn on_a_terminal(args: &[&str]) -> Command {
    let mut line = shell_quote(&bin().display().to_string());
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]);
    cmd
}

/// `ctl stop job` on a terminal, once it shows the stop under way.
fn stop_on_a_terminal(t: &TempDir) -> Watched {
    let base = t.path().to_str().unwrap();
    let ctl = Watched::spawn(
        t,
        on_a_terminal(&["ctl", "stop", "job", "--base-dir", base]),
    );
    ctl.wait_shown("\rjob/job: stopping, ");
    ctl
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn stop_shows_the_state_and_the_wait_on_a_terminal_then_the_result_alone() {
    let t = TempDir::new();
    let (run, pid) = Run::stubborn(&t, "1h");
    let ctl = stop_on_a_terminal(&t);
    // container-run says when its SIGKILL is due (a 1 h stop timeout).
    assert!(
        ctl.shown().contains(" s (SIGKILL in 3"),
        "{:?}",
        ctl.shown()
    );
    kill(pid, libc::SIGKILL);
    let (code, shown) = ctl.finish();
    assert_eq!(code, 0, "{shown:?}");
    // Erased before the result, so the screen's last line is the result.
    assert!(shown.ends_with("\r\x1b[Kjob/job: stopped\r\n"), "{shown:?}");
    run.wait_state("stopped");
}

#[test]
fn nothing_but_the_result_when_stdout_is_not_a_terminal() {
    let t = TempDir::new();
    let (run, pid) = Run::stubborn(&t, "1h");
    let base = t.path().to_str().unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["ctl", "stop", "job", "--base-dir", base]);
    let ctl = Watched::spawn(&t, cmd);
    run.wait_state("stopping");
    kill(pid, libc::SIGKILL);
    let (code, shown) = ctl.finish();
    assert_eq!((code, shown.as_str()), (0, "job/job: stopped\n"));

    let (code, out, err) = run_to_end(&[
        os("ctl"),
        os("start"),
        os("job"),
        os("--base-dir"),
        t.path().as_os_str(),
    ]);
    assert_eq!((code, err.as_str()), (0, ""));
    let pid = read_pid(&run.files.pidfile).unwrap();
    assert_eq!(out, format!("job/job: running (pid {pid})\n"));
}

#[test]
fn stop_all_counts_the_container_runs_done_on_a_terminal() {
    let t = TempDir::new();
    let rec = Recorder::new(&t, &["--ignore-term"]);
    let stubborn = Run::builder(t.path(), "a")
        .args(["--stop-timeout", "1h"])
        .spawn(&rec.command);
    let quick = Run::builder(t.path(), "b").spawn([child()]);
    let pid = stubborn.wait_running();
    assert_eq!(rec.wait_ready(), pid);
    quick.wait_running();
    let base = t.path().to_str().unwrap();
    let ctl = Watched::spawn(
        &t,
        on_a_terminal(&["ctl", "stop", "--all", "--base-dir", base]),
    );
    ctl.wait_shown("\rSTOP: 1/2 done, ");
    assert!(
        ctl.shown().contains("\rSTOP: 0/2 done, "),
        "{:?}",
        ctl.shown()
    );
    kill(pid, libc::SIGKILL);
    let (code, shown) = ctl.finish();
    assert_eq!(code, 0, "{shown:?}");
    assert!(
        shown.ends_with("\r\x1b[Ka/a: stopped\r\nb/b: stopped\r\n"),
        "{shown:?}"
    );
    stubborn.wait_state("stopped");
}

/// Issue 10, finding 9: once container-run has answered, the command was
/// received; if it then goes away, that is a failure (1), not "no answer".
#[test]
fn a_container_run_that_goes_away_after_answering_is_a_failure_not_no_answer() {
    let t = TempDir::new();
    let (mut run, pid) = Run::stubborn(&t, "1h");
    run.track(pid);
    let ctl = stop_on_a_terminal(&t);
    run.signal(libc::SIGKILL);
    let (code, shown) = ctl.finish();
    assert_eq!(code, 1, "{shown:?}");
    assert!(
        shown.ends_with(
            "\r\x1b[Kcontainer-run: job/job: container-run went away from its socket after \
             answering (last seen stopping)\r\n"
        ),
        "{shown:?}"
    );
}

/// Issue 19, finding 6: Ctrl-C while `ctl stop` waits on a terminal ends
/// the wait, not the stop: the progress line is finished where it stands
/// (not erased, not left for the shell's prompt to overwrite), one line
/// says what was sent and what goes on, and ctl exits 130.
#[test]
fn ctrl_c_on_a_terminal_finishes_the_line_and_says_the_stop_goes_on() {
    let t = TempDir::new();
    let (run, pid) = Run::stubborn(&t, "1h");
    let ctl = stop_on_a_terminal(&t);
    // ctl itself, under script's pseudo-terminal: the descendant that runs
    // this binary with `ctl stop`.
    let ctl_pid = wait_for("ctl under script", || {
        descendants(ctl.child.id() as i32).into_iter().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|w| w == b"stop"))
        })
    });
    kill(ctl_pid, libc::SIGINT);
    let (code, shown) = ctl.finish();
    assert_eq!(code, 130, "{shown:?}");
    let at = shown
        .find("\r\ncontainer-run: job/job: interrupted: STOP was sent and goes on")
        .unwrap_or_else(|| panic!("no message on a line of its own: {shown:?}"));
    // What the screen showed last before it: the progress line, finished,
    // not erased.
    let last_drawn = shown[..at].rsplit('\r').next().unwrap();
    assert!(last_drawn.starts_with("job/job: stopping, "), "{shown:?}");
    assert_eq!(run.status()["state"], "stopping", "the stop goes on");
    kill(pid, libc::SIGKILL);
    run.wait_state("stopped");
}
