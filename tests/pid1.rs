//! End to end: container-run as PID 1 of a fresh PID and mount namespace
//! (`unshare --pid --mount --fork --mount-proc`), as in a container without
//! tini or dumb-init. Needs root, as CI has.

mod common;

use std::process::{Child, Stdio};

use common::*;

/// `unshare` running container-run as PID 1; killed (by pid) on drop.
struct Namespaced {
    unshare: Child,
}

impl Namespaced {
    fn start(args: &[&std::ffi::OsStr]) -> Namespaced {
        let unshare = namespaced()
            .arg(bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("unshare");
        Namespaced { unshare }
    }

    /// container-run's pid as seen from here.
    fn supervisor_pid(&self) -> i32 {
        wait_child_of(
            self.unshare.id() as i32,
            "container-run inside the namespace",
        )
    }

    fn wait_exit(&mut self) -> i32 {
        let status = wait_for("unshare exits", || self.unshare.try_wait().unwrap());
        exit_code(status)
    }
}

impl Drop for Namespaced {
    fn drop(&mut self) {
        if self.unshare.try_wait().unwrap().is_none() {
            kill(self.unshare.id() as i32, libc::SIGKILL);
            let _ = self.unshare.wait();
        }
    }
}

fn nspid_line(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap()
        .to_string()
}

#[test]
fn as_pid_1_it_reaps_orphans_and_exits_zero_on_sigterm() {
    if !require_root("for unshare --pid") {
        return;
    }
    let t = TempDir::new();
    let ready = t.file("ready");
    let record = t.file("record");
    let mut ns = Namespaced::start(&[
        os("--base-dir"),
        t.path().as_os_str(),
        os("--job-name"),
        os("job"),
        os("--"),
        child().as_os_str(),
        os("--orphans"),
        os("20"),
        os("--record"),
        record.as_os_str(),
        os("--ready"),
        ready.as_os_str(),
    ]);
    let sup = ns.supervisor_pid();
    assert!(
        nspid_line(sup).trim_end().ends_with("\t1"),
        "{}",
        nspid_line(sup)
    );
    wait_until("job ready", || ready.exists());
    let files = Files::new(t.path(), "job", "job");
    wait_until("pidfile", || files.pidfile.exists());
    // Twenty orphans were re-parented to PID 1 and exited: none may stay
    // a zombie.
    wait_until("only the job is left under PID 1", || {
        let d = descendants(sup);
        d.len() == 1 && alive(d[0])
    });
    let job = descendants(sup)[0];
    assert_eq!(proc_state(job).map(|c| c != 'Z'), Some(true));

    // The socket works from outside the namespace.
    let s = request(&files.socket, "STATUS");
    assert_eq!(s["state"], "running");
    assert_eq!(s["pid"], 2, "pids in the reply are the namespace's");

    kill(sup, libc::SIGTERM);
    assert_eq!(ns.wait_exit(), 0);
    assert_eq!(lines(&record), ["SIGTERM"]);
    assert!(!files.socket.exists());
}

#[test]
fn as_pid_1_stop_and_start_kill_escaped_grandchildren() {
    if !require_root("for unshare --pid") {
        return;
    }
    let t = TempDir::new();
    let gc = t.file("gc");
    let ns = Namespaced::start(&[
        os("--base-dir"),
        t.path().as_os_str(),
        os("--job-name"),
        os("job"),
        os("--stop-timeout"),
        os("300ms"),
        os("--"),
        child().as_os_str(),
        os("--grandchild"),
        gc.as_os_str(),
    ]);
    let sup = ns.supervisor_pid();
    let files = Files::new(t.path(), "job", "job");
    wait_until("grandchild started", || gc.exists());
    wait_until("job and grandchild under PID 1", || {
        descendants(sup).len() == 2
    });
    send(&files.socket, "STOP");
    wait_until("stopped", || {
        request(&files.socket, "STATUS")["state"] == "stopped"
    });
    assert!(descendants(sup).is_empty(), "{:?}", descendants(sup));
    std::fs::remove_file(&gc).unwrap();
    send(&files.socket, "START");
    wait_until("running again", || files.running.exists());
    // The restarted job set up completely: a new escaped grandchild.
    wait_until("new grandchild started", || gc.exists());
    wait_until("job and grandchild again", || descendants(sup).len() == 2);
    assert!(alive(sup));
}
