//! Regressions found in review of the trust and operator changes (issues 17
//! and 19), each named for what it proves: each test
//! here performs one defect found in review and fails against the branch
//! as reviewed. Attackers are real processes (`python3` under `setpriv
//! --reuid=65534`), bounded in time and killed by pid when a test ends;
//! every wait is bounded by `common::DEADLINE`.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use common::attack::{
    Attacker, NOBODY, abstract_names_of, args, assert_no_control, attack_setup, client,
    fake_answer, grouped_run, python_to_end, received, setpriv,
};
use common::*;

/// Run `cmd` on one CPU only (the first this test may use): processes
/// that share a CPU take turns by the scheduler's time slice, not by who
/// happens to be idle on a shared machine.
fn on_one_cpu(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes one.
    let cpu = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .unwrap_or(0)
    };
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        });
    }
}

/// The kernel-chosen (autobind) names among them: five hex digits. In
/// container-run those are the barrier's question sockets.
fn autobound_of(pid: i32) -> Vec<String> {
    abstract_names_of(pid)
        .into_iter()
        .filter(|n| n.len() == 5 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

/// Sends LINE to the abstract name written in NAME_FILE from SOCKETS
/// sockets of its own, never blocking, so that a freed place in the
/// receiver's queue is taken at once; when the name is refused (the round
/// is over) it reads NAME_FILE again. SECONDS at most.
const FLOOD_ANSWERS: &str = r#"
import errno, socket, sys, time
ready, name_file, seconds, count, line = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5].encode()
end = time.time() + seconds
def target():
    try:
        return b'\0' + open(name_file).read().strip().encode()
    except OSError:
        return None
socks = [socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(count)]
open(ready, 'w').close()
addr = target()
while time.time() < end:
    if addr is None:
        time.sleep(0.001)
        addr = target()
        continue
    for s in socks:
        try:
            s.sendto(line, socket.MSG_DONTWAIT, addr)
        except BlockingIOError:
            pass
        except OSError:
            time.sleep(0.001)
            addr = target()
            break
"#;

/// A reply line as container-run writes it while it drains, with `job`
/// and `process` chosen by the sender.
fn status_line(job: &str, process: &str) -> String {
    fake_answer(job, process, "running", false, "running")
}

/// Starts `a` (a builder for job `a`) and job `b`'s container-run under
/// `base`; once both jobs run, stops `b` with SIGSTOP (it cannot answer)
/// and sends `a` SIGTERM: `a`'s barrier asks `b`, round after round.
fn asking_a_silent_peer(a: Builder, base: &Path) -> (Run, Run) {
    let a = a.spawn([child()]);
    let b = Run::builder(base, "b").spawn([child()]);
    a.wait_running();
    b.wait_running();
    b.signal(libc::SIGSTOP);
    a.signal(libc::SIGTERM);
    (a, b)
}

/// peers.rs `read_answers` reads the barrier's question socket until it is
/// empty, with no bound: anyone in the pod can send to that
/// kernel-chosen abstract name (it is listed in /proc/net/unix), and a
/// flood of answers that each take a while to parse keeps the one event
/// loop in that loop. The drain deadline (SPEC 8: "never past the
/// deadline"), SIGTERM, STOP and STATUS then all wait for the flood to end.
///
/// The peer is made silent with SIGSTOP, as a flood of its own queue
/// would (docs/reliability.md row 3): each round then waits its second
/// for an answer, and the attacker floods the round's socket meanwhile.
#[test]
fn a_flood_of_answers_at_the_barrier_cannot_hold_container_run_past_its_deadline() {
    let Some((_t, base, atk)) = attack_setup("to flood as another user", &["a", "b"]) else {
        return;
    };
    let mut builder = Run::builder(&base, "a").args(["--drain-timeout", "2s"]);
    on_one_cpu(builder.command());
    let (mut a, b) = asking_a_silent_peer(builder, &base);

    let name_file = atk.join("name");
    // 64 kB of JSON per answer, most of it an unknown field that the
    // parser must walk: a few milliseconds of container-run's time each
    // (0.3 ms in a release build), and the queue holds about ten.
    let line =
        status_line("a", "p").replacen('{', &format!("{{\"z\":[{}0],", "0,".repeat(31_800)), 1);
    let flood_args = [
        name_file.as_os_str(),
        OsStr::new("60"),
        OsStr::new("16"),
        OsStr::new(&line),
    ];
    let mut pinned = setpriv(NOBODY);
    on_one_cpu(&mut pinned);
    let _flood = Attacker::python_by(pinned, &atk, FLOOD_ANSWERS, &flood_args);
    // Point the flood at each round's question socket as it appears,
    // until container-run has exited (its deadline is 2 s away).
    let mut last = String::new();
    let exited = {
        let end = std::time::Instant::now() + DEADLINE;
        loop {
            if a.try_exit().is_some() {
                break true;
            }
            if std::time::Instant::now() > end {
                break false;
            }
            if let Some(name) = autobound_of(a.pid()).into_iter().next()
                && name != last
            {
                let tmp = atk.join("name.tmp");
                std::fs::write(&tmp, &name).unwrap();
                std::fs::rename(&tmp, &name_file).unwrap();
                last = name;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    b.signal(libc::SIGCONT);
    assert!(
        exited,
        "container-run with --drain-timeout 2s was still up {DEADLINE:?} after SIGTERM: \
         a flood of answers at its barrier's question socket holds its event loop"
    );
}

/// Sends LINE once to the abstract name given.
const SEND_ONCE: &str = r#"
import socket, sys
ready, name, line = sys.argv[1], sys.argv[2], sys.argv[3].encode()
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(line, b'\0' + name.encode())
open(ready, 'w').close()
"#;

/// peers.rs `log_ignored` writes the JOB/PROCESS of an answer it does not
/// believe into container-run's log as they came: the sender chooses them,
/// so anyone in the pod writes raw escape sequences and whole forged lines
/// into `kubectl logs` (SPEC 6: what a person reads is escaped).
#[test]
fn an_untrusted_answer_at_the_barrier_writes_nothing_raw_into_the_log() {
    let Some((_t, base, atk)) = attack_setup("to answer as another user", &["a", "b"]) else {
        return;
    };
    let a = Run::builder(&base, "a").args(["--drain-timeout", "30s"]);
    let (mut a, b) = asking_a_silent_peer(a, &base);
    let forged = "container-run: received START";
    let line = status_line(&format!("\x1b]0;owned\x07\x1b[2J\n{forged}\nx"), "p");
    wait_until("container-run logs the untrusted answer", || {
        if let Some(name) = autobound_of(a.pid()).into_iter().next() {
            let _ = python_to_end(SEND_ONCE, &args(&[&atk.join("sent"), &name, &line]));
        }
        a.stderr_text()
            .contains("ignoring an answer from uid 65534")
    });
    b.signal(libc::SIGCONT);
    a.signal(libc::SIGKILL);
    a.wait_exit();
    let log = a.stderr_text();
    assert!(
        !log.lines().any(|l| l == forged),
        "a line forged by uid 65534 stands in container-run's log:\n{log}"
    );
    assert_no_control("container-run's log", &log);
}

/// Creates and removes COUNT files in DIR (two inotify events each), then
/// removes NAME there.
const CHURN_THEN_REMOVE: &str = r#"
import os, sys
ready, d, count, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
for i in range(count):
    p = os.path.join(d, 'churn%d' % i)
    open(p, 'w').close()
    os.unlink(p)
os.unlink(os.path.join(d, name))
open(ready, 'w').close()
"#;

/// name.rs `on_watch_event` recognises the STOP marker only by an event
/// that names it, and ignores IN_Q_OVERFLOW: when the job user makes more
/// than `max_queued_events` (16384) events in the directory it owns while
/// container-run is not scheduled (a CFS quota throttles a container for
/// tens of milliseconds at a time; here SIGSTOP stands for that), the
/// event of the marker's deletion is dropped by the kernel. The hold is
/// then gone from disk while `ctl status` says HOLD yes, and the next
/// container restart runs the job in the middle of the operator's restore
/// (SPEC 2: "a marker that someone else removes ... is written again at
/// once").
#[test]
fn a_stop_marker_deleted_behind_an_inotify_overflow_is_written_again() {
    let Some((_t, base, atk)) = attack_setup("to attack as another user", &["a"]) else {
        return;
    };
    let (a, _) = Run::builder(&base, "a").spawn_running();
    let (code, _, err) = client(&base, "ctl", &["stop", "a"]);
    assert_eq!(code, 0, "{err}");
    assert!(a.files.stopped.exists());

    a.signal(libc::SIGSTOP);
    let marker = a.files.stopped.file_name().unwrap();
    let (code, _, err) = python_to_end(
        CHURN_THEN_REMOVE,
        &args(&[
            &atk.join("churned"),
            &base.join("data/a"),
            &"10000",
            &marker,
        ]),
    );
    assert_eq!(code, 0, "the attack itself failed: {err}");
    assert!(!a.files.stopped.exists());
    a.signal(libc::SIGCONT);

    // Answered after container-run has read its directory's events.
    assert_eq!(a.status()["hold"], true);
    let (_, out, _) = client(&base, "ctl", &["status", "a", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(shown["hold"], true, "{out}");
    wait_until(
        "the STOP marker written again while ctl status says HOLD yes",
        || a.files.stopped.exists(),
    );
}

/// Whether container-run's log shows `after` once `first` was logged.
fn logged_after(run: &Run, first: &str, after: &str) -> bool {
    let log = run.stderr_text();
    log.find(first)
        .is_some_and(|at| log[at + first.len()..].contains(after))
}

/// ctl/mod.rs `watch_quit` watches the targets one after another, 1 s
/// each (SPEC 6: every target of one command is served at once; a
/// `ctl quit --all` over ten JVMs, which survive SIGQUIT, takes ten
/// seconds), and says "the job's process ended" of any target whose
/// container-run did not give a believed answer within 2 s, which is no
/// news of the job at all (a busy or stopped container-run, a stranger
/// answering, a reply lost to a flood).
///
/// Here y's container-run stops answering once both QUITs were answered
/// (ctl's watch of x has begun): its job is alive, and ctl says it ended.
#[test]
fn quit_watches_every_target_at_once_and_never_says_a_living_job_ended() {
    let t = TempDir::new();
    let (rx, ry) = (Recorder::new(&t, &[]), Recorder::new(&t, &[]));
    let x = Run::builder(t.path(), "x").spawn(&rx.command);
    let y = Run::builder(t.path(), "y").spawn(&ry.command);
    x.wait_running();
    y.wait_running();
    rx.wait_ready();
    let y_job = ry.wait_ready();

    let out = t.file("quit.out");
    let mut ctl = Command::new(bin());
    ctl.args(["ctl", "quit", "x", "y", "--base-dir"])
        .arg(t.path())
        .env_remove("CONTAINER_RUN_BASE_DIR");
    let mut ctl = KilledOnDrop(spawn_to_files(&mut ctl, &out, &t.file("quit.err")));
    // ctl asks x for its STATUS only once both QUITs were answered.
    wait_until("ctl watches x after QUIT", || {
        logged_after(&x, "received QUIT", "received STATUS")
    });
    y.signal(libc::SIGSTOP);
    let status = wait_for("ctl quit ends", || ctl.0.try_wait().unwrap());
    y.signal(libc::SIGCONT);
    let err = std::fs::read_to_string(t.file("quit.err")).unwrap();
    let said = format!("{}{err}", std::fs::read_to_string(&out).unwrap());
    assert!(alive(y_job), "y's job survives SIGQUIT");
    assert!(
        !said.contains(&format!("process {y_job} ended")),
        "ctl says y's job ended while it runs (exit {status}):\n{said}"
    );
}

/// client/mod.rs `pod` shows a rendezvous name only under the JOB/PROCESS
/// its answer gives, and `left_behind` only socket files without a
/// rendezvous name: a container-run that is alive but does not answer
/// within 2 s (hung, stopped, or its queue kept full by a group member)
/// has no row at all. `monit summary` then leaves the process out where
/// SPEC 10 says `Does not exist`, `bpm list` leaves it out where it says
/// `failed`, and `ctl status --all` exits 1 where `ctl status x` exits 3
/// for the same container-run (SPEC 6: 3, no container-run answers). The
/// name's TARGET part is a hash of JOB and PROCESS, which the socket files
/// under BASE/data name: the row can be shown.
#[test]
fn a_container_run_that_does_not_answer_keeps_its_row_and_exit_code() {
    let t = TempDir::new();
    let (x, _) = Run::builder(t.path(), "x").spawn_running();
    x.signal(libc::SIGSTOP);
    let base = t.path();
    let (named, _, _) = client(base, "ctl", &["status", "x"]);
    let (all, _, _) = client(base, "ctl", &["status", "--all"]);
    let (_, summary, _) = client(base, "monit", &["summary"]);
    let (_, list, _) = client(base, "bpm", &["list"]);
    x.signal(libc::SIGCONT);
    assert_eq!(named, 3, "ctl status x: no container-run answers");
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("Process 'x'") && l.ends_with(" Does not exist")),
        "monit summary has no row for x:\n{summary}"
    );
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["x", "-", "failed"]),
        "bpm list has no row for x:\n{list}"
    );
    assert_eq!(all, named, "ctl status --all and ctl status x disagree");
}

/// The system call process `pid` is blocked in (`/proc/PID/syscall`).
fn blocked_in(pid: i32) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// session.rs ends a session as soon as its goal is reached, whether or
/// not every command has gone out: with TERM then START and the goal
/// "any answer" (`monit restart`, `ctl restart --no-wait`), a queue that
/// has room for TERM but not yet for START (anyone in the pod can keep a
/// rendezvous queue full: no permission guards an abstract name) lets
/// TERM's answer end the session. START is never sent, the job stays
/// stopped, and the client exits 0.
///
/// The test plays the container-run (root, so believed) at `--socket`,
/// with a queue that a flooder keeps full, and stops the client with
/// SIGSTOP while it fills the freed places, so that what the client sees
/// does not depend on who wins a race.
#[test]
fn restart_never_reports_success_with_its_start_unsent() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::UnixDatagram;
    let t = TempDir::new();
    let path = t.file("x_containerrun.sock");
    let fake = UnixDatagram::bind(&path).unwrap();
    fake.set_nonblocking(true).unwrap();
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    let fill = || while filler.send_to(b"junk", &path).is_ok() {};
    fill();
    let mut buf = [0u8; 65536];
    fake.recv(&mut buf).unwrap(); // one place free: for TERM
    let mut cmd = Command::new(bin());
    cmd.args(["ctl", "restart", "--no-wait", "--socket"])
        .arg(&path)
        .env_remove("CONTAINER_RUN_BASE_DIR");
    let mut ctl = KilledOnDrop(spawn_to_files(&mut cmd, &t.file("out"), &t.file("err")));
    let pid = ctl.0.id() as i32;
    // poll(2) or ppoll(2): the commands were tried, START found no room.
    wait_until("ctl waits in poll", || {
        matches!(blocked_in(pid), Some(7 | 271))
    });
    kill(pid, libc::SIGSTOP);
    let mut term_from = None;
    while let Ok((n, from)) = fake.recv_from(&mut buf) {
        if &buf[..n] == b"TERM" {
            term_from = Some(from);
        }
    }
    let term_from = term_from.expect("TERM was queued");
    fill();
    let line = status_line("x", "x").replace("\"state\":\"running\"", "\"state\":\"stopping\"");
    fake.send_to_addr(line.as_bytes(), &term_from).unwrap();
    assert!(term_from.as_abstract_name().is_some());
    kill(pid, libc::SIGCONT);
    let status = wait_for("ctl ends", || ctl.0.try_wait().unwrap());
    let got = received(&fake);
    let out = std::fs::read_to_string(t.file("out")).unwrap();
    let err = std::fs::read_to_string(t.file("err")).unwrap();
    assert!(
        !status.success() || got.iter().any(|d| d == "START"),
        "ctl restart exited 0 and START never reached the container-run \
         (it received {got:?}): {out}{err}"
    );
}

/// ROUNDS times: connects PER_ROUND sockets of its own (kernel-chosen
/// abstract addresses, so that replies can come back) to PATH, sends 20
/// STATUS from each and never reads; waits (2 s at most) until a fresh
/// socket holds PATH, then closes them. Prints how many rounds saw one.
const UNREAD_ROUNDS: &str = r#"
import os, socket, sys, time
ready, path, rounds, per_round = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rotated = 0
open(ready, 'w').close()
for r in range(rounds):
    before = os.stat(path).st_ino
    keep = []
    for i in range(per_round):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind('')
        s.connect(path)
        s.settimeout(1)
        for _ in range(20):
            try:
                s.send(b'STATUS')
            except OSError:
                pass
        keep.append(s)
    end = time.time() + 2
    while time.time() < end:
        if os.stat(path).st_ino != before:
            rotated += 1
            break
        time.sleep(0.001)
    for s in keep:
        s.close()
print(rotated, flush=True)
"#;

/// socket/mod.rs `recv` gives the name to a fresh socket whenever peers
/// connected to the named socket leave half its send buffer unread, with
/// a warning each time: neither the take-back's spacing nor its counted
/// warnings apply (issue 17, finding 2). A member of the socket's group
/// who connects a few dozen sockets per round and never reads makes
/// container-run re-bind its name and log a line per round, as often as
/// it likes.
#[test]
fn a_rotation_by_unread_replies_costs_a_bounded_number_of_log_lines() {
    let Some((_t, base, atk)) = attack_setup("to attack as another user", &["a"]) else {
        return;
    };
    let (a, _) = grouped_run(&base, "a").spawn_running();
    let (code, printed, err) = python_to_end(
        UNREAD_ROUNDS,
        &args(&[&atk.join("ready-rotate"), &a.files.socket, &"8", &"40"]),
    );
    assert_eq!(code, 0, "the attack itself failed: {err}");
    let rotated: u32 = printed.trim().parse().unwrap_or(0);
    // Answered: the loop has logged whatever it was to log.
    assert_eq!(a.status()["state"], "running");
    let lines = a
        .stderr_text()
        .lines()
        .filter(|l| l.contains("a fresh socket takes its name"))
        .count();
    assert!(
        lines <= 2,
        "{lines} warning lines (and as many re-binds of the name) while {rotated} rounds of 40 non-reading sockets ran"
    );
}

/// Creates COUNT empty regular files named `pN_containerrun.sock` in DIR.
const PLANT_FILES: &str = r#"
import os, sys
ready, d, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(count):
    os.close(os.open(os.path.join(d, 'p%06d_containerrun.sock' % i), os.O_CREAT | os.O_WRONLY, 0o644))
open(ready, 'w').close()
"#;

/// paths.rs `pod_sockets` collects a `Paths` (eleven paths, about 1 kB)
/// for every `*_containerrun.sock` name under `BASE/data/*/` before
/// `reach::left_behind` looks at what each is and who owns it: names the
/// job's user plants in the directories it owns (plain files, not even
/// sockets) cost every listing (`ctl status --all`, `monit summary`, `bpm
/// list`, `ctl stop --all`) memory in proportion, about 1 kB a name (200
/// MB for 200,000), and under a container's memory limit the client dies with
/// "memory allocation failed" and a backtrace (SPEC 3: planted names; 7:
/// never a backtrace).
#[test]
fn planted_socket_names_cost_a_listing_no_memory() {
    let Some((_t, base, atk)) = attack_setup("to plant as another user", &["a", "b"]) else {
        return;
    };
    let (_a, _) = Run::builder(&base, "a").spawn_running();
    let (code, _, err) = python_to_end(
        PLANT_FILES,
        &args(&[&atk.join("planted"), &base.join("data/b"), &"40000"]),
    );
    assert_eq!(code, 0, "the attack itself failed: {err}");
    // 24 MB of address space: the same listing without the planted names
    // runs in 16.
    let mut cmd = Command::new("prlimit");
    cmd.arg("--as=25165824")
        .arg(bin())
        .args(["ctl", "status", "--all", "--base-dir"])
        .arg(&base)
        .env_remove("CONTAINER_RUN_BASE_DIR");
    let (code, out, err) = output_with_deadline(cmd);
    assert_eq!(code, 0, "ctl status --all: {err}");
    assert!(out.lines().any(|l| l.starts_with("a ")), "{out}");
}

/// session.rs `on_reply` fails every `Goal::Reach(Running)` whose answer
/// says container-run is exiting, with "START ignored", also for `ctl
/// wait --until running`, which sends no START: while a job drains after
/// SIGTERM, which every client treats as running (SPEC 8), `ctl wait x
/// --until running` exits 1 saying a START it never sent was ignored.
#[test]
fn wait_until_running_holds_for_a_draining_job() {
    use std::os::unix::fs::PermissionsExt;
    let t = TempDir::new();
    let drain = t.file("drain");
    std::fs::write(&drain, "#!/bin/sh\necho 60\n").unwrap();
    std::fs::set_permissions(&drain, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (x, _) = Run::builder(t.path(), "x")
        .arg("--drain-name")
        .arg(&drain)
        .spawn_running();
    x.signal(libc::SIGTERM);
    x.wait_state("draining");
    let (code, _, _) = client(t.path(), "bpm", &["running", "x"]);
    assert_eq!(code, 0, "bpm running: a draining job runs");
    let (code, out, err) = client(t.path(), "ctl", &["wait", "x", "--until", "running"]);
    assert_eq!(code, 0, "ctl wait --until running: {out}{err}");
}
