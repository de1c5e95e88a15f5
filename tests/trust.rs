//! End to end, issue 17: an operator's command reaches the real
//! container-run or fails. The job's own user (uid 65534, owning
//! `BASE/data/JOB` and `BASE/sys/run/bpm/JOB` as BOSH leaves them, and in
//! some findings a member of the socket's group) plants names, renames the
//! socket, floods queues and passes fds; root's `ctl`, `probe`, `bpm`,
//! `monit` and the barrier must never report what it says, never be made
//! to skip a draining peer, and container-run must not be exhausted.
//!
//! The attackers are real processes (`python3` under `setpriv
//! --reuid=65534`), bounded in count and time and killed by pid when a test
//! ends. Like anyone in the pod, they find container-run's rendezvous name
//! in `/proc/net/unix`; the tests pick their own pod's name there by the
//! inode of one of container-run's sockets, since tests run side by side.
//! Each test of a finding fails against the container-run before issue 17
//! (docs/reliability.md, "Believe only the kernel's word").

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::attack::{
    Attacker, NOBODY, Victims, abstract_names_of, args, as_job_user, assert_no_control,
    attack_setup, attacker_dir, chown, client, client_as_job_user, client_command, client_through,
    fake_line, grouped_run, job_user_dirs, python_to_end, received, setpriv, then_setpriv,
    without_client_env,
};
use common::*;
use serde_json::Value;

/// One JSON line of `ctl status --json`.
fn json_line(out: &str) -> Value {
    assert_eq!(out.lines().count(), 1, "{out:?}");
    serde_json::from_str(out.trim()).unwrap()
}

/// The uid that owns the file at `path` (not following a link).
fn owner(path: &Path) -> Option<u32> {
    std::fs::symlink_metadata(path).ok().map(|m| m.uid())
}

/// The rendezvous name (`container-run/POD/TARGET/NONCE`) that process
/// `pid` holds, found in `/proc/net/unix` by the inode of one of its
/// sockets; `None` for a container-run that binds none.
fn rendezvous_of(pid: i32) -> Option<String> {
    abstract_names_of(pid)
        .into_iter()
        .find(|name| name.starts_with("container-run/"))
}

/// `container-run/POD/` (`parts` 2) or `container-run/POD/TARGET/` (3).
fn name_prefix(name: &str, parts: usize) -> String {
    let mut p: Vec<&str> = name.split('/').take(parts).collect();
    p.push("");
    p.join("/")
}

/// Where the job's user sends to reach container-run `pid`: its named
/// socket and, when it has one, its rendezvous (`@NAME`).
fn doors(pid: i32, socket: &Path) -> Vec<String> {
    let mut doors = vec![socket.display().to_string()];
    doors.extend(rendezvous_of(pid).map(|n| format!("@{n}")));
    doors
}

fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<u64> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[0] + f[1]) as f64 / hz
}

/// A fake of the job user's (python3): `args` takes READY, D, NAME and
/// LINE (as bytes), and what else it needs, from its arguments; then it
/// binds `.evil` in D (its directory from then on), answers every datagram
/// with LINE from a thread of its own, and goes on with `then`.
fn fake_script(args: &str, then: &str) -> String {
    format!("import os, socket, sys, threading, time\n{args}\n{SERVE_EVIL}{then}")
}

const SERVE_EVIL: &str = r#"os.chdir(d)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('.evil')
def serve():
    while True:
        data, addr = s.recvfrom(65536)
        if addr:
            try:
                s.sendto(line, addr)
            except OSError:
                pass
threading.Thread(target=serve, daemon=True).start()
"#;

/// Binds `.evil` in DIR, answers every datagram with LINE, and renames a
/// hard link of it over NAME, COUNT times at most (60 s at most), PAUSE
/// seconds apart; prints how many renames it made.
fn rename_over() -> String {
    fake_script(
        "ready, d, name, line, count, pause = sys.argv[1:7]\n\
         line, count, pause = line.encode(), int(count), float(pause)",
        r#"open(ready, 'w').close()
end, done = time.time() + 60, 0
while done < count and time.time() < end:
    try:
        os.link('.evil', '.evil.l')
        os.rename('.evil.l', name)
        done += 1
    except OSError:
        try:
            os.unlink('.evil.l')
        except OSError:
            pass
    time.sleep(pause)
print(done, flush=True)
"#,
    )
}

/// Renames NAME in DIR away, again and again, for SECONDS at most.
const RENAME_AWAY: &str = r#"
import os, sys, time
ready, d, name, seconds = sys.argv[1:5]
os.chdir(d)
open(ready, 'w').close()
end, n = time.time() + float(seconds), 0
while n < 10_000_000 and time.time() < end:
    try:
        os.rename(name, '.away')
    except OSError:
        pass
    n += 1
    time.sleep(0.0005)
"#;

/// Keeps the queues of TARGETS (paths, or `@` and an abstract name) full
/// with PAYLOAD from one blocking sender per target, for SECONDS at most.
const FLOOD: &str = r#"
import socket, sys, threading, time
ready, seconds, payload = sys.argv[1], float(sys.argv[2]), sys.argv[3].encode()
end = time.time() + seconds
def flood(t):
    addr = b'\0' + t[1:].encode() if t.startswith('@') else t
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.settimeout(0.1)
    n = 0
    while n < 50_000_000 and time.time() < end:
        try:
            s.sendto(payload, addr)
            n += 1
        except socket.timeout:
            pass
        except OSError:
            time.sleep(0.001)
threads = [threading.Thread(target=flood, args=(t,), daemon=True) for t in sys.argv[4:]]
for t in threads:
    t.start()
open(ready, 'w').close()
for t in threads:
    t.join()
"#;

/// Sockets of the job's user, from a JSON list: `{"bind": PATH or @NAME,
/// "tag": T, "line": L}` answers every datagram with L and logs `T
/// payload` to LOG; without "line" it never reads; `{"link": TARGET,
/// "at": PATH}` plants a symbolic link. Runs 120 s at most.
const FAKES: &str = r#"
import json, os, selectors, socket, sys, time
ready, log, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sel, keep = selectors.DefaultSelector(), []
for f in spec:
    if 'link' in f:
        os.symlink(f['link'], f['at'])
        continue
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    b = f['bind']
    s.bind('\0' + b[1:] if b.startswith('@') else b)
    keep.append(s)
    if f.get('line') is not None:
        sel.register(s, selectors.EVENT_READ, (f['tag'], f['line'].encode()))
out = open(log, 'a', buffering=1)
open(ready, 'w').close()
end = time.time() + 120
while time.time() < end:
    for key, _ in sel.select(0.5):
        tag, line = key.data
        data, addr = key.fileobj.recvfrom(65536)
        out.write('%s %r\n' % (tag, data))
        if addr:
            try:
                key.fileobj.sendto(line, addr)
            except OSError:
                pass
"#;

/// Sends COUNT datagrams, each carrying NFDS open fds (SCM_RIGHTS), to
/// TARGETS in turn, waiting for room in a full queue; prints how many.
const SEND_FDS: &str = r#"
import array, os, socket, sys
ready, count, nfds, targets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
fds = [os.open('/dev/null', os.O_RDONLY) for _ in range(nfds)]
rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fds))]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.settimeout(5)
open(ready, 'w').close()
sent = 0
for i in range(count):
    t = targets[i % len(targets)]
    addr = b'\0' + t[1:].encode() if t.startswith('@') else t
    try:
        s.sendmsg([[b'x', b'STATUS', b'junk', b''][i % 4]], rights, 0, addr)
        sent += 1
    except OSError:
        pass
print(sent, flush=True)
"#;

/// COUNT senders, each bound to a path of its own in DIR, send `junk` to
/// TARGET once.
const JUNK_FROM_PATHS: &str = r#"
import os, socket, sys
ready, d, count, target = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
open(ready, 'w').close()
for i in range(count):
    p = os.path.join(d, 'j%d' % i)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(p)
    s.settimeout(5)
    s.sendto(b'junk', target)
    s.close()
    os.unlink(p)
"#;

/// Fills the volume's inodes from DIR/fill, then renames a socket of its
/// own, answering LINE, over NAME in DIR; serves 120 s at most.
fn fill_and_rename() -> String {
    fake_script(
        "ready, d, name, line = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].encode()",
        r#"os.mkdir('fill')
n = 0
while n < 100000:
    try:
        open('fill/%d' % n, 'w').close()
    except OSError:
        break
    n += 1
os.rename('.evil', name)
open(ready, 'w').close()
time.sleep(120)
"#,
    )
}

/// The job user's socket, answering "stopped, hold", renamed over job
/// `job`'s control socket `count` times, 0.2 ms apart (`rename_over`).
fn renamer(atk: &Path, base: &Path, count: &str) -> Attacker {
    let lie = fake_line("job", "job", "stopped", true);
    let data = base.join("data/job");
    Attacker::python(
        atk,
        NOBODY,
        &rename_over(),
        &args(&[&data, &"job_containerrun.sock", &lie, &count, &"0.0002"]),
    )
}

/// Two of the job user's processes (members of the socket's group) keep
/// the queues of `doors` full of STATUS, 60 s at most.
fn two_floods(atk: &Path, doors: &[String]) -> [Attacker; 2] {
    let mut flood_args: Vec<&OsStr> = vec![OsStr::new("60"), OsStr::new("STATUS")];
    flood_args.extend(doors.iter().map(OsStr::new));
    [
        Attacker::python(atk, NOBODY, FLOOD, &flood_args),
        Attacker::python(atk, NOBODY, FLOOD, &flood_args),
    ]
}

/// The job user's sockets and links of `spec` (as `FAKES` reads it), each
/// logging what reaches it to `log`.
fn fakes(atk: &Path, log: &Path, spec: &Value) -> Attacker {
    Attacker::python(atk, NOBODY, FAKES, &args(&[&log, &spec.to_string()]))
}

/// Root's `ctl status job --json` answers with the real job's `pid`.
fn assert_status_shows(base: &Path, pid: i32, what: &str) {
    let (code, out, err) = client(base, "ctl", &["status", "job", "--json"]);
    assert_eq!(code, 0, "{what}{out}{err}");
    assert_eq!(
        json_line(&out)["pid"].as_i64(),
        Some(i64::from(pid)),
        "{what}{out}"
    );
}

/// Root's `ctl stop job` succeeds and the real job, `pid`, is gone.
fn assert_stop_stops(base: &Path, pid: i32) {
    let out = ctl_job(base, "stop");
    assert!(!alive(pid), "ctl stop said {out:?} while the job runs on");
}

/// What most findings start from: `attack_setup` for job `job`, and its
/// container-run, running: (the temporary directory, BASE, the attacker's
/// directory, the container-run, the job's pid). `None`, the test
/// skipped, without root.
fn job_under_attack() -> Option<(TempDir, PathBuf, PathBuf, Run, i32)> {
    let (t, base, atk) = attack_setup("to act as the job's user", &["job"])?;
    let (run, pid) = Run::builder(&base, "job").spawn_running();
    Some((t, base, atk, run, pid))
}

/// Root's `ctl VERB job`, which must succeed; what it printed.
fn ctl_job(base: &Path, verb: &str) -> String {
    let (code, out, err) = client(base, "ctl", &[verb, "job"]);
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// Root's `container-run ARGS... --base-dir BASE` under the shell's `ulimit
/// LIMIT`, to its end.
fn client_under_ulimit(limit: &str, base: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("ulimit {limit}; exec \"$@\""), "sh"])
        .arg(bin())
        .args(args)
        .arg("--base-dir")
        .arg(base);
    without_client_env(&mut cmd);
    output_with_deadline(cmd)
}

/// A regular file of root's at `path` (not a link, not a directory).
fn roots_regular_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.uid() == 0)
}

/// The job is held: container-run says stopped with a hold, and root's
/// `probe job -- false` believes it (exits 0 without running its check).
fn assert_held(run: &Run, base: &Path, what: &str) {
    let s = run.status();
    assert_eq!(
        (s["state"].as_str(), s["hold"].as_bool()),
        (Some("stopped"), Some(true))
    );
    let (code, _, err) = client(base, "probe", &["job", "--", "false"]);
    assert_eq!(code, 0, "{what}probe ran its check: {err}");
}

/// A container-run for `job` started again comes up stopped, held.
fn a_restart_comes_up_held(base: &Path) -> Run {
    let again = Run::builder(base, "job").spawn([child()]);
    assert_eq!(again.wait_state("stopped")["hold"], true);
    again
}

/// Finding 1: the job user renames a socket of its own, answering
/// "stopped, hold", over the control socket's name again and again. Root's
/// `ctl status` prints the real state every time, `probe -- false` runs
/// its check, and `ctl stop` really stops the job.
#[test]
fn a_socket_renamed_over_the_name_never_answers_for_the_job() {
    let Some((_t, base, atk, run, pid)) = job_under_attack() else {
        return;
    };
    let _renamer = renamer(&atk, &base, "1000000");
    wait_until("the fake holds the name", || {
        owner(&run.files.socket) == Some(NOBODY)
    });
    for round in 0..20 {
        let (code, out, err) = client(&base, "ctl", &["status", "job", "--json"]);
        assert_eq!(code, 0, "round {round}: {err}");
        let s = json_line(&out);
        assert_eq!(
            (s["state"].as_str(), s["hold"].as_bool(), s["pid"].as_i64()),
            (Some("running"), Some(false), Some(i64::from(pid))),
            "round {round}: {out}"
        );
    }
    for round in 0..5 {
        let (code, _, err) = client(&base, "probe", &["job", "--", "false"]);
        assert_eq!(code, 1, "round {round}: probe did not run its check: {err}");
    }
    assert_stop_stops(&base, pid);
    assert!(!run.files.pidfile.exists() && !run.files.running.exists());
    assert_eq!(owner(&run.files.stopped), Some(0), "no STOP marker");
}

/// container-run in a mount namespace of its own whose `BASE/data` is a
/// tmpfs with room for a few inodes; dropping it kills the namespace.
struct SmallVolume {
    unshare: Child,
    base: PathBuf,
    stderr: PathBuf,
}

impl SmallVolume {
    fn start(base: &Path, inodes: u32) -> SmallVolume {
        std::fs::create_dir_all(base.join("data")).unwrap();
        let pids = base.join("sys/run/bpm/job");
        std::fs::create_dir_all(&pids).unwrap();
        chown(&pids, NOBODY);
        let stderr = base.with_extension("stderr");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "--kill-child",
        ])
        .args([
            "sh",
            "-ec",
            "mount -t tmpfs -o nr_inodes=$2,mode=0755 crt-small \"$1/data\"; \
                 mkdir \"$1/data/job\"; chown 65534:65534 \"$1/data/job\"; shift 2; exec \"$@\"",
            "sh",
        ])
        .arg(base)
        .arg(inodes.to_string())
        .arg(bin())
        .arg("--base-dir")
        .arg(base)
        .args(["--job-name", "job", "--debug", "--"])
        .arg(child())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap());
        without_client_env(&mut cmd);
        SmallVolume {
            unshare: cmd.spawn().unwrap(),
            base: base.to_path_buf(),
            stderr,
        }
    }

    fn pid(&self) -> i32 {
        wait_child_of(
            self.unshare.id() as i32,
            "container-run in its mount namespace",
        )
    }

    /// `nsenter` into its mount namespace, ready for a program.
    fn enter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.pid()))
            .args(["--mount", "--"]);
        cmd
    }

    /// A path of its namespace, as seen from here.
    fn inside(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}", self.pid(), path.display()))
    }

    fn client(&self, mode: &str, args: &[&str]) -> (i32, String, String) {
        client_through(Some(self.enter()), &self.base, mode, args)
    }

    /// `Attacker::python` run inside its mount namespace.
    fn attacker(&self, dir: &Path, script: &str, args: &[&OsStr]) -> Attacker {
        let mut cmd = self.enter();
        then_setpriv(&mut cmd, NOBODY);
        Attacker::python_by(cmd, dir, script, args)
    }

    /// container-run's stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        kill(self.unshare.id() as i32, libc::SIGKILL);
        let _ = self.unshare.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// A job running on a `SmallVolume` of 64 inodes whose name the job
/// user's fake took on a full volume: the take-back failed. Fields in the
/// order they are dropped.
struct FullVolume {
    _filler: Attacker,
    vol: SmallVolume,
    job_pid: i32,
    atk: PathBuf,
    _t: TempDir,
}

/// A `FullVolume`; `None`, the test skipped, without root.
fn a_fake_on_a_full_volume() -> Option<FullVolume> {
    if !require_root("to mount a tmpfs and act as the job's user") {
        return None;
    }
    let t = TempDir::new();
    let base = t.file("base");
    let atk = attacker_dir(&t);
    let vol = SmallVolume::start(&base, 64);
    let job_pid = wait_pid_file(&vol.inside(&Files::new(&base, "job", "job").pidfile));
    let data = base.join("data/job");
    let lie = fake_line("job", "job", "stopped", true);
    let filler = vol.attacker(
        &atk,
        &fill_and_rename(),
        &args(&[&data, &"job_containerrun.sock", &lie]),
    );
    wait_until("the take-back failed for want of inodes", || {
        vol.log().contains("cannot bind the control socket again")
    });
    Some(FullVolume {
        _filler: filler,
        vol,
        job_pid,
        atk,
        _t: t,
    })
}

/// Finding 1 on a full volume: the job user fills the data volume's
/// inodes, then renames its socket over the name once; the take-back
/// (which needs a private directory) fails and the fake keeps the name.
/// Root's clients still see the real job, and `ctl stop` stops it.
#[test]
fn a_fake_that_keeps_the_name_on_a_full_volume_is_not_believed() {
    let Some(full) = a_fake_on_a_full_volume() else {
        return;
    };
    let (vol, job_pid) = (&full.vol, full.job_pid);
    let files = Files::new(&vol.base, "job", "job");
    let pid_file = vol.inside(&files.pidfile);
    let name = vol.inside(&files.socket);
    assert_eq!(
        owner(&name),
        Some(NOBODY),
        "the fake does not hold the name"
    );
    for round in 0..5 {
        let (code, out, err) = vol.client("ctl", &["status", "job", "--json"]);
        assert_eq!(code, 0, "round {round}: {err}");
        let s = json_line(&out);
        assert_eq!(
            (s["state"].as_str(), s["hold"].as_bool()),
            (Some("running"), Some(false)),
            "{out}"
        );
        let (code, _, err) = vol.client("probe", &["job", "--", "false"]);
        assert_eq!(code, 1, "probe did not run its check: {err}");
    }
    // Room for the STOP marker, none of it in the name's directory: the
    // fake keeps the name.
    let fill = vol.inside(&vol.base.join("data/job/fill"));
    for e in std::fs::read_dir(&fill).unwrap().take(8) {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    assert_eq!(owner(&name), Some(NOBODY));
    let (code, out, err) = vol.client("ctl", &["stop", "job"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !alive(job_pid),
        "ctl stop said {out:?} while the job runs on"
    );
    assert!(!pid_file.exists());
}

/// Renames DIR/A to DIR/B and back, COUNT times, PAUSE seconds apart:
/// events in DIR that need no new inode.
const CHURN: &str = r#"
import os, sys, time
ready, d, a, b, count, pause = sys.argv[1:7]
os.chdir(d)
open(ready, 'w').close()
for i in range(int(count)):
    os.rename(a, b)
    os.rename(b, a)
    time.sleep(float(pause))
"#;

/// Finding 2 on a full volume: once the take-back has failed for want of
/// inodes, every change in the directory tries again (20 times a second
/// at most); 2,000 renames there over several seconds cost a bounded
/// number of log lines, not one per attempt.
#[test]
fn a_take_back_that_keeps_failing_costs_a_bounded_number_of_log_lines() {
    let Some(full) = a_fake_on_a_full_volume() else {
        return;
    };
    let vol = &full.vol;
    let started = Instant::now();
    let mut churn = vol.attacker(
        &full.atk,
        CHURN,
        &args(&[
            &vol.base.join("data/job"),
            &"fill",
            &"fill2",
            &"1000",
            &"0.005",
        ]),
    );
    churn.finish();
    // Queued behind the events: once answered, they have all been read.
    let (code, _, err) = vol.client("ctl", &["status", "job"]);
    assert_eq!(code, 0, "{err}");
    let elapsed = started.elapsed();
    let text = vol.log();
    let failures = text
        .lines()
        .filter(|l| l.contains("cannot bind the control socket again"))
        .count() as u64;
    eprintln!("{failures} failure lines in {elapsed:?}");
    assert!(
        failures <= elapsed.as_secs() / 10 + 2,
        "{failures} lines saying the take-back failed, in {elapsed:?}"
    );
}

/// Finding 2: the same rename loop, 6,000 renames: container-run logs a
/// bounded number of take-back warnings (one per 10 s window, with a
/// count), not one per rename. Its CPU time is printed, not judged.
#[test]
fn a_rename_loop_costs_a_bounded_number_of_log_lines() {
    let Some((_t, base, atk, mut run, _)) = job_under_attack() else {
        return;
    };
    let cpu_before = cpu_seconds(run.pid());
    let started = Instant::now();
    let renames: u64 = renamer(&atk, &base, "6000")
        .finish()
        .trim()
        .parse()
        .unwrap();
    wait_until("container-run holds its name again", || {
        owner(&run.files.socket) == Some(0)
    });
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(run.pid()) - cpu_before;
    let log = run.stderr_text();
    let warnings = log
        .lines()
        .filter(|l| l.contains("taking the name back") || l.contains("binding it again"))
        .count() as u64;
    eprintln!(
        "{renames} renames in {elapsed:?}: {warnings} take-back warnings, {} bytes of log, \
         {cpu:.2} s of container-run's CPU",
        log.len()
    );
    assert_eq!(renames, 6_000);
    // One line per 10 s window at most, the first one included.
    let windows = elapsed.as_secs() / 10 + 2;
    assert!(
        warnings <= windows,
        "{warnings} take-back warnings for {renames} renames in {elapsed:?}"
    );
    assert!(
        log.len() < 64 * 1024,
        "{} bytes of log for {renames} renames",
        log.len()
    );
    assert!(run.try_exit().is_none(), "container-run exited");
}

/// A drain script: `seconds` of work, then the realtime clock (ns) into
/// `done`, then `0`.
fn drain_script(t: &TempDir, seconds: u32, done: &Path) -> PathBuf {
    let script = t.file("drain");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep {seconds}; date +%s%N > {}; echo 0\n",
            done.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn ns_stamp(path: &Path) -> u128 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Two container-runs of one pod: garden, whose job writes the realtime
/// clock (ns) to `garden_term` when SIGTERM comes, and rep, whose drain
/// script works a while, then writes it to `rep_drained`.
struct GardenAndRep {
    garden: Run,
    rep: Run,
    garden_term: PathBuf,
    rep_drained: PathBuf,
}

impl GardenAndRep {
    /// Both under `base`, with their own `garden_args` and `rep_args`,
    /// rep's drain working `drain_s` seconds; returns once both jobs run
    /// and garden's has set up.
    fn start(
        t: &TempDir,
        base: &Path,
        drain_s: u32,
        garden_args: &[&str],
        rep_args: &[&str],
    ) -> GardenAndRep {
        let rep_drained = t.file("rep-drained");
        let script = drain_script(t, drain_s, &rep_drained);
        let (garden_term, garden_ready) = (t.file("garden-term"), t.file("garden-ready"));
        let garden = Run::builder(base, "garden")
            .args(garden_args)
            .spawn(stamping_job(&garden_term, &garden_ready));
        let rep = Run::builder(base, "rep")
            .args(rep_args)
            .arg("--drain-name")
            .arg(&script)
            .spawn([child()]);
        garden.wait_running();
        wait_pid_file(&garden_ready);
        rep.wait_running();
        GardenAndRep {
            garden,
            rep,
            garden_term,
            rep_drained,
        }
    }
}

/// Finding 3: rep drains for 4 s, garden has no drain; both are signalled.
/// The job user renames rep's socket away again and again, and two of its
/// processes (members of the socket's group) keep rep's queues full. The
/// barrier must still hold garden's stop until rep's drain is done.
#[test]
fn the_barrier_cannot_be_skipped_by_hiding_or_flooding_a_draining_peer() {
    let Some((t, base, atk)) = attack_setup("to act as the job's user", &["rep", "garden"]) else {
        return;
    };
    let group = ["--socket-group", "65534"];
    let GardenAndRep {
        mut garden,
        mut rep,
        garden_term,
        rep_drained,
    } = GardenAndRep::start(&t, &base, 4, &group, &group);
    let rep_doors = doors(rep.pid(), &rep.files.socket);
    let _renamer = Attacker::python(
        &atk,
        NOBODY,
        RENAME_AWAY,
        &args(&[&base.join("data/rep"), &"rep_containerrun.sock", &"60"]),
    );
    let _floods = two_floods(&atk, &rep_doors);
    garden.signal(libc::SIGTERM);
    rep.signal(libc::SIGTERM);
    assert_eq!(garden.wait_exit(), 0, "{}", garden.errors());
    assert_eq!(rep.wait_exit(), 0, "{}", rep.errors());
    let (stopped, drained) = (ns_stamp(&garden_term), ns_stamp(&rep_drained));
    assert!(
        stopped >= drained,
        "garden's job got SIGTERM {} ms before rep's drain was done: {}",
        (drained - stopped) / 1_000_000,
        garden.errors()
    );
}

/// Connects COUNT sockets to the abstract NAME, sends STATUS 10 times
/// from each and never reads what comes back; holds them 120 s at most.
const UNREAD: &str = r#"
import socket, sys, time
ready, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
keep = []
for i in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind('')
    s.connect(b'\0' + name.encode())
    s.settimeout(1)
    for _ in range(10):
        try:
            s.send(b'STATUS')
        except OSError:
            pass
    keep.append(s)
open(ready, 'w').close()
time.sleep(120)
"#;

/// Finding 3, a single container's restart: rep has a drain and runs on;
/// garden alone gets SIGTERM and waits for rep only while it settles. A
/// user outside the socket's group first leaves the answers to 100 sockets
/// it connected to rep's rendezvous unread. rep's answers to the barrier
/// must still arrive: garden goes on after settling, not at its deadline.
#[test]
fn unread_answers_to_strangers_do_not_silence_a_peer_for_the_barrier() {
    let Some((t, base, atk)) = attack_setup("to act as another user", &["rep", "garden"]) else {
        return;
    };
    let GardenAndRep {
        mut garden, rep, ..
    } = GardenAndRep::start(&t, &base, 1, &["--drain-timeout", "8s"], &[]);
    let name = rendezvous_of(rep.pid()).expect("a rendezvous name");
    let _unread = Attacker::python(&atk, NOBODY, UNREAD, &args(&[&name, &"100"]));
    garden.signal(libc::SIGTERM);
    assert_eq!(garden.wait_exit(), 0);
    let log = garden.errors();
    assert!(
        log.contains("waiting for 1 draining container-run"),
        "{log}"
    );
    assert!(
        !log.contains("deadline"),
        "rep's answers did not reach garden: {log}"
    );
    assert_eq!(rep.status()["drain"], "ready");
}

/// Finding 3, silence: rep is signalled while it cannot answer (stopped
/// with SIGSTOP, as a queue kept full or answers that never arrive would
/// leave it); garden, signalled then, hears nothing from it. A silent
/// peer whose name root holds may be draining: garden waits until rep has
/// answered that its drain is done.
#[test]
fn a_peer_that_cannot_answer_is_waited_for() {
    let t = TempDir::new();
    let GardenAndRep {
        mut garden,
        mut rep,
        garden_term,
        rep_drained,
    } = GardenAndRep::start(&t, &t.file("base"), 2, &[], &[]);
    rep.signal(libc::SIGSTOP);
    rep.signal(libc::SIGTERM);
    garden.signal(libc::SIGTERM);
    wait_until("garden hears nothing from rep (or ends)", || {
        garden.errors().contains("gave no answer") || garden.try_exit().is_some()
    });
    rep.signal(libc::SIGCONT);
    assert_eq!(rep.wait_exit(), 0);
    assert_eq!(garden.wait_exit(), 0, "{}", garden.errors());
    assert!(
        ns_stamp(&garden_term) >= ns_stamp(&rep_drained),
        "garden's job got SIGTERM before rep's drain was done: {}",
        garden.errors()
    );
}

/// Finding 4: a member of the socket's group sends 3,000 datagrams, each
/// with 8 fds, to the named socket and the rendezvous; container-run (fd
/// limit 1024) keeps none, answers STATUS and lifts a hold with START.
#[test]
fn fds_passed_with_datagrams_are_closed_at_once() {
    let Some((_t, base, atk)) = attack_setup("to act as the job's user", &["job"]) else {
        return;
    };
    let mut builder = grouped_run(&base, "job");
    // SAFETY: setrlimit is async-signal-safe; the limit is the child's own.
    unsafe {
        builder.command().pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    };
    let mut run = builder.spawn([child()]);
    run.wait_running();
    ctl_job(&base, "stop");
    assert!(run.files.stopped.exists());
    assert_eq!(run.status()["state"], "stopped");
    let baseline = fd_count(run.pid());
    let targets = doors(run.pid(), &run.files.socket);
    let mut send_args: Vec<&OsStr> = vec![OsStr::new("3000"), OsStr::new("8")];
    send_args.extend(targets.iter().map(OsStr::new));
    let mut sender = Attacker::python(&atk, NOBODY, SEND_FDS, &send_args);
    let mut most = baseline;
    while sender.child.try_wait().unwrap().is_none() {
        most = most.max(fd_count(run.pid()));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let sent: u64 = sender.finish().trim().parse().unwrap();
    assert_eq!(sent, 3000);
    // A STATUS queued behind them all: once answered, every one was read.
    let s = run.status();
    assert_eq!(
        (s["state"].as_str(), s["hold"].as_bool()),
        (Some("stopped"), Some(true))
    );
    let after = fd_count(run.pid());
    assert_eq!(
        after, baseline,
        "fds kept (at most {most} during the attack)"
    );
    // Between a recvmsg and its close, one datagram's fds at most.
    assert!(
        most <= baseline + 8 + 2,
        "{most} fds during the attack, {baseline} before"
    );
    ctl_job(&base, "start");
    assert!(!run.files.stopped.exists(), "START left the STOP marker");
    assert!(
        run.try_exit().is_none(),
        "container-run exited: {}",
        run.errors()
    );
}

/// Finding 5: two processes of a member of the socket's group keep the
/// named socket's and the rendezvous's queues full; 20 root `ctl status`
/// in a row all succeed.
#[test]
fn a_full_queue_never_fails_roots_commands() {
    let Some((_t, base, atk)) = attack_setup("to act as the job's user", &["job"]) else {
        return;
    };
    let (run, pid) = grouped_run(&base, "job").spawn_running();
    let _floods = two_floods(&atk, &doors(run.pid(), &run.files.socket));
    for round in 0..20 {
        assert_status_shows(&base, pid, &format!("round {round}: "));
    }
}

/// The rows of `ctl status --all`: (JOB, PROCESS) of each.
fn table_rows(out: &str) -> Vec<(String, String)> {
    out.lines()
        .skip(1)
        .map(|l| {
            let mut cells = l.split_whitespace();
            let job = cells.next().unwrap_or_default().to_string();
            (job, cells.next().unwrap_or_default().to_string())
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// What the job user's fakes logged: one `TAG PAYLOAD` line each.
fn fake_log(path: &Path) -> Vec<String> {
    lines(path)
}

/// Finding 6: `*_containerrun.sock` sockets of the job user in its
/// directories, answering with control characters and forged rows, one of
/// them as `web/nats`; a link at a socket's name to a root-only socket
/// outside BASE; fakes at the rendezvous too. Listings show exactly the
/// real jobs, nothing raw reaches a terminal, `monit stop nats` is not
/// ambiguous, no command goes to a fake, and the root-only socket hears
/// nothing from ctl, monit, bpm or the barrier.
/// `ctl status --all`, `monit summary` and `bpm list` show exactly the
/// jobs `jobs` (each as JOB/JOB), in that order, and nothing raw.
fn listings_show_exactly(base: &Path, jobs: &[&str]) {
    let want: Vec<(&str, &str)> = jobs.iter().map(|j| (*j, *j)).collect();
    let (_, out, err) = client(base, "ctl", &["status", "--all"]);
    assert_no_control("ctl status --all", &(out.clone() + &err));
    assert_eq!(table_rows(&out), pairs(&want), "{out}{err}");
    let (_, out, err) = client(base, "monit", &["summary"]);
    assert_no_control("monit summary", &(out.clone() + &err));
    let processes: Vec<&str> = out.lines().filter(|l| l.starts_with("Process ")).collect();
    assert_eq!(processes.len(), jobs.len(), "{out}{err}");
    for (row, job) in processes.iter().zip(jobs) {
        assert!(row.starts_with(&format!("Process '{job}'")), "{out}");
    }
    let (_, out, err) = client(base, "bpm", &["list"]);
    assert_no_control("bpm list", &(out.clone() + &err));
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, jobs, "{out}{err}");
}

/// `monit stop|start nats` is not ambiguous, `ctl stop|start --all` reach
/// the real jobs, and the fakes at the rendezvous hear nothing but STATUS.
fn commands_reach_only_the_real_jobs(base: &Path, job: &Run, nats: &Run, log: &Path) {
    let (_, out, err) = client(base, "monit", &["stop", "nats"]);
    assert!(!err.contains("ambiguous"), "{out}{err}");
    nats.wait_stopped();
    assert_eq!(nats.status()["hold"], true);
    let (code, out, err) = client(base, "monit", &["start", "nats"]);
    assert!(!err.contains("ambiguous"), "{code} {out}{err}");
    nats.wait_running();

    let (_, out, err) = client(base, "ctl", &["stop", "--all"]);
    assert_no_control("ctl stop --all", &(out.clone() + &err));
    job.wait_stopped();
    nats.wait_stopped();
    let (_, out, err) = client(base, "ctl", &["start", "--all"]);
    job.wait_running();
    nats.wait_running();
    let commands: Vec<String> = fake_log(log)
        .into_iter()
        .filter(|l| l.starts_with("path") || !l.ends_with("b'STATUS'"))
        .collect();
    assert!(
        commands.is_empty(),
        "the fakes received {commands:?} ({out}{err})"
    );
}

/// `ctl status --all --json` lists job and nats alone, and `monit
/// summary | grep -c running` counts them and the system row: 3.
fn json_and_counts_show_only_the_real_jobs(base: &Path) {
    let real = pairs(&[("job", "job"), ("nats", "nats")]);
    let (_, out, err) = client(base, "ctl", &["status", "--all", "--json"]);
    let listed: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let s: Value = serde_json::from_str(l).unwrap();
            (
                s["job"].as_str().unwrap().into(),
                s["process"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(listed, real, "{out}{err}");
    let (_, out, _) = client(base, "monit", &["summary"]);
    assert_eq!(
        out.lines().filter(|l| l.contains("running")).count(),
        3,
        "{out}"
    );
}

/// What the job user plants for `planted_names_are_not_jobs_...`: sockets
/// of its own at socket names answering with forged lines, a link at one to
/// the root-only `victim_path`, and look-alike rendezvous names (beside
/// `job_pid`'s real one).
fn planted_spec(base: &Path, victim_path: &Path, job_pid: i32) -> Value {
    let laden = fake_line(
        "\u{1b}]0;owned\u{7}job",
        "x\u{1b}[1A\u{1b}[2K\njob  job  running",
        "running",
        false,
    );
    let data = |rel: &str| base.join("data").join(rel).display().to_string();
    let mut spec = vec![
        serde_json::json!({"bind": data("job/evil_containerrun.sock"), "tag": "path", "line": laden}),
        serde_json::json!({"bind": data("job/job2_containerrun.sock"), "tag": "path",
            "line": fake_line("job", "job", "stopped", true)}),
        serde_json::json!({"bind": data("web/nats_containerrun.sock"), "tag": "path",
            "line": fake_line("web", "nats", "running", false)}),
        serde_json::json!({"link": victim_path, "at": data("job/victim_containerrun.sock")}),
    ];
    if let Some(real) = rendezvous_of(job_pid) {
        let pod = name_prefix(&real, 2);
        let own = name_prefix(&real, 3);
        for (i, (at, line)) in [
            (format!("{pod}0000000000000001/a"), laden.clone()),
            (
                format!("{pod}0000000000000002/b"),
                fake_line("web", "nats", "running", false),
            ),
            (format!("{own}c"), fake_line("job", "job", "stopped", true)),
        ]
        .into_iter()
        .enumerate()
        {
            spec.push(serde_json::json!({"bind": format!("@{at}"), "tag": format!("abstract{i}"), "line": line}));
        }
    }
    Value::from(spec)
}

#[test]
fn planted_names_are_not_jobs_and_links_are_never_followed() {
    let Some((t, base, atk)) = attack_setup("to act as the job's user", &["job", "nats", "web"])
    else {
        return;
    };
    let v = Victims::new(&t, &[]);
    let (victim_path, victim) = v.socket("root-only.sock");
    let mut job = Run::builder(&base, "job").spawn([child()]);
    let mut nats = Run::builder(&base, "nats").spawn([child()]);
    job.wait_running();
    nats.wait_running();
    let spec = planted_spec(&base, &victim_path, job.pid());
    let log = atk.join("fakes.log");
    let _fakes = fakes(&atk, &log, &spec);
    listings_show_exactly(&base, &["job", "nats"]);
    json_and_counts_show_only_the_real_jobs(&base);

    commands_reach_only_the_real_jobs(&base, &job, &nats, &log);

    // The barrier: both container-runs ask the pod's others on SIGTERM.
    job.signal(libc::SIGTERM);
    nats.signal(libc::SIGTERM);
    assert_eq!(job.wait_exit(), 0);
    assert_eq!(nats.wait_exit(), 0);
    assert_eq!(received(&victim), Vec::<String>::new());
    let path_fakes: Vec<String> = fake_log(&log)
        .into_iter()
        .filter(|l| l.starts_with("path"))
        .collect();
    assert!(
        path_fakes.is_empty(),
        "planted names were asked: {path_fakes:?}"
    );
}

/// Finding 7: `bpm pid` believes only container-run. A planted pid while
/// the job runs or is held, a FIFO and a link to /dev/zero at the pidfile
/// (under a 256 MB address-space limit) change nothing.
#[test]
fn bpm_pid_prints_only_what_container_run_confirms() {
    let Some((_t, base, _atk, run, pid)) = job_under_attack() else {
        return;
    };
    let pidfile = run.files.pidfile.display().to_string();
    as_job_user(&format!(
        "echo 1 > {pidfile}.x; mv -f {pidfile}.x {pidfile}"
    ));
    let (code, out, err) = client(&base, "bpm", &["pid", "job"]);
    assert_eq!((code, out.trim()), (0, pid.to_string().as_str()), "{err}");
    ctl_job(&base, "stop");
    for plant in [
        format!("echo 1 > {pidfile}"),
        format!("rm -f {pidfile}; mkfifo {pidfile}"),
        format!("rm -f {pidfile}; ln -s /dev/zero {pidfile}"),
    ] {
        as_job_user(&plant);
        let (code, out, err) = client_under_ulimit("-v 262144", &base, &["bpm", "pid", "job"]);
        assert_eq!(
            (code, out.as_str()),
            (1, "Process is not running\n"),
            "after `{plant}`: {err}"
        );
        assert!(err.is_empty(), "after `{plant}`: {err}");
    }
}

/// Finding 8: during a hold the job user deletes the STOP marker, then
/// replaces it with a link to a root file, then with its own file. Each
/// time it is written again as root's regular file, the hold stays in
/// status and probe, and a container-run started afterwards comes up
/// stopped.
#[test]
fn a_stop_marker_deleted_or_replaced_during_a_hold_is_written_again() {
    let Some((t, base, _atk, mut run, _)) = job_under_attack() else {
        return;
    };
    let v = Victims::new(&t, &["victim"]);
    let victim = v.path("victim");
    ctl_job(&base, "stop");
    let marker = run.files.stopped.clone();
    let m = marker.display().to_string();
    assert!(roots_regular_file(&marker));
    for attack in [
        format!("rm -f {m}"),
        format!("ln -s {victim} {m}.l; mv -f {m}.l {m}"),
        format!("echo mine > {m}.o; mv -f {m}.o {m}"),
    ] {
        as_job_user(&attack);
        wait_until(
            &format!("the marker written again after `{attack}`"),
            || roots_regular_file(&marker),
        );
        assert_held(&run, &base, &format!("after `{attack}` "));
    }
    v.assert_file_untouched("victim");
    assert_eq!(v.names(), ["victim"]);
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(), 0);
    assert!(
        roots_regular_file(&marker),
        "the hold did not outlive container-run"
    );
    let again = a_restart_comes_up_held(&base);
    assert!(!again.files.pidfile.exists(), "the job ran after a restart");
}

/// Puts an empty directory at MARKER (removing what is there), then
/// renames fresh empty directories over it COUNT times, PAUSE seconds
/// apart.
const MARKER_DIRS: &str = r#"
import os, sys, time
ready, marker, count, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
for _ in range(1000):
    if os.path.isdir(marker) and not os.path.islink(marker):
        break
    try:
        os.unlink(marker)
        os.mkdir(marker)
    except OSError:
        pass
open(ready, 'w').close()
for i in range(count):
    d = '%s.d%d' % (marker, i)
    os.mkdir(d)
    os.rename(d, marker)
    time.sleep(pause)
"#;

/// Finding 8 with a directory: during a hold the job user puts a directory
/// at the STOP marker's name, where no file can be written, and renames
/// fresh ones over it for several seconds, then removes it. The hold stays
/// in force throughout, the marker is written again once it can be, a
/// restarted container-run comes up stopped, and container-run's
/// complaints are counted, not repeated.
#[test]
fn a_directory_at_the_stop_marker_costs_a_bounded_number_of_log_lines() {
    let Some((_t, base, atk, mut run, _)) = job_under_attack() else {
        return;
    };
    ctl_job(&base, "stop");
    let started = Instant::now();
    let mut dirs = Attacker::python(
        &atk,
        NOBODY,
        MARKER_DIRS,
        &args(&[&run.files.stopped, &"1000", &"0.005"]),
    );
    dirs.finish();
    assert_held(&run, &base, "");
    as_job_user(&format!("rmdir {}", run.files.stopped.display()));
    wait_until("the marker written again", || {
        roots_regular_file(&run.files.stopped)
    });
    let elapsed = started.elapsed();
    let log = run.errors();
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(), 0);
    a_restart_comes_up_held(&base);
    let complaints = log.lines().filter(|l| l.contains("STOP marker")).count() as u64;
    eprintln!("{complaints} lines about the marker in {elapsed:?}");
    assert!(
        complaints <= 2 * (elapsed.as_secs() / 10 + 2),
        "{complaints} lines about the marker in {elapsed:?}: {}",
        log.lines().take(6).collect::<Vec<_>>().join("\n")
    );
}

/// Finding 9: 300 never-reading sockets of the job user at the pod's
/// rendezvous and 300 planted `*_containerrun.sock` names; `ctl stop
/// --all` under `ulimit -n 256` still stops the real job.
#[test]
fn stop_all_stops_the_real_job_among_300_never_reading_names() {
    let Some((_t, base, atk, run, pid)) = job_under_attack() else {
        return;
    };
    let data = base.join("data/job");
    let mut spec: Vec<Value> = (0..300)
        .map(|i| {
            let at = data.join(format!("f{i}_containerrun.sock"));
            serde_json::json!({"bind": at.display().to_string(), "tag": "path"})
        })
        .collect();
    if let Some(real) = rendezvous_of(run.pid()) {
        let pod = name_prefix(&real, 2);
        spec.extend(
            (0..300).map(
                |i| serde_json::json!({"bind": format!("@{pod}{i:016x}/n"), "tag": "abstract"}),
            ),
        );
    }
    let _fakes = fakes(&atk, &atk.join("fakes.log"), &Value::from(spec));
    let (code, out, err) = client_under_ulimit("-n 256", &base, &["ctl", "stop", "--all"]);
    assert!(out.contains("job/job: stopped"), "{code}: {out}{err}");
    assert!(!alive(pid), "the real job runs on");
    assert!(!run.files.pidfile.exists());
    assert!(!err.contains("Too many open files"), "{err}");
}

/// Finding 10: `container-run install DIR` where the job user made DIR a
/// link to a root-only directory: refused, nothing there changes; a link
/// planted inside a real DIR at `container-run` is replaced, not followed.
#[test]
fn install_follows_no_link_at_dir_or_in_it() {
    if !require_root("to act as the job's user") {
        return;
    }
    let t = TempDir::new();
    let v = Victims::new(&t, &["container-run", "other"]);
    job_user_dirs(t.path(), ["shared"]);
    let shared = t.file("shared");
    let s = shared.display().to_string();
    as_job_user(&format!(
        "ln -s {victims} {s}/bin; mkdir {s}/real; ln -s {victims}/other {s}/real/container-run",
        victims = v.dir.display()
    ));
    let (code, out, err) = run_to_end(&[os("install"), shared.join("bin").as_os_str()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not following"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, out, err) = run_to_end(&[os("install"), shared.join("real").as_os_str()]);
    assert_eq!(code, 0, "{out}{err}");
    let installed = std::fs::symlink_metadata(shared.join("real/container-run")).unwrap();
    assert!(installed.is_file() && installed.uid() == 0);
    v.assert_file_untouched("container-run");
    v.assert_file_untouched("other");
    assert_eq!(v.names(), ["container-run", "other"]);
}

/// Run `cmd` with a stdout whose reader is already gone; (exit code,
/// stderr).
fn with_reader_gone(mut cmd: Command) -> (i32, String) {
    let (read, write) = pipe();
    drop(read);
    let err_path = std::env::temp_dir().join(unique("crt-trust-err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut child, &cmd);
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    (exit_code(status), err)
}

/// Finding 10: a reader that goes away (`| head -1`) ends every client
/// quietly: no panic, no backtrace, nothing on stderr.
#[test]
fn a_reader_that_goes_away_ends_every_client_quietly() {
    let t = TempDir::new();
    let base = t.file("base");
    let a = Run::builder(&base, "job").spawn([child()]);
    let b = Run::builder(&base, "nats").spawn([child()]);
    a.wait_running();
    b.wait_running();
    let calls: [&[&str]; 8] = [
        &["monit", "summary"],
        &["monit", "status"],
        &["bpm", "list"],
        &["bpm", "pid", "job"],
        &["ctl", "status", "--all"],
        &["ctl", "status", "--all", "--json"],
        &["ctl", "status", "job"],
        &["ctl", "start", "job"],
    ];
    for call in calls {
        let (code, err) = with_reader_gone(client_command(None, &base, call[0], &call[1..]));
        assert!(err.is_empty(), "{call:?} (exit {code}) said: {err}");
        assert!(
            code == 0 || code == 128 + libc::SIGPIPE,
            "{call:?}: exit {code}"
        );
    }
}

/// Finding 11: a client bound to a path sends STOP to a job that takes a
/// while to stop; then 600 other path-bound senders of the socket's group
/// send junk. The client still gets its second datagram, the settled
/// state, without asking again.
#[test]
fn a_waiters_settle_reply_survives_junk_from_many_senders() {
    let Some((t, base, atk)) = attack_setup("to act as the job's user", &["job"]) else {
        return;
    };
    let rec = Recorder::new(&t, &["--ignore-term"]);
    let run = grouped_run(&base, "job")
        .args(["--stop-timeout", "1h"])
        .spawn(&rec.command);
    let pid = run.wait_running();
    assert_eq!(rec.wait_ready(), pid);
    let me = UnixDatagram::bind(t.file("waiter.sock")).unwrap();
    me.set_read_timeout(Some(DEADLINE)).unwrap();
    me.send_to(b"STOP", &run.files.socket).unwrap();
    let mut buf = [0u8; 4096];
    let n = me.recv(&mut buf).unwrap();
    let first: Value = serde_json::from_slice(&buf[..n]).unwrap();
    assert_eq!(first["state"], "stopping");
    let mut junk = Attacker::python(
        &atk,
        NOBODY,
        JUNK_FROM_PATHS,
        &args(&[&atk, &"600", &run.files.socket]),
    );
    junk.finish();
    // Queued behind the junk: once answered, all of it has been read.
    assert_eq!(run.status()["state"], "stopping");
    kill(pid, libc::SIGKILL);
    let n = me.recv(&mut buf).expect("the settle reply");
    let settled: Value = serde_json::from_slice(&buf[..n]).unwrap();
    assert_eq!(
        (settled["state"].as_str(), settled["hold"].as_bool()),
        (Some("stopped"), Some(true))
    );
}

/// Sends PAYLOAD to the abstract NAME from an address of its own and
/// prints the answer (10 s at most).
const ASK: &str = r#"
import socket, sys
name, payload = sys.argv[1], sys.argv[2].encode()
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('')
s.settimeout(10)
s.sendto(payload, b'\0' + name.encode())
print(s.recv(65536).decode(), end='')
"#;

/// The rendezvous is held to the named socket's mode: a user outside the
/// socket's group is refused there exactly as `connect` refuses it at the
/// named socket (`permission denied`, exit 1, nothing done); members of
/// the group, by their primary or a supplementary group, are served.
#[test]
fn a_non_member_is_refused_at_the_rendezvous_as_at_the_named_socket() {
    let Some((_t, base, _atk)) = attack_setup("to act as the job's user", &["job", "grouped"])
    else {
        return;
    };
    let (run, pid) = Run::builder(&base, "job").spawn_running();
    let name = rendezvous_of(run.pid()).expect("a rendezvous name");
    let socket = run.files.socket.display().to_string();
    let by_name = client_as_job_user(&base, "ctl", &["status", "job"]);
    let by_path = client_as_job_user(&base, "ctl", &["status", "--socket", &socket]);
    for (how, (code, out, err)) in [("by name", &by_name), ("by --socket", &by_path)] {
        assert_eq!(code, &1, "{how}: {out}{err}");
        assert!(err.contains("permission denied"), "{how}: {err}");
        assert!(out.is_empty(), "{how}: {out}");
    }
    let (code, _, err) = client_as_job_user(&base, "ctl", &["stop", "job", "--timeout", "1s"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    let (code, out, err) = python_to_end(ASK, &args(&[&name, &"STOP"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "{\"refused\":\"permission denied\"}\n");
    assert!(alive(pid));
    assert_eq!(run.status()["state"], "running");

    let (grouped, _) = grouped_run(&base, "grouped").spawn_running();
    let (code, out, err) = client_as_job_user(&base, "ctl", &["status", "grouped", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["state"], "running");
    let mut member = Command::new("setpriv");
    member.args(["--reuid=65534", "--regid=65533", "--groups=65534"]);
    let (code, out, err) = client_through(Some(member), &base, "ctl", &["stop", "grouped"]);
    assert_eq!(code, 0, "a supplementary member: {out}{err}");
    grouped.wait_stopped();
}

/// A container-run of another uid is no container-run to a client, unless
/// the client is told to believe that uid (`--trust-uid`,
/// `CONTAINER_RUN_TRUST_UID`) or runs as it.
#[test]
fn trust_uid_believes_a_container_run_of_another_user() {
    if !require_root("to run container-run as another user") {
        return;
    }
    let t = TempDir::new();
    job_user_dirs(t.path(), ["base"]);
    let base = t.file("base");
    let stderr = t.file("stderr");
    let mut cmd = setpriv(NOBODY);
    wrapped_run(&mut cmd, &base).stderr(std::fs::File::create(&stderr).unwrap());
    without_client_env(&mut cmd);
    let _cr = KilledOnDrop(cmd.spawn().unwrap());
    let files = Files::new(&base, "job", "job");
    let pid = wait_pid_file(&files.pidfile);
    let (code, out, err) = client(&base, "ctl", &["status", "job", "--json"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("uid 65534") && err.contains("not believed"),
        "{err}"
    );
    let (code, out, err) = client(
        &base,
        "ctl",
        &["status", "job", "--json", "--trust-uid", "65534"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["pid"].as_i64(), Some(i64::from(pid)));
    let mut by_env = client_command(None, &base, "ctl", &["status", "job", "--json"]);
    by_env.env("CONTAINER_RUN_TRUST_UID", "65534");
    let (code, _, err) = output_with_deadline(by_env);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = client_as_job_user(&base, "ctl", &["status", "job"]);
    assert_eq!(code, 0, "its own uid: {err}");
    let (_, out, _) = client(&base, "monit", &["summary"]);
    assert!(!out.contains("Process 'job'"), "{out}");
    let (_, out, err) = client(&base, "monit", &["summary", "--trust-uid", "65534"]);
    assert!(out.contains("Process 'job'"), "{out}{err}");
    let (code, out, err) = client(&base, "ctl", &["stop", "job", "--trust-uid", "65534"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!alive(pid));
    let (code, _, _) = client(&base, "probe", &["job", "--", "false"]);
    assert_eq!(code, 1, "a hold believed without --trust-uid");
    let (code, _, err) = client(
        &base,
        "probe",
        &["job", "--trust-uid", "65534", "--", "false"],
    );
    assert_eq!(code, 0, "{err}");
}

/// The job user binds 500 never-reading names under the real job's own
/// rendezvous prefix: root's commands still reach the real container-run.
#[test]
fn names_squatting_a_jobs_own_prefix_cannot_hide_it() {
    let Some((_t, base, atk, run, pid)) = job_under_attack() else {
        return;
    };
    let real = rendezvous_of(run.pid()).expect("a rendezvous name");
    let own = name_prefix(&real, 3);
    let spec: Vec<Value> = (0..500)
        .map(|i| serde_json::json!({"bind": format!("@{own}{i:016x}"), "tag": "squat"}))
        .collect();
    let _squat = fakes(&atk, &atk.join("log"), &Value::from(spec));
    assert_status_shows(&base, pid, "");
    assert_stop_stops(&base, pid);
}

/// A name of the job user's under a draining peer's rendezvous prefix
/// does not keep that peer alive: when the peer crashes in its drain, the
/// barrier lets go at once, not at the drain's deadline (10 min).
#[test]
fn a_name_squatting_a_peers_prefix_does_not_outlive_the_peer() {
    let Some((t, base, atk)) = attack_setup("to act as the job's user", &["rep", "garden"]) else {
        return;
    };
    let GardenAndRep {
        mut garden,
        mut rep,
        garden_term,
        ..
    } = GardenAndRep::start(&t, &base, 600, &[], &[]);
    let real = rendezvous_of(rep.pid()).expect("a rendezvous name");
    let own = name_prefix(&real, 3);
    let spec = serde_json::json!([{"bind": format!("@{own}squat"), "tag": "squat"}]);
    let _squat = fakes(&atk, &atk.join("log"), &spec);
    rep.signal(libc::SIGTERM);
    rep.wait_state("draining");
    garden.signal(libc::SIGTERM);
    wait_until("garden waits for rep", || {
        garden
            .errors()
            .contains("waiting for 1 draining container-run")
    });
    for p in descendants(rep.pid()) {
        rep.track(p);
    }
    rep.signal(libc::SIGKILL);
    assert_eq!(garden.wait_exit(), 0, "{}", garden.errors());
    assert!(garden_term.exists());
}

// Below: tests that name rendezvous names through the library
// (`container_run::rendezvous`), a capability the container-run before
// issue 17 does not have.

/// The job user binds names under the pod's prefix that answer as
/// container-runs would: as `ghost` (a job that does not run), as the real
/// job stopped with a hold (under the job's own prefix), with control
/// characters. None of them is listed as a job, and no command that only
/// they answer succeeds.
/// Every command whose target only a fake answers fails, and prints no
/// state of it.
fn only_fakes_answering_fails_every_command(base: &Path) {
    for call in [
        &["ctl", "stop", "ghost"][..],
        &["ctl", "start", "nats"],
        &["ctl", "term", "ghost"],
        &["probe", "ghost", "--", "true"],
        &["bpm", "running", "ghost"],
        &["bpm", "pid", "ghost"],
        &["bpm", "stop", "nats"],
        &["monit", "stop", "ghost"],
        &["monit", "start", "nats"],
    ] {
        let (code, out, err) = client(base, call[0], &call[1..]);
        assert_ne!(code, 0, "{call:?} succeeded: {out}{err}");
        assert!(
            !out.contains("stopped") && !out.contains("running"),
            "{call:?}: {out}"
        );
    }
}

#[test]
fn fake_rendezvous_names_are_never_jobs_and_never_make_a_command_succeed() {
    let Some((_t, base, atk, _run, pid)) = job_under_attack() else {
        return;
    };
    let pod = container_run::rendezvous::pod_of(&base).unwrap();
    let at = |job: &str, nonce: &str| {
        format!(
            "@{}",
            String::from_utf8(pod.name_for(job, job, nonce)).unwrap()
        )
    };
    let laden = fake_line(
        "\u{1b}]0;owned\u{7}",
        "x\njob  job  stopped",
        "stopped",
        true,
    );
    let spec = serde_json::json!([
        {"bind": at("ghost", "n1"), "tag": "ghost", "line": fake_line("ghost", "ghost", "stopped", true)},
        {"bind": at("job", "n2"), "tag": "squat", "line": fake_line("job", "job", "stopped", true)},
        {"bind": at("laden", "n3"), "tag": "laden", "line": laden},
        {"bind": at("nats", "n4"), "tag": "nats", "line": fake_line("nats", "nats", "running", false)},
    ]);
    let log = atk.join("fakes.log");
    let _fakes = fakes(&atk, &log, &spec);

    listings_show_exactly(&base, &["job"]);

    // Nothing believed answers for ghost: no container-run (3).
    let (code, out, err) = client(&base, "ctl", &["status", "ghost"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.is_empty(), "{out}{err}");
    only_fakes_answering_fails_every_command(&base);
    for _ in 0..5 {
        assert_status_shows(&base, pid, "");
    }
    assert_stop_stops(&base, pid);
    let commands: Vec<String> = fake_log(&log)
        .into_iter()
        .filter(|l| !l.ends_with("b'STATUS'"))
        .collect();
    assert!(commands.is_empty(), "the fakes received {commands:?}");
}
