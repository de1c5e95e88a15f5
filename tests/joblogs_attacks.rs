//! `container-run logs` as root among directories the job's user owns
//! (SPEC section 11, "Safe as root"): the job user (uid 65534, through
//! `setpriv --reuid=65534 --regid=65534 --clear-groups`) plants links,
//! FIFOs, thousands of files and moving directories in `BASE/sys/log/job`,
//! which it owns. Root's secrets live outside BASE in a root-only
//! directory; they must never reach stdout, never be written through, and
//! what the job user plants must cost bounded fds and memory and a log
//! line, never a hang. Root-only: under CI these tests fail without root.

#[path = "joblogs_fixture.rs"]
mod fixture;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use fixture::common::*;
use fixture::*;

const NOBODY: u32 = 65534;

/// BASE with `sys/log` (root's) and `sys/log/job` (the job user's), and a
/// root-only directory of secrets beside it.
struct Scene {
    t: TempDir,
    job: PathBuf,
    secrets: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let t = TempDir::new();
        let job = log_dir(t.path()).join("job");
        std::fs::create_dir(&job).unwrap();
        std::os::unix::fs::chown(&job, Some(NOBODY), Some(NOBODY)).unwrap();
        let secrets = t.file("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
        for name in ["secret.log", "shadow"] {
            let p = secrets.join(name);
            std::fs::write(&p, format!("root's secret {name}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Scene { t, job, secrets }
    }

    fn base(&self) -> &Path {
        self.t.path()
    }

    /// Run `script` in `sys/log/job` as the job's user, to its end.
    fn as_job_user(&self, script: &str) {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-ec",
            script,
        ])
        .current_dir(&self.job)
        .env("SECRETS", &self.secrets);
        let (code, out, err) = output_with_deadline(cmd);
        assert_eq!(code, 0, "attack failed to run: {script}\n{out}{err}");
    }

    fn assert_secrets_untouched(&self, logs: &Logs) {
        for name in ["secret.log", "shadow"] {
            let p = self.secrets.join(name);
            let m = std::fs::symlink_metadata(&p).unwrap();
            assert!(m.is_file());
            assert_eq!((m.mode() & 0o7777, m.uid()), (0o600, 0), "{name}");
            assert_eq!(
                std::fs::read_to_string(&p).unwrap(),
                format!("root's secret {name}\n")
            );
        }
        assert_eq!(
            std::fs::read_dir(&self.secrets).unwrap().count(),
            2,
            "files added"
        );
        assert!(
            !logs.stdout().contains("root's secret"),
            "a secret reached stdout"
        );
    }
}

/// The job user appends a line; the stream shows it: the mode is alive.
fn still_streams(scene: &Scene, logs: &Logs, line: &str) {
    scene.as_job_user(&format!("echo '{line}' >> alive.log"));
    wait_until(&format!("{line} streamed"), || {
        logs.records("job/alive.log").iter().any(|l| l == line)
    });
}

#[test]
fn links_planted_by_the_job_user_are_never_followed_or_written_through() {
    if !require_root("to act as uid 65534 beside root's files") {
        return;
    }
    let scene = Scene::new();
    // Before start: a link named like a log, a linked directory holding
    // one, and links at the names rotation writes.
    scene.as_job_user(
        "ln -s \"$SECRETS/secret.log\" leak.log; ln -s \"$SECRETS\" linked; \
         ln -s \"$SECRETS/shadow\" app.log.1.gz; ln -s \"$SECRETS/shadow\" app.log.2.gz; \
         : > app.log; chmod 640 app.log",
    );
    let logs = Logs::start(
        scene.base(),
        &["--from-start", "--rotate-size", "8k", "--keep", "3"],
    );
    // After start: the same again under new names.
    scene.as_job_user("ln -s \"$SECRETS/secret.log\" late.log; ln -s \"$SECRETS\" late-dir");
    for round in 0..3 {
        scene.as_job_user(&format!(
            "i=0; while [ $i -lt 600 ]; do echo \"app line $i of round {round}\" >> app.log; i=$((i+1)); done"
        ));
        logs.wait_err("a rotation", |e| {
            e.matches("rotated job/app.log").count() > round
        });
    }
    still_streams(&scene, &logs, "after the links");
    scene.assert_secrets_untouched(&logs);
    // The rotated files are regular files of the live file's owner and mode.
    for k in 1..=3 {
        let p = scene.job.join(format!("app.log.{k}.gz"));
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.is_file(), "{} is not a regular file", p.display());
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (NOBODY, NOBODY, 0o640),
            "{}",
            p.display()
        );
    }
    // No fd of the logs mode leads into the secrets.
    for fd in std::fs::read_dir(format!("/proc/{}/fd", logs.pid()))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        assert!(
            !target.starts_with(&scene.secrets),
            "fd to {}",
            target.display()
        );
    }
}

#[test]
fn fifos_and_devices_are_skipped_without_blocking() {
    if !require_root("to act as uid 65534 and to make a device node") {
        return;
    }
    let scene = Scene::new();
    scene.as_job_user("mkfifo early.log");
    let logs = Logs::start(scene.base(), &["--from-start"]);
    scene.as_job_user("mkfifo late.log");
    // A device node (the job user cannot make one; root plays a leftover).
    let dev = scene.job.join("zero.log");
    let made = Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "5"])
        .status()
        .unwrap();
    assert!(made.success());
    still_streams(&scene, &logs, "after the FIFOs");
    // A regular file swapped for a FIFO and back, 300 times, while it is
    // being followed: each open either finds a regular file or moves on.
    scene.as_job_user(
        "i=0; while [ $i -lt 300 ]; do echo \"swap $i\" >> swap.log; rm swap.log; mkfifo swap.log; \
         rm swap.log; i=$((i+1)); done",
    );
    still_streams(&scene, &logs, "after the swaps");
    let out = logs.stdout();
    assert!(
        !out.contains("early.log") && !out.contains("late.log") && !out.contains("zero.log"),
        "{out}"
    );
    assert!(!out.contains('\0'), "the device was read");
}

#[test]
fn thousands_of_files_and_moving_directories_cost_bounded_fds_and_memory() {
    if !require_root("to act as uid 65534") {
        return;
    }
    let scene = Scene::new();
    let logs = Logs::start(scene.base(), &[]);
    let before = fd_count(logs.pid());
    // 5,000 log files (more than the 4,096 a process holds), deep trees,
    // and directories renamed back and forth 500 times.
    scene.as_job_user(
        "i=0; while [ $i -lt 5000 ]; do : > f$i.log; i=$((i+1)); done; \
         mkdir -p a/b/c/d/e; for d in a a/b a/b/c a/b/c/d a/b/c/d/e; do echo deep >> $d/x.log; done; \
         mkdir m1; echo moving >> m1/x.log; i=0; while [ $i -lt 250 ]; do mv m1 m2; mv m2 m1; i=$((i+1)); done",
    );
    logs.wait_err("the bound's log line", |e| {
        e.contains("files followed, the most this process may hold")
    });
    let fds = fd_count(logs.pid());
    assert!(fds <= 4096 + 1024 + before, "{fds} fds");
    let rss = rss_kb(logs.pid());
    assert!(rss < 64 * 1024, "RSS {rss} kB with 5,000 planted files");
    // Once files go, the bound makes room and new ones are streamed.
    scene.as_job_user("i=0; while [ $i -lt 5000 ]; do rm f$i.log; i=$((i+1)); done");
    still_streams(&scene, &logs, "after the flood");
    wait_until("fds given back", || fd_count(logs.pid()) < before + 16);
    // sys/log/*/*/*.log is the deepest the agent's globs reach.
    let deep: Vec<String> = logs
        .stdout()
        .lines()
        .filter(|l| l.ends_with(": deep"))
        .map(str::to_string)
        .collect();
    assert_eq!(deep, ["job/a/x.log: deep"]);
}

#[test]
fn a_hard_link_to_someone_elses_file_is_not_streamed() {
    if !require_root("to play a hard link the kernel's protected_hardlinks would refuse") {
        return;
    }
    let scene = Scene::new();
    let logs = Logs::start(scene.base(), &["--from-start"]);
    std::fs::hard_link(scene.secrets.join("secret.log"), scene.job.join("hard.log")).unwrap();
    logs.wait_err("the hard link refused", |e| {
        e.contains("hard.log: a hard link to a file of uid 0")
    });
    still_streams(&scene, &logs, "after the hard link");
    std::fs::remove_file(scene.job.join("hard.log")).unwrap();
    scene.assert_secrets_untouched(&logs);
}
