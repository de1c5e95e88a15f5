//! End to end, issue 10: the job's own user (uid 65534, owning
//! `BASE/data/job` and `BASE/sys/run/bpm/job` as a BOSH pre-start leaves
//! them) attacks a root container-run that runs as PID 1 of a fresh PID and
//! mount namespace; the attacker runs inside those namespaces (`nsenter`)
//! under `setpriv --reuid=65534 --regid=65534 --clear-groups`. Victims live
//! outside BASE and must come out unchanged. Also the operator-side limits
//! of the same issue: durations, `--socket-group`, umask, a stalled stderr
//! reader. Each test fails against the container-run before the hardening
//! (docs/reliability.md, "Never be steered by the job's user").

mod common;

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::attack::{self, NOBODY, Victims, attacker_dir, job_user_dirs, then_setpriv};
use common::*;

/// Root is needed to act as another user and to create namespaces; under
/// CI a test that cannot do its real check fails.
fn require_root() -> bool {
    if is_root() {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "CI must run these tests as root"
    );
    eprintln!("skipped: needs root to act as uid 65534 and to create namespaces");
    false
}

/// BASE as a BOSH job's pre-start leaves it: the job's directories belong
/// to the job's user; `more` lists further directories it owns.
fn job_owned_base(t: &TempDir, more: &[&str]) -> PathBuf {
    let base = attack::job_owned_base(t, &["job"]);
    job_user_dirs(&base, more);
    base
}

/// container-run as PID 1 of a new PID and mount namespace. Dropping it
/// kills the namespace (and so every attacker inside it), by pid.
struct Ns {
    unshare: Child,
    attackers: Vec<Child>,
    stderr: PathBuf,
    files: Files,
}

impl Ns {
    /// `pre_attack` runs first inside the namespace as uid 65534 (the job
    /// user acting before container-run starts, e.g. before a restart).
    fn start(base: &Path, args: &[&str], pre_attack: &str, job: &[OsString]) -> Ns {
        let stderr = base.with_extension("stderr");
        let mut cmd = namespaced();
        cmd.args([
            "sh",
            "-c",
            "if [ -n \"$1\" ]; then setpriv --reuid=65534 --regid=65534 --clear-groups sh -ec \"$1\" || exit 99; fi; shift; exec \"$@\"",
            "sh",
            pre_attack,
        ])
        .arg(bin())
        .arg("--base-dir")
        .arg(base)
        .args(["--job-name", "job", "--debug"])
        .args(args)
        .arg("--")
        .args(job)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .env_remove("CONTAINER_RUN_BASE_DIR");
        Ns {
            unshare: cmd.spawn().unwrap(),
            attackers: Vec::new(),
            stderr,
            files: Files::new(base, "job", "job"),
        }
    }

    /// container-run's pid as seen from here.
    fn pid(&self) -> i32 {
        wait_child_of(
            self.unshare.id() as i32,
            "container-run inside the namespace",
        )
    }

    fn attacker_command(&self, script: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.pid()))
            .args(["--pid", "--mount", "--"]);
        then_setpriv(&mut cmd, NOBODY).args(["sh", "-ec", script]);
        cmd
    }

    /// Run an attack to its end inside the namespace as uid 65534.
    fn attack(&self, script: &str) {
        let (code, out, err) = output_with_deadline(self.attacker_command(script));
        assert_eq!(code, 0, "the attack itself failed: {out}{err}");
    }

    /// Start an attack that runs on in the background.
    fn attack_in_background(&mut self, script: &str) -> usize {
        let child = self
            .attacker_command(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.attackers.push(child);
        self.attackers.len() - 1
    }

    fn wait_attacker(&mut self, i: usize) {
        let status = wait_for("the attacker finishes", || {
            self.attackers[i].try_wait().unwrap()
        });
        assert!(status.success(), "the attack itself failed: {status}");
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_running(&self) -> i32 {
        wait_for("job running", || {
            let s = try_request(&self.files.socket, "STATUS")?;
            (s["state"] == "running").then(|| s["pid"].as_i64().unwrap() as i32)
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        // unshare --kill-child ends container-run, PID 1 of the namespace,
        // and with it every process in the namespace, attackers included.
        kill(self.unshare.id() as i32, libc::SIGKILL);
        let _ = self.unshare.wait();
        for a in &mut self.attackers {
            kill(a.id() as i32, libc::SIGKILL);
            let _ = a.wait();
        }
        let _ = std::fs::remove_file(&self.stderr);
    }
}

fn job() -> Vec<OsString> {
    vec![child().into_os_string()]
}

/// Finding 1: links planted at the names container-run used for its
/// temporary files (`NAME.tmp1` as PID 1, `.container-run-probe1`) before
/// it starts; then a start, a STOP (the marker) and a START.
#[test]
fn links_planted_at_temporary_names_are_never_followed() {
    if !require_root() {
        return;
    }
    let t = TempDir::new();
    let base = job_owned_base(&t, &[]);
    let v = Victims::new(&t, &["pid", "running", "stopped"]);
    let data = base.join("data/job").display().to_string();
    let pids = base.join("sys/run/bpm/job").display().to_string();
    let plant = format!(
        "ln -s {pid} {pids}/job.pid.tmp1; ln -s {created} {pids}/.container-run-probe1; \
         ln -s {running} {data}/job_containerrun.running.tmp1; \
         ln -s {stopped} {data}/job_containerrun.stopped.tmp1; \
         ln -s {created2} {data}/.container-run-probe1",
        pid = v.path("pid"),
        running = v.path("running"),
        stopped = v.path("stopped"),
        created = v.path("created-by-root"),
        created2 = v.path("created-by-root-2"),
    );
    let ns = Ns::start(&base, &[], &plant, &job());
    ns.wait_running();
    let c = client(&ns.files.socket);
    command_until(&c, "STOP", "stopped");
    command_until(&c, "START", "running");
    v.assert_untouched();
    for f in [&ns.files.pidfile, &ns.files.running] {
        let m = std::fs::symlink_metadata(f).unwrap();
        assert!(m.is_file(), "{} is not a regular file", f.display());
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o644));
    }
}

/// Finding 1, variant: the job user owns `BASE/sys/run/bpm` and swaps the
/// job's pid directory for a link to a root-only directory while the job is
/// stopped; START and STOP must neither write nor delete there.
#[test]
fn a_pid_directory_swapped_for_a_link_is_not_written_through() {
    if !require_root() {
        return;
    }
    let t = TempDir::new();
    let base = job_owned_base(&t, &["sys/run/bpm"]);
    let v = Victims::new(&t, &["job.pid"]);
    let ns = Ns::start(&base, &[], "", &job());
    ns.wait_running();
    let c = client(&ns.files.socket);
    command_until(&c, "STOP", "stopped");
    let bpm = base.join("sys/run/bpm").display().to_string();
    ns.attack(&format!(
        "mv {bpm}/job {bpm}/job.moved; ln -s {} {bpm}/job",
        v.dir.display()
    ));
    command_until(&c, "START", "running");
    command_until(&c, "STOP", "stopped");
    command_until(&c, "START", "running");
    v.assert_untouched();
    let log = ns.stderr_text();
    assert!(log.contains("not following"), "{log}");
}

/// Finding 2: the job user deletes the control socket again and again and,
/// in a tight loop, renames a link to a victim over the name container-run
/// bound its new socket under (`.crsock1` as PID 1) before the chmod/chown.
#[test]
fn the_socket_rebind_cannot_be_steered_to_chmod_or_chown_a_victim() {
    if !require_root() {
        return;
    }
    let t = TempDir::new();
    let base = job_owned_base(&t, &[]);
    let v = Victims::new(&t, &["secret"]);
    let mut ns = Ns::start(
        &base,
        &["--socket-mode", "0666", "--socket-group", "65533"],
        "",
        &job(),
    );
    ns.wait_running();
    let data = base.join("data/job");
    let script = format!(
        r#"perl -e '
            my ($dir, $victim) = @ARGV;
            my $sock = "$dir/job_containerrun.sock";
            my $end = time + 8;
            for my $round (1 .. 100) {{
                last if time > $end;
                unlink $sock;
                for my $i (1 .. 500) {{
                    symlink $victim, "$dir/.l";
                    rename "$dir/.l", "$dir/.crsock1";
                    next if $i % 100;
                    opendir(my $d, $dir) or next;
                    for my $n (grep {{ /^\.container-run/ }} readdir $d) {{
                        symlink $victim, "$dir/.l";
                        rename "$dir/.l", "$dir/$n/s";
                    }}
                }}
            }}' {} {}"#,
        data.display(),
        v.path("secret")
    );
    let a = ns.attack_in_background(&script);
    ns.wait_attacker(a);
    // container-run never gives up its socket: it answers under its name,
    // with the mode and group it was asked for.
    let s = wait_for("container-run answers on its socket again", || {
        try_request(&ns.files.socket, "STATUS")
    });
    assert_eq!(s["state"], "running");
    v.assert_untouched();
    let m = std::fs::symlink_metadata(&ns.files.socket).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (0, 65533, 0o666));
    let log = ns.stderr_text();
    assert!(
        !log.contains("cannot bind the control socket again"),
        "{log}"
    );
}

/// Finding 3: the job user binds a socket of its own and renames it over
/// the control socket; container-run must notice, take the name back and
/// say whose file it was.
#[test]
fn a_socket_renamed_over_the_control_socket_is_taken_back() {
    if !require_root() {
        return;
    }
    let t = TempDir::new();
    let base = job_owned_base(&t, &[]);
    let mut ns = Ns::start(&base, &[], "", &job());
    ns.wait_running();
    let data = base.join("data/job").display().to_string();
    // The intruding socket stays bound (socat waits on it) for the whole test.
    ns.attack_in_background(&format!(
        "cd {data}; socat -u UNIX-RECV:.evil /dev/null & \
         i=0; while [ ! -S .evil ] && [ $i -lt 2000 ]; do i=$((i+1)); sleep 0.01; done; \
         mv -f .evil job_containerrun.sock; wait"
    ));
    wait_until("a warning naming the intruder's uid", || {
        ns.stderr_text()
            .contains("was replaced by a socket of uid 65534: taking the name back")
    });
    // The warning comes first, then the name is taken back: wait for the
    // name to hold root's socket before asking it (the intruder's socket
    // would never answer).
    wait_until("the name holds container-run's socket again", || {
        std::fs::symlink_metadata(&ns.files.socket).is_ok_and(|m| m.uid() == 0)
    });
    let s = request(&ns.files.socket, "STATUS");
    assert_eq!(s["state"], "running");
}

/// Finding 4: a member of the socket's group opens 1,000 sockets (half of
/// them connected to the control socket), sends 15 STATUS from each and
/// never reads a reply. Others must still be answered at once.
#[test]
fn a_thousand_peers_that_never_read_cannot_silence_it() {
    if !require_root() {
        return;
    }
    let t = TempDir::new();
    let base = job_owned_base(&t, &[]);
    let atk = attacker_dir(&t);
    let ready = atk.join("ready");
    let mut ns = Ns::start(&base, &["--socket-group", "65534"], "", &job());
    ns.wait_running();
    let script = format!(
        r#"perl -MSocket -e '
            my ($path, $ready) = @ARGV;
            my $to = pack_sockaddr_un($path);
            my @socks;
            for my $i (0 .. 999) {{
                socket(my $s, PF_UNIX, SOCK_DGRAM, 0) or die "socket: $!";
                bind($s, pack_sockaddr_un("\0cr-hog-$$-$i")) or die "bind: $!";
                if ($i % 2) {{ connect($s, $to) or die "connect: $!" }}
                for (1 .. 15) {{
                    if ($i % 2) {{ send($s, "STATUS", 0) // die "send: $!" }}
                    else {{ send($s, "STATUS", 0, $to) // die "send: $!" }}
                }}
                push @socks, $s;
            }}
            open(my $f, ">", $ready) or die; close $f;
            sleep 600;' {} {}"#,
        ns.files.socket.display(),
        ready.display()
    );
    ns.attack_in_background(&script);
    wait_until("the 15,000 STATUS are sent", || ready.exists());
    // A new client's STATUS queues behind the 15,000: once it is answered,
    // every one of them has had its reply attempted.
    let s = request(&ns.files.socket, "STATUS");
    assert_eq!(s["state"], "running");
    let (code, out, err) = run_to_end(&[
        os("ctl"),
        os("status"),
        os("--json"),
        os("--socket"),
        ns.files.socket.as_os_str(),
    ]);
    assert_eq!(code, 0, "ctl status: {out}{err}");
    assert!(out.contains("\"state\":\"running\""), "{out}");
    let (code, _, err) = run_to_end(&[
        os("probe"),
        os("job"),
        os("--base-dir"),
        base.as_os_str(),
        os("--"),
        os("true"),
    ]);
    assert_eq!(code, 0, "probe: {err}");
    // The connected half filled the first socket's buffer: it was rotated.
    let log = ns.stderr_text();
    assert!(log.contains("a fresh socket takes its name"), "{log}");
}

/// Finding 7: a group member sends STOP from a path it bound, then swaps
/// the path for a link to a root-only socket; the reply that follows when
/// the stop settles must not reach that socket.
#[test]
fn a_reply_path_swapped_for_a_link_reaches_nothing_its_sender_could_not() {
    if !require_root() {
        return;
    }
    let t = TempDir::new();
    let base = job_owned_base(&t, &[]);
    let atk = attacker_dir(&t);
    let v = Victims::new(&t, &[]);
    let (victim_sock, victim) = v.socket("root-only.sock");
    let rec = Recorder::new(&t, &["--ignore-term"]);
    let ns = Ns::start(
        &base,
        &["--socket-group", "65534", "--stop-timeout", "1h"],
        "",
        &rec.command,
    );
    let pid = ns.wait_running();
    assert_eq!(rec.wait_ready(), pid);
    // `pid` is the job's pid inside the namespace; signal it by its pid here.
    let job_here = wait_for("the job's pid here", || {
        descendants(ns.pid()).into_iter().find(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    l.starts_with("NSpid:") && l.split_whitespace().last() == Some(&pid.to_string())
                })
        })
    });
    let reply = atk.join("r").display().to_string();
    ns.attack(&format!(
        "echo STOP | socat -t 0 - UNIX-SENDTO:{},bind={reply}",
        ns.files.socket.display()
    ));
    // The STOP made the attacker a waiter for the settled state.
    wait_for("STOP received", || {
        let s = try_request(&ns.files.socket, "STATUS")?;
        (s["state"] == "stopping").then_some(())
    });
    ns.attack(&format!(
        "rm -f {reply}; ln -s {} {reply}",
        victim_sock.display()
    ));
    kill(job_here, libc::SIGKILL);
    // The settle reply is sent in the turn the stop ends, before this
    // STATUS is read.
    wait_for("stopped", || {
        let s = try_request(&ns.files.socket, "STATUS")?;
        (s["state"] == "stopped").then_some(())
    });
    let mut buf = [0u8; 4096];
    match victim.recv(&mut buf) {
        Ok(n) => panic!(
            "the root-only socket received {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
    // Sending as the sender changed container-run's fsuid and back, which
    // clears a parent-death signal: `unshare --kill-child` must still end it.
    let cr = ns.pid();
    drop(ns);
    wait_until("container-run ends with its namespace", || !alive(cr));
}

/// The installed compatibility links: both appear, pointing at the binary;
/// a link planted in their directories by a user who owns them is never
/// followed.
#[test]
fn bpm_and_monit_links_are_installed_without_following_planted_links() {
    if !require_root() {
        return;
    }
    let t = TempDir::new();
    let base = job_owned_base(&t, &["jobs/bpm", "bosh"]);
    let v = Victims::new(&t, &["bpm", "monit"]);
    let b = base.display().to_string();
    let plant = format!(
        "ln -s {victims} {b}/jobs/bpm/bin; ln -s {victims} {b}/bosh/bin",
        victims = v.dir.display()
    );
    let ns = Ns::start(&base, &[], &plant, &job());
    ns.wait_running();
    v.assert_untouched();
    let log = ns.stderr_text();
    assert!(log.contains("cannot install"), "{log}");
    drop(ns);

    let t2 = TempDir::new();
    let clean = t2.file("base");
    let ns = Ns::start(&clean, &[], "", &job());
    ns.wait_running();
    for link in ["jobs/bpm/bin/bpm", "bosh/bin/monit"] {
        let p = clean.join(link);
        assert!(
            std::fs::symlink_metadata(&p).unwrap().is_symlink(),
            "{link}"
        );
        assert_eq!(
            std::fs::canonicalize(&p).unwrap(),
            std::fs::canonicalize(bin()).unwrap()
        );
    }
}

/// Finding 5: durations that cannot be added to the clock are usage errors
/// before anything is created, for every duration flag, its environment
/// variable and `ctl --timeout`.
#[test]
fn durations_that_do_not_fit_the_clock_are_usage_errors() {
    let huge = "18446744073709551615";
    type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>);
    let cases: [Case; 4] = [
        (&["--stop-timeout", huge], None),
        (&["--condition-interval", "9223372036854775807"], None),
        (
            &[],
            Some(("CONTAINER_RUN_POST_START_TIMEOUT", "9223372036854775807")),
        ),
        (&["--stop-timeout", "876001h"], None),
    ];
    for (flags, env) in cases {
        let t = TempDir::new();
        let base = t.file("base");
        let mut cmd = Command::new(bin());
        cmd.arg("--base-dir")
            .arg(&base)
            .args(["--job-name", "job"])
            .args(flags)
            .args(["--", "true"])
            .env_remove("CONTAINER_RUN_BASE_DIR");
        if let Some((k, val)) = env {
            cmd.env(k, val);
        }
        let (code, _, err) = output_with_deadline(cmd);
        assert_eq!(code, 2, "{flags:?} {env:?}: {err}");
        assert!(err.contains("too large"), "{err}");
        assert!(!base.exists(), "{flags:?}: something was created");
    }
    let (code, _, err) = run_to_end(&[os("ctl"), os("stop"), os("job"), os("--timeout"), os(huge)]);
    assert_eq!(code, 2, "{err}");
}

/// Finding 9: `(gid_t)-1` as the socket group is a usage error; under umask
/// 000 the sentinel, pidfile and STOP marker are still 0644.
#[test]
fn socket_group_minus_one_is_refused_and_files_ignore_the_umask() {
    let t = TempDir::new();
    let base = t.file("base");
    let (code, _, err) = run_to_end(&[
        os("--base-dir"),
        base.as_os_str(),
        os("--job-name"),
        os("job"),
        os("--socket-group"),
        os("4294967295"),
        os("--"),
        os("true"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(!base.exists());

    let mut cmd = Command::new("sh");
    cmd.args(["-c", "umask 000; exec \"$@\"", "sh"]);
    wrapped_run(&mut cmd, &base)
        .stderr(Stdio::null())
        .env_remove("CONTAINER_RUN_BASE_DIR");
    let _cr = KilledOnDrop(cmd.spawn().unwrap());
    let run = Files::new(&base, "job", "job");
    wait_until("job running", || {
        run.pidfile.exists() && run.running.exists()
    });
    let c = client(&run.socket);
    command_until(&c, "STOP", "stopped");
    let marker = std::fs::metadata(&run.stopped).unwrap();
    assert_eq!(marker.mode() & 0o777, 0o644, "STOP marker");
    command_until(&c, "START", "running");
    for f in [&run.pidfile, &run.running] {
        let m = std::fs::metadata(f).unwrap();
        assert_eq!(m.mode() & 0o777, 0o644, "{}", f.display());
    }
}

/// Whether a pipe is full: a one-byte write through a non-blocking open
/// file description of its own (not the one container-run and the job
/// share) would block. Each byte that still fits is a NUL, ignored later.
fn pipe_full(probe: &std::fs::File) -> bool {
    use std::io::Write;
    for _ in 0..libc::PIPE_BUF * 2 {
        match (&*probe).write(&[0]) {
            Ok(1) => continue,
            Ok(_) => return false,
            Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
    false
}

/// Finding 6: stderr is a pipe whose reader has stopped, and the job (as
/// uid 65534, ignoring SIGTERM) has filled it. STOP must still be answered,
/// the stop timeout's SIGKILL must still fire, container-run must not set
/// O_NONBLOCK on the stderr it shares with the job, and once the pipe is
/// read again it must say how many lines it dropped.
#[test]
fn a_stalled_stderr_reader_does_not_freeze_the_loop() {
    if !require_root() {
        return;
    }
    let t = TempDir::new();
    let (read, write) = pipe();
    let probe = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", write.as_raw_fd()))
        .unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("--base-dir").arg(t.path()).args([
        "--job-name",
        "job",
        "--debug",
        "--stop-timeout",
        "1s",
        "--",
    ]);
    then_setpriv(&mut cmd, NOBODY)
        .args(["sh", "-c", "trap '' TERM; head -c 10000000 /dev/zero >&2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write))
        .env_remove("CONTAINER_RUN_BASE_DIR");
    let cr = KilledOnDrop(cmd.spawn().unwrap());
    let cr_pid = cr.0.id() as i32;
    let files = Files::new(t.path(), "job", "job");
    wait_until("the job filled the pipe", || {
        files.pidfile.exists() && pipe_full(&probe)
    });
    let c = client(&files.socket);
    // 3,000 debug lines (about 110 kB) while nobody reads: more than the
    // logger holds, so some are dropped.
    for _ in 0..3000 {
        c.send(b"STATUS").unwrap();
        assert_eq!(recv_json(&c)["state"], "running");
    }
    command_until(&c, "STOP", "stopped");
    let fdinfo = std::fs::read_to_string(format!("/proc/{cr_pid}/fdinfo/2")).unwrap();
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    assert_eq!(flags & libc::O_NONBLOCK as u32, 0, "O_NONBLOCK set on fd 2");
    // Read the pipe again, and nothing else: the held lines and the note
    // must go out because stderr takes more, with no other event to wake
    // the (now idle) loop.
    let mut reader = std::fs::File::from(read);
    // SAFETY: F_SETFL on our own read end.
    unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut text = Vec::new();
    wait_until("the dropped-lines note", || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend(buf[..n].iter().filter(|&&b| b != 0));
        }
        String::from_utf8_lossy(&text).contains("log lines dropped: stderr was not being read")
    });
}
