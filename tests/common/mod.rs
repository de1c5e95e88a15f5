//! Shared fixtures of the end-to-end tests: a temporary base directory, a
//! running container-run that is killed (by pid) when the test ends,
//! bounded waits on conditions, datagram clients, and /proc readers.
#![allow(dead_code)]

pub mod attack;

use std::ffi::OsStr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any condition may take on a loaded 2-core machine before the
/// test fails; a deadline, not an expected duration.
pub const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(5);

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_container-run"))
}

/// The test child (examples/testchild.rs), built by `cargo test`.
pub fn child() -> PathBuf {
    let p = bin().parent().unwrap().join("examples/testchild");
    assert!(
        p.exists(),
        "{} missing: a plain `cargo test` builds it; with a target filter \
         (`--test soak`) build it first: cargo build [--release] --example testchild",
        p.display()
    );
    p
}

/// Poll `cond` every few milliseconds until it holds; panic with `what`
/// after `DEADLINE`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(POLL);
    }
}

/// Poll until `f` returns a value.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let mut out = None;
    wait_until(what, || {
        out = f();
        out.is_some()
    });
    out.unwrap()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name no other test of this run uses: `PREFIX-PID-N`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(unique("crt"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file of SPEC section 2 for one job/process under a base.
pub struct Files {
    pub socket: PathBuf,
    pub running: PathBuf,
    pub stopped: PathBuf,
    pub pidfile: PathBuf,
}

impl Files {
    pub fn new(base: &Path, job: &str, process: &str) -> Files {
        let data = base.join("data").join(job);
        Files {
            socket: data.join(format!("{process}_containerrun.sock")),
            running: data.join(format!("{process}_containerrun.running")),
            stopped: data.join(format!("{process}_containerrun.stopped")),
            pidfile: base.join(format!("sys/run/bpm/{job}/{process}.pid")),
        }
    }
}

/// A container-run under test. Dropping it SIGKILLs it and every pid the
/// test registered, and reaps it.
pub struct Run {
    pub child: Child,
    pub files: Files,
    pub base: PathBuf,
    pub stderr: PathBuf,
    extra_pids: Vec<i32>,
    exited: Option<ExitStatus>,
}

pub struct Builder {
    cmd: Command,
    base: PathBuf,
    job: String,
    process: String,
    stderr: PathBuf,
}

impl Builder {
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Builder {
        self.cmd.arg(a);
        self
    }
    pub fn args<I, S>(mut self, args: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Builder {
        self.cmd.env(key, value);
        self
    }
    pub fn process_name(mut self, p: &str) -> Builder {
        self.cmd.args(["--process-name", p]);
        self.process = p.to_string();
        self
    }
    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }
    /// Start it; the job's command follows `--`.
    pub fn spawn<I, S>(mut self, job_command: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.arg("--").args(job_command);
        let child = self.cmd.spawn().expect("spawn container-run");
        Run {
            child,
            files: Files::new(&self.base, &self.job, &self.process),
            base: self.base,
            stderr: self.stderr,
            extra_pids: Vec::new(),
            exited: None,
        }
    }

    /// Start it with the test child as its job; returns once the job runs,
    /// with the job's pid.
    pub fn spawn_running(self) -> (Run, i32) {
        let run = self.spawn([child()]);
        let pid = run.wait_running();
        (run, pid)
    }

    /// Start it with the recorder's job; returns once the job runs and has
    /// set up.
    pub fn spawn_ready(self, rec: &Recorder) -> Run {
        let run = self.spawn(&rec.command);
        run.wait_running();
        rec.wait_ready();
        run
    }
}

impl Run {
    /// container-run with `--base-dir BASE --job-name JOB --stop-timeout 20s`.
    pub fn builder(base: &Path, job: &str) -> Builder {
        let stderr = std::env::temp_dir().join(format!("{}.stderr", unique("crt-log")));
        let mut cmd = Command::new(bin());
        cmd.arg("--base-dir")
            .arg(base)
            .args(["--job-name", job, "--debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .env_remove("CONTAINER_RUN_BASE_DIR");
        Builder {
            cmd,
            base: base.to_path_buf(),
            job: job.to_string(),
            process: job.to_string(),
            stderr,
        }
    }

    /// container-run whose job ignores SIGTERM, so that a stop lasts until
    /// `stop_timeout`; returns once the job has set up, with its pid.
    pub fn stubborn(t: &TempDir, stop_timeout: &str) -> (Run, i32) {
        let rec = Recorder::new(t, &["--ignore-term"]);
        let run = Run::builder(t.path(), "job")
            .args(["--stop-timeout", stop_timeout])
            .spawn(&rec.command);
        let pid = run.wait_running();
        assert_eq!(rec.wait_ready(), pid);
        (run, pid)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Kill this pid too when the test ends (grandchildren that escaped).
    pub fn track(&mut self, pid: i32) {
        self.extra_pids.push(pid);
    }

    pub fn wait_socket(&self) {
        wait_until("control socket", || self.files.socket.exists());
    }

    /// Wait until the job runs (sentinel, pidfile) and return its pid.
    pub fn wait_running(&self) -> i32 {
        wait_for("job running (sentinel + pidfile)", || {
            if !self.files.running.exists() {
                return None;
            }
            std::fs::read_to_string(&self.files.pidfile)
                .ok()?
                .trim()
                .parse()
                .ok()
        })
    }

    pub fn wait_stopped(&self) {
        wait_until("job stopped (sentinel and pidfile gone)", || {
            !self.files.running.exists() && !self.files.pidfile.exists()
        });
    }

    pub fn status(&self) -> Value {
        request(&self.files.socket, "STATUS")
    }

    /// Wait until container-run says `state` with no start pending (the
    /// socket may not be bound yet).
    pub fn wait_state(&self, state: &str) -> Value {
        wait_for(&format!("state {state}"), || {
            let s = try_request(&self.files.socket, "STATUS")?;
            (s["state"] == state && s["pending_start"] == false).then_some(s)
        })
    }

    /// stderr without the debug lines.
    pub fn errors(&self) -> String {
        self.stderr_text()
            .lines()
            .filter(|l| !l.starts_with("container-run: debug:"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().unwrap();
        }
        self.exited
    }

    /// Wait for container-run to exit; its code (or 128 + signal).
    pub fn wait_exit(&mut self) -> i32 {
        let status = wait_for("container-run exits", || self.try_exit());
        exit_code(status)
    }

    pub fn signal(&self, sig: i32) {
        kill(self.pid(), sig);
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            kill(self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
        for &pid in &self.extra_pids {
            kill(pid, libc::SIGKILL);
        }
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// Whether a test that needs root (namespaces, other users, mounts) can do
/// its real check. Without root it is skipped with a message, except under
/// CI (which runs as root), where it fails instead of passing silently.
pub fn require_root(why: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "needs root {why}, and CI must run as root"
    );
    eprintln!("skipped: needs root {why}");
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A process's resident set, from /proc/PID/status.
pub fn rss_kb(pid: i32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// The anonymous part of the resident set (heap, stacks): what a leak
/// grows. VmRSS also counts the binary's code pages, which a path run for
/// the first time after a baseline brings in once (tens of kB of a debug
/// build) without anything being kept.
pub fn rss_anon_kb(pid: i32) -> u64 {
    status_kb(pid, "RssAnon:")
}

fn status_kb(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a pid this test started.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Send one datagram from an unbound socket: no reply possible.
pub fn send(socket: &Path, text: &str) {
    let s = UnixDatagram::unbound().unwrap();
    s.send_to(text.as_bytes(), socket).unwrap();
}

/// A client socket bound to a fresh abstract address, connected to `socket`.
pub fn client(socket: &Path) -> UnixDatagram {
    let addr = SocketAddr::from_abstract_name(unique("crt-client").as_bytes()).unwrap();
    let s = UnixDatagram::bind_addr(&addr).unwrap();
    s.connect(socket).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

pub fn recv_json(s: &UnixDatagram) -> Value {
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).expect("a reply within the deadline");
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "{text:?}"
    );
    serde_json::from_str(text).unwrap()
}

/// Like `request`, but `None` while nothing is bound at `socket`.
pub fn try_request(socket: &Path, text: &str) -> Option<Value> {
    let addr = SocketAddr::from_abstract_name(unique("crt-client").as_bytes()).unwrap();
    let s = UnixDatagram::bind_addr(&addr).unwrap();
    s.connect(socket).ok()?;
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.send(text.as_bytes()).ok()?;
    Some(recv_json(&s))
}

/// Send `cmd` and read replies until one says `want`: the settle reply
/// follows the immediate one when the command left the state `stopping`.
pub fn command_until(c: &UnixDatagram, cmd: &str, want: &str) -> Value {
    c.send(cmd.as_bytes()).unwrap();
    for _ in 0..2 {
        let s = recv_json(c);
        if s["state"] == want {
            return s;
        }
    }
    panic!("{cmd} did not reach {want}");
}

/// `unshare` making what follows PID 1 of a new PID and mount namespace,
/// with its own /proc, killed with the unshare process.
pub fn namespaced() -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--mount", "--fork", "--mount-proc", "--kill-child"]);
    cmd
}

/// Send a command from a bound socket and return the reply.
pub fn request(socket: &Path, text: &str) -> Value {
    let s = client(socket);
    s.send(text.as_bytes()).unwrap();
    recv_json(&s)
}

pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn wait_pid_file(path: &Path) -> i32 {
    wait_for(&format!("pid in {}", path.display()), || read_pid(path))
}

/// The state letter of /proc/PID/stat, None once the process is gone.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim().chars().next()
}

/// Alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(c) if c != 'Z')
}

pub fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The pid of a child of `parent`, once it has one (the container-run
/// that `unshare --fork` started, say).
pub fn wait_child_of(parent: i32, what: &str) -> i32 {
    wait_for(what, || {
        descendants(parent)
            .into_iter()
            .find(|&p| ppid(p) == Some(parent))
    })
}

/// A PATH that finds `container-run`, a link to the binary under test in a
/// new directory `bin` of `t`, before the system's commands.
pub fn path_with_container_run(t: &TempDir) -> String {
    let tools = t.file("bin");
    std::fs::create_dir(&tools).unwrap();
    std::os::unix::fs::symlink(bin(), tools.join("container-run")).unwrap();
    format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `container-run --base-dir BASE --job-name job -- TESTCHILD` as what
/// `wrap` runs (`setpriv ...`, `sh -c '...; exec "$@"' sh`), with no stdin
/// or stdout; its stderr is the caller's to set.
pub fn wrapped_run<'a>(wrap: &'a mut Command, base: &Path) -> &'a mut Command {
    wrap.arg(bin())
        .arg("--base-dir")
        .arg(base)
        .args(["--job-name", "job", "--"])
        .arg(child())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
}

/// Every process whose parent chain leads to `root`.
pub fn descendants(root: i32) -> Vec<i32> {
    let all: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, ppid(pid)?)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, parent) in &all {
            if parent == p && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

/// The test child recording every signal it gets, as a job command; wait
/// on `Recorder::ready` before signalling it (signals sent before it has
/// set up would act with their default action).
pub struct Recorder {
    pub command: Vec<std::ffi::OsString>,
    pub record: PathBuf,
    pub ready: PathBuf,
}

impl Recorder {
    pub fn new(dir: &TempDir, extra: &[&str]) -> Recorder {
        let record = dir.file(&unique("record"));
        let ready = dir.file(&unique("ready"));
        let mut command = vec![child().into_os_string()];
        command.extend(extra.iter().map(Into::into));
        command.extend([
            "--record".into(),
            record.clone().into_os_string(),
            "--ready".into(),
            ready.clone().into_os_string(),
        ]);
        Recorder {
            command,
            record,
            ready,
        }
    }

    /// Wait until the child has set up; its pid.
    pub fn wait_ready(&self) -> i32 {
        wait_pid_file(&self.ready)
    }

    pub fn signals(&self) -> Vec<String> {
        lines(&self.record)
    }
}

/// Lines of a file written by the test child (`--record`, `--status`).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// One `key value` field of the test child's `--status` report.
pub fn report_field(path: &Path, key: &str) -> String {
    lines(path)
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key} ")).map(str::to_string))
        .unwrap_or_else(|| panic!("{key} missing in {}", path.display()))
}

/// Run container-run (or a client mode) to completion with a deadline;
/// returns (exit code, stdout, stderr).
pub fn run_to_end(args: &[&OsStr]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).env_remove("CONTAINER_RUN_BASE_DIR");
    output_with_deadline(cmd)
}

/// `container-run MODE --base-dir BASE ARGS...`, with no base directory
/// from the environment.
pub fn mode_command(mode: &str, base: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg(mode)
        .arg("--base-dir")
        .arg(base)
        .args(args)
        .env_remove("CONTAINER_RUN_BASE_DIR");
    cmd
}

pub fn output_with_deadline(mut cmd: Command) -> (i32, String, String) {
    let out_path = std::env::temp_dir().join(unique("crt-out"));
    let err_path = std::env::temp_dir().join(unique("crt-err"));
    let mut child = spawn_to_files(&mut cmd, &out_path, &err_path);
    let status = wait_with_deadline(&mut child, &cmd);
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    (exit_code(status), out, err)
}

/// Start `cmd` with no stdin, its stdout in file `out` and its stderr in
/// file `err`.
pub fn spawn_to_files(cmd: &mut Command, out: &Path, err: &Path) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(err).unwrap())
        .spawn()
        .unwrap()
}

/// Wait for `child`, started from `cmd`, to end; after `DEADLINE` SIGKILL
/// it (by pid), reap it and panic.
pub fn wait_with_deadline(child: &mut Child, cmd: &Command) -> ExitStatus {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > end {
            kill(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// A process of the test's, SIGKILLed by pid and reaped when dropped (if
/// it was not reaped before: its pid may be another process's by then).
pub struct KilledOnDrop(pub Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().unwrap().is_none() {
            kill(self.0.id() as i32, libc::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds that nothing else owns.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds from pipe2, each owned once.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A job that writes the realtime clock (ns) to `file` when SIGTERM comes,
/// and its pid to `ready` once it has set up.
pub fn stamping_job(file: &Path, ready: &Path) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "trap 'date +%s%N > {f}; exit 0' TERM; echo $$ > {r}; while :; do sleep 0.05; done",
            f = file.display(),
            r = ready.display()
        ),
    ]
}

/// The ```sh blocks of a Markdown page, each as its non-empty lines; shell
/// comments kept only when `comments`.
pub fn sh_blocks(markdown: &str, comments: bool) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), l) if !l.is_empty() && (comments || !l.starts_with('#')) => {
                block.push(l.to_string())
            }
            _ => {}
        }
    }
    blocks
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}
