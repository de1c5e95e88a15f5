//! Fixtures of the tests in which the job's own user (uid 65534) attacks a
//! root container-run: BASE as BOSH leaves it, a directory of the
//! attacker's own, root-only victims, `setpriv`, python3 attackers killed
//! by pid, root's and the job user's clients, what a fake answers, and the
//! abstract names a process holds (what anyone in the pod reads in
//! `/proc/net/unix`). Unused items are allowed as in `common`.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use serde_json::Value;

use super::*;

/// The job's user (and its group), as BOSH's vcap stands in the tests.
pub const NOBODY: u32 = 65534;
/// Not a shim under root's home: the job's user must be able to run it.
pub const PYTHON: &str = "/usr/bin/python3";

pub fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

/// Create `dirs` under `base` (with their parents), each owned by the job's
/// user.
pub fn job_user_dirs<D: AsRef<Path>>(base: &Path, dirs: impl IntoIterator<Item = D>) {
    for dir in dirs {
        let p = base.join(dir);
        std::fs::create_dir_all(&p).unwrap();
        chown(&p, NOBODY);
    }
}

/// BASE as a BOSH pre-start leaves it: every job's data and pid
/// directories belong to the job's user (vcap owns all of them).
pub fn job_owned_base(t: &TempDir, jobs: &[&str]) -> PathBuf {
    let base = t.file("base");
    for job in jobs {
        job_user_dirs(&base, [format!("data/{job}"), format!("sys/run/bpm/{job}")]);
    }
    base
}

/// A directory of the job user's own outside BASE: ready files, logs.
pub fn attacker_dir(t: &TempDir) -> PathBuf {
    let d = t.file("attacker");
    std::fs::create_dir(&d).unwrap();
    chown(&d, NOBODY);
    d
}

/// Where an attack starts: a temporary directory, BASE of
/// `job_owned_base(jobs)` in it and the attacker's directory. `None`, the
/// test skipped, without root (`require_root(why)`).
pub fn attack_setup(why: &str, jobs: &[&str]) -> Option<(TempDir, PathBuf, PathBuf)> {
    if !require_root(why) {
        return None;
    }
    let t = TempDir::new();
    let base = job_owned_base(&t, jobs);
    let atk = attacker_dir(&t);
    Some((t, base, atk))
}

/// container-run of `job` under `base` whose socket the job user's group
/// may use (`--socket-group 65534`): a member of it attacks there.
pub fn grouped_run(base: &Path, job: &str) -> Builder {
    Run::builder(base, job).args(["--socket-group", "65534"])
}

/// Root-owned files (mode 0600, `root's secret NAME`) in a root-only
/// directory outside BASE, that the attacker points its links at.
pub struct Victims {
    pub dir: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Victims {
    pub fn new(t: &TempDir, names: &[&str]) -> Victims {
        let dir = t.file("victims");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let files = names
            .iter()
            .map(|n| {
                let p = dir.join(n);
                let content = Victims::content(n).into_bytes();
                std::fs::write(&p, &content).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
                (p, content)
            })
            .collect();
        Victims { dir, files }
    }

    fn content(name: &str) -> String {
        format!("root's secret {name}\n")
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A root-only socket that records whatever reaches it.
    pub fn socket(&self, name: &str) -> (PathBuf, UnixDatagram) {
        let p = self.dir.join(name);
        let s = UnixDatagram::bind(&p).unwrap();
        s.set_nonblocking(true).unwrap();
        (p, s)
    }

    /// The file `name` is still root's regular file, mode 0600, as written.
    pub fn assert_file_untouched(&self, name: &str) {
        let p = self.dir.join(name);
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.is_file(), "{} is no longer a regular file", p.display());
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o600, 0), "{}", p.display());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), Victims::content(name));
    }

    /// Every file's content, mode and owner as created, and nothing added
    /// beside them.
    pub fn assert_untouched(&self) {
        for (p, content) in &self.files {
            let m = std::fs::symlink_metadata(p).unwrap();
            assert!(m.is_file(), "{} is no longer a regular file", p.display());
            assert_eq!(
                (m.mode() & 0o7777, m.uid(), m.gid()),
                (0o600, 0, 0),
                "{} mode or owner changed",
                p.display()
            );
            assert_eq!(
                &std::fs::read(p).unwrap(),
                content,
                "{} changed",
                p.display()
            );
        }
        let mut want: Vec<String> = self
            .files
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        want.sort();
        assert_eq!(
            self.names(),
            want,
            "files created in {}",
            self.dir.display()
        );
        let m = std::fs::metadata(&self.dir).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o700, 0));
    }

    /// The names in the directory, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Everything a non-blocking recording socket received, as text.
pub fn received(sock: &UnixDatagram) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    got
}

/// `setpriv` as uid 65534 with `gid` as its only group.
pub fn setpriv(gid: u32) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups");
    cmd
}

/// `setpriv` as uid 65534 with `gid` as its only group, appended to the
/// arguments of `wrap` (`nsenter ... --`, `container-run ... --`), ready
/// for a program.
pub fn then_setpriv(wrap: &mut Command, gid: u32) -> &mut Command {
    let p = setpriv(gid);
    wrap.arg(p.get_program()).args(p.get_args())
}

/// A client that finds its container-runs under `--base-dir` and believes
/// only root's.
pub fn without_client_env(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("CONTAINER_RUN_BASE_DIR")
        .env_remove("CONTAINER_RUN_TRUST_UID")
}

/// `container-run MODE --base-dir BASE ARGS...`, run by `wrap` (`setpriv`,
/// `nsenter`, ...) when given.
pub fn client_command(wrap: Option<Command>, base: &Path, mode: &str, args: &[&str]) -> Command {
    let mut cmd = match wrap {
        Some(mut w) => {
            w.arg(bin())
                .arg(mode)
                .arg("--base-dir")
                .arg(base)
                .args(args);
            w
        }
        None => mode_command(mode, base, args),
    };
    without_client_env(&mut cmd);
    cmd
}

/// `client_command` to its end: (exit code, stdout, stderr).
pub fn client_through(
    wrap: Option<Command>,
    base: &Path,
    mode: &str,
    args: &[&str],
) -> (i32, String, String) {
    output_with_deadline(client_command(wrap, base, mode, args))
}

/// `container-run MODE --base-dir BASE ARGS...` as root, to its end:
/// (exit code, stdout, stderr).
pub fn client(base: &Path, mode: &str, args: &[&str]) -> (i32, String, String) {
    client_through(None, base, mode, args)
}

/// The same as the job's user (uid and group 65534, no other group).
pub fn client_as_job_user(base: &Path, mode: &str, args: &[&str]) -> (i32, String, String) {
    client_through(Some(setpriv(NOBODY)), base, mode, args)
}

/// A shell command as the job's user, to its end; it must succeed.
pub fn as_job_user(script: &str) {
    let mut cmd = setpriv(NOBODY);
    cmd.args(["sh", "-ec", script]);
    let (code, out, err) = output_with_deadline(cmd);
    assert_eq!(code, 0, "the attack itself failed: {out}{err}");
}

/// A python3 process of the job's user, running on in the background;
/// killed by pid and reaped when dropped.
pub struct Attacker {
    pub child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Attacker {
    /// `python3 -c SCRIPT READY ARGS...` as uid 65534 and group `gid`;
    /// returns once the script has created READY (in `dir`).
    pub fn python(dir: &Path, gid: u32, script: &str, args: &[&OsStr]) -> Attacker {
        Attacker::python_by(setpriv(gid), dir, script, args)
    }

    /// The same, run by `cmd` (`setpriv` as the attacker, wrapped or
    /// pinned as the test needs).
    pub fn python_by(mut cmd: Command, dir: &Path, script: &str, args: &[&OsStr]) -> Attacker {
        let ready = dir.join(unique("ready"));
        let (out, err) = (dir.join(unique("out")), dir.join(unique("err")));
        cmd.args([PYTHON, "-c", script]).arg(&ready).args(args);
        let mut a = Attacker {
            child: spawn_to_files(&mut cmd, &out, &err),
            out,
            err,
        };
        wait_until("the attacker is set up", || {
            if let Some(status) = a.child.try_wait().unwrap() {
                panic!(
                    "the attacker ended early ({status}): {}",
                    std::fs::read_to_string(&a.err).unwrap_or_default()
                );
            }
            ready.exists()
        });
        a
    }

    /// Wait for the script to end by itself; what it printed.
    pub fn finish(&mut self) -> String {
        let status = wait_for("the attacker finishes", || self.child.try_wait().unwrap());
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        assert!(status.success(), "the attack itself failed: {err}");
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        kill(self.child.id() as i32, libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// `python3 -c SCRIPT ARGS...` as the job's user, to its end: (exit code,
/// stdout, stderr).
pub fn python_to_end(script: &str, args: &[&OsStr]) -> (i32, String, String) {
    let mut cmd = setpriv(NOBODY);
    cmd.args([PYTHON, "-c", script]).args(args);
    output_with_deadline(cmd)
}

/// The arguments of an attacker's script, as `OsStr`s.
pub fn args<'a>(items: &'a [&'a dyn AsRef<OsStr>]) -> Vec<&'a OsStr> {
    items.iter().map(|a| a.as_ref()).collect()
}

/// A reply line as container-run writes it, every field of which the
/// sender chose: the pid is 1, or null when `state` is `stopped`.
pub fn fake_answer(job: &str, process: &str, state: &str, hold: bool, drain: &str) -> String {
    let pid = if state == "stopped" {
        Value::Null
    } else {
        Value::from(1)
    };
    let line = serde_json::json!({
        "state": state, "pid": pid, "job": job, "process": process, "starts": 1,
        "hold": hold, "pending_start": false, "exiting": false, "post_start": "none",
        "uptime_ms": 1000, "last_exit": null, "drain": drain, "age_ms": 1000,
    });
    format!("{line}\n")
}

/// What a job's user's socket answers, as a container-run with no drain
/// would.
pub fn fake_line(job: &str, process: &str, state: &str, hold: bool) -> String {
    fake_answer(job, process, state, hold, "none")
}

/// Text a person reads carries no raw control character but newlines.
pub fn assert_no_control(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|&c| c.is_control() && c != '\n')
        .collect();
    assert!(bad.is_empty(), "{what} carries raw {bad:?}: {text:?}");
}

/// Socket inodes of process `pid`.
pub fn socket_inodes(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
                    Some(l.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Abstract names bound by process `pid`'s sockets, from `/proc/net/unix`
/// (what anyone in the pod can read), without their `@`.
pub fn abstract_names_of(pid: i32) -> Vec<String> {
    let inodes = socket_inodes(pid);
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f.get(7)?.strip_prefix('@')?;
            inodes.iter().any(|i| i == f[6]).then(|| name.to_string())
        })
        .collect()
}
